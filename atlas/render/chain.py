"""The random transform chain of the Fourier method (Lucid's `transforms.standard_transforms`): a list of steps.

Every step of the method looks at each image through the chain: pad, jitter, scale, rotate, jitter (the published
defaults, `DEFAULT_CHAIN`). A chain is a tuple of small frozen dataclasses; a user extends it by appending one
(`DEFAULT_CHAIN + (Scale((0.95, 1.05)),)`) and passes it as the render settings' `transforms`. Each step draws
its random parameters per image with numpy and is an affine map; the chain composes them into one affine map
per image and step, which `atlas.render.transforms.affine_warp` applies on a fixed canvas, so a batch keeps one
shape while every image draws its own transform. Plain numpy: settings and plans read a chain without TensorFlow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

Affine = tuple[np.ndarray, np.ndarray]  # ([steps, 2, 2] linear part, [steps, 2] shift): output point -> input point


class Step(Protocol):
    """One transform of the chain: how it changes the image's side, its random draw, and its affine map."""

    def side(self, side: int) -> int:
        """The image's side after this step."""

    def draw(self, rng: np.random.Generator, steps: int) -> np.ndarray:
        """`steps` random parameter rows of one image."""

    def __call__(self, params: np.ndarray, side: int) -> Affine:
        """The map from points of this step's output to points of its input (of side `side`), per parameter row."""


def _shift(shift: np.ndarray) -> Affine:
    return np.broadcast_to(np.eye(2), (len(shift), 2, 2)), shift


def _about_centre(linear: np.ndarray, side: int) -> Affine:
    """A linear map about the centre of a `side` x `side` image."""
    centre = np.full(2, (side - 1) / 2)
    return linear, centre - linear @ centre


@dataclass(frozen=True)
class Pad:
    """Pad by `pad` pixels of mid-grey on every side."""

    pad: int = 12

    def side(self, side: int) -> int:
        return side + 2 * self.pad

    def draw(self, rng: np.random.Generator, steps: int) -> np.ndarray:
        return np.zeros((steps, 0))

    def __call__(self, params: np.ndarray, side: int) -> Affine:
        return _shift(np.full((len(params), 2), -float(self.pad)))


@dataclass(frozen=True)
class Jitter:
    """Crop `jitter` pixels at a random offset (0..jitter in each direction)."""

    jitter: int = 8
    draws_first = True  # jitters draw their numbers before the other steps, as the published chain did

    def side(self, side: int) -> int:
        return side - self.jitter

    def draw(self, rng: np.random.Generator, steps: int) -> np.ndarray:
        return rng.integers(0, self.jitter + 1, (steps, 2)) - self.jitter / 2  # the offset about the centre

    def __call__(self, params: np.ndarray, side: int) -> Affine:
        return _shift(self.jitter / 2 - params)


@dataclass(frozen=True)
class Scale:
    """Scale about the centre by one of `scales`, drawn uniformly (the side stays)."""

    scales: tuple[float, ...] = tuple(1 + (i - 5) / 50 for i in range(11))  # 0.9 ... 1.1

    def side(self, side: int) -> int:
        return side

    def draw(self, rng: np.random.Generator, steps: int) -> np.ndarray:
        return np.asarray(self.scales)[rng.integers(0, len(self.scales), steps)][:, None]

    def __call__(self, params: np.ndarray, side: int) -> Affine:
        return _about_centre(np.eye(2) / params[:, :1, None], side)


@dataclass(frozen=True)
class Rotate:
    """Rotate about the centre by one of `angles` degrees, drawn uniformly (the side stays)."""

    angles: tuple[int, ...] = tuple(range(-10, 11)) + (0,) * 5  # no rotation more often

    def side(self, side: int) -> int:
        return side

    def draw(self, rng: np.random.Generator, steps: int) -> np.ndarray:
        return np.deg2rad(np.asarray(self.angles, float)[rng.integers(0, len(self.angles), steps)])[:, None]

    def __call__(self, params: np.ndarray, side: int) -> Affine:
        cos, sin = np.cos(params[:, 0]), np.sin(params[:, 0])
        return _about_centre(np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], 1), side)


Chain = tuple[Step, ...]
DEFAULT_CHAIN: Chain = (Pad(12), Jitter(8), Scale(), Rotate(), Jitter(4))  # the published defaults


def canvas(chain: Chain, size: int) -> int:
    """Side of an image of side `size` after the whole chain."""
    for step in chain:
        size = step.side(size)
    return size


def draw(chain: Chain, rng: np.random.Generator, steps: int, size: int) -> np.ndarray:
    """`steps` random transforms of one image of side `size`, as affine maps from canvas (row, col) to image
    (row, col): [steps, 6] float32 (a, b, c, d, e, f: row = a r + b c + c, col = d r + e c + f). Jitters draw
    first, then the other steps, each in the chain's order (the order of the published chain's numbers)."""
    order = sorted(range(len(chain)), key=lambda i: not getattr(chain[i], "draws_first", False))
    params = {i: chain[i].draw(rng, steps) for i in order}
    sides = [size]
    for step in chain:
        sides.append(step.side(sides[-1]))
    linear, shift = np.broadcast_to(np.eye(2), (steps, 2, 2)), np.zeros((steps, 2))
    for i in range(len(chain) - 1, -1, -1):  # canvas -> image: the last step's map first
        step_linear, step_shift = chain[i](params[i], sides[i])
        linear, shift = step_linear @ linear, np.einsum("sij,sj->si", step_linear, shift) + step_shift
    maps = np.concatenate([linear[:, 0], shift[:, :1], linear[:, 1], shift[:, 1:]], axis=1)
    return maps.astype(np.float32)


def pixel_settings(chain: Chain) -> dict[str, object]:
    """What the settings hash records of a chain: the default chain's five numbers under the names they always had
    (so hashes of earlier renders stay), any other chain as its list of steps with their settings."""
    if chain == DEFAULT_CHAIN:
        pad, first, scale, rotate, second = chain
        return {"pad": pad.pad, "jitter": first.jitter, "scales": scale.scales, "angles": rotate.angles,
                "jitter_after": second.jitter}
    return {"steps": [{"step": type(step).__name__, **asdict(step)} for step in chain]}
