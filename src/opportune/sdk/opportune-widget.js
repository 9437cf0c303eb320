/*! Opportune engagement widget | Apache-2.0 | docs/widget.md */
// Plain ES2017, no build step, no dependencies. Loaded by opportune.js only when the server
// first sends an action, so pages never offered anything never download it. It defines one
// global, `OpportuneWidget(api)`, which returns the function the snippet hands actions to.
// `api` is the snippet's: {report(id, state, form, useBeacon) -> Promise<bool>, siteKey,
// visitorId, locale, texts, theme, debug}. Reports travel through the snippet (consent,
// visitor id and server URL are its business); this file only renders and listens.
// Server texts are only ever set with textContent, and URLs only kept when http(s).
(function (w, d) {
  'use strict';
  if (w.OpportuneWidget) return; // loaded twice

  // The widget's own words. Everything the visitor reads about the offer itself comes from
  // the server; init's `texts` overrides any of these.
  var TEXTS = {
    en: {
      close: 'Close',
      noThanks: 'No thanks',
      startChat: 'Start chat',
      connecting: 'Connecting you…',
      queued: 'You\u2019re in the queue — an agent will be with you shortly',
      failed: 'We could not connect you. Please try again.',
      required: 'Please fill in this field',
      email: 'Enter an email address like name@example.com',
      tel: 'Enter a phone number, digits only',
      choose: 'Choose…',
      chat: 'Chat'
    },
    es: {
      close: 'Cerrar',
      noThanks: 'No, gracias',
      startChat: 'Iniciar chat',
      connecting: 'Conectando…',
      queued: 'Está en la cola: un agente le atenderá en breve',
      failed: 'No hemos podido conectarle. Inténtelo de nuevo.',
      required: 'Rellene este campo',
      email: 'Escriba un correo electrónico como nombre@ejemplo.com',
      tel: 'Escriba un número de teléfono, solo cifras',
      choose: 'Elija…',
      chat: 'Chat'
    }
  };
  var LAYOUTS = { banner: 'region', modal: 'dialog', 'slide-in': 'complementary' };
  var EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;
  var TEL = /^\+?[\d\s().-]{6,20}$/;
  // Theme values become CSS custom properties: only plain values, so a theme cannot load a
  // URL or close the declaration.
  var THEME = {
    primary: ['--p', /^(#[\da-f]{3,8}|(rgb|hsl)a?\([\d\s.,%/]+\)|[a-z]{3,20})$/i],
    background: ['--bg', /^(#[\da-f]{3,8}|(rgb|hsl)a?\([\d\s.,%/]+\)|[a-z]{3,20})$/i],
    text: ['--fg', /^(#[\da-f]{3,8}|(rgb|hsl)a?\([\d\s.,%/]+\)|[a-z]{3,20})$/i],
    radius: ['--r', /^\d{1,3}(\.\d+)?(px|rem|em|%)?$/],
    font: ['--font', /^[\w\s,'"-]{1,200}$/]
  };

  var CSS = [
    // The page's rules cannot reach inside the shadow root; `all: initial !important` on the
    // host also beats the page's !important rules aimed at the host element itself.
    ':host{all:initial!important;display:block!important;position:fixed!important;top:0!important;' +
      'left:0!important;width:0!important;height:0!important;z-index:2147483647!important;' +
      'visibility:visible!important;opacity:1!important;transform:none!important}',
    '.root{--p:#0b5fff;--on:#fff;--bg:#fff;--fg:#1a1a1a;--r:12px;' +
      '--font:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;' +
      'font:16px/1.5 var(--font);color:var(--fg);-webkit-text-size-adjust:100%;text-align:left}',
    '*{box-sizing:border-box}',
    '[hidden]{display:none!important}',
    '.panel{position:fixed;z-index:2;background:var(--bg);color:var(--fg);border-radius:var(--r);' +
      'box-shadow:0 8px 32px rgba(0,0,0,.28);padding:20px;max-height:calc(100vh - 32px);overflow:auto}',
    '.modal{top:50%;left:50%;transform:translate(-50%,-50%);width:min(480px,calc(100vw - 32px))}',
    '.backdrop{position:fixed;inset:0;z-index:1;background:rgba(0,0,0,.5)}',
    '.banner{top:0;left:0;right:0;border-radius:0 0 var(--r) var(--r);padding:14px 64px 14px 20px;' +
      'display:flex;flex-wrap:wrap;align-items:center;gap:4px 20px}',
    '.banner .txt{flex:1 1 300px}.banner p{margin:0}',
    '.slide-in,.chat{right:16px;bottom:16px;width:min(380px,calc(100vw - 32px))}',
    'h2{font:700 1.15em/1.3 var(--font);margin:0 0 6px;padding-right:40px}',
    'h3{font:600 1em/1.4 var(--font);margin:0 0 10px}',
    'p{margin:0 0 14px}',
    'img{display:block;max-width:100%;height:auto;border-radius:calc(var(--r) / 2);margin:0 0 14px}',
    '.acts{display:flex;flex-wrap:wrap;gap:8px}',
    '.btn{display:inline-flex;align-items:center;justify-content:center;min-height:44px;min-width:44px;' +
      'padding:10px 18px;margin:0;border:2px solid var(--p);border-radius:calc(var(--r) * .75);' +
      'background:var(--p);color:var(--on);font:600 1em/1.2 var(--font);text-decoration:none;cursor:pointer}',
    '.sec{background:transparent;color:var(--fg);border-color:currentColor}',
    '.x{position:absolute;top:6px;right:6px;width:44px;height:44px;margin:0;padding:0;border:0;' +
      'border-radius:50%;background:transparent;color:var(--fg);font:28px/1 var(--font);cursor:pointer}',
    ':focus{outline:none}:focus-visible{outline:3px solid var(--p);outline-offset:2px}',
    '.panel:focus-visible{outline-offset:-3px}',
    '.field{margin:0 0 14px}',
    'label{display:block;font-weight:600;margin:0 0 4px}',
    'input,select,textarea{display:block;width:100%;min-height:44px;margin:0;padding:10px 12px;' +
      'font:1em/1.4 var(--font);color:var(--fg);background:var(--bg);border:1px solid #767676;' +
      'border-radius:calc(var(--r) / 2)}',
    'textarea{min-height:88px;resize:vertical}',
    '[aria-invalid=true]{border:2px solid #b3261e}',
    '.err{color:#b3261e;font-size:.9em;margin:4px 0 0}',
    '.msg{background:rgba(127,127,127,.14);padding:10px 14px;border-radius:var(--r)}',
    // Never display:none, even empty: a live region must exist before it speaks.
    '.status{margin:0;font-weight:600}',
    // Under 600 px every offer is a bottom sheet, full width.
    '@media (max-width:599.98px){.panel{top:auto;left:0;right:0;bottom:0;width:100%;transform:none;' +
      'max-height:85vh;border-radius:var(--r) var(--r) 0 0;padding-bottom:calc(20px + env(safe-area-inset-bottom))}}',
    '@media (prefers-reduced-motion:no-preference){.panel{animation:opp-in .2s ease-out}' +
      '@keyframes opp-in{from{opacity:0;translate:0 16px}}}'
  ].join('\n');

  function str(v) { return typeof v === 'string' ? v : v == null ? '' : String(v); }

  // http(s) or relative (resolved against the page); anything else (javascript:, data:) is dropped.
  function safeUrl(u) {
    u = str(u).trim();
    if (!u) return null;
    try { u = new URL(u, location.href); } catch (e) { return null; }
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : null;
  }

  // The first locale given decides: init's `locale`, else <html lang>, else the browser's.
  function pickLocale(given) {
    var l = given || d.documentElement.lang || navigator.language || 'en';
    l = str(l).toLowerCase().split(/[-_]/)[0];
    return TEXTS[l] ? l : 'en';
  }

  // `texts` may be flat ({close: 'Dismiss'}) or per locale ({es: {close: 'Cerrar'}}).
  function textsFor(locale, custom) {
    var t = {};
    var k;
    for (k in TEXTS[locale]) t[k] = TEXTS[locale][k];
    custom = custom || {};
    var own = custom[locale] && typeof custom[locale] === 'object' ? custom[locale] : custom;
    for (k in own) if (typeof own[k] === 'string' && own[k]) t[k] = own[k];
    return t;
  }

  // Black or white, whichever contrasts more with a hex colour (WCAG relative luminance).
  function onColor(c) {
    var m = /^#([\da-f]{3}|[\da-f]{6})$/i.exec(c);
    if (!m) return null;
    var h = m[1].length === 3 ? m[1].replace(/./g, '$&$&') : m[1];
    var L = [0, 2, 4].map(function (i) {
      var v = parseInt(h.substr(i, 2), 16) / 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    L = 0.2126 * L[0] + 0.7152 * L[1] + 0.0722 * L[2];
    return 1.05 / (L + 0.05) >= (L + 0.05) / 0.05 ? '#ffffff' : '#000000';
  }

  function el(tag, props, kids) {
    var e = d.createElement(tag);
    for (var k in props || {}) {
      var v = props[k];
      if (v == null || v === false) continue;
      if (k === 'text') e.textContent = v;
      else if (k.slice(0, 2) === 'on') e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : v);
    }
    (kids || []).forEach(function (c) { if (c) e.appendChild(c); });
    return e;
  }

  function focusables(root) {
    return [].filter.call(root.querySelectorAll('a[href],button,input,select,textarea'), function (e) {
      return !e.disabled && e.getClientRects().length;
    });
  }

  w.OpportuneWidget = function (api) {
    var locale = pickLocale(api.locale);
    var T = textsFor(locale, api.texts);
    var seen = {}; // ids shown on this page: an action repeated by a later answer is shown once
    var held = null; // an action that arrived while the page was hidden
    var cur = null; // what is on screen

    function log() {
      if (api.debug && w.console) console.log.apply(console, ['[opportune widget]'].concat([].slice.call(arguments)));
    }

    function report(id, state, form, useBeacon) {
      log('report', state, id);
      try { return Promise.resolve(api.report(id, state, form || null, useBeacon)); } catch (e) { return Promise.resolve(false); }
    }

    function valid(a) {
      if (!a || typeof a.id !== 'string' || !a.id) return false;
      if (a.type === 'content') return !!(a.content && a.content.title);
      if (a.type === 'chat') return !!(a.chat && a.chat.invitation && a.chat.invitation.title);
      if (a.type === 'bot') return !!(a.bot && a.bot.title);
      return false;
    }

    // Never two at once: an action that comes while another is on screen is left unshown and
    // unreported (the server avoids sending one; if it sends it again later, it shows then).
    function take(actions) {
      for (var i = 0; i < actions.length; i++) {
        var a = actions[i];
        if (!valid(a)) { log('not an action this widget can show', a); continue; }
        if (seen[a.id] || cur || held) { log(seen[a.id] ? 'already shown' : 'another is on screen', a.id); continue; }
        if (d.visibilityState === 'hidden') held = a;
        else show(a);
      }
    }

    // ---- mounting: a host element, its shadow root, the theme ---------------------------
    function mount(a, panel, opts) {
      var host = d.createElement('opportune-widget');
      host.setAttribute('style', 'all:initial');
      // Open rather than closed: a closed root is no protection against the page's own
      // scripts (they run in the same realm), and an open one lets tests and tools see in.
      var shadow = host.attachShadow({ mode: 'open' });
      var theme = {};
      var k;
      var t = api.theme || {};
      var s = (a.content && a.content.style) || {};
      for (k in THEME) {
        var v = s[k] != null ? s[k] : t[k];
        if (v != null && THEME[k][1].test(str(v).trim())) theme[k] = str(v).trim();
      }
      var root = el('div', { class: 'root', lang: locale });
      for (k in theme) root.style.setProperty(THEME[k][0], theme[k]);
      var on = theme.primary && onColor(theme.primary);
      if (on) root.style.setProperty('--on', on);
      shadow.appendChild(el('style', { text: CSS }));
      // A press on the backdrop would send focus to the page's body, out of the modal.
      if (opts.modal) {
        root.appendChild(el('div', {
          class: 'backdrop', 'aria-hidden': 'true', onmousedown: function (e) { e.preventDefault(); }
        }));
      }
      root.appendChild(panel);
      shadow.appendChild(root);
      var body = d.body || d.documentElement;
      // A banner sits at the top of the page: first in the tab order too.
      if (opts.first) body.insertBefore(host, body.firstChild);
      else body.appendChild(host);
      var view = {
        a: a, host: host, shadow: shadow, panel: panel, modal: !!opts.modal, stage: opts.stage,
        back: d.activeElement, timer: 0, touched: false, auto: false
      };
      // The timeout is for offers nobody touched: once the visitor points at, clicks, types
      // in or tabs into it, it stays until answered (nobody loses what they are reading).
      ['pointerenter', 'pointerdown', 'keydown', 'focusin'].forEach(function (ev) {
        panel.addEventListener(ev, function () {
          if (view.auto) return;
          view.touched = true;
          clearTimeout(view.timer);
        });
      });
      cur = view;
      return view;
    }

    // Focus that was inside goes back to where it was before the offer (unless the next
    // window takes it).
    function unmount(view, keepFocus) {
      if (!view || cur !== view) return;
      clearTimeout(view.timer);
      var inside = d.activeElement === view.host;
      cur = null;
      if (view.host.parentNode) view.host.parentNode.removeChild(view.host);
      var back = view.back;
      if (inside && !keepFocus && back && back !== d.body && back.focus && d.contains(back)) back.focus();
      if (held && d.visibilityState !== 'hidden') { var h = held; held = null; show(h); }
    }

    function focusIn(view, target) {
      view.auto = true; // our own focus move is not the visitor touching the offer
      try { target.focus(); } finally { view.auto = false; }
    }

    // ---- offers: content and chat invitations --------------------------------------------
    function show(a) {
      seen[a.id] = 1;
      if (a.type === 'bot') return openChat(a, true);
      var view = a.type === 'chat' ? invitation(a) : content(a);
      report(a.id, 'offered');
      var ms = +a.timeoutMs > 0 ? +a.timeoutMs : 30000;
      view.timer = setTimeout(function () {
        if (cur !== view || view.touched || view.stage !== 'offer') return;
        report(a.id, 'timeout');
        unmount(view);
      }, ms);
      if (view.modal) focusIn(view, view.panel);
    }

    function answer(view, state, later) {
      if (cur !== view || view.stage !== 'offer') return;
      view.stage = state;
      report(view.a.id, state);
      // A link removed during its own click does not navigate: the CTA's offer goes after.
      if (later) setTimeout(function () { unmount(view); }, 0);
      else unmount(view);
    }

    function closeButton(fn) {
      return el('button', { type: 'button', class: 'x', 'aria-label': T.close, title: T.close, onclick: fn },
        [el('span', { 'aria-hidden': 'true', text: '×' })]);
    }

    // Elements with server text carry the action's locale, so screen readers pronounce them right.
    function txt(tag, a, s, props) {
      props = props || {};
      props.text = str(s);
      if (a.locale) props.lang = str(a.locale);
      return el(tag, props);
    }

    function content(a) {
      var c = a.content;
      var layout = LAYOUTS[c.layout] ? c.layout : 'slide-in';
      var modal = layout === 'modal';
      var view;
      var no = function () { answer(view, 'rejected'); };
      var img = safeUrl(c.imageUrl);
      var href = c.cta && c.cta.label ? safeUrl(c.cta.url) : null;
      var cta = href && txt('a', a, c.cta.label, {
        class: 'btn', href: href, onclick: function () { answer(view, 'accepted', true); }
      });
      var body = c.body ? txt('p', a, c.body, { id: 'opp-b' }) : null;
      var words = el('div', { class: 'txt' }, [txt('h2', a, c.title, { id: 'opp-t' }), body]);
      var panel = el('div', {
        class: 'panel ' + layout, role: LAYOUTS[layout], 'aria-modal': modal ? 'true' : null,
        'aria-labelledby': 'opp-t', 'aria-describedby': modal && body ? 'opp-b' : null,
        tabindex: modal ? '-1' : null
      }, [
        img && el('img', { src: img, alt: str(c.imageAlt), lang: a.locale ? str(a.locale) : null }),
        words,
        el('div', { class: 'acts' }, [cta, el('button', { type: 'button', class: 'btn sec', text: T.noThanks, onclick: no })]),
        closeButton(no)
      ]);
      view = mount(a, panel, { modal: modal, first: layout === 'banner', stage: 'offer' });
      view.no = no;
      return view;
    }

    function invitation(a) {
      var inv = a.chat.invitation;
      var view;
      var no = function () { answer(view, 'rejected'); };
      var panel = el('div', { class: 'panel slide-in', role: 'complementary', 'aria-labelledby': 'opp-t' }, [
        txt('h2', a, inv.title, { id: 'opp-t' }),
        inv.body ? txt('p', a, inv.body) : null,
        el('div', { class: 'acts' }, [
          inv.accept ? txt('button', a, inv.accept, { type: 'button', class: 'btn', onclick: yes })
            : el('button', { type: 'button', class: 'btn', text: T.startChat, onclick: yes }),
          inv.decline ? txt('button', a, inv.decline, { type: 'button', class: 'btn sec', onclick: no })
            : el('button', { type: 'button', class: 'btn sec', text: T.noThanks, onclick: no })
        ]),
        closeButton(no)
      ]);
      function yes() {
        if (cur !== view || view.stage !== 'offer') return;
        view.stage = 'accepted';
        report(a.id, 'accepted');
        unmount(view, true);
        openChat(a, false);
      }
      view = mount(a, panel, { stage: 'offer' });
      view.no = no;
      return view;
    }

    // ---- the chat window: registration form, then the queue ------------------------------
    function openChat(a, bot) {
      var chat = a.chat || {};
      var form = bot ? null : chat.form;
      var fields = [];
      var view;
      var busy = false;
      var status = el('p', { class: 'status', role: 'status', 'aria-live': 'polite' });
      var formEl = null;
      var submit = null;
      if (form && form.fields && form.fields.length) {
        formEl = el('form', { novalidate: true, onsubmit: send });
        if (form.title) formEl.appendChild(txt('h3', a, form.title));
        form.fields.forEach(function (f, i) {
          if (!f || !f.name) return;
          var type = str(f.type);
          var id = 'opp-f' + i;
          var err = el('p', { class: 'err', id: 'opp-e' + i, hidden: true });
          var input;
          var props = {
            id: id, name: str(f.name), required: !!f.required, 'aria-describedby': 'opp-e' + i,
            autocomplete: type === 'email' ? 'email' : type === 'tel' ? 'tel' : /name/i.test(f.name) ? 'name' : null
          };
          if (type === 'select') {
            input = el('select', props, [el('option', { value: '', text: T.choose })]);
            (f.options || []).forEach(function (o) {
              var v = o && typeof o === 'object' ? o.value : o;
              input.appendChild(txt('option', a, o && typeof o === 'object' ? (o.label || o.value) : o, { value: str(v) }));
            });
          } else if (type === 'textarea') {
            input = el('textarea', props);
          } else {
            props.type = type === 'email' || type === 'tel' ? type : 'text';
            input = el('input', props);
          }
          if (f.value != null) input.value = str(f.value);
          var label = txt('label', a, f.label || f.name, { for: id });
          if (f.required) label.appendChild(el('span', { 'aria-hidden': 'true', text: ' *' }));
          var field = { name: str(f.name), type: type, required: !!f.required, input: input, err: err };
          input.addEventListener('input', function () { if (input.getAttribute('aria-invalid')) check(field); });
          fields.push(field);
          formEl.appendChild(el('div', { class: 'field' }, [label, input, err]));
        });
        submit = form.submit ? txt('button', a, form.submit, { type: 'submit', class: 'btn' })
          : el('button', { type: 'submit', class: 'btn', text: T.startChat });
        formEl.appendChild(el('div', { class: 'acts' }, [submit]));
      }
      var title = bot ? a.bot.title : chat.invitation.title;
      var panel = el('div', {
        class: 'panel chat', role: bot ? 'complementary' : 'dialog', 'aria-labelledby': 'opp-t', tabindex: '-1'
      }, [
        txt('h2', a, title || T.chat, { id: 'opp-t' }),
        bot && a.bot.greeting ? txt('p', a, a.bot.greeting, { class: 'msg' }) : null,
        formEl,
        status,
        closeButton(function () {
          if (cur !== view) return;
          report(a.id, 'abandoned');
          unmount(view);
        })
      ]);
      view = mount(a, panel, { stage: bot ? 'started' : 'form' });
      if (bot) {
        report(a.id, 'offered');
        report(a.id, 'started');
        return view;
      }
      // The visitor asked for the chat: focus goes to it (the first field to fill, if any).
      var first = fields.filter(function (f) { return !f.input.value; })[0] || fields[0];
      focusIn(view, first ? first.input : panel);
      if (!formEl) start(null);

      function check(f) {
        var v = f.input.value.trim();
        var msg = !v ? (f.required ? T.required : null)
          : f.type === 'email' && !EMAIL.test(v) ? T.email
            : f.type === 'tel' && !TEL.test(v) ? T.tel : null;
        f.err.textContent = msg || '';
        f.err.hidden = !msg;
        if (msg) f.input.setAttribute('aria-invalid', 'true');
        else f.input.removeAttribute('aria-invalid');
        return !msg;
      }

      function send(e) {
        e.preventDefault();
        if (busy) return;
        var bad = null;
        var values = {};
        fields.forEach(function (f) {
          if (!check(f) && !bad) bad = f;
          values[f.name] = f.input.value.trim();
        });
        // The first invalid field gets focus; its error is its description, read with it.
        if (bad) return bad.input.focus();
        start(values);
      }

      function start(values) {
        busy = true;
        if (submit) submit.setAttribute('aria-disabled', 'true'); // disabled would drop focus
        status.textContent = T.connecting;
        view.stage = 'starting';
        report(a.id, 'started', values).then(function (ok) {
          if (cur !== view) return;
          busy = false;
          if (submit) submit.removeAttribute('aria-disabled');
          if (!ok) { view.stage = 'form'; status.textContent = T.failed; return; }
          view.stage = 'started';
          if (formEl) {
            if (view.shadow.activeElement && formEl.contains(view.shadow.activeElement)) focusIn(view, panel);
            formEl.parentNode.removeChild(formEl);
          }
          status.textContent = T.queued;
        });
      }
      return view;
    }

    // ---- page-level listeners: keyboard, focus containment, leaving ----------------------
    d.addEventListener('keydown', function (e) {
      var v = cur;
      if (!v) return;
      var inside = d.activeElement === v.host;
      if (e.key === 'Escape' && v.stage === 'offer' && (v.modal || inside)) {
        e.preventDefault();
        e.stopPropagation();
        return v.no();
      }
      if (e.key !== 'Tab' || !v.modal) return;
      // The modal keeps focus: Tab past the last control wraps to the first, and back.
      var f = focusables(v.panel);
      var active = v.shadow.activeElement;
      if (!f.length) return e.preventDefault();
      if (e.shiftKey && (!inside || active === f[0] || active === v.panel)) {
        e.preventDefault();
        focusIn(v, f[f.length - 1]);
      } else if (!e.shiftKey && (!inside || active === f[f.length - 1])) {
        e.preventDefault();
        focusIn(v, f[0]);
      }
    }, true);

    d.addEventListener('focusin', function (e) {
      if (cur && cur.modal && e.target !== cur.host) focusIn(cur, cur.panel);
    }, true);

    // Left with an offer unanswered: `ignored`, by beacon (the page is going away). Removed
    // too, so a page restored from the back-forward cache does not show a stale offer.
    w.addEventListener('pagehide', function () {
      var v = cur;
      if (!v) return;
      if (v.stage === 'offer') report(v.a.id, 'ignored', null, true);
      else if (v.stage === 'form') report(v.a.id, 'abandoned', null, true);
      else return;
      unmount(v, true);
    });

    d.addEventListener('visibilitychange', function () {
      if (held && !cur && d.visibilityState !== 'hidden') { var h = held; held = null; show(h); }
    });

    return function (actions) { if (actions && actions.length) take(actions); };
  };
})(window, document);
