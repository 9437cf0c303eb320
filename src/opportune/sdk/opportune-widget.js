/*! Opportune engagement widget | Apache-2.0 | docs/widget.md */
// Plain ES2017, no build step, no dependencies. Loaded by opportune.js only when the server
// first sends an action, so pages never offered anything never download it. It defines one
// global, `OpportuneWidget(api)`, which returns the function the snippet hands actions to.
// `api` is the snippet's: {report(id, state, form, useBeacon) -> Promise<bool>, siteKey,
// visitorId, locale, texts, theme, debug, base}. Reports travel through the snippet (consent,
// visitor id and server URL are its business); this file renders, listens, and holds the
// chat's own socket to {base}/v1/chat (docs/conversations.md), which outlives the page
// through sessionStorage. Server and visitor texts are only ever set with textContent, and
// URLs only kept when http(s).
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
      chat: 'Chat',
      message: 'Your message',
      send: 'Send',
      talk: 'Talk to a person',
      end: 'End chat',
      ended: 'The chat has ended.',
      rate: 'How was this chat?',
      rated: 'Thank you for your rating.',
      stars: '{n} of 5',
      position: 'You are number {n} in the queue.',
      wait: 'Expected wait: about {n} min.',
      waitSoon: 'Expected wait: under a minute.',
      joined: '{name} has joined the chat.',
      typing: '{name} is typing…',
      read: 'Read',
      sending: 'Sending…',
      notSent: 'Not sent',
      reconnecting: 'Connection lost. Reconnecting…',
      you: 'You'
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
      chat: 'Chat',
      message: 'Su mensaje',
      send: 'Enviar',
      talk: 'Hablar con una persona',
      end: 'Terminar chat',
      ended: 'El chat ha terminado.',
      rate: '¿Qué le ha parecido este chat?',
      rated: 'Gracias por su valoración.',
      stars: '{n} de 5',
      position: 'Es el número {n} en la cola.',
      wait: 'Espera estimada: unos {n} min.',
      waitSoon: 'Espera estimada: menos de un minuto.',
      joined: '{name} se ha unido al chat.',
      typing: '{name} está escribiendo…',
      read: 'Leído',
      sending: 'Enviando…',
      notSent: 'No enviado',
      reconnecting: 'Se ha perdido la conexión. Reconectando…',
      you: 'Usted'
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
    // The chat window: header, status, the message list (it takes the height left), footer.
    '.chat{padding:0;display:flex;flex-direction:column}',
    '.hd{display:flex;align-items:center;gap:10px;padding:16px 56px 8px 20px}',
    '.hd h2{margin:0;padding:0}',
    '.logo{width:32px;height:32px;margin:0;border-radius:6px;flex:none}',
    '.nm{margin:0;font-size:.8em;font-weight:600;opacity:.75}',
    '.bd{padding:0 20px 10px}',
    '.q{margin:4px 0 0;font-size:.9em}',
    '.log{flex:1 1 auto;height:320px;min-height:120px;overflow-y:auto;padding:10px 20px;display:flex;' +
      'flex-direction:column;gap:8px;border-top:1px solid rgba(127,127,127,.25)}',
    '.b{max-width:85%;padding:8px 12px;border-radius:var(--r);background:rgba(127,127,127,.14);' +
      'align-self:flex-start;overflow-wrap:anywhere}',
    '.b p{margin:0;white-space:pre-wrap}',
    '.b.visitor{align-self:flex-end;background:var(--p);color:var(--on)}',
    '.b.system{align-self:center;background:none;font-size:.9em;font-style:italic;text-align:center}',
    '.b img,.b video{display:block;max-width:100%;margin:8px 0 0;border-radius:calc(var(--r) / 2)}',
    '.b a{display:inline-block;margin-top:6px;color:inherit;font-weight:600}',
    '.b .acts{margin-top:8px}',
    '.who{display:block;font-size:.8em;font-weight:600;opacity:.75}',
    '.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip-path:inset(50%);white-space:nowrap}',
    '.st{display:block;font-size:.75em;opacity:.85;text-align:right}',
    '[aria-disabled=true]{opacity:.55;cursor:default}',
    '.typing{margin:0;padding:0 20px;min-height:1.5em;font-size:.85em;font-style:italic;opacity:.8}',
    '.ft{padding:8px 20px 16px;border-top:1px solid rgba(127,127,127,.25)}',
    '.tools{display:flex;flex-wrap:wrap;gap:8px;margin:0 0 8px}',
    '.sm{padding:6px 12px;font-size:.9em}',
    '.cmp{display:flex;gap:8px;align-items:flex-end}',
    '.cmp textarea{flex:1;min-height:44px;max-height:120px;resize:none}',
    '.rating p{margin:0 0 8px;font-weight:600}',
    // Never display:none, even empty: a live region must exist before it speaks.
    '.status{margin:0;font-weight:600}',
    // Under 600 px every offer is a bottom sheet, full width.
    '@media (max-width:599.98px){.panel{top:auto;left:0;right:0;bottom:0;width:100%;transform:none;' +
      'max-height:85vh;border-radius:var(--r) var(--r) 0 0;padding-bottom:calc(20px + env(safe-area-inset-bottom))}' +
      '.chat{padding-bottom:env(safe-area-inset-bottom);max-height:85dvh}.log{height:auto}}',
    '@media (prefers-reduced-motion:no-preference){.panel{animation:opp-in .2s ease-out}' +
      '@keyframes opp-in{from{opacity:0;translate:0 16px}}}'
  ].join('\n');

  function str(v) { return typeof v === 'string' ? v : v == null ? '' : String(v); }

  // http(s) or relative (resolved against the page); anything else (javascript:, data:) is dropped.
  function safeUrl(u, base) {
    u = str(u).trim();
    if (!u) return null;
    try { u = new URL(u, base || location.href); } catch (e) { return null; }
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : null;
  }

  // The first locale given decides: init's `locale`, else <html lang>, else the browser's.
  function pickLocale(given) {
    var l = given || d.documentElement.lang || navigator.language || 'en';
    l = str(l).toLowerCase().split(/[-_]/)[0];
    return TEXTS[l] ? l : 'en';
  }

  // The site's words (its config, per locale) over the widget's own, and init's over both.
  // `texts` may be flat ({close: 'Dismiss'}) or per locale ({es: {close: 'Cerrar'}}).
  function textsFor(locale, site, custom) {
    var t = {};
    var k;
    for (k in TEXTS[locale]) t[k] = TEXTS[locale][k];
    [site || {}, custom || {}].forEach(function (o) {
      var own = o && o[locale] && typeof o[locale] === 'object' ? o[locale] : o;
      for (k in own) if (k in t && typeof own[k] === 'string' && own[k]) t[k] = own[k];
    });
    return t;
  }

  // A word with its {n} / {name} filled in (with text: it only ever reaches textContent).
  function fill(s, o) { return s.replace(/\{(\w+)\}/g, function (m, k) { return k in o ? str(o[k]) : m; }); }

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
    var T = textsFor(locale, null, api.texts);
    var site = {}; // the site's widget config: {theme, logo, name, texts}
    var base = str(api.base);
    var cfgUrl = new URL(base + '/v1/widget?siteKey=' + encodeURIComponent(str(api.siteKey)), location.href).href;
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
      var c = site.theme || {};
      var s = (a.content && a.content.style) || {};
      for (k in THEME) {
        var v = s[k] != null ? s[k] : t[k] != null ? t[k] : c[k];
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

    // ---- the chat window: registration form, then the conversation -----------------------
    // `saved` is a conversation this tab had on an earlier page (sessionStorage): it is
    // resumed, its transcript shown again from the copy kept with it.
    function openChat(a, bot, saved) {
      var chat = a.chat || {};
      var form = bot || saved ? null : chat.form;
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
      var title = (bot ? a.bot.title : chat.invitation.title) || T.chat;
      var room = room_(a, bot, title, status);
      var logo = safeUrl(site.logo, cfgUrl);
      var panel = el('div', {
        class: 'panel chat', role: bot ? 'complementary' : 'dialog', 'aria-labelledby': 'opp-t', tabindex: '-1'
      }, [
        el('div', { class: 'hd' }, [
          logo && el('img', { src: logo, alt: '', class: 'logo' }),
          el('div', {}, [
            site.name ? el('p', { class: 'nm', text: str(site.name) }) : null,
            txt('h2', a, title, { id: 'opp-t' })
          ])
        ]),
        el('div', { class: 'bd' }, [formEl, status, room.q, room.net]),
        room.log,
        room.typing,
        room.foot,
        closeButton(function () {
          if (cur !== view) return;
          if (!room.over()) report(a.id, 'abandoned');
          room.close();
          unmount(view);
        })
      ]);
      view = mount(a, panel, { stage: bot || saved ? 'started' : 'form' });
      room.view = view;
      if (saved) return room.open(saved, false), view;
      if (bot) {
        report(a.id, 'offered');
        report(a.id, 'started');
        room.open(null, false);
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
          var had = formEl && view.shadow.activeElement && formEl.contains(view.shadow.activeElement);
          if (formEl) formEl.parentNode.removeChild(formEl);
          // A chat goes to its queue: said at once, the server's frames then keep it true.
          status.textContent = T.queued;
          room.open({ form: values }, true);
          if (had || !view.shadow.activeElement) focusIn(view, room.input);
        });
      }
      return view;
    }

    // ---- the conversation: socket, transcript, outbox, indicators --------------------------
    // One chat's state, kept in sessionStorage so that a reload or another page of the site
    // resumes it: {visitorId, a, form, conversation, state, agent, lastSeq, readSeq, msgs,
    // outbox}. Messages typed wait in the outbox until acked, and are sent again after a
    // reconnect (the server answers a resend as a duplicate), so nothing typed is lost.
    var KEY = 'opp_chat:' + str(api.siteKey);

    function loadChat() {
      try {
        var c = JSON.parse(sessionStorage.getItem(KEY));
        if (c && c.a && c.visitorId === api.visitorId) return c;
        sessionStorage.removeItem(KEY); // another visitor's (after a reset): not theirs to see
      } catch (e) { /* no storage: nothing to resume */ }
      return null;
    }

    function saveChat(c) {
      try {
        if (c) sessionStorage.setItem(KEY, JSON.stringify(c));
        else sessionStorage.removeItem(KEY);
      } catch (e) { /* full or unavailable: the chat still works on this page */ }
    }

    function msgId() {
      var b = new Uint8Array(12);
      (w.crypto || w.msCrypto).getRandomValues(b);
      return 'm' + Array.prototype.map.call(b, function (x) { return (x + 256).toString(16).slice(1); }).join('');
    }

    function wsUrl() {
      var u = new URL(base + '/v1/chat', location.href);
      u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
      u.search = '?siteKey=' + encodeURIComponent(str(api.siteKey));
      return u.href;
    }

    var OVER = { wrap_up: 1, closed: 1, abandoned: 1 };

    // The conversation part of the chat window. Returns its elements and `open(saved, chat)`.
    function room_(a, bot, title, status) {
      var c = null; // the stored state
      var ws = null;
      var live = false; // the server answered start/resume on this socket
      var tries = 0;
      var retry = 0;
      var beat = 0;
      var heard = 0; // when the server last said anything
      var typingOut = 0; // when we last said we are typing
      var typingIn = 0; // timer hiding the other side's indicator
      var readSent = 0;
      var shown = {}; // seq -> bubble
      var pending = {}; // client id -> bubble, until acked
      var buttons = null; // the latest bot buttons: answered once something follows them
      var ended = false;
      var closing = false;
      var R = {};
      var list = R.log = el('div', {
        class: 'log', role: 'log', 'aria-live': 'polite', 'aria-labelledby': 'opp-t', tabindex: '0', hidden: true
      });
      var readMark = el('span', { class: 'st', text: T.read });
      R.q = el('p', { class: 'q', 'aria-live': 'polite' });
      R.net = el('p', { class: 'q net', 'aria-live': 'polite' });
      R.typing = el('p', { class: 'typing', 'aria-hidden': 'true' });
      var input = R.input = el('textarea', {
        id: 'opp-m', rows: '1', maxlength: '2000', 'aria-label': T.message, placeholder: T.message,
        onkeydown: function (e) {
          // Enter sends, Shift+Enter is a new line; not while an IME is composing a word.
          if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); sendTyped(); }
        },
        oninput: function () {
          grow();
          if (Date.now() - typingOut > 3000 && input.value) { typingOut = Date.now(); frame({ type: 'typing' }); }
        }
      });
      var talk = el('button', {
        type: 'button', class: 'btn sec sm', text: T.talk, hidden: true,
        onclick: function () { talk.hidden = true; frame({ type: 'escalate' }); }
      });
      var endBtn = el('button', { type: 'button', class: 'btn sec sm', text: T.end, onclick: function () { end(true); } });
      var rating = el('div', { class: 'rating', role: 'group', 'aria-labelledby': 'opp-r', hidden: true }, [
        el('p', { id: 'opp-r', text: T.rate })
      ]);
      var stars = el('div', { class: 'acts' });
      [1, 2, 3, 4, 5].forEach(function (n) {
        stars.appendChild(el('button', {
          type: 'button', class: 'btn sec', text: String(n), 'aria-label': fill(T.stars, { n: n }),
          onclick: function () {
            frame({ type: 'rate', rating: n });
            rating.replaceChild(el('p', { text: T.rated }), stars);
            rating.removeAttribute('role');
          }
        }));
      });
      rating.appendChild(stars);
      var composer = el('div', { class: 'cmp' }, [
        input, el('button', { type: 'button', class: 'btn', text: T.send, onclick: sendTyped })
      ]);
      R.foot = el('div', { class: 'ft', hidden: true }, [el('div', { class: 'tools' }, [talk, endBtn]), composer, rating]);
      R.over = function () { return ended; };

      R.open = function (saved, isChat) {
        c = saved && saved.visitorId ? saved : {
          visitorId: api.visitorId,
          a: { id: a.id, type: a.type, locale: a.locale, chat: { invitation: { title: title } }, bot: bot ? { title: title, greeting: a.bot.greeting } : null },
          form: saved && saved.form, conversation: null, state: null, agent: null, lastSeq: 0, readSeq: 0, msgs: [], outbox: []
        };
        list.hidden = false;
        R.foot.hidden = false;
        if (bot && c.a.bot && c.a.bot.greeting) list.appendChild(bubble({ sender: 'bot', author: title, text: c.a.bot.greeting }));
        c.msgs.forEach(function (m) { place(m); });
        c.outbox.forEach(function (o) { pend(o); });
        showState();
        showRead();
        save();
        connect();
        if (isChat) status.textContent = T.queued;
      };

      function save() {
        if (c.msgs.length > 300) c.msgs = c.msgs.slice(-300); // a long chat: the latest are kept
        if (!ended) saveChat(c);
      }

      // ---- the socket ----
      function connect() {
        if (closing || ended) return;
        live = false;
        try { ws = new WebSocket(wsUrl()); } catch (e) { log('no socket', e); return later(); }
        ws.onopen = function () {
          frame(c.conversation
            ? { type: 'resume', visitorId: c.visitorId, conversation: c.conversation, after: c.lastSeq }
            : { type: 'start', visitorId: c.visitorId, action: c.a.id, form: c.form || {}, locale: locale }, true);
          clearInterval(beat);
          heard = Date.now();
          // A heartbeat every 20 s; a line silent through two of them is dead even if no
          // close came (a sleeping laptop, a lost Wi-Fi): closed, so it reconnects.
          beat = setInterval(function () {
            if (Date.now() - heard > 50000 && ws) {
              var dead = ws; // its close could take as long again: not waited for
              dead.onclose = dead.onmessage = null;
              dead.close(4000, 'silent');
              ws = null;
              live = false;
              clearInterval(beat);
              return later();
            }
            frame({ type: 'ping' });
          }, 20000);
        };
        ws.onmessage = function (e) {
          var f;
          heard = Date.now();
          try { f = JSON.parse(e.data); } catch (x) { return; }
          if (f && typeof f === 'object') on(f);
        };
        ws.onclose = function (e) {
          clearInterval(beat);
          ws = null;
          live = false;
          if (closing || ended) return;
          // Refused for good: someone else's, unknown, or a frame the server cannot read.
          if (e.code === 4403 || e.code === 4404 || e.code === 4400) return fail();
          // A message too large for the server would be refused again: it is not resent.
          if (e.code === 4413 && c.outbox.length) drop(c.outbox[0].id);
          later();
        };
      }

      // Reconnect after 1, 2, 4… s (30 s at most, with jitter), or at once when back online.
      function later() {
        if (tries++ > 0) R.net.textContent = T.reconnecting;
        var ms = Math.min(30000, 1000 * Math.pow(2, Math.min(tries - 1, 5))) * (0.5 + Math.random() / 2);
        clearTimeout(retry);
        retry = setTimeout(connect, ms);
      }
      w.addEventListener('online', function () { if (!ws && !closing && !ended && c) { clearTimeout(retry); connect(); } });

      function frame(o, first) {
        if (!ws || ws.readyState !== 1 || (!live && !first)) return false;
        ws.send(JSON.stringify(o));
        return true;
      }

      function fail() {
        ended = true;
        saveChat(null);
        status.textContent = T.failed;
        R.q.textContent = R.net.textContent = '';
        R.foot.hidden = true;
      }

      function on(f) {
        log('frame', f.type, f);
        if (f.type === 'started') {
          live = true;
          tries = 0;
          R.net.textContent = '';
          c.conversation = str(f.conversation);
          c.form = null; // personal data: kept only until the server has it
          setState(f.state, c.agent);
          c.outbox.forEach(function (o) { frame(msgFrame(o)); });
          read();
        } else if (f.type === 'message' && f.message) {
          got(f.message);
        } else if (f.type === 'ack') {
          acked(str(f.id), +f.seq);
        } else if (f.type === 'state') {
          setState(f.state, f.agent && f.agent.name ? str(f.agent.name) : f.agent === null ? null : c.agent);
        } else if (f.type === 'queue') {
          queueLine(f.position, f.waitSeconds);
        } else if (f.type === 'typing' && f.sender !== 'visitor') {
          R.typing.textContent = fill(T.typing, { name: f.sender === 'agent' ? c.agent || T.chat : title });
          clearTimeout(typingIn);
          typingIn = setTimeout(function () { R.typing.textContent = ''; }, 6000);
        } else if (f.type === 'read' && +f.seq > c.readSeq) {
          c.readSeq = +f.seq;
          showRead();
          save();
        } else if (f.type === 'error' && f.id && pending[f.id]) {
          drop(str(f.id)); // refused (bad_message): a resend would be refused again
        }
      }

      // ---- messages ----
      function msgFrame(o) {
        var f = { type: 'message', id: o.id, text: o.text };
        if (o.choice != null) f.choice = o.choice;
        return f;
      }

      function say(text, choice) {
        text = str(text).trim();
        if (!text || ended) return;
        var o = { id: msgId(), text: text };
        if (choice != null) o.choice = str(choice);
        c.outbox.push(o);
        save();
        pend(o);
        frame(msgFrame(o));
      }

      function sendTyped() {
        var t = input.value;
        if (!t.trim()) return;
        input.value = '';
        grow();
        say(t);
      }

      // The text box grows with its lines (up to its max-height, then it scrolls).
      function grow() {
        input.style.height = 'auto';
        input.style.height = input.scrollHeight + 2 + 'px';
      }

      function pend(o) {
        var b = bubble({ sender: 'visitor', text: o.text });
        b.appendChild(el('span', { class: 'st', text: T.sending }));
        pending[o.id] = b;
        list.appendChild(b);
        answered();
        scroll();
      }

      function drop(id) {
        c.outbox = c.outbox.filter(function (o) { return o.id !== id; });
        var b = pending[id];
        delete pending[id];
        if (b) b.lastChild.textContent = T.notSent;
        save();
      }

      // The server stored it as `seq`: the bubble loses its "Sending…", the outbox its copy.
      function acked(id, seq) {
        var o = c.outbox.filter(function (x) { return x.id === id; })[0];
        var b = pending[id];
        if (!b) return;
        delete pending[id];
        c.outbox = c.outbox.filter(function (x) { return x !== o; });
        b.removeChild(b.lastChild);
        b.removeAttribute('data-pending');
        if (seq > 0 && !shown[seq]) {
          shown[seq] = b;
          b.setAttribute('data-seq', seq);
          c.msgs.push({ seq: seq, id: id, sender: 'visitor', text: o ? o.text : b.textContent });
          // The ack is a message of the transcript: the next resume starts after it, unless
          // an earlier one has not arrived yet.
          if (seq === c.lastSeq + 1) c.lastSeq = seq;
        }
        showRead();
        save();
      }

      function got(m) {
        var seq = +m.seq;
        if (!(seq > 0) || shown[seq]) return; // seen already (a resume sends from lastSeq on)
        var mine = m.id && pending[m.id];
        if (mine) acked(str(m.id), seq);
        else {
          // An agent is named as the state frame names them (the message's author may be
          // their internal id); kept with the message, so a later transfer does not rename it.
          var author = m.sender === 'agent' && c.agent ? c.agent : str(m.author);
          var keep = { seq: seq, id: str(m.id), sender: str(m.sender), author: author, text: str(m.text), payload: m.payload || null };
          c.msgs.push(keep);
          place(keep);
        }
        if (seq > c.lastSeq) c.lastSeq = seq;
        if (m.sender !== 'visitor') { R.typing.textContent = ''; read(); }
        if (m.sender === 'bot') answered(true);
        save();
      }

      // A stored message in its place by seq (after a resume, before what is still sending).
      function place(m) {
        if (shown[m.seq]) return;
        var b = bubble(m);
        b.setAttribute('data-seq', m.seq);
        shown[m.seq] = b;
        var next = null;
        [].some.call(list.children, function (x) {
          var s = +x.getAttribute('data-seq');
          if (x.getAttribute('data-pending') || s > m.seq) { next = x; return true; }
          return false;
        });
        list.insertBefore(b, next);
        if (m.sender === 'bot') answered(true);
        else answered();
        scroll();
      }

      function bubble(m) {
        var sender = { visitor: 1, bot: 1, agent: 1, system: 1 }[m.sender] ? m.sender : 'system';
        var b = el('div', { class: 'b ' + sender, lang: sender === 'visitor' ? null : c && c.a.locale ? str(c.a.locale) : null });
        if (sender === 'visitor' && !m.seq) b.setAttribute('data-pending', '1');
        var who = sender === 'visitor' ? T.you : sender === 'agent' ? m.author || c.agent : sender === 'bot' ? m.author || title : '';
        if (who) b.appendChild(el('span', { class: sender === 'visitor' ? 'sr' : 'who', text: who + (sender === 'visitor' ? ': ' : '') }));
        if (m.text) b.appendChild(el('p', { text: m.text }));
        var p = m.payload && typeof m.payload === 'object' ? m.payload : {};
        var img = p.image && safeUrl(p.image.url);
        if (img) b.appendChild(el('img', { src: img, alt: str(p.image.alt) }));
        var vid = p.video && safeUrl(p.video.url);
        if (vid) b.appendChild(el('video', { src: vid, controls: true, preload: 'metadata' }));
        var href = p.link && safeUrl(p.link.url);
        if (href) b.appendChild(el('a', { href: href, target: '_blank', rel: 'noopener noreferrer', text: str(p.link.label || href) }));
        if (p.buttons && p.buttons.length) {
          var row = el('div', { class: 'acts' });
          p.buttons.forEach(function (x) {
            if (!x || !x.label) return;
            row.appendChild(el('button', {
              type: 'button', class: 'btn sec', text: str(x.label),
              onclick: function () {
                if (row.getAttribute('data-done')) return;
                say(x.label, x.value != null ? x.value : x.label);
              }
            }));
          });
          b.appendChild(row);
          buttons = row;
        }
        return b;
      }

      // Something followed the bot's buttons: they are answered. A bot's message shows
      // "talk to a person" from then on, while the bot has the chat.
      function answered(byBot) {
        if (byBot) { c.botSpoke = 1; showState(); return; }
        if (buttons && list.lastChild && !list.lastChild.contains(buttons)) {
          buttons.setAttribute('data-done', '1');
          [].forEach.call(buttons.children, function (x) { x.setAttribute('aria-disabled', 'true'); });
          buttons = null;
        }
      }

      function scroll() { list.scrollTop = list.scrollHeight; }

      // Read receipts: what is on screen while the page is seen, up to the last seq.
      function read() {
        if (d.visibilityState === 'hidden' || !c || c.lastSeq <= readSent) return;
        if (frame({ type: 'read', seq: c.lastSeq })) readSent = c.lastSeq;
      }
      d.addEventListener('visibilitychange', read);

      // "Read" under the visitor's last message the agent has seen.
      function showRead() {
        if (readMark.parentNode) readMark.parentNode.removeChild(readMark);
        var last = null;
        c.msgs.forEach(function (m) { if (m.sender === 'visitor' && m.seq <= c.readSeq && (!last || m.seq > last.seq)) last = m; });
        if (last && shown[last.seq]) shown[last.seq].appendChild(readMark);
      }

      // ---- states ----
      function setState(state, agent) {
        c.state = str(state) || c.state;
        c.agent = agent;
        showState();
        if (OVER[c.state]) end(false);
        save();
      }

      // The status line says where the chat is: queued, with whom, or nothing (the bot's).
      function showState() {
        if (!c || ended) return;
        talk.hidden = !(c.botSpoke && c.state === 'bot');
        var s = c.state === 'queued' ? T.queued
          : (c.state === 'assigned' || c.state === 'active') && c.agent ? fill(T.joined, { name: c.agent })
            : c.state ? '' : status.textContent;
        if (status.textContent !== s) status.textContent = s; // unchanged: not announced again
        if (c.state !== 'queued') R.q.textContent = '';
      }

      function queueLine(p, wait) {
        if (c.state !== 'queued' && c.state) return;
        var s = +p > 0 ? fill(T.position, { n: +p }) : '';
        if (wait != null && isFinite(+wait)) s += (s ? ' ' : '') + (+wait < 60 ? T.waitSoon : fill(T.wait, { n: Math.round(+wait / 60) }));
        R.q.textContent = s;
      }

      // Ended by the visitor (End: `end` to the server) or by the server (a final state):
      // the composer goes, the rating comes; nothing is left to resume.
      function end(mine) {
        if (ended) return;
        if (mine) frame({ type: 'end' });
        ended = true;
        saveChat(null);
        status.textContent = T.ended;
        R.q.textContent = R.typing.textContent = '';
        composer.hidden = true;
        talk.hidden = endBtn.hidden = true;
        rating.hidden = false;
        if (R.view && R.view.shadow.activeElement) focusIn(R.view, rating.querySelector('button'));
      }

      // The window's close button: the chat ends with it.
      R.close = function () {
        if (c && !ended) { frame({ type: 'end' }); saveChat(null); }
        closing = true;
        clearTimeout(retry);
        clearInterval(beat);
        if (ws) ws.close(1000);
      };
      return R;
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

    // The site's look and words, asked for once; offers wait for it (3 s at most: without
    // it they are shown in the widget's own look).
    var ready = new Promise(function (done) {
      setTimeout(done, 3000);
      fetch(cfgUrl, { credentials: 'omit' }).then(function (r) { return r.ok ? r.json() : {}; }).then(function (c) {
        if (c && typeof c === 'object') site = c;
        T = textsFor(locale, site.texts, api.texts);
      }).catch(function (e) { log('no site config', e); }).then(done);
    });
    ready.then(function () {
      var saved = loadChat();
      if (saved && !cur) { seen[saved.a.id] = 1; openChat(saved.a, saved.a.type === 'bot', saved); }
    });

    return function (actions) {
      if (actions && actions.length) ready.then(function () { take(actions); });
    };
  };
})(window, document);
