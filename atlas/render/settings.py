"""The render stage's plain settings: what shapes a render's pixels, the precision and batch size chosen for a
device, and the names of methods, objectives and precisions. Imports no TensorFlow (not even indirectly), so
configs, plans and the sweep's parent process read them without starting it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace

from atlas.render import chain, devices
from atlas.render.devices import GIB, Device

PRECISIONS = ("float32", "bfloat16")  # the dtypes gradient steps may run in (atlas.model.graph maps them to tf's)
OBJECTIVES = ("channel", "negative", "neuron", "layer", "class")  # the named objectives (atlas.render.objectives)
PER_CHANNEL = frozenset({"channel", "negative", "neuron", "class"})  # ... each image of a batch aims at its own channel
CLASS = "class"  # the objective of class visualisations: a logit of the classifier (atlas.render.classes)
DIRECTION = "direction"  # the objective of activation-atlas cells (atlas.render.objectives.Direction)
METHODS = {"deepdream": 10, "fourier": 512, "maco": 512}  # method -> default steps
ADAM_METHODS = ("fourier", "maco")  # methods that optimise parameters by Adam (atlas.render.fourier)
# method -> Adam's default learning rate. MACO's paper climbs the phase at 1.0; on Lite0's class renders 0.3 is
# better (copy top-5 of its siblings 0.62 -> 0.88 over 24 classes; benchmarks/real_quality.py, docs/quality.md)
LEARNING_RATES = {"fourier": 0.05, "maco": 0.3}
DISPLAYS = ("raw", "visstd")  # how a DeepDream render from noise is saved (`visstd`)
AUTO = "auto"  # a method or display chosen for the network (`for_network`)
# what `auto` means on a trained network and on random weights: measured by benchmarks/real_quality.py
# (docs/quality.md): Fourier's class visualisations of EfficientNet-Lite0 survive a photocopy best; on random
# weights (the stand-in) DeepDream's fast pixel ascent is as specific and many times cheaper
TRAINED_DEFAULTS = {"method": "fourier", "display": "visstd"}
RANDOM_DEFAULTS = {"method": "deepdream", "display": "raw"}
DEEPDREAM_NOISE = ("octaves", "octave_scale", "step_size", "noise", "jitter", "laplacian_levels", "photo_octaves",
                   "photo_octave_scale", "photo_steps", "photo_step_size", "tile")  # unused by fourier
FOURIER_ONLY_KEYS = ("method", "learning_rate", "spectrum_std")  # settings (and the method) only Adam methods hash


@dataclass(frozen=True)
class RenderSettings:
    """Everything that shapes the pixels of a render. batch_size is not part of the pixel hash: another batch size
    rounds differently, which a whole render may amplify into drift to the same channel's dream (docs/dream.md)."""

    objective: str = "channel"  # channel | neuron | layer | negative | class (on the logits: atlas.render.classes)
    # deepdream (pixels; from noise or a photo) | fourier (a spectrum; from noise) | maco (the phase of a spectrum
    # whose magnitude is fixed to natural photos'; from noise)
    method: str = "deepdream"
    # from noise
    size: int = 224  # final side in pixels
    octaves: int = 3
    octave_scale: float = 1.4
    steps: int | None = None  # deepdream: per octave (default 10); fourier: Adam steps (default 512)
    step_size: float = 1.5
    noise: float = 10.0  # std of the start noise around mid-grey
    jitter: int = 8  # max roll in pixels per step
    laplacian_levels: int = 4
    # raw: the optimised pixels, clipped | visstd: the DeepDream notebook's display, (a - mean) / max(std, 1e-4) x
    # 0.1 + 0.5 of each image (the raw pixels are kept beside it); DeepDream from noise only
    display: str = "raw"
    # from a photo
    photo_octaves: int = 4
    photo_octave_scale: float = 1.4
    photo_steps: int = 10
    photo_step_size: float = 1.5
    photo_size: int | None = None  # longest side a base photo is scaled down to first (None: as it is)
    tile: int = 512
    # the fourier method (atlas.render.fourier)
    learning_rate: float | None = None  # Adam's (default: LEARNING_RATES of the method)
    spectrum_std: float = 0.01  # of the random start spectrum
    transforms: chain.Chain = chain.DEFAULT_CHAIN  # the random transforms every step looks through (atlas.render.chain)
    # facets: N images of each channel rendered together, pushed apart by the Gram-matrix diversity term
    diversity: int = 1
    # weight of the term against the mean objective of a channel's facets, the objective counted in units of
    # lift (the layer's channel spread on the start images), so one weight means the same for any network's
    # activation scale. 0.3 keeps each facet's lift >= half a single render's with both methods on the
    # stand-in, where 0.5 already costs it at mixed4e with DeepDream (docs/dream.md, Facets; tests/test_fourier.py)
    diversity_weight: float = 0.3
    # speed: the same batch size gives the same bytes on the same machine; another one may drift (see above).
    # precision "bfloat16" (opt-in; "auto" picks it on CPUs with
    # native bfloat16, AVX512_BF16 or AMX) is 1.1-1.5x faster with the same metrics on the stand-in, but
    # its coarser rounding lets a batched render drift far from the same channel rendered alone; its pixels
    # differ from float32's, so it is part of the pixel hash when set
    batch_size: int | None = None  # None: chosen from the device
    precision: str = "float32"  # float32 | bfloat16 | auto: of the weights and activations in gradient steps

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES and self.objective != DIRECTION:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}")
        if self.display not in DISPLAYS:
            raise ValueError(f"display must be one of {', '.join(DISPLAYS)}")
        if self.steps is None:
            object.__setattr__(self, "steps", METHODS[self.method])
        if self.learning_rate is None:
            object.__setattr__(self, "learning_rate", LEARNING_RATES.get(self.method, LEARNING_RATES["fourier"]))
        object.__setattr__(self, "transforms", tuple(self.transforms))
        for name in ("size", "octaves", "steps", "photo_octaves", "photo_steps", "tile", "laplacian_levels",
                     "diversity"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("batch_size", "photo_size"):  # None: chosen from the device, or the photo as it is
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("step_size", "photo_step_size", "learning_rate", "spectrum_std"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be more than 0")
        if self.diversity_weight < 0:
            raise ValueError("diversity_weight must be 0 or more")
        if self.octave_scale < 1 or self.photo_octave_scale < 1:
            raise ValueError("octave scales must be at least 1")
        if self.precision != "auto" and self.precision not in PRECISIONS:
            raise ValueError(f"precision must be auto or one of {', '.join(PRECISIONS)}")

    def resolved_precision(self) -> str:
        """The precision gradient steps run in on this machine."""
        return auto_precision() if self.precision == "auto" else self.precision

    def pixel_dict(self) -> dict[str, object]:
        """The settings that affect pixels (everything but batch_size; precision only when not float32, the
        method and its settings only for fourier, diversity only above 1, so hashes of earlier renders are
        unchanged)."""
        values = asdict(self)
        values.pop("batch_size")
        values.pop("transforms")
        if values["photo_size"] is None:  # renders made before the setting existed keep their hash
            values.pop("photo_size")
        values["precision"] = self.resolved_precision()
        if values["precision"] == "float32":
            values.pop("precision")
        unused = DEEPDREAM_NOISE if self.method in ADAM_METHODS else FOURIER_ONLY_KEYS
        if self.method in ADAM_METHODS:
            values["transforms"] = chain.pixel_settings(self.transforms)
        if self.display == "raw" or self.method in ADAM_METHODS:  # earlier renders (raw) keep their hash
            values.pop("display")
        for name in unused + (("diversity", "diversity_weight") if self.diversity == 1 else ()):
            values.pop(name)
        return values

    def pixel_hash(self) -> str:
        """A short stable hash of `pixel_dict`, recorded with every render."""
        return hashlib.sha256(json.dumps(self.pixel_dict(), sort_keys=True).encode()).hexdigest()[:16]


def for_network(trained: bool, method: str = AUTO, display: str = AUTO, from_photo: bool = False) -> dict[str, str]:
    """The method and display `auto` stands for on a network with trained weights or random ones
    (`ModelSource.trained`), others as given: {"method": ..., "display": ...}. From a photo, `auto` is DeepDream,
    the one method that starts from one."""
    defaults = TRAINED_DEFAULTS if trained else RANDOM_DEFAULTS
    if from_photo:
        defaults = {**defaults, "method": "deepdream"}
    return {"method": defaults["method"] if method == AUTO else method,
            "display": defaults["display"] if display == AUTO else display}


def auto_precision(found: list[Device] | None = None) -> str:
    """The precision `auto` means on these devices (default: this machine's); see `choose_precision`."""
    return choose_precision(found if found is not None else devices.discover_devices())[0]


def choose_precision(found: list[Device]) -> tuple[str, str]:
    """(precision, why) for `auto`. With GPUs: bfloat16 when every one has compute capability 8.0 or more
    (Ampere and later compute it natively), else float32. On a CPU-only machine: bfloat16 when the CPU computes
    it natively (AVX512_BF16 or AMX), else float32."""
    gpus = [d for d in found if d.is_gpu]
    if gpus:
        if all(g.capability and g.capability >= (8, 0) for g in gpus):
            return "bfloat16", "compute capability >= 8.0"
        return "float32", "a GPU below compute capability 8.0"
    native = sorted(_cpu_flags() & {"avx512_bf16", "amx_bf16"})
    if native:
        return "bfloat16", f"the CPU has {native[0].upper()}"
    return "float32", "the CPU has no native bfloat16"


def _cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux); empty where /proc/cpuinfo does not exist."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":")[1].split()}


GPU_IMAGES_PER_15_GIB = 64
GPU_MEMORY_USE = 0.8  # the share of a GPU's memory a pass may be measured to take
WORK_RANGE = (0.25, 8.0)  # a model's work per image (GoogLeNet's: 1) is taken within these bounds


def auto_batch_size(pixels: int = 224 * 224, device: Device | None = None, work: float = 1.0) -> int:
    """Images per pass on `device` (default: this machine's first GPU, else its CPU), scaled by image area and
    divided by the model's `work` per image: its full forward pass at 224 px over GoogLeNet's
    (atlas.model.flops.relative_work, `Model.work`), taken within WORK_RANGE. GoogLeNet's own is 1.0.

    On a CPU, 8 GoogLeNet images at 224 px: on 2 cores batch 8 takes 1.1-1.5x as many gradient steps per second as
    batch 1 (more at deep, small-map layers; benchmarks/render_speed.py); 16 gained at most 8% more at mixed5b and
    lost at mixed4d. On a GPU, 64 images of 224 px per 15 GiB of its memory (a 16 GB card reports 15-16 GiB), an
    upper bound that `BatchFit` lowers to what a pass is measured to need. A model with 4x GoogLeNet's work starts
    with a quarter of the images (at least one), one with a quarter of it with 4x as many.
    """
    device = device or devices.discover_devices()[0]
    base = device.memory * GPU_IMAGES_PER_15_GIB / (15 * GIB) if device.is_gpu else 8
    return max(1, int(base * (224 * 224) / max(pixels, 1) / clamp_work(work)))


def clamp_work(work: float) -> float:
    """A model's work per image within WORK_RANGE: a tiny network is not given hundreds of images a pass, nor a
    huge one less than an eighth of GoogLeNet's batch."""
    low, high = WORK_RANGE
    return min(max(work, low), high)


@dataclass
class BatchFit:
    """How many images of a layer and size one pass takes on a device: the first guess (`auto_batch_size`),
    lowered to what fits once a pass's peak memory was measured, and halved after an out-of-memory error."""

    images: int  # images in a pass: the first guess
    area: int | None = 224 * 224  # ... of this many pixels each, scaled to other sizes; None: at every size
    memory: int | None = None  # the device's bytes; None: nothing to measure (a CPU)
    limits: dict[tuple[str, int], int] = field(default_factory=dict)
    measured: set[tuple[str, int]] = field(default_factory=set)

    def size(self, layer: str, pixels: int) -> int:
        """Images per pass of `layer` at `pixels` pixels per image."""
        first = self.images if self.area is None else int(self.images * self.area / max(pixels, 1))
        return self.limits.get((layer, pixels), max(1, first))

    def observe(self, layer: str, pixels: int, batch: int, peak: int | None) -> None:
        """A pass of `batch` images peaked at `peak` bytes: cap later passes so they stay within the card."""
        key = (layer, pixels)
        if peak is None or self.memory is None or key in self.measured:
            return
        self.measured.add(key)
        fits = int(GPU_MEMORY_USE * self.memory / max(peak / batch, 1))
        self.limits[key] = max(1, min(self.size(layer, pixels), fits))

    def halve(self, layer: str, pixels: int, batch: int) -> int:
        """After an out-of-memory error at `batch` images: the smaller size to retry with."""
        if batch <= 1:
            raise MemoryError(f"one image of {pixels} pixels of {layer} does not fit the device's memory")
        self.limits[(layer, pixels)] = batch // 2
        return batch // 2


def with_overrides(settings: RenderSettings, **overrides: object) -> RenderSettings:
    """A copy of `settings` with the given (non-None) fields replaced."""
    return replace(settings, **{k: v for k, v in overrides.items() if v is not None})
