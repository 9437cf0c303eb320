/* The agent workspace's context and CRM panels (plain JS, no build step).
 *
 *   OpportuneContext.render(element, conversationId[, {csrf, refreshMs}])
 *
 * fetches GET /agent/api/conversations/{id}/context (same origin, with the session cookie)
 * and draws: who, outcome scores with why in words, segments, the visit's timeline (newest
 * last, followed every 5 s with ?since= while the element is in the page and still shows
 * this conversation), earlier visits and chats, the bot's part, why this agent, and the CRM
 * panel (look up / create / update the lead; results and failures shown, never blocking).
 * Every text goes in with textContent: visitor words are data, never markup.
 * The CSRF token for the CRM's POST is options.csrf, else <meta name="csrf-token">.
 */
(function () {
  'use strict';

  var REFRESH_MS = 5000;
  var API = '/agent/api/conversations/';
  var live = new WeakMap(); // element -> its panel's state (one conversation at a time)

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function section(title, cls) {
    var box = el('section', 'oc-section ' + (cls || ''));
    box.appendChild(el('h3', 'oc-title', title));
    return box;
  }

  function row(label, value) {
    var r = el('div', 'oc-row');
    r.appendChild(el('span', 'oc-label', label));
    r.appendChild(el('span', 'oc-value', value === null || value === undefined || value === '' ? '—' : value));
    return r;
  }

  function clock(ms) {
    if (!ms) return '';
    var d = new Date(ms);
    return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
  }

  function day(ms) {
    return ms ? new Date(ms).toLocaleDateString([], { year: 'numeric', month: 'short', day: 'numeric' }) : '';
  }

  function span(ms) {
    var s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60 ? (s % 60) + ' s' : '');
    return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
  }

  function pct(p) {
    return (typeof p === 'number') ? Math.round(p * 100) + '%' : '—';
  }

  function csrfToken(options) {
    if (options && options.csrf) return options.csrf;
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute('content') : '';
  }

  function getJSON(url) {
    return fetch(url, { credentials: 'same-origin', headers: { accept: 'application/json' } })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (body) {
          if (!r.ok) {
            var e = (body && body.error) || {};
            throw new Error(e.message || ('HTTP ' + r.status));
          }
          return body;
        });
      });
  }

  /* ---- sections ---- */

  function whoSection(who) {
    var box = section('Who', 'oc-who');
    var name = who.name || (who.identified ? 'Known customer' : 'Anonymous visitor');
    box.appendChild(el('div', 'oc-name', name));
    var badge = el('span', 'oc-badge ' + (who.returning ? 'oc-returning' : 'oc-new'),
      who.returning ? 'Returning · visit ' + who.visitNumber : 'New visitor');
    box.appendChild(badge);
    if (who.visitsLast7Days > 1) box.appendChild(el('span', 'oc-badge oc-often', who.visitsLast7Days + ' visits in 7 days'));
    (who.identifiers || []).forEach(function (i) {
      box.appendChild(row(i.kind === 'customer_id' ? 'customer id' : i.kind, i.value));
    });
    var d = who.device || {};
    box.appendChild(row('device', [d.type, d.browser, d.os].filter(Boolean).join(' · ')));
    var l = who.location || {};
    box.appendChild(row('location', [l.city, l.region, l.country].filter(Boolean).join(', ')));
    var c = who.campaign || {};
    var campaign = [c.source, c.medium, c.campaign].filter(Boolean).join(' / ');
    box.appendChild(row('campaign', campaign));
    box.appendChild(row('came from', who.referrerDomain || (who.referrer ? who.referrer : 'direct')));
    box.appendChild(row('landing page', who.landingPage));
    var traits = who.traits || {};
    Object.keys(traits).slice(0, 12).forEach(function (k) { box.appendChild(row(k, traits[k])); });
    return box;
  }

  function scoresSection(scores) {
    var box = section('Outcome scores', 'oc-scores');
    if (!scores || !scores.length) {
      box.appendChild(el('p', 'oc-empty', 'No outcome is scored for this visit.'));
      return box;
    }
    scores.forEach(function (s) {
      var item = el('div', 'oc-score');
      var head = el('div', 'oc-score-head');
      head.appendChild(el('span', 'oc-score-name', s.label || s.outcome));
      head.appendChild(el('span', 'oc-score-value', pct(s.probability) + ' (max ' + pct(s.maxProbability) + ')'));
      item.appendChild(head);
      var bar = el('div', 'oc-bar');
      var fill = el('div', 'oc-bar-fill');
      fill.style.width = Math.max(0, Math.min(100, (s.probability || 0) * 100)) + '%';
      var peak = el('div', 'oc-bar-peak');
      peak.style.left = Math.max(0, Math.min(100, (s.maxProbability || 0) * 100)) + '%';
      bar.appendChild(fill);
      bar.appendChild(peak);
      item.appendChild(bar);
      var why = el('ul', 'oc-why');
      (s.why || []).forEach(function (w) {
        var up = (w.contribution || 0) >= 0;
        var li = el('li', up ? 'oc-up' : 'oc-down');
        li.appendChild(el('span', 'oc-sign', up ? '▲ ' : '▼ '));
        li.appendChild(document.createTextNode(w.text || w.feature));
        li.title = (up ? 'raises' : 'lowers') + ' the score';
        why.appendChild(li);
      });
      item.appendChild(why);
      box.appendChild(item);
    });
    return box;
  }

  function segmentsSection(segments) {
    var box = section('Segments', 'oc-segments');
    if (!segments || !segments.length) box.appendChild(el('p', 'oc-empty', 'In no segment.'));
    (segments || []).forEach(function (s) {
      var chip = el('span', 'oc-chip', s.label || s.name);
      chip.title = 'since ' + clock(s.since);
      box.appendChild(chip);
    });
    return box;
  }

  function timelineItem(item, next, now) {
    var li = el('li', 'oc-item oc-kind-' + item.kind + (item.state ? ' oc-state-' + item.state : ''));
    li.dataset.id = item.id;
    li.appendChild(el('time', 'oc-at', clock(item.at)));
    li.appendChild(el('span', 'oc-text', item.text));
    if (item.kind === 'page_view') {
      var until = next ? next.at : now;
      if (until > item.at) li.appendChild(el('span', 'oc-dwell', span(until - item.at)));
    }
    return li;
  }

  function drawTimeline(state) {
    var list = state.timelineList;
    while (list.firstChild) list.removeChild(list.firstChild);
    var items = state.order.map(function (id) { return state.items[id]; });
    var pages = items.filter(function (i) { return i.kind === 'page_view'; });
    var now = Date.now() - (state.skew || 0);
    items.forEach(function (item) {
      var next = null;
      if (item.kind === 'page_view') next = pages[pages.indexOf(item) + 1] || null;
      list.appendChild(timelineItem(item, next, now));
    });
    if (!items.length) list.appendChild(el('li', 'oc-empty', 'Nothing recorded in this visit yet.'));
  }

  function mergeTimeline(state, items) {
    var added = false;
    (items || []).forEach(function (item) {
      if (!state.items[item.id]) added = true;
      state.items[item.id] = item;
    });
    state.order = Object.keys(state.items).sort(function (a, b) {
      var x = state.items[a], y = state.items[b];
      return x.at - y.at || (a < b ? -1 : a > b ? 1 : 0);
    });
    return added;
  }

  function pastSection(sessions, conversations) {
    var box = section('Earlier', 'oc-past');
    var s = el('ul', 'oc-list');
    (sessions || []).forEach(function (v) {
      var text = day(v.startedAt) + ' · visit ' + v.number + ' · ' + v.pages + ' page' + (v.pages === 1 ? '' : 's');
      if (v.outcomes && v.outcomes.length) text += ' · reached ' + v.outcomes.join(', ');
      s.appendChild(el('li', null, text));
    });
    if (!(sessions || []).length) s.appendChild(el('li', 'oc-empty', 'No earlier visit.'));
    box.appendChild(el('h4', null, 'Visits'));
    box.appendChild(s);
    var c = el('ul', 'oc-list');
    (conversations || []).forEach(function (v) {
      var text = day(v.createdAt) + ' · ' + (v.queue || 'no queue') + ' · ' +
        (v.agentName || 'no agent') + ' · ' + (v.wrapUpCode || v.state);
      c.appendChild(el('li', null, text));
    });
    if (!(conversations || []).length) c.appendChild(el('li', 'oc-empty', 'No earlier conversation.'));
    box.appendChild(el('h4', null, 'Conversations'));
    box.appendChild(c);
    return box;
  }

  function botSection(bot) {
    var box = section('Bot', 'oc-bot');
    if (!bot || !bot.handled) {
      box.appendChild(el('p', 'oc-empty', 'The bot did not take part.'));
      return box;
    }
    box.appendChild(row('intent', bot.intent ? bot.intent + (typeof bot.confidence === 'number' ? ' (' + pct(bot.confidence) + ')' : '') : 'not recognised'));
    var slots = bot.slots || {};
    Object.keys(slots).forEach(function (k) { box.appendChild(row(k, slots[k])); });
    var t = el('ol', 'oc-transcript');
    (bot.transcript || []).forEach(function (m) {
      var li = el('li', 'oc-msg oc-from-' + m.sender);
      li.appendChild(el('span', 'oc-sender', m.sender));
      li.appendChild(el('span', 'oc-msg-text', m.text));
      t.appendChild(li);
    });
    box.appendChild(t);
    return box;
  }

  function routingSection(routing) {
    var box = section('Why this agent', 'oc-routing');
    if (!routing) {
      box.appendChild(el('p', 'oc-empty', 'Not routed.'));
      return box;
    }
    box.appendChild(el('p', 'oc-routing-text', routing.text));
    box.appendChild(row('method', routing.method + (routing.arm && routing.arm !== routing.method ? ' (' + routing.arm + ')' : '')));
    if (routing.kpi) box.appendChild(row('optimises', routing.kpi.name));
    if (typeof routing.predicted === 'number') box.appendChild(row('predicted', routing.predicted < 1.0001 ? pct(routing.predicted) : routing.predicted.toFixed(2)));
    if (routing.waitedMs !== null && routing.waitedMs !== undefined) box.appendChild(row('waited', span(routing.waitedMs)));
    if (routing.why) box.appendChild(row('decision', routing.why));
    return box;
  }

  /* ---- CRM ---- */

  function crmSection(state) {
    var box = section('CRM', 'oc-crm');
    var form = el('form', 'oc-crm-form');
    form.setAttribute('novalidate', '');
    var notes = el('textarea', 'oc-crm-notes');
    notes.name = 'notes';
    notes.maxLength = 1000;
    notes.placeholder = 'Notes for the lead';
    var status = el('input', 'oc-crm-status');
    status.name = 'status';
    status.maxLength = 100;
    status.placeholder = 'Status (e.g. qualified)';
    var buttons = el('div', 'oc-crm-buttons');
    var result = el('div', 'oc-crm-result');
    result.setAttribute('role', 'status');
    result.setAttribute('aria-live', 'polite');
    form.appendChild(notes);
    form.appendChild(status);
    form.appendChild(buttons);
    box.appendChild(form);
    box.appendChild(result);
    form.addEventListener('submit', function (e) { e.preventDefault(); });
    getJSON('/agent/api/crm').then(function (info) {
      var crms = info.crms || [];
      if (!crms.length) {
        result.textContent = 'No CRM is configured.';
        return;
      }
      state.crm = crms[0].name;
      crms[0].operations.forEach(function (op) {
        var b = el('button', 'oc-crm-' + op, { lookup: 'Look up', create: 'Create lead', update: 'Update lead' }[op]);
        b.type = 'button';
        b.addEventListener('click', function () { crmCall(state, op, notes, status, result, buttons); });
        buttons.appendChild(b);
      });
    }).catch(function (err) { result.textContent = 'CRM unavailable: ' + err.message; });
    return box;
  }

  function showLead(result, answer) {
    while (result.firstChild) result.removeChild(result.firstChild);
    var ok = answer.ok;
    result.className = 'oc-crm-result ' + (ok ? 'oc-ok' : 'oc-failed');
    var words;
    if (!ok) {
      var e = answer.error || {};
      words = 'Failed (' + (e.code || 'error') + '): ' + (e.message || '');
    } else if (answer.operation === 'lookup') {
      words = answer.found ? 'Lead found' + (answer.leadId ? ': ' + answer.leadId : '') : 'No lead for this customer.';
    } else {
      words = (answer.operation === 'create' ? 'Lead created' : 'Lead updated') + (answer.leadId ? ': ' + answer.leadId : '');
    }
    result.appendChild(el('p', 'oc-crm-said', words));
    var lead = answer.lead || {};
    Object.keys(lead).forEach(function (k) { result.appendChild(row(k, lead[k])); });
  }

  function crmCall(state, op, notes, status, result, buttons) {
    var fields = {};
    if (notes.value) fields.notes = notes.value;
    if (status.value) fields.status = status.value;
    var body = { operation: op, crm: state.crm, fields: fields };
    if (op === 'update') {
      if (!state.leadId) {
        showLead(result, { ok: false, operation: op, error: { code: 'no_lead', message: 'look up or create the lead first' } });
        return;
      }
      body.leadId = state.leadId;
    }
    result.className = 'oc-crm-result oc-busy';
    result.textContent = 'Asking the CRM…';
    Array.prototype.forEach.call(buttons.children, function (b) { b.disabled = true; });
    fetch(API + encodeURIComponent(state.id) + '/crm', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'content-type': 'application/json', accept: 'application/json', 'X-CSRF-Token': csrfToken(state.options) },
      body: JSON.stringify(body)
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (answer) {
        if (!r.ok) {
          var e = (answer && answer.error) || {};
          answer = { ok: false, operation: op, error: { code: e.code || ('http_' + r.status), message: e.message || 'refused' } };
        }
        if (answer.ok && answer.leadId) state.leadId = answer.leadId;
        showLead(result, answer);
      });
    }).catch(function (err) {
      showLead(result, { ok: false, operation: op, error: { code: 'network', message: err.message } });
    }).then(function () {
      Array.prototype.forEach.call(buttons.children, function (b) { b.disabled = false; });
    });
  }

  /* ---- the panel ---- */

  function replace(state, key, node) {
    if (state[key] && state[key].parentNode) state[key].parentNode.replaceChild(node, state[key]);
    state[key] = node;
  }

  function stillShown(element, state) {
    return live.get(element) === state && document.documentElement.contains(element);
  }

  function refresh(element, state) {
    if (!stillShown(element, state)) return;
    var url = API + encodeURIComponent(state.id) + '/context?since=' + encodeURIComponent(state.cursor);
    getJSON(url).then(function (ctx) {
      if (!stillShown(element, state)) return;
      state.cursor = ctx.cursor;
      state.skew = Date.now() - Number(ctx.cursor);
      if (ctx.visit && state.sessionId && ctx.visit.sessionId !== state.sessionId) {
        state.items = {}; // a new visit began: its timeline starts afresh
        state.sessionId = ctx.visit.sessionId;
      }
      mergeTimeline(state, ctx.timeline);
      drawTimeline(state);
      replace(state, 'scoresBox', scoresSection(ctx.scores));
      replace(state, 'segmentsBox', segmentsSection(ctx.segments));
      replace(state, 'routingBox', routingSection(ctx.routing));
      state.error.textContent = '';
    }).catch(function (err) {
      if (stillShown(element, state)) state.error.textContent = 'Could not refresh: ' + err.message;
    }).then(function () {
      if (stillShown(element, state)) state.timer = setTimeout(function () { refresh(element, state); }, state.every);
    });
  }

  function draw(element, state, ctx) {
    while (element.firstChild) element.removeChild(element.firstChild);
    element.classList.add('oc-panel');
    element.appendChild(state.error);
    element.appendChild(whoSection(ctx.who || {}));
    state.scoresBox = scoresSection(ctx.scores);
    element.appendChild(state.scoresBox);
    state.segmentsBox = segmentsSection(ctx.segments);
    element.appendChild(state.segmentsBox);
    var tl = section('This visit', 'oc-timeline');
    if (ctx.visit) tl.appendChild(el('p', 'oc-visit', 'Visit ' + ctx.visit.number + ' · started ' + clock(ctx.visit.startedAt)));
    state.timelineList = el('ol', 'oc-items');
    tl.appendChild(state.timelineList);
    element.appendChild(tl);
    mergeTimeline(state, ctx.timeline);
    drawTimeline(state);
    element.appendChild(botSection(ctx.bot));
    state.routingBox = routingSection(ctx.routing);
    element.appendChild(state.routingBox);
    element.appendChild(pastSection(ctx.pastSessions, ctx.pastConversations));
    element.appendChild(crmSection(state));
  }

  function render(element, conversationId, options) {
    if (!element) throw new Error('OpportuneContext.render: no element');
    var previous = live.get(element);
    if (previous && previous.timer) clearTimeout(previous.timer);
    var state = {
      id: String(conversationId), options: options || {}, items: {}, order: [],
      cursor: null, timer: null, error: el('p', 'oc-error'), leadId: null,
      every: (options && options.refreshMs) || REFRESH_MS
    };
    state.error.setAttribute('role', 'alert');
    live.set(element, state);
    element.dataset.conversation = state.id;
    while (element.firstChild) element.removeChild(element.firstChild);
    element.appendChild(el('p', 'oc-loading', 'Loading the context…'));
    return getJSON(API + encodeURIComponent(state.id) + '/context').then(function (ctx) {
      if (live.get(element) !== state) return;
      state.cursor = ctx.cursor;
      state.skew = Date.now() - Number(ctx.cursor);
      state.sessionId = ctx.visit ? ctx.visit.sessionId : null;
      draw(element, state, ctx);
      state.timer = setTimeout(function () { refresh(element, state); }, state.every);
    }).catch(function (err) {
      if (live.get(element) !== state) return;
      while (element.firstChild) element.removeChild(element.firstChild);
      element.appendChild(el('p', 'oc-error', 'Could not load the context: ' + err.message));
    });
  }

  window.OpportuneContext = { render: render, refreshMs: REFRESH_MS };
})();
