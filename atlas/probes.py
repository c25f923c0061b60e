"""Teaching probes: a few hundred generated images (gratings, colour patches, checkerboards, radial patterns).

They are made here with numpy, deterministically, so they need no licence and no files: `examples: {folder:
probes}` runs the dataset-examples pass on them, and a channel's top probes answer questions such as "which
orientation, frequency or colour does this channel like?".
"""

from __future__ import annotations

from typing import Callable

import numpy as np

PROBES = "probes"  # the folder name that selects the built-in set
PROBE_SIZE = 224
VERSION = "probes-1"  # bump when the images change, so resumed passes process them again
COLOURS = {  # name -> (foreground, background) RGB
    "bw": ((255, 255, 255), (0, 0, 0)),
    "rg": ((220, 40, 40), (40, 180, 60)),
    "by": ((40, 70, 220), (235, 210, 40)),
    "grey": ((170, 170, 170), (90, 90, 90)),
}
ORIENTATIONS = range(0, 180, 15)  # degrees: 12
PERIODS = (4, 8, 16, 32)  # pixels per cycle


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return y - (size - 1) / 2, x - (size - 1) / 2


def _paint(mask: np.ndarray, colours: str) -> np.ndarray:
    """Blend two colours by `mask` in 0..1 -> uint8 RGB."""
    fg, bg = (np.array(c, dtype=np.float32) for c in COLOURS[colours])
    return np.rint(bg + (fg - bg) * mask[..., None]).astype(np.uint8)


def grating(angle: float, period: int, colours: str, size: int = PROBE_SIZE) -> np.ndarray:
    """A sinusoidal grating: stripes at `angle` degrees from vertical, `period` pixels per cycle."""
    y, x = _grid(size)
    theta = np.deg2rad(angle)
    phase = (x * np.cos(theta) + y * np.sin(theta)) * 2 * np.pi / period
    return _paint(0.5 + 0.5 * np.cos(phase), colours)


def checkerboard(square: int, colours: str, size: int = PROBE_SIZE) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    return _paint(((y // square + x // square) % 2).astype(np.float32), colours)


def rings(period: int, colours: str, size: int = PROBE_SIZE) -> np.ndarray:
    """Concentric rings."""
    y, x = _grid(size)
    return _paint(0.5 + 0.5 * np.cos(np.hypot(x, y) * 2 * np.pi / period), colours)


def spokes(count: int, colours: str, size: int = PROBE_SIZE) -> np.ndarray:
    """Radial spokes around the centre."""
    y, x = _grid(size)
    return _paint(0.5 + 0.5 * np.cos(np.arctan2(y, x) * count), colours)


def patch(hue: float, value: float, size: int = PROBE_SIZE) -> np.ndarray:
    """A flat colour: `hue` in 0..1 at full saturation, `value` (brightness) in 0..1."""
    rgb = np.clip(np.abs(((hue * 6 + np.array([0, 4, 2])) % 6) - 3) - 1, 0, 1) * value * 255
    return np.broadcast_to(np.rint(rgb).astype(np.uint8), (size, size, 3)).copy()


def probe_makers() -> list[tuple[str, Callable[[], np.ndarray]]]:
    """(name, maker) of every probe, in a fixed order; a maker returns the uint8 RGB image."""
    makers: list[tuple[str, Callable[[], np.ndarray]]] = []
    for colours in COLOURS:
        for period in PERIODS:
            for angle in ORIENTATIONS:
                makers.append((f"grating-{colours}-p{period:02d}-a{angle:03d}",
                               lambda a=angle, p=period, c=colours: grating(a, p, c)))
        for square in (4, 8, 16, 32):
            makers.append((f"checker-{colours}-s{square:02d}", lambda s=square, c=colours: checkerboard(s, c)))
        for period in (8, 16, 32):
            makers.append((f"rings-{colours}-p{period:02d}", lambda p=period, c=colours: rings(p, c)))
        for count in (4, 8, 16):
            makers.append((f"spokes-{colours}-n{count:02d}", lambda n=count, c=colours: spokes(n, c)))
    for h in range(12):
        for v in (0.35, 0.7, 1.0):
            makers.append((f"colour-h{h * 30:03d}-v{round(v * 100):03d}", lambda h=h, v=v: patch(h / 12, v)))
    for v in range(0, 256, 51):
        makers.append((f"colour-grey{v:03d}", lambda v=v: np.full((PROBE_SIZE, PROBE_SIZE, 3), v, np.uint8)))
    return makers
