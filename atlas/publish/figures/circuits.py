"""The circuit and weights kinds' layouts: a unit with its strongest inputs and outputs (kernels, edges coloured
by sign), and a first layer's kernels as colour patches. Nothing is drawn here."""

from __future__ import annotations

import math
from typing import Any

from atlas.errors import UserError
from atlas.model.catalogue import Layer
from atlas.model.selection import check_channels
from atlas.publish.figures.page import (FACTS_PT, FOOTER_PT, GAP, LABEL_PT_MAX, LABEL_PT_MIN, LINE, MARGIN,
                                        PAGE_WIDTH, POINTS, TITLE_PT, Box, FigureLayout, Link, Panel, Patch, Text,
                                        fit_lines, footer_text, image_file, label_size, mode_words, short_layer)
from atlas.run.manifest import Mode, Run


CIRCUIT_TOP = 4  # edges of each sign on each side: 16 units around the centre fit one slide and A4
ROW = 0.5  # inches per edge row
UNIT = 0.38  # side of a small render and of a kernel
LABEL_W = 1.45  # room for a unit's name beside its kernel
EDGE_W = 0.45  # horizontal run of an edge
NAME_PT, WEIGHT_PT = 6.5, 6.0


def require_circuits(run: Run, layer: Layer) -> Any:
    """The run's circuits, with the layer in them, or a one-line error saying how to get them."""
    if run.circuits is None or not run.circuits.has(layer.name):
        raise UserError(f"the run {run.folder} has no circuits for {layer.name}; re-run its config with "
                        "`circuits: true` (the default), or see `atlas weights` for one unit without a run")
    return run.circuits


def _strongest(edges: list[Any], top: int) -> list[Any]:
    """The first `top` excitatory and the first `top` inhibitory edges of a list ranked that way."""
    excite = [e for e in edges if e.sum > 0][:top]
    return excite + [e for e in edges if e.sum <= 0][:top]


def _edge_label(edge: Any) -> tuple[str, str]:
    name = f"input {'RGB'[edge.channel]}" if edge.layer == "input" else f"{short_layer(edge.layer)}:{edge.channel}"
    return name, f"{edge.sum:+.3g} · norm {edge.norm:.3g}"


def circuit_layout(run: Run, layer_name: str, channel: int, mode: Mode, name: str, title: str | None = None,
                   top: int = CIRCUIT_TOP) -> FigureLayout:
    """A unit's render in the middle, its strongest inputs (left) and outputs (right), each with its render and
    its kernel, joined to the unit by edges coloured by sign, as wide as they are strong."""
    import numpy as np

    layer = run.layer(layer_name)
    check_channels([channel], layer.channels, layer.name)
    circuits = require_circuits(run, layer)
    inputs = _strongest(circuits.inputs(layer.name, channel), top)
    outputs = _strongest(circuits.outputs(layer.name, channel), top)
    renders = run.by_key()
    inner = PAGE_WIDTH - 2 * MARGIN
    side_w = LABEL_W + 0.05 + UNIT + 0.04 + UNIT
    centre = inner - 2 * side_w - 2 * EDGE_W
    y = MARGIN
    texts = [Text(MARGIN, y, title or f"{short_layer(layer.name)}:{channel}, its strongest inputs and outputs",
                  TITLE_PT, "bold")]
    y += TITLE_PT * LINE / POINTS
    meta = circuits.sources[layer.name]["expanded"]
    source = meta.get("name") or meta["node"]  # a layer or block output; the node in folders from before names
    for line in fit_lines([
            f"expanded weights from {source} (left) and into the later units this one feeds (right), through "
            "bottlenecks, pools and batch norms, ReLU as identity, max-pool as average pool, LRN and sigmoid as "
            "their slopes at zero",
            "red excites, blue inhibits; an edge's width grows with its kernel's L2 norm; kernels in the source "
            f"grid on one red/white/blue scale per side; renders: {mode_words(mode)}"], inner, FACTS_PT):
        texts.append(Text(MARGIN, y, line, FACTS_PT))
        y += FACTS_PT * LINE / POINTS
    y += 2 * GAP
    texts += [Text(MARGIN, y, "inputs", FACTS_PT, "bold"), Text(PAGE_WIDTH - MARGIN - side_w, y, "outputs",
                                                                   FACTS_PT, "bold")]
    y += FACTS_PT * LINE / POINTS + GAP
    rows = max(len(inputs), len(outputs), 1)
    height = max(rows * ROW, centre + 0.4)
    box = Box(MARGIN + side_w + EDGE_W, y + (height - centre) / 2, centre, centre)
    key = (mode.id, layer.name, channel)
    panels = [Panel(box, image_file(run, renders.get(key)), f"{short_layer(layer.name)}:{channel}", LABEL_PT_MAX,
                    key=key)]
    strongest = max((e.norm for e in inputs + outputs), default=1.0) or 1.0
    run_layers = {run_layer.name for run_layer in run.layers}
    patches, links = [], []
    for side, edges in (("in", inputs), ("out", outputs)):
        scale = max((float(np.abs(e.kernel).max()) for e in edges), default=1.0) or 1.0
        top_y = y + (height - len(edges) * ROW) / 2
        for i, edge in enumerate(edges):
            row_y = top_y + i * ROW + (ROW - UNIT) / 2
            if side == "in":
                label_x, kernel_x, unit_x = MARGIN, MARGIN + LABEL_W + 0.05, MARGIN + LABEL_W + 0.05 + UNIT + 0.04
                start, end = (unit_x + UNIT, row_y + UNIT / 2), (box.x, box.y + (i + 0.5) / len(edges) * box.h)
            else:
                unit_x = box.x + box.w + EDGE_W
                kernel_x, label_x = unit_x + UNIT + 0.04, unit_x + 2 * UNIT + 0.09
                start, end = (box.x + box.w, box.y + (i + 0.5) / len(edges) * box.h), (unit_x, row_y + UNIT / 2)
            unit_box = Box(unit_x, row_y, UNIT, UNIT)
            if edge.layer == "input":  # an image channel: its colour
                colour = np.zeros((1, 1, 3))
                colour[..., edge.channel % 3] = 1.0
                patches.append(Patch(unit_box, colour, key=(edge.layer, edge.channel)))
            elif (mode.id, edge.layer, edge.channel) in renders or edge.layer in run_layers:
                unit_key = (mode.id, edge.layer, edge.channel)
                panels.append(Panel(unit_box, image_file(run, renders.get(unit_key)), "", LABEL_PT_MIN, key=unit_key))
            elif side == "in":  # a unit of no rendered layer (a residual sum's channel): the edge starts at its kernel
                start = (kernel_x + UNIT, start[1])
            patches.append(Patch(Box(kernel_x, row_y, UNIT, UNIT), edge.kernel, scale, (edge.layer, edge.channel)))
            name_text, weight_text = _edge_label(edge)
            texts.append(Text(label_x, row_y, name_text, NAME_PT))
            texts.append(Text(label_x, row_y + NAME_PT * LINE / POINTS, weight_text, WEIGHT_PT))
            links.append(Link(start, end, edge.sum > 0, round(0.4 + 2.6 * edge.norm / strongest, 3)))
    y += height + LABEL_PT_MAX * LINE / POINTS + 2 * GAP
    texts.append(Text(MARGIN, y, footer_text(run, [mode]), FOOTER_PT))
    page = y + FOOTER_PT * LINE / POINTS + MARGIN
    return FigureLayout(name, "circuit", PAGE_WIDTH, round(page, 4), texts[0].text, texts, panels, patches, links)


def weights_layout(run: Run, layer_name: str, name: str, columns: int | None = None,
                   title: str | None = None) -> FigureLayout:
    """A layer's kernels over the RGB image as colour patches, one per unit (the first layer's 7x7x3 filters)."""
    import numpy as np

    layer = run.layer(layer_name)
    circuits = require_circuits(run, layer)
    units = circuits.source_units(layer.name, "direct")
    full = circuits.full(layer.name, "direct")
    if full is None or [u[0] for u in units] != ["input"] * 3:
        raise UserError(f"--weights draws kernels over the RGB image as colour; {layer.name} reads "
                        f"{circuits.sources[layer.name]['direct']['node']}, not the image (try --weights "
                        f"{run.layers[0].name}, or --circuit {layer.name}:0)")
    count = full.shape[0]
    columns = max(1, min(columns or 8, count))
    inner = PAGE_WIDTH - 2 * MARGIN
    side = (inner - (columns - 1) * GAP) / columns
    y = MARGIN
    texts = [Text(MARGIN, y, title or f"{short_layer(layer.name)}: its {count} kernels over the image", TITLE_PT,
                  "bold")]
    y += TITLE_PT * LINE / POINTS
    h, w = full.shape[2:]
    for line in fit_lines([f"each patch is one unit's {h}x{w}x3 kernel shown as colour: grey is zero, each kernel "
                            "scaled to its own largest weight (red, green, blue: how much each colour of the image "
                            "excites the unit)"], inner, FACTS_PT):
        texts.append(Text(MARGIN, y, line, FACTS_PT))
        y += FACTS_PT * LINE / POINTS
    y += 2 * GAP
    label_pt = label_size([str(count - 1)], side)
    row_h = side + label_pt * LINE / POINTS + GAP
    patches = []
    for c in range(count):
        row, col = divmod(c, columns)
        box = Box(MARGIN + col * (side + GAP), y + row * row_h, side, side)
        kernel = full[c].transpose(1, 2, 0)
        peak = float(np.abs(kernel).max()) or 1.0
        patches.append(Patch(box, 0.5 + kernel / (2 * peak), key=(layer.name, c)))
        texts.append(Text(box.x, box.y + side + 0.02, str(c), label_pt))
    y += math.ceil(count / columns) * row_h + GAP
    texts.append(Text(MARGIN, y, footer_text(run, []), FOOTER_PT))
    page = y + FOOTER_PT * LINE / POINTS + MARGIN
    return FigureLayout(name, "weights", PAGE_WIDTH, round(page, 4), texts[0].text, texts, [], patches)
