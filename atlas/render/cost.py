"""The render cost model of the dry run: a render's work in 224 px image-steps, and a measured step's seconds.

A step of each method is measured at 224 px on a layer (a Fourier or MACO step is an Adam step on the spectra or
phases through the transform chain, on the padded canvas); a render costs that step times its 224 px image-steps (`noise_cost`),
which counts the method's steps, its image size and facets. Imports no TensorFlow until a step is measured."""

from __future__ import annotations

import time
from typing import Any

from atlas.render.settings import ADAM_METHODS, RenderSettings


def octave_area(size_h: int, size_w: int, octaves: int, scale: float) -> float:
    """Pixels over all octaves, in units of 224 x 224 images (gradient cost grows with pixels)."""
    from atlas.render.transforms import octave_sizes

    return sum(h * w for h, w in octave_sizes(size_h, size_w, octaves, scale)) / (224 * 224)


def noise_cost(settings: RenderSettings) -> float:
    """224 px image-steps of one channel's render from noise with `settings` (all its facets), plus the two
    metric passes (start and result, forward only: a forward pass is half a step's FLOPs)."""
    if settings.method in ADAM_METHODS:
        steps = settings.steps * settings.size ** 2 / 224 ** 2  # the measured step includes its canvas
    else:
        steps = octave_area(settings.size, settings.size, settings.octaves, settings.octave_scale) * settings.steps
    return (steps + settings.size ** 2 / 224 ** 2) * settings.diversity


def photo_cost(height: int, width: int, settings: RenderSettings) -> float:
    """224 px image-steps of one channel's render from a photo of `height` x `width` pixels (after
    `cap_photo_side`), plus its two metric passes."""
    return (octave_area(height, width, settings.photo_octaves, settings.photo_octave_scale) * settings.photo_steps
            + height * width / 224 ** 2)


def measured_batch(batch: int, size: int) -> int:
    """The images of a 224 px step measured for passes of `batch` images of `size` px: as many pixels (a pass of
    174 images of 48 px is measured as 8 of 224 px, not 174 of them)."""
    return max(1, min(batch, round(batch * size * size / (224 * 224))))


def measure_step(model: Any, layer: str, batch: int, precision: str = "float32", repeats: int = 2,
                 method: str = "deepdream") -> tuple[float, float]:
    """(seconds per 224 px image-step of `layer` with `method` at this batch size, seconds of the first call's
    tracing and compiling, which a sweep pays once per layer)."""
    from atlas.render.engine import step_call

    call = step_call(model, layer, batch, 224, precision, method)
    began = time.perf_counter()
    call()
    first = time.perf_counter() - began
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - began)
    return best / batch, max(0.0, first - best)
