"""The quality of renders as a person would judge them: does the class survive a photocopy, seen by the network's
siblings, at a contrast a person can see?

An invisible pattern (a few grey levels of high-frequency texture) can fool the network that made it, and often its
siblings too, so neither the renderer's own score nor a sibling's on the exact pixels says a render shows its
class. `photocopy` degrades a render the way showing it does (a slight crop and rescale, a blur below a pixel, a
JPEG round trip); `top_k` and `hits` ask another classifier what it sees; `contrast` and `spectrum_slope` say how
visible and how natural the pixels are. benchmarks/real_quality.py measures the render methods with them
(docs/quality.md).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from atlas.model.graph import Model
from atlas.render.classes import logits_layer
from atlas.render.loop import is_specific, readings
from atlas.render.settings import CLASS

CROP = 0.05  # the share of each side the photocopy cuts off
BLUR_SIGMA = 0.75  # pixels: the photocopy's Gaussian blur
JPEG_QUALITY = 75  # the photocopy's JPEG round trip
SLOPE_BAND = (0.02, 0.25)  # cycles per pixel: the band `spectrum_slope` fits (see there)


def photocopy(images: np.ndarray, crop: float = CROP, sigma: float = BLUR_SIGMA,
              quality: int = JPEG_QUALITY) -> np.ndarray:
    """uint8 images [B, H, W, 3] -> the same size after a light photocopy: `crop` of each side cut off and the rest
    resized back (bicubic), a Gaussian blur of `sigma` pixels, a JPEG round trip at `quality`. Deterministic."""
    return np.stack([_photocopy_one(image, crop, sigma, quality) for image in np.asarray(images, np.uint8)])


def _photocopy_one(image: np.ndarray, crop: float, sigma: float, quality: int) -> np.ndarray:
    height, width = image.shape[:2]
    dy, dx = round(height * crop), round(width * crop)
    cropped = Image.fromarray(image[dy:height - dy, dx:width - dx]).resize((width, height), Image.BICUBIC)
    blurred = gaussian_blur(np.asarray(cropped, np.float64), sigma)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.rint(blurred), 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), np.uint8)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """A float image [H, W, C] blurred by a Gaussian of `sigma` pixels (a separable kernel 4 sigma wide each side,
    the edges mirrored): plain numpy, the same on every machine."""
    reach = max(1, int(np.ceil(4 * sigma)))
    kernel = np.exp(-0.5 * (np.arange(-reach, reach + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(image, ((reach, reach), (reach, reach), (0, 0)), mode="symmetric")
    rows = sum(w * padded[i:i + image.shape[0]] for i, w in enumerate(kernel))
    return sum(w * rows[:, i:i + image.shape[1]] for i, w in enumerate(kernel))


def contrast(images: np.ndarray) -> np.ndarray:
    """Each image's pixel standard deviation over all pixels and colours, on the 0..255 scale [B]."""
    return np.asarray(images, np.float64).std(axis=(1, 2, 3))


def radial_amplitude(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies in cycles per pixel, mean amplitude at each) of an image's grey level, its mean removed,
    averaged over rings one frequency bin (1 / side) wide; the zero frequency left out."""
    grey = np.asarray(image, np.float64).mean(axis=-1)
    grey = grey - grey.mean()
    amplitude = np.abs(np.fft.fft2(grey))
    height, width = grey.shape
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(height), np.fft.fftfreq(width), indexing="ij"))
    bins = np.rint(radius * max(height, width)).astype(int)
    sums = np.bincount(bins.ravel(), amplitude.ravel())
    counts = np.bincount(bins.ravel())
    keep = np.arange(1, min(len(sums), max(height, width) // 2 + 1))
    return keep / max(height, width), sums[keep] / np.maximum(counts[keep], 1)


def spectrum_slope(images: np.ndarray, band: tuple[float, float] = SLOPE_BAND) -> np.ndarray:
    """Each image's slope of the least-squares line through log amplitude against log frequency of its radially
    averaged amplitude spectrum (`radial_amplitude`), within `band` cycles per pixel [B]. Natural photos fall near
    -1 (amplitude ~ 1/f); flatter (towards 0) means more fine detail than a photo has, steeper means smoother.
    The band leaves out the lowest rings (few coefficients, the composition) and the top half of the frequencies
    (where resizing, the blur and JPEG act)."""
    slopes = []
    for image in np.asarray(images):
        freq, amp = radial_amplitude(image)
        inside = (freq >= band[0]) & (freq <= band[1]) & (amp > 0)
        slopes.append(np.polyfit(np.log(freq[inside]), np.log(amp[inside]), 1)[0])
    return np.array(slopes)


def logits(model: Model, images: np.ndarray, batch: int = 8) -> np.ndarray:
    """The classifier's logits of uint8 (or float 0..255) images [B, classes] (its layer_fn resizes to its input)."""
    return readings(model, logits_layer(model), np.asarray(images, np.float32), batch, CLASS)


def top_k(model: Model, images: np.ndarray, k: int = 5) -> np.ndarray:
    """The `k` class indices the model rates highest for each image, best first [B, k]."""
    return np.argsort(-logits(model, images), axis=1, kind="stable")[:, :k]


def hits(top: np.ndarray, classes: list[int] | np.ndarray, k: int) -> np.ndarray:
    """Whether each image's class is among the first `k` columns of its `top_k` rows [B] (bool)."""
    return (np.asarray(top)[:, :k] == np.asarray(classes)[:, None]).any(axis=1)


def even_classes(count: int, total: int = 1000) -> list[int]:
    """`count` class indices spread evenly over 0..total-1 (the first at 0): a deterministic choice of classes
    with no hand-picking."""
    return sorted({int(i * total // count) for i in range(count)})


def specificity(model: Model, layer: str, channels: list[int], images: np.ndarray, objective: str = "channel",
                batch: int = 8) -> np.ndarray:
    """Whether each image excites its own channel of `layer` more than every other channel's image does [B] (bool):
    `RenderResult.specific`, measured on the given pixels (e.g. a display of the optimised ones); `objective`
    "class" for the logits. An image alone with its channel counts as not specific."""
    values = readings(model, layer, np.asarray(images, np.float32), batch, objective)  # [B, C]
    return np.array([bool(found) for found in is_specific(values, np.asarray(channels))])
