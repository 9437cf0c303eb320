/* Opportune reports: draws the page's charts with the vendored Chart.js from the specs the
   server embedded as JSON (#report-charts). Labels reach the canvas as text, never HTML. */
(function () {
  "use strict";
  var PALETTE = ["#3346d3", "#13884f", "#b46b00", "#b3261e", "#7b5cf0", "#0f7c99", "#8a94a6", "#c2185b"];

  function dataset(s, i, kind) {
    var colour = PALETTE[i % PALETTE.length];
    return {
      label: s.name,
      data: s.values,
      borderColor: colour,
      backgroundColor: kind === "bar" ? colour : colour + "22",
      borderWidth: 2,
      pointRadius: s.values.length > 60 ? 0 : 2,
      spanGaps: true,
      tension: 0.2
    };
  }

  function percentTick(v) { return Math.round(v * 1000) / 10 + "%"; }

  function draw(spec) {
    var canvas = document.getElementById("chart-" + spec.id);
    if (!canvas) return null;
    var y = { beginAtZero: true, ticks: {} };
    if (spec.percent) { y.ticks.callback = percentTick; y.suggestedMax = 1; }
    else if (spec.integer) { y.ticks.precision = 0; }
    return new window.Chart(canvas, {
      type: spec.kind === "bar" ? "bar" : "line",
      data: {
        labels: spec.labels,
        datasets: spec.series.map(function (s, i) { return dataset(s, i, spec.kind); })
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        interaction: { mode: "index", intersect: false },
        scales: { x: { ticks: { autoSkip: true, maxRotation: 0 } }, y: y },
        plugins: {
          legend: { display: spec.series.length > 1, position: "bottom" },
          tooltip: spec.percent ? {
            callbacks: {
              label: function (ctx) {
                return ctx.dataset.label + ": " + (ctx.parsed.y == null ? "–" : percentTick(ctx.parsed.y));
              }
            }
          } : {}
        }
      }
    });
  }

  function start() {
    var node = document.getElementById("report-charts");
    if (!node || !window.Chart) return;
    var specs = JSON.parse(node.textContent || "[]");
    window.opportuneCharts = specs.map(draw).filter(Boolean);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
