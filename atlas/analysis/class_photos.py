"""The class-photos pass: the classifier's logits on every photo of the examples folder, and for each class the run
renders the photos that score highest (atlas.run.classfiles describes the files).

Beside the examples pass: the same folder, fitted to the network's input the same way (`atlas.analysis.photos`),
one forward pass of the logits per batch. What it keeps is small (the rendered classes' logits of every photo), so
it is not checkpointed: a killed pass starts over. A folder whose listing, weights, fitting and classes are
unchanged since the last pass is not read again.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from atlas.analysis.passes import Checkpoint, PhotoPass, claimed_folder, process_photos
from atlas.analysis.photos import Fitted, InputFit, listing_digest, photos_to_use, reload_photo, write_patch
from atlas.atomic import SWEEP_OUTPUT, atomic_write_text, sync_folders
from atlas.run.classfiles import ClassPhoto, class_photo_thumb, class_photos_root, scores_path
from atlas.run.manifest import CLASSES_DIR, PhotoRecord
from atlas.run.plans import CLASS_THUMB_PX, ClassPhotosPlan

LOCK_FILE = ".class-photos.lock"


@dataclass
class ClassPhotosSummary:
    """What a class-photos pass did."""

    folder: str
    photos: int = 0  # scored
    classes: int = 0
    reused: bool = False  # nothing changed since the last pass
    seconds: float = 0.0
    bad: list[tuple[str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        if self.reused:
            return [f"class photos: {self.folder} unchanged, its scores kept"]
        return [f"class photos: {self.photos:,} photos of {self.folder} scored for {self.classes} classes in "
                f"{self.seconds:.1f} s" + (f" ({len(self.bad)} files skipped)" if self.bad else "")]


class ClassScores(PhotoPass):
    """Keeps each photo's logits of the planned classes and their softmax probabilities."""

    what = "class photos"

    def __init__(self, plan: ClassPhotosPlan, model: Any) -> None:
        self.columns = np.array(plan.classes, np.int64)
        self.logits = model.layer_fn(plan.logits)
        self.records: list[PhotoRecord] = []
        self.scores: list[np.ndarray] = []  # per batch [n, classes]: logits
        self.probabilities: list[np.ndarray] = []
        self.checkpoint = Checkpoint(float("inf"), 2**62)  # never due: the pass starts over when killed

    def take(self, batch: list[Fitted]) -> None:
        out = np.asarray(self.logits(np.stack([f.pixels for f in batch])), np.float64)
        out = out.reshape(len(batch), -1)
        shifted = out - out.max(axis=1, keepdims=True)
        probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
        self.records += [f.record for f in batch]
        self.scores.append(out[:, self.columns])
        self.probabilities.append(probabilities[:, self.columns])

    def held(self) -> int:
        return 0

    def commit(self, final: bool) -> None:
        """Nothing to record before the end (see the module's docstring)."""

    def top(self, count: int) -> dict[int, list[tuple[PhotoRecord, float, float]]]:
        """Class index -> its `count` best photos: (record, logit, probability), by logit, ties by name."""
        if not self.records:
            return {}
        scores, probabilities = np.concatenate(self.scores), np.concatenate(self.probabilities)
        names = [r.photo for r in self.records]
        best = {}
        for column, index in enumerate(self.columns):
            order = sorted(range(len(names)), key=lambda i: (-scores[i, column], names[i]))[:count]
            best[int(index)] = [(self.records[i], float(scores[i, column]), float(probabilities[i, column]))
                                for i in order]
        return best


def run_class_photos(plan: ClassPhotosPlan, run_folder: str | Path, model: Any, progress: bool = True,
                     elsewhere: str | None = SWEEP_OUTPUT) -> ClassPhotosSummary:
    """Score the plan's folder for its classes into the run folder (skipped when nothing changed)."""
    run_folder = Path(run_folder)
    began = time.perf_counter()
    entries, bad = photos_to_use(plan.folder, "examples")
    hash_ = plan.settings_hash(model.render_key, listing_digest(entries))
    summary = ClassPhotosSummary(folder=plan.folder, classes=len(plan.classes), bad=list(bad))
    if (run_folder / scores_path(hash_)).is_file():
        summary.reused = True
        return summary
    with claimed_folder(run_folder, model, "class photos", LOCK_FILE, elsewhere):
        scores = ClassScores(plan, model)
        done = process_photos(scores, entries, InputFit(plan.size, plan.fit, plan.batch_size), summary.bad, progress)
        summary.photos = done.processed
        lists = scores.top(plan.top)
        _write(run_folder, plan, hash_, lists, done.processed)
    summary.seconds = time.perf_counter() - began
    return summary


def _write(run_folder: Path, plan: ClassPhotosPlan, hash_: str,
           lists: dict[int, list[tuple[PhotoRecord, float, float]]], scored: int) -> None:
    """The listed photos' thumbnails, then the scores (the file that says the pass is done), then other settings'
    files removed."""
    thumbs = {record.sha256: record for entries in lists.values() for record, _, _ in entries}
    for sha, record in thumbs.items():
        target = run_folder / class_photo_thumb(hash_, sha)
        if not target.is_file():
            write_patch(target, reload_photo(plan.folder, record), 1.0, None, CLASS_THUMB_PX)
    if thumbs:
        sync_folders({(run_folder / class_photo_thumb(hash_, sha)).parent for sha in thumbs})
    classes = {str(index): [ClassPhoto(record.photo, record.sha256, class_photo_thumb(hash_, record.sha256), logit,
                                       probability).to_dict() for record, logit, probability in entries]
               for index, entries in lists.items()}
    atomic_write_text(run_folder / scores_path(hash_), json.dumps(
        {"folder": plan.folder, "hash": hash_, "logits": plan.logits, "photos": scored, "classes": classes},
        indent=1, sort_keys=True) + "\n")
    root = run_folder / CLASSES_DIR
    for other in root.iterdir():
        if other.is_dir() and other.name != Path(class_photos_root(hash_)).name:
            shutil.rmtree(other, ignore_errors=True)
