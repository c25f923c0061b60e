"""Photos the photo-pass tests write: smooth random colour images, distinct per seed."""

from pathlib import Path

import numpy as np
from PIL import Image


def smooth_photo(path: Path, seed: int, size: tuple[int, int]) -> Path:
    """A smooth random colour image of `size` (width, height) at `path` (distinct per seed)."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (size[1] // 16 + 2, size[0] // 16 + 2, 3)).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(small).resize(size, Image.Resampling.BICUBIC).save(path)
    return path
