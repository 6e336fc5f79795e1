/* Draws every chart described by a <script type="application/json" id="chart-..."> (json_script) on the page. */
(function () {
  "use strict";
  function format(value, unit) {
    if (value === null || value === undefined) return "-";
    var digits = unit === "" ? 0 : 1;
    return value.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits }) + unit;
  }
  function draw(spec) {
    var canvas = document.getElementById(spec.id);
    if (!canvas || typeof Chart === "undefined") return;
    var chart = new Chart(canvas, {
      type: spec.type,
      data: { labels: spec.labels, datasets: spec.datasets },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        spanGaps: true,
        interaction: { mode: "index", intersect: false },
        scales: {
          y: { beginAtZero: true, ticks: { precision: spec.unit === "" ? 0 : 1, callback: function (v) { return format(v, spec.unit); } } },
          x: { ticks: { maxRotation: 0, autoSkip: true } }
        },
        plugins: {
          legend: { display: spec.datasets.length > 1 },
          tooltip: { callbacks: { label: function (c) { return c.dataset.label + ": " + format(c.parsed.y, spec.unit); } } }
        }
      }
    });
    canvas.dataset.drawn = "true";
    return chart;
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("script[type=\"application/json\"][id^=\"chart-\"]").forEach(function (node) {
      draw(JSON.parse(node.textContent));
    });
  });
})();
