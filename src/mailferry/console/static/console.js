// mailferry console: live progress of batch runs from server-sent events (no library, no CDN).
// Each <section data-events=URL> gets the events of its batch's newest run, from the first one,
// so a reloaded page shows the same state as before.
"use strict";

(function () {
  function human(n) {
    var units = ["B", "KB", "MB", "GB"];
    var i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
    return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
  }
  function duration(s) {
    if (!isFinite(s) || s < 0) { return ""; }
    s = Math.round(s);
    var m = Math.floor(s / 60);
    return m > 0 ? m + " min " + (s % 60) + " s" : s + " s";
  }
  function cell(text) { var td = document.createElement("td"); td.textContent = text; return td; }

  function follow(section) {
    var url = section.getAttribute("data-events");
    var tbody = section.querySelector("table.progress tbody");
    var notes = section.querySelector("ul.notes");
    var stateEl = section.querySelector(".run-state");
    if (!tbody) { return; }
    var accounts = {};
    var order = [];
    var first = null;
    var last = null;

    function acc(name) {
      if (!accounts[name]) {
        accounts[name] = { state: "waiting", planned: 0, plannedBytes: 0, copied: 0, bytes: 0, start: null, last: null };
        order.push(name);
      }
      return accounts[name];
    }
    function row(name, a, now) {
      var tr = document.createElement("tr");
      var th = document.createElement("th");
      th.scope = "row"; th.textContent = name; tr.appendChild(th);
      tr.appendChild(cell(a.state));
      var td = document.createElement("td");
      var bar = document.createElement("progress");
      bar.max = Math.max(a.planned, 1); bar.value = Math.min(a.copied, bar.max);
      bar.setAttribute("aria-label", name + ": items copied (messages, calendar items and contacts)");
      td.appendChild(bar);
      td.appendChild(document.createTextNode(" " + a.copied + " / " + a.planned));
      tr.appendChild(td);
      tr.appendChild(cell(human(a.bytes) + " / " + human(a.plannedBytes)));
      var secs = a.start !== null ? ((a.done ? a.last : now) - a.start) : 0;
      var rate = secs > 0 ? a.bytes / secs : 0;
      tr.appendChild(cell(rate > 0 ? human(rate) + "/s" : ""));
      var left = a.plannedBytes - a.bytes;
      tr.appendChild(cell(a.done ? "done" : (rate > 0 && left > 0 ? duration(left / rate) : "")));
      tr.setAttribute("data-account", name);
      tr.setAttribute("data-copied", String(a.copied));
      return tr;
    }
    function render() {
      var now = last || first || 0;
      tbody.textContent = "";
      var all = { state: "", planned: 0, plannedBytes: 0, copied: 0, bytes: 0, start: first, last: last, done: false };
      var running = 0;
      order.forEach(function (name) {
        var a = accounts[name];
        tbody.appendChild(row(name, a, now));
        all.planned += a.planned; all.plannedBytes += a.plannedBytes; all.copied += a.copied; all.bytes += a.bytes;
        if (!a.done) { running += 1; }
      });
      all.state = running ? running + " running" : "all done";
      all.done = !running;
      var total = row("all accounts", all, now);
      total.classList.add("total");
      tbody.appendChild(total);
    }
    function note(text) {
      var li = document.createElement("li");
      li.textContent = text;
      notes.appendChild(li);
    }

    var source = new EventSource(url);
    source.onmessage = function (msg) {
      var e;
      try { e = JSON.parse(msg.data); } catch (err) { return; }
      if (e.ts) { if (first === null) { first = e.ts; } last = e.ts; }
      if (e.t === "account_started") { var a0 = acc(e.account); a0.state = "running"; a0.start = e.ts; }
      else if (e.t === "planned") { var a1 = acc(e.account); a1.planned += e.messages; a1.plannedBytes += e.bytes; }
      else if (e.t === "copied") { var a2 = acc(e.account); a2.copied += e.messages; a2.bytes += e.bytes; a2.last = e.ts; }
      else if (e.t === "account_finished") {
        var a3 = acc(e.account); a3.done = true; a3.last = e.ts;
        a3.state = e.status + (e.findings ? ", " + e.findings + " findings" : "") + (e.error ? ": " + e.error : "");
      }
      else if (e.t === "note") { note(e.account + ": " + e.text); }
      else if (e.t === "paused" || e.t === "resumed") {
        if (stateEl) { stateEl.textContent = e.t === "paused" ? "paused" : "running"; }
        section.setAttribute("data-state", e.t === "paused" ? "paused" : "running");
      }
      else if (e.t === "end" || e.t === "interrupted" || e.t === "idle") {
        source.close();
        if (e.t === "end") {
          order.forEach(function (n) { accounts[n].done = true; });
          var text = e.cancelled ? "cancelled: " + (e.hint || "") :
            "finished, exit code " + e.exit_code + (e.run ? ", run " + e.run : "") + (e.error ? ": " + e.error : "");
          if (stateEl) { stateEl.textContent = text; }
          section.setAttribute("data-state", e.cancelled ? "cancelled" : "finished");
          section.setAttribute("data-exit-code", String(e.exit_code));
        } else if (e.t === "interrupted") {
          if (stateEl) { stateEl.textContent = "interrupted: the worker is gone, start again to resume"; }
          section.setAttribute("data-state", "interrupted");
        }
      }
      render();
    };
  }

  document.addEventListener("DOMContentLoaded", function () {
    // "?done=..." says once what a form did; a reload should not say it again.
    if (window.history && window.location.search.indexOf("done=") !== -1) {
      var params = new URLSearchParams(window.location.search);
      params.delete("done");
      var rest = params.toString();
      window.history.replaceState(null, "", window.location.pathname + (rest ? "?" + rest : ""));
    }
    var sections = document.querySelectorAll("section[data-events]");
    for (var i = 0; i < sections.length; i += 1) {
      if (sections[i].getAttribute("data-state") !== "idle") { follow(sections[i]); }
    }
  });
}());
