"""A folder's photos for the passes driven by photos: listing, reading (upright), fitting to the network's input,
bad files and their summary line, batches of one input size decoded a little ahead of the network; and the
crops and thumbnails cut from them.

Each photo is read upright (EXIF) and scaled with Pillow's bicubic filter so its shorter side is `size`; then
either its centred `size` x `size` square is taken (`fit: crop`, batched freely) or the whole scaled photo is kept
(`fit: whole`, batched with photos of the same size; never padded).
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from atlas.atomic import atomic_write_bytes, atomic_write_text
from atlas.errors import UserError
from atlas.images import MAX_PIXELS, encode, load_photo_image
from atlas.model.catalogue import BlockOutput, Layer
from atlas.probes import PROBES, VERSION, probe_makers
from atlas.run.manifest import PhotoRecord
from atlas.run.plans import CROP_PX, THUMB_PX

WORK_SHORT = 896  # photos are kept at most this size (shorter side) between a batch and its checkpoint
SHOWN_BAD = 5  # bad files named in the summary


@dataclass(frozen=True)
class Entry:
    """One photo of the folder (or one probe)."""

    name: str  # POSIX path relative to the folder, or probes/<name>
    path: Path | None  # None for a probe
    key: str  # "<bytes>:<mtime_ns>" of a file, the probe set's version for a probe


@dataclass(frozen=True)
class InputFit:
    """How photos become the network's input, and how many go through it at once."""

    size: int  # the photo's shorter side in the network's input
    fit: str = "crop"  # crop: the centred size x size square; whole: the whole scaled photo
    batch_size: int = 16


@dataclass
class Fitted:
    """A photo fitted to the network's input, and what is needed to map positions back to it."""

    record: PhotoRecord  # (without a thumbnail path: a pass that keeps thumbnails sets its own)
    pixels: np.ndarray  # float32 [h, w, 3], 0..255: the network's input
    work: Image.Image  # the upright photo, at most WORK_SHORT on its shorter side: crops are cut from it


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


def photos_to_use(folder: str, what: str) -> tuple[list[Entry], list[tuple[str, str]]]:
    """`list_photos`, and one line naming the fix when the folder has none (`what`: examples, map)."""
    entries, bad = list_photos(folder, f"{what} folder")
    if not entries:
        raise UserError(f"{what} folder {folder} has no photos" + (f" ({len(bad)} unreadable entries)" if bad else "")
                        + "; give a folder of JPEG/PNG/... photos, or `probes`")
    return entries, bad


def no_readable_photo(what: str, folder: str, bad: list[tuple[str, str]]) -> UserError:
    """The error of a pass that found photos but could read none of them."""
    return UserError(f"{what} folder {folder} has no readable photo ({len(bad)} files skipped: "
                     f"{', '.join(f'{n} ({r})' for n, r in bad[:SHOWN_BAD])})")


def skipped_line(what: str, bad: list[tuple[str, str]], listed_in: object) -> str:
    """The summary line of a pass's skipped files: how many, the first few with their reasons, where all are."""
    named = ", ".join(f"{name} ({reason})" for name, reason in bad[:SHOWN_BAD])
    more = f" and {len(bad) - SHOWN_BAD} more" if len(bad) > SHOWN_BAD else ""
    return f"{what}: skipped {len(bad)} unreadable files: {named}{more}; full list: {listed_in}"


def write_skipped(path: Path, bad: list[tuple[str, str]]) -> None:
    """The full list of skipped files, one `name<TAB>reason` a line."""
    atomic_write_text(path, "".join(f"{name}\t{reason}\n" for name, reason in bad))


def listing_digest(entries: list[Entry]) -> str:
    """A digest of the folder's photos (names and keys): a changed folder is a new listing."""
    return hashlib.sha256("\n".join(f"{e.name}\t{e.key}" for e in entries).encode()).hexdigest()[:16]


def probe_image(name: str) -> Image.Image:
    """The image of the probe entry `probes/<name>` (a KeyError for an unknown one)."""
    return Image.fromarray(dict(probe_makers())[name.split("/", 1)[1]]())


def entry_sha(entry: Entry) -> str | None:
    """The sha256 of an entry's bytes (of a probe's pixels); None if the file cannot be read."""
    if entry.path is None:
        return hashlib.sha256(probe_image(entry.name).tobytes()).hexdigest()
    try:
        return hashlib.sha256(entry.path.read_bytes()).hexdigest()
    except OSError:
        return None


def read_entry(entry: Entry, max_pixels: int | None = None) -> tuple[str, Image.Image]:
    """(sha256, upright RGB image) of an entry; a UserError says why a file cannot be used."""
    if entry.path is None:
        image = probe_image(entry.name)
        return hashlib.sha256(image.tobytes()).hexdigest(), image
    try:
        data = entry.path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot be read ({exc.strerror})") from None
    return hashlib.sha256(data).hexdigest(), load_photo_image(entry.path, max_pixels or MAX_PIXELS, data=data)


def fit_to_input(name: str, key: str, sha: str, image: Image.Image, size: int, fit: str) -> Fitted:
    """Scale the shorter side to `size` (bicubic); with fit crop take the centred size x size square."""
    width, height = image.size
    scaled = (size, max(size, round(height * size / width))) if width <= height else \
        (max(size, round(width * size / height)), size)
    resized = image.resize(scaled, Image.Resampling.BICUBIC)
    left, top = 0, 0
    if fit == "crop":
        left, top = (scaled[0] - size) // 2, (scaled[1] - size) // 2
        resized = resized.crop((left, top, left + size, top + size))
    record = PhotoRecord(photo=name, sha256=sha, key=key, width=width, height=height, scaled_width=scaled[0],
                         scaled_height=scaled[1], left=left, top=top)
    return Fitted(record, np.asarray(resized, dtype=np.float32), work_copy(image))


def work_copy(image: Image.Image) -> Image.Image:
    """The image crops are cut from: the photo, shrunk to WORK_SHORT on its shorter side if larger."""
    short = min(image.size)
    if short <= WORK_SHORT:
        return image
    factor = WORK_SHORT / short
    return image.resize((round(image.width * factor), round(image.height * factor)), Image.Resampling.BICUBIC)


def reload_photo(folder: str, record: PhotoRecord) -> Image.Image:
    """A recorded photo read again for its crops (a JPEG decoded at a reduced scale when that suffices)."""
    if folder == PROBES:
        return probe_image(record.photo)
    path = Path(folder).expanduser() / record.photo
    return work_copy(load_photo_image(path, max(MAX_PIXELS, record.width * record.height), draft=WORK_SHORT))


def patch_box(photo: PhotoRecord, layer: Layer | BlockOutput, offset: tuple[float, float], jump: tuple[int, int],
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


def write_patch(target: Path, work: Image.Image, scale: float, box: tuple[int, int, int, int] | None,
                thumb: int = THUMB_PX) -> None:
    """A JPEG thumbnail of the whole photo (box None; long side at most `thumb`) or the crop of `box` (in original
    pixels; `scale` maps them to `work`'s), written atomically (the caller syncs the folder)."""
    if box is None:
        image = work.copy()
        image.thumbnail((thumb, thumb), Image.Resampling.LANCZOS)
    else:
        x0, y0, x1, y1 = (round(v * scale) for v in box)
        image = work.crop((x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)))
        if max(image.size) > CROP_PX:
            image.thumbnail((CROP_PX, CROP_PX), Image.Resampling.LANCZOS)
    atomic_write_bytes(target, encode(np.asarray(image), "jpg", quality=85), sync_folder=False)


def fitted_batches(todo: list[Entry], fit: InputFit, bad: list[tuple[str, str]], bar: Any) -> Iterator[list[Fitted]]:
    """Fitted photos in batches of one input size; unreadable files go to `bad` (and the bar moves on)."""
    pending: dict[tuple[int, int], list[Fitted]] = {}
    for entry, result in _read_ahead(todo, fit):
        if isinstance(result, str):
            bad.append((entry.name, result))
            bar.update(1)
            continue
        shape = result.pixels.shape[:2]
        pending.setdefault(shape, []).append(result)
        if len(pending[shape]) >= fit.batch_size:
            yield pending.pop(shape)
        elif sum(len(v) for v in pending.values()) >= 4 * fit.batch_size:  # many sizes: bound memory
            yield pending.pop(max(pending, key=lambda k: len(pending[k])))
    yield from (batch for batch in pending.values() if batch)


def _read_ahead(todo: list[Entry], fit: InputFit) -> Iterator[tuple[Entry, Fitted | str]]:
    """(entry, fitted photo or the reason it cannot be used), in order, decoded on two threads a little ahead
    of the network (at most two batches in flight, so memory does not grow with the folder)."""
    ahead = 2 * fit.batch_size
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(_read_fitted, e, fit) for e in todo[:ahead]]
        for i, entry in enumerate(todo):
            if i + ahead < len(todo):
                futures.append(pool.submit(_read_fitted, todo[i + ahead], fit))
            yield entry, futures[i].result()
            futures[i] = None  # type: ignore[call-overload]  # drop the photo once handed on


def _read_fitted(entry: Entry, fit: InputFit) -> Fitted | str:
    """The fitted photo, or the reason it cannot be used (without the path, which the summary names)."""
    try:
        sha, image = read_entry(entry)
    except UserError as exc:
        return str(exc).removeprefix(f"photo {entry.path} ")
    return fit_to_input(entry.name, entry.key, sha, image, fit.size, fit.fit)
