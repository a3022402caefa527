// The dashboard's charts: on a narrow screen each keeps its width in a box that scrolls
// sideways (.chart-scroll). Time runs left to right, so open each box at its right end, the
// newest data; a box swapped in by htmx opens there too.
(function () {
  if (window.conveyorChartScroll) return;
  window.conveyorChartScroll = true;

  function toNewest(root) {
    var boxes = root.querySelectorAll ? root.querySelectorAll(".chart-scroll") : [];
    Array.prototype.forEach.call(boxes, function (box) {
      box.scrollLeft = box.scrollWidth - box.clientWidth;
    });
    if (root.classList && root.classList.contains("chart-scroll")) {
      root.scrollLeft = root.scrollWidth - root.clientWidth;
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { toNewest(document); });
  } else {
    toNewest(document);
  }
  document.addEventListener("htmx:afterSettle", function (e) { toNewest(e.target); });
})();
