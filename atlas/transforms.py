"""Image-space operations of the render loop (Lucid's `transforms`): jitter, resizing, gradient normalisation.

All work on batches [B, H, W, 3] of float32 pixels and treat every image of a batch on its own, so a batch
gives the same result as its images one at a time.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

_TAPS = (1.0, 4.0, 6.0, 4.0, 1.0)  # the binomial kernel of the Laplacian pyramid, /16 per axis


def roll(images: tf.Tensor, dy: tf.Tensor | int, dx: tf.Tensor | int) -> tf.Tensor:
    """Shift images cyclically by (dy, dx) pixels: the jitter that keeps a pixel-grid pattern from forming."""
    return tf.roll(images, shift=[dy, dx], axis=[1, 2])


def resize(images: tf.Tensor | np.ndarray, height: int, width: int) -> tf.Tensor:
    """Bilinear resize of a batch to (height, width)."""
    return tf.image.resize(images, [height, width], method="bilinear")


def _blur(images: tf.Tensor, axis: int, gain: float = 1.0) -> tf.Tensor:
    """5-tap binomial blur along one spatial axis (zero padding), as shifted adds.

    Element-wise arithmetic in a fixed order gives bit-identical results whatever the batch size, which a
    convolution kernel does not promise; the render loop relies on that for batched == alone.
    """
    size = tf.shape(images)[axis]
    pad = [[0, 0]] * 4
    pad[axis] = [2, 2]
    padded = tf.pad(images, pad)
    taps = [tf.gather(padded, tf.range(k, k + size), axis=axis) * (w * gain / 16.0) for k, w in enumerate(_TAPS)]
    return (((taps[0] + taps[1]) + taps[2]) + taps[3]) + taps[4]


def _down(images: tf.Tensor) -> tf.Tensor:
    """Blur and keep every second pixel."""
    return _blur(_blur(images, 1), 2)[:, ::2, ::2]


def _up(images: tf.Tensor, shape: tf.Tensor) -> tf.Tensor:
    """Insert zeros between pixels, crop to `shape` [B, H, W, C] and blur (gain 2 per axis)."""
    b, h, w, c = tf.unstack(tf.shape(images))
    zeros = tf.zeros_like(images)
    tall = tf.reshape(tf.stack([images, zeros], axis=2), [b, 2 * h, w, c])[:, :shape[1]]
    wide = tf.reshape(tf.stack([tall, tf.zeros_like(tall)], axis=3), [b, shape[1], 2 * w, c])[:, :, :shape[2]]
    return _blur(_blur(wide, 1, 2.0), 2, 2.0)


def _split(images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """One Laplacian level: (low-pass at half size, high-frequency residual at full size)."""
    low = _down(images)
    return low, images - _up(low, tf.shape(images))


def _merge(levels: list[tf.Tensor]) -> tf.Tensor:
    """Inverse of the pyramid: upsample from the coarsest level and add each residual."""
    image = levels[0]
    for high in levels[1:]:
        image = _up(image, tf.shape(high)) + high
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
