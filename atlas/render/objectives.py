"""What a render maximises: objectives that compose (Lucid's and Lucent's `objectives`).

An objective maps a layer's activations [B, H, W, C], each image's target channel [B] and, if it wants them, the
images the layer saw [B, H, W, 3] (0..255) and each image's unit [B] to one value per image [B], so a batch of
images can each chase its own channel: a render climbs the sum of the values and, because images of a batch never
interact, every image receives exactly its own gradient. The one exception is the diversity term, which couples the
N facets of one channel (consecutive images of a batch) and nothing else.

Objectives form a small algebra: `a + b`, `k * a`, `a - b`, `-a` and `a / k` are objectives again, so a render's
objective is one expression, e.g. `channel + 0.5 * neuron.of(7) - 0.05 * total_variation`. The named objectives
(`NAMED`: channel, negative = -channel, neuron, layer, class = a logit) are instances; `for_render` adds the diversity term of a
render with facets. Objectives are frozen dataclasses compared by value, so a render step compiled for one is found
again for an equal one (atlas.render.engine).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import tensorflow as tf

from atlas.model.catalogue import centre_index
from atlas.render.settings import PER_CHANNEL

Value = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]  # (activations, channels) -> [B]


class Objective:
    """One value per image [B] of a batch; the algebra of objectives (`+`, `-`, `*` and `/` by a number, `of`,
    `in_units`). Subclasses implement `__call__`."""

    def __call__(self, acts: tf.Tensor, channels: tf.Tensor, images: tf.Tensor | None = None,
                 units: tf.Tensor | None = None) -> tf.Tensor:
        raise NotImplementedError

    def __add__(self, other: Objective) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return Sum((*_terms(self), *_terms(other)))

    def __radd__(self, other: object) -> Objective:
        if isinstance(other, (int, float)) and other == 0:  # sum() of objectives starts from 0
            return self
        return NotImplemented

    def __sub__(self, other: Objective) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return self + -other

    def __neg__(self) -> Objective:
        return Scaled(-1.0, self)

    def __mul__(self, factor: float) -> Objective:
        if not isinstance(factor, (int, float)) or isinstance(factor, bool):
            return NotImplemented
        return Scaled(float(factor), self)

    __rmul__ = __mul__

    def __truediv__(self, divisor: float) -> Objective:
        if not isinstance(divisor, (int, float)) or isinstance(divisor, bool):
            return NotImplemented
        return Scaled(1.0 / divisor, self)

    def of(self, channel: int) -> Objective:
        """This objective aimed at `channel` in every image, whatever channel the image renders."""
        return Fixed(self, int(channel))

    def in_units(self) -> Objective:
        """This objective divided by each image's unit (`facet_units`): counted in units of lift."""
        return InUnits(self)


def _terms(objective: Objective) -> tuple[Objective, ...]:
    return objective.parts if isinstance(objective, Sum) else (objective,)


@dataclass(frozen=True)
class Sum(Objective):
    """The sum of objectives, image by image."""

    parts: tuple[Objective, ...]

    def __call__(self, acts: tf.Tensor, channels: tf.Tensor, images: tf.Tensor | None = None,
                 units: tf.Tensor | None = None) -> tf.Tensor:
        values = self.parts[0](acts, channels, images, units)
        for part in self.parts[1:]:
            values = values + part(acts, channels, images, units)
        return values


@dataclass(frozen=True)
class Scaled(Objective):
    """An objective times a number."""

    factor: float
    part: Objective

    def __call__(self, acts: tf.Tensor, channels: tf.Tensor, images: tf.Tensor | None = None,
                 units: tf.Tensor | None = None) -> tf.Tensor:
        values = self.part(acts, channels, images, units)
        return -values if self.factor == -1.0 else self.factor * values


@dataclass(frozen=True)
class Fixed(Objective):
    """An objective aimed at one channel in every image."""

    part: Objective
    channel: int

    def __call__(self, acts: tf.Tensor, channels: tf.Tensor, images: tf.Tensor | None = None,
                 units: tf.Tensor | None = None) -> tf.Tensor:
        return self.part(acts, tf.fill(tf.shape(channels), tf.constant(self.channel, channels.dtype)), images, units)


@dataclass(frozen=True)
class InUnits(Objective):
    """An objective over each image's unit [B] (ones when the render gives none)."""

    part: Objective

    def __call__(self, acts: tf.Tensor, channels: tf.Tensor, images: tf.Tensor | None = None,
                 units: tf.Tensor | None = None) -> tf.Tensor:
        values = self.part(acts, channels, images, units)
        return values if units is None else values / units


@dataclass(frozen=True)
class OfActivations(Objective):
    """A named objective of the activations and each image's channel."""

    name: str
    value: Value

    def __call__(self, acts: tf.Tensor, channels: tf.Tensor, images: tf.Tensor | None = None,
                 units: tf.Tensor | None = None) -> tf.Tensor:
        return self.value(acts, channels)

    def __repr__(self) -> str:
        return self.name


@dataclass(frozen=True)
class OfImages(Objective):
    """A named objective of the images the layer saw (a penalty, subtracted from what a render climbs)."""

    name: str
    value: Callable[[tf.Tensor], tf.Tensor]  # images [B, H, W, 3] -> [B]

    def __call__(self, acts: tf.Tensor, channels: tf.Tensor, images: tf.Tensor | None = None,
                 units: tf.Tensor | None = None) -> tf.Tensor:
        if images is None:
            raise ValueError(f"the {self.name} objective reads the images: pass them")
        return self.value(images)

    def __repr__(self) -> str:
        return self.name


def of_activations(value: Value) -> Objective:
    """Decorator: a function (activations, channels) -> [B] as an objective named after it."""
    return OfActivations(value.__name__, value)


def of_images(value: Callable[[tf.Tensor], tf.Tensor]) -> Objective:
    """Decorator: a function images -> [B] as an objective named after it."""
    return OfImages(value.__name__, value)


def _own(values: tf.Tensor, channels: tf.Tensor) -> tf.Tensor:
    """values [B, C] -> each image's own channel [B] (a mask, not a gather: exact per image)."""
    mask = tf.one_hot(channels, tf.shape(values)[-1], dtype=values.dtype)
    return tf.reduce_sum(values * mask, axis=1)


@of_activations
def channel(acts: tf.Tensor, channels: tf.Tensor) -> tf.Tensor:
    """Mean of each image's own channel (pre-ReLU): the atlas default."""
    return _own(tf.reduce_mean(acts, axis=[1, 2]), channels)


negative = -channel  # what the channel responds to least


def centre(acts: tf.Tensor) -> tf.Tensor:
    """The activations at the centre position of the layer's map: [B, C] (`centre_index` of each axis)."""
    shape = tf.shape(acts)
    return acts[:, centre_index(shape[1]), centre_index(shape[2]), :]


def readout(acts: tf.Tensor, objective: str) -> tf.Tensor:
    """The value of every channel a per-channel objective reads: [B, C] (the logits themselves for `class`, the
    map's centre for `neuron`, else each channel's mean)."""
    if objective == "class":
        return acts
    return centre(acts) if objective == "neuron" else tf.reduce_mean(acts, axis=[1, 2])


@of_activations
def neuron(acts: tf.Tensor, channels: tf.Tensor) -> tf.Tensor:
    """One unit: the channel at the centre position of the map (its receptive field is the patch that matters)."""
    return _own(centre(acts), channels)


@of_activations
def logit(acts: tf.Tensor, channels: tf.Tensor) -> tf.Tensor:
    """Each image's own class logit, before the softmax (the `class` objective: acts are the logits [B, classes])."""
    return _own(acts, channels)


@of_activations
def layer(acts: tf.Tensor, channels: tf.Tensor) -> tf.Tensor:
    """Mean of the squared activations of the whole layer: classic DeepDream."""
    del channels
    return tf.reduce_mean(tf.square(acts), axis=[1, 2, 3])


@dataclass(frozen=True)
class Diversity(Objective):
    """Similarity of the facets of each channel: the published diversity term, as one value per image.

    Consecutive groups of `facets` images belong to one channel. Each image's Gram matrix of the layer's
    channels is normalised to unit length; an image's value is the sum of its cosine similarities to the other
    facets of its group over the group size, so a group's values sum to the published term (the sum of the cosine
    similarities of every ordered pair of different facets over the group size). A render subtracts it.
    """

    facets: int

    def __call__(self, acts: tf.Tensor, channels: tf.Tensor, images: tf.Tensor | None = None,
                 units: tf.Tensor | None = None) -> tf.Tensor:
        similar = gram_similarities(acts, self.facets)  # [groups, N, N]
        rows = tf.reduce_sum(similar, axis=2) - tf.linalg.diag_part(similar)
        return tf.reshape(rows, [-1]) / self.facets


def gram_similarities(acts: tf.Tensor, facets: int) -> tf.Tensor:
    """The cosine similarities of the Gram matrices of each group of `facets` consecutive images [B/N, N, N]."""
    shape = tf.shape(acts)
    flat = tf.reshape(acts, [shape[0], -1, shape[3]])
    grams = tf.matmul(flat, flat, transpose_a=True)  # [B, C, C]
    grams = tf.reshape(grams, [shape[0] // facets, facets, -1])
    grams = tf.math.l2_normalize(grams, axis=-1, epsilon=1e-10)
    return tf.matmul(grams, grams, transpose_b=True)


@of_images
def l2(images: tf.Tensor) -> tf.Tensor:
    """Mean square distance of each image from mid-grey, in units of the full range (a penalty)."""
    return tf.reduce_mean(tf.square(images / 127.5 - 1.0), axis=[1, 2, 3])


@of_images
def total_variation(images: tf.Tensor) -> tf.Tensor:
    """Mean absolute difference of neighbouring pixels of each image, in units of the full range (a penalty)."""
    scaled = images / 255.0
    rows = tf.reduce_mean(tf.abs(scaled[:, 1:] - scaled[:, :-1]), axis=[1, 2, 3])
    return rows + tf.reduce_mean(tf.abs(scaled[:, :, 1:] - scaled[:, :, :-1]), axis=[1, 2, 3])


def reading(acts: tf.Tensor, objective: str) -> tf.Tensor:
    """What an objective reads of each image: every channel's value [B, C] (`readout`) for a per-channel
    objective, the whole-layer value [B] for `layer`. Of the start images, this is all a render's lift needs."""
    return readout(acts, objective) if objective in PER_CHANNEL else layer(acts, channels=None)


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


class Direction(Objective):
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

    def __call__(self, acts: tf.Tensor, channels: tf.Tensor, images: tf.Tensor | None = None,
                 units: tf.Tensor | None = None) -> tf.Tensor:
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


# the objectives of the names settings accept (atlas.render.settings.OBJECTIVES, TensorFlow-free)
NAMED: dict[str, Objective] = {"channel": channel, "negative": negative, "neuron": neuron, "layer": layer,
                               "class": logit}


def for_render(objective: str | Objective, facets: int = 1, diversity_weight: float = 0.0) -> Objective:
    """What a render climbs: a named objective (or an objective itself, e.g. a `Direction` or a sum), and with
    `facets` > 1 that objective in units of lift minus the weighted diversity term, the weight scaled by the group
    size so that it is that of a group's mean objective, as published. The units make the weight mean the same for
    any network's activation scale; one image's objective alone needs none: both methods normalise each image's
    step, which makes them scale-free."""
    base = NAMED[objective] if isinstance(objective, str) else objective
    if facets == 1:
        return base
    return base.in_units() - (diversity_weight * facets) * Diversity(facets)
