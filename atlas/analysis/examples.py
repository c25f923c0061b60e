"""Dataset examples: for every channel, the photos (and the patch of each) that excite it most.

One pass over a folder of photos (or the built-in probes), fitted to the network's input as
`atlas.analysis.photos` describes. Each batch goes once through one function returning the pre-ReLU maximum and
its position of every channel of every selected layer (`Model.layers_fn`: the union of the nodes is evaluated
once). Per channel a running top list keeps the largest values, at most one entry per photo; memory is channels x
depth, whatever the number of photos.

Resume. Each processed photo is recorded with its sha256 and a key (size and mtime); the lists are kept to
`depth = 2 x top`, so that removing a changed or deleted photo's entries still leaves the exact top of the
remaining photos: a list of L entries is always the exact top L of the photos it has seen. When a list would
fall below `top` (more removals in one channel than the reserve), the pass starts over. Lists that lost entries
are only ever truncated, never padded with values that might be out of order. Records are written at checkpoints
(`atlas.analysis.passes`: one SQLite transaction each), crops and thumbnails at the last, so a kill at any moment
loses only the photos since the last checkpoint, which the next run processes again.
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image

from atlas.analysis.passes import Checkpoint, PhotoPass, claimed_folder, process_photos
from atlas.analysis.photos import (
    Entry,
    Fitted,
    InputFit,
    entry_sha,
    no_readable_photo,
    patch_box,
    photos_to_use,
    reload_photo,
    skipped_line,
    write_patch,
    write_skipped,
)
from atlas.atomic import SWEEP_OUTPUT, sync_folders
from atlas.model.catalogue import AnyLayer
from atlas.model.selection import check_channels
from atlas.run.manifest import (
    EXAMPLES_DIR,
    MANIFEST_FILE,
    Example,
    Manifest,
    PhotoRecord,
    example_crop_path,
    example_photo_path,
    examples_root,
    read_run,
)
from atlas.run.plans import ExamplesPlan

LOCK_FILE = ".examples.lock"
SKIPPED_FILE = f"{EXAMPLES_DIR}/skipped.txt"
CHECKPOINT_SECONDS = 60.0  # at most this much work is lost (and done again) when a pass is killed
CHECKPOINT_BYTES = 256 * 2**20  # photos kept for cropping between checkpoints
WRITE_THREADS = 8  # crops and thumbnails are written on this many threads (each waits on fsyncs)


# ---------------------------------------------------------------------------------------------------------
# Top lists


class TopLists:
    """Per channel of one layer, the `depth` largest values seen, best first, one entry per photo.

    Arrays [channels, depth]: value (-inf = empty), photo id (-1 = empty), row, col. Invariant: a channel's L
    filled entries are the exact top L of every photo merged so far (minus removed ones).
    """

    def __init__(self, channels: int, depth: int) -> None:
        self.depth = depth
        self.value = np.full((channels, depth), -np.inf, np.float32)
        self.photo = np.full((channels, depth), -1, np.int64)
        self.row = np.zeros((channels, depth), np.int32)
        self.col = np.zeros((channels, depth), np.int32)

    def filled(self) -> np.ndarray:
        """Entries per channel."""
        return (self.photo >= 0).sum(axis=1)

    def snapshot(self) -> tuple[np.ndarray, ...]:
        return self.photo.copy(), self.row.copy(), self.col.copy()

    def merge(self, value: np.ndarray, photo: np.ndarray, row: np.ndarray, col: np.ndarray, seen: int) -> None:
        """Merge one batch: `value`, `row`, `col` [batch, channels] (each photo's maximum and its position),
        `photo` [batch] ids; `seen` = photos merged before this batch.

        A channel whose list is short of `depth` although it has seen more photos lost entries to removals: its
        merged list is cut after its last old entry, since photos it no longer holds may rank below that.
        """
        channels, batch = self.value.shape[0], value.shape[0]
        values = np.concatenate([self.value, value.T], axis=1)
        photos = np.concatenate([self.photo, np.broadcast_to(photo, (channels, batch))], axis=1)
        rows = np.concatenate([self.row, row.T], axis=1)
        cols = np.concatenate([self.col, col.T], axis=1)
        order = np.argsort(-values, axis=1, kind="stable")
        photos = np.take_along_axis(photos, order, axis=1)
        filled = self.filled()
        short = filled < min(self.depth, seen)
        if short.any():
            old = (order < self.depth) & (photos >= 0)
            last_old = np.where(old.any(axis=1), old.shape[1] - 1 - np.argmax(old[:, ::-1], axis=1), -1)
            cut = np.arange(order.shape[1])[None, :] > last_old[:, None]
            photos = np.where(short[:, None] & cut, -1, photos)
        keep = order[:, :self.depth]
        self.photo = photos[:, :self.depth]
        self.value = np.where(self.photo >= 0, np.take_along_axis(values, keep, axis=1), -np.inf)
        self.row = np.take_along_axis(rows, keep, axis=1)
        self.col = np.take_along_axis(cols, keep, axis=1)

    def remove(self, photos: np.ndarray) -> None:
        """Drop the entries of the given photo ids, keeping the rest in order."""
        gone = np.isin(self.photo, photos)
        self.value = np.where(gone, -np.inf, self.value)
        self.photo = np.where(gone, -1, self.photo)
        order = np.argsort(-self.value, axis=1, kind="stable")
        for name in ("value", "photo", "row", "col"):
            setattr(self, name, np.take_along_axis(getattr(self, name), order, axis=1))


# ---------------------------------------------------------------------------------------------------------
# The pass


@dataclass
class ExamplesSummary:
    """What a pass did."""

    folder: str
    processed: int = 0
    unchanged: int = 0
    changed: int = 0
    removed: int = 0
    restarted: bool = False
    bad: list[tuple[str, str]] = field(default_factory=list)
    bad_file: Path | None = None
    seconds: float = 0.0
    network_seconds: float = 0.0  # in the forward passes and the merges of the top lists
    files_seconds: float = 0.0  # writing crops and thumbnails (reading photos again for them included)

    def lines(self) -> list[str]:
        rate = f" ({self.processed / self.seconds:.1f} photos/s)" if self.processed and self.seconds else ""
        if not self.processed and not self.changed and not self.removed:
            head = f"examples: {self.folder} is up to date ({self.unchanged:,} photos)"
        else:
            head = (f"examples: {self.processed:,} photos processed in {self.seconds:.1f} s{rate}, "
                    f"{self.unchanged:,} unchanged, {self.changed:,} changed, {self.removed:,} removed")
        lines = [head + ("; started over (the settings changed or removals emptied a list)"
                         if self.restarted else "")]
        if self.bad:
            lines.append(skipped_line("examples", self.bad, self.bad_file))
        return lines


class _State:
    """The top lists of every layer, the photos behind them, and what the manifest holds of them."""

    def __init__(self, plan: ExamplesPlan, layers: list[AnyLayer]) -> None:
        self.plan = plan
        self.layers = layers
        self.lists = {layer.name: TopLists(layer.channels, plan.depth) for layer in layers}
        self.names: list[str] = []  # photo id -> name
        self.ids: dict[str, int] = {}
        self.photos: dict[str, PhotoRecord] = {}  # processed photos (recorded or in the window)
        self.committed = {name: lists.snapshot() for name, lists in self.lists.items()}

    def photo_id(self, name: str) -> int:
        if name not in self.ids:
            self.ids[name] = len(self.names)
            self.names.append(name)
        return self.ids[name]

    def load(self, photos: list[PhotoRecord], examples: list[Example]) -> None:
        """Rebuild the lists from the manifest's records."""
        self.photos = {p.photo: p for p in photos}
        for example in examples:
            lists = self.lists.get(example.layer)
            if lists is None or example.rank > lists.depth or example.photo not in self.photos:
                continue
            i, j = example.channel, example.rank - 1
            lists.value[i, j], lists.photo[i, j] = example.value, self.photo_id(example.photo)
            lists.row[i, j], lists.col[i, j] = example.row, example.col
        for lists in self.lists.values():
            lists.remove(np.array([], np.int64))  # sorts; a damaged list is cut, not trusted
        self.committed = {name: lists.snapshot() for name, lists in self.lists.items()}

    def remove(self, names: Iterable[str]) -> None:
        """Forget these photos and drop their entries from every list."""
        names = list(names)  # read twice: a generator would be empty the second time
        ids = np.array([self.ids[n] for n in names if n in self.ids], np.int64)
        for name in names:
            self.photos.pop(name, None)
        for lists in self.lists.values():
            lists.remove(ids)

    def complete(self) -> bool:
        """Every list still holds the exact top `top` (or every photo, if fewer)."""
        need = min(self.plan.top, len(self.photos))
        return all(int(lists.filled().min(initial=need)) >= need for lists in self.lists.values())

    def changed_lists(self) -> dict[str, np.ndarray]:
        """Layer -> indices of channels whose list differs from the committed one."""
        changed = {}
        for name, lists in self.lists.items():
            photo, row, col = self.committed[name]
            diff = ((lists.photo != photo) | (lists.row != row) | (lists.col != col)).any(axis=1)
            if diff.any():
                changed[name] = np.flatnonzero(diff)
        return changed


def run_examples(plan: ExamplesPlan, run_folder: str | Path, model: Any, progress: bool = True,
                 stop_after: int | None = None, elsewhere: str | None = SWEEP_OUTPUT) -> ExamplesSummary:
    """Process the plan's folder into the run folder's examples (resumable); returns what was done. A write
    the user must make possible (not writable, read-only, disk full, quota) stops the pass with one line, which
    tells how to write elsewhere with `elsewhere` (the config's output:, or `atlas examples -o`).

    `stop_after` (tests) ends the pass after that many photos, as a kill would, after a checkpoint.
    """
    run_folder = Path(run_folder)
    started = time.perf_counter()
    entries, bad = photos_to_use(plan.folder, "examples")
    with claimed_folder(run_folder, model, "examples", LOCK_FILE, elsewhere):
        summary = _run_claimed(plan, run_folder, model, entries, bad, progress, stop_after)
    summary.seconds = time.perf_counter() - started
    return summary


def _run_claimed(plan: ExamplesPlan, run_folder: Path, model: Any, entries: list[Entry],
                 bad: list[tuple[str, str]], progress: bool, stop_after: int | None) -> ExamplesSummary:
    hash_ = plan.settings_hash(model.render_key)
    layers = [model.any_layer(name) for name in plan.layers]
    meta = {"folder": plan.folder, "top": plan.top, "size": plan.size, "fit": plan.fit, "hash": hash_,
            "layers": list(plan.layers), "depth": plan.depth}
    summary = ExamplesSummary(folder=plan.folder, bad=list(bad))
    state = _State(plan, layers)
    with Manifest(run_folder / MANIFEST_FILE, create=True) as manifest:
        if manifest.example_meta().get("hash") != hash_:
            summary.restarted = bool(manifest.example_photos())
            manifest.reset_examples(meta)
        state.load(manifest.example_photos(), manifest.examples())
        by_name = {e.name: e for e in entries}
        recorded = dict(state.photos)
        gone = [name for name in recorded if name not in by_name]
        touched = [e for e in entries if e.name in recorded and recorded[e.name].key != e.key]
        same = {e.name for e in touched if entry_sha(e) == recorded[e.name].sha256}  # e.g. copied or touched
        rekeyed = [replace(recorded[e.name], key=e.key) for e in touched if e.name in same]
        changed = [e for e in touched if e.name not in same]
        todo = [e for e in entries if e.name not in recorded]
        summary.removed, summary.unchanged = len(gone), len(recorded) - len(gone) - len(changed)
        summary.changed = len(changed)
        state.remove(gone + [e.name for e in changed])
        if not state.complete():
            manifest.reset_examples(meta)
            state = _State(plan, layers)
            summary.restarted, summary.unchanged, todo = True, 0, list(entries)
        else:
            todo = changed + todo
        examples = ExamplesPass(plan, run_folder, model, manifest, state, hash_,
                                forget=gone + [e.name for e in changed],
                                rekeyed=[] if summary.restarted else rekeyed, summary=summary)
        done = process_photos(examples, todo, InputFit(plan.size, plan.fit, plan.batch_size), summary.bad, progress,
                              stop_after)
        summary.processed, summary.network_seconds = done.processed, done.network_seconds
        examples.commit(final=True)
        if not state.photos:
            raise no_readable_photo("examples", plan.folder, summary.bad)
    summary.bad_file = run_folder / SKIPPED_FILE
    write_skipped(summary.bad_file, summary.bad)
    _remove_unused(run_folder, hash_, stop_after is None)
    return summary


def _peaks_fn(model: Any, layers: tuple[str, ...]) -> Any:
    """A tf.function images -> per layer (max [batch, channels], flat argmax [batch, channels])."""
    import tensorflow as tf

    forward = model.layers_fn(layers)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)], reduce_retracing=True,
                 autograph=False)
    def peaks(images: tf.Tensor) -> list[tuple[tf.Tensor, tf.Tensor]]:
        out = []
        for act in forward(images):
            shape = tf.shape(act)
            flat = tf.reshape(act, [shape[0], shape[1] * shape[2], shape[3]])
            out.append((tf.reduce_max(flat, axis=1), tf.argmax(flat, axis=1, output_type=tf.int32)))
        return out

    return peaks


class ExamplesPass(PhotoPass):
    """Merges each batch's peaks into the top lists; a checkpoint records the photos since the last one and the
    changed lists in one manifest transaction, the final one the crops and thumbnails first."""

    what = "examples"

    def __init__(self, plan: ExamplesPlan, run_folder: Path, model: Any, manifest: Manifest, state: _State,
                 hash_: str, forget: list[str], rekeyed: list[PhotoRecord], summary: ExamplesSummary) -> None:
        self.plan, self.folder, self.manifest, self.state, self.hash = plan, run_folder, manifest, state, hash_
        self.model = model
        self.peaks = _peaks_fn(model, plan.layers)
        self.window: dict[str, Fitted] = {}  # photos processed since the last commit
        self.forget = forget
        self.rekeyed = rekeyed  # unchanged photos recorded again with their new size and mtime
        self.summary = summary
        self.checkpoint = Checkpoint(CHECKPOINT_SECONDS, CHECKPOINT_BYTES)

    def take(self, batch: list[Fitted]) -> None:
        """One forward pass of the batch; each layer's maxima merged into its top lists."""
        state, seen = self.state, len(self.state.photos)
        for fitted in batch:
            fitted.record = replace(fitted.record, thumb=example_photo_path(self.hash, fitted.record.sha256))
            state.photos[fitted.record.photo] = fitted.record
            self.window[fitted.record.photo] = fitted
        images = np.stack([f.pixels for f in batch])
        ids = np.array([state.photo_id(f.record.photo) for f in batch], np.int64)
        grids = self.model.grids(*images.shape[1:3])
        for layer, (value, where) in zip(state.layers, self.peaks(images)):
            width = grids[layer.name].size[1]
            where = where.numpy()
            state.lists[layer.name].merge(value.numpy(), ids, where // width, where % width, seen)

    def held(self) -> int:
        return sum(f.work.width * f.work.height * 3 for f in self.window.values())

    def commit(self, final: bool = False) -> None:
        """Record the photos since the last commit and the lists that changed. Only the final commit writes
        crops and thumbnails (of every shown entry whose file is missing, so each file is written once, for
        the final lists) and then marks the examples complete, in the same transaction."""
        state, lists = self.state, {}
        changed = state.changed_lists()
        for layer in state.layers:
            for channel in changed.get(layer.name, []):
                lists[(layer.name, int(channel))] = self._entries(layer, int(channel))
        if final:
            start = time.perf_counter()
            self._write_files(self._shown_files())
            self.summary.files_seconds += time.perf_counter() - start
        self.manifest.record_examples(self.rekeyed + [f.record for f in self.window.values()], self.forget, lists,
                                      meta={"complete": final})
        self.forget, self.rekeyed = [], []
        self.window = {}
        state.committed = {name: top.snapshot() for name, top in state.lists.items()}

    def _shown_files(self) -> dict[str, tuple[str, tuple[int, int, int, int] | None]]:
        """Run-relative path -> (photo, box; None for the photo's thumbnail) of every file the shown lists need."""
        files: dict[str, tuple[str, tuple[int, int, int, int] | None]] = {}
        for layer in self.state.layers:
            shown = self.state.lists[layer.name].photo[:, :self.plan.top]
            for channel in np.flatnonzero((shown >= 0).any(axis=1)):
                for e in self._entries(layer, int(channel), self.plan.top):
                    files.setdefault(e.crop, (e.photo, e.box))
                    files.setdefault(self.state.photos[e.photo].thumb, (e.photo, None))
        return files

    def _entries(self, layer: AnyLayer, channel: int, depth: int | None = None) -> list[Example]:
        """A channel's list as records (the first `depth`; all by default)."""
        state, top = self.state, self.state.lists[layer.name]
        entries = []
        for rank in range(depth or top.depth):
            pid = int(top.photo[channel, rank])
            if pid < 0:
                break
            photo = state.photos[state.names[pid]]
            row, col = int(top.row[channel, rank]), int(top.col[channel, rank])
            grid = _grid(self.plan, photo, layer, self.model.grids)
            box = patch_box(photo, layer, grid.offset, grid.jump, row, col)
            crop = example_crop_path(self.hash, layer.name, photo.sha256, row, col) if rank < self.plan.top else None
            entries.append(Example(layer.name, channel, rank + 1, photo.photo, photo.sha256,
                                   float(top.value[channel, rank]), row, col, box, crop))
        return entries

    def _write_files(self, files: dict[str, tuple[str, tuple[int, int, int, int] | None]]) -> None:
        """Write the missing crops and thumbnails, reading each photo at most once."""
        root = self.folder / examples_root(self.hash)
        present = {p.relative_to(self.folder).as_posix() for p in root.rglob("*.jpg")} if root.is_dir() else set()
        missing: dict[str, list[tuple[str, tuple[int, int, int, int] | None]]] = {}
        for path, (photo, box) in files.items():
            if path not in present:
                missing.setdefault(photo, []).append((path, box))
        with ThreadPoolExecutor(WRITE_THREADS) as pool:  # encoding and fsync release the GIL
            jobs = []
            for photo, wanted in missing.items():
                record = self.state.photos[photo]
                work = self.window[photo].work if photo in self.window else reload_photo(self.plan.folder, record)
                jobs += [pool.submit(self._write_file, path, work, work.width / record.width, box)
                         for path, box in wanted]
            for job in jobs:
                job.result()
        sync_folders({(self.folder / path).parent for paths in missing.values() for path, _ in paths})

    def _write_file(self, path: str, work: Image.Image, scale: float, box: tuple[int, int, int, int] | None) -> None:
        write_patch(self.folder / path, work, scale, box)


def _grid(plan: ExamplesPlan, photo: PhotoRecord, layer: AnyLayer, grids: Any) -> Any:
    height, width = (plan.size, plan.size) if plan.fit == "crop" else (photo.scaled_height, photo.scaled_width)
    return grids(height, width)[layer.name]


def _remove_unused(run_folder: Path, hash_: str, sweep_files: bool) -> None:
    """Remove crops and thumbnails no recorded entry uses, and the files of other examples settings."""
    if not sweep_files:
        return
    root = run_folder / EXAMPLES_DIR
    for other in root.iterdir() if root.is_dir() else []:
        if other.is_dir() and other.name != hash_:
            shutil.rmtree(other, ignore_errors=True)
    with Manifest(run_folder / MANIFEST_FILE) as manifest:
        shown = [e for e in manifest.examples() if e.crop]
        thumbs = {p.photo: p.thumb for p in manifest.example_photos()}
    used = {e.crop for e in shown} | {thumbs[e.photo] for e in shown}
    mine = run_folder / examples_root(hash_)
    for path in mine.rglob("*.jpg") if mine.is_dir() else []:
        if path.relative_to(run_folder).as_posix() not in used:
            path.unlink(missing_ok=True)


def channel_examples(run_folder: str | Path, layer: str, channel: int) -> list[Example]:
    """The shown top list of one channel, best first (empty if the run has none)."""
    run = read_run(run_folder)
    found = run.layer(layer)
    check_channels([channel], found.channels, found.name)
    return run.examples.get((found.name, channel), [])
