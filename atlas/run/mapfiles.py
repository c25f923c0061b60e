"""The files of activation atlases in a run folder, read as plain data (no TensorFlow): for the site and figures.

    maps/<layer>/cells.json        the map: its samples, layout settings and, per cell, its zoom level, grid
                                   position, sample count, direction (a .npy path relative to this file), render
                                   (relative to the run folder), top channels and photo crops
    maps/<layer>/layout.npy        float32 [samples, 2]: UMAP's 2-D position of each sample
    maps/<layer>/where.npy         int32 [samples, 3]: photo index (into photos.json), row, col of each sample
    maps/<layer>/photos.json       the photos of those indices, as fitted to the network (PhotoRecord, no thumb)
    maps/<layer>/assign-<N>.npy    int32 [samples]: the cell (row * N + col) of each sample on the N x N grid
    maps/<layer>/whitening.npy     float32 [C, C]: the inverse of the activations' second-moment matrix
    maps/<layer>/directions/<N>/<row>-<col>.npy   float32 [C]: a cell's direction, the mean of its samples
    maps/<layer>/cells/<N>/<row>-<col>.png         a cell's render (the `map` mode of the manifest)
    maps/<layer>/crops/<sha12>-<row>-<col>.jpg     the patch a sampled position sees in its photo
    maps/skipped.txt                files the last sampling pass could not read, with the reason
    maps/.samples/                  the sampling pass's activations (float16 chunks) and resume state
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from atlas.errors import UserError

MAPS_DIR = "maps"
CELLS_FILE = "cells.json"
SAMPLES_DIR = f"{MAPS_DIR}/.samples"
MAP_SKIPPED_FILE = f"{MAPS_DIR}/skipped.txt"


def map_dir(layer: str) -> str:
    """A layer's map folder, relative to the run folder."""
    return f"{MAPS_DIR}/{layer}"


def cell_leaf(grid: int, row: int, col: int) -> str:
    return f"{grid}/{row:03d}-{col:03d}"


@dataclass(frozen=True)
class MapCell:
    """One kept cell of one zoom level."""

    zoom: int  # 0 = the coarsest grid
    grid: int  # cells a side
    row: int
    col: int
    count: int  # samples in the cell
    direction: str  # .npy path relative to cells.json
    render: str  # PNG path relative to the run folder (present once rendered)
    channels: list[dict[str, Any]] = field(default_factory=list)  # {layer, channel, source, weight}, heaviest first
    photos: list[dict[str, Any]] = field(default_factory=list)  # {photo, row, col, crop}

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.grid, self.row, self.col)

    def to_dict(self) -> dict[str, Any]:
        return {"zoom": self.zoom, "grid": self.grid, "row": self.row, "col": self.col, "count": self.count,
                "direction": self.direction, "render": self.render, "channels": self.channels,
                "photos": self.photos}


@dataclass(frozen=True)
class MapData:
    """A layer's map as cells.json records it."""

    layer: str
    info: dict[str, Any]  # everything in cells.json but the cells
    cells: list[MapCell]

    @property
    def grids(self) -> list[int]:
        return list(self.info["grids"])

    def level(self, grid: int) -> list[MapCell]:
        return [c for c in self.cells if c.grid == grid]


def map_layers(run_folder: str | Path) -> list[str]:
    """Layers with a map in the run folder, in the order they were asked for (else by name)."""
    root = Path(run_folder) / MAPS_DIR
    found = sorted(p.parent.name for p in root.glob(f"*/{CELLS_FILE}")) if root.is_dir() else []
    order = {}
    if (root / "order.json").is_file():
        order = {name: i for i, name in enumerate(json.loads((root / "order.json").read_text(encoding="utf-8")))}
    return sorted(found, key=lambda name: (order.get(name, len(order)), name))


def read_map(run_folder: str | Path, layer: str) -> MapData:
    """A layer's cells.json; a UserError names the fix when the run has no map of that layer."""
    path = Path(run_folder) / map_dir(layer) / CELLS_FILE
    if not path.is_file():
        have = map_layers(run_folder)
        raise UserError(f"{run_folder} has no map of {layer} ("
                        + (f"maps: {', '.join(have)}" if have else "no maps yet")
                        + f"); make one with `atlas map FOLDER -o {run_folder} --layer {layer}`")
    data = json.loads(path.read_text(encoding="utf-8"))
    cells = [MapCell(**cell) for cell in data.pop("cells")]
    return MapData(layer=layer, info=data, cells=cells)


def cell_direction(run_folder: str | Path, layer: str, cell: MapCell) -> np.ndarray:
    """A cell's direction vector (float32 [C])."""
    return np.load(Path(run_folder) / map_dir(layer) / cell.direction)
