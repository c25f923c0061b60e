"""The class-photos pass's files in a run folder, as plain data: for each class the run renders, the photos of its
examples folder that the classifier scores highest (atlas.analysis.class_photos writes them, the site reads them).

    classes/<hash>/scores.json          {"folder", "hash", "logits", "photos": N, "classes": {"<index>": [entry, ...]}}
    classes/<hash>/photos/<sha12>.jpg   a thumbnail of each listed photo

An entry is {"photo": name in the folder, "sha256", "thumb": run-relative path, "logit", "probability"}, best first
(by logit). One hash folder at a time: a pass with other settings or photos replaces it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atlas.run.manifest import CLASSES_DIR

SCORES_FILE = "scores.json"


@dataclass(frozen=True)
class ClassPhoto:
    """A photo of the examples folder as scored for one class."""

    photo: str  # its path in the folder (POSIX), or probes/<name>
    sha256: str
    thumb: str  # run-relative path of its thumbnail
    logit: float  # the class's logit on the photo (fitted as the examples pass fits it)
    probability: float  # the classifier's softmax probability of the class

    def to_dict(self) -> dict[str, Any]:
        return {"photo": self.photo, "sha256": self.sha256, "thumb": self.thumb, "logit": self.logit,
                "probability": self.probability}


def class_photos_root(settings_hash: str) -> str:
    """The folder of one class-photos setting's files, relative to the run folder."""
    return f"{CLASSES_DIR}/{settings_hash}"


def class_photo_thumb(settings_hash: str, sha256: str) -> str:
    """A listed photo's thumbnail, relative to the run folder."""
    return f"{class_photos_root(settings_hash)}/photos/{sha256[:12]}.jpg"


def scores_path(settings_hash: str) -> str:
    return f"{class_photos_root(settings_hash)}/{SCORES_FILE}"


def read_class_photos(run_folder: str | Path) -> dict[int, list[ClassPhoto]]:
    """Class index -> its top photos, best first ({} when the run has none, or its file is unreadable)."""
    root = Path(run_folder) / CLASSES_DIR
    found = sorted(root.glob(f"*/{SCORES_FILE}")) if root.is_dir() else []
    if not found:
        return {}
    try:
        data = json.loads(found[-1].read_text(encoding="utf-8"))
        return {int(index): [ClassPhoto(**entry) for entry in entries]
                for index, entries in data["classes"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}
