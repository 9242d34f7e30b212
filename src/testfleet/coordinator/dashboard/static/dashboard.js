// testfleet dashboard: ages that count up, and the overview's charts.
// Loaded by every page (templates/base.html); no other host is ever contacted.
(function () {
  "use strict";
  var body = document.body;
  var base = body.dataset.base;
  // The server's clock minus the browser's: ages count on the coordinator's time.
  var offset = parseFloat(body.dataset.serverNow) - Date.now() / 1000;

  function human(seconds) {
    if (seconds < 60) return Math.floor(seconds) + " s";
    var minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes + " min " + Math.floor(seconds % 60) + " s";
    var hours = Math.floor(minutes / 60);
    if (hours < 48) return hours + " h " + (minutes % 60) + " min";
    return Math.floor(hours / 24) + " d " + (hours % 24) + " h";
  }

  function tick() {
    var now = Date.now() / 1000 + offset;
    document.querySelectorAll(".age[data-since]").forEach(function (el) {
      var age = Math.max(0, now - parseFloat(el.dataset.since));
      var limit = el.dataset.limit ? parseFloat(el.dataset.limit) : null;
      el.textContent = limit === null ? human(age) : human(age) + " / " + human(limit);
      el.classList.toggle("late", limit !== null && age > limit / 2);
      el.classList.toggle("over", limit !== null && age > limit);
    });
  }
  tick();
  setInterval(tick, 1000);
  // A fragment swapped in by the stream or a row refresh shows its ages at once.
  body.addEventListener("htmx:afterSwap", tick);
  body.addEventListener("htmx:sseMessage", tick);

  // Charts: history first (GET history), then each "point" event appended.
  var charts = [];
  function makeChart(el, points) {
    var series = el.dataset.series;
    var data = [[], []];
    points.forEach(function (p) { data[0].push(p.t); data[1].push(p[series]); });
    var percent = el.dataset.unit === "%";
    var plot = new uPlot({
      width: el.clientWidth || 480,
      height: 180,
      scales: { y: percent ? { range: [0, 100] } : { range: function (u, min, max) { return [0, Math.max(1, max * 1.1)]; } } },
      series: [{}, { label: series.replace("_", " "), stroke: "#2a6fdb", width: 2,
                     fill: "rgba(42,111,219,0.08)", spanGaps: true, points: { size: 5 } }],
      axes: [{}, { size: 64, values: function (u, vals) { return vals.map(function (v) { return v + " " + el.dataset.unit; }); } }],
      legend: { show: false },
    }, data, el);
    el.dataset.points = String(data[0].length);
    el.classList.toggle("empty", data[0].length === 0);
    return { el: el, series: series, data: data, plot: plot };
  }
  function append(point) {
    charts.forEach(function (c) {
      c.data[0].push(point.t);
      c.data[1].push(point[c.series]);
      // Keep one hour.
      while (c.data[0].length && c.data[0][0] < point.t - 3600) { c.data[0].shift(); c.data[1].shift(); }
      c.plot.setData(c.data);
      c.el.dataset.points = String(c.data[0].length);
      c.el.classList.toggle("empty", c.data[0].length === 0);
    });
  }
  var chartEls = document.querySelectorAll(".chart[data-series]");
  if (chartEls.length) {
    var pending = [];
    var loaded = false;
    var receiver = document.getElementById("chart-points");
    if (receiver) {
      receiver.addEventListener("htmx:sseBeforeMessage", function (evt) {
        evt.preventDefault();  // a point is data for the charts, not HTML to swap in
        var point = JSON.parse(evt.detail.data);
        if (loaded) append(point); else pending.push(point);
      });
    }
    fetch(base + "/history", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : { points: [] }; })
      .then(function (history) {
        chartEls.forEach(function (el) { charts.push(makeChart(el, history.points)); });
        loaded = true;
        var last = history.points.length ? history.points[history.points.length - 1].t : 0;
        pending.forEach(function (p) { if (p.t > last) append(p); });
        pending = [];
      });
  }
})();
