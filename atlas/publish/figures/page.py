"""The page of a figure as plain data (`FigureLayout`: boxes in inches, image paths, texts, patches, links) and the
helpers every kind lays out with: grids of labelled squares, fitted labels, captions, facts and footers."""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from atlas.errors import UserError
from atlas.model.catalogue import AnyLayer, BlockOutput
from atlas.model.selection import WHOLE_LAYER, format_channels
from atlas.run.manifest import NOISE, Mode, Render, Run

FIGURES_DIR = "figures"
DEFAULT_DPI = 200
FORMATS = ("png", "pdf")

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
HEAT_POSITIVE, HEAT_NEGATIVE, HEAT_ALPHA = (0.84, 0.15, 0.16), (0.12, 0.34, 0.71), 0.9  # red, blue; opacity at +-1


class ItemSpec(BaseModel):
    """One hand-picked channel of a panel."""

    model_config = ConfigDict(extra="forbid")
    layer: str
    channel: int = Field(ge=0)
    caption: str | None = None
    mode: str | None = None  # overrides the figure's mode for this item


def has_format(path: str | Path) -> bool:
    return Path(path).suffix.lower().lstrip(".") in FORMATS


def output_format(path: str | Path) -> str:
    """'png' or 'pdf' from a file name's suffix; anything else is a user error."""
    if not has_format(path):
        raise UserError(f"{path}: a figure is written as .png or .pdf; change the file name's suffix")
    return Path(path).suffix.lower().lstrip(".")


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
    align: str = "left"  # where x is: the text's left end, "center" or "right"


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
class Overlay:
    """A photo in a box with, over it, an optional heatmap of a layer's positions (red positive, blue negative,
    each on +-`scale`, shown cell by cell), the layer's grid lines and numbered marks on some of its cells."""

    box: Box
    photo: Path | None  # None or a missing file: a grey square
    values: Any = None  # numpy array [H, W], or None: the photo alone
    scale: float = 1.0
    grid: tuple[int, int] | None = None  # (rows, columns) of grid lines to draw over the photo
    marks: tuple[tuple[int, int, str], ...] = ()  # (row, column, text): cells outlined and numbered
    mark_pt: float = 7.0
    key: tuple[str, str, int] | None = None  # what it shows, e.g. ("spatial", layer, class index), for tests

    def rgba(self) -> Any:
        """The heatmap's colours [H, W, 4] in 0..1, as drawn over the photo: opaque where strongest."""
        import numpy as np

        t = np.clip(self.values / self.scale, -1, 1) if self.scale > 0 else np.zeros_like(self.values)
        rgba = np.zeros((*t.shape, 4))
        rgba[..., :3] = np.where(t[..., None] >= 0, HEAT_POSITIVE, HEAT_NEGATIVE)
        rgba[..., 3] = np.abs(t) * HEAT_ALPHA
        return rgba


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
    overlays: list[Overlay] = field(default_factory=list)  # photos with heatmaps or grids (explain)

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
    """A mode by id (`noise`, `fourier`, `photo-chelsea`) or photo name (`chelsea`); None means the run's first
    noise-started mode (`noise`, or `fourier` in a run of that method alone), else its first mode."""
    if text is None:
        started = [mode for mode in run.modes if mode.kind == NOISE] or run.modes
        text = started[0].id if started else NOISE
    text = str(text).strip()
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


def layer_facts(run: Run, layer: AnyLayer) -> str:
    """One line of a layer's facts under a figure's title (a block output's: its merge for a conv's kernel)."""
    if isinstance(layer, BlockOutput):
        return (f"block {layer.block} · block output {layer.index + 1} of {len(run.blocks)} ({layer.kind}) · "
                f"{layer.channels} channels · depth {layer.depth} · receptive field {layer.receptive_field} px")
    return (f"block {layer.block} · layer {layer.index + 1} of {len(run.layers)} · {layer.channels} channels · "
            f"{layer.kernel}×{layer.kernel_w} kernel, stride {layer.stride} · depth {layer.depth} · "
            f"receptive field {layer.receptive_field} px")


def footer_text(run: Run, modes: list[Mode]) -> str:
    """Run, model and the credit of every photo shown."""
    credits = [f"photo '{m.photo}': {m.credit}" for m in modes if m.kind != NOISE and m.credit]
    return " · ".join([f"atlas run '{run.name}'", f"model {run.model.get('spec', '?')}", *credits])


def fit_lines(lines: list[str], width: float, size: float) -> list[str]:
    """Lines wrapped to `width` inches at `size` points (by the generous average glyph width)."""
    chars = max(10, int(width / (size * CHAR_EM / POINTS)))
    return [part for line in lines for part in textwrap.wrap(line, chars)]
