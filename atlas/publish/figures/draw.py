"""Drawing: a `FigureLayout` to a PNG or a one-page PDF, or several to one PDF, with matplotlib (Agg, DejaVu Sans
bundled with it), atomically. matplotlib is imported only when a figure is drawn."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from atlas.atomic import atomic_path
from atlas.errors import UserError
from atlas.publish.figures.page import (ASCENT, CAPTION_PT, DEFAULT_DPI, LINE, POINTS, FigureLayout, Overlay,
                                        output_format)

RC = {"font.family": "DejaVu Sans", "pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none",
      "text.color": "black", "hatch.color": "#9a9a9a", "hatch.linewidth": 0.5, "image.interpolation": "none"}
FRAME = "#808080"
EXCITE, INHIBIT = "#d62728", "#1f57b4"
GAP_FILL = "#f0f0f0"
WASH = 0.45  # a white veil over a photo under a heatmap, so the heat shows in print
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


def _overlay(ax: Any, overlay: Overlay, dpi: int) -> None:
    """A photo, then its heatmap cell by cell over a white veil, its grid lines and its numbered cells."""
    from matplotlib.patches import Rectangle

    b = overlay.box
    extent = (b.x, b.x + b.w, b.y + b.h, b.y)
    if overlay.photo is not None and overlay.photo.is_file():
        ax.imshow(_load(overlay.photo, b.w, dpi), extent=extent, aspect="auto")
    else:
        ax.add_patch(Rectangle((b.x, b.y), b.w, b.h, facecolor=GAP_FILL, edgecolor="none"))
    if overlay.values is not None:
        ax.add_patch(Rectangle((b.x, b.y), b.w, b.h, facecolor="white", edgecolor="none", alpha=WASH))
        ax.imshow(overlay.rgba(), extent=extent, aspect="auto", interpolation="nearest")
    if overlay.grid:
        rows, cols = overlay.grid
        ax.hlines([b.y + i * b.h / rows for i in range(1, rows)], b.x, b.x + b.w, colors="white", linewidth=0.3,
                  alpha=0.8)
        ax.vlines([b.x + j * b.w / cols for j in range(1, cols)], b.y, b.y + b.h, colors="white", linewidth=0.3,
                  alpha=0.8)
    for row, col, text in overlay.marks:
        rows, cols = overlay.grid or (1, 1)
        w, h = b.w / cols, b.h / rows
        x, y = b.x + col * w, b.y + row * h
        ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="black", linewidth=1.4))
        ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="white", linewidth=0.5))
        ax.text(x + w / 2, y + h / 2, text, fontsize=overlay.mark_pt, fontweight="bold", ha="center", va="center",
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 0.6})
    ax.add_patch(Rectangle((b.x, b.y), b.w, b.h, fill=False, edgecolor=FRAME, linewidth=0.5))


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
    for overlay in layout.overlays:
        _overlay(ax, overlay, dpi)
    for text in layout.texts:
        ax.text(text.x, text.y, text.text, fontsize=text.size, fontweight=text.weight, va="top", ha=text.align)
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
