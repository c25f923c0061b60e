"""Image-space operations of the render loop (Lucid's `transforms`): jitter, resizing, gradient normalisation.

All work on batches [B, H, W, 3] of float32 pixels and treat every image of a batch on its own, so a batch
gives the result of its images one at a time (up to float rounding: kernels may sum in another order).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

_K1 = np.float32([1, 4, 6, 4, 1])
# The 5x5 binomial kernel of the Laplacian pyramid, applied to each colour channel on its own: [5, 5, 3, 1].
PYRAMID_KERNEL = tf.constant((np.outer(_K1, _K1) / np.square(_K1.sum()))[:, :, None, None]
                             * np.ones((1, 1, 3, 1), np.float32))
_STRIDES = [1, 2, 2, 1]


def roll(images: tf.Tensor, dy: tf.Tensor | int, dx: tf.Tensor | int) -> tf.Tensor:
    """Shift images cyclically by (dy, dx) pixels: the jitter that keeps a pixel-grid pattern from forming."""
    return tf.roll(images, shift=[dy, dx], axis=[1, 2])


def resize(images: tf.Tensor | np.ndarray, height: int, width: int) -> tf.Tensor:
    """Bilinear resize of a batch to (height, width)."""
    return tf.image.resize(images, [height, width], method="bilinear")


def _down(images: tf.Tensor) -> tf.Tensor:
    """Blur and keep every second pixel in both directions (a depthwise convolution: 8x faster here than
    the same arithmetic as element-wise adds)."""
    return tf.nn.depthwise_conv2d(images, PYRAMID_KERNEL, _STRIDES, "SAME")


def _up(images: tf.Tensor, shape: tf.Tensor) -> tf.Tensor:
    """The transpose of `_down` with gain 4: back to `shape` [B, H, W, C]."""
    return tf.nn.depthwise_conv2d_backprop_input(shape, PYRAMID_KERNEL * 4, images, _STRIDES, "SAME")


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
