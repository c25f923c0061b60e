"""What the gallery shows of a run's circuits: a unit's edges with their kernels drawn as small heatmaps,
and a block-to-block matrix of norms as a palette PNG (read from `atlas.run.circuits`, plain data)."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from markupsafe import Markup

from atlas.model.circuits import INPUT, RGB, Edge
from atlas.run.circuits import Circuits

KIND = "expanded"  # what the pages show (atlas weights --kind direct gives the other)
CELL = 6  # px per kernel cell
MATRIX_DIR = "circuits"


def diverging(value: float, scale: float) -> tuple[int, int, int]:
    """Red for positive, blue for negative, white for zero; linear in value / scale, clipped at +-1."""
    t = max(-1.0, min(1.0, value / scale)) if scale > 0 else 0.0
    fade = round(255 * (1 - abs(t)))
    return (255, fade, fade) if t >= 0 else (fade, fade, 255)


def diverging_pixels(kernel: np.ndarray, scale: float) -> np.ndarray:
    """`diverging` of every weight of a kernel at once: uint8 RGB [h, w, 3]."""
    t = np.clip(kernel / scale, -1.0, 1.0) if scale > 0 else np.zeros(kernel.shape)
    fade = np.round(255 * (1 - np.abs(t))).astype(np.uint8)
    full = np.full(kernel.shape, 255, np.uint8)
    return np.stack([np.where(t >= 0, full, fade), fade, np.where(t >= 0, fade, full)], axis=-1)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def rgb_png(pixels: np.ndarray) -> bytes:
    """A tiny uint8 RGB [h, w, 3] image as PNG bytes: the format's three chunks, unfiltered rows, zlib.

    Written here rather than with Pillow, which the rest of atlas uses, because Pillow's fixed cost per image
    (about 0.25 ms, against 0.02 ms here) was half the gallery's build time: the demo's channel pages hold 30,000
    of these kernels (tests/test_images.py decodes them with Pillow, tests/test_site_browser.py in Chromium)."""
    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + row.tobytes() for row in np.ascontiguousarray(pixels, np.uint8))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(rows, 1))
            + _png_chunk(b"IEND", b""))


def kernel_png(kernel: np.ndarray, scale: float) -> bytes:
    """A W x W kernel as a W x W pixel PNG in the diverging colours (shown enlarged, pixelated)."""
    return rgb_png(diverging_pixels(np.asarray(kernel, np.float64), scale))


def kernel_img(kernel: np.ndarray, scale: float, label: str) -> Markup:
    """A kernel as an inline image (a data: URI of a tiny PNG: about 10x smaller than one SVG cell per weight,
    which matters over 7,548 pages of up to 40 kernels each)."""
    h, w = kernel.shape
    data = base64.b64encode(kernel_png(kernel, scale)).decode()
    return Markup(f'<img class="kernel" src="data:image/png;base64,{data}" width="{w * CELL}" height="{h * CELL}" '
                  f'data-scale="{scale:.9g}" alt="{Markup.escape(label)}">')


@dataclass
class EdgeView:
    """One edge as a channel page shows it."""

    edge: Edge
    svg: Markup
    href: str | None  # the unit's page, or its layer page at it, from the site root; None: the site shows neither
    rendered: bool = True  # False for a residual sum's channel (`conv2_block1_out:5`): no layer renders it

    @property
    def label(self) -> str:
        if self.edge.layer == INPUT:
            return f"input {RGB[self.edge.channel]}" if self.edge.channel < 3 else f"input {self.edge.channel}"
        return f"{self.edge.layer}:{self.edge.channel}"

    @property
    def colour(self) -> str:
        """The swatch of an image channel (RGB input)."""
        return ["#d33", "#3a3", "#33d"][self.edge.channel % 3]


UnitLink = Callable[[str, int], "str | None"]  # (layer, channel) -> where a link to it leads, from the site root


def edge_views(edges: list[Edge], link: UnitLink, direction: str, sums: tuple[str, ...] = ()) -> list[EdgeView]:
    """Edges with their kernels drawn on one scale (the largest magnitude among them), so cells compare; units
    of the residual sums `sums` get no render panel."""
    scale = max((float(np.abs(e.kernel).max()) for e in edges), default=0.0)
    return [EdgeView(e, kernel_img(e.kernel, scale, f"{direction} kernel of {e.layer}:{e.channel}"),
                     link(e.layer, e.channel), e.layer not in sums) for e in edges]


def channel_circuit(circuits: Circuits | None, layer: str, channel: int, link: UnitLink) -> dict[str, Any] | None:
    """The inputs and outputs a channel page shows, or None when the run has no circuits for the layer."""
    if circuits is None or not circuits.has(layer):
        return None
    sums = tuple(circuits.sources[layer][KIND].get("sums", ()))
    return {"inputs": edge_views(circuits.inputs(layer, channel, KIND), link, "input", sums),
            "outputs": edge_views(circuits.outputs(layer, channel, KIND), link, "output"),
            "source": source_name(circuits.sources[layer][KIND]), "top": circuits.top}


def source_name(meta: dict[str, Any]) -> str:
    """A stored source as a user names it (a layer, a block output, `input`); its graph node in folders
    written before the pass stored names."""
    return meta.get("name") or meta["node"]


@dataclass
class Matrix:
    """A block-to-block matrix of norms: rows are the units of the layers reading one source, columns the
    source's units; drawn as a PNG, named on hover from the row and column runs."""

    source: str
    rows: list[list[Any]]  # [layer, channels] runs, top to bottom
    cols: list[list[Any]]  # [layer, first channel, count] runs, left to right
    png: bytes

    @property
    def rel(self) -> str:
        return f"{MATRIX_DIR}/{self.source.replace('/', '_')}.png"  # a graph node's scopes are not folders

    @property
    def shape(self) -> tuple[int, int]:
        return sum(count for _, count in self.rows), sum(run[2] for run in self.cols)

    @property
    def cell(self) -> int:
        """Screen pixels per matrix cell: at most 832 px wide, cells 1-8 px."""
        return max(1, min(8, 832 // max(self.shape[1], 1)))

    def span(self, layer: str) -> tuple[int, int]:
        """(first row, rows) of a layer."""
        first = 0
        for name, count in self.rows:
            if name == layer:
                return first, count
            first += count
        return 0, 0


def block_matrices(circuits: Circuits | None) -> dict[str, Matrix]:
    """Per stored layer, the matrix of its source (shared by the layers that read the same source)."""
    if circuits is None:
        return {}
    from PIL import Image

    by_source: dict[str, list[str]] = {}
    for layer in circuits.sources:
        by_source.setdefault(source_name(circuits.sources[layer][KIND]), []).append(layer)
    palette = [c for i in range(256) for c in diverging(i - 127.5, 127.5)]
    found = {}
    for source, layers in by_source.items():
        signed = np.concatenate([np.copysign(*circuits.matrix(layer, KIND)) for layer in layers])
        scale = float(np.abs(signed).max()) or 1.0
        index = np.clip(np.round(signed / scale * 127.5 + 127.5), 0, 255).astype(np.uint8)
        image = Image.frombytes("P", (index.shape[1], index.shape[0]), index.tobytes())
        image.putpalette(palette)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
        matrix = Matrix(source, [[layer, circuits.matrix(layer, KIND)[0].shape[0]] for layer in layers],
                        circuits.sources[layers[0]][KIND]["units"], buffer.getvalue())
        found.update({layer: matrix for layer in layers})
    return found
