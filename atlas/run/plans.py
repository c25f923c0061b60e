"""The plans of the passes over a run folder, as plain data: dataset examples, activation maps, circuits, per-photo
explanations.

Resolved once from a config (`atlas.run.plan`) or the command line and handed to the passes (`atlas.analysis`);
this module imports no pass, so the sweep, its plan and its dry run load none of their code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from atlas.images import SHIPPED_FOLDER
from atlas.render.settings import RenderSettings

EXAMPLES_FORMAT = 1  # bump when the meaning of recorded examples changes
CROP_PX = 128  # long side of a saved patch
THUMB_PX = 512  # long side of a photo's thumbnail
MAPS_FORMAT = 1  # bump when the meaning of samples or cells changes
CLIP_PERCENTILES = (1.0, 99.0)  # each layout axis is clipped to these percentiles before gridding
CELL_PX = 96  # map cells' render size


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


def default_cell_settings(method: str = "deepdream") -> RenderSettings:
    """The render settings of map cells: small images (cells are icons), the `direction` objective.

    96 px, the icon size of Lucid's activation-atlas recipe (`activation_atlas(icon_size=96)`). DeepDream: 2
    octaves of 12 steps; Fourier: 256 Adam steps (benchmarks/map_speed.py measures both)."""
    if method == "fourier":
        return RenderSettings(objective="direction", method="fourier", size=CELL_PX, steps=256)
    return RenderSettings(objective="direction", size=CELL_PX, octaves=2, steps=12)


@dataclass(frozen=True)
class MapPlan:
    """What a map pass does, resolved once (from a config's `map:` or the command line)."""

    folder: str  # a folder of photos, or "probes"
    layers: tuple[str, ...]  # tensor names: catalogued layers or block outputs such as mixed4c
    samples: int = 100_000  # per layer, at most
    per_photo: int = 50  # positions sampled per photo and layer (at most the map's inner positions)
    grids: tuple[int, ...] = (10, 20)  # cells a side, one zoom level each (at most 500 cells a layer)
    min_samples: int = 5  # a cell with fewer is dropped
    neighbours: int = 50  # UMAP n_neighbors (published)
    min_dist: float = 0.05  # UMAP min_dist (published)
    metric: str = "cosine"  # UMAP metric (published)
    seed: int = 0
    size: int = 224  # photos' shorter side, centred square (as the examples pass's `fit: crop`)
    batch_size: int = 16  # photos per forward pass
    crops: int = 4  # photo crops shown per cell
    power: float = 3.0  # of the cosine in the direction objective (docs/maps.md: why 3)
    render: RenderSettings = field(default_factory=default_cell_settings)
    render_cells: bool = True  # False: sample and lay out only

    def sampling_hash(self, model_sha: str, listing: str) -> str:
        """What changes a sample: the photos (names and keys), weights, layers, size, per-photo count, seed."""
        blob = json.dumps({"folder": self.folder, "listing": listing, "model": model_sha, "layers": list(self.layers),
                           "size": self.size, "per_photo": self.per_photo, "samples": self.samples,
                           "seed": self.seed, "format": MAPS_FORMAT}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def layout_hash(self, sampling: str) -> str:
        """What changes a layer's cells: its samples and the layout settings."""
        blob = json.dumps({"sampling": sampling, "grids": list(self.grids), "min": self.min_samples,
                           "neighbours": self.neighbours, "min_dist": self.min_dist, "metric": self.metric,
                           "seed": self.seed, "crops": self.crops, "clip": CLIP_PERCENTILES}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def render_hash(self, layout: str) -> str:
        """What changes a cell's render: its direction (the layout) and the render settings."""
        blob = json.dumps({"layout": layout, "render": self.render.pixel_dict(), "power": self.power,
                           "seed": self.seed}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ClassesPlan:
    """The class visualisations a run makes, resolved once from the config's `classes:` against the model's labels:
    every class in every noise-started mode, on the classifier's logits with the `class` objective."""

    indices: tuple[int, ...]  # class indices, as asked (each once)
    labels: tuple[str, ...]  # their names, as the model's labels give them
    count: int  # the classifier's classes
    logits: str  # the node of the classifier's logits that the renders climb
    modes: tuple[str, ...]  # the noise-started mode ids they are rendered in
    hashes: dict[str, str] = field(default_factory=dict)  # mode id -> settings hash of its class renders

    def to_dict(self) -> dict[str, object]:
        """What run.json records (`classes`)."""
        return {"count": self.count, "logits": self.logits, "modes": list(self.modes),
                "list": [{"index": i, "label": label} for i, label in zip(self.indices, self.labels)]}


CLASS_PHOTOS_FORMAT = 1  # bump when the meaning of classes/<hash>/scores.json changes
CLASS_PHOTOS_TOP = 9  # photos listed per class
CLASS_THUMB_PX = 224  # long side of a listed photo's thumbnail


@dataclass(frozen=True)
class ClassPhotosPlan:
    """The class-photos pass: the classifier's logits on every photo of the examples folder (fitted as the examples
    pass fits them), and per rendered class the photos that score highest (atlas.analysis.class_photos)."""

    folder: str  # the examples folder (or probes)
    size: int
    fit: str
    batch_size: int
    classes: tuple[int, ...]
    logits: str
    top: int = CLASS_PHOTOS_TOP

    def settings_hash(self, model_key: str, listing: str) -> str:
        """What changes the recorded lists: the photos (their listing's digest), weights, fitting, classes."""
        blob = json.dumps({"folder": self.folder, "listing": listing, "model": model_key, "size": self.size,
                           "fit": self.fit, "classes": list(self.classes), "logits": self.logits, "top": self.top,
                           "format": CLASS_PHOTOS_FORMAT, "thumb": CLASS_THUMB_PX}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CircuitsPlan:
    """What the circuits pass does, resolved once from the config's `circuits:`."""

    top: int = 10
    batch_size: int = 32
    layers: tuple[str, ...] | None = None  # None: every catalogued layer (a unit's outputs need the later ones)


EXPLAIN_FORMAT = 1  # bump when the meaning of the arrays of explain/<sha256>/<layer>.npz changes
GROUP_PX = 96  # neuron groups' render size (icons, as map cells)
ZERO_BASELINE = "zero"  # the article's: activation x gradient; else the mean activation over a folder of photos
DEFAULT_BASELINE = SHIPPED_FOLDER  # `photos`: the mean over the shipped photos (atlas/data/photos)
IG_STEPS = 16  # integrated gradients' steps: the sums within 0.75 of logit(x) - logit(baseline) (docs/explain.md)


def default_group_settings() -> RenderSettings:
    """The render settings of neuron groups: icons like map cells (96 px, DeepDream, 2 octaves of 12 steps),
    with the `direction` objective of the group's channel factor."""
    return default_cell_settings("deepdream")


@dataclass(frozen=True)
class ExplainPlan:
    """What an explain pass does, resolved once (from a config's `explain:` or the command line)."""

    photos: tuple[str, ...]  # photo files and folders of photos (searched recursively), as found on disk
    layers: tuple[str, ...]  # by the names given: catalogued layers or block outputs such as mixed4d, low to high
    classes: int = 5  # top classes attributed (0 or a model without classifier: none)
    groups: int = 6  # neuron groups (NMF components) per photo and layer
    top: int = 6  # channels per position in the semantic dictionary
    seed: int = 0  # of NMF and of the group renders
    size: int = 224  # the network's input: the photo's centred square at this size
    batch_size: int = 8  # photos per forward and backward pass
    baseline: str = DEFAULT_BASELINE  # attribution is (activation - baseline) x gradient: zero, photos, a folder
    ig_steps: int = IG_STEPS  # the gradient integrated from the baseline over this many steps; 0: at the photo
    between: bool = False  # also the attribution between consecutive layers (into the upper one's npz)
    render: bool = True  # also render the neuron groups and the channels the pages show that the run lacks
    group_render: RenderSettings = field(default_factory=default_group_settings)
    power: float = 3.0  # of the cosine in the groups' direction objective (as map cells)

    def settings_hash(self, model_key: str, reference: str = "") -> str:
        """Everything that changes a photo's arrays at a layer: the weights and preprocessing, the input size, the
        counts, the seed, the baseline and its reference photos (`reference`: their listing's digest; the layers
        and photos are per file)."""
        blob = json.dumps({"model": model_key, "size": self.size, "classes": self.classes, "groups": self.groups,
                           "top": self.top, "seed": self.seed, "between": self.between, "baseline": self.baseline,
                           "reference": reference, "ig_steps": self.ig_steps, "format": EXPLAIN_FORMAT},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def group_hash(self, settings_hash: str) -> str:
        """What changes a neuron group's render: its arrays (the settings hash) and the render settings."""
        blob = json.dumps({"arrays": settings_hash, "render": self.group_render.pixel_dict(), "power": self.power,
                           "seed": self.seed}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
