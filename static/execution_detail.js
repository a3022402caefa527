// The execution page: keep what the person opened and where they scrolled while the live part
// (#live, refreshed by htmx) is swapped.
(function () {
  var state = {};
  document.body.addEventListener("htmx:beforeSwap", function (e) {
    if (!e.detail.target || e.detail.target.id !== "live") return;
    var logs = document.getElementById("logs");
    state.open = Array.from(document.querySelectorAll("#live details[open]")).map(function (d) { return d.id; });
    state.atBottom = !logs || logs.scrollHeight - logs.scrollTop - logs.clientHeight < 24;
    state.scrollTop = logs ? logs.scrollTop : 0;
  });
  document.body.addEventListener("htmx:afterSettle", function () { restore(); });
  function restore() {
    (state.open || []).forEach(function (id) { var d = document.getElementById(id); if (d) d.open = true; });
    var logs = document.getElementById("logs");
    if (logs) logs.scrollTop = (state.atBottom === false) ? state.scrollTop : logs.scrollHeight;
  }
  restore();

  // While the tab is hidden, poll every 5 s rather than every second. (Done here, not with an
  // hx-trigger filter: htmx evaluates those as script, which the Content-Security-Policy forbids.)
  var lastHiddenPoll = 0;
  document.body.addEventListener("htmx:beforeRequest", function (e) {
    if (!document.hidden || !e.detail.elt || e.detail.elt.id !== "live") return;
    var now = Date.now();
    if (now - lastHiddenPoll < 5000) { e.preventDefault(); return; }
    lastHiddenPoll = now;
  });
})();
