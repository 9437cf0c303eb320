/* Opportune agent workspace: the desk's only script (plain JS, no build step).
 *
 * Everything live goes over the agent socket (/agent/ws, docs/conversations.md): the
 * server's `hello` restores the open chats, `follow` asks for each chat's messages after
 * the last sequence this page saw, so a reconnect or a reload loses nothing and shows
 * nothing twice (messages are also kept by seq). Visitor text is only ever set with
 * textContent, never parsed as HTML.
 */
(function () {
  "use strict";

  var cfg = JSON.parse(document.getElementById("desk-config").textContent);
  var me = cfg.agent; // null for a supervisor or admin without an agent: read only
  var $ = function (id) { return document.getElementById(id); };
  var chats = new Map(); // conversation id -> chat
  var offers = []; // summaries waiting for accept / decline
  var active = null;
  var ws = null;
  var attempt = 0;
  var canned = [];
  var baseTitle = document.title;
  var flashTimer = null;
  var toastTimer = null;
  var lastTyping = 0;

  // -- small helpers ------------------------------------------------------------------
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function clientId() {
    var a = new Uint8Array(12);
    crypto.getRandomValues(a);
    return "a-" + Array.prototype.map.call(a, function (b) { return b.toString(16).padStart(2, "0"); }).join("");
  }
  function clock(ms) {
    return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }
  function label(state) { return String(state || "").replace("_", " "); }
  function toast(text, isError) {
    var t = $("toast");
    t.textContent = text;
    t.classList.toggle("error", !!isError);
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { t.hidden = true; }, 5000);
  }
  function api(path, opts) {
    opts = opts || {};
    var headers = { "Accept": "application/json" };
    if (opts.body !== undefined) headers["Content-Type"] = "application/json";
    if (opts.method && opts.method !== "GET") headers["X-CSRF-Token"] = cfg.csrf;
    return fetch(path, {
      method: opts.method || "GET",
      headers: headers,
      credentials: "same-origin",
      body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined,
    }).then(function (r) {
      if (r.status === 401) { location.href = "/agent/login?next=%2Fagent"; throw new Error("signed out"); }
      return r.json().then(function (body) {
        if (!r.ok) throw new Error((body.error && body.error.message) || ("HTTP " + r.status));
        return body;
      });
    });
  }

  // -- the socket -----------------------------------------------------------------------
  function setConn(state, text) {
    var c = $("conn-status");
    c.dataset.state = state;
    c.textContent = text;
  }
  function send(frame) {
    if (ws && ws.readyState === WebSocket.OPEN) { ws.send(JSON.stringify(frame)); return true; }
    return false;
  }
  function connect() {
    var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + cfg.socket;
    setConn("connecting", "Connecting…");
    var sock = new WebSocket(url);
    ws = sock;
    sock.onopen = function () { attempt = 0; setConn("online", "Connected"); };
    sock.onmessage = function (e) {
      var f;
      try { f = JSON.parse(e.data); } catch (err) { return; }
      if (f && typeof f.type === "string") handle(f);
    };
    sock.onclose = function (e) {
      if (ws === sock) ws = null;
      if (e.code === 4401) { location.href = "/agent/login?next=%2Fagent"; return; }
      if (e.code === 4403) { setConn("forbidden", "Not allowed on the chat socket"); return; }
      // Backoff with jitter: a restarted server is not hit by every desk at once.
      var delay = Math.min(15000, 500 * Math.pow(2, attempt)) * (0.75 + Math.random() * 0.5);
      attempt += 1;
      setConn("offline", "Offline · retrying in " + Math.round(delay / 1000) + " s");
      setTimeout(connect, delay);
    };
  }

  function handle(f) {
    var chat = f.conversation && typeof f.conversation === "string" ? chats.get(f.conversation) : null;
    switch (f.type) {
      case "hello": return onHello(f);
      case "offer": return onOffer(f.conversation);
      case "presence": return showPresence(f.presence);
      case "message":
        if (!chat) chat = addChat({ id: f.conversation }, !me);
        return onMessage(chat, f.message);
      case "ack": return chat && onAck(chat, f);
      case "state": return chat ? onState(chat, f) : onStrayState(f);
      case "typing":
        if (chat && f.sender === "visitor") showTyping(chat);
        return;
      case "read":
        if (chat && f.reader === "visitor") { chat.visitorRead = Math.max(chat.visitorRead, f.seq | 0); renderMarks(chat); }
        return;
      case "error": return onError(chat, f);
      default: return;
    }
  }

  function onHello(f) {
    if (f.presence) showPresence(f.presence);
    var open = new Set();
    // A supervisor's (or admin's) hello also lists their queues' live chats: watched.
    (f.conversations || []).forEach(function (s) {
      open.add(s.id);
      var watching = !me || (!!s.agent && s.agent !== me.id);
      if (!watching && s.state === "assigned") { queueOffer(s); return; }
      var chat = addChat(s, watching);
      follow(chat);
    });
    // A chat this page held that the server no longer routes here was closed or moved
    // while the socket was down; monitored chats are followed again.
    chats.forEach(function (chat) {
      if (open.has(chat.id)) return;
      if (chat.watching) follow(chat); else removeChat(chat);
    });
    offers = offers.filter(function (s) { return open.has(s.id); });
    showOffer();
    chats.forEach(resendPending);
    if (!me) refreshMonitor();
  }

  function follow(chat) {
    send({ type: "follow", conversation: chat.id, after: chat.lastSeq });
  }

  // -- chats ----------------------------------------------------------------------------
  function mine(chat) { return !!me && (!chat.agent || chat.agent === me.id); }

  function addChat(summary, watching) {
    var chat = chats.get(summary.id);
    if (!chat) {
      chat = {
        id: summary.id, name: "", queue: null, state: "active", language: null, agent: null,
        intent: null, why: null, method: null, visitorId: null,
        lastSeq: 0, seqs: new Set(), pending: new Map(), others: [], readUpTo: 0, visitorRead: 0, sentRead: 0,
        watching: !!watching, typingTimer: null, item: null, nodes: [],
      };
      chats.set(chat.id, chat);
      if (watching) loadDetails(chat);
    }
    ["name", "queue", "state", "language", "intent", "why", "method", "visitorId"].forEach(function (k) {
      if (summary[k] !== undefined && summary[k] !== null) chat[k] = summary[k];
    });
    if (summary.agentId !== undefined) chat.agent = summary.agentId;
    else if (typeof summary.agent === "string" || summary.agent === null) chat.agent = summary.agent;
    renderList();
    if (!active && !watching) select(chat.id);
    else if (active === chat.id) renderHead(chat);
    return chat;
  }

  function loadDetails(chat) {
    api("/agent/api/conversations/" + encodeURIComponent(chat.id)).then(function (body) {
      var c = body.conversation;
      chat.queue = c.queue; chat.state = c.state; chat.agent = c.agentId; chat.language = c.language;
      chat.visitorId = c.visitorId;
      chat.visitorRead = Math.max(chat.visitorRead, c.visitorReadSeq || 0);
      chat.readUpTo = Math.max(chat.readUpTo, c.agentReadSeq || 0);
      if (!chat.name && c.name) chat.name = c.name;
      // The transcript so far, so a chat can be read even while the socket is away;
      // what `follow` brings too is dropped by its sequence number.
      (body.messages || []).forEach(function (m) { onMessage(chat, m); });
      renderList();
      if (active === chat.id) renderHead(chat);
    }).catch(function (err) { toast(err.message, true); });
  }

  function removeChat(chat) {
    chats.delete(chat.id);
    if (active === chat.id) {
      active = null;
      var next = Array.from(chats.values()).find(function (c) { return !c.watching; });
      if (next) select(next.id); else showEmpty();
    }
    renderList();
  }

  function title(chat) { return chat.name || (chat.visitorId ? "Visitor " + chat.visitorId.slice(0, 6) : "Visitor"); }

  function renderList() {
    var list = $("chat-list");
    var monitorList = $("monitor-list");
    clear(list);
    if (monitorList) clear(monitorList);
    var total = 0;
    var counts = { mine: 0, watch: 0 };
    chats.forEach(function (chat) {
      var li = el("li");
      var b = el("button");
      b.type = "button";
      b.dataset.conversation = chat.id;
      b.setAttribute("aria-current", active === chat.id ? "true" : "false");
      b.appendChild(el("span", "name", title(chat)));
      var n = unread(chat);
      if (n) b.appendChild(el("span", "badge", n));
      else b.appendChild(el("span", "state-tag", label(chat.state))).dataset.state = chat.state;
      b.appendChild(el("span", "sub", [chat.queue, chat.intent].filter(Boolean).join(" · ")));
      b.addEventListener("click", function () {
        select(chat.id);
        document.body.classList.remove("chats-open");
        $("toggle-chats").setAttribute("aria-expanded", "false");
      });
      li.appendChild(b);
      total += n;
      if (chat.watching && monitorList) { monitorList.appendChild(li); counts.watch += 1; }
      else { list.appendChild(li); counts.mine += 1; }
    });
    $("no-chats").hidden = counts.mine > 0;
    if ($("no-monitor")) $("no-monitor").hidden = counts.watch > 0;
    var badge = $("unread-total");
    badge.textContent = total;
    badge.hidden = total === 0;
    if (!flashTimer) document.title = (total ? "(" + total + ") " : "") + baseTitle;
  }

  function showEmpty() {
    $("chat-view").hidden = true;
    $("chat-empty").hidden = false;
    renderContext(null);
  }

  function select(id) {
    var chat = chats.get(id);
    if (!chat) return;
    active = id;
    $("chat-empty").hidden = true;
    $("chat-view").hidden = false;
    var t = $("transcript");
    clear(t);
    chat.nodes.forEach(function (n) { t.appendChild(n); });
    chat.pending.forEach(function (p) { t.appendChild(p.node); });
    $("typing").hidden = true;
    renderHead(chat);
    fillCanned(chat);
    renderContext(chat);
    markRead(chat);
    renderList();
    t.scrollTop = t.scrollHeight;
  }

  function renderHead(chat) {
    $("chat-title").textContent = title(chat);
    var bits = [chat.queue && "Queue " + chat.queue, chat.language && chat.language.toUpperCase(), label(chat.state)];
    $("chat-meta").textContent = bits.filter(Boolean).join(" · ");
    var answering = mine(chat) && !chat.watching;
    var live = chat.state === "active" || chat.state === "assigned";
    $("chat-view").classList.toggle("watching", !answering);
    $("composer").hidden = !(answering && live);
    $("read-only-note").hidden = answering;
    $("end-chat").hidden = !(answering && live);
    $("transfer-open").hidden = !(answering && live);
    var wrap = answering && chat.state === "wrap_up";
    if (wrap && $("wrapup-form").hidden) fillWrapUp(chat);
    $("wrapup-form").hidden = !wrap;
  }

  function renderContext(chat) {
    var section = $("context");
    if (chat && window.OpportuneContext && typeof window.OpportuneContext.render === "function") {
      try {
        window.OpportuneContext.render(section, chat.id, { csrf: cfg.csrf });
        return;
      } catch (err) { /* fall back below */ }
    }
    if (section.dataset.conversation) {
      // The panel follows its conversation while its element is in the page: a fresh
      // element lets it stop.
      var fresh = section.cloneNode(false);
      delete fresh.dataset.conversation;
      section.replaceWith(fresh);
      section = fresh;
    }
    clear(section);
    section.appendChild(el("h2", null, "Context"));
    if (!chat) { section.appendChild(el("p", "empty", "Select a chat to see who you are talking to.")); return; }
    var dl = el("dl");
    [["Visitor", title(chat)], ["Queue", chat.queue], ["Language", chat.language], ["Intent", chat.intent],
     ["Routed", chat.method], ["Why you", chat.why]].forEach(function (row) {
      if (!row[1]) return;
      dl.appendChild(el("dt", null, row[0]));
      dl.appendChild(el("dd", null, row[1]));
    });
    section.appendChild(dl);
  }

  // -- messages -------------------------------------------------------------------------
  var SENDER = { visitor: "Visitor", bot: "Bot", agent: "Agent", system: "" };
  var AGENT_NAMES = {};
  cfg.transfer.agents.forEach(function (a) { AGENT_NAMES[a.id] = a.name; });

  function messageNode(m, sender) {
    var li = el("li", "msg " + sender);
    var who = sender === "visitor" ? null : (AGENT_NAMES[m.author] || m.author || SENDER[sender]);
    if (sender === "agent" && me && m.author === me.id) who = "You";
    if (who) li.appendChild(el("span", "who", who));
    li.appendChild(el("div", "text", m.text));
    var buttons = m.payload && Array.isArray(m.payload.buttons) ? m.payload.buttons : [];
    if (buttons.length) {
      var row = el("div", "choices");
      buttons.forEach(function (b) { row.appendChild(el("span", "choice", b && b.label)); });
      li.appendChild(row);
    }
    if (m.payload && m.payload.link && m.payload.link.url) {
      li.appendChild(el("span", "meta", "Link: " + (m.payload.link.label || "") + " " + m.payload.link.url));
    }
    var meta = el("span", "meta");
    meta.appendChild(el("time", null, m.at ? clock(m.at) : ""));
    if (sender === "agent") meta.appendChild(el("span", "mark"));
    li.appendChild(meta);
    return li;
  }

  function onMessage(chat, m) {
    if (!m || typeof m.seq !== "number" || chat.seqs.has(m.seq)) return;
    chat.seqs.add(m.seq);
    chat.lastSeq = Math.max(chat.lastSeq, m.seq);
    var p = chat.pending.get(m.id);
    if (p) { p.node.remove(); chat.pending.delete(m.id); }
    var node = messageNode(m, m.sender);
    node.dataset.seq = m.seq;
    // Messages arrive in order; a late one (a resend answered after a reconnect) is put
    // in its place all the same.
    var at = chat.nodes.findIndex(function (n) { return Number(n.dataset.seq) > m.seq; });
    if (at < 0) chat.nodes.push(node); else chat.nodes.splice(at, 0, node);
    if (active === chat.id) {
      var t = $("transcript");
      var stick = t.scrollHeight - t.scrollTop - t.clientHeight < 80;
      if (at < 0) t.insertBefore(node, t.querySelector(".pending")); else t.insertBefore(node, chat.nodes[at + 1]);
      if (m.sender === "visitor") $("typing").hidden = true;
      if (stick || m.sender === "agent") t.scrollTop = t.scrollHeight;
    }
    renderMarks(chat);
    if (m.sender !== "agent") chat.others.push(m.seq);
    markRead(chat);
    if (m.sender !== "agent") renderList();
  }

  // Unread: what others wrote after this agent's read mark (the server's, kept across
  // reloads, or the one this page sent), so a replayed transcript is not "new".
  function unread(chat) {
    if (chat.watching) return 0;
    return chat.others.filter(function (s) { return s > chat.readUpTo; }).length;
  }

  function onAck(chat, f) {
    var p = chat.pending.get(f.id);
    if (!p) return;
    onMessage(chat, { seq: f.seq, id: f.id, sender: "agent", author: me && me.id, text: p.text, payload: null, at: Date.now() });
  }

  function renderMarks(chat) {
    chat.nodes.forEach(function (n) {
      var mark = n.querySelector(".mark");
      if (mark) mark.textContent = Number(n.dataset.seq) <= chat.visitorRead ? " · Read" : " · Sent";
    });
  }

  function markRead(chat) {
    if (active !== chat.id || document.hidden) return;
    chat.readUpTo = Math.max(chat.readUpTo, chat.lastSeq);
    if (chat.watching || chat.lastSeq <= chat.sentRead) return;  // a watcher marks nothing
    if (send({ type: "read", conversation: chat.id, seq: chat.lastSeq })) chat.sentRead = chat.lastSeq;
  }

  function showTyping(chat) {
    if (active !== chat.id) return;
    var t = $("typing");
    t.hidden = false;
    clearTimeout(chat.typingTimer);
    chat.typingTimer = setTimeout(function () { t.hidden = true; }, 4000);
  }

  function sendMessage(chat, text) {
    var id = clientId();
    var node = messageNode({ text: text, at: Date.now(), author: me && me.id }, "agent");
    node.classList.add("pending");
    node.querySelector(".mark").textContent = " · Sending…";
    chat.pending.set(id, { id: id, text: text, node: node });
    $("transcript").appendChild(node);
    $("transcript").scrollTop = $("transcript").scrollHeight;
    send({ type: "message", conversation: chat.id, id: id, text: text });
  }

  // A message not acknowledged before the socket dropped goes again with the same id:
  // the server stores it once.
  function resendPending(chat) {
    chat.pending.forEach(function (p) {
      send({ type: "message", conversation: chat.id, id: p.id, text: p.text });
    });
  }

  // -- states, offers, errors -----------------------------------------------------------
  function onState(chat, f) {
    chat.state = f.state;
    if (f.queue !== undefined) chat.queue = f.queue;
    if (f.agent !== undefined) chat.agent = f.agent && typeof f.agent === "object" ? f.agent.id || null : f.agent;
    var ended = f.state === "closed" || f.state === "abandoned";
    // Transferred away (to another agent, or back to a queue): no longer this desk's.
    var moved = !chat.watching && (f.state === "queued" || (me && chat.agent && chat.agent !== me.id));
    var gone = ended || moved;
    if (gone) {
      if (active === chat.id) toast(f.state === "closed" ? "Chat closed." : moved ? "Chat transferred." : "The visitor left.");
      removeChat(chat);
      return;
    }
    renderList();
    if (active === chat.id) renderHead(chat);
  }

  function onStrayState(f) {
    // The state of an offered chat: taken elsewhere or withdrawn, the alert goes.
    if (f.state !== "assigned") {
      offers = offers.filter(function (s) { return s.id !== f.conversation; });
      showOffer();
    }
  }

  function onError(chat, f) {
    if (chat && f.id && chat.pending.has(f.id)) {
      var p = chat.pending.get(f.id);
      p.node.classList.add("failed");
      p.node.querySelector(".mark").textContent = " · Not sent";
      chat.pending.delete(f.id);
    }
    toast(f.message || "Refused: " + (f.code || "error"), true);
  }

  function queueOffer(summary) {
    if (!offers.some(function (s) { return s.id === summary.id; })) offers.push(summary);
  }

  function onOffer(summary) {
    if (!summary || !summary.id) return;
    queueOffer(summary);
    showOffer();
    notify(summary);
  }

  function showOffer() {
    var banner = $("offer-banner");
    var s = offers[0];
    if (!s) { banner.hidden = true; stopFlash(); return; }
    var who = s.name || "A visitor";
    var bits = [s.queue && "queue " + s.queue, s.intent && "about " + s.intent, s.language && s.language.toUpperCase()];
    $("offer-title").textContent = offers.length > 1 ? "Incoming chat (" + offers.length + " waiting)" : "Incoming chat";
    $("offer-text").textContent = who + " · " + bits.filter(Boolean).join(" · ");
    banner.dataset.conversation = s.id;
    banner.hidden = false;
    startFlash();
  }

  function notify(summary) {
    if (!("Notification" in window) || Notification.permission !== "granted" || !document.hidden) return;
    try {
      var n = new Notification("Incoming chat", {
        body: (summary.name || "A visitor") + (summary.queue ? " · " + summary.queue : ""),
        tag: "offer-" + summary.id, silent: true,
      });
      n.onclick = function () { window.focus(); n.close(); };
    } catch (err) { /* notifications are a nicety */ }
  }

  function startFlash() {
    if (flashTimer) return;
    var on = false;
    flashTimer = setInterval(function () {
      on = !on;
      document.title = on ? "● Incoming chat" : baseTitle;
    }, 1000);
  }
  function stopFlash() {
    if (!flashTimer) return;
    clearInterval(flashTimer);
    flashTimer = null;
    renderList();
  }

  function answerOffer(accept) {
    var s = offers.shift();
    showOffer();
    if (!s) return;
    if (!send({ type: accept ? "accept" : "decline", conversation: s.id })) {
      offers.unshift(s);
      showOffer();
      toast("Not connected: try again in a moment.", true);
      return;
    }
    if (accept) {
      var chat = addChat(Object.assign({}, s, { state: "active" }), false);
      follow(chat);
      select(chat.id);
    }
  }

  // -- presence, canned responses, wrap-up, transfer ------------------------------------
  function showPresence(p) {
    var sel = $("presence");
    if (!sel || !p) return;
    sel.value = p;
    $("presence-dot").dataset.presence = p;
    $("no-chats").textContent = p === "available" ? "No chats right now. New ones appear at the top." : "";
    if (p !== "available") {
      $("no-chats").append("No chats yet. Set yourself ", el("em", null, "Available"), " to receive them.");
    }
  }

  function setPresence(p) {
    showPresence(p);
    if (send({ type: "presence", presence: p })) return;
    api("/agent/api/presence", { method: "POST", body: { presence: p } })
      .catch(function (err) { toast("Presence not changed: " + err.message, true); });
  }

  function fillCanned(chat) {
    var sel = $("canned");
    while (sel.options.length > 1) sel.remove(1);
    canned.filter(function (c) {
      return (!chat.queue || c.queue === chat.queue) && (!c.language || !chat.language || c.language === chat.language);
    }).forEach(function (c) {
      var o = el("option", null, c.title);
      o.value = c.text;
      sel.appendChild(o);
    });
    sel.hidden = sel.options.length === 1;
  }

  function fillWrapUp(chat) {
    var sel = $("wrapup-code");
    while (sel.options.length > 1) sel.remove(1);
    var q = cfg.queues[chat.queue];
    (q ? q.wrapUpCodes : []).forEach(function (code) {
      var o = el("option", null, code);
      o.value = code;
      sel.appendChild(o);
    });
    sel.value = "";
    $("wrapup-notes").value = "";
    $("wrapup-error").hidden = true;
  }

  function fillTransfer(chat) {
    var sel = $("transfer-target");
    clear(sel);
    var qg = el("optgroup");
    qg.label = "Queues";
    cfg.transfer.queues.forEach(function (q) {
      if (q === chat.queue) return;
      var o = el("option", null, "Queue " + q);
      o.value = "queue:" + q;
      qg.appendChild(o);
    });
    var ag = el("optgroup");
    ag.label = "Agents";
    cfg.transfer.agents.forEach(function (a) {
      if (me && a.id === me.id) return;
      var o = el("option", null, a.name);
      o.value = "agent:" + a.id;
      ag.appendChild(o);
    });
    if (qg.children.length) sel.appendChild(qg);
    if (ag.children.length) sel.appendChild(ag);
  }

  function current() { return active ? chats.get(active) : null; }

  function wire() {
    $("composer").addEventListener("submit", function (e) {
      e.preventDefault();
      var chat = current();
      var box = $("message");
      var text = box.value.trim();
      if (!chat || !text) return;
      sendMessage(chat, text);
      box.value = "";
      box.focus();
    });
    $("message").addEventListener("keydown", function (e) {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        $("composer").requestSubmit();
      }
    });
    $("message").addEventListener("input", function () {
      var chat = current();
      if (!chat || Date.now() - lastTyping < 3000) return;
      lastTyping = Date.now();
      send({ type: "typing", conversation: chat.id });
    });
    $("canned").addEventListener("change", function () {
      var sel = $("canned");
      if (!sel.value) return;
      var box = $("message");
      box.value = box.value ? box.value.replace(/\s*$/, " ") + sel.value : sel.value;
      sel.value = "";
      box.focus();
    });
    var endArmed = null;
    $("end-chat").addEventListener("click", function () {
      var chat = current();
      var b = $("end-chat");
      if (!chat) return;
      if (!endArmed) {  // two clicks: a chat is not ended by a slip
        b.textContent = "Click again to end";
        b.classList.add("confirm");
        endArmed = setTimeout(function () { endArmed = null; b.textContent = "End chat"; b.classList.remove("confirm"); }, 4000);
        return;
      }
      clearTimeout(endArmed);
      endArmed = null;
      b.textContent = "End chat";
      b.classList.remove("confirm");
      if (!send({ type: "end", conversation: chat.id })) toast("Not connected: try again in a moment.", true);
    });
    $("wrapup-form").addEventListener("submit", function (e) {
      e.preventDefault();
      var chat = current();
      var code = $("wrapup-code").value;
      if (!chat) return;
      if (!code) { $("wrapup-error").hidden = false; $("wrapup-code").focus(); return; }
      $("wrapup-error").hidden = true;
      var frame = { type: "wrapup", conversation: chat.id, code: code, notes: $("wrapup-notes").value.trim() };
      if (!send(frame)) toast("Not connected: try again in a moment.", true);
    });
    $("transfer-open").addEventListener("click", function () {
      var chat = current();
      if (!chat) return;
      fillTransfer(chat);
      $("transfer-dialog").showModal();
    });
    $("transfer-dialog").addEventListener("close", function () {
      var chat = current();
      var d = $("transfer-dialog");
      var target = $("transfer-target").value;
      if (d.returnValue !== "ok" || !chat || !target) return;
      var frame = { type: "transfer", conversation: chat.id };
      frame[target.split(":")[0]] = target.slice(target.indexOf(":") + 1);
      if (!send(frame)) toast("Not connected: try again in a moment.", true);
    });
    $("offer-accept").addEventListener("click", function () { answerOffer(true); });
    $("offer-decline").addEventListener("click", function () { answerOffer(false); });
    if ($("presence")) $("presence").addEventListener("change", function (e) { setPresence(e.target.value); });
    // At phone width the chat list and the context panel are drawers, one open at a time.
    [["toggle-chats", "chats-open", "context-open", "toggle-context"],
     ["toggle-context", "context-open", "chats-open", "toggle-chats"]].forEach(function (d) {
      $(d[0]).addEventListener("click", function () {
        var open = document.body.classList.toggle(d[1]);
        document.body.classList.remove(d[2]);
        $(d[0]).setAttribute("aria-expanded", open ? "true" : "false");
        $(d[3]).setAttribute("aria-expanded", "false");
      });
    });
    var bell = $("notify-enable");
    if (me && "Notification" in window && Notification.permission === "default") {
      bell.hidden = false;
      bell.addEventListener("click", function () {
        Notification.requestPermission().then(function () { bell.hidden = true; });
      });
    }
    document.addEventListener("visibilitychange", function () {
      var chat = current();
      if (!document.hidden && chat) { markRead(chat); renderList(); }
    });
    window.addEventListener("focus", stopFlashIfNoOffer);
  }

  function stopFlashIfNoOffer() { if (!offers.length) stopFlash(); }

  // -- supervisors: their queues' live chats, read only -------------------------------
  function refreshMonitor() {
    if (!$("monitor-list")) return;
    api("/agent/api/monitor").then(function (body) {
      var live = new Set();
      body.items.forEach(function (c) {
        live.add(c.id);
        var known = chats.has(c.id);
        var watching = !(me && c.agentId === me.id);
        if (known && !chats.get(c.id).watching) return;
        var chat = addChat({ id: c.id, queue: c.queue, state: c.state, agentId: c.agentId, language: c.language,
          visitorId: c.visitorId, name: c.name }, watching);
        if (!known) follow(chat);
      });
      chats.forEach(function (chat) { if (chat.watching && !live.has(chat.id)) removeChat(chat); });
      // Without the socket (down, or not open to this role) the chat on screen is read again.
      var shown = current();
      if (shown && shown.watching && !(ws && ws.readyState === WebSocket.OPEN)) loadDetails(shown);
    }).catch(function (err) { toast("Monitor: " + err.message, true); });
  }

  // The chats routed here, from REST: shown at once, before (or without) the socket,
  // whose `hello` then brings the same list and the live events.
  function loadMine() {
    api("/agent/api/conversations").then(function (body) {
      body.items.forEach(function (c) {
        var s = { id: c.id, queue: c.queue, state: c.state, agentId: c.agentId, language: c.language,
          visitorId: c.visitorId, name: c.name };
        if (c.state === "assigned") { queueOffer(s); showOffer(); return; }
        var chat = addChat(s, false);
        loadDetails(chat);
      });
    }).catch(function (err) { toast(err.message, true); });
  }

  wire();
  if (me === null && !$("monitor-list")) setConn("offline", "No agent");
  api("/agent/api/canned").then(function (body) {
    canned = body.items;
    var chat = current();
    if (chat) fillCanned(chat);
  }).catch(function () { canned = []; });
  if ($("monitor-list")) { refreshMonitor(); setInterval(refreshMonitor, 10000); }
  if (me) loadMine();
  connect();
})();
