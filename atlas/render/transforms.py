"""Image-space operations of the render loops (Lucid's `transforms`): jitter, resizing, gradient normalisation,
the affine warp that applies the Fourier method's random transform chain (`atlas.render.chain`), and the
finest-band share of an image's energy.

All work on batches [B, H, W, 3] of float32 pixels and treat every image of a batch on its own, so a batch
gives the result of its images one at a time (up to float rounding: kernels may sum in another order).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

_K1 = np.float32([1, 4, 6, 4, 1])
# The 5x5 binomial kernel of the Laplacian pyramid, applied to each colour channel on its own, as an ordinary
# convolution whose kernel is zero between different channels: [5, 5, 3, 3]. A depthwise convolution does a third
# of the arithmetic, but its transpose (`_up`) has no fast CPU kernel on some machines: on a 2-core AMD EPYC with
# AVX2 the whole normalisation ran 1.6-2.2x faster this way (benchmarks/laplacian_speed.py).
PYRAMID_KERNEL = tf.constant((np.outer(_K1, _K1) / np.square(_K1.sum()))[:, :, None, None]
                             * np.eye(3, dtype=np.float32)[None, None])
_STRIDES = [1, 2, 2, 1]


def roll(images: tf.Tensor, dy: tf.Tensor | int, dx: tf.Tensor | int) -> tf.Tensor:
    """Shift images cyclically by (dy, dx) pixels: the jitter that keeps a pixel-grid pattern from forming."""
    return tf.roll(images, shift=[dy, dx], axis=[1, 2])


def resize(images: tf.Tensor | np.ndarray, height: int, width: int) -> tf.Tensor:
    """Bilinear resize of a batch to (height, width)."""
    return tf.image.resize(images, [height, width], method="bilinear")


def _down(images: tf.Tensor) -> tf.Tensor:
    """Blur each colour channel and keep every second pixel in both directions."""
    return tf.nn.conv2d(images, PYRAMID_KERNEL, _STRIDES, "SAME")


def _up(images: tf.Tensor, shape: tf.Tensor) -> tf.Tensor:
    """The transpose of `_down` with gain 4: back to `shape` [B, H, W, C]."""
    return tf.nn.conv2d_transpose(images, PYRAMID_KERNEL * 4, shape, _STRIDES, "SAME")


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


def finest_band_share(images: tf.Tensor | np.ndarray) -> np.ndarray:
    """Share of each image's energy in the finest Laplacian level: [B], between 0 and 1.

    An image splits into that level (`_split`'s residual) and the rest (the coarser levels, upsampled); the share
    is the residual's energy over the sum of both (each about its mean). Pixel-grid noise lives in that level;
    an image of smooth structure puts little energy there.
    """
    images = tf.cast(images, tf.float32)
    margin = [[0, 0], [4, 4], [4, 4], [0, 0]]  # mirrored, so the image's border is no edge to the blur
    high = _split(tf.pad(images, margin, mode="REFLECT"))[1][:, 4:-4, 4:-4]
    rest = images - high
    rest -= tf.reduce_mean(rest, axis=[1, 2, 3], keepdims=True)
    fine = tf.reduce_sum(tf.square(high), axis=[1, 2, 3])
    return (fine / (fine + tf.reduce_sum(tf.square(rest), axis=[1, 2, 3]) + 1e-12)).numpy()


# ---------------------------------------------------------------------------- transformation robustness


def affine_warp(images: tf.Tensor, maps: tf.Tensor, canvas: tf.Tensor | int, fill: float = 127.5) -> tf.Tensor:
    """Bilinear resampling of each image [B, H, W, 3] by its own affine map [B, 6] onto a canvas x canvas
    grid; points outside the image take the value `fill` (mid-grey, as the published padding). Built from
    gathers, so its gradient is exact."""
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    framed = tf.pad(images - fill, [[0, 0], [1, 1], [1, 1], [0, 0]]) + fill  # a 1-pixel frame of `fill`
    grid = tf.cast(tf.range(canvas), tf.float32)
    rows, cols = tf.meshgrid(grid, grid, indexing="ij")
    rows, cols = tf.reshape(rows, [1, -1]), tf.reshape(cols, [1, -1])
    a, b, c, d, e, f = (maps[:, i:i + 1] for i in range(6))
    src_r = tf.clip_by_value(a * rows + b * cols + c + 1.0, 0.0, tf.cast(height + 1, tf.float32))
    src_c = tf.clip_by_value(d * rows + e * cols + f + 1.0, 0.0, tf.cast(width + 1, tf.float32))
    r0, c0 = tf.floor(src_r), tf.floor(src_c)
    wr, wc = (src_r - r0)[..., None], (src_c - c0)[..., None]
    r0, c0 = tf.cast(r0, tf.int32), tf.cast(c0, tf.int32)
    r1, c1 = tf.minimum(r0 + 1, height + 1), tf.minimum(c0 + 1, width + 1)
    flat = tf.reshape(framed, [shape[0], -1, 3])
    stride = width + 2

    def at(r: tf.Tensor, col: tf.Tensor) -> tf.Tensor:
        return tf.gather(flat, r * stride + col, batch_dims=1)

    top = at(r0, c0) * (1 - wc) + at(r0, c1) * wc
    bottom = at(r1, c0) * (1 - wc) + at(r1, c1) * wc
    return tf.reshape(top * (1 - wr) + bottom * wr, [shape[0], canvas, canvas, 3])
