/* Bouncer: small progressive enhancement. Every page works without this file; with it, actions happen in place,
   keyboard shortcuts work, the last action can be undone for a few seconds and threshold previews update live.
   Text from the server is only ever set with textContent, never as HTML. */
(function () {
  "use strict";

  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var csrfToken = csrfMeta ? csrfMeta.getAttribute("content") : "";
  var DECISION_NAMES = { hold: "Held", approve: "Approved", reject: "Rejected" };

  function flash(message, kind) {
    var box = document.getElementById("flashes");
    if (!box) { return; }
    var p = document.createElement("p");
    p.className = "flash flash-" + (kind || "info");
    p.textContent = message;
    box.appendChild(p);
    window.setTimeout(function () { p.remove(); }, 8000);
  }

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrfToken, "Accept": "application/json" }
    }).then(function (response) {
      if (response.status === 401) { window.location.assign("/login?next=" + encodeURIComponent(location.pathname + location.search)); }
      return response.json().then(function (data) {
        if (!response.ok) {
          var msg = (data && data.error && data.error.message) || ("request failed (" + response.status + ")");
          throw new Error(msg);
        }
        return data;
      }, function () { throw new Error("request failed (" + response.status + ")"); });
    });
  }

  /* ---- rows ---- */
  function rows() { return Array.prototype.slice.call(document.querySelectorAll("article.comment")); }
  var current = null;

  function setCurrent(row, scroll) {
    if (!row) { return; }
    if (current) { current.classList.remove("current"); }
    current = row;
    row.classList.add("current");
    if (scroll) {
      row.focus({ preventScroll: true });
      row.scrollIntoView({ block: "nearest" });
    }
  }

  function move(step) {
    var all = rows();
    if (!all.length) { return; }
    var i = current ? all.indexOf(current) : -1;
    var next = all[Math.min(all.length - 1, Math.max(0, i + step))];
    setCurrent(next, true);
  }

  /* The status tabs count the comments under the current filters: a decision moves one from tab to tab. */
  function moveCount(from, to) {
    if (from === to) { return; }
    [[from, -1], [to, 1]].forEach(function (pair) {
      var count = document.querySelector('.tab[data-status="' + pair[0] + '"] .count');
      if (count) { count.textContent = String(Math.max(0, parseInt(count.textContent, 10) + pair[1])); }
    });
  }

  function updateRow(result, applied) {
    var row = document.getElementById("c" + result.id);
    if (!row) { return; }
    var decision = result.decision || "";
    if (applied) { moveCount(row.getAttribute("data-decision") || "", decision); }
    row.setAttribute("data-decision", decision);
    var seen = row.querySelector('input[name="seen_' + result.id + '"]');
    if (seen) { seen.value = decision; }
    // Every pill of this comment: the row's, and on the detail page those in the heading and the facts.
    document.querySelectorAll('[data-role="decision"][data-comment="' + result.id + '"]').forEach(function (pill) {
      pill.className = "pill pill-" + (decision || "pending");
      pill.textContent = (DECISION_NAMES[decision] || "Pending") +
        (result.category && decision !== "approve" ? " · " + result.category : "");
    });
    // The detail page's "by": an applied action or undo is this user's decision now.
    var by = document.querySelector('[data-role="decided-by"][data-comment="' + result.id + '"]');
    if (by && applied) { by.textContent = by.getAttribute("data-me"); }
    row.querySelectorAll("button[data-action]").forEach(function (b) {
      var action = b.getAttribute("data-action");
      b.disabled = (action === "approve" && decision === "approve") ||
        (action !== "approve" && decision === "reject" && result.category === action);
    });
    var message = row.querySelector('[data-role="message"]');
    if (message) {
      message.textContent = result.message;
      message.classList.toggle("conflict", !applied && !result.unchanged);
    }
    row.classList.toggle("done", applied && decision !== "hold");
    var box = row.querySelector("input.row-select");
    if (box) { box.checked = false; }
  }

  /* ---- undo toast ---- */
  var lastEvents = [];
  var toastTimer = null;

  function showToast(text, events, seconds) {
    var toast = document.getElementById("toast");
    if (!toast) { return; }
    lastEvents = events || [];
    document.getElementById("toast-message").textContent = text;
    document.getElementById("toast-undo").hidden = !lastEvents.length;
    toast.hidden = false;
    if (toastTimer) { window.clearTimeout(toastTimer); }
    // Hide a little before the server's window closes, so a visible Undo always works.
    toastTimer = window.setTimeout(hideToast, Math.max(1, (seconds || 10) - 1) * 1000);
  }

  function hideToast() {
    var toast = document.getElementById("toast");
    if (toast) { toast.hidden = true; }
    lastEvents = [];
  }

  function undoLast() {
    if (!lastEvents.length) { return; }
    var body = new FormData();
    lastEvents.forEach(function (e) { body.append("event", String(e)); });
    hideToast();
    post("/moderation/undo", body).then(function (data) {
      var done = 0;
      data.results.forEach(function (r) {
        if (r.applied) { done += 1; }
        // The restored category matters: a comment put back to "rejected as spam" must say so, and not offer Spam.
        updateRow({ id: r.id, decision: r.decision, category: r.category || null, message: r.message }, r.applied);
        var row = document.getElementById("c" + r.id);
        if (row && r.applied) { row.classList.remove("done"); }
      });
      showToast("Undone: " + done + (done === 1 ? " comment" : " comments"), [], 4);
      refreshSelection();
      // The Undo button that had the focus is hidden now: give it back to the current row. Only then — the
      // answer can arrive after the moderator has moved on with j/k, and must not pull the cursor back.
      var focused = document.activeElement;
      if (current && (!focused || focused === document.body || focused === document.getElementById("toast-undo"))) {
        current.focus({ preventScroll: true });
      }
    }).catch(function (err) { flash(err.message, "warning"); });
  }

  /* ---- actions ---- */
  function submitModeration(form, submitter) {
    var body = new FormData(form, submitter);
    var url = (submitter && submitter.getAttribute("formaction")) || form.getAttribute("action");
    var single = submitter && submitter.name === "one";
    post(url, body).then(function (data) {
      var applied = 0;
      var conflicts = [];
      data.results.forEach(function (r) {
        updateRow(r, r.applied);
        // A comment that already was as asked is no conflict: nothing was written for it.
        if (r.applied) { applied += 1; } else if (!r.unchanged) { conflicts.push("#" + r.id + ": " + r.message); }
      });
      conflicts.forEach(function (c) { flash("Comment " + c, "warning"); });
      if (applied) {
        var label = data.results.filter(function (r) { return r.applied; })[0].message;
        showToast(applied + (applied === 1 ? " comment " : " comments ") + label, data.undo.events, data.undo.seconds);
      } else if (!conflicts.length) {
        flash("Nothing changed.", "info");
      }
      refreshSelection();
      if (single && current && applied) { move(1); }
    }).catch(function (err) { flash(err.message, "warning"); });
  }

  function refreshSelection() {
    var boxes = document.querySelectorAll("input.row-select");
    var checked = document.querySelectorAll("input.row-select:checked").length;
    var counter = document.getElementById("selected-count");
    if (counter) { counter.textContent = checked ? checked + " selected" : ""; }
    var all = document.getElementById("select-all");
    if (all) {
      all.checked = boxes.length > 0 && checked === boxes.length;
      all.indeterminate = checked > 0 && checked < boxes.length;
    }
  }

  document.querySelectorAll("form.moderate-form, form.campaign-actions").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var submitter = event.submitter || null;
      if (submitter) {
        var row = submitter.closest("article.comment");
        if (row) { setCurrent(row, false); }
      }
      submitModeration(form, submitter);
    });
  });

  var selectAll = document.getElementById("select-all");
  if (selectAll) {
    selectAll.addEventListener("change", function () {
      document.querySelectorAll("input.row-select").forEach(function (b) { b.checked = selectAll.checked; });
      refreshSelection();
    });
  }
  document.querySelectorAll("input.row-select").forEach(function (b) { b.addEventListener("change", refreshSelection); });
  document.querySelectorAll("article.comment").forEach(function (row) {
    row.addEventListener("click", function () { setCurrent(row, false); });
  });
  var undoButton = document.getElementById("toast-undo");
  if (undoButton) { undoButton.addEventListener("click", undoLast); }

  var help = document.getElementById("shortcuts");
  var helpButton = document.getElementById("show-shortcuts");
  if (helpButton && help) { helpButton.addEventListener("click", function () { help.showModal(); }); }

  /* ---- keyboard ---- */
  function pressAction(action) {
    if (!current) { return; }
    var button = current.querySelector('button[data-action="' + action + '"]');
    if (button && !button.disabled) { button.click(); }
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    var target = event.target;
    if (target && (target.isContentEditable || /^(INPUT|SELECT|TEXTAREA)$/.test(target.tagName)) &&
        !(target.tagName === "INPUT" && target.type === "checkbox")) { return; }
    // Enter and space on a focused button or link keep their native meaning.
    if (target && /^(BUTTON|A|SUMMARY)$/.test(target.tagName) && (event.key === "Enter" || event.key === " ")) { return; }
    if (help && help.open) { return; }
    var key = event.key;
    var handled = true;
    if (key === "j") { move(1); }
    else if (key === "k") { move(-1); }
    else if (key === "a") { pressAction("approve"); }
    else if (key === "s") { pressAction("spam"); }
    else if (key === "x") { pressAction("abuse"); }
    else if (key === "u") { undoLast(); }
    else if (key === "?") { if (help) { help.showModal(); } }
    else if (key === " " && current) {
      var box = current.querySelector("input.row-select");
      if (box) { box.checked = !box.checked; refreshSelection(); }
    }
    else if ((key === "o" || key === "Enter") && current) {
      var link = current.querySelector("a.detail-link");
      if (link) { window.location.assign(link.href); }
    }
    else { handled = false; }
    if (handled) { event.preventDefault(); }
  });

  if (rows().length) { setCurrent(rows()[0], false); }

  /* ---- threshold preview ---- */
  var thresholds = document.getElementById("thresholds-form");
  if (thresholds) {
    var previewButton = document.getElementById("preview-button");
    if (previewButton) { previewButton.hidden = true; }
    var timer = null;
    var note = thresholds.querySelector('[data-role="preview-note"]');
    var refresh = function () {
      var params = new URLSearchParams();
      thresholds.querySelectorAll('input[type="number"]').forEach(function (input) { params.append(input.name, input.value); });
      fetch(thresholds.getAttribute("data-preview-url") + "?" + params.toString(), {
        credentials: "same-origin", headers: { "Accept": "application/json" }
      }).then(function (r) { return r.json(); }).then(function (data) {
        if (data.error) { if (note) { note.textContent = data.error.message; } return; }
        ["approve", "hold", "reject"].forEach(function (k) {
          var cell = thresholds.querySelector('[data-count="' + k + '"]');
          if (cell) { cell.textContent = String(data[k]); }
        });
        if (note) { note.textContent = "From stored model scores; allow/block lists and stream checks are not replayed."; }
      });
    };
    thresholds.addEventListener("input", function () {
      if (timer) { window.clearTimeout(timer); }
      timer = window.setTimeout(refresh, 250);
    });
  }
})();
