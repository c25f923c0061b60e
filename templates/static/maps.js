/* atlas maps: zoom levels, the cell panel (hover or click a cell), and the compare view's layers and zoom.
   Plain JavaScript, no network; every cell's details are in its own <template>. */
(function () {
  "use strict";

  function show(cell, pin) {
    var level = cell.closest(".map-level");
    var panel = level.querySelector(".cell-detail");
    if (!pin && panel.dataset.pinned === "1") return;
    panel.replaceChildren(cell.querySelector("template.cell-info").content.cloneNode(true));
    level.querySelectorAll(".map-cell.selected").forEach(function (c) { c.classList.remove("selected"); });
    if (pin) {
      cell.classList.add("selected");
      panel.dataset.pinned = "1";
    }
  }

  document.querySelectorAll(".map-cell").forEach(function (cell) {
    cell.addEventListener("mouseenter", function () { show(cell, false); });
    cell.addEventListener("focus", function () { show(cell, false); });
    cell.addEventListener("click", function () { show(cell, true); });
  });

  /* the map page: one zoom level at a time */
  var tabs = document.querySelectorAll(".zoom button[data-zoom]");
  function zoomTo(grid) {
    document.querySelectorAll(".map-page .map-level").forEach(function (level) {
      level.hidden = level.dataset.grid !== String(grid);
    });
    tabs.forEach(function (b) { b.setAttribute("aria-pressed", b.dataset.zoom === String(grid) ? "true" : "false"); });
  }
  tabs.forEach(function (b) { b.addEventListener("click", function () { zoomTo(b.dataset.zoom); }); });
  if (tabs.length) zoomTo(tabs[0].dataset.zoom);

  /* the compare view: which layers, which zoom level (by index: level 1 is each map's coarsest grid) */
  var form = document.getElementById("compare-maps");
  if (!form) return;
  function update() {
    var zoom = +form.elements.zoom.value;
    form.querySelectorAll("input[name=layer]").forEach(function (box) {
      var column = document.querySelector('.map-column[data-layer="' + box.value + '"]');
      column.hidden = !box.checked;
      var levels = column.querySelectorAll(".map-level");
      levels.forEach(function (level, i) { level.hidden = i !== Math.min(zoom, levels.length - 1); });
    });
  }
  form.addEventListener("change", update);
  update();
})();
