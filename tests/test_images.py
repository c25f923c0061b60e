"""Base photos: every mode Pillow reads becomes upright RGB; bad files are one clear error."""

import io

import numpy as np
import pytest
from PIL import Image

from atlas.atomic import atomic_write_bytes
from atlas.errors import UserError
from atlas.images import encode, load_photo, save_image


def _save(path, image, **options):
    image.save(path, **options)
    return path


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "RGBA", "LA", "CMYK", "I;16", "1"])
def test_every_mode_loads_as_rgb(tmp_path, mode):
    image = Image.new("RGB", (40, 30), (200, 100, 50)).convert(mode)
    suffix = ".jpg" if mode == "CMYK" else ".png" if mode != "I;16" else ".tif"
    path = _save(tmp_path / f"photo{suffix}", image)
    pixels = load_photo(path)
    assert pixels.shape == (30, 40, 3) and pixels.dtype == np.float32
    assert 0 <= pixels.min() and pixels.max() <= 255


def test_sixteen_bit_keeps_its_brightness(tmp_path):
    values = np.full((8, 8), 32768, np.uint16)  # mid-grey in 16 bits
    path = _save(tmp_path / "deep.png", Image.fromarray(values))
    assert abs(load_photo(path).mean() - 127.5) < 1.0


def test_transparent_areas_become_mid_grey(tmp_path):
    path = _save(tmp_path / "clear.png", Image.new("RGBA", (4, 4), (255, 0, 0, 0)))
    assert np.allclose(load_photo(path), 128)


def test_exif_rotation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = _save(tmp_path / "rotated.jpg", image, exif=exif.tobytes())
    assert load_photo(path).shape == (40, 20, 3)


def test_shipped_photo_by_name():
    assert load_photo("chelsea").shape == (300, 451, 3)


@pytest.mark.parametrize("content, message", [
    (b"not an image at all", "not an image"),
    (None, "truncated"),
])
def test_bad_photo_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.jpg"
    if content is None:  # a real JPEG cut in half
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)).save(buffer, "JPEG")
        content = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as info:
        load_photo(path)
    assert "\n" not in str(info.value)


def test_decompression_bomb_is_refused(tmp_path):
    path = _save(tmp_path / "bomb.png", Image.new("1", (9000, 9000)))  # 81 Mpx in a few KB
    assert path.stat().st_size < 100_000
    with pytest.raises(UserError, match="over the limit"):
        load_photo(path)


def test_missing_photo_names_the_shipped_ones(tmp_path):
    with pytest.raises(UserError, match="chelsea"):
        load_photo(tmp_path / "nope.jpg")


def test_saved_png_is_reproducible_and_readable(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 255, (16, 16, 3), np.uint8)
    first = save_image(tmp_path / "a.png", pixels).read_bytes()
    assert first == encode(pixels, "png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), pixels)
    assert (tmp_path / "a.png").stat().st_mode & 0o044  # readable by others, like any published file


def test_atomic_files_follow_the_umask(tmp_path):
    atomic_write_bytes(tmp_path / "f.txt", b"x")
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask():
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (5, 5), (7, 4), (1, 9)])
def test_kernel_pngs_decode_to_their_pixels(shape):
    """The gallery's own tiny-PNG writer (atlas/publish/circuits_view.py) round-trips through Pillow's decoder."""
    import io

    from PIL import Image

    from atlas.publish.circuits_view import rgb_png

    pixels = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    decoded = Image.open(io.BytesIO(rgb_png(pixels)))
    assert decoded.mode == "RGB" and decoded.size == (shape[1], shape[0])
    assert np.array_equal(np.asarray(decoded), pixels)
