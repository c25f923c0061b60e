"""Image-space operations of the render loop (Lucid's `transforms`): jitter, resizing, gradient normalisation.

All work on batches [B, H, W, 3] of float32 pixels and treat every image of a batch on its own, so a batch
gives the same result as its images one at a time.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

_K1 = np.float32([1, 4, 6, 4, 1])
_K5 = np.outer(_K1, _K1) / np.square(_K1.sum())
# A 5x5 binomial blur applied to each colour channel on its own: [5, 5, 3, 3].
PYRAMID_KERNEL = tf.constant(_K5[:, :, None, None] * np.eye(3, dtype=np.float32)[None, None])


def roll(images: tf.Tensor, dy: tf.Tensor | int, dx: tf.Tensor | int) -> tf.Tensor:
    """Shift images cyclically by (dy, dx) pixels: the jitter that keeps a pixel-grid pattern from forming."""
    return tf.roll(images, shift=[dy, dx], axis=[1, 2])


def resize(images: tf.Tensor | np.ndarray, height: int, width: int) -> tf.Tensor:
    """Bilinear resize of a batch to (height, width)."""
    return tf.image.resize(images, [height, width], method="bilinear")


def _split(images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """One Laplacian level: (low-pass at half size, high-frequency residual at full size)."""
    low = tf.nn.conv2d(images, PYRAMID_KERNEL, strides=2, padding="SAME")
    up = tf.nn.conv2d_transpose(low, PYRAMID_KERNEL * 4, tf.shape(images), strides=2, padding="SAME")
    return low, images - up


def _merge(levels: list[tf.Tensor]) -> tf.Tensor:
    """Inverse of the pyramid: upsample from the coarsest level and add each residual."""
    image = levels[0]
    for high in levels[1:]:
        image = tf.nn.conv2d_transpose(image, PYRAMID_KERNEL * 4, tf.shape(high), strides=2, padding="SAME")
        image = image + high
    return image


def laplacian_normalize(grad: tf.Tensor, levels: int = 4, eps: float = 1e-8) -> tf.Tensor:
    """Scale every frequency band of each image's gradient to unit RMS, then recombine.

    Raw gradients are dominated by high frequencies; equalising the bands lets large, smooth structures grow
    as fast as fine texture (the DeepDream notebook's `lap_normalize`).
    """
    bands: list[tf.Tensor] = []
    image = grad
    for _ in range(levels - 1):
        image, high = _split(image)
        bands.append(high)
    bands.append(image)
    normed = [band / (tf.sqrt(tf.reduce_mean(tf.square(band), axis=[1, 2, 3], keepdims=True)) + eps)
              for band in bands]
    return _merge(normed[::-1])


def mean_abs_normalize(grad: tf.Tensor, eps: float = 1e-7) -> tf.Tensor:
    """Divide each image's gradient by its mean absolute value (the notebook's photo DeepDream step)."""
    return grad / (tf.reduce_mean(tf.abs(grad), axis=[1, 2, 3], keepdims=True) + eps)


def octave_sizes(height: int, width: int, octaves: int, scale: float) -> list[tuple[int, int]]:
    """Sizes from the smallest octave up to (height, width), each `scale` times the one before."""
    return [(max(1, int(round(height / scale ** k))), max(1, int(round(width / scale ** k))))
            for k in range(octaves - 1, -1, -1)]
