/* atlas photo pages: the semantic dictionary (hover a position of the photo to see its channels, click to keep
   it) and the classes lit together across a layer's interfaces. Plain JavaScript, no network; the dictionary's
   data is JSON in the page (per position its channels and activations, per channel its label, page and render). */
(function () {
  "use strict";
  var root = document.body.dataset.root || "", run = document.body.dataset.run || "";

  function icon(unit, value, size) {
    var fig = document.createElement("figure"), img = document.createElement("img");
    fig.className = "unit-icon";
    fig.dataset.unit = unit[0];
    fig.title = unit[0] + ": " + value.toPrecision(3);
    img.src = unit[2] ? run + unit[2] : root + "static/missing.svg";
    img.width = img.height = size;
    img.alt = unit[0] + (unit[2] ? "" : " (not rendered)");
    var holder = fig;
    if (unit[1]) {
      holder = document.createElement("a");
      holder.href = root + unit[1];
      fig.appendChild(holder);
    }
    holder.appendChild(img);
    var caption = document.createElement("figcaption"), number = document.createElement("span");
    number.className = "value";
    number.textContent = value.toPrecision(3);
    caption.append(unit[3] + " ", number);
    fig.appendChild(caption);
    return fig;
  }

  document.querySelectorAll("section.dictionary").forEach(function (section) {
    var data = JSON.parse(section.querySelector("script.dictionary-data").textContent);
    var frame = section.querySelector(".dictionary-frame"), mark = section.querySelector(".position-mark");
    var out = section.querySelector(".dictionary-detail"), pinned = null, current = [0, 0];

    function at(e) {
      var box = frame.getBoundingClientRect();
      var col = Math.floor((e.clientX - box.left) / box.width * data.w);
      var row = Math.floor((e.clientY - box.top) / box.height * data.h);
      return [Math.min(data.h - 1, Math.max(0, row)), Math.min(data.w - 1, Math.max(0, col))];
    }

    /* attribution between layers: per position of this layer, signed bytes over the lower layer's positions,
       drawn in the diverging colours of the heatmaps (red raises, blue lowers, white is zero) */
    var canvases = section.querySelectorAll("figure.between canvas");
    function drawBetween(row, col) {
      (data.between || []).forEach(function (b, i) {
        if (!b.bytes) b.bytes = Uint8Array.from(atob(b.data), function (c) { return c.charCodeAt(0); });
        var n = b.h * b.w, offset = (row * data.w + col) * n;
        var g = canvases[i].getContext("2d"), image = g.createImageData(b.w, b.h);
        for (var k = 0; k < n; k++) {
          var v = b.bytes[offset + k];
          if (v > 127) v -= 256;
          var fade = Math.round(255 * (1 - Math.min(1, Math.abs(v) / 127)));
          image.data[4 * k] = v >= 0 ? 255 : fade;
          image.data[4 * k + 1] = fade;
          image.data[4 * k + 2] = v >= 0 ? fade : 255;
          image.data[4 * k + 3] = 255;
        }
        g.putImageData(image, 0, 0);
      });
    }

    function show(row, col) {
      mark.hidden = false;
      mark.style.left = (100 * col / data.w) + "%";
      mark.style.top = (100 * row / data.h) + "%";
      mark.style.width = (100 / data.w) + "%";
      mark.style.height = (100 / data.h) + "%";
      var head = document.createElement("p"), list = document.createElement("div");
      head.className = "position";
      head.textContent = "position row " + row + ", column " + col + (pinned ? " (kept: click again to let go)" : "");
      list.className = "position-channels";
      data.channels[row][col].forEach(function (channel, i) {
        var value = data.values[row][col][i];
        var share = data.top > 0 ? Math.max(0, value) / data.top : 0;
        list.appendChild(icon(data.units[channel], value, Math.round(data.min + (data.max - data.min) * share)));
      });
      out.replaceChildren(head, list);
      drawBetween(row, col);
      frame.dataset.position = row + "," + col;
      current = [row, col];
    }

    frame.addEventListener("mousemove", function (e) {
      if (!pinned) { var p = at(e); show(p[0], p[1]); }
    });
    frame.addEventListener("click", function (e) {
      var p = at(e);
      pinned = pinned && pinned[0] === p[0] && pinned[1] === p[1] ? null : p;
      show(p[0], p[1]);
    });
    /* the keyboard: arrows move the position (the frame takes the focus), Enter keeps it */
    var steps = {ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1]};
    frame.addEventListener("keydown", function (e) {
      var step = steps[e.key];
      if (e.key === "Enter") pinned = pinned ? null : current;
      else if (!step) return;
      e.preventDefault();
      e.stopPropagation();
      var row = Math.min(data.h - 1, Math.max(0, current[0] + (step ? step[0] : 0)));
      var col = Math.min(data.w - 1, Math.max(0, current[1] + (step ? step[1] : 0)));
      if (pinned && step) pinned = [row, col];
      show(row, col);
    });
  });

  /* hovering a class (its heatmap, its row of channels, a group's bar) lights it everywhere in the layer's tab */
  document.querySelectorAll(".explain-layer").forEach(function (panel) {
    panel.querySelectorAll("[data-class]").forEach(function (el) {
      function light(on) {
        panel.querySelectorAll('[data-class="' + el.dataset.class + '"]').forEach(function (other) {
          other.classList.toggle("lit", on);
        });
      }
      el.addEventListener("mouseenter", function () { light(true); });
      el.addEventListener("mouseleave", function () { light(false); });
    });
  });
})();
