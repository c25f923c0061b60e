"""What a render maximises: per-image scalars computed from a layer's activations (Lucid's `objectives`).

Every objective maps activations [B, H, W, C] and each image's target channel [B] to one value per image [B],
so a batch of images can each chase its own channel: the loss is their sum and, because images of a batch
never interact, every image receives exactly its own gradient. The one exception is the diversity term,
which couples the N facets of one channel (consecutive images of a batch) and nothing else.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from atlas.model.catalogue import centre_index

Objective = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
PER_CHANNEL = {"channel", "negative", "neuron"}


def _own(values: tf.Tensor, channels: tf.Tensor) -> tf.Tensor:
    """values [B, C] -> each image's own channel [B] (a mask, not a gather: exact per image)."""
    mask = tf.one_hot(channels, tf.shape(values)[-1], dtype=values.dtype)
    return tf.reduce_sum(values * mask, axis=1)


def channel(acts: tf.Tensor, channels: tf.Tensor) -> tf.Tensor:
    """Mean of each image's own channel (pre-ReLU): the atlas default."""
    return _own(tf.reduce_mean(acts, axis=[1, 2]), channels)


def negative_channel(acts: tf.Tensor, channels: tf.Tensor) -> tf.Tensor:
    """Minus the channel mean: what the channel responds to least."""
    return -channel(acts, channels)


def centre(acts: tf.Tensor) -> tf.Tensor:
    """The activations at the centre position of the layer's map: [B, C] (`centre_index` of each axis)."""
    shape = tf.shape(acts)
    return acts[:, centre_index(shape[1]), centre_index(shape[2]), :]


def readout(acts: tf.Tensor, objective: str) -> tf.Tensor:
    """The value of every channel a per-channel objective reads: [B, C] (the map's centre for `neuron`, else
    each channel's mean)."""
    return centre(acts) if objective == "neuron" else tf.reduce_mean(acts, axis=[1, 2])


def neuron(acts: tf.Tensor, channels: tf.Tensor) -> tf.Tensor:
    """One unit: the channel at the centre position of the map (its receptive field is the patch that matters)."""
    return _own(centre(acts), channels)


def layer(acts: tf.Tensor, channels: tf.Tensor) -> tf.Tensor:
    """Mean of the squared activations of the whole layer: classic DeepDream."""
    del channels
    return tf.reduce_mean(tf.square(acts), axis=[1, 2, 3])


def diversity(acts: tf.Tensor, facets: int) -> tf.Tensor:
    """Similarity of the facets of each channel: the published diversity term.

    Consecutive groups of `facets` images belong to one channel. Each image's Gram matrix of the layer's
    channels is normalised to unit length; the term is, per group, the sum of the cosine similarities of every
    ordered pair of different facets over the group size. Returns one value per group [B / facets].
    """
    shape = tf.shape(acts)
    flat = tf.reshape(acts, [shape[0], -1, shape[3]])
    grams = tf.matmul(flat, flat, transpose_a=True)  # [B, C, C]
    grams = tf.reshape(grams, [shape[0] // facets, facets, -1])
    grams = tf.math.l2_normalize(grams, axis=-1, epsilon=1e-10)
    similar = tf.matmul(grams, grams, transpose_b=True)  # [groups, N, N]
    off_diagonal = tf.reduce_sum(similar, axis=[1, 2]) - tf.linalg.trace(similar)
    return off_diagonal / facets


def reading(acts: tf.Tensor, objective: str) -> tf.Tensor:
    """What an objective reads of each image: every channel's value [B, C] (`readout`) for a per-channel
    objective, the whole-layer value [B] for `layer`. Of the start images, this is all a render's lift needs."""
    return readout(acts, objective) if objective in PER_CHANNEL else layer(acts, None)


def spread(values: np.ndarray, objective: str) -> np.ndarray:
    """Each image's unit of its objective [B], from its `reading` `values`: the spread (standard deviation) of
    the layer's channel values, or the `layer` objective's own size. The one definition: of the start images it is
    both the denominator of the `lift` metric and, with facets, the unit each facet's objective counts in."""
    values = np.asarray(values, np.float64)
    if objective not in PER_CHANNEL:
        return np.abs(values) + 1e-12
    return values.std(axis=1) + 1e-12


def facet_units(values: np.ndarray, objective: str, facets: int) -> np.ndarray:
    """Each image's unit of its objective [B] in a render of `facets` images per channel (consecutive): the mean
    `spread` of its channel's facets on their start images (`values`: their `reading`); ones without facets,
    where the objective needs no unit."""
    if facets == 1:
        return np.ones(len(values), np.float32)
    spreads = spread(values, objective)
    return np.repeat(spreads.reshape(-1, facets).mean(axis=1), facets).astype(np.float32)


COSINE_FLOOR = 0.1  # the cosine in `direction` counts as at least this, so a start that points away still climbs
DIRECTION = "direction"


class Direction:
    """The `direction` objective of activation-atlas cells: one row of a table per image.

    For image i with row r = `channels[i]`: the activations a at the centre of the map, dotted with the whitened
    direction S d_r (S: the inverse of the layer's activation covariance), times the `power`-th power of the
    cosine similarity of a and d_r (floored at COSINE_FLOOR), as Lucid's `direction_neuron_cossim_S` that the
    Activation Atlas used. Built once per table (a layer's cells); `channels` pick the rows.
    """

    def __init__(self, directions: np.ndarray, whitening: np.ndarray, power: float = 1.0) -> None:
        directions = np.asarray(directions, np.float64)
        self.power = float(power)
        self.whitened = tf.constant(directions @ np.asarray(whitening, np.float64).T, tf.float32)
        norms = np.linalg.norm(directions, axis=1, keepdims=True)
        self.unit = tf.constant(directions / np.maximum(norms, 1e-12), tf.float32)

    def __call__(self, acts: tf.Tensor, channels: tf.Tensor) -> tf.Tensor:
        return direction_values(centre(acts), tf.gather(self.whitened, channels), tf.gather(self.unit, channels),
                                self.power)


def direction_values(acts: tf.Tensor, whitened: tf.Tensor, unit: tf.Tensor, power: float) -> tf.Tensor:
    """acts, whitened directions, unit directions [B, C] -> dot(a, S d) * max(cos(a, d), floor)**power [B]."""
    dot = tf.reduce_sum(acts * whitened, axis=-1)
    cosine = tf.reduce_sum(acts * unit, axis=-1) / (tf.norm(acts, axis=-1) + 1e-8)
    return dot * tf.maximum(cosine, COSINE_FLOOR) ** power


def direction_matrix(acts: np.ndarray, directions: np.ndarray, whitening: np.ndarray, power: float) -> np.ndarray:
    """The `direction` objective of every cell on every image: [images, cells] from centre activations
    [images, C] (numpy, for measuring specificity)."""
    acts = np.asarray(acts, np.float64)
    directions = np.asarray(directions, np.float64)
    dot = acts @ (directions @ np.asarray(whitening, np.float64).T).T
    unit = directions / np.maximum(np.linalg.norm(directions, axis=1, keepdims=True), 1e-12)
    cosine = (acts @ unit.T) / (np.linalg.norm(acts, axis=1, keepdims=True) + 1e-8)
    return dot * np.maximum(cosine, COSINE_FLOOR) ** power


def total_loss(acts: tf.Tensor, channels: tf.Tensor, objective: str | Objective, facets: int = 1,
               diversity_weight: float = 0.0, units: tf.Tensor | None = None) -> tf.Tensor:
    """The scalar a render climbs: the sum of every image's objective, minus the weighted diversity term
    (scaled by the group size, so the weight is that of a group's mean objective, as published).

    With facets, each image's objective is divided by its `units` [B] (`facet_units` of the start images), so
    it counts in units of lift and the weight means the same for any network's activation scale. One image's
    objective alone needs no unit: both methods normalise each image's step, which makes them scale-free.
    `objective` is a name of OBJECTIVES or an objective itself (a `Direction`)."""
    values = (OBJECTIVES[objective] if isinstance(objective, str) else objective)(acts, channels)
    if facets == 1:
        return tf.reduce_sum(values)
    return tf.reduce_sum(values / units) - diversity_weight * facets * tf.reduce_sum(diversity(acts, facets))


OBJECTIVES: dict[str, Objective] = {"channel": channel, "negative": negative_channel, "neuron": neuron,
                                    "layer": layer}
