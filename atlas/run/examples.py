"""Dataset examples: for every channel, the photos (and the patch of each) that excite it most.

One pass over a folder of photos (or the built-in probes). Each photo is read upright (EXIF), scaled with
Pillow's bicubic filter so its shorter side is `size`, and either its centred `size` x `size` square is taken
(`fit: crop`, batched freely) or the whole scaled photo is kept (`fit: whole`, batched with photos of the same
size; never padded). Each batch goes once through one function returning the pre-ReLU maximum and its position
of every channel of every selected layer (`Model.layers_fn`: the union of the nodes is evaluated once). Per
channel a running top list keeps the largest values, at most one entry per photo; memory is channels x depth,
whatever the number of photos.

Resume. Each processed photo is recorded with its sha256 and a key (size and mtime); the lists are kept to
`depth = 2 x top`, so that removing a changed or deleted photo's entries still leaves the exact top of the
remaining photos: a list of L entries is always the exact top L of the photos it has seen. When a list would
fall below `top` (more removals in one channel than the reserve), the pass starts over. Lists that lost entries
are only ever truncated, never padded with values that might be out of order. Records, crops and thumbnails are
written at checkpoints (files first, then one SQLite transaction), so a kill at any moment loses only the
photos since the last checkpoint, which the next run processes again.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol

import numpy as np
from PIL import Image

from atlas.atomic import SWEEP_OUTPUT, atomic_write_bytes, atomic_write_text, stop_on_write_errors, sync_folders
from atlas.errors import UserError
from atlas.images import MAX_PIXELS, encode, load_photo_image
from atlas.model.catalogue import Layer
from atlas.model.selection import check_channels
from atlas.probes import PROBES, VERSION, probe_makers
from atlas.run.manifest import (
    EXAMPLES_DIR,
    MANIFEST_FILE,
    RUN_FILE,
    Example,
    ExamplePhoto,
    Manifest,
    example_crop_path,
    example_photo_path,
    examples_root,
    read_run,
    read_run_info,
    write_run_info,
)

LOCK_FILE = ".examples.lock"
SKIPPED_FILE = f"{EXAMPLES_DIR}/skipped.txt"
CROP_PX = 128  # long side of a saved patch
THUMB_PX = 512  # long side of a photo's thumbnail
WORK_SHORT = 896  # photos are kept at most this size (shorter side) between a batch and its checkpoint
CHECKPOINT_SECONDS = 60.0  # at most this much work is lost (and done again) when a pass is killed
CHECKPOINT_BYTES = 256 * 2**20  # photos kept for cropping between checkpoints
SHOWN_BAD = 5  # bad files named in the summary
WRITE_THREADS = 8  # crops and thumbnails are written on this many threads (each waits on fsyncs)
EXAMPLES_FORMAT = 1  # bump when the meaning of recorded examples changes


@dataclass(frozen=True)
class ExamplesPlan:
    """What an examples pass does, resolved once (from a config's `examples:` or the command line)."""

    folder: str  # a folder path, or "probes" for the built-in set
    top: int  # entries shown per channel
    size: int  # the photo's shorter side in the network's input
    fit: str  # crop | whole
    layers: tuple[str, ...]  # low to high
    batch_size: int = 16

    @property
    def depth(self) -> int:
        """Entries kept per channel: the shown `top` and as many in reserve for removals."""
        return 2 * self.top

    def settings_hash(self, model_sha: str) -> str:
        """Everything that changes a recorded value, box or file: the folder, weights, size, fit, top, layers."""
        blob = json.dumps({"folder": self.folder, "model": model_sha, "size": self.size, "fit": self.fit,
                           "top": self.top, "layers": list(self.layers), "format": EXAMPLES_FORMAT,
                           "crop": CROP_PX, "thumb": THUMB_PX}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------
# Listing and reading photos


@dataclass(frozen=True)
class Entry:
    """One photo of the folder (or one probe)."""

    name: str  # POSIX path relative to the folder, or probes/<name>
    path: Path | None  # None for a probe
    key: str  # "<bytes>:<mtime_ns>" of a file, the probe set's version for a probe


def list_photos(folder: str, what: str = "examples folder") -> tuple[list[Entry], list[tuple[str, str]]]:
    """The folder's files, sorted, and (name, reason) of those that cannot even be opened.

    Hidden files and folders are left out. Symbolic links are followed, but each real folder is walked once,
    so a link loop ends; a link to itself is reported as a loop.
    """
    if folder == PROBES:
        return [Entry(f"{PROBES}/{name}", None, VERSION) for name, _ in probe_makers()], []
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise UserError(f"{what} {folder}: no such folder; give a folder of photos or `probes`")
    entries: list[Entry] = []
    bad: list[tuple[str, str]] = []
    seen: set[tuple[int, int]] = set()

    def unreadable(exc: OSError) -> None:
        bad.append((Path(exc.filename).relative_to(root).as_posix(), f"unreadable folder ({exc.strerror})"))

    for parent, dirs, files in os.walk(root, followlinks=True, onerror=unreadable):
        here = os.stat(parent)
        if (here.st_dev, here.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((here.st_dev, here.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(parent) / name
            rel = path.relative_to(root).as_posix()
            try:
                stat = path.stat()
            except OSError as exc:
                bad.append((rel, "symlink loop" if exc.errno == errno.ELOOP else f"cannot be read ({exc.strerror})"))
                continue
            if not path.is_file():
                continue
            if stat.st_size == 0:
                bad.append((rel, "empty file (0 bytes)"))
                continue
            entries.append(Entry(rel, path, f"{stat.st_size}:{stat.st_mtime_ns}"))
    entries.sort(key=lambda e: e.name)
    return entries, bad


def _probe_image(name: str) -> Image.Image:
    """The image of the probe entry `probes/<name>` (a KeyError for an unknown one)."""
    return Image.fromarray(dict(probe_makers())[name.split("/", 1)[1]]())


def entry_sha(entry: Entry) -> str | None:
    """The sha256 of an entry's bytes (of a probe's pixels); None if the file cannot be read."""
    if entry.path is None:
        return hashlib.sha256(_probe_image(entry.name).tobytes()).hexdigest()
    try:
        return hashlib.sha256(entry.path.read_bytes()).hexdigest()
    except OSError:
        return None


def read_entry(entry: Entry, max_pixels: int | None = None) -> tuple[str, Image.Image]:
    """(sha256, upright RGB image) of an entry; a UserError says why a file cannot be used."""
    if entry.path is None:
        image = _probe_image(entry.name)
        return hashlib.sha256(image.tobytes()).hexdigest(), image
    try:
        data = entry.path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot be read ({exc.strerror})") from None
    return hashlib.sha256(data).hexdigest(), load_photo_image(entry.path, max_pixels or MAX_PIXELS, data=data)


@dataclass
class Fitted:
    """A photo fitted to the network's input, and what is needed to map positions back to it."""

    record: ExamplePhoto
    pixels: np.ndarray  # float32 [h, w, 3], 0..255: the network's input
    work: Image.Image  # the upright photo, at most WORK_SHORT on its shorter side: crops are cut from it


def fit_photo(name: str, key: str, sha: str, image: Image.Image, size: int, fit: str, hash_: str) -> Fitted:
    """Scale the shorter side to `size` (bicubic); with fit crop take the centred size x size square."""
    width, height = image.size
    scaled = (size, max(size, round(height * size / width))) if width <= height else \
        (max(size, round(width * size / height)), size)
    resized = image.resize(scaled, Image.Resampling.BICUBIC)
    left, top = 0, 0
    if fit == "crop":
        left, top = (scaled[0] - size) // 2, (scaled[1] - size) // 2
        resized = resized.crop((left, top, left + size, top + size))
    record = ExamplePhoto(photo=name, sha256=sha, key=key, width=width, height=height, scaled_width=scaled[0],
                          scaled_height=scaled[1], left=left, top=top, thumb=example_photo_path(hash_, sha))
    return Fitted(record, np.asarray(resized, dtype=np.float32), work_copy(image))


def work_copy(image: Image.Image) -> Image.Image:
    """The image crops are cut from: the photo, shrunk to WORK_SHORT on its shorter side if larger."""
    short = min(image.size)
    if short <= WORK_SHORT:
        return image
    factor = WORK_SHORT / short
    return image.resize((round(image.width * factor), round(image.height * factor)), Image.Resampling.BICUBIC)


def patch_box(photo: ExamplePhoto, layer: Layer, offset: tuple[float, float], jump: tuple[int, int],
              row: int, col: int) -> tuple[int, int, int, int]:
    """The input pixels position (row, col) of `layer` sees, in the upright original photo, clipped to it.

    The receptive field (`layer.receptive_field` pixels) is centred on the position's centre
    `offset + position x jump` in the network's input; the crop offset and the scale map it back.
    """
    half = (layer.receptive_field - 1) / 2
    cy, cx = offset[0] + row * jump[0], offset[1] + col * jump[1]
    sx, sy = photo.width / photo.scaled_width, photo.height / photo.scaled_height
    x0, x1 = (cx - half + photo.left) * sx, (cx + half + 1 + photo.left) * sx
    y0, y1 = (cy - half + photo.top) * sy, (cy + half + 1 + photo.top) * sy
    return (max(0, math.floor(x0)), max(0, math.floor(y0)), min(photo.width, math.ceil(x1)),
            min(photo.height, math.ceil(y1)))


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


def skipped_line(what: str, bad: list[tuple[str, str]], listed_in: object) -> str:
    """The summary line of a pass's skipped files: how many, the first few with their reasons, where all are."""
    named = ", ".join(f"{name} ({reason})" for name, reason in bad[:SHOWN_BAD])
    more = f" and {len(bad) - SHOWN_BAD} more" if len(bad) > SHOWN_BAD else ""
    return f"{what}: skipped {len(bad)} unreadable files: {named}{more}; full list: {listed_in}"


def prepare_folder(run_folder: Path, model: Any) -> None:
    """Make `run_folder` a run folder of `model` if it is not one yet; refuse one of another model."""
    if (run_folder / RUN_FILE).is_file():
        recorded = read_run_info(run_folder).get("model", {})
        if recorded.get("sha256") and recorded["sha256"] != model.sha256:
            raise UserError(f"{run_folder} was made with another model ({recorded.get('spec')}); "
                            "leave out --model to use the run's own, or pass another -o folder")
        return
    write_run_info(run_folder, run_folder.name, {"spec": model.spec, "sha256": model.sha256,
                                                 "preprocess": model.preprocess.to_dict()}, model.layers, [],
                   {})
    Manifest(run_folder / MANIFEST_FILE, create=True).close()


class _State:
    """The top lists of every layer, the photos behind them, and what the manifest holds of them."""

    def __init__(self, plan: ExamplesPlan, layers: list[Layer]) -> None:
        self.plan = plan
        self.layers = layers
        self.lists = {layer.name: TopLists(layer.channels, plan.depth) for layer in layers}
        self.names: list[str] = []  # photo id -> name
        self.ids: dict[str, int] = {}
        self.photos: dict[str, ExamplePhoto] = {}  # processed photos (recorded or in the window)
        self.committed = {name: lists.snapshot() for name, lists in self.lists.items()}

    def photo_id(self, name: str) -> int:
        if name not in self.ids:
            self.ids[name] = len(self.names)
            self.names.append(name)
        return self.ids[name]

    def load(self, photos: list[ExamplePhoto], examples: list[Example]) -> None:
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


def claim_folder(run_folder: Path, model: Any, lock_file: str, what: str,
                 elsewhere: str | None = SWEEP_OUTPUT) -> Any:
    """Prepare a run folder for a pass of `what` and hold its lock (a FileLock, released by the caller); a second
    pass on the folder at once, or a folder that cannot be written, is one line."""
    from filelock import FileLock, Timeout

    with stop_on_write_errors(run_folder, elsewhere):
        prepare_folder(run_folder, model)
        lock = FileLock(str(run_folder / lock_file))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise UserError(f"another {what} pass is writing to {run_folder}; wait for it to finish") from None
    return lock


def run_examples(plan: ExamplesPlan, run_folder: str | Path, model: Any, progress: bool = True,
                 stop_after: int | None = None, elsewhere: str | None = SWEEP_OUTPUT) -> ExamplesSummary:
    """Process the plan's folder into the run folder's examples (resumable); returns what was done. A write
    the user must make possible (not writable, read-only, disk full, quota) stops the pass with one line, which
    tells how to write elsewhere with `elsewhere` (the config's output:, or `atlas examples -o`).

    `stop_after` (tests) ends the pass after that many photos, as a kill would, after a checkpoint.
    """
    run_folder = Path(run_folder)
    started = time.perf_counter()
    entries, bad = list_photos(plan.folder)
    if not entries:
        raise UserError(f"examples folder {plan.folder} has no photos" + (f" ({len(bad)} unreadable entries)"
                                                                           if bad else "")
                        + "; give a folder of JPEG/PNG/... photos, or `probes`")
    lock = claim_folder(run_folder, model, LOCK_FILE, "examples", elsewhere)
    try:
        with stop_on_write_errors(run_folder, elsewhere):
            summary = _run_locked(plan, run_folder, model, entries, bad, progress, stop_after)
    finally:
        lock.release()
    summary.seconds = time.perf_counter() - started
    return summary


def _run_locked(plan: ExamplesPlan, run_folder: Path, model: Any, entries: list[Entry],
                bad: list[tuple[str, str]], progress: bool, stop_after: int | None) -> ExamplesSummary:
    hash_ = plan.settings_hash(model.render_key)
    layers = [model.layer(name) for name in plan.layers]
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
        writer = _Checkpoint(plan, run_folder, manifest, state, hash_, model.grids,
                             forget=gone + [e.name for e in changed], rekeyed=[] if summary.restarted else rekeyed,
                             summary=summary)
        _process(plan, model, layers, state, writer, todo, summary, progress, stop_after)
        writer.commit(final=True)
        if not state.photos:
            raise UserError(f"examples folder {plan.folder} has no readable photo ({len(summary.bad)} files "
                            f"skipped: {', '.join(f'{n} ({r})' for n, r in summary.bad[:SHOWN_BAD])})")
    summary.bad_file = run_folder / SKIPPED_FILE
    atomic_write_text(summary.bad_file, "".join(f"{name}\t{reason}\n" for name, reason in summary.bad))
    _remove_unused(run_folder, hash_, stop_after is None)
    return summary


def _process(plan: ExamplesPlan, model: Any, layers: list[Layer], state: _State, writer: _Checkpoint,
             todo: list[Entry], summary: ExamplesSummary, progress: bool, stop_after: int | None) -> None:
    """Read, fit, batch and merge every photo of `todo`, with checkpoints along the way."""
    from tqdm import tqdm

    peaks = _peaks_fn(model, plan.layers)
    with tqdm(total=len(todo), unit="photo", desc="examples", disable=None if progress else True,
              file=sys.stderr) as bar:
        for batch in fitted_batches(todo, plan, writer.hash, summary.bad, bar):
            seen = len(state.photos)
            for fitted in batch:
                state.photos[fitted.record.photo] = fitted.record
                writer.window[fitted.record.photo] = fitted
            start = time.perf_counter()
            _merge(peaks, model, layers, state, batch, seen)
            summary.network_seconds += time.perf_counter() - start
            summary.processed += len(batch)
            bar.update(len(batch))
            if writer.due():
                writer.commit()
            if stop_after is not None and summary.processed >= stop_after:
                break


class Fitting(Protocol):
    """How photos are fitted and batched: an `ExamplesPlan`, or any plan with these fields (the maps pass's)."""

    size: int
    fit: str
    batch_size: int


def fitted_batches(todo: list[Entry], plan: Fitting, hash_: str, bad: list[tuple[str, str]],
                   bar: Any) -> Iterator[list[Fitted]]:
    """Fitted photos in batches of one input size; unreadable files go to `bad` (and the bar moves on)."""
    pending: dict[tuple[int, int], list[Fitted]] = {}
    for entry, result in _read_ahead(todo, plan, hash_):
        if isinstance(result, str):
            bad.append((entry.name, result))
            bar.update(1)
            continue
        shape = result.pixels.shape[:2]
        pending.setdefault(shape, []).append(result)
        if len(pending[shape]) >= plan.batch_size:
            yield pending.pop(shape)
        elif sum(len(v) for v in pending.values()) >= 4 * plan.batch_size:  # many sizes: bound memory
            yield pending.pop(max(pending, key=lambda k: len(pending[k])))
    yield from (batch for batch in pending.values() if batch)


def _read_ahead(todo: list[Entry], plan: Fitting, hash_: str) -> Iterator[tuple[Entry, Fitted | str]]:
    """(entry, fitted photo or the reason it cannot be used), in order, decoded on two threads a little ahead
    of the network (at most two batches in flight, so memory does not grow with the folder)."""
    ahead = 2 * plan.batch_size
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(_read_fitted, e, plan, hash_) for e in todo[:ahead]]
        for i, entry in enumerate(todo):
            if i + ahead < len(todo):
                futures.append(pool.submit(_read_fitted, todo[i + ahead], plan, hash_))
            yield entry, futures[i].result()
            futures[i] = None  # type: ignore[call-overload]  # drop the photo once handed on


def _read_fitted(entry: Entry, plan: Fitting, hash_: str) -> Fitted | str:
    """The fitted photo, or the reason it cannot be used (without the path, which the summary names)."""
    try:
        sha, image = read_entry(entry)
    except UserError as exc:
        return str(exc).removeprefix(f"photo {entry.path} ")
    return fit_photo(entry.name, entry.key, sha, image, plan.size, plan.fit, hash_)


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


def _merge(peaks: Any, model: Any, layers: list[Layer], state: _State, batch: list[Fitted], seen: int) -> None:
    """One forward pass of the batch; each layer's maxima merged into its top lists."""
    images = np.stack([f.pixels for f in batch])
    ids = np.array([state.photo_id(f.record.photo) for f in batch], np.int64)
    grids = model.grids(*images.shape[1:3])
    for layer, (value, where) in zip(layers, peaks(images)):
        width = grids[layer.name].size[1]
        where = where.numpy()
        state.lists[layer.name].merge(value.numpy(), ids, where // width, where % width, seen)


class _Checkpoint:
    """Writes the changed top lists: their crops and thumbnails first, then one manifest transaction."""

    def __init__(self, plan: ExamplesPlan, run_folder: Path, manifest: Manifest, state: _State, hash_: str,
                 grids: Any, forget: list[str], rekeyed: list[ExamplePhoto], summary: ExamplesSummary) -> None:
        self.plan, self.folder, self.manifest, self.state, self.hash = plan, run_folder, manifest, state, hash_
        self.grids = grids  # Model.grids
        self.window: dict[str, Fitted] = {}  # photos processed since the last commit
        self.forget = forget
        self.rekeyed = rekeyed  # unchanged photos recorded again with their new size and mtime
        self.summary = summary
        self.last = time.monotonic()

    def due(self) -> bool:
        held = sum(f.work.width * f.work.height * 3 for f in self.window.values())
        return time.monotonic() - self.last > CHECKPOINT_SECONDS or held >= CHECKPOINT_BYTES

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
        self.forget, self.rekeyed, self.last = [], [], time.monotonic()
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

    def _entries(self, layer: Layer, channel: int, depth: int | None = None) -> list[Example]:
        """A channel's list as records (the first `depth`; all by default)."""
        state, top = self.state, self.state.lists[layer.name]
        entries = []
        for rank in range(depth or top.depth):
            pid = int(top.photo[channel, rank])
            if pid < 0:
                break
            photo = state.photos[state.names[pid]]
            row, col = int(top.row[channel, rank]), int(top.col[channel, rank])
            grid = _grid(self.plan, photo, layer, self.grids)
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
                work = self.window[photo].work if photo in self.window else self._reload(record)
                jobs += [pool.submit(self._write_file, path, work, work.width / record.width, box)
                         for path, box in wanted]
            for job in jobs:
                job.result()
        sync_folders({(self.folder / path).parent for paths in missing.values() for path, _ in paths})

    def _write_file(self, path: str, work: Image.Image, scale: float, box: tuple[int, int, int, int] | None) -> None:
        write_patch(self.folder / path, work, scale, box)

    def _reload(self, record: ExamplePhoto) -> Image.Image:
        """A recorded photo read again for its crops (a JPEG decoded at a reduced scale when that suffices)."""
        if self.plan.folder == PROBES:
            return _probe_image(record.photo)
        path = Path(self.plan.folder).expanduser() / record.photo
        return work_copy(load_photo_image(path, max(MAX_PIXELS, record.width * record.height), draft=WORK_SHORT))


def write_patch(target: Path, work: Image.Image, scale: float, box: tuple[int, int, int, int] | None) -> None:
    """A JPEG thumbnail of the whole photo (box None) or the crop of `box` (in original pixels; `scale` maps them
    to `work`'s), written atomically (the caller syncs the folder)."""
    if box is None:
        image = work.copy()
        image.thumbnail((THUMB_PX, THUMB_PX), Image.Resampling.LANCZOS)
    else:
        x0, y0, x1, y1 = (round(v * scale) for v in box)
        image = work.crop((x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)))
        if max(image.size) > CROP_PX:
            image.thumbnail((CROP_PX, CROP_PX), Image.Resampling.LANCZOS)
    atomic_write_bytes(target, encode(np.asarray(image), "jpg", quality=85), sync_folder=False)


def _grid(plan: ExamplesPlan, photo: ExamplePhoto, layer: Layer, grids: Any) -> Any:
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
