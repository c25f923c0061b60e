"""The per-photo explanations in a run folder, read as plain data (no TensorFlow): for the site and figures.

    explain/index.json                      the explained photos (name, sha256, top classes, layers), the layers'
                                            shapes and channel sources, the settings and the classifier
    explain/<sha256>/photo.jpg              the photo as the network saw it: its centred square at the input size
    explain/<sha256>/<layer>.npz            one photo at one layer: the arrays of `LayerExplanation`
    explain/<sha256>/<layer>-group-<i>.png  neuron group i, rendered with the direction objective of its channels
    explain/skipped.txt                     files the last pass could not read, with the reason
    explain/baseline.json                   each layer's baseline (its mean activation per channel over the
                                            reference photos), with what it was made from

Arrays of `<layer>.npz` (H x W: the layer's map at the input size; C: its channels; k top classes; g groups; n
channels per position in the dictionary). With no classifier, k = 0 and the class arrays are empty:

    classes [k] int32            class indices, best first
    logits [k] float32           their logits (before the softmax)
    spatial [k, H, W] float32    per position, the sum over channels of (activation - baseline) x gradient of the
                                 class logit (integrated from the baseline: the index's settings, `attribution_of`)
    channels [k, C] float32      per channel, the same product summed over positions
    group_spatial [g, H, W]      NMF of the positions x channels activations: where each group fires ...
    group_channels [g, C]        ... and what it is; group_spatial x group_channels approximates the activations
    group_classes [g, k]         each group's attribution to each top class
    dictionary_channels [H, W, n] int32   per position, its n most active channels, strongest first
    dictionary_values [H, W, n] float32   and their activations
    from_<lower> [H, W, h, w]    (optional) attribution between layers: how much each position of the lower
                                 layer (h x w) feeds each position of this one
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from atlas.errors import UserError
from atlas.images import SHIPPED_FOLDER
from atlas.run.plans import ZERO_BASELINE

EXPLAIN_DIR = "explain"
INDEX_FILE = f"{EXPLAIN_DIR}/index.json"
EXPLAIN_SKIPPED_FILE = f"{EXPLAIN_DIR}/skipped.txt"
BASELINE_FILE = f"{EXPLAIN_DIR}/baseline.json"
PHOTO_FILE = "photo.jpg"
INDEX_VERSION = 1
ARRAYS = ("classes", "logits", "spatial", "channels", "group_spatial", "group_channels", "group_classes",
          "dictionary_channels", "dictionary_values")
BETWEEN_PREFIX = "from_"


def photo_dir(sha256: str) -> str:
    """A photo's folder, relative to the run folder."""
    return f"{EXPLAIN_DIR}/{sha256}"


def layer_file(sha256: str, layer: str) -> str:
    """A photo's arrays at one layer, relative to the run folder."""
    return f"{photo_dir(sha256)}/{layer}.npz"


def group_render(sha256: str, layer: str, group: int) -> str:
    """A neuron group's render, relative to the run folder."""
    return f"{photo_dir(sha256)}/{layer}-group-{group}.png"


@dataclass(frozen=True)
class ClassScore:
    """One of a photo's top classes."""

    index: int
    label: str  # from the model's label file, else "class <index>"
    logit: float


@dataclass(frozen=True)
class ExplainLayer:
    """An explained layer: a catalogued layer or a block output such as `mixed4d`."""

    name: str
    channels: int
    height: int  # of its map, for a photo at the input size
    width: int
    sources: list[tuple[str, int]] | None = None  # per channel, the catalogued (layer, channel) it is, if any

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "channels": self.channels, "height": self.height, "width": self.width,
                "sources": [list(s) for s in self.sources] if self.sources is not None else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExplainLayer:
        sources = data.get("sources")
        return cls(data["name"], data["channels"], data["height"], data["width"],
                   [(str(layer), int(c)) for layer, c in sources] if sources is not None else None)


@dataclass(frozen=True)
class ExplainedPhoto:
    """A photo of the index."""

    name: str  # as listed: relative to the folder, or the file's name
    sha256: str
    classes: list[ClassScore]  # best first; empty without a classifier
    layers: list[str]  # explained layers, low to high

    @property
    def photo(self) -> str:
        return f"{photo_dir(self.sha256)}/{PHOTO_FILE}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "layers": list(self.layers),
                "classes": [{"index": c.index, "label": c.label, "logit": c.logit} for c in self.classes]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExplainedPhoto:
        return cls(data["name"], data["sha256"], [ClassScore(**c) for c in data.get("classes", [])],
                   list(data["layers"]))


@dataclass(frozen=True)
class ExplainIndex:
    """explain/index.json."""

    photos: list[ExplainedPhoto]
    layers: dict[str, ExplainLayer]  # by name, low to high
    settings: dict[str, Any] = field(default_factory=dict)  # classes, groups, top, seed, size, hash ...
    classifier: str | None = None  # the logits node; None: the model has none, so no attribution

    def photo(self, key: str) -> ExplainedPhoto:
        """A photo by its name, file name, or sha256 (or a prefix of it of 8+ characters)."""
        for p in self.photos:
            if key in (p.name, Path(p.name).name, p.sha256) or (len(key) >= 8 and p.sha256.startswith(key)):
                return p
        names = ", ".join(p.name for p in self.photos[:10])
        raise UserError(f"no explained photo {key}; the run has: {names or 'none'}")

    def to_dict(self) -> dict[str, Any]:
        return {"version": INDEX_VERSION, "settings": self.settings, "classifier": self.classifier,
                "layers": [layer.to_dict() for layer in self.layers.values()],
                "photos": [p.to_dict() for p in self.photos]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExplainIndex:
        layers = [ExplainLayer.from_dict(layer) for layer in data.get("layers", [])]
        return cls([ExplainedPhoto.from_dict(p) for p in data.get("photos", [])],
                   {layer.name: layer for layer in layers}, dict(data.get("settings", {})), data.get("classifier"))


@dataclass(frozen=True)
class LayerExplanation:
    """One photo at one layer: the arrays of its .npz (see the module docstring)."""

    layer: str
    classes: np.ndarray
    logits: np.ndarray
    spatial: np.ndarray
    channels: np.ndarray
    group_spatial: np.ndarray
    group_channels: np.ndarray
    group_classes: np.ndarray
    dictionary_channels: np.ndarray
    dictionary_values: np.ndarray
    between: dict[str, np.ndarray] = field(default_factory=dict)  # lower layer -> [H, W, h, w]

    def arrays(self) -> dict[str, np.ndarray]:
        """What the .npz holds, by key."""
        out = {name: getattr(self, name) for name in ARRAYS}
        out.update({f"{BETWEEN_PREFIX}{lower}": a for lower, a in self.between.items()})
        return out


def attribution_of(settings: dict[str, Any]) -> str:
    """What the index's attribution is, in words for the pages and posters (an index made before baselines is
    activation x the gradient at the photo)."""
    baseline = settings.get("baseline", ZERO_BASELINE)
    steps = int(settings.get("ig_steps", 0))
    moved = "activation"
    if baseline != ZERO_BASELINE:
        count = settings.get("reference_photos")
        photos = f"{count} " if count else ""
        where = f"the {photos}shipped photos" if baseline == SHIPPED_FOLDER else \
            f"the {photos}photos of {Path(baseline).name}"
        moved = f"(activation − its mean over {where})"
    if not steps:
        return f"{moved} × gradient of the class logit"
    return f"{moved} × gradient of the class logit, integrated from the baseline ({steps} steps)"


def has_explanations(run_folder: str | Path) -> bool:
    return (Path(run_folder) / INDEX_FILE).is_file()


def read_index(run_folder: str | Path) -> ExplainIndex:
    """explain/index.json; a UserError names the fix when the run has no explanations or the file is damaged."""
    path = Path(run_folder) / INDEX_FILE
    if not path.is_file():
        raise UserError(f"{run_folder} has no explained photos; make them with "
                        f"`atlas explain PHOTO ... -o {run_folder} --layer LAYER`")
    try:
        return ExplainIndex.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path} is damaged ({exc}); run `atlas explain` on the same photos again") from None


def read_explanation(run_folder: str | Path, sha256: str, layer: str) -> LayerExplanation:
    """One photo's arrays at one layer; a UserError names the fix when they are missing."""
    path = Path(run_folder) / layer_file(sha256, layer)
    if not path.is_file():
        raise UserError(f"{run_folder} has no explanation of photo {sha256[:12]} at {layer}; make it with "
                        f"`atlas explain PHOTO -o {run_folder} --layer {layer}`")
    with np.load(path) as data:
        between = {key[len(BETWEEN_PREFIX):]: data[key] for key in data.files if key.startswith(BETWEEN_PREFIX)}
        return LayerExplanation(layer, between=between, **{name: data[name] for name in ARRAYS})
