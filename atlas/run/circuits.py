"""A run folder's circuits, read as plain data (no TensorFlow) for the gallery, the figures and the command line;
`atlas.analysis.circuits` computes and writes them.

Layout, keyed by the model's sha256 (other weights never mix in):

    circuits/<sha256>/index.json      the top N, and per done layer and kind: source node, window, source units
    circuits/<sha256>/<layer>.npz     per kind (direct_, expanded_):
        norm, sum        [targets, sources]  float32  every pair (the layer view's matrix)
        in_index         [targets, 2N]       int32    top N excitatory then N inhibitory sources (-1: none)
        in_kernel        [targets, 2N, W, W] float32
        out_index        [sources, 2N]       int32    per source, the targets of this layer it feeds most
        out_kernel       [sources, 2N, W, W] float32
        full             [targets, sources, W, W]     every kernel, only when that is small (FULL_LIMIT of the pass)

Each layer file is written atomically once its layer is done, then the index; a killed pass resumes at the
first layer without a file of the same top N. A unit's outputs are merged at read time from the `out_` lists of
every layer that reads it, so each list is exact: the strongest N of each sign over all later layers."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from atlas.model.circuits import Edge, ranked_edges

CIRCUITS_DIR = "circuits"
INDEX_FILE = "index.json"
FORMAT = 1


def circuits_folder(run_folder: str | Path, model_sha: str) -> Path:
    return Path(run_folder) / CIRCUITS_DIR / model_sha


def segments(units: tuple[tuple[str, int], ...]) -> list[list[Any]]:
    """Source units as [layer, first channel, count] runs (a concat's branches, in order)."""
    runs: list[list[Any]] = []
    for layer, channel in units:
        if runs and runs[-1][0] == layer and runs[-1][1] + runs[-1][2] == channel:
            runs[-1][2] += 1
        else:
            runs.append([layer, channel, 1])
    return runs


def _units(runs: list[list[Any]]) -> list[tuple[str, int]]:
    return [(layer, first + i) for layer, first, count in runs for i in range(count)]


def read_index(folder: str | Path) -> dict[str, Any]:
    """A circuits folder's index.json ({} when there is none)."""
    path = Path(folder) / INDEX_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


# ---------------------------------------------------------------------------------------------------------
# Reading (plain data for the gallery, the figures and the command line)


@dataclass
class Circuits:
    """A run's stored circuits for one model: per layer and kind, the source units and the stored arrays."""

    folder: Path
    top: int
    sources: dict[str, dict[str, dict[str, Any]]]  # layer -> kind -> {node, window, units}
    _arrays: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)
    _units: dict[tuple[str, str], list[tuple[str, int]]] = field(default_factory=dict, repr=False)
    _positions: dict[tuple[str, str], dict[tuple[str, int], int]] = field(default_factory=dict, repr=False)

    def has(self, layer: str) -> bool:
        return layer in self.sources

    def arrays(self, layer: str) -> dict[str, np.ndarray]:
        """All arrays of a layer's file (loaded once)."""
        if layer not in self._arrays:
            with np.load(self.folder / f"{layer}.npz") as data:
                self._arrays[layer] = {k: data[k] for k in data.files}
        return self._arrays[layer]

    def source_units(self, layer: str, kind: str = "expanded") -> list[tuple[str, int]]:
        key = (layer, kind)
        if key not in self._units:
            self._units[key] = _units(self.sources[layer][kind]["units"])
        return self._units[key]

    def position(self, layer: str, unit: tuple[str, int], kind: str = "expanded") -> int:
        """Which source of `layer` a unit is (a dict per layer, built once)."""
        key = (layer, kind)
        if key not in self._positions:
            self._positions[key] = {u: i for i, u in enumerate(self.source_units(layer, kind))}
        return self._positions[key][unit]

    def matrix(self, layer: str, kind: str = "expanded") -> tuple[np.ndarray, np.ndarray]:
        """(norms, sums) of every pair, [targets, sources]."""
        arrays = self.arrays(layer)
        return arrays[f"{kind}_norm"], arrays[f"{kind}_sum"]

    def full(self, layer: str, kind: str = "expanded") -> np.ndarray | None:
        """Every kernel of a layer [targets, sources, W, W], where the pass kept them all."""
        return self.arrays(layer).get(f"{kind}_full")

    def inputs(self, layer: str, channel: int, kind: str = "expanded") -> list[Edge]:
        """A unit's strongest inputs: up to `top` excitatory, then up to `top` inhibitory."""
        if not self.has(layer):
            return []
        arrays, units = self.arrays(layer), self.source_units(layer, kind)
        norms, sums = self.matrix(layer, kind)
        return [Edge(*units[s], float(norms[channel, s]), float(sums[channel, s]), kernel)
                for s, kernel in zip(arrays[f"{kind}_in_index"][channel], arrays[f"{kind}_in_kernel"][channel])
                if s >= 0]

    def readers(self, layer: str, kind: str = "expanded") -> list[str]:
        """The stored layers whose `kind` sources include units of `layer`."""
        return [target for target in self.sources if any(seg[0] == layer for seg in self.sources[target][kind]
                                                         ["units"])]

    def outputs(self, layer: str, channel: int, kind: str = "expanded") -> list[Edge]:
        """The units a unit feeds most, over every later layer: up to `top` of each sign."""
        units, kernels = [], []
        for target in self.readers(layer, kind):
            s = self.position(target, (layer, channel), kind)
            arrays = self.arrays(target)
            for t, kernel in zip(arrays[f"{kind}_out_index"][s], arrays[f"{kind}_out_kernel"][s]):
                if t >= 0:
                    units.append((target, int(t)))
                    kernels.append(kernel)
        return ranked_edges(units, kernels, self.top)


def read_circuits(run_folder: str | Path, model_sha: str) -> Circuits | None:
    """The circuits a run holds for these weights, or None when it has none."""
    folder = circuits_folder(run_folder, model_sha)
    index = read_index(folder)
    if index.get("format") != FORMAT or not index.get("layers"):
        return None
    return Circuits(folder=folder, top=int(index["top"]), sources=index["layers"])

