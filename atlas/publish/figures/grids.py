"""The grid kinds' layouts: contact sheets (with or without dataset examples), progressions, hand-picked panels
and activation-atlas posters. Each turns (Run, FigureSpec) into a `FigureLayout`; nothing is drawn here."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

from atlas.errors import UserError
from atlas.model.catalogue import AnyLayer, Layer, in_order
from atlas.model.classifier import label_key
from atlas.model.selection import WHOLE_LAYER, check_channels, parse_channels
from atlas.publish.figures.page import (FACTS_PT, ItemSpec, FOOTER_PT, GAP, LABEL_PT_MIN, LINE, MARGIN, PAGE_WIDTH, POINTS,
                                        TITLE_PT, Box, Cell, FigureLayout, Panel, Text, find_mode, footer_text,
                                        grid_layout, image_file, layer_facts, mode_words, short_layer)
from atlas.run.manifest import CLASS_LAYER, NOISE, Mode, Render, Run, RunClass

if TYPE_CHECKING:
    from atlas.publish.figures.spec import FigureSpec

MAX_PROGRESSION = 10  # the default progression keeps at most this many layers
NAMED = 8  # layers named in the line that says which layers have renders


def sheet_cells(run: Run, layer: AnyLayer, channels: list[int], mode: Mode) -> list[Cell]:
    renders = run.by_key()
    return [Cell((mode.id, layer.name, c), image_file(run, renders.get((mode.id, layer.name, c))), f"{c}")
            for c in channels]


def rendered_layers(run: Run, mode: Mode) -> list[AnyLayer]:
    """The layers and block outputs with a render in `mode` (a channel or the whole layer), low to high."""
    names = {r.layer for r in run.renders if r.mode == mode.id}
    return in_order(layer for layer in [*run.layers, *run.blocks] if layer.name in names)


def require_renders(run: Run, layer: AnyLayer, mode: Mode, kind: str) -> None:
    """A sheet or panel of a layer without renders in `mode` is one line naming the layers that have them."""
    have = rendered_layers(run, mode)
    if layer in have:
        return
    if not have:
        raise UserError(f"{kind} of {layer.name}: the run has no renders in mode {mode.id} yet; render some first "
                        f"(atlas sweep), or pick another --mode")
    names = ", ".join(view.name for view in have[:NAMED]) + (f" and {len(have) - NAMED} more" if len(have) > NAMED
                                                             else "")
    raise UserError(f"{kind} of {layer.name}: it has no renders in mode {mode.id}; the layers with renders: {names}")


def default_progression(layers: list[Layer]) -> list[Layer]:
    """About 8-10 layers from low to high (pass those with renders): all of them when there are at most 10, else
    each stem conv wider than 1x1, then each block's widest such layer (its 3x3 conv in GoogLeNet), auxiliary
    heads left out, thinned evenly keeping both ends."""
    if len(layers) <= MAX_PROGRESSION:
        return sorted(layers, key=lambda layer: layer.index)
    spatial = [layer for layer in layers
               if max(layer.kernel, layer.kernel_w) > 1 and not layer.block.startswith("head")]
    stem = [layer for layer in spatial if layer.block == "stem"]
    widest: dict[str, Layer] = {}
    for layer in spatial:
        if layer.block != "stem" and (layer.block not in widest or layer.channels >= widest[layer.block].channels):
            widest[layer.block] = layer
    chosen = sorted(stem + list(widest.values()), key=lambda layer: layer.index) or list(layers)
    if len(chosen) <= MAX_PROGRESSION:
        return chosen
    step = (len(chosen) - 1) / (MAX_PROGRESSION - 1)
    return [chosen[round(i * step)] for i in range(MAX_PROGRESSION)]


def progression_render(run: Run, layer: AnyLayer, mode: Mode) -> Render | None:
    """A layer's whole-layer render in `mode` if there is one, else its channel with the highest lift
    (ties: the lowest channel); None if the layer has no render in that mode."""
    candidates = [r for r in run.renders if r.mode == mode.id and r.layer == layer.name]
    whole = [r for r in candidates if r.channel == WHOLE_LAYER]
    if whole:
        return whole[0]
    return min(candidates, key=lambda r: (-(r.lift if r.lift is not None else -math.inf), r.channel), default=None)


def progression_cells(run: Run, layers: list[AnyLayer], mode: Mode) -> list[Cell]:
    """The base photo first (when the run has its copy), then one panel per layer."""
    cells = []
    if mode.file and (run.folder / mode.file).is_file():
        cells.append(Cell(None, run.folder / mode.file, f"photo: {mode.photo}"))
    for layer in layers:
        render = progression_render(run, layer, mode)
        shown = "" if render is None or render.channel == WHOLE_LAYER else f" · ch {render.channel}"
        key = render.key if render else (mode.id, layer.name, WHOLE_LAYER)
        cells.append(Cell(key, image_file(run, render), f"{short_layer(layer.name)}{shown}"))
    return cells


def panel_cells(run: Run, items: list[ItemSpec], default_mode: Mode) -> list[Cell]:
    renders = run.by_key()
    cells = []
    for item in items:
        layer = run.any_layer(item.layer)
        check_channels([item.channel], layer.channels, layer.name)
        mode = find_mode(run, item.mode) if item.mode else default_mode
        require_renders(run, layer, mode, "panel")
        key = (mode.id, layer.name, item.channel)
        label = f"{short_layer(layer.name)}:{item.channel}" + ("" if mode == default_mode else f" ({mode.id})")
        facets = run.facets.get(key)
        if facets:  # every facet of the channel, side by side; the caption goes with the first
            cells.extend(Cell(key, image_file(run, facet), f"{label} f{facet.facet}",
                              item.caption if facet.facet == 0 else None) for facet in facets)
        else:
            cells.append(Cell(key, image_file(run, renders.get(key)), label, item.caption))
    return cells


def example_cells(run: Run, layer: AnyLayer, channel: int, top: int) -> list[Cell]:
    """A channel's dataset-example patches, best first, labelled with their activation; gaps up to `top`."""
    found = run.examples.get((layer.name, channel), [])
    cells = [Cell(("examples", layer.name, channel), run.folder / e.crop if e.crop else None, f"{e.value:.3g}")
             for e in found[:top]]
    return cells + [Cell(("examples", layer.name, channel), None, "") for _ in range(top - len(cells))]


def examples_sheet_layout(run: Run, spec: FigureSpec) -> FigureLayout:
    """One row per channel: its dream (in `mode`, when the run has renders), then its top dataset patches."""
    layer = run.any_layer(spec.layer or "")
    if not run.examples:
        raise UserError(f"{run.folder} has no dataset examples; run `atlas examples FOLDER -o {run.folder}` first")
    top = int(run.example_meta.get("top", 0)) or max(len(v) for v in run.examples.values())
    mode = find_mode(run, spec.mode) if run.modes or spec.mode else None  # --mode without renders: one line
    channels = parse_channels(spec.value("channels"), layer.channels, layer.name)
    dreams = sheet_cells(run, layer, channels, mode) if mode else []  # one pass over the renders, not one per row
    cells = []
    for row, channel in enumerate(channels):
        patches = example_cells(run, layer, channel, top)
        if mode:
            cells += [dreams[row]] + patches
        else:  # no dreams to carry the channel number: the first patch does
            cells += [replace(patches[0], label=f"ch {channel} · {patches[0].label}".rstrip(" ·"))] + patches[1:]
    dream = f"each row: the channel's dream ({mode_words(mode)}), then " if mode else "each row: "
    facts = [layer_facts(run, layer), f"{dream}the {top} patches of `{run.example_meta.get('folder', '?')}` that "
             "excite it most, best first, labelled with the activation"]
    return grid_layout(spec.name, "sheet", cells, top + (1 if mode else 0), spec.title or layer.name, facts,
                       footer_text(run, [mode] if mode else []), run)


def sheet_layout(run: Run, spec: FigureSpec) -> FigureLayout:
    """A contact sheet: one layer's channels in a grid, each labelled with its number."""
    if spec.examples:
        return examples_sheet_layout(run, spec)
    layer = run.any_layer(spec.layer or "")
    mode = find_mode(run, spec.mode)
    require_renders(run, layer, mode, "sheet")
    channels = parse_channels(spec.value("channels"), layer.channels, layer.name)
    cells = sheet_cells(run, layer, channels, mode)
    columns = spec.columns or min(16, max(1, math.ceil(math.sqrt(len(cells)))))
    shown = f"channels {spec.channels}" if spec.channels and spec.channels != "all" else "all channels"
    facts = [layer_facts(run, layer), f"{shown} ({len(channels)} of {layer.channels}), {mode_words(mode)}"]
    return grid_layout(spec.name, "sheet", cells, columns, spec.title or layer.name, facts,
                       footer_text(run, [mode]), run)


def progression_layout(run: Run, spec: FigureSpec) -> FigureLayout:
    """One start (a photo or noise) across layers from low to high, each panel labelled with its layer."""
    mode = find_mode(run, spec.photo)
    if spec.layers:
        layers = in_order({run.any_layer(name).name: run.any_layer(name) for name in spec.layers}.values())
    else:  # from the layers the run has rendered in that mode
        layers = default_progression(rendered_layers(run, mode))
        if not layers:
            raise UserError(f"progression: the run has no renders in mode {mode.id} yet; render some first "
                            "(atlas sweep), or pick another --photo")
    cells = progression_cells(run, layers, mode)
    columns = spec.columns or (len(cells) if len(cells) <= 5 else math.ceil(len(cells) / 2))
    title = spec.title or f"From lines to objects: {len(layers)} layers, low to high"
    facts = [f"{mode_words(mode)}; each panel is the whole-layer dream, or else the layer's channel with the "
             "largest lift (ch N)",
             f"receptive field {layers[0].receptive_field} px at {short_layer(layers[0].name)} → "
             f"{layers[-1].receptive_field} px at {short_layer(layers[-1].name)}"]
    return grid_layout(spec.name, "progression", cells, columns, title, facts, footer_text(run, [mode]), run)


def panel_layout(run: Run, spec: FigureSpec) -> FigureLayout:
    """A hand-picked set of layer:channel pairs with optional captions."""
    mode = find_mode(run, spec.mode)
    cells = panel_cells(run, spec.items or [], mode)
    modes = [mode] + [find_mode(run, item.mode) for item in spec.items or [] if item.mode]
    columns = spec.columns or min(4, len(cells))
    title = spec.title or f"{len(cells)} hand-picked channels"
    return grid_layout(spec.name, "panel", cells, columns, title, [mode_words(mode)],
                       footer_text(run, list(dict.fromkeys(modes))), run)


def pick_classes(run: Run, text: str | None) -> list[RunClass]:
    """The run's classes a figure names: `all` (or nothing) for every one, else comma-separated labels (any case,
    spaces or underscores) or class indices, each one the run renders; one line naming them otherwise."""
    if not run.classes:
        raise UserError(f"{run.folder} renders no classes; add classes: (e.g. [goldfish, espresso]) to its config "
                        "and run it again")
    if text is None or text.strip() in ("", "all"):
        return list(run.classes)
    by_key = {key: found for found in run.classes for key in (str(found.index), label_key(found.label))}
    picked: list[RunClass] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        found = by_key.get(label_key(part))
        if found is None:
            listed = ", ".join(f"{c.label} ({c.index})" for c in run.classes[:NAMED])
            raise UserError(f"class figure: the run renders no class '{part}'; its classes: {listed}"
                            + (f" and {len(run.classes) - NAMED} more" if len(run.classes) > NAMED else ""))
        if found not in picked:
            picked.append(found)
    return picked


def class_layout(run: Run, spec: FigureSpec) -> FigureLayout:
    """A grid of class visualisations in one noise-started mode, each labelled with its class's label and index."""
    classes = pick_classes(run, spec.names)
    mode = find_mode(run, spec.mode)
    if mode.kind != NOISE:
        raise UserError(f"class figure: classes are rendered from noise, not in mode {mode.id}; pick a noise-started "
                        "mode (--mode noise or fourier)")
    renders = run.by_key()
    cells = [Cell((mode.id, CLASS_LAYER, c.index), image_file(run, renders.get((mode.id, CLASS_LAYER, c.index))),
                  f"{c.label} · {c.index}") for c in classes]
    columns = spec.columns or min(8, max(1, math.ceil(math.sqrt(len(cells)))))
    title = spec.title or f"{len(cells)} classes of the classifier"
    facts = [f"{len(cells)} of the classifier's {run.class_count:,} classes, each rendered from noise to raise its "
             f"logit; {mode_words(mode)}"]
    return grid_layout(spec.name, "class", cells, columns, title, facts, footer_text(run, [mode]), run)


def map_layout(run: Run, spec: FigureSpec) -> FigureLayout:
    """A poster of a layer's activation atlas at one zoom level: every kept cell's render at its place in the
    grid, touching its neighbours; unrendered cells are gaps, empty cells stay white."""
    from atlas.run.mapfiles import read_map  # numpy: not for `atlas --help`, which lists the figure kinds

    data = read_map(run.folder, spec.layer or "")
    grid = spec.grid or max(data.grids)
    if grid not in data.grids:
        raise UserError(f"the map of {data.layer} has no {grid} x {grid} grid; its grids: "
                        f"{', '.join(map(str, data.grids))}")
    cells = data.level(grid)
    info = data.info
    title = spec.title or f"Activation atlas of {data.layer}"
    texts = [Text(MARGIN, MARGIN, title, TITLE_PT, "bold")]
    y = MARGIN + TITLE_PT * LINE / POINTS
    facts = [(f"{info['samples']:,} activation vectors from {info['photos']:,} photos of {info['folder']}, laid "
              f"out by UMAP ({info['umap']['n_neighbors']} neighbours, min_dist {info['umap']['min_dist']}, "
              f"{info['umap']['metric']})"),
             (f"{grid}×{grid} grid: {len(cells)} cells of at least {info['min_samples']} samples, each the render "
              "of its mean activation (direction objective)")]
    for line in facts:
        texts.append(Text(MARGIN, y, line, FACTS_PT))
        y += FACTS_PT * LINE / POINTS
    y += GAP * 2
    side = (PAGE_WIDTH - 2 * MARGIN) / grid
    panels = []
    for cell in cells:
        image = run.folder / cell.render
        box = Box(MARGIN + cell.col * side, y + cell.row * side, side, side)
        panels.append(Panel(box, image if image.is_file() else None, "", LABEL_PT_MIN, None,
                            ("map", data.layer, cell.grid * 1_000_000 + cell.row * 1_000 + cell.col)))
    y += grid * side + GAP
    texts.append(Text(MARGIN, y, footer_text(run, []), FOOTER_PT))
    height = y + FOOTER_PT * LINE / POINTS + MARGIN
    return FigureLayout(spec.name, "map", PAGE_WIDTH, round(height, 4), title, texts, panels)
