// testfleet dashboard, benchmarks page: the batch-size curves (data in the page)
// and a series' history chart (GET benchmarks/history when its row is clicked).
// Loaded only by templates/benchmarks.html; no other host is ever contacted.
(function () {
  "use strict";
  var base = document.body.dataset.base;

  function width(el) { return el.clientWidth || 480; }

  // One curve: throughput (left axis) and latency (right axis) against batch
  // size on a log-2 axis; a failed batch size is a gap (null).
  document.querySelectorAll(".chart.curve[data-curve]").forEach(function (el) {
    var c = JSON.parse(el.dataset.curve);
    if (!c.batch_size.length) return;
    // The instance stays on its element (el.uplot): the browser test reads the
    // drawn data from it, and it is handy from the console.
    el.uplot = new uPlot({
      width: width(el),
      height: 200,
      scales: { x: { time: false, distr: 3, log: 2 }, y: { range: function (u, min, max) { return [0, Math.max(1, max * 1.1)]; } },
                ms: { range: function (u, min, max) { return [0, Math.max(1, max * 1.1)]; } } },
      series: [
        { label: "batch size" },
        { label: "items/s", stroke: "#2a6fdb", width: 2, points: { size: 6 } },
        { label: "latency ms", stroke: "#bf8700", width: 2, scale: "ms", points: { size: 6 } },
      ],
      axes: [{ label: "batch size" }, { size: 64 }, { scale: "ms", side: 1, size: 64, grid: { show: false } }],
    }, [c.batch_size, c.throughput, c.latency_ms], el);
    el.dataset.drawn = "1";
  });

  // A series row: fetch its history as JSON, then draw (replacing the last chart).
  var box = document.getElementById("series-chart");
  var plotEl = document.getElementById("series-chart-plot");
  var plot = null;
  function show(row) {
    fetch(row.dataset.history, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : { points: [] }; })
      .then(function (history) {
        var figure = row.dataset.figure;
        var data = [[], []];
        history.points.forEach(function (p) { data[0].push(p.t); data[1].push(p[figure]); });
        if (plot) plot.destroy();
        box.hidden = false;
        document.getElementById("series-chart-title").textContent = row.dataset.title;
        plot = new uPlot({
          width: width(box),
          height: 200,
          scales: { y: { range: function (u, min, max) { return [0, Math.max(1, max * 1.1)]; } } },
          series: [{}, { label: figure, stroke: "#2a6fdb", width: 2, spanGaps: false, points: { size: 5 } }],
          axes: [{}, { size: 64 }],
        }, data, plotEl);
        plotEl.uplot = plot;
        plotEl.dataset.points = String(data[0].length);
        document.querySelectorAll("tr.series-row.selected").forEach(function (r) { r.classList.remove("selected"); });
        row.classList.add("selected");
      });
  }
  document.querySelectorAll("tr.series-row[data-history]").forEach(function (row) {
    row.addEventListener("click", function () { show(row); });
    row.addEventListener("keydown", function (evt) { if (evt.key === "Enter") show(row); });
  });
})();
