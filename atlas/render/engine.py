"""The render engine: every method's gradient step behind one interface, compiled once in one cache.

A method's step is a small frozen dataclass (`Ascent`: DeepDream's pixel ascent with Laplacian-normalised
gradients; `Adam`: Adam on a parameterisation, the spectrum by default or MACO's phases, through the random transform chain) that
builds its compiled step from a layer's function and an objective (`build`) and makes the arguments of one step on
probe images (`probe`, for the dry run's measured step). `compiled` keeps every built step per model, layer,
objective, precision and step, so a layer is traced once per process whatever asks for it; `step_call` is the one
measured step of the cost model (atlas.render.cost). What both steps climb is `climb`: the sum over the batch of the
objective's value of every image (atlas.render.objectives).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np
import tensorflow as tf

from atlas.model.graph import Model
from atlas.render import chain, param, transforms
from atlas.render.objectives import Objective, channel, for_render
from atlas.render.settings import ADAM_METHODS, RenderSettings

LayerFn = Callable[[tf.Tensor], tf.Tensor]
StepFn = Callable[..., Any]
ADAM_BETAS = (0.9, 0.999)
ADAM_EPSILON = 1e-8


class StepKind(Protocol):
    """One method's gradient step."""

    def build(self, fn: LayerFn, objective: Objective) -> StepFn:
        """The compiled step of `objective` on the layer `fn` computes (images 0..255 -> activations)."""

    def probe(self, batch: int, size: int) -> tuple[tf.Tensor, ...]:
        """The arguments of one step of `batch` probe images of `size` px aiming at channel 0."""


_STEPS: dict[tuple[int, str, Objective, str, StepKind], StepFn] = {}


def compiled(model: Model, layer: str, objective: str | Objective, precision: str, kind: StepKind) -> StepFn:
    """`kind`'s step of `objective` (a name of the named objectives, or an objective) on `layer`, built once per
    model, layer, objective, precision and step."""
    objective = for_render(objective)
    key = (id(model), layer, objective, precision, kind)
    if key not in _STEPS:
        _STEPS[key] = kind.build(model.layer_fn(layer, precision), objective)
    return _STEPS[key]


def climb(fn: LayerFn, objective: Objective, images: tf.Tensor, channels: tf.Tensor,
          units: tf.Tensor | None) -> tf.Tensor:
    """The scalar a render climbs: the sum of every image's objective on the layer's activations of `images`."""
    return tf.reduce_sum(objective(fn(images), channels, images, units))


@dataclass
class DreamStep:
    """DeepDream's compiled step (`__call__`: one ascent step of rolled images) and the raw input gradient it is
    made of (`gradient`: for tiles of a photo)."""

    traced: StepFn  # (images, channels, units) -> the gradient of the climb
    levels: int

    def __call__(self, images: tf.Tensor, channels: tf.Tensor, dy: tf.Tensor, dx: tf.Tensor, step: tf.Tensor,
                 units: tf.Tensor) -> tf.Tensor:
        grad = self.traced(transforms.roll(images, dy, dx), channels, units)
        return _ascend(images, grad, dy, dx, step, self.levels)

    def gradient(self, images: tf.Tensor, channels: tf.Tensor) -> tf.Tensor:
        return self.traced(images, channels, tf.ones(tf.shape(channels)))


@tf.function(autograph=False, reduce_retracing=True)
def _ascend(images: tf.Tensor, grad: tf.Tensor, dy: tf.Tensor, dx: tf.Tensor, step: tf.Tensor,
            levels: int) -> tf.Tensor:
    """One DeepDream step from the gradient of the rolled images: roll back, normalise by the Laplacian pyramid,
    climb, clip (one function for every layer)."""
    grad = transforms.laplacian_normalize(transforms.roll(grad, -dy, -dx), levels)
    return tf.clip_by_value(images + step * grad, 0.0, 255.0)


@dataclass(frozen=True)
class Ascent:
    """DeepDream: pixel ascent on jittered images with Laplacian-normalised gradients."""

    levels: int = RenderSettings().laplacian_levels

    def build(self, fn: LayerFn, objective: Objective) -> DreamStep:
        def units_gradient(images: tf.Tensor, channels: tf.Tensor, units: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape() as tape:
                tape.watch(images)
                loss = climb(fn, objective, images, channels, units)
            return tape.gradient(loss, images)

        # traced and compiled once per layer and called by both of DreamStep's functions, from Python, so that no
        # outer function inlines it and optimises the whole graph again: on a narrow network a layer's first call
        # costs more than its rendering (autograph is off: there is no data-dependent Python control flow)
        spec = [tf.TensorSpec([None, None, None, 3], tf.float32), tf.TensorSpec([None], tf.int32),
                tf.TensorSpec([None], tf.float32)]
        return DreamStep(tf.function(units_gradient, input_signature=spec, autograph=False), self.levels)

    def probe(self, batch: int, size: int) -> tuple[tf.Tensor, ...]:
        return (tf.constant(np.full((batch, size, size, 3), 128, np.float32)), tf.constant(np.zeros(batch, np.int32)),
                tf.constant(0), tf.constant(0), tf.constant(1.0), tf.ones([batch]))


@dataclass(frozen=True)
class Adam:
    """The Adam methods' step: Adam (ascent) on each image's parameters, the image seen through its transform.
    Returns the new parameters and moments, and each image's importance this step: the magnitude of the climb's
    gradient at each pixel of the untransformed image, summed over colours [B, H, W] (MACO's importance mask)."""

    parameterisation: param.Parameterisation = param.SPECTRUM

    def build(self, fn: LayerFn, objective: Objective) -> StepFn:
        beta1, beta2 = ADAM_BETAS
        images_of = self.parameterisation.images

        def step(params: tf.Tensor, m: tf.Tensor, v: tf.Tensor, t: tf.Tensor, channels: tf.Tensor,
                 maps: tf.Tensor, constants: tf.Tensor, size: tf.Tensor, canvas: tf.Tensor,
                 rate: tf.Tensor, units: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
            with tf.GradientTape() as tape:
                tape.watch(params)
                seen = images_of(params, constants, size)
                loss = climb(fn, objective, transforms.affine_warp(seen, maps, canvas), channels, units)
            grad, pixels = tape.gradient(loss, [params, seen])
            m = beta1 * m + (1 - beta1) * grad
            v = beta2 * v + (1 - beta2) * tf.square(grad)
            m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
            importance = tf.reduce_sum(tf.abs(pixels), axis=-1)
            return params + rate * m_hat / (tf.sqrt(v_hat) + ADAM_EPSILON), m, v, importance  # ascent

        scalar = tf.TensorSpec([], tf.float32)
        spec = tf.TensorSpec([None] * (1 + len(self.parameterisation.shape(1))), tf.float32)
        return tf.function(step, input_signature=[
            spec, spec, spec, scalar, tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, 6], tf.float32),
            tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32),
            scalar, tf.TensorSpec([None], tf.float32)], autograph=False)

    def probe(self, batch: int, size: int) -> tuple[tf.Tensor, ...]:
        params = tf.constant(np.stack([self.parameterisation.start([0, i + 1, 0], size, 0.01) for i in range(batch)]))
        maps = np.stack([chain.draw(chain.DEFAULT_CHAIN, np.random.default_rng(i), 1, size)[0] for i in range(batch)])
        return (params, tf.zeros_like(params), tf.zeros_like(params), tf.constant(1.0),
                tf.constant(np.zeros(batch, np.int32)), tf.constant(maps),
                tf.constant(self.parameterisation.constants(size)), tf.constant(size),
                tf.constant(chain.canvas(chain.DEFAULT_CHAIN, size)), tf.constant(0.05), tf.ones([batch]))


def method_step(settings: RenderSettings) -> StepKind:
    """The step of `settings`' method."""
    if settings.method in ADAM_METHODS:
        return Adam(param.of_method(settings.method))
    return Ascent(settings.laplacian_levels)


def step_call(model: Model, layer: str, batch: int, size: int, precision: str = "float32",
              method: str = "deepdream") -> Callable[[], None]:
    """One step of `method` on `batch` probe images of `layer` at `size` px, as a call that waits for its result
    (the cost model's measured step)."""
    kind = method_step(RenderSettings(method=method))
    step, args = compiled(model, layer, channel, precision, kind), kind.probe(batch, size)

    def call() -> None:
        result = step(*args)
        (result[0] if isinstance(result, tuple) else result).numpy()

    return call
