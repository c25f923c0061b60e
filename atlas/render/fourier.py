"""The Fourier method: Adam on a decorrelated spectrum, every step seen through random transforms.

The method of the published GoogLeNet feature visualisations (Lucid's `render_vis` with `fft_image`,
`to_valid_rgb(decorrelate=True)` and `standard_transforms`), batched one image per channel (or N per channel,
its facets) like the DeepDream method. All randomness is drawn per image from (seed, channel, facet): the start
spectrum and every step's transform, so a channel rendered in a batch equals the channel rendered alone up to
float rounding; Adam's update is element-wise, so it never mixes images either. The same loop optimises plain
pixels (`param.PIXEL`), the baseline the method's smoothness is measured against.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from atlas.images import to_uint8
from atlas.model.graph import Model
from atlas.render import param, transforms
from atlas.render.objectives import Objective, facet_units, reading, total_loss

ADAM_BETAS = (0.9, 0.999)
ADAM_EPSILON = 1e-8
CHAIN = transforms.RobustnessChain()

StepFn = Callable[..., tuple[tf.Tensor, tf.Tensor, tf.Tensor]]
_STEPS: dict[tuple[int, str, str | Objective, int, float, str, str], StepFn] = {}


def image_key(seed: int, channel: int, facet: int) -> list[int]:
    """The random-generator key of one image: the same in any batch."""
    return [seed, channel + 1, facet]


def _step_function(model: Model, layer: str, objective: str | Objective, facets: int, diversity_weight: float,
                   precision: str, parameterisation: param.Parameterisation = param.FOURIER
                   ) -> Callable[..., tuple[tf.Tensor, tf.Tensor, tf.Tensor]]:
    """One Adam step on the parameters, compiled once per model, layer, objective, facets, precision and
    parameterisation."""
    key = (id(model), layer, objective, facets, diversity_weight, precision, parameterisation.name)
    if key not in _STEPS:
        fn = model.layer_fn(layer, precision)
        beta1, beta2 = ADAM_BETAS

        def step(params: tf.Tensor, m: tf.Tensor, v: tf.Tensor, t: tf.Tensor, channels: tf.Tensor,
                 maps: tf.Tensor, constants: tf.Tensor, size: tf.Tensor, canvas: tf.Tensor,
                 rate: tf.Tensor, units: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            with tf.GradientTape() as tape:
                tape.watch(params)
                images = transforms.affine_warp(parameterisation.images(params, constants, size), maps, canvas)
                loss = total_loss(fn(images), channels, objective, facets, diversity_weight, units)
            grad = tape.gradient(loss, params)
            m = beta1 * m + (1 - beta1) * grad
            v = beta2 * v + (1 - beta2) * tf.square(grad)
            m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
            return params + rate * m_hat / (tf.sqrt(v_hat) + ADAM_EPSILON), m, v  # ascent

        scalar = tf.TensorSpec([], tf.float32)
        spec = tf.TensorSpec([None] * (1 + len(parameterisation.shape(1))), tf.float32)
        _STEPS[key] = tf.function(step, input_signature=[
            spec, spec, spec, scalar, tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, 6], tf.float32),
            tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32),
            scalar, tf.TensorSpec([None], tf.float32)], autograph=False)
    return _STEPS[key]


def start_params(keys: list[list[int]], size: int, std: float,
                 parameterisation: param.Parameterisation = param.FOURIER) -> np.ndarray:
    """The seeded start parameters of each image, e.g. spectra [B, 2, 3, size, size//2+1]."""
    return np.stack([parameterisation.start(key, size, std) for key in keys])


def start_units(model: Model, layer: str, starts: np.ndarray, objective: str, facets: int) -> np.ndarray:
    """Each image's unit of its objective [B] (`facet_units`), for a caller that has not evaluated its start
    images already: evaluates them (as 8-bit images, as the lift metric sees them)."""
    if facets == 1:
        return np.ones(len(starts), np.float32)
    acts = model.layer_fn(layer)(tf.constant(to_uint8(starts).astype(np.float32)))
    return facet_units(reading(acts, objective).numpy(), objective, facets)


def params_to_images(params: np.ndarray | tf.Tensor, size: int,
                     parameterisation: param.Parameterisation = param.FOURIER) -> np.ndarray:
    """Float images 0..255 [B, size, size, 3] of parameters (spectra by default)."""
    return parameterisation.images(tf.constant(params), tf.constant(parameterisation.constants(size)), size).numpy()


def dream_fourier(model: Model, layer: str, channels: np.ndarray, keys: list[list[int]], size: int, steps: int,
                  learning_rate: float, std: float, objective: str | Objective, facets: int = 1,
                  diversity_weight: float = 0.0,
                  precision: str = "float32", parameterisation: param.Parameterisation = param.FOURIER,
                  on_step: Callable[[], None] = lambda: None,
                  units_of: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Optimise one spectrum per image (`keys[i]` seeds image i) for `steps` Adam steps; returns the float
    (start, final) images. With `facets` > 1, consecutive groups of that many images share a channel and the
    diversity term pushes them apart. `param.PIXEL` optimises pixels instead, by the same steps. `units_of`: the
    start images -> each image's unit (`facet_units`), for a caller that evaluates the start images anyway
    (default: `start_units`)."""
    step = _step_function(model, layer, objective, facets, diversity_weight, precision, parameterisation)
    params = tf.constant(start_params(keys, size, std, parameterisation))
    start = params_to_images(params, size, parameterisation)
    units = tf.constant(units_of(start) if units_of else start_units(model, layer, start, objective, facets))
    maps = np.stack([CHAIN.draw(np.random.default_rng(key + [1 << 22]), steps, size) for key in keys], axis=1)
    m = v = tf.zeros_like(params)
    constants, targets = tf.constant(parameterisation.constants(size)), tf.constant(channels, tf.int32)
    size_t, canvas, rate = tf.constant(size), tf.constant(CHAIN.canvas(size)), tf.constant(learning_rate, tf.float32)
    for t in range(steps):
        params, m, v = step(params, m, v, tf.constant(t + 1, tf.float32), targets, tf.constant(maps[t]), constants,
                            size_t, canvas, rate, units)
        on_step()
    return start, params_to_images(params, size, parameterisation)


def step_call(model: Model, layer: str, batch: int, size: int, precision: str = "float32") -> Callable[[], None]:
    """One Adam step of `batch` images of `layer` at `size` px, as a call that waits for its result (for the
    dry run's measured step)."""
    step = _step_function(model, layer, "channel", 1, 0.0, precision)
    spectra = tf.constant(start_params([image_key(0, i, 0) for i in range(batch)], size, 0.01))
    maps = tf.constant(np.stack([CHAIN.draw(np.random.default_rng(i), 1, size)[0] for i in range(batch)]))
    args = (spectra, tf.zeros_like(spectra), tf.zeros_like(spectra), tf.constant(1.0),
            tf.constant(np.zeros(batch, np.int32)), maps, tf.constant(param.spectrum_scale(size, size)),
            tf.constant(size), tf.constant(CHAIN.canvas(size)), tf.constant(0.05), tf.ones([batch]))

    def call() -> None:
        step(*args)[0].numpy()

    return call
