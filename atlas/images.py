"""Reading base photos and writing renders: any photo Pillow reads becomes RGB float pixels 0..255."""

from __future__ import annotations

import io
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from atlas.atomic import atomic_path
from atlas.errors import UserError

MAX_PIXELS = 40_000_000  # a larger photo is refused as a likely decompression bomb
PHOTOS_DIR = Path(__file__).resolve().parent / "data" / "photos"  # the shipped photos, and nothing else
SHIPPED_FOLDER = "photos"  # a folder name that means PHOTOS_DIR, where a folder of photos is asked for
SHIPPED_PHOTOS: dict[str, str] = {  # the sample photos atlas ships, with their credits
    "astronaut": "Eileen Collins, NASA portrait; public domain (NASA)",
    "chelsea": "Chelsea the cat, by Stefan van der Walt; CC0",
    "coffee": "Coffee cup on wood, by Rachel Michetti; CC0",
    "rocket": "Falcon 9 launch carrying DSCOVR; public domain (SpaceX)",
}


def photo_path(name_or_path: str | Path) -> Path:
    """A shipped photo's name (e.g. `chelsea`) or a path, as an existing file; else a clear error."""
    text = str(name_or_path)
    if text in SHIPPED_PHOTOS:
        return PHOTOS_DIR / f"{text}.jpg"
    path = Path(text).expanduser()
    if not path.is_file():
        raise UserError(f"photo {text}: no such file; give a path to an image or one of the shipped photos "
                        f"({', '.join(SHIPPED_PHOTOS)})")
    return path


def photo_credit(name_or_path: str | Path) -> str | None:
    """The credit line of a shipped photo; None for the user's own."""
    return SHIPPED_PHOTOS.get(str(name_or_path))


def load_photo(name_or_path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read a photo as an RGB float32 array [H, W, 3] in 0..255, upright per its EXIF orientation."""
    path = photo_path(name_or_path)
    with _opened(path, str(path), max_pixels) as image:
        return to_rgb(image)


def decode_photo(data: bytes, origin: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """`load_photo` of a photo file's bytes (e.g. sent to a worker that cannot see the file); `origin` names it
    in errors."""
    with _opened(io.BytesIO(data), origin, max_pixels) as image:
        return to_rgb(image)


def load_photo_image(path: str | Path, max_pixels: int = MAX_PIXELS, draft: int | None = None,
                     data: bytes | None = None) -> Image.Image:
    """Read a photo as an 8-bit RGB Pillow image, upright per its EXIF orientation (the same checks and
    conversions as `load_photo`, for passes that resize with Pillow). `draft`: a JPEG may be decoded at a
    reduced scale (Pillow's draft mode) whose sides stay at least this many pixels: faster, for previews.
    `data`: the file's bytes when the caller has read them already (`path` then only names it in errors)."""
    source = Path(path) if data is None else io.BytesIO(data)
    with _opened(source, str(path), max_pixels, draft) as image:
        return image if image.mode == "RGB" else Image.fromarray(to_uint8(to_rgb(image)))


@contextmanager
def _opened(source: Path | io.BytesIO, path: str, max_pixels: int, draft: int | None = None
            ) -> Iterator[Image.Image]:
    """The decoded, upright image of `source`; every way it can fail is one UserError naming the fix."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                if image.width * image.height > max_pixels:
                    raise UserError(f"photo {path} is {image.width}x{image.height} pixels, over the limit of "
                                    f"{max_pixels:,}; scale it down first (a decompression bomb is refused)")
                if draft:
                    image.draft("RGB", (draft, draft))
                image.load()
                upright = ImageOps.exif_transpose(image)
        yield upright
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(f"photo {path} is too many pixels (a possible decompression bomb); scale it down "
                        "first") from None
    except UnidentifiedImageError:
        raise UserError(f"photo {path} is not an image Pillow can read; use a JPEG, PNG, WebP, TIFF "
                        "or similar") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"photo {path} cannot be read ({exc}); the file is truncated or damaged, "
                        "re-export or re-download it") from None


def to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode (palette, alpha, 16-bit, greyscale, CMYK, float) -> RGB float32 0..255.

    Transparent areas are laid on mid-grey, the colour dreams start from.
    """
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(image, dtype=np.float32)
        top = 65535.0 if image.mode != "F" and values.max(initial=0) > 255 else 255.0
        if image.mode == "F" and values.max(initial=0) <= 1.0:
            top = 1.0
        grey = np.clip(values * (255.0 / top), 0, 255)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        background = Image.new("RGBA", image.size, (128, 128, 128, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Round and clip float pixels to 8 bits."""
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray, fmt: str = "png", size: int | None = None, quality: int = 90) -> bytes:
    """Encode an 8-bit RGB image as PNG, JPEG or WebP bytes, optionally scaled so its long side is `size`."""
    image = Image.fromarray(pixels)
    if size and max(image.size) != size:
        factor = size / max(image.size)
        image = image.resize((max(1, round(image.width * factor)), max(1, round(image.height * factor))),
                             Image.Resampling.LANCZOS)
    out = io.BytesIO()
    fmt = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}[fmt.lower()]
    options = {"optimize": True} if fmt == "PNG" else {"quality": quality}
    image.save(out, format=fmt, **options)
    return out.getvalue()


def save_image(path: str | Path, pixels: np.ndarray, size: int | None = None, quality: int = 90) -> Path:
    """Write an image atomically; the suffix picks the format."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(encode(pixels, path.suffix.lstrip("."), size, quality))
    return path
