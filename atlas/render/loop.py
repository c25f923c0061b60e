"""The render loop: batched gradient ascent from noise or from a photo, and the metrics of each render.

`render_channels(model, layer, channels, photo, settings, seed)` is the one entry point. Two methods:
`deepdream` (the DeepDream notebook's pixel-space ascent with Laplacian-normalised gradients and octaves; from
noise or a photo) and `fourier` (Adam on a decorrelated spectrum through random transforms, from a random
spectrum: `atlas.render.fourier`). A batch holds one image per channel (N per channel with `diversity` N, its
facets); the loss is the sum of each image's own objective (minus the diversity term within each channel's
facets), so every image gets its own gradient, and all randomness is seeded per channel and facet so that a
channel's step in a batch equals its step alone up to float rounding (kernels of another batch size may add in
another order). A whole render can amplify that rounding into drift to the same channel's dream: the same batch
size on the same machine gives the same bytes, another one the same dream within the measured tolerance of
docs/dream.md (benchmarks/batch_drift.py).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import numpy as np
import tensorflow as tf

from atlas.images import to_uint8
from atlas.model.graph import PRECISIONS, Model
from atlas.model.selection import WHOLE_LAYER, check_channels
from atlas.render import devices, transforms
from atlas.render.devices import GIB, Device, peak_memory, reset_peak_memory
from atlas.render.fourier import dream_fourier, image_key
from atlas.render.objectives import (
    DIRECTION,
    OBJECTIVES,
    PER_CHANNEL,
    Objective,
    facet_units,
    reading,
    spread,
    total_loss,
)

StepFn = Callable[..., tf.Tensor]


@dataclass(frozen=True)
class RenderSettings:
    """Everything that shapes the pixels of a render. batch_size is not part of the pixel hash: another batch size
    rounds differently, which a whole render may amplify into drift to the same channel's dream (docs/dream.md)."""

    objective: str = "channel"  # channel | neuron | layer | negative
    method: str = "deepdream"  # deepdream (pixels; from noise or a photo) | fourier (a spectrum; from noise)
    # from noise
    size: int = 224  # final side in pixels
    octaves: int = 3
    octave_scale: float = 1.4
    steps: int | None = None  # deepdream: per octave (default 10); fourier: Adam steps (default 512)
    step_size: float = 1.5
    noise: float = 10.0  # std of the start noise around mid-grey
    jitter: int = 8  # max roll in pixels per step
    laplacian_levels: int = 4
    # from a photo
    photo_octaves: int = 4
    photo_octave_scale: float = 1.4
    photo_steps: int = 10
    photo_step_size: float = 1.5
    photo_size: int | None = None  # longest side a base photo is scaled down to first (None: as it is)
    tile: int = 512
    # the fourier method (atlas.render.fourier)
    learning_rate: float = 0.05  # Adam's
    spectrum_std: float = 0.01  # of the random start spectrum
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
        if self.steps is None:
            object.__setattr__(self, "steps", METHODS[self.method])
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
        if values["photo_size"] is None:  # renders made before the setting existed keep their hash
            values.pop("photo_size")
        values["precision"] = self.resolved_precision()
        if values["precision"] == "float32":
            values.pop("precision")
        unused = DEEPDREAM_NOISE if self.method == "fourier" else FOURIER
        if self.method == "fourier":
            values["transforms"] = asdict(transforms.RobustnessChain())
        for name in unused + (("diversity", "diversity_weight") if self.diversity == 1 else ()):
            values.pop(name)
        return values

    def pixel_hash(self) -> str:
        """A short stable hash of `pixel_dict`, recorded with every render."""
        return hashlib.sha256(json.dumps(self.pixel_dict(), sort_keys=True).encode()).hexdigest()[:16]


METHODS = {"deepdream": 10, "fourier": 512}  # method -> default steps
DEEPDREAM_NOISE = ("octaves", "octave_scale", "step_size", "noise", "jitter", "laplacian_levels", "photo_octaves",
                   "photo_octave_scale", "photo_steps", "photo_step_size", "tile")  # unused by fourier
FOURIER = ("method", "learning_rate", "spectrum_std")


@dataclass
class RenderResult:
    """One rendered image and its metrics, all measured on the final 8-bit image."""

    layer: str
    channel: int  # WHOLE_LAYER for the whole-layer objective
    objective: str
    seed: int
    image: np.ndarray  # uint8 [H, W, 3]
    start: float  # objective target on the start image (channel mean; mean square for `layer`)
    end: float  # ... on the result
    lift: float  # (end - start) / spread of the layer's channel means on the start image
    rank: int | None  # 1 = the most active channel of its layer on the result (most suppressed for negative)
    specific: bool | None  # its own image excites it more than any other channel's image of the batch (None: alone)
    seconds: float
    facet: int = 0  # which of the channel's `diversity` images
    batch: int = 1  # images in the pass that rendered it: another batch size may round (and so drift) otherwise


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


def auto_batch_size(pixels: int = 224 * 224, device: Device | None = None) -> int:
    """Images per pass on `device` (default: this machine's first GPU, else its CPU), scaled by image area.

    On a CPU, 8 at 224 px: on 2 cores batch 8 takes 1.1-1.5x as many gradient steps per second as batch 1
    (more at deep, small-map layers; benchmarks/render_speed.py); 16 gained at most 8% more at mixed5b and lost
    at mixed4d. On a GPU, 64 images of 224 px per 15 GiB of its memory (a 16 GB card reports 15-16 GiB), an
    upper bound that `BatchFit` lowers to what a pass is measured to need.
    """
    device = device or devices.discover_devices()[0]
    base = device.memory * GPU_IMAGES_PER_15_GIB / (15 * GIB) if device.is_gpu else 8
    return max(1, int(base * (224 * 224) / max(pixels, 1)))


GPU_IMAGES_PER_15_GIB = 64
GPU_MEMORY_USE = 0.8  # the share of a GPU's memory a pass may be measured to take


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


def noise_start(channel: int, seed: int, settings: RenderSettings, facet: int = 0) -> np.ndarray:
    """The seeded start image of one channel (and facet): low-amplitude noise around mid-grey, [size, size, 3]."""
    rng = np.random.default_rng([seed, channel + 1] + ([facet] if facet else []))
    noise = rng.normal(0.0, settings.noise, (settings.size, settings.size, 3))
    return np.clip(128.0 + noise, 0, 255).astype(np.float32)


_STEPS: dict[tuple[int, str, str | Objective, int, str, int, float], tuple[StepFn, StepFn]] = {}


def _step_functions(model: Model, layer: str, objective: str | Objective, levels: int, precision: str = "float32",
                    facets: int = 1, diversity_weight: float = 0.0) -> tuple[StepFn, StepFn]:
    """(noise step, raw gradient) compiled once per model, layer, objective, precision and facets."""
    key = (id(model), layer, objective, levels, precision, facets, diversity_weight)
    if key not in _STEPS:
        fn = model.layer_fn(layer, precision)
        spec = [tf.TensorSpec([None, None, None, 3], tf.float32), tf.TensorSpec([None], tf.int32)]

        def units_gradient(images: tf.Tensor, channels: tf.Tensor, units: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape() as tape:
                tape.watch(images)
                loss = total_loss(fn(images), channels, objective, facets, diversity_weight, units)
            return tape.gradient(loss, images)

        # traced and compiled once per layer and called by both functions below, from Python, so that no outer
        # function inlines it and optimises the whole graph again: on a narrow network a layer's first call costs
        # more than its rendering (autograph is off: there is no data-dependent Python control flow)
        traced = tf.function(units_gradient, input_signature=spec + [tf.TensorSpec([None], tf.float32)],
                             autograph=False)

        def gradient(images: tf.Tensor, channels: tf.Tensor) -> tf.Tensor:
            return traced(images, channels, tf.ones(tf.shape(channels)))

        def noise_step(images: tf.Tensor, channels: tf.Tensor, dy: tf.Tensor, dx: tf.Tensor,
                       step: tf.Tensor, units: tf.Tensor) -> tf.Tensor:
            grad = traced(transforms.roll(images, dy, dx), channels, units)
            return _ascend(images, grad, dy, dx, step, levels)

        _STEPS[key] = (noise_step, gradient)
    return _STEPS[key]


@tf.function(autograph=False, reduce_retracing=True)
def _ascend(images: tf.Tensor, grad: tf.Tensor, dy: tf.Tensor, dx: tf.Tensor, step: tf.Tensor,
            levels: int) -> tf.Tensor:
    """One DeepDream step from the gradient of the rolled images: roll back, normalise by the Laplacian pyramid,
    climb, clip (one function for every layer)."""
    grad = transforms.laplacian_normalize(transforms.roll(grad, -dy, -dx), levels)
    return tf.clip_by_value(images + step * grad, 0.0, 255.0)


def step_call(model: Model, layer: str, batch: int, size: int, precision: str = "float32") -> Callable[[], None]:
    """One DeepDream step of `batch` grey images of `layer` at `size` px, as a call that waits for its result
    (for the dry run's measured step)."""
    step, _ = _step_functions(model, layer, "channel", RenderSettings().laplacian_levels, precision)
    images = tf.constant(np.full((batch, size, size, 3), 128, np.float32))
    args = (tf.constant(np.zeros(batch, np.int32)), tf.constant(0), tf.constant(0), tf.constant(1.0), tf.ones([batch]))

    def call() -> None:
        step(images, *args).numpy()

    return call


def dream_from_noise(model: Model, layer: str, channels: np.ndarray, starts: np.ndarray,
                     settings: RenderSettings, seed: int, on_step: Callable[[], None] = lambda: None,
                     units: np.ndarray | None = None, objective: Objective | None = None) -> np.ndarray:
    """Gradient ascent over octaves with Laplacian-normalised gradients and jitter; returns float images.
    `units`: each image's unit of its objective (`facet_units` of its start image; needed with facets);
    `objective` (e.g. a `Direction`) replaces the settings' named one."""
    step_fn, _ = _step_functions(model, layer, objective or settings.objective, settings.laplacian_levels,
                                 settings.resolved_precision(), settings.diversity, settings.diversity_weight)
    rng = np.random.default_rng([seed, 1 << 20])  # jitter: shared by the batch, independent of its makeup
    sizes = transforms.octave_sizes(settings.size, settings.size, settings.octaves, settings.octave_scale)
    images = transforms.resize(starts, *sizes[0])
    targets = tf.constant(channels, tf.int32)
    units = tf.constant(np.ones(len(starts), np.float32) if units is None else units)
    for height, width in sizes:
        if images.shape[1:3] != (height, width):
            images = transforms.resize(images, height, width)
        for _ in range(settings.steps):
            dy, dx = (int(v) for v in rng.integers(-settings.jitter, settings.jitter + 1, 2))
            images = step_fn(images, targets, tf.constant(dy), tf.constant(dx),
                             tf.constant(settings.step_size, tf.float32), units)
            on_step()
    return images.numpy()


def dream_from_photo(model: Model, layer: str, channels: np.ndarray, photo: np.ndarray,
                     settings: RenderSettings, seed: int, on_step: Callable[[], None] = lambda: None) -> np.ndarray:
    """Classic DeepDream: octaves small to large re-injecting lost detail, tiled gradients with a random
    shift per step so memory stays bounded and no seams show; returns float images."""
    _, grad_fn = _step_functions(model, layer, settings.objective, settings.laplacian_levels,
                                 settings.resolved_precision())
    rng = np.random.default_rng([seed, 1 << 21])
    targets = tf.constant(channels, tf.int32)
    images = tf.constant(np.repeat(photo[None], len(channels), axis=0))
    details = []
    for _ in range(settings.photo_octaves - 1):
        height, width = images.shape[1:3]
        low = transforms.resize(images, max(1, round(height / settings.photo_octave_scale)),
                                max(1, round(width / settings.photo_octave_scale)))
        details.append(images - transforms.resize(low, height, width))
        images = low
    for detail in [None] + details[::-1]:
        if detail is not None:
            images = transforms.resize(images, *detail.shape[1:3]) + detail
        for _ in range(settings.photo_steps):
            grad = transforms.mean_abs_normalize(tiled_gradient(grad_fn, images, targets, settings.tile, rng))
            images = tf.clip_by_value(images + settings.photo_step_size * grad, 0.0, 255.0)
            on_step()
    return images.numpy()


def tile_edges(length: int, tile: int) -> list[int]:
    """Edges of about-equal tiles no longer than `tile` covering 0..length."""
    count = -(-length // tile)
    return [round(i * length / count) for i in range(count + 1)]


def tiled_gradient(grad_fn: StepFn, images: tf.Tensor, channels: tf.Tensor, tile: int,
                   rng: np.random.Generator) -> tf.Tensor:
    """The input gradient computed tile by tile on a randomly shifted image, shifted back."""
    height, width = images.shape[1:3]
    dy, dx = (int(v) for v in rng.integers(0, tile, 2))
    shifted = transforms.roll(images, dy, dx)
    ys, xs = tile_edges(height, tile), tile_edges(width, tile)
    rows = [tf.concat([grad_fn(shifted[:, y0:y1, x0:x1], channels) for x0, x1 in zip(xs, xs[1:])], axis=2)
            for y0, y1 in zip(ys, ys[1:])]
    return transforms.roll(tf.concat(rows, axis=1), -dy, -dx)


def tensor_channels(model: Model, name: str) -> int:
    """Channels of a catalogued layer, or of any other activation tensor (probed with one 224 px image)."""
    for layer in model.layers:
        if layer.name == name:
            return layer.channels
    return int(model.layer_fn(name)(tf.zeros([1, 224, 224, 3])).shape[-1])


def per_image(model: Model, layer: str, images: np.ndarray, batch: int,
              reduce: Callable[[tf.Tensor], tf.Tensor]) -> np.ndarray:
    """`reduce` of `layer`'s activations for each image, evaluated `batch` images at a time."""
    fn = model.layer_fn(layer)
    parts = [reduce(fn(tf.constant(images[i:i + batch], tf.float32))).numpy()
             for i in range(0, len(images), batch)]
    return np.concatenate(parts).astype(np.float64)


def readings(model: Model, layer: str, images: np.ndarray, batch: int, objective: str) -> np.ndarray:
    """What `objective` reads of each image (`reading`: every channel's value [N, C], the map's centre for
    `neuron`; the whole-layer value [N] for `layer`)."""
    return per_image(model, layer, images, batch, lambda acts: reading(acts, objective))


def measure(model: Model, layer: str, channels: list[int], start_values: np.ndarray, finals: np.ndarray,
            objective: str, batch: int) -> list[dict[str, float | int | bool | None]]:
    """Start and end activation, lift, rank and specificity of each render (see RenderResult).

    `channels` holds each image's channel (a channel appears once per facet); `start_values` holds the
    `readings` of one start image per render, or of one shared by all (a photo)."""
    count = len(finals)
    end_values = readings(model, layer, finals, batch, objective)
    if len(start_values) == 1 and count > 1:
        start_values = np.repeat(start_values, count, axis=0)
    spreads = spread(start_values, objective)
    if objective not in PER_CHANNEL:
        return [{"start": float(s), "end": float(e), "lift": float((e - s) / d), "rank": None, "specific": None}
                for s, e, d in zip(start_values, end_values, spreads)]
    sign = -1.0 if objective == "negative" else 1.0
    own = np.array(channels)
    rows = np.arange(len(own))
    start, end = start_values[rows, own], end_values[rows, own]
    signed = sign * end_values
    ranks = 1 + (signed > signed[rows, own][:, None]).sum(axis=1)
    cross = signed[:, own]  # cross[i, j]: image j's channel's value on image i
    specific = [bool(cross[j, j] > cross[own != own[j], j].max()) if (own != own[j]).any() else None
                for j in range(len(own))]
    return [{"start": float(s), "end": float(e), "lift": float((e - s) / d), "rank": int(r), "specific": p}
            for s, e, d, r, p in zip(start, end, spreads, ranks, specific)]


def render_channels(model: Model, layer: str, channels: list[int] | None = None, photo: np.ndarray | None = None,
                    settings: RenderSettings = RenderSettings(), seed: int = 0,
                    progress: Callable[[float], None] | None = None, fit: BatchFit | None = None) -> list[RenderResult]:
    """Render each channel of `layer` (from noise, or from `photo`: float RGB 0..255) with its metrics.

    With the `layer` objective, `channels` is ignored and one whole-layer dream is returned. With `diversity`
    N, each channel gets N results (facets 0..N-1, in that order). Passes hold `fit`'s number of images
    (default: `settings.batch_size`, else `auto_batch_size`), whole channels with all their facets; a pass that
    runs out of device memory is retried with half as many. `progress` is told the channels done, in fractions
    after every gradient step (so a bar moves during a long pass), summing to the number of channels.
    """
    layer_name = model.tensor_name(layer)
    if settings.objective == DIRECTION:
        raise ValueError("the direction objective renders map cells (atlas.run.maps), not channels")
    if photo is not None and (settings.method != "deepdream" or settings.diversity > 1):
        raise ValueError("a photo is rendered by the deepdream method with diversity 1; the fourier method and "
                         "facets start from noise")
    if settings.objective not in PER_CHANNEL:
        channels = [WHOLE_LAYER]
    elif not channels:
        raise ValueError("render_channels needs at least one channel")
    else:
        check_channels(list(channels), tensor_channels(model, layer_name), layer_name)
    if photo is not None:
        photo = fit_photo(photo, settings.photo_size)
    pixels = photo.shape[0] * photo.shape[1] if photo is not None else settings.size ** 2
    fit = fit or (BatchFit(settings.batch_size, area=None) if settings.batch_size else BatchFit(auto_batch_size()))
    results: list[RenderResult] = []
    first = 0
    while first < len(channels):
        batch = fit.size(layer_name, pixels)
        chunk = list(channels[first:first + max(1, batch // settings.diversity)])
        images = len(chunk) * settings.diversity
        tick = StepProgress(progress, len(chunk), gradient_steps(settings, photo is not None))
        try:
            reset_peak_memory()
            results.extend(_render_batch(model, layer_name, chunk, photo, settings, seed, batch, tick))
        except tf.errors.ResourceExhaustedError:  # retry smaller (rounding may differ: recorded as `batch`)
            tick.undo()
            fit.halve(layer_name, pixels, images)
            continue
        fit.observe(layer_name, pixels, images, peak_memory())
        first += len(chunk)
        tick.finish()
    return results


def fit_photo(photo: np.ndarray, longest: int | None) -> np.ndarray:
    """A float RGB photo scaled down (bicubic, aspect kept) so its longest side is at most `longest` pixels."""
    height, width = photo.shape[:2]
    if not longest or max(height, width) <= longest:
        return photo
    scale = longest / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return np.clip(tf.image.resize(photo[None], size, method="bicubic", antialias=True)[0].numpy(), 0, 255)


def gradient_steps(settings: RenderSettings, from_photo: bool) -> int:
    """Gradient steps each image of a pass takes."""
    if from_photo:
        return settings.photo_octaves * settings.photo_steps
    return settings.steps * (settings.octaves if settings.method == "deepdream" else 1)


@dataclass
class StepProgress:
    """Reports a pass of `channels` channels to `report` a fraction per gradient step, and the rest when done."""

    report: Callable[[float], None] | None
    channels: int
    steps: int
    taken: int = 0  # steps reported so far (the last one is told by `finish`, with the metrics)

    @property
    def told(self) -> float:
        return self.channels * self.taken / self.steps

    def __call__(self) -> None:
        """One gradient step of the pass is done."""
        if self.report and self.taken + 1 < self.steps:
            self.taken += 1
            self.report(self.channels / self.steps)

    def finish(self) -> None:
        if self.report:
            self.report(self.channels - self.told)

    def undo(self) -> None:
        """The pass failed and will be retried: take back what was reported."""
        if self.report and self.taken:
            self.report(-self.told)
        self.taken = 0


def _render_batch(model: Model, layer: str, channels: list[int], photo: np.ndarray | None,
                  settings: RenderSettings, seed: int, batch: int, on_step: Callable[[], None]) -> list[RenderResult]:
    began = time.perf_counter()
    images_of = [(c, f) for c in channels for f in range(settings.diversity)]  # (channel, facet) per image
    targets = np.array([max(c, 0) for c, _ in images_of], np.int32)
    objective, start_values = settings.objective, []  # the start images' readings: evaluated once, here

    def units_of(starts: np.ndarray) -> np.ndarray:
        """Evaluate the start images (as 8-bit images, as the metrics see them); each image's unit of its objective
        follows from the same readings as its lift."""
        start_values.append(readings(model, layer, to_uint8(starts).astype(np.float32), batch, objective))
        return facet_units(start_values[0], objective, settings.diversity)

    if photo is not None:
        units_of(photo[None])
        finals = dream_from_photo(model, layer, targets, photo.astype(np.float32), settings, seed, on_step)
    elif settings.method == "fourier":
        _, finals = dream_fourier(model, layer, targets, [image_key(seed, c, f) for c, f in images_of],
                                  settings.size, settings.steps, settings.learning_rate, settings.spectrum_std,
                                  objective, settings.diversity, settings.diversity_weight,
                                  settings.resolved_precision(), on_step=on_step, units_of=units_of)
    else:
        starts = np.stack([noise_start(c, seed, settings, f) for c, f in images_of])
        finals = dream_from_noise(model, layer, targets, starts, settings, seed, on_step, units_of(starts))
    images = to_uint8(finals)
    metrics = measure(model, layer, list(targets), start_values[0], images.astype(np.float32), objective, batch)
    seconds = (time.perf_counter() - began) / len(images_of)
    return [RenderResult(layer=layer, channel=c, objective=settings.objective, seed=seed, image=image,
                         seconds=seconds, facet=f, batch=len(images_of), **m)
            for (c, f), image, m in zip(images_of, images, metrics)]


def with_overrides(settings: RenderSettings, **overrides: object) -> RenderSettings:
    """A copy of `settings` with the given (non-None) fields replaced."""
    return replace(settings, **{k: v for k, v in overrides.items() if v is not None})
