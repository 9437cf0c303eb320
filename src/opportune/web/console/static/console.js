// The console's small script: a confirmation before deleting, the live audience estimate
// while a segment or outcome is edited, and importing a chosen YAML file. Everything it
// shows is set as text, never as HTML.
(function () {
  "use strict";
  var csrf = document.body.getAttribute("data-csrf") || "";

  function confirmations() {
    var forms = document.querySelectorAll("form[data-confirm]");
    Array.prototype.forEach.call(forms, function (form) {
      form.addEventListener("submit", function (ev) {
        if (!window.confirm(form.getAttribute("data-confirm"))) ev.preventDefault();
      });
    });
  }

  function percent(share) {
    return (Math.round(share * 1000) / 10).toFixed(1) + "%";
  }

  function estimates() {
    var box = document.getElementById("estimate");
    if (!box) return;
    var out = document.getElementById("estimate-result");
    var area = document.getElementById("document");
    var view = document.getElementById("document-view");
    var nameInput = document.getElementById("name");
    var timer = null;
    var asked = 0;

    function run() {
      var mine = ++asked;
      var name = (nameInput && nameInput.value.trim()) || box.getAttribute("data-name") || "draft";
      var doc = area ? area.value : view ? view.textContent : "";
      out.textContent = "Estimating…";
      fetch(box.getAttribute("data-url"), {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify({ name: name, document: doc }),
      })
        .then(function (r) { return r.json().then(function (j) { return { ok: r.ok, j: j }; }); })
        .then(function (res) {
          if (mine !== asked) return; // a newer edit's estimate is on its way
          var bad = !res.ok || res.j.valid === false;
          out.classList.toggle("field-error", bad);
          if (bad) {
            out.textContent = "Cannot estimate: " + (res.j.error || "the document is not valid");
            return;
          }
          var e = res.j;
          out.textContent = e.matched + " of " + e.sessions + " visits (" + percent(e.share) +
            ") in the last " + e.days + " days" + (e.truncated ? ", newest visits only" : "");
        })
        .catch(function () {
          if (mine === asked) out.textContent = "Cannot estimate now (no connection).";
        });
    }

    function later() {
      clearTimeout(timer);
      timer = setTimeout(run, 600);
    }
    if (area) area.addEventListener("input", later);
    if (nameInput && !nameInput.readOnly) nameInput.addEventListener("input", later);
    run();
  }

  function item(list, text) {
    var li = document.createElement("li");
    li.textContent = text;
    list.appendChild(li);
  }

  function showImport(box, status, plan) {
    box.textContent = "";
    var head = document.createElement("p");
    var errors = plan.errors || [];
    if (errors.length) {
      head.className = "form-error";
      head.setAttribute("role", "alert");
      head.textContent = "Nothing was imported: " + errors.length + " problem(s).";
    } else {
      head.className = "notice";
      head.setAttribute("role", "status");
      head.textContent = "Imported: " + (plan.applied || []).length + " written, " +
        (plan.unchanged || []).length + " unchanged.";
    }
    box.appendChild(head);
    var list = document.createElement("ul");
    errors.forEach(function (e) {
      item(list, "Document " + e.index + (e.kind ? " (" + e.kind + " " + e.name + ")" : "") +
        (e.path ? ", " + e.path : "") + ": " + e.message);
    });
    (plan.applied || []).forEach(function (a) { item(list, a.action + " " + a.kind + " " + a.name); });
    (plan.notApplied || []).forEach(function (n) {
      item(list, "Not applied: document " + n.index + " (" + n.kind + " " + n.name + "): " + n.message);
    });
    list.className = errors.length ? "field-errors import-errors" : "";
    box.appendChild(list);
  }

  function imports() {
    var form = document.getElementById("import-form");
    var file = document.getElementById("import-file");
    var box = document.getElementById("import-result");
    if (!form || !file || !box) return;
    form.addEventListener("submit", function (ev) {
      if (!file.files || !file.files.length) return; // the pasted text goes as the form
      ev.preventDefault();
      box.textContent = "Checking…";
      file.files[0].text().then(function (text) {
        return fetch("/console/import", {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/x-yaml", "X-CSRF-Token": csrf },
          body: text,
        });
      }).then(function (r) {
        return r.json().then(function (j) { showImport(box, r.status, j); });
      }).catch(function () {
        box.textContent = "The import could not be sent; nothing was changed.";
      });
    });
  }

  confirmations();
  estimates();
  imports();
})();
