/* The journey map's chart: the visit's outcome scores now (vendored Chart.js). */
(function () {
  "use strict";
  var canvas = document.getElementById("score-chart");
  var data = JSON.parse(document.getElementById("score-data").textContent || "[]");
  if (!canvas || !data.length || typeof Chart === "undefined") return;
  new Chart(canvas, {
    type: "bar",
    data: {
      labels: data.map(function (d) { return d.label; }),
      datasets: [{ label: "probability (%)", data: data.map(function (d) { return Math.round(d.p * 1000) / 10; }) }]
    },
    options: { indexAxis: "y", maintainAspectRatio: false, animation: false, scales: { x: { min: 0, max: 100 } } }
  });
})();
