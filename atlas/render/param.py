"""Image parameterisations (Lucid's `optvis.param`): what the optimiser changes to change the image.

`PIXEL` is the image itself, squashed by a sigmoid (Lucid's `image(fft=False, decorrelate=False)`: plain
pixel-space ascent, the baseline the Fourier method is measured against; the DeepDream method climbs raw pixels
in `atlas.render.loop`). `MACO` (Fel et al. 2023) optimises only the phase of each image's spectrum; its magnitude is
fixed to the mean amplitude spectrum of natural photos (`maco_spectrum.npz`, remade by `atlas.render.maco`).
`SPECTRUM` is the Fourier method's, that of the published GoogLeNet feature
visualisations: each image is a learnable spectrum of a real 2-D FFT, every frequency scaled by
1 / max(frequency, 1 / size) so that coarse structure is as easy to change as fine detail, in a decorrelated colour
space (the square root of the ImageNet colour covariance) and squashed to 0..255 by a sigmoid. All functions work on
batches and treat every image on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import tensorflow as tf

# The square root of ImageNet's 3x3 colour covariance (by SVD), as published with the method, normalised by its
# largest column norm so that no colour direction is amplified.
COLOR_CORRELATION_SVD_SQRT = np.float32([[0.26, 0.09, 0.02],
                                         [0.27, 0.00, -0.05],
                                         [0.27, -0.09, 0.03]])
COLOR_DECORRELATION = COLOR_CORRELATION_SVD_SQRT / np.linalg.norm(COLOR_CORRELATION_SVD_SQRT, axis=0).max()


def frequencies(height: int, width: int) -> np.ndarray:
    """The spatial frequency (cycles per pixel) of every coefficient of a real 2-D FFT: [height, width//2+1]."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    return np.sqrt(fx * fx + fy * fy)


def spectrum_scale(height: int, width: int, decay_power: float = 1.0) -> np.ndarray:
    """Per-frequency scale 1 / max(f, 1/size)^decay, times sqrt(pixels) so the inverse FFT is unitary (which lets
    the learning rate mean the same as for pixels): [height, width//2+1] float32."""
    scale = 1.0 / np.maximum(frequencies(height, width), 1.0 / max(height, width)) ** decay_power
    return (scale * np.sqrt(height * width)).astype(np.float32)


def spectrum_shape(size: int) -> tuple[int, int, int, int]:
    """The shape of one image's spectrum: (real/imaginary, colour, frequency rows, frequency columns)."""
    return (2, 3, size, size // 2 + 1)


def fourier_images(spectra: tf.Tensor, scale: tf.Tensor, size: tf.Tensor | int) -> tf.Tensor:
    """Spectra [B, 2, 3, size, size//2+1] -> images [B, size, size, 3] in 0..255."""
    coefficients = tf.complex(spectra[:, 0], spectra[:, 1]) * tf.cast(scale, tf.complex64)
    images = tf.signal.irfft2d(coefficients, fft_length=tf.stack([size, size]))  # [B, 3, size, size]
    return to_valid_rgb(tf.transpose(images, [0, 2, 3, 1]) / 4.0)


def to_valid_rgb(images: tf.Tensor) -> tf.Tensor:
    """Decorrelated colour [B, H, W, 3] -> RGB in 0..255: mix by the colour matrix, then a sigmoid."""
    mixed = tf.einsum("bhwc,dc->bhwd", images, tf.constant(COLOR_DECORRELATION))
    return 255.0 * tf.sigmoid(mixed)


def pixel_images(pixels: tf.Tensor, _constants: tf.Tensor, _size: tf.Tensor | int) -> tf.Tensor:
    """Pixel parameters [B, size, size, 3] -> images in 0..255 by a sigmoid, colour not decorrelated."""
    return 255.0 * tf.sigmoid(pixels)


def maco_images(phases: tf.Tensor, magnitude: tf.Tensor, size: tf.Tensor | int) -> tf.Tensor:
    """Phases [B, 3, size, size//2+1] with the fixed magnitude (`maco_magnitude`, [3 * size, size//2+1]) -> images
    [B, size, size, 3] in 0..255: the inverse FFT of each colour, standardised over the image (the magnitude sets
    only the spectrum's shape), then a sigmoid, as MACO maps its images into the model's range."""
    magnitude = tf.reshape(magnitude, tf.stack([3, size, -1]))
    coefficients = tf.complex(magnitude * tf.cos(phases), magnitude * tf.sin(phases))
    images = tf.transpose(tf.signal.irfft2d(coefficients, fft_length=tf.stack([size, size])), [0, 2, 3, 1])
    mean, variance = tf.nn.moments(images, axes=[1, 2, 3], keepdims=True)
    return 255.0 * tf.sigmoid((images - mean) / (tf.sqrt(variance) + 1e-5))


def maco_magnitude(size: int) -> np.ndarray:
    """The fixed amplitude spectrum of MACO images of side `size` [3 * size, size//2+1] (the colours stacked): the
    shipped mean spectrum of natural photos, looked up at each coefficient's frequency (nearest stored one)."""
    from atlas.render.maco import shipped_spectrum

    stored = shipped_spectrum()  # [3, N, N//2+1]
    n = stored.shape[1]
    rows = np.rint(np.fft.fftfreq(size) * n).astype(int) % n
    cols = np.minimum(np.rint(np.fft.rfftfreq(size) * n).astype(int), stored.shape[2] - 1)
    return stored[:, rows][:, :, cols].reshape(3 * size, size // 2 + 1).astype(np.float32)


def uniform_phases(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    """Random phases in [-pi, pi) (MACO's start: a natural-looking random image; `std` is not used)."""
    del std
    return rng.uniform(-np.pi, np.pi, shape)


def normal(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    """Small normal parameters around 0 (the spectrum's and the pixels' start)."""
    return rng.normal(0.0, std, shape)


@dataclass(frozen=True)
class Parameterisation:
    """What the Adam step (`atlas.render.engine.Adam`) optimises for each image, and how that becomes the image."""

    name: str
    shape: Callable[[int], tuple[int, ...]]  # one image's parameters, for an image of side `size`
    constants: Callable[[int], np.ndarray]  # fixed per size, passed to `images` (the spectrum's scale) [R, C]
    images: Callable[[tf.Tensor, tf.Tensor, tf.Tensor | int], tf.Tensor]  # (params [B, ...], constants, size)
    draw: Callable[[np.random.Generator, tuple[int, ...], float], np.ndarray] = normal  # the start parameters

    def start(self, key: list[int], size: int, std: float) -> np.ndarray:
        """Seeded random start parameters of one image (`key` seeds numpy's generator)."""
        return self.draw(np.random.default_rng(key), self.shape(size), std).astype(np.float32)


SPECTRUM = Parameterisation("fourier", spectrum_shape, lambda size: spectrum_scale(size, size), fourier_images)
MACO = Parameterisation("maco", lambda size: (3, size, size // 2 + 1), maco_magnitude, maco_images, uniform_phases)
PIXEL = Parameterisation("pixel", lambda size: (size, size, 3), lambda size: np.zeros((0, 0), np.float32),
                         pixel_images)


def of_method(method: str) -> Parameterisation:
    """The parameterisation an Adam method optimises (`RenderSettings.method`: fourier or maco)."""
    return MACO if method == "maco" else SPECTRUM
