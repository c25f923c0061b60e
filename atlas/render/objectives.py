"""What a render maximises: per-image scalars computed from a layer's activations (Lucid's `objectives`).

Every objective maps activations [B, H, W, C] and each image's target channel [B] to one value per image [B],
so a batch of images can each chase its own channel: the loss is their sum and, because images of a batch
never interact, every image receives exactly its own gradient.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

Objective = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def channel(acts: tf.Tensor, channels: tf.Tensor) -> tf.Tensor:
    """Mean of each image's own channel (pre-ReLU): the atlas default."""
    means = tf.reduce_mean(acts, axis=[1, 2])
    mask = tf.one_hot(channels, tf.shape(acts)[-1], dtype=acts.dtype)  # a mask, not a gather: exact per image
    return tf.reduce_sum(means * mask, axis=1)


def negative_channel(acts: tf.Tensor, channels: tf.Tensor) -> tf.Tensor:
    """Minus the channel mean: what the channel responds to least."""
    return -channel(acts, channels)


def layer(acts: tf.Tensor, channels: tf.Tensor) -> tf.Tensor:
    """Mean of the squared activations of the whole layer: classic DeepDream."""
    del channels
    return tf.reduce_mean(tf.square(acts), axis=[1, 2, 3])


OBJECTIVES: dict[str, Objective] = {"channel": channel, "negative": negative_channel, "layer": layer}
PER_CHANNEL = {"channel", "negative"}
