"""The circuits pass: every catalogued layer's direct and expanded weights, into the run folder (resumable).

A pass over the model, not over photos; it writes the files `atlas.run.circuits` describes and reads. Each layer
file is written atomically once its layer is done, then the index; a killed pass resumes at the first layer
without a file of the same top N.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from atlas.atomic import atomic_write_bytes, atomic_write_text
from atlas.model.circuits import KINDS, Source, expanded_weights, top_edges
from atlas.run.circuits import FORMAT, INDEX_FILE, circuits_folder, read_index, segments
from atlas.run.plans import CircuitsPlan

FULL_LIMIT = 1 << 16  # kernels kept in full when a layer has at most this many weights (e.g. conv2d0: 9,408)


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
    return {"node": source.node, "name": source.name or source.node, "window": source.window,
            "units": segments(source.units), "sums": list(source.sums)}


@dataclass
class CircuitsSummary:
    computed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    folder: Path | None = None

    def lines(self) -> list[str]:
        return [f"circuits: {len(self.computed)} layers computed, {len(self.kept)} already done, in {self.folder}"]


def open_index(folder: Path, model_sha: str, top: int) -> dict[str, Any]:
    """The folder's index, or a new empty one when it holds another top N or format (everything is redone)."""
    index = read_index(folder)
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
