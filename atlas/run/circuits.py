"""The circuits pass: every catalogued layer's direct and expanded weights, into the run folder (resumable).

Layout, keyed by the model's sha256 (other weights never mix in):

    circuits/<sha256>/index.json      the top N, and per done layer and kind: source node, window, source units
    circuits/<sha256>/<layer>.npz     per kind (direct_, expanded_):
        norm, sum        [targets, sources]  float32  every pair (the layer view's matrix)
        in_index         [targets, 2N]       int32    top N excitatory then N inhibitory sources (-1: none)
        in_kernel        [targets, 2N, W, W] float32
        out_index        [sources, 2N]       int32    per source, the targets of this layer it feeds most
        out_kernel       [sources, 2N, W, W] float32
        full             [targets, sources, W, W]     every kernel, only when that is small (FULL_LIMIT)

Each layer file is written atomically once its layer is done, then the index; a killed pass resumes at the
first layer without a file of the same top N. A unit's outputs are merged at read time from the `out_` lists of
every layer that reads it, so each list is exact: the strongest N of each sign over all later layers.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from atlas.atomic import atomic_write_bytes, atomic_write_text
from atlas.model.circuits import KINDS, Edge, Source, edge_source, expanded_weights, ranked_edges, top_edges

CIRCUITS_DIR = "circuits"
INDEX_FILE = "index.json"
FORMAT = 1
FULL_LIMIT = 1 << 16  # kernels kept in full when a layer has at most this many weights (e.g. conv2d0: 9,408)


@dataclass(frozen=True)
class CircuitsPlan:
    """What the circuits pass does, resolved once from the config's `circuits:`."""

    top: int = 10
    batch_size: int = 32
    layers: tuple[str, ...] | None = None  # None: every catalogued layer (a unit's outputs need the later ones)


def circuits_folder(run_folder: str | Path, model_sha: str) -> Path:
    return Path(run_folder) / CIRCUITS_DIR / model_sha


def _segments(units: tuple[tuple[str, int], ...]) -> list[list[Any]]:
    """Source units as [layer, first channel, count] runs (a concat's branches, in order)."""
    runs: list[list[Any]] = []
    for layer, channel in units:
        if runs and runs[-1][0] == layer and runs[-1][1] + runs[-1][2] == channel:
            runs[-1][2] += 1
        else:
            runs.append([layer, channel, 1])
    return runs


def _units(segments: list[list[Any]]) -> list[tuple[str, int]]:
    return [(layer, first + i) for layer, first, count in segments for i in range(count)]


def _column_top(norms: np.ndarray, sums: np.ndarray, top: int) -> np.ndarray:
    return top_edges(norms.T, sums.T, top)


def layer_arrays(kernels: np.ndarray, top: int) -> dict[str, np.ndarray]:
    """The stored arrays of one kind of one layer from all its kernels [targets, sources, W, W]."""
    norms = np.sqrt(np.square(kernels.astype(np.float64)).sum(axis=(2, 3))).astype(np.float32)
    sums = kernels.astype(np.float64).sum(axis=(2, 3)).astype(np.float32)
    into, out = top_edges(norms, sums, top), _column_top(norms, sums, top)
    rows = np.arange(kernels.shape[0])[:, None]
    cols = np.arange(kernels.shape[1])[:, None]
    arrays = {"norm": norms, "sum": sums, "in_index": into, "out_index": out,
              "in_kernel": np.where((into >= 0)[..., None, None], kernels[rows, np.maximum(into, 0)], 0),
              "out_kernel": np.where((out >= 0)[..., None, None],
                                     kernels[np.maximum(out, 0), cols].astype(np.float32), 0)}
    if kernels.size <= FULL_LIMIT:
        arrays["full"] = kernels
    return {k: v.astype(np.int32 if "index" in k else np.float32) for k, v in arrays.items()}


def _source_meta(source: Source) -> dict[str, Any]:
    return {"node": source.node, "window": source.window, "units": _segments(source.units)}


@dataclass
class CircuitsSummary:
    computed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    folder: Path | None = None

    def lines(self) -> list[str]:
        return [f"circuits: {len(self.computed)} layers computed, {len(self.kept)} already done, in {self.folder}"]


def _read_index(folder: Path) -> dict[str, Any]:
    path = folder / INDEX_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def open_index(folder: Path, model_sha: str, top: int) -> dict[str, Any]:
    """The folder's index, or a new empty one when it holds another top N or format (everything is redone)."""
    index = _read_index(folder)
    if index.get("top") != top or index.get("format") != FORMAT:
        index = {"format": FORMAT, "model_sha256": model_sha, "top": top, "layers": {}}
    return index


def write_layer(folder: Path, index: dict[str, Any], layer: str, kernels: dict[str, tuple[Source, np.ndarray]]
                ) -> None:
    """Store one layer (kind -> its source and all its kernels): its file atomically, then the index."""
    arrays, meta = {}, {}
    for kind, (source, all_kernels) in kernels.items():
        arrays.update({f"{kind}_{k}": v for k, v in layer_arrays(all_kernels, index["top"]).items()})
        meta[kind] = _source_meta(source)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(folder / f"{layer}.npz", buffer.getvalue())
    index["layers"][layer] = meta
    atomic_write_text(folder / INDEX_FILE, json.dumps(index, indent=1, sort_keys=True) + "\n")


def run_circuits(plan: CircuitsPlan, run_folder: str | Path, model: Any, progress: bool = True) -> CircuitsSummary:
    """Compute and store every layer's circuits; layers already stored with the same top N are kept."""
    from tqdm import tqdm

    folder = circuits_folder(run_folder, model.sha256)
    index = open_index(folder, model.sha256, plan.top)
    layers = [model.layer(name) for name in plan.layers] if plan.layers else model.layers
    summary = CircuitsSummary(folder=folder)
    todo = [layer for layer in layers
            if not (layer.name in index["layers"] and (folder / f"{layer.name}.npz").is_file())]
    summary.kept = [layer.name for layer in layers if layer not in todo]
    total = sum(layer.channels for layer in todo) * len(KINDS)
    with tqdm(total=total, disable=None if progress else True, desc="atlas: circuits", unit="unit") as bar:
        for layer in todo:
            kernels = {}
            for kind in KINDS:
                weights = expanded_weights(model, layer.name, None, kind, plan.batch_size, progress=bar.update)
                kernels[kind] = (weights.source, weights.kernels)
            write_layer(folder, index, layer.name, kernels)
            summary.computed.append(layer.name)
    return summary


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
    index = _read_index(folder)
    if index.get("format") != FORMAT or not index.get("layers"):
        return None
    return Circuits(folder=folder, top=int(index["top"]), sources=index["layers"])


def source_of(model: Any, layer: str, kind: str = "expanded") -> Source:
    """The live source of a layer's edges (for callers that hold the model)."""
    return edge_source(model, layer, kind)
