/*! Opportune tracking snippet | Apache-2.0 | docs/snippet.md */
// Plain ES2017, no build step, no dependencies. Loaded asynchronously by the loader in
// docs/snippet.md, which leaves a stub `window.opportune` that queues its arguments in `.q`;
// this file replays that queue in order, then replaces the stub with the real command function.
// Rule everywhere: a bug or a missing browser feature here must never break the host page,
// so commands and listeners are wrapped in try/catch and storage failures degrade to memory.
(function (w, d) {
  'use strict';
  var NAME = w.OpportuneObject || 'opportune';
  var stub = w[NAME];
  if (stub && stub.loaded) return; // the script tag was included twice
  // Read now: document.currentScript is only set while this file first runs.
  var SRC = d.currentScript && d.currentScript.src;

  var VID = 'opp_vid'; // visitor cookie: a random id, nothing else
  // Session cookie: "<start>.<last activity>.<1 once the visit had a page view>", times in
  // base-36 ms. A cookie rather than memory so that the site's tabs share one visit.
  var SES = 'opp_ses';
  var CONSENT = 'opp_consent'; // localStorage: '1' granted, '0' refused
  // localStorage: the number of the last event recorded. Events carry it (`seq`), rising
  // across page loads, so the server keeps them in the order they were recorded whatever
  // order their batches arrive in and whatever each batch's clock correction.
  var SEQ = 'opp_seq';
  var OUTBOX_MAX = 1000;
  var BATCH_MAX = 100; // the server's limit per batch
  // sendBeacon and fetch({keepalive}) refuse bodies over 64 KiB in total; stay under it.
  var BEACON_BYTES = 60000;
  var ID_RE = /^[A-Za-z0-9_.:-]{1,64}$/;

  var cfg = null; // the init options, with defaults
  var pending = []; // commands issued before init
  var held = []; // events made before consent (memory only: nothing is stored before consent)
  var outbox = []; // events not yet acknowledged by the server, oldest first
  var visitorId = null;
  var session = null; // {start, last, viewed}: memory copy of the cookie (if cookies fail)
  var consent = null; // true | false | null (not said)
  var sending = false;
  var inflight = {}; // ids of the events in the request being sent
  var flushTimer = 0;
  var retryTimer = 0;
  var failures = 0;
  var batchCap = BATCH_MAX; // halved on 413 so an oversized batch is split, not lost
  var seq = 0; // memory copy of opp_seq (if storage fails)
  var spaTimer = 0; // a route change waiting to be read (see spaChange)
  var lastUrl = null; // URL of the last page view (de-duplicates history events)
  var lastSearch = null;
  var firstView = true; // the first page view of this document: document.referrer applies
  var errorKeys = {}; // form error de-duplication: key -> time
  var submitting = null; // the form whose submit event is being dispatched
  var forms = []; // [{el, name, touched, last, submitted, reported}] for this page
  var depth = 0; // scroll milestones reached on this page (25/50/75/100)
  var lastInput = Date.now();
  var idleSent = false;
  var seen = []; // elements reported in view on this page
  var observer = null;

  // ---- small helpers -------------------------------------------------------------------
  // Whole milliseconds: the server takes integers only, and fake or privacy-hardened clocks
  // can return fractions.
  function now() { return Math.floor(Date.now()); }

  // Cut to n UTF-16 units without leaving half a surrogate pair: a lone surrogate is
  // invalid JSON for the server and would get the whole batch refused.
  function cut(s, n) {
    s = String(s);
    if (s.length <= n) return s;
    var c = s.charCodeAt(n - 1);
    return s.slice(0, c >= 0xd800 && c <= 0xdbff ? n - 1 : n);
  }

  function text(s, n) { return cut(String(s).replace(/\s+/g, ' ').trim(), n); }

  function randomId() {
    var b = new Uint8Array(16);
    var c = w.crypto;
    if (c && c.getRandomValues) c.getRandomValues(b);
    else for (var i = 0; i < 16; i++) b[i] = Math.random() * 256;
    return Array.prototype.map.call(b, function (x) { return (x + 256).toString(16).slice(1); }).join('');
  }

  // Attributes and traits: <= 50 keys of <= 64 chars; values string (<= 1024), finite
  // number, boolean or null. Nested values are kept as JSON text rather than dropped.
  function attrs(o) {
    var out = {};
    var n = 0;
    if (!o || typeof o !== 'object') return out;
    for (var k in o) {
      if (!Object.prototype.hasOwnProperty.call(o, k) || !k || n >= 50) continue;
      var v = o[k];
      var t = typeof v;
      if (v === undefined || t === 'function' || t === 'symbol') continue;
      if (t === 'number') v = isFinite(v) ? v : null;
      else if (v !== null && t !== 'boolean') {
        if (t === 'object') { try { v = JSON.stringify(v); } catch (e) { v = String(v); } }
        v = cut(v, 1024);
      }
      out[cut(k, 64)] = v;
      n++;
    }
    return out;
  }

  function log() {
    if (cfg && cfg.debug && w.console) console.log.apply(console, ['[opportune]'].concat([].slice.call(arguments)));
  }

  // ---- storage: cookies and localStorage, each failing soft -----------------------------
  function getCookie(name) {
    try { // sandboxed frames throw on document.cookie; a mangled value throws on decoding
      var m = d.cookie.match(new RegExp('(?:^|; )' + name + '=([^;]*)'));
      return m ? decodeURIComponent(m[1]) : null;
    } catch (e) { return null; }
  }

  function setCookie(name, value, seconds) {
    var c = name + '=' + encodeURIComponent(value) + '; Path=/; SameSite=Lax; Max-Age=' + seconds;
    if (cfg.cookieDomain) c += '; Domain=' + cfg.cookieDomain;
    if (location.protocol === 'https:') c += '; Secure';
    try { d.cookie = c; } catch (e) { /* cookies disabled */ }
  }

  function store(key, value) {
    try {
      if (value === null) localStorage.removeItem(key);
      else localStorage.setItem(key, value);
    } catch (e) { /* storage disabled or full: memory still works for this page */ }
  }

  function load(key) {
    try { return localStorage.getItem(key); } catch (e) { return null; }
  }

  function outboxKey() { return 'opp_outbox:' + cfg.siteKey; }

  // ---- consent and Do Not Track ---------------------------------------------------------
  function dnt() {
    var n = navigator;
    return cfg.honorDoNotTrack && (n.doNotTrack === '1' || w.doNotTrack === '1' ||
      n.msDoNotTrack === '1' || n.globalPrivacyControl === true);
  }

  // May we store and send? A refusal always wins, even where consent is not required.
  function allowed() {
    return !dnt() && consent !== false && (!cfg.requireConsent || consent === true);
  }

  // ---- visitor and session --------------------------------------------------------------
  function ensureVisitor() {
    if (visitorId) return;
    var v = getCookie(VID) || load(VID);
    visitorId = v && ID_RE.test(v) ? v : randomId();
  }

  function saveVisitor() {
    // 13 months, refreshed on every page: a visitor stays known while they keep coming.
    setCookie(VID, visitorId, 34214400);
    store(VID, visitorId); // a copy, so clearing cookies alone does not make a new visitor
  }

  function readSession() {
    var c = (getCookie(SES) || '').split('.');
    var s = { start: parseInt(c[0], 36), last: parseInt(c[1], 36), viewed: c[2] === '1' };
    return isFinite(s.start) && isFinite(s.last) ? s : null;
  }

  // Move the session forward to `ts`; true when `ts` starts a new session. Same rule as the
  // server: more than sessionTimeoutMinutes since the last event ends the visit.
  // Another tab may have moved the visit on: the cookie is read each time.
  function touch(ts) {
    var s = (allowed() && readSession()) || session;
    var fresh = !s || ts - s.last > cfg.sessionTimeoutMinutes * 60000;
    session = fresh ? { start: ts, last: ts, viewed: false }
      : { start: s.start, last: Math.max(s.last, ts), viewed: s.viewed };
    if (allowed()) saveSession();
    return fresh;
  }

  function saveSession() {
    setCookie(SES, session.start.toString(36) + '.' + session.last.toString(36) +
      (session.viewed ? '.1' : '.0'), cfg.sessionTimeoutMinutes * 60);
  }

  // ---- events and the outbox ------------------------------------------------------------
  function track(type, fields) {
    if (dnt() || consent === false) return;
    var ts = now();
    // Another tab may have numbered events since: go on from the larger of the two.
    seq = Math.max(seq, +load(SEQ) || 0) + 1;
    if (allowed()) store(SEQ, String(seq));
    var ev = { id: randomId(), type: type, ts: ts, seq: seq };
    if (type !== 'identify') ev.url = cut(location.href, 2048);
    for (var k in fields) if (fields[k] != null) ev[k] = fields[k];
    if (type !== 'page_view') touch(ts); // page views touch the session themselves
    if (!allowed()) {
      // Consent not given yet: keep this page's events in memory only, sent if it comes.
      if (held.length < BATCH_MAX) held.push(ev);
      return ev;
    }
    enqueue(ev);
    return ev;
  }

  function enqueue(ev) {
    ev._v = visitorId; // the batch is per visitor; `reset` may change it while events wait
    outbox.push(ev);
    if (outbox.length > OUTBOX_MAX) outbox.splice(0, outbox.length - OUTBOX_MAX);
    persist();
    log(ev.type, ev);
    if (outbox.length >= cfg.batchSize) soon();
    else if (!flushTimer) flushTimer = setTimeout(flush, cfg.flushIntervalMs);
  }

  // Send at the end of the current task, not in the middle of it: events made by one
  // handler (a submit, then the page's record and identify) travel in one batch, so the
  // server's clock correction, computed per batch, cannot swap them.
  function soon() {
    clearTimeout(flushTimer);
    flushTimer = setTimeout(flush, 0);
  }

  // The stored outbox is shared by the site's tabs: merge with what other tabs stored
  // (by id) rather than overwrite it, so one tab never erases another's unsent events.
  function readStored() {
    try { return JSON.parse(load(outboxKey()) || '[]') || []; } catch (e) { return []; }
  }

  function persist(acked) {
    if (!allowed()) return;
    var mine = {};
    outbox.forEach(function (e) { mine[e.id] = 1; });
    var all = readStored().filter(function (e) { return e && !mine[e.id] && !(acked && acked[e.id]); })
      .concat(outbox);
    all.sort(function (a, b) { return (a.seq && b.seq && a.seq - b.seq) || a.ts - b.ts; });
    if (all.length > OUTBOX_MAX) all = all.slice(all.length - OUTBOX_MAX);
    store(outboxKey(), all.length ? JSON.stringify(all) : null);
  }

  // Read once at init: it holds for the page's life, and some browsers answer differently
  // while a page is being unloaded, when the last batch goes out.
  function context() {
    var c = { locale: cut(navigator.language || '', 35) };
    try { c.timezone = cut(Intl.DateTimeFormat().resolvedOptions().timeZone || '', 64); } catch (e) { /* old browser */ }
    var s = w.screen;
    if (s) { c.screenWidth = Math.min(s.width | 0, 100000); c.screenHeight = Math.min(s.height | 0, 100000); }
    return c;
  }

  // The next batch: the oldest events of one visitor, within the count and byte limits.
  function nextBatch() {
    var first = null;
    var events = [];
    var size = 300; // the envelope
    for (var i = 0; i < outbox.length && events.length < batchCap; i++) {
      var e = outbox[i];
      if (inflight[e.id]) continue;
      if (first && e._v !== first._v) break;
      first = first || e;
      var copy = {};
      for (var k in e) if (k !== '_v') copy[k] = e[k];
      var n = utf8(JSON.stringify(copy)) + 1;
      if (events.length && size + n > BEACON_BYTES) break; // an oversized event goes alone
      size += n;
      events.push(copy);
    }
    if (!first) return null;
    return {
      ids: events.map(function (e) { return e.id; }),
      body: JSON.stringify({
        siteKey: cfg.siteKey, visitorId: first._v, sentAt: now(), context: cfg.context, events: events
      })
    };
  }

  function utf8(s) {
    return w.TextEncoder ? new TextEncoder().encode(s).length : s.length * 3;
  }

  function ack(ids) {
    var gone = {};
    ids.forEach(function (id) { gone[id] = 1; });
    outbox = outbox.filter(function (e) { return !gone[e.id]; });
    persist(gone);
  }

  function flush() {
    clearTimeout(flushTimer);
    flushTimer = 0;
    if (sending || retryTimer || !outbox.length || !allowed()) return;
    var b = nextBatch();
    if (!b) return;
    sending = true;
    b.ids.forEach(function (id) { inflight[id] = 1; });
    var done = function (retry, status) {
      sending = false;
      inflight = {};
      if (retry) {
        // Network failure, 429 or 5xx: the same events (same ids) again, after a backoff
        // with jitter, capped at 5 minutes. The server de-duplicates by id.
        var delay = Math.min(300000, 1000 * Math.pow(2, failures++)) * (0.5 + Math.random() / 2);
        log('retry in', Math.round(delay), 'ms, status', status);
        retryTimer = setTimeout(function () { retryTimer = 0; flush(); }, delay);
        return;
      }
      failures = 0;
      if (outbox.length) flushTimer = setTimeout(flush, outbox.length >= cfg.batchSize ? 0 : cfg.flushIntervalMs);
    };
    fetch(cfg.endpoint, {
      method: 'POST',
      body: b.body,
      // text/plain is a "simple" type: no CORS preflight, and what sendBeacon sends.
      headers: { 'Content-Type': 'text/plain;charset=UTF-8' },
      credentials: 'omit',
      // keepalive lets a request in flight finish when the page unloads (under 64 KiB only).
      keepalive: b.body.length < BEACON_BYTES
    }).then(function (r) {
      var s = r.status;
      if (s === 413 && b.ids.length > 1) {
        batchCap = Math.max(1, b.ids.length >> 1); // too big: split, keep the events
        return done(false, s);
      }
      if (s === 408 || s === 429 || s >= 500) return done(true, s);
      // 2xx: stored (or refused one by one for a reason a retry cannot fix). Other 4xx:
      // this batch can never succeed; keeping it would block everything behind it.
      if (s >= 400 && w.console) console.warn('[opportune] batch refused with status', s);
      ack(b.ids);
      if (s < 300) { batchCap = BATCH_MAX; readAnswer(r); }
      done(false, s);
    }, function () { done(true, 0); });
  }

  // The page is going away or hidden (maybe for good on mobile): hand what is left to
  // sendBeacon, which the browser delivers even after the page is gone.
  // While sends are failing (offline, server down) a beacon would be lost unseen: the
  // events then stay in the stored outbox for the next page instead.
  function beacon() {
    if (!allowed()) return;
    if (!navigator.sendBeacon || retryTimer || navigator.onLine === false) return flush();
    clearTimeout(flushTimer);
    flushTimer = 0;
    for (var guard = 0; guard < 20; guard++) {
      var b = nextBatch();
      // false: over the browser's quota; what is left waits in storage for the next page.
      if (!b || !navigator.sendBeacon(cfg.endpoint, b.body)) break;
      ack(b.ids);
    }
  }

  // ---- page views, search, SPA history --------------------------------------------------
  function pageView(manual) {
    var url = location.href;
    if (!manual && url === lastUrl) return; // history calls that did not change the URL
    var ts = now();
    touch(ts);
    // The landing page view: the visit's first (a visit may start with, say, the click on
    // the link that led here).
    var landing = !session.viewed;
    session.viewed = true;
    if (allowed()) saveSession();
    var ref = null;
    if (firstView) {
      // A new visit keeps its document referrer (the server reads it as the visit's
      // source); within a visit only an external one is news (e.g. back from a payment
      // page): internal ones repeat what the previous page view already says.
      var r = d.referrer;
      if (r && (landing || r.split('/')[2] !== location.host)) ref = cut(r, 2048);
    }
    firstView = false;
    if (lastUrl !== null) pageChanged();
    lastUrl = url;
    track('page_view', { title: cut(d.title, 512), referrer: ref, ts: ts });
    if (cfg.autoTrack.search !== false) search();
  }

  function search() {
    var params;
    try { params = new URL(location.href).searchParams; } catch (e) { return; }
    for (var i = 0; i < cfg.searchParams.length; i++) {
      var q = params.get(cfg.searchParams[i]);
      if (q && (q = text(q, 512))) {
        var key = location.href;
        if (key !== lastSearch) { lastSearch = key; track('search', { query: q }); }
        return;
      }
    }
  }

  function spaChange() {
    // Frameworks often set the title just after pushState: read it a moment later (or at
    // once if the page is left meanwhile: see spaNow).
    clearTimeout(spaTimer);
    spaTimer = setTimeout(safe(spaNow), 50);
  }

  function spaNow() {
    if (!spaTimer) return;
    clearTimeout(spaTimer);
    spaTimer = 0;
    pageView(false);
  }

  function hookHistory() {
    ['pushState', 'replaceState'].forEach(function (m) {
      var orig = history[m];
      if (typeof orig !== 'function') return;
      history[m] = function () {
        var r = orig.apply(this, arguments);
        spaChange();
        return r;
      };
    });
    w.addEventListener('popstate', spaChange);
    w.addEventListener('hashchange', spaChange);
  }

  // Per-page state starts again after an SPA navigation; forms that left the DOM with
  // unsaved input were abandoned.
  function pageChanged() {
    forms.forEach(function (f) { if (!d.contains(f.el)) abandon(f); });
    forms = forms.filter(function (f) { return d.contains(f.el); });
    depth = 0;
    seen = [];
    observeViews();
  }

  // ---- clicks -----------------------------------------------------------------------------
  function onClick(e) {
    var el = e.target && e.target.closest && e.target.closest('[data-opportune-click],a[href]');
    if (!el) return;
    var a = {};
    var href = el.getAttribute('href') ? el.href : null;
    if (href) {
      // mailto:/tel: addresses are personal data: keep only the scheme.
      a.href = /^(mailto|tel|sms):/i.test(href) ? href.split(':')[0] + ':' : cut(href, 1024);
      if (/^https?:/.test(href) && el.host !== location.host) a.outbound = true;
    }
    var name = el.getAttribute('data-opportune-click') ||
      text(el.innerText || el.textContent || '', 100) ||
      el.getAttribute('aria-label') || el.getAttribute('title') || href || el.tagName.toLowerCase();
    track('click', { name: text(name, 512), attributes: a });
  }

  // ---- forms ------------------------------------------------------------------------------
  function formName(form) {
    return text(form.getAttribute('name') || form.id || form.getAttribute('data-opportune-form') ||
      (form.getAttribute('action') || location.pathname).split('?')[0] || 'form', 512);
  }

  function formOf(el) {
    var form = el && el.form;
    if (!form) return null;
    for (var i = 0; i < forms.length; i++) if (forms[i].el === form) return forms[i];
    var f = { el: form, name: formName(form), touched: 0, last: null, submitted: false, reported: false };
    forms.push(f);
    return f;
  }

  function fieldName(el) { return text(el.name || el.id || el.type || 'field', 64); }

  function onInput(e) {
    var f = formOf(e.target);
    if (!f) return;
    f.touched++;
    f.last = fieldName(e.target); // the field's name only: values never leave the page
  }

  function formError(form, field, message, reason) {
    var key = [form, field, message, reason].join('|');
    if (now() - (errorKeys[key] || 0) < 2000) return; // checkValidity() loops, double reports
    errorKeys[key] = now();
    if (submitting) submitting.failed = true;
    var a = { field: field ? text(field, 1024) : null };
    if (message) a.message = text(message, 1024);
    if (reason) a.reason = reason;
    track('form_error', { name: text(form || 'form', 512), attributes: a });
  }

  function onInvalid(e) {
    var el = e.target;
    var f = formOf(el);
    var v = el.validity || {};
    var reason = null;
    for (var k in v) if (k !== 'valid' && v[k] === true) { reason = k; break; }
    // The browser's validationMessage can quote what was typed ("'ana' is missing an '@'"),
    // so the validity flag is sent instead of it.
    formError(f ? f.name : formName(el.closest('form') || d.body), fieldName(el), null, reason);
  }

  // Capture phase, before the page's own handlers: record the submission now, so it comes
  // before what those handlers record (e.g. a custom event, an identify).
  function onSubmitStart(e) {
    var f = formOf({ form: e.target });
    if (!f) return;
    f.failed = false;
    f.submitted = true;
    submitting = f;
    f.event = track('form_submitted', { name: f.name, attributes: { fields: f.el.elements ? f.el.elements.length : 0 } });
  }

  // Bubble phase, after the page's handlers: a submit that the page cancelled and answered
  // with field errors (formError) was a failed attempt: take the submission back.
  function onSubmitEnd(e) {
    var f = submitting;
    submitting = null;
    if (!f || f.el !== e.target || !(e.defaultPrevented && f.failed) || !f.event) return;
    var id = f.event.id;
    if (inflight[id]) return; // already on its way (the page flushed meanwhile)
    var keep = function (ev) { return ev.id !== id; };
    held = held.filter(keep);
    outbox = outbox.filter(keep);
    var gone = {};
    gone[id] = 1;
    persist(gone);
    f.submitted = false;
  }

  function abandon(f) {
    if (f.submitted || f.reported || !f.touched) return;
    f.reported = true;
    track('form_abandoned', { name: f.name, attributes: { lastField: f.last, inputs: f.touched } });
  }

  // ---- idle, scroll, viewport -------------------------------------------------------------
  function onActivity() {
    lastInput = now();
    idleSent = false; // a new idle period may begin
  }

  function idleCheck() {
    var wait = cfg.idleSeconds * 1000 - (now() - lastInput);
    if (wait <= 0) {
      // Once per idle period, and only while the page is seen: a background tab is not idle.
      if (!idleSent && d.visibilityState !== 'hidden') {
        idleSent = true;
        track('idle', { attributes: { seconds: cfg.idleSeconds } });
      }
      wait = cfg.idleSeconds * 1000;
    }
    setTimeout(safe(idleCheck), Math.max(wait, 500));
  }

  var scrollQueued = false;
  function onScroll() {
    onActivity();
    if (scrollQueued) return;
    scrollQueued = true;
    setTimeout(safe(function () {
      scrollQueued = false;
      var el = d.documentElement;
      var total = Math.max(el.scrollHeight, d.body ? d.body.scrollHeight : 0);
      if (total <= w.innerHeight) return; // nothing to scroll: no depth to report
      var pct = (w.scrollY + w.innerHeight) / total * 100;
      while (depth < 100 && pct >= depth + 25 - 1) { // 1% slack for sub-pixel rounding
        depth += 25;
        track('scroll', { name: depth + '%', attributes: { depth: depth } });
      }
    }), 200);
  }

  function observeViews() {
    if (!observer) return;
    observer.disconnect();
    var els = [];
    try { els = d.querySelectorAll(cfg.viewportSelector); } catch (e) { /* bad selector */ }
    Array.prototype.forEach.call(els, function (el) { observer.observe(el); });
  }

  function onIntersect(entries) {
    entries.forEach(function (en) {
      var el = en.target;
      // Half of it visible, or half the screen filled by it (a tall element never shows half).
      var inView = en.isIntersecting && (en.intersectionRatio >= 0.5 ||
        en.intersectionRect.height >= w.innerHeight / 2);
      if (!inView || seen.indexOf(el) >= 0) return;
      seen.push(el);
      observer.unobserve(el);
      var n = el.getAttribute('data-opportune-view') || el.id || el.tagName.toLowerCase();
      track('viewport', { name: text(n, 512) });
    });
  }

  // ---- engagement: the server's offers (actions), the widget, rechecks -----------------------
  // The widget is a second script, loaded only when the first action arrives: pages that are
  // never offered anything pay nothing for it. docs/widget.md has the contract.
  var widget = null; // null: not loaded; an array: loading (actions waiting); a function: loaded
  var recheckTimer = 0;
  var recheckDue = false; // the timer fired while the page was hidden: recheck when visible
  var reports = []; // reports made in this task: they travel together at its end
  var reportsSent = null;

  // The server's base URL: the endpoint without its trailing /v1/events.
  function base() { return cfg.endpoint.replace(/\/v1\/events\/?$/, ''); }

  function post(path, o, useBeacon) {
    var body = JSON.stringify(Object.assign({ siteKey: cfg.siteKey, visitorId: visitorId, sentAt: now() }, o));
    var url = base() + path;
    if (useBeacon && navigator.sendBeacon && navigator.sendBeacon(url, body)) return Promise.resolve(null);
    return fetch(url, {
      method: 'POST', body: body, headers: { 'Content-Type': 'text/plain;charset=UTF-8' },
      credentials: 'omit', keepalive: true // a CTA's report must survive the navigation it starts
    });
  }

  function readAnswer(r) {
    if (cfg.engage) r.json().then(safe(answer), function () { /* no JSON: nothing to do */ });
  }

  // An answer of /v1/events or /v1/recheck: actions to offer, and when to ask again.
  function answer(a) {
    if (!a || !cfg.engage || !allowed()) return;
    var acts = a.actions;
    if (acts && acts.length) engage(acts);
    // A number replaces the pending recheck; null or 0 cancels it; no field leaves it be.
    if ('recheckInMs' in a) {
      clearTimeout(recheckTimer);
      recheckTimer = 0;
      recheckDue = false;
      var ms = +a.recheckInMs;
      // At least 1 s (a server bug must not become a request loop); setTimeout's own limit.
      if (ms > 0) recheckTimer = setTimeout(safe(recheck), Math.min(Math.max(ms, 1000), 2147483647));
    }
  }

  // Actions to the widget, loading it first. With none, only to load it: a chat in progress
  // (the widget keeps it in sessionStorage) goes on on this page.
  function engage(acts) {
    if (typeof widget === 'function') return widget(acts);
    if (widget) return widget.push.apply(widget, acts);
    widget = acts.slice();
    var el = d.createElement('script');
    el.async = true;
    el.src = base() + '/sdk/opportune-widget.js';
    el.onload = safe(function () {
      var q = widget;
      widget = safe(w.OpportuneWidget({
        report: report, siteKey: cfg.siteKey, visitorId: visitorId, locale: cfg.locale,
        texts: cfg.texts, theme: cfg.theme, debug: cfg.debug, base: base()
      }));
      widget(q);
    });
    el.onerror = function () { widget = null; }; // a later action tries again
    d.head.appendChild(el);
  }

  function recheck() {
    recheckTimer = 0;
    recheckDue = d.visibilityState === 'hidden'; // a background tab asks when seen again
    if (recheckDue || !allowed()) return;
    post('/v1/recheck', {}).then(function (r) { if (r.ok) readAnswer(r); }, function () { /* offline */ });
  }

  // What the visitor did with an action; resolves true once the server took it (a beacon
  // is taken on trust: it has no answer).
  function report(id, state, form, useBeacon) {
    if (!allowed()) return Promise.resolve(false);
    var r = { id: String(id), state: String(state), ts: now() };
    if (form) r.form = attrs(form);
    reports.push(r);
    if (useBeacon) return sendReports(true); // the page is going away: now, by beacon
    if (!reportsSent) reportsSent = new Promise(function (ok) { setTimeout(function () { ok(sendReports()); }, 0); });
    return reportsSent;
  }

  function sendReports(useBeacon) {
    var list = reports;
    reports = [];
    reportsSent = null;
    if (!list.length) return Promise.resolve(true);
    return post('/v1/actions', { reports: list }, useBeacon).then(function (r) {
      // 200 with `refused` entries: the server did not take them (e.g. an expired offer).
      return !r || (r.ok && r.json().then(function (a) { return !(a && a.refused && a.refused.length); }));
    }).catch(function () { return false; });
  }

  // ---- commands -----------------------------------------------------------------------------
  var commands = {
    init: function (o) {
      if (cfg) return log('init called twice; ignored');
      o = o || {};
      if (!o.siteKey) throw new Error('opportune init: siteKey is required');
      cfg = {
        siteKey: String(o.siteKey),
        endpoint: o.endpoint || defaultEndpoint(),
        sessionTimeoutMinutes: o.sessionTimeoutMinutes > 0 ? o.sessionTimeoutMinutes : 20,
        requireConsent: !!o.requireConsent,
        honorDoNotTrack: !!o.honorDoNotTrack,
        searchParams: o.searchParams || ['q', 'query', 'search'],
        idleSeconds: o.idleSeconds > 0 ? o.idleSeconds : 30,
        viewportSelector: o.viewportSelector || '[data-opportune-view]',
        flushIntervalMs: o.flushIntervalMs >= 0 ? o.flushIntervalMs : 1000,
        batchSize: Math.min(o.batchSize > 0 ? o.batchSize : 10, BATCH_MAX),
        autoTrack: o.autoTrack || {},
        cookieDomain: o.cookieDomain || '',
        debug: !!o.debug,
        engage: o.engage !== false,
        locale: o.locale,
        texts: o.texts,
        theme: o.theme,
        context: context()
      };
      var at = cfg.autoTrack;
      var c = load(CONSENT);
      consent = c === '1' ? true : c === '0' ? false : null;
      // Do Not Track holds for the page's life: nothing to set up. A refusal may still turn
      // into consent on this page, so the listeners are set up (they record nothing).
      if (dnt()) return log('not tracking: Do Not Track');
      ensureVisitor();
      if (allowed()) start();
      var on = function (t, ev, fn, opt) { t.addEventListener(ev, safe(fn), opt === undefined ? true : opt); };
      if (at.clicks !== false) on(d, 'click', onClick);
      if (at.forms !== false) {
        on(d, 'input', onInput);
        on(d, 'change', onInput);
        on(d, 'invalid', onInvalid);
        on(w, 'submit', onSubmitStart);
        on(w, 'submit', onSubmitEnd, false);
      }
      ['pointerdown', 'keydown', 'touchstart', 'mousemove', 'wheel'].forEach(function (t) {
        on(w, t, onActivity, { capture: true, passive: true });
      });
      on(w, 'scroll', at.scroll !== false ? onScroll : onActivity, { capture: true, passive: true });
      if (at.idle !== false) setTimeout(safe(idleCheck), cfg.idleSeconds * 1000);
      if (at.viewport !== false && w.IntersectionObserver) {
        observer = new IntersectionObserver(safe(onIntersect), { threshold: [0, 0.5, 1] });
        observeViews();
        // Elements an app renders later are watched too (re-scan at most twice a second).
        var t = 0;
        if (w.MutationObserver) new MutationObserver(function () {
          if (!t) t = setTimeout(function () { t = 0; safe(observeViews)(); }, 500);
        }).observe(d.documentElement, { childList: true, subtree: true });
      }
      var hidden = function () {
        spaNow(); // a route change just before leaving: recorded, then sent with the rest
        forms.forEach(abandon);
        beacon();
        // Reports wait for the end of their task; a CTA's `accepted` whose link navigates
        // may see the page go first, and would be lost with it: send them now, by beacon.
        if (reports.length) sendReports(true);
      };
      on(w, 'pagehide', hidden);
      on(d, 'visibilitychange', function () {
        if (d.visibilityState === 'hidden') hidden();
        else if (recheckDue) recheck();
      });
      on(w, 'online', function () { clearTimeout(retryTimer); retryTimer = 0; failures = 0; flush(); });
      if (at.pageViews !== false) {
        hookHistory();
        pageView(false);
      }
      try {
        if (cfg.engage && allowed() && sessionStorage.getItem('opp_chat:' + cfg.siteKey)) engage([]);
      } catch (e) { /* no sessionStorage: no chat to go on with */ }
      var p = pending;
      pending = [];
      p.forEach(function (args) { run(args); });
    },

    // Custom event: opportune('record', 'loan_submitted', {amount: 5000})
    record: function (name, attributes) {
      if (!name) throw new Error('opportune record: a name is required');
      track('custom', { name: text(name, 512), attributes: attrs(attributes) });
    },

    // Link this visitor to a person. The only command that may carry personal data.
    identify: function (identity, traits) {
      var id = {};
      var any = false;
      var limits = { email: 254, phone: 32, customerId: 128 };
      for (var k in limits) {
        var v = identity && identity[k];
        if (v == null || typeof v === 'object') continue;
        v = String(v).trim();
        // A cut identifier would name someone else: drop it instead.
        if (v && v.length <= limits[k]) { id[k] = v; any = true; }
      }
      if (!any) throw new Error('opportune identify: give email, phone or customerId');
      track('identify', { identity: id, traits: attrs(traits) });
      soon(); // identify matters now (e.g. the page is about to navigate away)
    },

    consent: function (granted) {
      if (dnt()) return; // Do Not Track wins, and then not even the choice is stored
      if (granted) {
        consent = true;
        store(CONSENT, '1');
        ensureVisitor();
        start();
        var h = held;
        held = [];
        h.forEach(enqueue);
        flush();
      } else {
        // Withdrawn: stop, and remove what this snippet stored on the device (the refusal
        // itself is remembered so later pages do not track either).
        consent = false;
        held = [];
        outbox = [];
        store(outboxKey(), null);
        store(VID, null);
        store(SEQ, null);
        setCookie(VID, '', 0);
        setCookie(SES, '', 0);
        store(CONSENT, '0');
        try { sessionStorage.removeItem('opp_chat:' + cfg.siteKey); } catch (e) { /* none kept */ }
        visitorId = null;
        session = null;
      }
    },

    // The page reports its own validation errors: opportune('formError', {form, field, message})
    formError: function (o) {
      o = o || {};
      formError(o.form, o.field, o.message, null);
    },

    // Manual page view, e.g. for a router the history hooks do not see.
    page: function () { pageView(true); },

    // Send what is waiting now.
    flush: function () { flush(); },

    // On logout: what happens next belongs to a new, anonymous visitor. Waiting events keep
    // the visitor they were made by.
    reset: function () {
      visitorId = randomId();
      session = null;
      if (allowed()) { saveVisitor(); setCookie(SES, '', 0); }
      flush();
    },

    // opportune('ready', function (info) { info.visitorId }) — e.g. to pass the visitor id to
    // a back end that sends its own events. visitorId is null while not tracking.
    ready: function (fn) { fn({ visitorId: allowed() ? visitorId : null }); }
  };

  function start() {
    saveVisitor();
    if (session) saveSession();
    // Events a previous page stored but did not get acknowledged (offline, closed too soon).
    var mine = {};
    outbox.forEach(function (e) { mine[e.id] = 1; });
    outbox = readStored().filter(function (e) { return e && e.id && !mine[e.id]; }).concat(outbox);
    if (outbox.length && !flushTimer) flushTimer = setTimeout(flush, 0);
  }

  function defaultEndpoint() {
    // The server that served this file.
    var s = SRC;
    return s ? s.replace(/\/sdk\/[^/]*$/, '') + '/v1/events' : '/v1/events';
  }

  function safe(fn) {
    return function () {
      try { return fn.apply(this, arguments); } catch (e) { if (w.console) console.warn('[opportune]', e); }
    };
  }

  function run(args) {
    args = [].slice.call(args);
    var name = args.shift();
    if (!cfg && name !== 'init') return pending.length < BATCH_MAX && pending.push([name].concat(args));
    var fn = commands[name];
    if (!fn) return w.console && console.warn('[opportune] unknown command', name);
    safe(fn).apply(null, args);
  }

  var api = function () { run(arguments); };
  api.loaded = true;
  w[NAME] = api;
  var queue = (stub && stub.q) || [];
  for (var i = 0; i < queue.length; i++) run(queue[i]);
})(window, document);
