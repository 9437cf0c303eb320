/* Live Now: the visitors on the site, kept current by server-sent events. Only the rows in
   view exist in the page (a virtual list: fixed row height, a spacer, a pool of row
   elements re-filled on scroll and on each delta). Visitor text goes in via textContent. */
(function () {
  "use strict";
  var ROW = 44, EXTRA = 8;
  var visitors = new Map(), shown = [], pool = [], pending = false, filterDirty = true;
  var $ = function (id) { return document.getElementById(id); };
  var viewport = $("viewport"), spacer = $("spacer"), rowsBox = $("rows");
  var seen = { segments: new Set(), devices: new Set(), outcomes: new Set() };
  // The workspace's segments (name -> colour, label): chips in their colour, all filterable.
  var docs = JSON.parse($("segment-docs").textContent || "{}");

  function pct(p) { return Math.round(p * 100) + "%"; }
  function duration(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    return s >= 60 ? Math.floor(s / 60) + " min " + String(s % 60).padStart(2, "0") + " s" : s + " s";
  }
  function hue(name) {
    var h = 0;
    for (var i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) % 360;
    return h;
  }
  function pageOf(v) {
    var u = v.url || "";
    try { var p = new URL(u); u = p.pathname + p.search; } catch (e) { /* shown as sent */ }
    return u;
  }

  function addOption(select, set, value, label) {
    if (!value || set.has(value)) return;
    set.add(value);
    var o = document.createElement("option");
    o.value = value; o.textContent = label || value;
    select.appendChild(o);
  }
  Object.keys(docs).forEach(function (n) { addOption($("f-segment"), seen.segments, n, docs[n].label); });
  function learn(v) {
    v.segments.forEach(function (s) { addOption($("f-segment"), seen.segments, s); });
    addOption($("f-device"), seen.devices, v.device);
    Object.keys(v.scores || {}).forEach(function (o) { addOption($("f-outcome"), seen.outcomes, o); });
  }

  function matches(v, f) {
    if (f.segment && v.segments.indexOf(f.segment) < 0) return false;
    if (f.device && v.device !== f.device) return false;
    if (f.page && ((v.url || "") + " " + (v.title || "")).toLowerCase().indexOf(f.page) < 0) return false;
    if (f.outcome || f.min > 0 || f.max < 1) {
      var names = f.outcome ? [f.outcome] : Object.keys(v.scores || {});
      var ok = names.some(function (o) {
        var p = (v.scores || {})[o];
        return p !== undefined && p >= f.min && p <= f.max;
      });
      if (!ok) return false;
    }
    return true;
  }
  function filters() {
    var min = parseFloat($("f-min").value), max = parseFloat($("f-max").value);
    return {
      segment: $("f-segment").value, device: $("f-device").value, outcome: $("f-outcome").value,
      page: $("f-page").value.trim().toLowerCase(),
      min: isNaN(min) ? 0 : min / 100, max: isNaN(max) ? 1 : max / 100
    };
  }
  function refilter() {
    var f = filters(), out = [], ident = 0, back = 0, offers = 0;
    visitors.forEach(function (v) {
      if (v.identified) ident++;
      if (v.returning) back++;
      if (v.showing) offers++;
      if (matches(v, f)) out.push(v);
    });
    out.sort(function (a, b) { return b.lastAt - a.lastAt || (a.visitorId < b.visitorId ? -1 : 1); });
    shown = out;
    $("count-all").textContent = visitors.size.toLocaleString();
    $("count-shown").textContent = shown.length.toLocaleString();
    $("count-identified").textContent = ident.toLocaleString();
    $("count-returning").textContent = back.toLocaleString();
    $("count-offers").textContent = offers.toLocaleString();
    $("empty").hidden = shown.length > 0 || visitors.size === 0;
    spacer.style.height = shown.length * ROW + "px";
    filterDirty = false;
  }

  function cell(cls) { var s = document.createElement("span"); s.className = cls; return s; }
  function makeRow() {
    var r = document.createElement("a");
    r.className = "live-row"; r.setAttribute("role", "row");
    ["c-who", "c-page", "c-time", "c-device", "c-place", "c-from", "c-segs", "c-scores", "c-offer"]
      .forEach(function (c) { var s = cell(c); s.setAttribute("role", "cell"); r.appendChild(s); });
    rowsBox.appendChild(r);
    return r;
  }
  function fill(r, v) {
    var c = r.children;
    r.href = "/live/visitors/" + encodeURIComponent(v.visitorId);
    r.dataset.visitor = v.visitorId;
    c[0].textContent = (v.identified ? "● " : "○ ") + v.visitorId + (v.returning ? " (visit " + v.visitNumber + ")" : " (new)");
    c[0].title = v.identified ? "identified" : "anonymous";
    c[1].textContent = v.title ? v.title + " — " + pageOf(v) : pageOf(v);
    c[1].title = v.url || "";
    c[2].textContent = duration(v.lastAt - v.startedAt);
    c[3].textContent = [v.device, v.browser, v.os].filter(Boolean).join(" · ");
    c[4].textContent = [v.city, v.country].filter(Boolean).join(", ");
    c[5].textContent = v.utmCampaign ? "campaign " + v.utmCampaign : (v.referrerDomain || "direct");
    var segs = c[6];
    segs.textContent = "";
    v.segments.forEach(function (s) {
      var chip = cell("chip");
      chip.textContent = s;
      chip.title = docs[s] ? docs[s].label : s;
      if (docs[s] && /^#[0-9a-fA-F]{6}$/.test(docs[s].colour)) {
        chip.style.background = docs[s].colour; chip.style.color = "#fff";
      } else {
        chip.style.background = "hsl(" + hue(s) + ",70%,90%)";
        chip.style.color = "hsl(" + hue(s) + ",60%,25%)";
      }
      segs.appendChild(chip);
    });
    c[7].textContent = Object.keys(v.scores || {}).map(function (o) { return o + " " + pct(v.scores[o]); }).join(", ");
    c[8].textContent = v.showing ? v.showing.map + " (" + v.showing.channel + ")" : "";
  }
  function render() {
    pending = false;
    if (filterDirty) refilter();
    var top = viewport.scrollTop, height = viewport.clientHeight || 600;
    var first = Math.max(0, Math.floor(top / ROW) - EXTRA);
    var last = Math.min(shown.length, Math.ceil((top + height) / ROW) + EXTRA);
    var need = last - first;
    while (pool.length < need) pool.push(makeRow());
    for (var i = 0; i < pool.length; i++) {
      if (i < need) { fill(pool[i], shown[first + i]); pool[i].hidden = false; } else pool[i].hidden = true;
    }
    rowsBox.style.transform = "translateY(" + first * ROW + "px)";
  }
  function schedule(dirty) {
    if (dirty) filterDirty = true;
    if (!pending) { pending = true; requestAnimationFrame(render); }
  }

  $("filters").addEventListener("submit", function (e) { e.preventDefault(); });
  viewport.addEventListener("scroll", function () { schedule(false); }, { passive: true });
  window.addEventListener("resize", function () { schedule(false); });
  ["f-page", "f-segment", "f-device", "f-outcome", "f-min", "f-max"].forEach(function (id) {
    $(id).addEventListener("input", function () { viewport.scrollTop = 0; schedule(true); });
  });

  function put(v) { visitors.set(v.visitorId, v); learn(v); }
  var source = new EventSource("/live/stream");
  source.addEventListener("snapshot", function (e) {
    var d = JSON.parse(e.data);
    visitors.clear();
    d.visitors.forEach(put);
    $("live-status").textContent = "Live: updated every second.";
    schedule(true);
  });
  source.addEventListener("delta", function (e) {
    var d = JSON.parse(e.data);
    d.changed.forEach(put);
    d.gone.forEach(function (id) { visitors.delete(id); });
    schedule(true);
  });
  source.onerror = function () { $("live-status").textContent = "Connection lost: reconnecting…"; };
  window.opportuneLive = { count: function () { return visitors.size; }, shown: function () { return shown.length; } };
})();
