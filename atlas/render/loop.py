"""The render loop: batched gradient ascent from noise or from a photo, and the metrics of each render.

`render_channels(model, layer, channels, photo, settings, seed)` is the one entry point. Two methods:
`deepdream` (the DeepDream notebook's pixel-space ascent with Laplacian-normalised gradients and octaves; from
noise or a photo) and `fourier` (Adam on a decorrelated spectrum through random transforms, from a random
spectrum: `atlas.render.fourier`); both take their compiled steps from one engine (`atlas.render.engine`). A batch
holds one image per channel (N per channel with `diversity` N, its facets); what it climbs is the sum of each
image's own objective (minus the diversity term within each channel's facets: `atlas.render.objectives.for_render`),
so every image gets its own gradient, and all randomness is seeded per channel and facet so that a
channel's step in a batch equals its step alone up to float rounding (kernels of another batch size may add in
another order). A whole render can amplify that rounding into drift to the same channel's dream: the same batch
size on the same machine gives the same bytes, another one the same dream within the measured tolerance of
docs/dream.md (benchmarks/batch_drift.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import tensorflow as tf

from atlas.images import to_uint8
from atlas.model.graph import Model
from atlas.model.selection import WHOLE_LAYER, check_channels
from atlas.render import param, transforms
from atlas.render.devices import peak_memory, reset_peak_memory
from atlas.render.fourier import dream_fourier, image_key
from atlas.render.engine import Ascent, DreamStep, compiled
from atlas.render.objectives import Objective, facet_units, for_render, reading, spread
from atlas.render.settings import ADAM_METHODS, DIRECTION, PER_CHANNEL, BatchFit, RenderSettings, auto_batch_size

StepFn = Callable[..., tf.Tensor]


@dataclass
class RenderResult:
    """One rendered image and its metrics, all measured on the final 8-bit optimised image (`raw` when the display
    differs: `RenderSettings.display`)."""

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
    raw: np.ndarray | None = None  # uint8: the optimised pixels the metrics read, when `image` shows them otherwise
    mask: np.ndarray | None = None  # uint8 [H, W]: where the climb's gradient went (MACO's importance mask)


def noise_start(channel: int, seed: int, settings: RenderSettings, facet: int = 0) -> np.ndarray:
    """The seeded start image of one channel (and facet): low-amplitude noise around mid-grey, [size, size, 3]."""
    rng = np.random.default_rng([seed, channel + 1] + ([facet] if facet else []))
    noise = rng.normal(0.0, settings.noise, (settings.size, settings.size, 3))
    return np.clip(128.0 + noise, 0, 255).astype(np.float32)


def dream_from_noise(model: Model, layer: str, channels: np.ndarray, starts: np.ndarray,
                     settings: RenderSettings, seed: int, on_step: Callable[[], None] = lambda: None,
                     units: np.ndarray | None = None, objective: Objective | None = None) -> np.ndarray:
    """Gradient ascent over octaves with Laplacian-normalised gradients and jitter; returns float images.
    `units`: each image's unit of its objective (`facet_units` of its start image; needed with facets);
    `objective` (e.g. a `Direction`) replaces the settings' named one."""
    climbed = for_render(settings.objective if objective is None else objective, settings.diversity,
                         settings.diversity_weight)
    step_fn = compiled(model, layer, climbed, settings.resolved_precision(), Ascent(settings.laplacian_levels))
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
                     settings: RenderSettings, seed: int, on_step: Callable[[], None] = lambda: None,
                     objective: Objective | None = None) -> np.ndarray:
    """Classic DeepDream: octaves small to large re-injecting lost detail, tiled gradients with a random
    shift per step so memory stays bounded and no seams show; returns float images. `objective` replaces the
    settings' named one."""
    step: DreamStep = compiled(model, layer, settings.objective if objective is None else objective,
                               settings.resolved_precision(), Ascent(settings.laplacian_levels))
    grad_fn = step.gradient
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
    """Channels of a catalogued layer or block output, or of any other activation tensor (probed with one 224 px
    image)."""
    for layer in model.all_layers:
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
    specific = is_specific(signed, own)
    return [{"start": float(s), "end": float(e), "lift": float((e - s) / d), "rank": int(r), "specific": p}
            for s, e, d, r, p in zip(start, end, spreads, ranks, specific)]


def is_specific(values: np.ndarray, own: np.ndarray) -> list[bool | None]:
    """Whether each image excites its own channel more than every other channel's image of the batch does (None
    when no image of the batch has another channel): `values` [N, C] of N images, `own` [N] each image's channel."""
    cross = values[:, own]  # cross[i, j]: image j's channel's value on image i
    return [bool(cross[j, j] > cross[own != own[j], j].max()) if (own != own[j]).any() else None
            for j in range(len(own))]


def render_channels(model: Model, layer: str, channels: list[int] | None = None, photo: np.ndarray | None = None,
                    settings: RenderSettings = RenderSettings(), seed: int = 0,
                    progress: Callable[[float], None] | None = None, fit: BatchFit | None = None,
                    objective: Objective | None = None) -> list[RenderResult]:
    """Render each channel of `layer` (from noise, or from `photo`: float RGB 0..255) with its metrics.

    `objective` (an expression of atlas.render.objectives, e.g. `channel - 0.05 * total_variation`) replaces what
    the settings' named objective climbs; the metrics still read the named one (`settings.objective`).

    With the `layer` objective, `channels` is ignored and one whole-layer dream is returned. With `diversity`
    N, each channel gets N results (facets 0..N-1, in that order). Passes hold `fit`'s number of images
    (default: `settings.batch_size`, else `auto_batch_size` for the model's work), whole channels with all their
    facets; a pass that runs out of device memory is retried with half as many. `progress` is told the channels
    done, in fractions after every gradient step (so a bar moves during a long pass), summing to the number of
    channels.
    """
    layer_name = model.tensor_name(layer)
    if settings.objective == DIRECTION:
        raise ValueError("the direction objective renders map cells (atlas.analysis.maps), not channels")
    if photo is not None and (settings.method != "deepdream" or settings.diversity > 1):
        raise ValueError("a photo is rendered by the deepdream method with diversity 1; the fourier and maco "
                         "methods and facets start from noise")
    if settings.objective not in PER_CHANNEL:
        channels = [WHOLE_LAYER]
    elif not channels:
        raise ValueError("render_channels needs at least one channel")
    else:
        check_channels(list(channels), tensor_channels(model, layer_name), layer_name)
    if photo is not None:
        photo = cap_photo_side(photo, settings.photo_size)
    pixels = photo.shape[0] * photo.shape[1] if photo is not None else settings.size ** 2
    if fit is None:
        fit = BatchFit(settings.batch_size, area=None) if settings.batch_size else \
            BatchFit(auto_batch_size(work=model.work))
    results: list[RenderResult] = []
    first = 0
    while first < len(channels):
        batch = fit.size(layer_name, pixels)
        chunk = list(channels[first:first + max(1, batch // settings.diversity)])
        images = len(chunk) * settings.diversity
        tick = StepProgress(progress, len(chunk), gradient_steps(settings, photo is not None))
        try:
            reset_peak_memory()
            results.extend(_render_batch(model, layer_name, chunk, photo, settings, seed, batch, objective, tick))
        except tf.errors.ResourceExhaustedError:  # retry smaller (rounding may differ: recorded as `batch`)
            tick.undo()
            fit.halve(layer_name, pixels, images)
            continue
        fit.observe(layer_name, pixels, images, peak_memory())
        first += len(chunk)
        tick.finish()
    return results


def cap_photo_side(photo: np.ndarray, longest: int | None) -> np.ndarray:
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
                  settings: RenderSettings, seed: int, batch: int, climbed: Objective | None,
                  on_step: Callable[[], None]) -> list[RenderResult]:
    began = time.perf_counter()
    images_of = [(c, f) for c in channels for f in range(settings.diversity)]  # (channel, facet) per image
    targets = np.array([max(c, 0) for c, _ in images_of], np.int32)
    objective, start_values = settings.objective, []  # the start images' readings: evaluated once, here
    masks: list[np.ndarray | None] = [None] * len(images_of)  # MACO's importance masks

    def units_of(starts: np.ndarray) -> np.ndarray:
        """Evaluate the start images (as 8-bit images, as the metrics see them); each image's unit of its objective
        follows from the same readings as its lift."""
        start_values.append(readings(model, layer, to_uint8(starts).astype(np.float32), batch, objective))
        return facet_units(start_values[0], objective, settings.diversity)

    if photo is not None:
        units_of(photo[None])
        finals = dream_from_photo(model, layer, targets, photo.astype(np.float32), settings, seed, on_step, climbed)
    elif settings.method in ADAM_METHODS:
        made = dream_fourier(model, layer, targets, [image_key(seed, c, f) for c, f in images_of], settings.size,
                             settings.steps, settings.learning_rate, settings.spectrum_std,
                             objective if climbed is None else climbed, settings.diversity,
                             settings.diversity_weight, settings.resolved_precision(), param.of_method(settings.method),
                             on_step=on_step, units_of=units_of, transforms=settings.transforms)
        finals = made.final
        if settings.method == "maco":  # MACO's importance mask, kept beside its renders
            masks = list(importance_masks(made.importance))
    else:
        starts = np.stack([noise_start(c, seed, settings, f) for c, f in images_of])
        finals = dream_from_noise(model, layer, targets, starts, settings, seed, on_step, units_of(starts),
                                  objective=climbed)
    raws = to_uint8(finals)
    metrics = measure(model, layer, list(targets), start_values[0], raws.astype(np.float32), objective, batch)
    seconds = (time.perf_counter() - began) / len(images_of)
    shown = settings.display == "visstd" and photo is None and settings.method == "deepdream"
    images = to_uint8(visstd(finals)) if shown else raws
    return [RenderResult(layer=layer, channel=c, objective=settings.objective, seed=seed, image=image,
                         seconds=seconds, facet=f, batch=len(images_of), raw=raw if shown else None, mask=mask, **m)
            for (c, f), image, raw, mask, m in zip(images_of, images, raws, masks, metrics)]


def visstd(images: np.ndarray) -> np.ndarray:
    """The DeepDream notebook's display of float images 0..255 [B, H, W, 3]: each image standardised, (a - mean) /
    max(std, 1e-4) x 0.1 + 0.5 on a 0..1 scale (so 2 standard deviations span 0.3..0.7), clipped, back to 0..255."""
    scaled = np.asarray(images, np.float64) / 255.0
    mean = scaled.mean(axis=(1, 2, 3), keepdims=True)
    std = np.maximum(scaled.std(axis=(1, 2, 3), keepdims=True), 1e-4)
    return np.clip((scaled - mean) / std * 0.1 + 0.5, 0.0, 1.0) * 255.0


def importance_masks(importance: np.ndarray) -> np.ndarray:
    """Accumulated gradient magnitudes [B, H, W] -> 8-bit masks, each scaled to its own maximum."""
    peak = np.maximum(importance.max(axis=(1, 2), keepdims=True), 1e-12)
    return to_uint8(255.0 * importance / peak)
