/* atlas gallery: search, mode tabs, channel filter, keyboard navigation and the compare view.
   Plain JavaScript, no network: the data comes from atlas-index.js (window.ATLAS_INDEX). */
(function () {
  "use strict";
  var body = document.body;
  var ROOT = body.dataset.root || "";
  var RUN = body.dataset.run || "";
  var INDEX = window.ATLAS_INDEX || { modes: [], layers: [] };

  function pad4(n) { return ("000" + n).slice(-4); }
  function layerUrl(name) { return ROOT + "layers/" + encodeURIComponent(name) + ".html"; }
  function channelUrl(name, ch) { return ROOT + "channels/" + encodeURIComponent(name) + "/" + pad4(ch) + ".html"; }
  /* A unit's page, or its layer page at it when it has none (a channel without a render or dataset examples). */
  function unitUrl(layer, ch) { return inRanges(layer.pages, ch) ? channelUrl(layer.name, ch) : layerUrl(layer.name) + "#c=" + ch; }

  /* "0-3,7" -> membership test */
  function inRanges(text, n) {
    if (!text) return false;
    return text.split(",").some(function (part) {
      var ab = part.split("-");
      var a = +ab[0], b = ab.length > 1 ? +ab[1] : a;
      return n >= a && n <= b;
    });
  }

  /* Resolve what a user typed to layers (and a channel): "mixed4d_3x3_bottleneck_pre_relu:139", "4d 139",
     "conv2d0", "pool". Returns [{layer, channel|null, url}], best first. */
  function resolve(query) {
    var words = query.toLowerCase().replace(/[:\/#,]/g, " ").split(/\s+/).filter(Boolean);
    var channel = null, parts = [];
    words.forEach(function (w) {
      if (/^\d+$/.test(w) && parts.length) channel = +w; else parts.push(w);
    });
    if (!parts.length) return [];
    var exact = parts.join("_");
    var found = INDEX.layers.filter(function (layer) {
      return parts.every(function (p) { return layer.name.toLowerCase().indexOf(p) >= 0; });
    });
    found.sort(function (a, b) {
      return (b.name === exact) - (a.name === exact) ||
             (b.name.indexOf(exact) === 0) - (a.name.indexOf(exact) === 0);
    });
    return found.map(function (layer) {
      var ok = channel === null || channel < layer.channels;
      return { layer: layer, channel: channel, ok: ok,
               url: channel === null ? layerUrl(layer.name) : unitUrl(layer, channel) };
    });
  }

  function setupSearch() {
    var input = document.getElementById("search");
    var list = document.getElementById("search-results");
    if (!input || !list) return;
    var hits = [];
    function show() {
      hits = resolve(input.value);
      list.innerHTML = "";
      var usable = hits.filter(function (h) { return h.ok; });
      usable.slice(0, 10).forEach(function (hit, i) {
        var li = document.createElement("li"), a = document.createElement("a");
        a.href = hit.url;
        a.textContent = hit.layer.name + (hit.channel === null ? "" : ":" + hit.channel);
        if (i === 0) a.className = "active";
        li.appendChild(a); list.appendChild(li);
      });
      if (!usable.length && input.value.trim()) {
        var li = document.createElement("li"), span = document.createElement("span");
        span.textContent = hits.length ? "channel " + hits[0].channel + " is out of range (" +
          hits[0].layer.name + " has " + hits[0].layer.channels + ")" : "no layer matches";
        li.appendChild(span); list.appendChild(li);
      }
      list.hidden = !input.value.trim();
    }
    input.addEventListener("input", show);
    input.addEventListener("keydown", function (e) { if (e.key === "Escape") { input.value = ""; show(); } });
    input.form.addEventListener("submit", function (e) {
      e.preventDefault();
      show();
      var first = hits.filter(function (h) { return h.ok; })[0];
      if (first) window.location.href = first.url;
    });
    document.addEventListener("click", function (e) { if (!input.form.contains(e.target)) list.hidden = true; });
  }

  /* Tabs switch panels [data-panel=mode]; the choice lives in the URL hash (#m=mode) so it survives reloads. */
  function setupTabs() {
    var tabs = document.querySelectorAll(".tabs [data-mode]");
    if (!tabs.length) return;
    function select(mode) {
      var known = false;
      tabs.forEach(function (t) { if (t.dataset.mode === mode) known = true; });
      if (!known) return;
      tabs.forEach(function (t) { t.setAttribute("aria-selected", t.dataset.mode === mode ? "true" : "false"); });
      document.querySelectorAll("[data-panel]").forEach(function (p) { p.hidden = p.dataset.panel !== mode; });
    }
    tabs.forEach(function (t) {
      t.addEventListener("click", function () {
        select(t.dataset.mode);
        history.replaceState(null, "", "#m=" + encodeURIComponent(t.dataset.mode));
      });
    });
    var m = /#m=([^&]+)/.exec(window.location.hash);
    if (m) select(decodeURIComponent(m[1]));
  }

  /* Circuits: the block-to-block matrix names the pair under the pointer, from its row and column runs. */
  function setupMatrix() {
    var img = document.querySelector("img.matrix");
    if (!img) return;
    var rows = JSON.parse(img.dataset.rows), cols = JSON.parse(img.dataset.cols);
    var out = document.querySelector(".matrix-pair");
    function find(runs, index, first) {
      for (var i = 0; i < runs.length; i++) {
        var count = runs[i][runs[i].length - 1];
        if (index < count) return runs[i][0] + ":" + ((first ? runs[i][1] : 0) + index);
        index -= count;
      }
      return "";
    }
    function total(runs) { return runs.reduce(function (n, r) { return n + r[r.length - 1]; }, 0); }
    var nRows = total(rows), nCols = total(cols);
    img.addEventListener("mousemove", function (e) {
      var box = img.getBoundingClientRect();
      var row = Math.min(nRows - 1, Math.floor((e.clientY - box.top) / box.height * nRows));
      var col = Math.min(nCols - 1, Math.floor((e.clientX - box.left) / box.width * nCols));
      var text = find(rows, row, false) + " \u2190 " + find(cols, col, true);
      out.textContent = text;
      img.title = text;
    });
  }

  /* Dataset examples: a click on a patch shows its whole photo with the patch's box drawn over it, placed in
     percent of the photo's size (the box is data on the link, never burned into an image). Esc closes. */
  function setupExamples() {
    var links = document.querySelectorAll("a.example[data-box]");
    if (!links.length) return;
    var view = document.createElement("div");
    view.className = "photo-view";
    view.hidden = true;
    view.setAttribute("role", "dialog");
    view.innerHTML = '<figure><div class="frame"><div class="box"></div></div>' +
      '<figcaption></figcaption></figure><button type="button">Close</button>';
    document.body.appendChild(view);
    var box = view.querySelector(".box"), img = null;  /* the photo exists only while shown */
    function close() { view.hidden = true; if (img) { img.remove(); img = null; } }
    view.addEventListener("click", function (e) { if (e.target === view || e.target.tagName === "BUTTON") close(); });
    document.addEventListener("keydown", function (e) { if (e.key === "Escape" && !view.hidden) close(); });
    links.forEach(function (link) {
      link.addEventListener("click", function (e) {
        e.preventDefault();
        var b = link.dataset.box.split(",").map(Number), size = link.dataset.photoSize.split(",").map(Number);
        box.style.left = (100 * b[0] / size[0]) + "%";
        box.style.top = (100 * b[1] / size[1]) + "%";
        box.style.width = (100 * (b[2] - b[0]) / size[0]) + "%";
        box.style.height = (100 * (b[3] - b[1]) / size[1]) + "%";
        if (img) img.remove();
        img = document.createElement("img");
        img.alt = link.dataset.caption;
        img.src = link.href;
        box.parentNode.insertBefore(img, box);
        view.querySelector("figcaption").textContent = link.dataset.caption;
        view.hidden = false;
      });
    });
  }

  /* Filter grid cells by channel number: "12", "10-20", "3, 7, 40-45" (the tiles drawn on demand too). */
  function setupFilter() {
    var input = document.getElementById("filter");
    if (!input) return;
    var count = document.getElementById("filter-count");
    function apply() {
      var text = input.value.replace(/\s+/g, "");
      var valid = /^(\d+(-\d+)?)(,\d+(-\d+)?)*,?$/.test(text);
      var shown = 0;
      document.querySelectorAll(".cell[data-ch]").forEach(function (cell) {
        var keep = !text || !valid || inRanges(text.replace(/,$/, ""), +cell.dataset.ch);
        cell.classList.toggle("is-hidden", !keep);
        if (keep && !cell.closest("[hidden]")) shown++;
      });
      count.textContent = text ? (valid ? shown + " shown" : "use numbers and ranges, e.g. 3, 10-20") : "";
    }
    input.addEventListener("input", apply);
    document.addEventListener("atlas:tiles", apply);
  }

  /* "N channels not rendered yet": the button draws their tiles from data-channels (ranges) and the one tile in
     the panel's template; a channel with a page of its own (rendered in another mode, or with dataset examples)
     links to it. Drawn once, then the button shows and hides them. */
  function drawTiles(holder) {
    var grid = holder.querySelector(".grid.tiles"), button = holder.querySelector(".show-tiles");
    if (grid.dataset.drawn) return grid;
    var section = holder.closest("section.channels");
    var layer = { name: section.dataset.layer, pages: section.dataset.pages };
    var tile = holder.querySelector("template").content.firstElementChild;
    var fragment = document.createDocumentFragment();
    button.dataset.channels.split(",").forEach(function (part) {
      var ab = part.split("-"), a = +ab[0], b = ab.length > 1 ? +ab[1] : a;
      for (var ch = a; ch <= b; ch++) {
        var cell = tile.cloneNode(true);
        cell.dataset.ch = ch;
        cell.title = layer.name + ":" + ch;
        cell.querySelector(".ch").textContent = ch;
        if (inRanges(layer.pages, ch)) cell.href = channelUrl(layer.name, ch);
        fragment.appendChild(cell);
      }
    });
    grid.appendChild(fragment);
    grid.dataset.drawn = "1";
    return grid;
  }

  function showTiles(holder, show) {
    var grid = drawTiles(holder), button = holder.querySelector(".show-tiles");
    grid.hidden = !show;
    button.setAttribute("aria-expanded", show ? "true" : "false");
    button.textContent = show ? "hide" : button.dataset.label;
    document.dispatchEvent(new Event("atlas:tiles"));
  }

  function setupTiles() {
    document.querySelectorAll(".not-shown").forEach(function (holder) {
      var button = holder.querySelector(".show-tiles");
      button.dataset.label = button.textContent;
      button.addEventListener("click", function () { showTiles(holder, button.getAttribute("aria-expanded") !== "true"); });
    });
  }

  /* layers/<layer>.html#c=N (where links to a unit without a page lead): its tile in the panel shown, drawing
     the panel's not-rendered tiles when it is one of them, scrolled to and marked. */
  function showChannel() {
    var m = /[#&]c=(\d+)/.exec(window.location.hash);
    if (!m || !document.querySelector("section.channels")) return;
    var selector = '.cell[data-ch="' + m[1] + '"]';
    var cell = Array.prototype.filter.call(document.querySelectorAll("section.channels " + selector),
      function (c) { return !c.closest("[hidden]"); })[0];
    if (!cell) {
      var holder = Array.prototype.filter.call(document.querySelectorAll(".not-shown"),
        function (h) { return !h.hidden; })[0];
      if (!holder) return;
      showTiles(holder, true);
      cell = holder.querySelector(selector);
    }
    if (!cell) return;
    document.querySelectorAll(".cell.is-target").forEach(function (c) { c.classList.remove("is-target"); });
    cell.classList.add("is-target");
    cell.scrollIntoView({ block: "center" });
  }

  /* Arrow keys follow links marked data-key (channel pages: left/right channel, up/down layer). */
  function setupKeys() {
    document.addEventListener("keydown", function (e) {
      if (e.altKey || e.ctrlKey || e.metaKey || e.shiftKey) return;
      var tag = (e.target.tagName || "").toLowerCase();
      if (tag === "input" || tag === "textarea" || tag === "select") return;
      var link = document.querySelector('a[data-key="' + e.key + '"]');
      if (link) { e.preventDefault(); window.location.href = link.href; }
    });
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text) node.textContent = text;
    return node;
  }

  function modePath(mode, kind, layer, ch) {
    return RUN + mode[kind].replace("{layer}", encodeURIComponent(layer)).replace("{cccc}", pad4(ch));
  }

  function compareFigure(hit, mode) {
    var layer = hit.layer, fig = el("figure"), rendered = layer.rendered[mode.id];
    var size = mode.size, img;
    if (hit.channel !== null) {
      var title = el("a", { href: hit.url }, layer.name + ":" + hit.channel);
      if (inRanges(rendered, hit.channel)) {
        img = el("img", { src: modePath(mode, "web", layer.name, hit.channel), width: size[0], height: size[1],
                          alt: layer.name + ":" + hit.channel });
      } else {
        img = el("img", { src: ROOT + "static/missing.svg", width: size[0], height: size[1], alt: "not rendered yet" });
      }
      fig.appendChild(el("a", { href: hit.url })).appendChild(img);
      var cap = el("figcaption"); cap.appendChild(title); fig.appendChild(cap);
    } else {
      var dream = layer.dreams[mode.id];
      if (dream) {
        fig.appendChild(el("a", { href: hit.url })).appendChild(
          el("img", { src: RUN + encodeURI(dream), width: size[0], height: size[1], alt: layer.name + " whole layer" }));
      } else {
        var mini = el("div", { "class": "mini" }), shown = 0;
        for (var ch = 0; ch < layer.channels && shown < 4; ch++) {
          if (!inRanges(rendered, ch)) continue;
          mini.appendChild(el("a", { href: channelUrl(layer.name, ch) })).appendChild(
            el("img", { src: modePath(mode, "thumb", layer.name, ch), width: mode.thumbSize[0],
                        height: mode.thumbSize[1], alt: layer.name + ":" + ch }));
          shown++;
        }
        if (!shown) mini.appendChild(el("img", { src: ROOT + "static/missing.svg", width: 128, height: 128, alt: "not rendered yet" }));
        fig.appendChild(mini);
      }
      var caption = el("figcaption");
      caption.appendChild(el("a", { href: hit.url }, layer.name));
      caption.appendChild(el("small", {}, dream ? " whole layer" : " first channels"));
      fig.appendChild(caption);
    }
    var shape = layer.merge ? "block output (" + layer.merge + ")" : "kernel " + layer.kernel + " · stride " + layer.stride;
    fig.appendChild(el("p", { "class": "count" }, shape + " · rf " + layer.rf + " px · depth " + layer.depth));
    return fig;
  }

  function setupCompare() {
    var out = document.getElementById("compare");
    var form = document.getElementById("compare-form");
    if (!out || !form) return;
    var params = new URLSearchParams(window.location.search);
    var items = params.getAll("i").filter(function (s) { return s.trim(); }).slice(0, 4);
    var inputs = form.querySelectorAll("input[name=i]");
    items.forEach(function (item, n) { inputs[n].value = item; });
    var modeId = params.get("mode") || (INDEX.modes[0] && INDEX.modes[0].id);
    var select = form.querySelector("select[name=mode]");
    if (select && modeId) select.value = modeId;
    var mode = INDEX.modes.filter(function (m) { return m.id === modeId; })[0] || INDEX.modes[0];
    var problems = [];
    items.forEach(function (item) {
      var hit = resolve(item).filter(function (h) { return h.ok; })[0];
      if (hit && mode) out.appendChild(compareFigure(hit, mode));
      else problems.push("nothing matches '" + item + "'");
    });
    var message = document.getElementById("compare-message");
    if (problems.length) { message.textContent = problems.join("; "); message.hidden = false; }
  }

  setupSearch();
  setupTabs();
  setupFilter();
  setupTiles();
  showChannel();
  window.addEventListener("hashchange", showChannel);
  setupKeys();
  setupCompare();
  setupExamples();
  setupMatrix();
  window.atlasResolve = resolve;
})();
