"""Activation atlases: a layer's activations over many photos, laid out in 2-D, gridded, and each cell rendered.

Three steps, each resumable, writing the files `atlas.run.mapfiles` lists:

1. Sampling (`sample_photos`, `MapSampling`). One pass over the photos for every map layer (`Model.layers_fn`,
   the union subgraph), run as `atlas.analysis.passes` runs every photo pass. Each photo gives, per layer, the
   activation vectors at up to `per_photo` random positions of the layer's map away from its border (seeded by
   the photo's bytes and the layer), until every layer has `samples`. Vectors go to disk as float16 chunks at
   each checkpoint (at most CHECKPOINT_BYTES or CHECKPOINT_SECONDS of work is held), so memory stays bounded;
   a killed pass resumes after its last checkpoint.
2. Layout (`layout_layer`). UMAP (umap-learn) to 2-D with the published settings and a fixed seed; each axis is
   clipped to its 1st-99th percentiles and scaled to [0, 1]; an N x N grid per zoom level; cells with fewer than
   `min_samples` samples are dropped; a kept cell's direction is the mean of its samples. The whitening matrix
   is the inverse of the samples' second-moment matrix (as the Activation Atlas code computes it).
3. Rendering (`render_cells`). Each kept cell is rendered with the `direction` objective
   (`atlas.render.objectives.Direction`), by DeepDream or Fourier, many cells to a pass, seeded per cell,
   recorded in the manifest's `map_cells` table (the `map` mode) so that a rerun renders only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from atlas.analysis.passes import Checkpoint, PhotoPass, claimed_folder, process_photos
from atlas.analysis.photos import (
    Entry,
    Fitted,
    InputFit,
    list_photos,
    listing_digest,
    no_readable_photo,
    patch_box,
    photos_to_use,
    read_entry,
    skipped_line,
    work_copy,
    write_patch,
    write_skipped,
)
from atlas.atomic import SWEEP_OUTPUT, atomic_path, atomic_write_text, sync_folders
from atlas.errors import UserError
from atlas.model.catalogue import BlockOutput, Layer
from atlas.probes import PROBES
from atlas.run.manifest import MANIFEST_FILE, Manifest, MapCellRender, PhotoRecord
from atlas.run.mapfiles import (
    CELLS_FILE,
    MAP_SKIPPED_FILE,
    MAPS_DIR,
    SAMPLES_DIR,
    MapCell,
    cell_leaf,
    map_dir,
    map_layers,
    read_map,
)
from atlas.run.plans import CLIP_PERCENTILES, MAPS_FORMAT, MapPlan

CHECKPOINT_SECONDS = 60.0
CHECKPOINT_BYTES = 64 * 2**20  # float16 vectors held between checkpoints
TOP_CHANNELS = 6  # channels listed per cell
LOCK_FILE = ".maps.lock"


@dataclass
class MapSummary:
    """What a map pass did."""

    folder: str
    processed: int = 0  # photos read in this pass
    photos: int = 0  # photos the samples come from
    samples: dict[str, int] = field(default_factory=dict)  # layer -> samples
    cells: dict[str, int] = field(default_factory=dict)  # layer -> kept cells over every zoom level
    rendered: int = 0
    specific: dict[str, float] = field(default_factory=dict)  # layer -> share of specific cells
    bad: list[tuple[str, str]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # sampling, layout, rendering

    def lines(self) -> list[str]:
        head = (f"map: {self.processed:,} photos read, samples from {self.photos:,} photos: "
                + ", ".join(f"{layer} {n:,}" for layer, n in self.samples.items()))
        lines = [head]
        for layer, n in self.cells.items():
            lines.append(f"map: {layer}: {n:,} cells" + (f"; {self.specific[layer]:.0%} of their renders are specific "
                         "(excite their own direction more than any other cell's render does; a measure of the "
                         "renders, not a pass mark)" if layer in self.specific else ""))
        if self.rendered:
            lines.append(f"map: {self.rendered:,} cells rendered")
        if self.seconds:
            lines.append("map: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items()))
        if self.bad:
            lines.append(skipped_line("map", self.bad, MAP_SKIPPED_FILE))
        return lines


# ---------------------------------------------------------------------------------------------------------
# The whole pass


def run_map(plan: MapPlan, run_folder: str | Path, model: Any, progress: bool = True,
            stop_after: int | None = None, elsewhere: str | None = SWEEP_OUTPUT) -> MapSummary:
    """Sample, lay out and render every map layer of the plan into the run folder (resumable); a folder it cannot
    write is one line telling how to write `elsewhere`."""
    run_folder = Path(run_folder)
    for name in plan.layers:
        model.tensor_name(name)  # a mistyped layer is told before anything is read
    summary = MapSummary(folder=plan.folder)
    with claimed_folder(run_folder, model, "map", LOCK_FILE, elsewhere):
        began = time.perf_counter()
        state = sample_photos(plan, run_folder, model, summary, progress, stop_after)
        summary.seconds["sampling"] = time.perf_counter() - began
        if stop_after is not None and not state["complete"]:
            return summary
        began = time.perf_counter()
        for layer in plan.layers:
            layout_layer(plan, run_folder, model, layer, state)
        write_crops(plan, run_folder, model)
        atomic_write_text(run_folder / MAPS_DIR / "order.json", json.dumps(list(plan.layers)))
        summary.seconds["layout"] = time.perf_counter() - began
        for layer in plan.layers:
            summary.cells[layer] = len(read_map(run_folder, layer).cells)
        if plan.render_cells:
            began = time.perf_counter()
            for layer in plan.layers:
                summary.rendered += render_cells(plan, run_folder, model, layer, progress)
                summary.specific[layer] = specific_share(run_folder, layer)
            summary.seconds["rendering"] = time.perf_counter() - began
    return summary


# ---------------------------------------------------------------------------------------------------------
# 1. Sampling


def inner_positions(height: int, width: int) -> np.ndarray:
    """Flat indices (row * width + col) of a map's positions away from its border (one position in from each
    edge; every position of a map smaller than 5 a side)."""
    margin = 1 if min(height, width) >= 5 else 0
    rows, cols = np.meshgrid(np.arange(margin, height - margin), np.arange(margin, width - margin), indexing="ij")
    return (rows * width + cols).ravel()


def sample_positions(sha256: str, layer: str, seed: int, height: int, width: int, count: int) -> np.ndarray:
    """Up to `count` distinct inner positions of a photo's map, as [k, 2] (row, col), sorted: seeded by the photo's
    bytes, the layer and the seed, so that a photo gives the same samples in any batch or run."""
    layer_key = int(hashlib.sha256(layer.encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng([seed, int(sha256[:12], 16), layer_key])
    inner = inner_positions(height, width)
    chosen = np.sort(rng.choice(inner, size=min(count, len(inner)), replace=False))
    return np.stack([chosen // width, chosen % width], axis=1).astype(np.int32)


def _state_path(run_folder: Path) -> Path:
    return run_folder / SAMPLES_DIR / "state.json"


def _chunk_paths(run_folder: Path, layer: str, chunk: int) -> tuple[Path, Path]:
    base = run_folder / SAMPLES_DIR / layer / f"{chunk:05d}"
    return base.with_suffix(".vectors.npy"), base.with_suffix(".where.npy")


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, sync_folder=False) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)


def _load_state(run_folder: Path, hash_: str, layers: tuple[str, ...]) -> dict[str, Any]:
    path = _state_path(run_folder)
    if path.is_file():
        state = json.loads(path.read_text(encoding="utf-8"))
        if state.get("hash") == hash_:
            return state
    return {"hash": hash_, "photos": [], "chunks": 0, "counts": {layer: 0 for layer in layers}, "complete": False}


class MapSampling(PhotoPass):
    """The sampling pass: per photo and layer, the activation vectors at up to `per_photo` seeded inner positions,
    until every layer has `samples`; a checkpoint writes the vectors since the last one as float16 chunks, then
    the state (photos, chunks, counts)."""

    what = "map samples"

    def __init__(self, plan: MapPlan, run_folder: Path, model: Any, state: dict[str, Any]) -> None:
        self.plan, self.folder, self.state = plan, run_folder, state
        self.forward = model.layers_fn(plan.layers)
        self.buffers: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {layer: [] for layer in plan.layers}
        self.window: list[dict[str, Any]] = []  # photos since the last checkpoint
        self.bytes = 0
        self.checkpoint = Checkpoint(CHECKPOINT_SECONDS, CHECKPOINT_BYTES)

    def take(self, batch: list[Fitted]) -> None:
        plan, state = self.plan, self.state
        images = np.stack([f.pixels for f in batch])
        acts = [a.numpy() for a in self.forward(images)]
        for i, fitted in enumerate(batch):
            photo_id = len(state["photos"]) + len(self.window)
            self.window.append(_photo_record(fitted.record))
            for layer, act in zip(plan.layers, acts):
                need = plan.samples - state["counts"][layer]
                if need <= 0:
                    continue
                pos = sample_positions(fitted.record.sha256, layer, plan.seed, act.shape[1], act.shape[2],
                                       min(plan.per_photo, need))
                vectors = act[i, pos[:, 0], pos[:, 1]].astype(np.float16)
                where = np.column_stack([np.full(len(pos), photo_id, np.int32), pos])
                self.buffers[layer].append((vectors, where))
                state["counts"][layer] += len(pos)
                self.bytes += vectors.nbytes

    def held(self) -> int:
        return self.bytes

    def enough(self) -> bool:
        return all(self.state["counts"][layer] >= self.plan.samples for layer in self.plan.layers)

    def commit(self, final: bool) -> None:
        state = self.state
        if any(self.buffers.values()):
            for layer, parts in self.buffers.items():
                vectors = np.concatenate([v for v, _ in parts]) if parts else np.zeros((0, 0), np.float16)
                where = np.concatenate([w for _, w in parts]) if parts else np.zeros((0, 3), np.int32)
                vec_path, where_path = _chunk_paths(self.folder, layer, state["chunks"])
                _save_npy(vec_path, vectors)
                _save_npy(where_path, where)
                parts.clear()
            sync_folders({self.folder / SAMPLES_DIR / layer for layer in self.plan.layers})
            state["chunks"] += 1
        state["photos"].extend(self.window)
        state["complete"] = final
        atomic_write_text(_state_path(self.folder), json.dumps(state))
        self.window, self.bytes = [], 0


def sample_photos(plan: MapPlan, run_folder: Path, model: Any, summary: MapSummary, progress: bool = True,
                  stop_after: int | None = None) -> dict[str, Any]:
    """The sampling pass (resumable); returns its state: photos, chunks, counts per layer, complete."""
    entries, bad = photos_to_use(plan.folder, "map")
    summary.bad = list(bad)
    hash_ = plan.sampling_hash(model.render_key, listing_digest(entries))
    state = _load_state(run_folder, hash_, plan.layers)
    done = {p["photo"] for p in state["photos"]}
    todo = [] if state["complete"] else [e for e in entries if e.name not in done]
    sampling = MapSampling(plan, run_folder, model, state)
    progress_ = process_photos(sampling, todo, InputFit(plan.size, "crop", plan.batch_size), summary.bad, progress,
                               stop_after)
    summary.processed += progress_.processed
    sampling.commit(final=not progress_.stopped)
    if progress_.stopped:
        return state
    summary.photos = len(state["photos"])
    summary.samples = dict(state["counts"])
    write_skipped(run_folder / MAP_SKIPPED_FILE, summary.bad)
    if not state["photos"]:
        raise no_readable_photo("map", plan.folder, summary.bad)
    return state


def _photo_record(record: PhotoRecord) -> dict[str, Any]:
    values = record.__dict__.copy()
    values.pop("thumb", None)
    return values


def load_samples(run_folder: Path, state: dict[str, Any], layer: str) -> tuple[np.ndarray, np.ndarray]:
    """A layer's sampled vectors (float32 [n, C]) and their (photo, row, col) [n, 3], from the chunks on disk."""
    vectors, where = [], []
    for chunk in range(state["chunks"]):
        vec_path, where_path = _chunk_paths(run_folder, layer, chunk)
        part = np.load(vec_path)
        if len(part):
            vectors.append(part.astype(np.float32))
            where.append(np.load(where_path))
    if not vectors:
        return np.zeros((0, 0), np.float32), np.zeros((0, 3), np.int32)
    return np.concatenate(vectors), np.concatenate(where)


# ---------------------------------------------------------------------------------------------------------
# 2. Layout


def check_sample_count(layer: str, samples: int, plan: MapPlan) -> None:
    """One line when `samples` are too few: UMAP needs more than its neighbours, and an N x N grid needs at least
    `min_samples` x N samples (one kept cell per column on average)."""
    if samples <= plan.neighbours:
        raise UserError(f"map of {layer}: {samples} samples are too few for UMAP's {plan.neighbours} neighbours; "
                        "add photos, raise per_photo, or lower neighbours")
    for grid in plan.grids:
        if samples < plan.min_samples * grid:
            raise UserError(f"map of {layer}: {samples} samples are too few for a {grid} x {grid} grid (it needs "
                            f"{plan.min_samples * grid}: min_samples x grid); add photos or use smaller grids")


def import_umap() -> Any:
    """umap-learn, its numba functions compiled once per machine: numba compiles them on first use in every
    process (a minute or more on 2 cores) unless cached, and umap-learn does not ask for caching, so every
    compiled function of umap and pynndescent is given numba's file cache, in NUMBA_CACHE_DIR (default: the
    atlas cache folder's `numba`). With the cache a process pays a few seconds of loading instead."""
    import os

    from atlas.console import import_skipped

    warming = _WARMING.get("thread")
    if warming is not None and warming is not threading.current_thread():
        warming.join()  # the warm-up's compile (or cache load) is this call's too
    if "numba" not in sys.modules and "NUMBA_CACHE_DIR" not in os.environ:
        from atlas.model.source import cache_dir

        os.environ["NUMBA_CACHE_DIR"] = str(cache_dir() / "numba")
    with import_skipped("umap.parametric_umap"):  # ParametricUMAP (unused) would import Keras: 1.4 s
        import umap
    from numba.core.registry import CPUDispatcher

    for name, module in list(sys.modules.items()):
        if name.startswith(("umap", "pynndescent")) and module is not None:
            for value in list(vars(module).values()):
                if isinstance(value, CPUDispatcher) and value._cache.__class__.__name__ == "NullCache":
                    value.enable_caching()
    return umap


_WARMING: dict[str, threading.Thread] = {}
EXACT_NEIGHBOURS_BELOW = 4096  # umap-learn finds exact neighbours below this many samples, else NN-descent


def warm_umap(plan: MapPlan, run_folder: str | Path) -> threading.Thread | None:
    """Start laying out a small random set with the plan's UMAP settings on a background thread, so that umap-learn
    is imported and numba compiles (or loads from its cache) the functions the layout will call while other work
    runs: `atlas run` starts it before the sweep. A machine's first map otherwise waits about 40 s on 2 cores
    for that compile (docs/maps.md#speed). `import_umap` joins it; a failure here is left to the layout to meet.
    None (nothing started) when every layer of the plan has a map in the run folder already, as in a finished run
    run again: its layouts are most likely current, and one that is not only loses the head start."""
    if set(plan.layers) <= set(map_layers(run_folder)):
        return None
    count = max(min(plan.samples, EXACT_NEIGHBOURS_BELOW), plan.neighbours + 2)  # the same neighbour search path
    vectors = np.abs(np.random.default_rng(plan.seed).normal(size=(count, 16))).astype(np.float32) + 0.01

    def warm() -> None:
        try:
            umap_layout(vectors, plan)
        except Exception:  # noqa: BLE001  (the real layout reports its own errors)
            pass

    thread = threading.Thread(target=warm, name="atlas-umap-warm-up", daemon=True)
    _WARMING["thread"] = thread
    thread.start()
    return thread


def umap_layout(vectors: np.ndarray, plan: MapPlan) -> np.ndarray:
    """UMAP's 2-D embedding of the vectors, with the plan's settings and seed (float32 [n, 2])."""
    import warnings

    umap = import_umap()
    reducer = umap.UMAP(n_neighbors=plan.neighbours, min_dist=plan.min_dist, metric=plan.metric, n_components=2,
                        random_state=plan.seed, n_jobs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state": a seed makes it serial anyway
        return reducer.fit_transform(vectors).astype(np.float32)


def normalise_layout(layout: np.ndarray) -> np.ndarray:
    """Each axis clipped to its 1st-99th percentiles and scaled to [0, 1]."""
    low, high = np.percentile(layout, CLIP_PERCENTILES, axis=0)
    return (np.clip(layout, low, high) - low) / np.maximum(high - low, 1e-12)


def assign_cells(unit: np.ndarray, grid: int) -> np.ndarray:
    """The cell (row * grid + col) of each point of a [0, 1] layout: x is the column, y grows upwards."""
    col = np.minimum((unit[:, 0] * grid).astype(np.int64), grid - 1)
    row = np.minimum(((1.0 - unit[:, 1]) * grid).astype(np.int64), grid - 1)
    return (row * grid + col).astype(np.int32)


def whitening_matrix(vectors: np.ndarray) -> np.ndarray:
    """The inverse of the samples' second-moment matrix A^T A / n (as Lucid's activation atlas whitens), with a
    ridge of 1e-3 of the mean eigenvalue so that it exists for fewer samples than channels."""
    a = vectors.astype(np.float64)
    moment = a.T @ a / len(a)
    ridge = 1e-3 * np.trace(moment) / len(moment) + 1e-12
    return np.linalg.inv(moment + ridge * np.eye(len(moment))).astype(np.float32)


def channel_weights(direction: np.ndarray, sources: list[tuple[str, int]] | None, layer: str) -> list[dict[str, Any]]:
    """The channels that weigh most in a direction, heaviest first: the tensor's channel, the catalogued layer and
    channel it is (a block output's branch), and its share of the direction's length."""
    norm = float(np.linalg.norm(direction)) or 1.0
    top = np.argsort(-direction, kind="stable")[:TOP_CHANNELS]
    out = []
    for c in top:
        name, channel = sources[c] if sources else (layer, int(c))
        out.append({"source": int(c), "layer": name, "channel": int(channel), "weight": float(direction[c] / norm)})
    return out


def layout_layer(plan: MapPlan, run_folder: Path, model: Any, layer: str, state: dict[str, Any]) -> None:
    """Lay out one layer's samples and write its cells (skipped when cells.json has this layout already)."""
    folder = run_folder / map_dir(layer)
    layout_hash = plan.layout_hash(state["hash"])
    cells_path = folder / CELLS_FILE
    if cells_path.is_file() and json.loads(cells_path.read_text(encoding="utf-8")).get("hash") == layout_hash:
        return
    vectors, where = load_samples(run_folder, state, layer)
    vectors, where = vectors[:plan.samples], where[:plan.samples]
    check_sample_count(layer, len(vectors), plan)
    layout = umap_layout(vectors, plan)
    unit = normalise_layout(layout)
    sources = model.channel_sources(layer)
    _save_npy(folder / "layout.npy", layout)
    _save_npy(folder / "where.npy", where.astype(np.int32))
    _save_npy(folder / "whitening.npy", whitening_matrix(vectors))
    atomic_write_text(folder / "photos.json", json.dumps(state["photos"]))
    cells: list[MapCell] = []
    norms = np.linalg.norm(vectors, axis=1) + 1e-12
    for zoom, grid in enumerate(plan.grids):
        assign = assign_cells(unit, grid)
        _save_npy(folder / f"assign-{grid}.npy", assign)
        counts = np.bincount(assign, minlength=grid * grid)
        order = np.argsort(assign, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)])
        for index in np.flatnonzero(counts >= plan.min_samples):
            members = order[starts[index]:starts[index + 1]]
            direction = vectors[members].astype(np.float64).mean(axis=0).astype(np.float32)
            row, col = divmod(int(index), grid)
            leaf = cell_leaf(grid, row, col)
            _save_npy(folder / "directions" / f"{leaf}.npy", direction)
            typical = members[np.argsort(-(vectors[members] @ direction) / norms[members], kind="stable")]
            cells.append(MapCell(zoom=zoom, grid=grid, row=row, col=col, count=len(members),
                                 direction=f"directions/{leaf}.npy", render=f"{map_dir(layer)}/cells/{leaf}.png",
                                 channels=channel_weights(direction, sources, layer),
                                 photos=_cell_photos(typical, where, state["photos"], layer, plan.crops)))
    sync_folders({p.parent for p in (folder / "directions").rglob("*.npy")} | {folder})
    info = {"layer": layer, "format": MAPS_FORMAT, "hash": layout_hash, "sampling": state["hash"],
            "samples": len(vectors), "photos": len(state["photos"]), "channels": int(vectors.shape[1]),
            "folder": plan.folder, "grids": list(plan.grids), "min_samples": plan.min_samples, "seed": plan.seed,
            "umap": {"n_neighbors": plan.neighbours, "min_dist": plan.min_dist, "metric": plan.metric},
            "clip_percentiles": list(CLIP_PERCENTILES), "layout": "layout.npy", "where": "where.npy",
            "photos_file": "photos.json", "whitening": "whitening.npy",
            "assign": {str(g): f"assign-{g}.npy" for g in plan.grids}, "power": plan.power}
    atomic_write_text(cells_path, json.dumps({**info, "cells": [c.to_dict() for c in cells]}, indent=1))


def _cell_photos(typical: np.ndarray, where: np.ndarray, photos: list[dict[str, Any]], layer: str,
                 count: int) -> list[dict[str, Any]]:
    """Up to `count` samples of a cell from different photos, the most typical first (closest in angle to the
    cell's direction), with the path of their crop."""
    chosen, seen = [], set()
    for sample in typical:
        photo_id, row, col = (int(v) for v in where[sample])
        if photo_id in seen:
            continue
        seen.add(photo_id)
        sha = photos[photo_id]["sha256"]
        chosen.append({"photo": photos[photo_id]["photo"], "row": row, "col": col,
                       "crop": f"{map_dir(layer)}/crops/{sha[:12]}-{row}-{col}.jpg"})
        if len(chosen) == count:
            break
    return chosen


def layer_geometry(model: Any, layer: str, size: int) -> tuple[Layer | BlockOutput, tuple[float, float],
                                                                tuple[int, int]]:
    """(what a position of `layer` sees: its catalogued layer or block output, offset, jump) on size x size inputs;
    a block output's receptive field is that of its widest branch (a residual sum's too)."""
    found = model.any_layer(layer)
    grid = model.grids(size, size)[found.name]
    return found, grid.offset, grid.jump


def write_crops(plan: MapPlan, run_folder: Path, model: Any) -> None:
    """Write every crop the plan's cells show that is missing, reading each photo once."""
    wanted: dict[str, list[tuple[Path, dict[str, Any], tuple[Layer, Any, Any], int, int]]] = {}
    for layer in plan.layers:
        data = read_map(run_folder, layer)
        records = {p["photo"]: p for p in json.loads((run_folder / map_dir(layer) / "photos.json").read_text())}
        geometry = layer_geometry(model, layer, plan.size)
        for cell in data.cells:
            for shown in cell.photos:
                target = run_folder / shown["crop"]
                if not target.is_file():
                    wanted.setdefault(shown["photo"], []).append((target, records[shown["photo"]], geometry,
                                                                  shown["row"], shown["col"]))
    root = Path(plan.folder).expanduser()
    for name, crops in wanted.items():
        entry = Entry(name, None if plan.folder == PROBES else root / name, "")
        try:
            _, image = read_entry(entry)
        except UserError:
            continue  # gone since it was sampled: the gallery shows the cell without that crop
        work = work_copy(image)
        for target, record, (source, offset, jump), row, col in crops:
            photo = PhotoRecord(**record)
            write_patch(target, work, work.width / photo.width, patch_box(photo, source, offset, jump, row, col))
    sync_folders({t.parent for crops in wanted.values() for t, *_ in crops})


# ---------------------------------------------------------------------------------------------------------
# 3. Rendering the cells


def cell_seed_key(grid: int, row: int, col: int) -> int:
    """The per-cell key its start image and transforms are seeded with (the same in any batch)."""
    return grid * 1_000_000 + row * 1_000 + col


def render_cells(plan: MapPlan, run_folder: Path, model: Any, layer: str, progress: bool = True) -> int:
    """Render the layer's cells that are not rendered with these settings yet; returns how many were rendered."""
    from tqdm import tqdm

    from atlas.images import encode, to_uint8
    from atlas.render.settings import auto_batch_size
    from atlas.render.objectives import Direction

    data = read_map(run_folder, layer)
    folder = run_folder / map_dir(layer)
    hash_ = plan.render_hash(data.info["hash"])
    with Manifest(run_folder / MANIFEST_FILE, create=True) as manifest:
        manifest.ensure_map_cells()
        done = {(r.grid, r.row, r.col) for r in manifest.map_cells(layer)
                if r.settings_hash == hash_ and (run_folder / r.image).is_file()}
    todo = [i for i, cell in enumerate(data.cells) if cell.key not in done]
    if not todo:
        return 0
    directions = np.stack([np.load(folder / cell.direction) for cell in data.cells])
    objective = Direction(directions, np.load(folder / data.info["whitening"]), plan.power)
    settings = plan.render
    batch = settings.batch_size or auto_batch_size(settings.size ** 2, work=model.work)
    name = model.tensor_name(layer)
    with tqdm(total=len(todo), unit="cell", desc=f"map {layer}", disable=None if progress else True,
              file=sys.stderr) as bar:
        for first in range(0, len(todo), batch):
            rows = todo[first:first + batch]
            began = time.perf_counter()
            images = to_uint8(_dream_cells(model, name, rows, [data.cells[i] for i in rows], objective, plan))
            values = _own_values(model, name, images, rows, directions, folder, data, plan)
            seconds = (time.perf_counter() - began) / len(rows)
            records = []
            for i, image, value in zip(rows, images, values):
                cell = data.cells[i]
                with atomic_path(run_folder / cell.render, sync_folder=False) as tmp:
                    tmp.write_bytes(encode(image, "png"))
                records.append(MapCellRender(layer, cell.grid, cell.row, cell.col, hash_, cell.render, float(value),
                                             None, seconds, time.time()))
            sync_folders({(run_folder / data.cells[i].render).parent for i in rows})
            with Manifest(run_folder / MANIFEST_FILE) as manifest:
                manifest.record_map_cells(records)
            bar.update(len(rows))
    record_specificity(run_folder, model, layer, plan)
    return len(todo)


def _dream_cells(model: Any, name: str, rows: list[int], cells: list[MapCell], objective: Any,
                 plan: MapPlan) -> np.ndarray:
    """Float images of a batch of cells (rows into the objective's table), seeded per cell."""
    from atlas.render.fourier import dream_fourier, image_key
    from atlas.render.loop import dream_from_noise, noise_start

    settings = plan.render
    keys = [cell_seed_key(c.grid, c.row, c.col) for c in cells]
    targets = np.array(rows, np.int32)
    if settings.method == "fourier":
        return dream_fourier(model, name, targets, [image_key(plan.seed, k, 0) for k in keys], settings.size,
                             settings.steps, settings.learning_rate, settings.spectrum_std, objective,
                             precision=settings.resolved_precision()).final
    starts = np.stack([noise_start(k, plan.seed, settings) for k in keys])
    return dream_from_noise(model, name, targets, starts, settings, plan.seed, objective=objective)


def centre_activations(model: Any, name: str, images: np.ndarray, batch: int = 16) -> np.ndarray:
    """The activations at the centre of the map of each image [N, C] (what the direction objective reads)."""
    import tensorflow as tf

    from atlas.render.objectives import centre

    fn = model.layer_fn(name)
    parts = [centre(fn(tf.constant(images[i:i + batch], tf.float32))).numpy() for i in range(0, len(images), batch)]
    return np.concatenate(parts)


def _own_values(model: Any, name: str, images: np.ndarray, rows: list[int], directions: np.ndarray, folder: Path,
                data: Any, plan: MapPlan) -> np.ndarray:
    from atlas.render.objectives import direction_matrix

    acts = centre_activations(model, name, images.astype(np.float32))
    whitening = np.load(folder / data.info["whitening"])
    return np.array([direction_matrix(a[None], directions[r][None], whitening, plan.power)[0, 0]
                     for a, r in zip(acts, rows)])


def specificity(values: np.ndarray) -> np.ndarray:
    """values[i, j]: cell j's objective on cell i's render -> per cell, whether its own render excites it more
    than every other cell's render does."""
    own = np.diag(values)
    others = np.where(np.eye(len(values), dtype=bool), -np.inf, values)
    return own > others.max(axis=0) if len(values) > 1 else np.ones(len(values), bool)


def record_specificity(run_folder: Path, model: Any, layer: str, plan: MapPlan) -> None:
    """Measure every zoom level's specificity over its rendered cells and record it in the manifest."""
    from PIL import Image

    from atlas.render.objectives import direction_matrix

    data = read_map(run_folder, layer)
    folder = run_folder / map_dir(layer)
    whitening = np.load(folder / data.info["whitening"])
    with Manifest(run_folder / MANIFEST_FILE) as manifest:
        recorded = {(r.grid, r.row, r.col): r for r in manifest.map_cells(layer)}
    updated = []
    for grid in data.grids:
        cells = [c for c in data.level(grid) if c.key in recorded and (run_folder / c.render).is_file()]
        if not cells:
            continue
        images = np.stack([np.asarray(Image.open(run_folder / c.render).convert("RGB")) for c in cells])
        acts = centre_activations(model, model.tensor_name(layer), images.astype(np.float32))
        directions = np.stack([np.load(folder / c.direction) for c in cells])
        flags = specificity(direction_matrix(acts, directions, whitening, plan.power))
        updated += [replace(recorded[c.key], specific=bool(f)) for c, f in zip(cells, flags)]
    with Manifest(run_folder / MANIFEST_FILE) as manifest:
        manifest.record_map_cells(updated)


def specific_share(run_folder: Path, layer: str) -> float:
    """The share of a layer's rendered cells that are specific."""
    with Manifest(run_folder / MANIFEST_FILE) as manifest:
        flags = [r.specific for r in manifest.map_cells(layer) if r.specific is not None]
    return float(np.mean(flags)) if flags else 0.0


# ---------------------------------------------------------------------------------------------------------
# The dry run

UMAP_SECONDS_PER_SAMPLE = 5.0e-3  # 20,000 x 512 took 112 s on 2 loaded cores (docs/maps.md): an upper bound
UMAP_FIRST_CALL_SECONDS = 10.0  # numba compiling umap-learn's functions on first use in a process


def estimate_map(plan: MapPlan, run_folder: str | Path, model: Any, out: Any = None) -> float:
    """Print the map pass's work (photos, samples, cells) with a time estimate from a measured forward pass and
    a measured render step of each layer; returns seconds. Writes nothing."""
    import tensorflow as tf

    from atlas.render.settings import auto_batch_size
    from atlas.render.cost import measure_step, measured_batch, noise_cost

    out = sys.stdout if out is None else out
    entries, _ = list_photos(plan.folder, "map folder")
    forward = model.layers_fn(plan.layers)
    images = tf.zeros([plan.batch_size, plan.size, plan.size, 3])
    shapes = [a.shape for a in forward(images)]
    began = time.perf_counter()
    forward(images)
    per_photo_seconds = (time.perf_counter() - began) / plan.batch_size
    photos = 0
    total = 0.0
    batch = plan.render.batch_size or auto_batch_size(plan.render.size ** 2, work=model.work)
    lines = []
    for layer, shape in zip(plan.layers, shapes):
        each = min(plan.per_photo, len(inner_positions(shape[1], shape[2])))
        need = min(len(entries), -(-plan.samples // each))
        photos = max(photos, need)
        samples = min(plan.samples, need * each)
        cells = sum(min(g * g, samples // plan.min_samples) for g in plan.grids) if plan.render_cells else 0
        step, _ = measure_step(model, layer, measured_batch(batch, plan.render.size), method=plan.render.method)
        render = cells * step * noise_cost(plan.render)
        umap_seconds = samples * UMAP_SECONDS_PER_SAMPLE
        total += render + umap_seconds
        lines.append(f"  {layer:<28} {samples:>8,} samples ({each}/photo, {shape[-1]} channels)  <= {cells:,} cells  "
                     f"layout ~{umap_seconds:.0f} s, cells ~{render:.0f} s")
    sampling = photos * per_photo_seconds
    total += sampling + UMAP_FIRST_CALL_SECONDS
    print(f"map: {plan.folder}: {len(entries):,} files, {photos:,} photos read (~{sampling:.0f} s); grids "
          f"{', '.join(map(str, plan.grids))}; cells by {plan.render.method} at {plan.render.size} px, "
          f"{batch} a pass", file=out)
    print("\n".join(lines), file=out)
    print(f"map: about {total / 60:.1f} minutes on this machine (an upper bound on cells: sparse grids keep fewer)",
          file=out)
    return total
