"""MACO's fixed magnitude: the mean amplitude spectrum of natural photos, shipped as `maco_spectrum.npz`.

MACO (Fel et al., NeurIPS 2023) optimises only the phase of an image's spectrum and keeps its magnitude fixed to
that of natural images, so every render has the second-order statistics of a photo. The paper averages ImageNet's
spectra; atlas averages those of the photos it ships (`atlas/data/photos`: astronaut, chelsea, coffee, rocket, all
public domain or CC0), over SPECTRUM_CROPS seeded random square crops of each at scales from a quarter of the
photo's short side to all of it, every crop resized to SPECTRUM_SIZE px. The spectrum's slope is what matters (the
images are standardised after the inverse FFT); on this set its amplitude falls as about f^-1.55 (fitted between 0.01 and 0.4 cycles per pixel).

Remake the file with `python -m atlas.render.maco` (deterministic: the same photos give the same bytes).
"""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

import numpy as np

SPECTRUM_FILE = Path(__file__).with_name("maco_spectrum.npz")
SPECTRUM_SIZE = 224  # px: the side the spectrum is stored at; other sizes look it up by frequency
SPECTRUM_CROPS = 32  # random crops of each photo
CROP_SCALES = (0.25, 1.0)  # a crop's side, as a share of the photo's short side


@lru_cache(maxsize=1)
def shipped_spectrum() -> np.ndarray:
    """The shipped mean amplitude spectrum [3, SPECTRUM_SIZE, SPECTRUM_SIZE//2+1] (float32, per colour)."""
    with np.load(SPECTRUM_FILE) as data:
        return data["magnitude"].astype(np.float32)


def crop_spectrum(crop: np.ndarray) -> np.ndarray:
    """The amplitude spectrum of one float RGB crop [S, S, 3] (each colour's mean removed, unitary FFT):
    [3, S, S//2+1]."""
    centred = crop - crop.mean(axis=(0, 1), keepdims=True)
    return np.abs(np.fft.rfft2(np.moveaxis(centred, -1, 0), norm="ortho"))


def random_crops(photo: np.ndarray, count: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """`count` seeded random square crops of a float RGB photo, each resized (bicubic) to `size` px."""
    from PIL import Image

    height, width = photo.shape[:2]
    image = Image.fromarray(np.clip(np.rint(photo), 0, 255).astype(np.uint8))
    crops = []
    for _ in range(count):
        side = int(min(height, width) * rng.uniform(*CROP_SCALES))
        top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
        box = image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)
        crops.append(np.asarray(box, np.float64))
    return crops


def mean_spectrum(photos: list[np.ndarray], size: int = SPECTRUM_SIZE, crops: int = SPECTRUM_CROPS,
                  seed: int = 0) -> np.ndarray:
    """The mean amplitude spectrum of `crops` random crops of each photo: [3, size, size//2+1] float32."""
    rng = np.random.default_rng(seed)
    spectra = [crop_spectrum(crop) for photo in photos for crop in random_crops(photo, crops, size, rng)]
    return np.mean(spectra, axis=0).astype(np.float32)


def main() -> None:
    """Remake `maco_spectrum.npz` from the shipped photos (written atomically)."""
    import io

    from atlas.atomic import atomic_write_bytes
    from atlas.images import PHOTOS_DIR, SHIPPED_PHOTOS, load_photo

    photos = [load_photo(PHOTOS_DIR / f"{name}.jpg") for name in sorted(SHIPPED_PHOTOS)]
    magnitude = mean_spectrum(photos)
    data = io.BytesIO()
    np.savez_compressed(data, magnitude=magnitude.astype(np.float16))
    atomic_write_bytes(SPECTRUM_FILE, data.getvalue())
    print(f"{SPECTRUM_FILE}: the mean amplitude spectrum of {len(photos)} photos x {SPECTRUM_CROPS} crops at "
          f"{SPECTRUM_SIZE} px", file=sys.stderr)


if __name__ == "__main__":
    main()
