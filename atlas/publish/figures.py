"""Teaching figures from a run folder: contact sheets, layer progressions, channel panels and activation-atlas
posters, as PNG or PDF.

Two steps, one way: pure functions turn (Run, FigureSpec) into a `FigureLayout` (page size in inches, title,
panels with boxes, image paths or None for a gap, labels, captions) without drawing anything; then
`write_figure` / `write_combined_pdf` draw layouts with matplotlib (Agg, DejaVu Sans bundled with it).
Figures read the run only through `atlas.run.manifest`; nothing here imports TensorFlow.
"""

from __future__ import annotations

import hashlib
import math
import textwrap
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from atlas.atomic import OUTPUT_FLAG, atomic_path, stop_on_write_errors
from atlas.errors import UserError
from atlas.model.catalogue import Layer
from atlas.model.selection import WHOLE_LAYER, check_channels, format_channels, parse_channels
from atlas.run.manifest import NOISE, Mode, Render, Run
from atlas.run.mapfiles import read_map
from atlas.shipped import file_or_shipped, shipped_figure_specs
from atlas.validation import load_yaml, validate

FIGURES_DIR = "figures"
DEFAULT_DPI = 200
FORMATS = ("png", "pdf")
MAX_PROGRESSION = 10  # the default progression keeps at most this many layers

# Page geometry, in inches (origin at the top left; y grows downwards).
PAGE_WIDTH = 8.0
MARGIN = 0.35
GAP = 0.08
TITLE_PT, FACTS_PT, FOOTER_PT = 12.0, 7.5, 6.0
LABEL_PT_MAX, LABEL_PT_MIN, CAPTION_PT = 8.0, 4.0, 6.5
LINE = 1.35  # line height as a multiple of the font size
CHAR_EM = 0.6  # generous average glyph width of DejaVu Sans, in ems (to fit labels without measuring)
CAPTION_LINES = 3
ASCENT = 0.93  # DejaVu Sans ascent, in ems
POINTS = 72.0

Kind = Literal["sheet", "progression", "panel", "map"]
Format = Literal["png", "pdf"]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


# ----------------------------------------------------------------------------------------------- spec file


class ItemSpec(BaseModel):
    """One hand-picked channel of a panel."""

    model_config = ConfigDict(extra="forbid")
    layer: str
    channel: int = Field(ge=0)
    caption: str | None = None
    mode: str | None = None  # overrides the figure's mode for this item


class FigureSpec(BaseModel):
    """One figure: what to show and where to write it. Which keys apply depends on `kind`."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN)
    kind: Kind
    title: str | None = None  # replaces the generated title
    layer: str | None = None  # sheet, map
    grid: int | None = Field(default=None, ge=1)  # map: the zoom level's cells a side (default: the finest)
    channels: str | None = None  # sheet: "0-63", "0,3,7-9", "all" (default)
    mode: str | None = None  # sheet, panel: noise (default), photo-NAME or NAME
    layers: list[str] | None = None  # progression (default: a spread from low to high)
    photo: str | None = None  # progression (default: noise renders)
    items: list[ItemSpec] | None = None  # panel
    examples: bool | None = None  # sheet: each channel's dream and its dataset examples in one row
    columns: int | None = Field(default=None, ge=1, le=32)
    dpi: int | None = Field(default=None, ge=20, le=1200)
    format: Format | None = None
    output: str | None = None  # a .png or .pdf path; relative paths are inside <run>/figures/

    @field_validator("channels", mode="before")
    @classmethod
    def _channels_text(cls, value: Any) -> Any:
        """Accept `5`, `[1, 2, 3]` and `"0-63"` alike, as selection text."""
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return str(value)
        if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return ",".join(str(v) for v in value)
        return value

    @model_validator(mode="after")
    def _keys_fit_kind(self) -> FigureSpec:
        needs = {"sheet": "layer", "panel": "items", "map": "layer"}.get(self.kind)
        if needs and not getattr(self, needs):
            raise ValueError(f"a {self.kind} figure needs '{needs}'")
        allowed = {"sheet": {"layer", "channels", "mode", "examples"}, "progression": {"layers", "photo"},
                   "panel": {"items", "mode"}, "map": {"layer", "grid"}}[self.kind]
        stray = [k for k in ("layer", "channels", "mode", "layers", "photo", "items", "examples", "grid")
                 if k not in allowed and getattr(self, k) is not None]
        if stray:
            raise ValueError(f"'{stray[0]}' does not apply to a {self.kind} figure "
                             f"(its keys: {', '.join(sorted(allowed))})")
        if self.output is not None and not has_format(self.output):
            raise ValueError(f"output '{self.output}' must end in .png or .pdf")
        return self


class SpecFile(BaseModel):
    """A figure spec file: several figures of one run, optionally also bound into one PDF."""

    model_config = ConfigDict(extra="forbid")
    figures: list[FigureSpec] = Field(min_length=1)
    dpi: int = Field(default=DEFAULT_DPI, ge=20, le=1200)
    format: Format = "png"
    combined: str | None = None  # a .pdf path holding every figure, one a page

    @field_validator("combined")
    @classmethod
    def _combined_is_pdf(cls, value: str | None) -> str | None:
        if value is not None and Path(value).suffix.lower() != ".pdf":
            raise ValueError("'combined' must be a .pdf file")
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> SpecFile:
        names = [f.name for f in self.figures]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"figure name '{twice[0]}' is used twice; names must be unique")
        return self


def load_spec(path: str | Path) -> SpecFile:
    """Read and validate a figure spec file (or a shipped spec's name); every problem is one UserError line."""
    path = file_or_shipped(path, shipped_figure_specs(), "figure spec")
    return validate(SpecFile, load_yaml(path), str(path))


def has_format(path: str | Path) -> bool:
    return Path(path).suffix.lower().lstrip(".") in FORMATS


def output_format(path: str | Path) -> str:
    """'png' or 'pdf' from a file name's suffix; anything else is a user error."""
    if not has_format(path):
        raise UserError(f"{path}: a figure is written as .png or .pdf; change the file name's suffix")
    return Path(path).suffix.lower().lstrip(".")


def figure_path(run: Run, spec: FigureSpec, default_format: str = "png") -> Path:
    """Where a figure goes: its `output` (relative: inside <run>/figures/), else <run>/figures/<name>.<format>."""
    if spec.output:
        out = Path(spec.output).expanduser()
        return out if out.is_absolute() else run.folder / FIGURES_DIR / out
    return run.folder / FIGURES_DIR / f"{spec.name}.{spec.format or default_format}"


def combined_path(run: Run, spec_file: SpecFile) -> Path | None:
    """The combined PDF of a spec file, resolved like a figure's `output`."""
    if not spec_file.combined:
        return None
    out = Path(spec_file.combined).expanduser()
    return out if out.is_absolute() else run.folder / FIGURES_DIR / out


# ----------------------------------------------------------------------------------------------- layout data


@dataclass(frozen=True)
class Box:
    """A rectangle on the page in inches; (x, y) is its top-left corner, y grows downwards."""

    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True)
class Panel:
    """One cell: an image (or a gap when `image` is None), its label and an optional caption below it."""

    box: Box  # the image square
    image: Path | None
    label: str
    label_pt: float
    caption: str | None = None  # already wrapped to the cell width
    key: tuple[str, str, int] | None = None  # (mode, layer, channel) shown, for gaps and tests

    @property
    def missing(self) -> bool:
        return self.image is None


@dataclass(frozen=True)
class Text:
    """A line of text placed on the page."""

    x: float
    y: float  # top of the text
    text: str
    size: float
    weight: str = "normal"


@dataclass(frozen=True)
class Patch:
    """A small array drawn as cells: a kernel [H, W] in red/white/blue on +-`scale`, or colours [H, W, 3] in 0..1."""

    box: Box
    data: Any  # numpy array
    scale: float = 1.0
    key: tuple[str, int] | None = None  # (layer, channel) of the unit at the other end, for tests

    def rgb(self) -> Any:
        """The cells' colours [H, W, 3] in 0..1, as drawn."""
        import numpy as np

        if self.data.ndim == 3:
            return np.clip(self.data, 0, 1)
        t = np.clip(self.data / self.scale, -1, 1) if self.scale > 0 else np.zeros_like(self.data)
        fade = 1 - np.abs(t)
        return np.stack([np.where(t >= 0, 1, fade), fade, np.where(t >= 0, fade, 1)], axis=-1)


@dataclass(frozen=True)
class Link:
    """An edge between two points of the page: red excites, blue inhibits; `width` in points."""

    start: tuple[float, float]
    end: tuple[float, float]
    excites: bool
    width: float


@dataclass
class FigureLayout:
    """Everything needed to draw one figure, and nothing drawn yet."""

    name: str
    kind: str
    width: float  # inches
    height: float
    title: str
    texts: list[Text] = field(default_factory=list)  # title, facts and footer lines
    panels: list[Panel] = field(default_factory=list)
    patches: list[Patch] = field(default_factory=list)  # kernels and colour patches (circuit, weights)
    links: list[Link] = field(default_factory=list)  # edges of a circuit

    @property
    def gaps(self) -> list[Panel]:
        return [p for p in self.panels if p.missing]

    @property
    def labels(self) -> list[str]:
        return [p.label for p in self.panels]

    def missing_summary(self, limit: int = 8) -> str:
        """One line naming the gaps, grouped by mode and layer: `noise mixed4d_3x3_pre_relu:3,9-15; ...`."""
        groups: dict[tuple[str, str], list[int]] = {}
        for panel in self.gaps:
            mode, layer, channel = panel.key or ("?", panel.label, WHOLE_LAYER)
            groups.setdefault((mode, layer), []).append(channel)
        parts = [f"{mode} {layer}:{channel_ranges(channels)}" for (mode, layer), channels in groups.items()]
        more = f"; and {len(parts) - limit} more layers" if len(parts) > limit else ""
        return "; ".join(parts[:limit]) + more


@dataclass(frozen=True)
class Cell:
    """What one panel should show, before it is placed on the page."""

    key: tuple[str, str, int] | None  # (mode id, layer, channel) of a render; None for the base photo
    image: Path | None  # None: a gap
    label: str
    caption: str | None = None


def channel_ranges(channels: list[int]) -> str:
    """`[3, 9, 10, 11, -1]` as `3,9-11,layer` (-1 is the whole-layer dream)."""
    ranges = format_channels([c for c in channels if c != WHOLE_LAYER])
    parts = ([ranges] if ranges else []) + (["layer"] if WHOLE_LAYER in channels else [])
    return ",".join(parts)


def short_layer(name: str) -> str:
    """A layer name without the `_pre_relu` every GoogLeNet conv output carries."""
    return name.removesuffix("_pre_relu")


def find_mode(run: Run, text: str | None) -> Mode:
    """A mode by id (`noise`, `photo-chelsea`) or photo name (`chelsea`); None means noise."""
    text = NOISE if text is None else str(text).strip()
    for mode in run.modes:
        if text in (mode.id, mode.photo):
            return mode
    known = ", ".join(m.id for m in run.modes) or "none"
    raise UserError(f"unknown mode or photo '{text}': this run has {known}")


def mode_words(mode: Mode) -> str:
    """How the mode's images were made: its method and its start."""
    start = "started from noise" if mode.kind == NOISE else f"started from the photo '{mode.photo}'"
    facets = f", {mode.facets} facets per channel" if mode.facets > 1 else ""
    return f"{mode.method_label} method, {start}{facets}"


def image_file(run: Run, render: Render | None) -> Path | None:
    """The master PNG of a render, or its web image if the master is gone; None if neither exists."""
    if render is None:
        return None
    for relative in (render.image, render.web):
        if relative and (run.folder / relative).is_file():
            return run.folder / relative
    return None


def sheet_cells(run: Run, layer: Layer, channels: list[int], mode: Mode) -> list[Cell]:
    renders = run.by_key()
    return [Cell((mode.id, layer.name, c), image_file(run, renders.get((mode.id, layer.name, c))), f"{c}")
            for c in channels]


def default_progression(layers: list[Layer]) -> list[Layer]:
    """About 8-10 layers from low to high: each stem conv wider than 1x1, then each block's widest such
    layer (its 3x3 conv in GoogLeNet), auxiliary heads left out, thinned evenly keeping both ends."""
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


def progression_render(run: Run, layer: Layer, mode: Mode) -> Render | None:
    """A layer's whole-layer render in `mode` if there is one, else its channel with the highest lift
    (ties: the lowest channel); None if the layer has no render in that mode."""
    candidates = [r for r in run.renders if r.mode == mode.id and r.layer == layer.name]
    whole = [r for r in candidates if r.channel == WHOLE_LAYER]
    if whole:
        return whole[0]
    return min(candidates, key=lambda r: (-(r.lift if r.lift is not None else -math.inf), r.channel), default=None)


def progression_cells(run: Run, layers: list[Layer], mode: Mode) -> list[Cell]:
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
        layer = run.layer(item.layer)
        check_channels([item.channel], layer.channels, layer.name)
        mode = find_mode(run, item.mode) if item.mode else default_mode
        key = (mode.id, layer.name, item.channel)
        label = f"{short_layer(layer.name)}:{item.channel}" + ("" if mode == default_mode else f" ({mode.id})")
        facets = run.facets.get(key)
        if facets:  # every facet of the channel, side by side; the caption goes with the first
            cells.extend(Cell(key, image_file(run, facet), f"{label} f{facet.facet}",
                              item.caption if facet.facet == 0 else None) for facet in facets)
        else:
            cells.append(Cell(key, image_file(run, renders.get(key)), label, item.caption))
    return cells


def label_size(texts: list[str], width: float) -> float:
    """The largest label size (points, within limits) at which the longest text fits `width` inches."""
    longest = max((len(t) for t in texts), default=1) or 1
    fit = width * POINTS / (CHAR_EM * longest)
    return round(max(LABEL_PT_MIN, min(LABEL_PT_MAX, fit)), 2)


def wrap_caption(text: str | None, width: float) -> str | None:
    """Wrap a caption to the cell width, at most CAPTION_LINES lines (the rest ends in an ellipsis)."""
    if not text:
        return None
    chars = max(8, int(width * POINTS / (CHAR_EM * CAPTION_PT)))
    return "\n".join(textwrap.wrap(text, chars, max_lines=CAPTION_LINES, placeholder=" …"))


def grid_layout(name: str, kind: str, cells: list[Cell], columns: int, title: str, facts: list[str],
                footer: str, run: Run) -> FigureLayout:
    """Place a title block, a grid of square images with labels (and captions) and a footer on a page."""
    columns = max(1, min(columns, len(cells) or 1))
    inner = PAGE_WIDTH - 2 * MARGIN
    side = (inner - (columns - 1) * GAP) / columns
    size = label_size([c.label for c in cells], side)
    captions = [wrap_caption(c.caption, side) for c in cells]
    caption_lines = max((c.count("\n") + 1 for c in captions if c), default=0)
    row_height = side + size * LINE / POINTS + caption_lines * CAPTION_PT * LINE / POINTS + GAP
    y = MARGIN
    texts = [Text(MARGIN, y, title, TITLE_PT, "bold")]
    y += TITLE_PT * LINE / POINTS
    for line in facts:
        texts.append(Text(MARGIN, y, line, FACTS_PT))
        y += FACTS_PT * LINE / POINTS
    y += GAP * 2
    panels = []
    for i, (cell, caption) in enumerate(zip(cells, captions)):
        row, col = divmod(i, columns)
        box = Box(MARGIN + col * (side + GAP), y + row * row_height, side, side)
        panels.append(Panel(box, cell.image, cell.label, size, caption, cell.key))
    rows = math.ceil(len(cells) / columns)
    y += rows * row_height + GAP
    texts.append(Text(MARGIN, y, footer, FOOTER_PT))
    height = y + FOOTER_PT * LINE / POINTS + MARGIN
    return FigureLayout(name, kind, PAGE_WIDTH, round(height, 4), title, texts, panels)


def layer_facts(run: Run, layer: Layer) -> str:
    return (f"block {layer.block} · layer {layer.index + 1} of {len(run.layers)} · {layer.channels} channels · "
            f"{layer.kernel}×{layer.kernel_w} kernel, stride {layer.stride} · depth {layer.depth} · "
            f"receptive field {layer.receptive_field} px")


def footer_text(run: Run, modes: list[Mode]) -> str:
    """Run, model and the credit of every photo shown."""
    credits = [f"photo '{m.photo}': {m.credit}" for m in modes if m.kind != NOISE and m.credit]
    return " · ".join([f"atlas run '{run.name}'", f"model {run.model.get('spec', '?')}", *credits])


def example_cells(run: Run, layer: Layer, channel: int, top: int) -> list[Cell]:
    """A channel's dataset-example patches, best first, labelled with their activation; gaps up to `top`."""
    found = run.examples.get((layer.name, channel), [])
    cells = [Cell(("examples", layer.name, channel), run.folder / e.crop if e.crop else None, f"{e.value:.3g}")
             for e in found[:top]]
    return cells + [Cell(("examples", layer.name, channel), None, "") for _ in range(top - len(cells))]


def examples_sheet_layout(run: Run, spec: FigureSpec) -> FigureLayout:
    """One row per channel: its dream (in `mode`, when the run has renders), then its top dataset patches."""
    layer = run.layer(spec.layer or "")
    if not run.examples:
        raise UserError(f"{run.folder} has no dataset examples; run `atlas examples FOLDER -o {run.folder}` first")
    top = int(run.example_meta.get("top", 0)) or max(len(v) for v in run.examples.values())
    mode = find_mode(run, spec.mode) if run.modes or spec.mode else None  # --mode without renders: one line
    channels = parse_channels(spec.channels or "all", layer.channels, layer.name)
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
    layer = run.layer(spec.layer or "")
    mode = find_mode(run, spec.mode)
    channels = parse_channels(spec.channels or "all", layer.channels, layer.name)
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
        layers = sorted({run.layer(name).name: run.layer(name) for name in spec.layers}.values(),
                        key=lambda layer: layer.index)
    else:
        layers = default_progression(run.layers)
    if not layers:
        raise UserError(f"{run.folder} lists no layers; re-run `atlas sweep` on its config")
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


def map_layout(run: Run, spec: FigureSpec) -> FigureLayout:
    """A poster of a layer's activation atlas at one zoom level: every kept cell's render at its place in the
    grid, touching its neighbours; unrendered cells are gaps, empty cells stay white."""
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




# ----------------------------------------------------------------------------------------------- circuits

CIRCUIT_TOP = 4  # edges of each sign on each side: 16 units around the centre fit one slide and A4
ROW = 0.5  # inches per edge row
UNIT = 0.38  # side of a small render and of a kernel
LABEL_W = 1.45  # room for a unit's name beside its kernel
EDGE_W = 0.45  # horizontal run of an edge
NAME_PT, WEIGHT_PT = 6.5, 6.0


def run_circuits(run: Run, layer: Layer) -> Any:
    """The run's circuits, with the layer in them, or a one-line error saying how to get them."""
    if run.circuits is None or not run.circuits.has(layer.name):
        raise UserError(f"the run {run.folder} has no circuits for {layer.name}; re-run its config with "
                        "`circuits: true` (the default), or see `atlas weights` for one unit without a run")
    return run.circuits


def _fit_lines(lines: list[str], width: float, size: float) -> list[str]:
    """Lines wrapped to `width` inches at `size` points (by the generous average glyph width)."""
    chars = max(10, int(width / (size * CHAR_EM / POINTS)))
    return [part for line in lines for part in textwrap.wrap(line, chars)]


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
    circuits = run_circuits(run, layer)
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
    source = circuits.sources[layer.name]["expanded"]["node"]
    for line in _fit_lines([
            f"expanded weights from {source} (left) and into the later units this one feeds (right), through "
            "bottlenecks and pools, ReLU as identity, max-pool as average pool, LRN as its slope at zero",
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
            else:
                unit_key = (mode.id, edge.layer, edge.channel)
                panels.append(Panel(unit_box, image_file(run, renders.get(unit_key)), "", LABEL_PT_MIN, key=unit_key))
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
    circuits = run_circuits(run, layer)
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
    for line in _fit_lines([f"each patch is one unit's {h}x{w}x3 kernel shown as colour: grey is zero, each kernel "
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


LAYOUTS = {"sheet": sheet_layout, "progression": progression_layout, "panel": panel_layout, "map": map_layout}


def layout_figure(run: Run, spec: FigureSpec) -> FigureLayout:
    """The layout of any figure kind."""
    return LAYOUTS[spec.kind](run, spec)


def default_name(run: Run, spec: FigureSpec) -> str:
    """A file name for a figure made on the command line, from what it shows."""
    if spec.kind == "sheet" and spec.examples:
        return f"sheet-{spec.layer}-{find_mode(run, spec.mode).id if run.modes else 'examples'}-examples"
    if spec.kind == "sheet":
        return f"sheet-{spec.layer}-{find_mode(run, spec.mode).id}"
    if spec.kind == "progression":
        return f"progression-{find_mode(run, spec.photo).id}"
    if spec.kind == "map":
        return f"map-{spec.layer}" + (f"-{spec.grid}" if spec.grid else "")
    picked = ",".join(f"{i.layer}:{i.channel}:{i.mode}" for i in spec.items or [])
    return f"panel-{find_mode(run, spec.mode).id}-{hashlib.sha1(picked.encode()).hexdigest()[:8]}"


def parse_items(text: str, captions: str | None = None) -> list[ItemSpec]:
    """`layer:ch,layer:ch` (and captions `a|b`, in the same order) as panel items."""
    pairs = [p.strip() for p in text.split(",") if p.strip()]
    notes = captions.split("|") if captions else []
    if len(notes) > len(pairs):
        raise UserError(f"{len(notes)} captions for {len(pairs)} channels; give at most one caption per channel")
    items = []
    for i, pair in enumerate(pairs):
        layer, _, channel = pair.rpartition(":")
        if not layer or not channel.strip().isdigit():
            raise UserError(f"bad panel item '{pair}': write layer:channel, e.g. mixed4d_3x3_pre_relu:139")
        caption = notes[i].strip() if i < len(notes) and notes[i].strip() else None
        items.append(ItemSpec(layer=layer.strip(), channel=int(channel), caption=caption))
    if not items:
        raise UserError("--panel needs at least one layer:channel pair")
    return items


# ----------------------------------------------------------------------------------------------- drawing

RC = {"font.family": "DejaVu Sans", "pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none",
      "text.color": "black", "hatch.color": "#9a9a9a", "hatch.linewidth": 0.5, "image.interpolation": "none"}
FRAME = "#808080"
EXCITE, INHIBIT = "#d62728", "#1f57b4"
GAP_FILL = "#f0f0f0"
PDF_METADATA = {"Creator": "atlas", "Producer": "atlas (matplotlib)", "CreationDate": None, "ModDate": None}
PNG_METADATA = {"Software": "atlas (matplotlib)"}


def _pixels(inches: float, dpi: int) -> float:
    """Inches that Agg turns into exactly round(inches * dpi) pixels (it truncates)."""
    return (round(inches * dpi) + 0.001) / dpi


def _load(path: Path, side: float, dpi: int) -> Any:
    """An image as an RGB array, shrunk (never enlarged) to the print resolution of its box."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        target = max(1, math.ceil(side * dpi))
        if image.width > target or image.height > target:
            image.thumbnail((target, target), Image.Resampling.LANCZOS)
        return np.asarray(image)


def _line(ax: Any, x: float, top: float, text: str, size: float, color: str = "black") -> None:
    """One centred line whose baseline sits one ascent below `top`, so neighbours line up whatever glyphs."""
    ax.text(x, top + size * ASCENT / POINTS, text, fontsize=size, ha="center", va="baseline", color=color)


def draw(layout: FigureLayout, dpi: int) -> Any:
    """A matplotlib Figure of the layout (call inside `matplotlib.rc_context(RC)`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    figure = Figure(figsize=(_pixels(layout.width, dpi), _pixels(layout.height, dpi)), dpi=dpi, facecolor="white")
    FigureCanvasAgg(figure)
    ax = figure.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    for link in layout.links:
        ax.plot([link.start[0], link.end[0]], [link.start[1], link.end[1]], color=EXCITE if link.excites else INHIBIT,
                linewidth=link.width, solid_capstyle="round", alpha=0.8)
    for patch in layout.patches:
        b = patch.box
        ax.imshow(patch.rgb(), extent=(b.x, b.x + b.w, b.y + b.h, b.y), aspect="auto", interpolation="nearest")
        ax.add_patch(Rectangle((b.x, b.y), b.w, b.h, fill=False, edgecolor=FRAME, linewidth=0.5))
    for text in layout.texts:
        ax.text(text.x, text.y, text.text, fontsize=text.size, fontweight=text.weight, va="top", ha="left")
    for panel in layout.panels:
        b = panel.box
        if panel.image is None:
            ax.add_patch(Rectangle((b.x, b.y), b.w, b.h, facecolor=GAP_FILL, edgecolor=FRAME, hatch="///",
                                   linewidth=0.5))
            ax.text(b.x + b.w / 2, b.y + b.h / 2, "missing", fontsize=panel.label_pt, ha="center", va="center",
                    color="#404040", bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.0})
        else:
            ax.imshow(_load(panel.image, b.w, dpi), extent=(b.x, b.x + b.w, b.y + b.h, b.y), aspect="auto")
            ax.add_patch(Rectangle((b.x, b.y), b.w, b.h, fill=False, edgecolor=FRAME, linewidth=0.5))
        below = b.y + b.h + 0.02
        _line(ax, b.x + b.w / 2, below, panel.label, panel.label_pt)
        below += panel.label_pt * LINE / POINTS
        for line in (panel.caption or "").splitlines():
            _line(ax, b.x + b.w / 2, below, line, CAPTION_PT, color="#303030")
            below += CAPTION_PT * LINE / POINTS
    ax.set_xlim(0, layout.width)
    ax.set_ylim(layout.height, 0)
    return figure


def write_figure(layout: FigureLayout, path: str | Path, dpi: int = DEFAULT_DPI) -> Path:
    """Draw one layout to a .png (at `dpi`) or a one-page .pdf (vector text, images at `dpi`), atomically."""
    import matplotlib

    path = Path(path)
    fmt = output_format(path)
    with matplotlib.rc_context(RC):
        figure = draw(layout, dpi)
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format=fmt, dpi=dpi, metadata=PNG_METADATA if fmt == "png" else PDF_METADATA)
    return path


def write_combined_pdf(layouts: list[FigureLayout], path: str | Path, dpi: int = DEFAULT_DPI) -> Path:
    """Every layout as one page of a single PDF, atomically."""
    import matplotlib
    from matplotlib.backends.backend_pdf import PdfPages

    path = Path(path)
    if output_format(path) != "pdf":
        raise UserError(f"{path}: a combined figure file must be a .pdf")
    with matplotlib.rc_context(RC), atomic_path(path) as tmp:
        with PdfPages(tmp, metadata=PDF_METADATA) as pdf:
            for layout in layouts:
                pdf.savefig(draw(layout, dpi), dpi=dpi)
    return path


# ----------------------------------------------------------------------------------------------- whole jobs


@dataclass
class Made:
    """A figure that was written, with its layout (for the gaps) and path."""

    layout: FigureLayout
    path: Path


def make_figures(run: Run, spec_file: SpecFile, dpi: int | None = None,
                 elsewhere: str | None = OUTPUT_FLAG) -> tuple[list[Made], Path | None]:
    """Lay out and write every figure of a spec (and its combined PDF); `dpi` overrides every dpi in it. A folder
    that cannot be written is one line (`stop_on_write_errors`) telling how to write `elsewhere`."""
    layouts = [layout_figure(run, spec) for spec in spec_file.figures]  # every user error before any file
    made = []
    for spec, layout in zip(spec_file.figures, layouts):
        path = figure_path(run, spec, spec_file.format)
        with stop_on_write_errors(path.parent, elsewhere, resumable=False):
            made.append(Made(layout, write_figure(layout, path, dpi or spec.dpi or spec_file.dpi)))
    combined = combined_path(run, spec_file)
    if combined:
        with stop_on_write_errors(combined.parent, elsewhere, resumable=False):
            write_combined_pdf([m.layout for m in made], combined, dpi or spec_file.dpi)
    return made, combined


# ----------------------------------------------------------------------------------------------- command line

SPEC_OUTPUT = "set the spec's output: to"  # how a figure spec's figures are written elsewhere
KIND_OPTIONS = {"sheet": {"channels", "mode", "examples"}, "progression": {"photo", "layers"},
                "panel": {"mode", "captions"}, "map": {"grid"}, "spec": set(), "circuit": {"mode"}, "weights": set()}
FIGURE_OPTIONS = {"channels", "mode", "photo", "layers", "captions", "columns", "title", "output", "examples",
                  "grid"}


def command_kind(args: Any) -> str:
    """Which figure the command line asks for; options that belong to another kind are a user error."""
    kind = ("sheet" if args.sheet else "progression" if args.progression else "panel" if args.panel
            else "map" if getattr(args, "map", None) else "circuit" if getattr(args, "circuit", None)
            else "weights" if getattr(args, "weights", None) else "spec")
    allowed = KIND_OPTIONS[kind] | ({"columns", "title", "output"} if kind != "spec" else set())
    stray = sorted(o for o in FIGURE_OPTIONS - allowed if getattr(args, o) is not None)
    if stray:
        hint = "set it in the spec file" if kind == "spec" else f"--{kind} takes {', '.join(sorted(allowed))}"
        raise UserError(f"--{stray[0]} does not apply to --{kind} ({hint})")
    return kind


def spec_from_args(run: Run, args: Any, kind: str) -> SpecFile:
    """The one figure a command line asks for, as a spec; `-o` is relative to the current folder."""
    data: dict[str, Any] = {"kind": kind, "title": args.title, "columns": args.columns, "dpi": args.dpi}
    if kind == "sheet":
        data.update(layer=args.sheet, channels=args.channels, mode=args.mode, examples=args.examples)
    elif kind == "map":
        data.update(layer=args.map, grid=args.grid)
    elif kind == "progression":
        layers = [n.strip() for n in args.layers.split(",") if n.strip()] if args.layers else None
        data.update(photo=args.photo, layers=layers)
    else:
        data.update(items=[i.model_dump() for i in parse_items(args.panel, args.captions)], mode=args.mode)
    if args.output:
        output_format(args.output)
        data["output"] = str(Path(args.output).expanduser().resolve())
    data = {k: v for k, v in data.items() if v is not None}
    spec = validate(FigureSpec, {"name": "figure", **data}, "atlas figure")
    return SpecFile(figures=[spec.model_copy(update={"name": default_name(run, spec)})])


def figure_job(run: Run, args: Any) -> tuple[list[Made], Path | None]:
    """Everything `atlas figure` does short of printing: parse, lay out, write."""
    kind = command_kind(args)
    if kind in ("circuit", "weights"):
        return [circuit_figure(run, args, kind)], None
    spec_file = load_spec(args.spec) if kind == "spec" else spec_from_args(run, args, kind)
    return make_figures(run, spec_file, args.dpi, SPEC_OUTPUT if kind == "spec" else OUTPUT_FLAG)


def circuit_figure(run: Run, args: Any, kind: str) -> Made:
    """`--circuit LAYER:CHANNEL` or `--weights LAYER`: lay out and write one figure."""
    if kind == "circuit":
        try:
            item = parse_items(args.circuit)
        except UserError:
            item = []
        if len(item) != 1:
            raise UserError(f"--circuit takes one layer:channel, e.g. mixed4b_5x5_pre_relu:27, not '{args.circuit}'")
        layer = run.layer(item[0].layer).name
        mode = find_mode(run, args.mode)
        name = f"circuit-{layer}-{item[0].channel:04d}-{mode.id}"
        layout = circuit_layout(run, layer, item[0].channel, mode, name, args.title)
    else:
        layer = run.layer(args.weights).name
        layout = weights_layout(run, layer, f"weights-{layer}", args.columns, args.title)
    path = Path(args.output).expanduser() if args.output else run.folder / FIGURES_DIR / f"{layout.name}.png"
    with stop_on_write_errors(path.parent, OUTPUT_FLAG, resumable=False):
        return Made(layout, write_figure(layout, path, args.dpi or DEFAULT_DPI))
