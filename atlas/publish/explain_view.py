"""What the gallery shows of a run's per-photo explanations (read through `atlas.run.explainfiles`, plain data):
the Photos page, one page per photo with a tab per layer and the four interfaces of "The Building Blocks of
Interpretability", and, on a channel page, the photos where that channel is a top contributor.

    site/photos.html              the explained photos, each with its top classes
    site/photos/<sha16>.html      one photo: per layer, its semantic dictionary (hover a position), spatial
                                  attribution per class, channel attribution per class and neuron groups

Heatmaps are tiny PNGs (one pixel per position of the layer's map) inlined as data: URIs and stretched over the
photo by the browser, which blends them in (multiply): white leaves the photo as it is. The dictionary's data is
JSON in the page; templates/static/explain.js shows a position's channels on hover.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from atlas.publish.circuits_view import UnitLink, diverging_pixels, rgb_png
from atlas.run.explainfiles import (
    ClassScore,
    ExplainedPhoto,
    ExplainIndex,
    ExplainLayer,
    LayerExplanation,
    attribution_of,
    group_render,
    has_explanations,
    layer_file,
    read_explanation,
    read_index,
)
from atlas.run.manifest import Render

PHOTOS_PAGE = "photos.html"
TOP_CHANNELS = 6  # channels shown per class, positive and negative each
GROUP_CHANNELS = 4  # top channels shown per neuron group
DIM = 0.3  # a group's heatmap: the photo keeps this much brightness where the group does not fire
ICON_MIN, ICON_MAX = 28, 96  # px: the dictionary's icons, sized by activation

IconOf = Callable[[str, int], Render | None]  # (catalogued layer, channel) -> its render on disk, if any


def photo_url(sha256: str) -> str:
    """A photo page's path from the site root."""
    return f"photos/{sha256[:16]}.html"


# ---------------------------------------------------------------------------------------------------------
# Heatmaps


def data_png(pixels: np.ndarray) -> str:
    """A uint8 RGB [h, w, 3] image as a data: URI."""
    return "data:image/png;base64," + base64.b64encode(rgb_png(pixels)).decode()


def mask_pixels(values: np.ndarray, scale: float) -> np.ndarray:
    """Where a group fires: white at `scale` and above, dark grey (DIM) at zero and below; uint8 RGB [h, w, 3]."""
    t = np.clip(values / scale, 0.0, 1.0) if scale > 0 else np.zeros(values.shape)
    grey = np.round(255 * (DIM + (1 - DIM) * t)).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


# ---------------------------------------------------------------------------------------------------------
# Units: a channel of an explained layer, as its catalogued channel (page and render) where it has one


@dataclass(frozen=True)
class Unit:
    """One channel of an explained layer."""

    channel: int  # in the explained layer (a block output's channels run across its branches)
    label: str  # the catalogued `layer:channel` it is, else `explained layer:channel`
    href: str | None  # its channel page (else its layer page at it) from the site root, when the site shows it
    thumb: str | None  # its render's thumbnail, run-relative, when the run has one
    short: str = ""  # its caption beside the others of its layer: `3x3:12` in mixed4d, `12` in a catalogued layer

    def to_json(self) -> list[str]:
        return [self.label, self.href or "", self.thumb or "", self.short or self.label]


def short_label(explained: str, layer: str, channel: int) -> str:
    """A unit's caption on its explained layer's page: the channel alone in the layer itself, else the catalogued
    layer without the explained layer's name and the `_pre_relu` suffix (`mixed4d_3x3_pre_relu` in mixed4d: `3x3`)."""
    if layer == explained:
        return str(channel)
    name = layer[len(explained) + 1:] if layer.startswith(f"{explained}_") else layer
    return f"{name.removesuffix('_pre_relu') or name}:{channel}"


def catalogued(layer: ExplainLayer, channel: int, catalogue: set[str]) -> tuple[str, int] | None:
    """The catalogued (layer, channel) a channel of an explained layer is, if any."""
    if layer.sources is not None:
        return layer.sources[channel] if 0 <= channel < len(layer.sources) else None
    return (layer.name, channel) if layer.name in catalogue else None


@dataclass(frozen=True)
class Scored:
    """A unit with a value (an activation or an attribution) and its share of the largest one shown beside it."""

    unit: Unit
    value: float
    share: float  # |value| / the largest |value| of its list, 0..1


def scored(units: list[Unit], values: list[float]) -> list[Scored]:
    top = max((abs(v) for v in values), default=0.0) or 1.0
    return [Scored(u, v, abs(v) / top) for u, v in zip(units, values)]


# ---------------------------------------------------------------------------------------------------------
# One photo at one layer


@dataclass
class ClassPanel:
    """A top class: its heatmap over the photo and the channels that push it up and down most."""

    score: ClassScore
    heatmap: str  # data: URI
    total: float  # the spatial attribution summed over positions
    positive: list[Scored]
    negative: list[Scored]


@dataclass
class GroupPanel:
    """A neuron group: where it fires, its render, its top channels and its attribution to each class."""

    index: int
    heatmap: str  # data: URI
    render: str | None  # run-relative, when the pass rendered it
    channels: list[Scored]
    classes: list[tuple[ClassScore, float, float]]  # class, attribution, share of the largest |attribution|


@dataclass
class LayerPanel:
    """One tab of a photo page."""

    layer: ExplainLayer
    classes: list[ClassPanel]
    groups: list[GroupPanel]
    dictionary: dict[str, Any]  # JSON for explain.js: h, w, channels, values, units, icon sizes, between

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def grid(self) -> str:
        return f"{self.layer.height}×{self.layer.width}"


@dataclass
class PhotoView:
    """A photo page."""

    photo: ExplainedPhoto
    panels: list[LayerPanel]
    attribution: str = "activation × gradient of the class logit"  # what it is (explainfiles.attribution_of)


@dataclass(frozen=True)
class Contribution:
    """A photo where a channel is a top contributor to one of its classes (or one of a group's top channels)."""

    photo: ExplainedPhoto
    layer: str  # the explained layer (the photo page's tab)
    what: str  # "raises tabby (+1.23)", "neuron group 2"
    value: float  # the attribution, or the channel's weight in the group
    group: bool = False  # a group's channel, not a class's top contributor

    @property
    def href(self) -> str:
        return f"{photo_url(self.photo.sha256)}#m={self.layer}"


@dataclass
class Explained:
    """A run's explanations as the site shows them: the index, and per catalogued channel its contributions."""

    folder: Path
    index: ExplainIndex
    icon: IconOf
    catalogue: set[str]  # the catalogued layers (each has a layer page in this site)
    link: UnitLink  # where a link to a catalogued unit leads (its channel page, else its layer page at it)
    contributions: dict[tuple[str, int], list[Contribution]] = field(default_factory=dict)

    @property
    def photos(self) -> list[ExplainedPhoto]:
        return self.index.photos

    @property
    def attribution(self) -> bool:
        """False for a model without a classifier: dictionaries and groups only."""
        return self.index.classifier is not None

    def unit(self, layer: ExplainLayer, channel: int) -> Unit:
        source = catalogued(layer, channel, self.catalogue)
        if source is None:
            return Unit(channel, f"{layer.name}:{channel}", None, None, str(channel))
        render = self.icon(*source)
        return Unit(channel, f"{source[0]}:{source[1]}", self.link(*source), render.thumb if render else None,
                    short_label(layer.name, *source))

    def units(self, layer: ExplainLayer, channels: list[int]) -> list[Unit]:
        return [self.unit(layer, c) for c in channels]

    def layers_of(self, photo: ExplainedPhoto) -> list[str]:
        """The photo's explained layers whose arrays are on disk."""
        return [name for name in photo.layers
                if name in self.index.layers and (self.folder / layer_file(photo.sha256, name)).is_file()]

    def read(self, photo: ExplainedPhoto, layer: str) -> LayerExplanation:
        return read_explanation(self.folder, photo.sha256, layer)

    def view(self, photo: ExplainedPhoto) -> PhotoView:
        """Everything a photo page shows (reads the photo's arrays)."""
        panels = [self.panel(photo, self.index.layers[name], self.read(photo, name))
                  for name in self.layers_of(photo)]
        return PhotoView(photo, panels, attribution_of(self.index.settings))

    def panel(self, photo: ExplainedPhoto, layer: ExplainLayer, data: LayerExplanation) -> LayerPanel:
        classes = photo_classes(photo, data)
        scale = float(np.abs(data.spatial).max()) if data.spatial.size else 0.0
        class_panels = []
        for k, score in enumerate(classes):
            row = data.channels[k]
            up, down = top_channels(row)
            class_panels.append(ClassPanel(score, data_png(diverging_pixels(data.spatial[k], scale)),
                                           float(data.spatial[k].sum()),
                                           scored(self.units(layer, up), [float(row[c]) for c in up]),
                                           scored(self.units(layer, down), [float(row[c]) for c in down])))
        groups = []
        for g in range(data.group_spatial.shape[0]):
            where = data.group_spatial[g]
            top = [int(c) for c in np.argsort(-data.group_channels[g], kind="stable")[:GROUP_CHANNELS]]
            attributions = [float(v) for v in data.group_classes[g][:len(classes)]]
            biggest = max((abs(v) for v in attributions), default=0.0) or 1.0
            render = group_render(photo.sha256, layer.name, g)
            groups.append(GroupPanel(g, data_png(mask_pixels(where, float(where.max()))),
                                     render if (self.folder / render).is_file() else None,
                                     scored(self.units(layer, top), [float(data.group_channels[g][c]) for c in top]),
                                     [(c, v, abs(v) / biggest) for c, v in zip(classes, attributions)]))
        return LayerPanel(layer, class_panels, groups, self.dictionary(layer, data))

    def dictionary(self, layer: ExplainLayer, data: LayerExplanation) -> dict[str, Any]:
        """The semantic dictionary as JSON: per position its channels and activations, and each channel's unit."""
        channels = data.dictionary_channels.astype(int)
        values = data.dictionary_values.astype(float)
        units = {str(c): self.unit(layer, c).to_json() for c in sorted(set(channels.ravel().tolist()))}
        return {"h": int(channels.shape[0]), "w": int(channels.shape[1]), "channels": channels.tolist(),
                "values": np.round(values, 4).tolist(), "units": units, "top": float(max(values.max(initial=0.0), 0.0)),
                "min": ICON_MIN, "max": ICON_MAX,
                "between": [between_json(lower, a) for lower, a in sorted(data.between.items())]}


def between_json(lower: str, attribution: np.ndarray) -> dict[str, Any]:
    """Attribution between layers for explain.js: per position of this layer [H, W], how much each position of
    `lower` [h, w] feeds it, as signed bytes (-127..127, each position scaled by its own largest |value|), base64."""
    height, width, low_h, low_w = attribution.shape
    flat = attribution.reshape(height * width, low_h * low_w).astype(np.float64)
    scale = np.abs(flat).max(axis=1, keepdims=True)
    scaled = np.divide(flat, scale, out=np.zeros_like(flat), where=scale > 0)
    data = np.round(scaled * 127).astype(np.int8).tobytes()
    return {"layer": lower, "h": int(low_h), "w": int(low_w), "data": base64.b64encode(data).decode()}


def top_channels(row: np.ndarray, count: int = TOP_CHANNELS) -> tuple[list[int], list[int]]:
    """The channels of one class's attribution row that raise it most and lower it most, strongest first."""
    up = [int(c) for c in np.argsort(-row, kind="stable")[:count] if row[c] > 0]
    down = [int(c) for c in np.argsort(row, kind="stable")[:count] if row[c] < 0]
    return up, down


def photo_classes(photo: ExplainedPhoto, data: LayerExplanation) -> list[ClassScore]:
    """The photo's top classes in the order of the arrays (the index's labels where it names the same class)."""
    labels = {c.index: c.label for c in photo.classes}
    return [ClassScore(int(i), labels.get(int(i), f"class {int(i)}"), float(v))
            for i, v in zip(data.classes, data.logits)]


def read_explained(folder: Path, icon: IconOf, catalogue: set[str], link: UnitLink) -> Explained | None:
    """A run folder's explanations with every channel's contributions, or None when it has none."""
    if not has_explanations(folder):
        return None
    explained = Explained(folder, read_index(folder), icon, catalogue, link)
    for photo in explained.photos:
        for name in explained.layers_of(photo):
            add_contributions(explained, photo, explained.index.layers[name], explained.read(photo, name))
    for found in explained.contributions.values():
        found.sort(key=lambda c: (c.group, -abs(c.value)))
    return explained


def add_contributions(explained: Explained, photo: ExplainedPhoto, layer: ExplainLayer,
                      data: LayerExplanation) -> None:
    """Record the channels a photo page shows for a class (its top positive and negative ones) and for a group."""
    def add(channel: int, what: str, value: float, group: bool = False) -> None:
        source = catalogued(layer, channel, explained.catalogue)
        if source is not None and source[0] in explained.catalogue:
            found = Contribution(photo, layer.name, what, value, group)
            explained.contributions.setdefault(source, []).append(found)

    for k, score in enumerate(photo_classes(photo, data)):
        row = data.channels[k]
        up, down = top_channels(row)
        for c in up + down:
            add(c, f"{'raises' if row[c] > 0 else 'lowers'} {score.label} ({row[c]:+.3g})", float(row[c]))
    for g in range(data.group_channels.shape[0]):
        for c in np.argsort(-data.group_channels[g], kind="stable")[:GROUP_CHANNELS]:
            add(int(c), f"in neuron group {g}", float(data.group_channels[g][c]), group=True)

