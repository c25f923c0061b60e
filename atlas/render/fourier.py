"""The Fourier method: Adam on a decorrelated spectrum, every step seen through random transforms.

The method of the published GoogLeNet feature visualisations (Lucid's `render_vis` with `fft_image`,
`to_valid_rgb(decorrelate=True)` and `standard_transforms`), batched one image per channel (or N per channel,
its facets) like the DeepDream method. All randomness is drawn per image from (seed, channel, facet): the start
spectrum and every step's transform, so a channel rendered in a batch equals the channel rendered alone up to
float rounding; Adam's update is element-wise, so it never mixes images either. The same loop optimises MACO's
phases (`param.MACO`, the maco method) and plain pixels (`param.PIXEL`), the baseline the method's smoothness is
measured against. The step itself is the
engine's (`atlas.render.engine.Adam`); the transforms are the settings' chain (`atlas.render.chain`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import tensorflow as tf

from atlas.images import to_uint8
from atlas.model.graph import Model
from atlas.render import chain, param
from atlas.render.engine import Adam, compiled
from atlas.render.objectives import Objective, facet_units, for_render, reading


def image_key(seed: int, channel: int, facet: int) -> list[int]:
    """The random-generator key of one image: the same in any batch."""
    return [seed, channel + 1, facet]


def start_params(keys: list[list[int]], size: int, std: float,
                 parameterisation: param.Parameterisation = param.SPECTRUM) -> np.ndarray:
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
                     parameterisation: param.Parameterisation = param.SPECTRUM) -> np.ndarray:
    """Float images 0..255 [B, size, size, 3] of parameters (spectra by default)."""
    return parameterisation.images(tf.constant(params), tf.constant(parameterisation.constants(size)), size).numpy()


@dataclass
class AdamRender:
    """What an Adam render made: the float start and final images [B, size, size, 3] (0..255) and each image's
    importance [B, size, size]: the climb's gradient magnitude at each pixel summed over the steps (MACO's mask)."""

    start: np.ndarray
    final: np.ndarray
    importance: np.ndarray


def dream_fourier(model: Model, layer: str, channels: np.ndarray, keys: list[list[int]], size: int, steps: int,
                  learning_rate: float, std: float, objective: str | Objective, facets: int = 1,
                  diversity_weight: float = 0.0,
                  precision: str = "float32", parameterisation: param.Parameterisation = param.SPECTRUM,
                  on_step: Callable[[], None] = lambda: None,
                  units_of: Callable[[np.ndarray], np.ndarray] | None = None,
                  transforms: chain.Chain = chain.DEFAULT_CHAIN) -> AdamRender:
    """Optimise one spectrum per image (`keys[i]` seeds image i) for `steps` Adam steps; returns the float start
    and final images and each image's importance (`AdamRender`). With `facets` > 1, consecutive groups of that many
    images share a channel and the diversity term pushes them apart. `param.MACO` optimises MACO's phases,
    `param.PIXEL` pixels instead, by the same steps. `units_of`: the
    start images -> each image's unit (`facet_units`), for a caller that evaluates the start images anyway
    (default: `start_units`). `transforms`: the random transform chain every step looks through."""
    step = compiled(model, layer, for_render(objective, facets, diversity_weight), precision, Adam(parameterisation))
    params = tf.constant(start_params(keys, size, std, parameterisation))
    start = params_to_images(params, size, parameterisation)
    units = tf.constant(units_of(start) if units_of else start_units(model, layer, start, objective, facets))
    maps = np.stack([chain.draw(transforms, np.random.default_rng(key + [1 << 22]), steps, size) for key in keys],
                    axis=1)
    m = v = tf.zeros_like(params)
    constants, targets = tf.constant(parameterisation.constants(size)), tf.constant(channels, tf.int32)
    size_t, canvas = tf.constant(size), tf.constant(chain.canvas(transforms, size))
    rate = tf.constant(learning_rate, tf.float32)
    importance = tf.zeros([len(keys), size, size])
    for t in range(steps):
        params, m, v, gained = step(params, m, v, tf.constant(t + 1, tf.float32), targets, tf.constant(maps[t]),
                                    constants, size_t, canvas, rate, units)
        importance += gained
        on_step()
    return AdamRender(start, params_to_images(params, size, parameterisation), importance.numpy())
