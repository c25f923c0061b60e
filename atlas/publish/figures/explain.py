"""The explain kind's layout: a poster of one photo at one layer with the four interfaces of "The Building Blocks of
Interpretability" (Olah et al., Distill 2018): the semantic dictionary (the layer's grid over the photo, and for its
strongest positions their most active channels as renders), spatial attribution per top class (heatmaps with the
class and its logit), channel attribution per class (the channels that add most and take most, as renders with
their names), and neuron groups (where each fires, its render, its attribution to each class).

The page is 16:9 and as wide as A4 in landscape (11.69 x 6.58 inches): it prints on A4 at 100% and fills a slide at
114%; no text is smaller than `MIN_PT` (7 points on A4, 8 on the slide). Reads the run only through
`atlas.run.explainfiles` and the manifest. Nothing is drawn here."""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atlas.errors import UserError
from atlas.publish.figures.page import (CHAR_EM, LINE, POINTS, Box, FigureLayout, Overlay, Panel, Patch, Text,
                                        find_mode, footer_text, image_file, mode_words, short_layer)
from atlas.run.manifest import NOISE, Mode, Render, Run

if TYPE_CHECKING:  # numpy, through explainfiles: not for `atlas --help`, which lists the figure kinds
    from atlas.run.explainfiles import ExplainedPhoto, ExplainIndex, ExplainLayer, LayerExplanation

# Page: 16:9 at the width of A4 in landscape; every size in inches or points.
WIDTH = 11.69
HEIGHT = round(WIDTH * 9 / 16, 4)
MARGIN = 0.3
COLUMN_GAP = 0.3
TITLE_PT, HEAD_PT, TEXT_PT, MIN_PT = 14.0, 9.5, 8.0, 7.0  # MIN_PT: tile labels, notes, marks and the footer
DICTIONARY_W, ATTRIBUTION_W = 3.0, 4.5  # the first two columns' widths; the groups take the rest
CLASSES, POSITIONS = 3, 3  # defaults: top classes and strongest positions shown
MAX_CLASSES, MAX_POSITIONS = 5, 4  # as many classes as the pass keeps by default; as many as fit legibly
DICTIONARY_TILE = 0.5  # the side of a position's channel render
PER_POSITION = 3  # a position's most active channels shown
PER_SIGN = 2  # channels shown per class and sign
NOTE_LINES = 3  # a column's note under its heading
NAME_LINES = 2  # a channel's name wraps to at most this many lines under its tile
TILE_GAP = 0.1
SETTINGS = ("classes", "groups", "top", "seed")  # the pass's settings the footer names
CELL_FADE = 1.6  # a group's strongest class attribution is drawn at 1/1.6 of full colour


def line_height(size: float) -> float:
    return size * LINE / POINTS


def text_width(text: str, size: float) -> float:
    """A text's width in inches, by the generous average glyph width the other kinds fit labels with."""
    return len(text) * CHAR_EM * size / POINTS


def shorten(text: str, width: float, size: float) -> str:
    """The text cut (with an ellipsis) to fit `width` inches at `size` points."""
    chars = max(4, int(width * POINTS / (CHAR_EM * size)))
    return text if len(text) <= chars else text[:chars - 1].rstrip() + "…"


def wrap_name(name: str, width: float, size: float = MIN_PT, lines: int = NAME_LINES) -> list[str]:
    """A channel's name on at most `lines` lines of `width` inches: broken after `_` or `:` where that fits, else
    anywhere; what still does not fit is cut with an ellipsis."""
    chars = max(4, int(width * POINTS / (CHAR_EM * size)))
    soft: list[str] = []
    for piece in (p for p in re.split(r"(?<=[_:])", name) if p):
        while len(piece) > chars:  # a piece longer than a line: cut it
            soft, piece = soft + [piece[:chars]], piece[chars:]
        if soft and len(soft[-1]) + len(piece) <= chars:
            soft[-1] += piece
        else:
            soft.append(piece)
    if len(soft) <= lines:
        return soft
    hard = [name[i:i + chars] for i in range(0, len(name), chars)]
    return hard if len(hard) <= lines else hard[:lines - 1] + [shorten("".join(hard[lines - 1:]), width, size)]


def name_lines(shown: list[Channel], pitch: float) -> int:
    """The most lines any of these channels' names takes under a tile in a slot `pitch` wide."""
    return max((len(wrap_name(channel.name, pitch - 0.04)) for channel in shown), default=1)


def signed(value: float) -> str:
    """A logit or attribution in at most 5 characters: +0.31, -4.2, +123."""
    return f"{value:+.2f}" if abs(value) < 1 else f"{value:+.1f}" if abs(value) < 10 else f"{value:+.0f}"


@dataclass(frozen=True)
class Channel:
    """A channel of the explained layer as the poster names and shows it."""

    name: str
    key: tuple[str, str, int]  # (mode, layer, channel) of its render (a catalogued layer's, when it maps to one)
    image: Path | None  # None: a gap with its name (no render, or a channel of no catalogued layer)


class Channels:
    """Names and renders of an explained layer's channels: a block output's channel is the catalogued (layer,
    channel) of `ExplainLayer.sources`; a catalogued layer's or block output's is itself where the index has no
    sources; any other has no render."""

    def __init__(self, run: Run, layer: ExplainLayer, mode: Mode | None) -> None:
        self.run, self.layer = run, layer
        self.mode = mode.id if mode else "none"
        self.catalogued = {catalogued.name for catalogued in [*run.layers, *run.blocks]}
        self.renders: dict[tuple[str, str, int], Render] = run.by_key() if mode else {}

    def source(self, channel: int) -> tuple[str, int] | None:
        """The catalogued (layer, channel) a channel of the explained layer is, if any."""
        if self.layer.sources is not None:
            return self.layer.sources[channel] if channel < len(self.layer.sources) else None
        return (self.layer.name, channel) if self.layer.name in self.catalogued else None

    def __getitem__(self, channel: int) -> Channel:
        source = self.source(channel)
        if source is None:
            return Channel(f"{self.layer.name}:{channel}", (self.mode, self.layer.name, channel), None)
        key = (self.mode, *source)
        return Channel(f"{short_layer(source[0])}:{source[1]}", key, image_file(self.run, self.renders.get(key)))


@dataclass
class Page:
    """The layout being built: texts, panels, patches and overlays."""

    texts: list[Text]
    panels: list[Panel]
    patches: list[Patch]
    overlays: list[Overlay]

    def text(self, x: float, y: float, text: str, size: float, weight: str = "normal", align: str = "left") -> float:
        """Place one line; returns the y below it."""
        self.texts.append(Text(round(x, 4), round(y, 4), text, size, weight, align))
        return y + line_height(size)

    def tile(self, x: float, y: float, side: float, pitch: float, channel: Channel, extra: str | None = None) -> None:
        """A channel's render (a gap if it has none) centred in the slot [x, x + pitch], with its name, and `extra`,
        centred under it: labels stay inside their slot."""
        left = x + (pitch - side) / 2
        fit = round(min(MIN_PT, side * POINTS / (CHAR_EM * len("missing"))), 2)  # the word a gap shows
        self.panels.append(Panel(Box(round(left, 4), round(y, 4), side, side), channel.image, "", fit,
                                 key=channel.key))
        below = y + side + 0.02
        for line in wrap_name(channel.name, pitch - 0.04) + ([extra] if extra else []):
            below = self.text(left + side / 2, below, line, MIN_PT, align="center")


def explain_layout(run: Run, spec: Any) -> FigureLayout:
    """The poster of `spec.explained` at `spec.layer` (see the module docstring)."""
    from atlas.run.explainfiles import attribution_of, read_explanation, read_index

    index = read_index(run.folder)
    photo, layer = find_explained(index, spec.explained or "", spec.layer or "")
    data = read_explanation(run.folder, photo.sha256, layer.name)
    mode = renders_mode(run, spec.mode)
    channels = Channels(run, layer, mode)
    picture = run.folder / photo.photo
    page = Page([], [], [], [])
    top = classes_shown(photo, data, spec.value("classes"))
    title = spec.title or f"What the network sees in {Path(photo.name).name} at {layer.name}"
    y = page.text(MARGIN, MARGIN, shorten(title, WIDTH - 2 * MARGIN, TITLE_PT), TITLE_PT, "bold")
    facts = (f"photo {photo.name} · layer {layer.name}: {layer.height}×{layer.width} positions × {layer.channels} "
             "channels · renders: "
             f"{mode_words(mode) if mode else 'none in this run'}")
    y = page.text(MARGIN, y, shorten(facts, WIDTH - 2 * MARGIN, TEXT_PT), TEXT_PT) + 0.1
    settings = ", ".join(f"{key} {value}" for key, value in index.settings.items() if key in SETTINGS)
    footer = " · ".join([footer_text(run, [mode] if mode else []), f"explained with {settings or 'defaults'}"])
    footer = shorten(footer, WIDTH - 2 * MARGIN, MIN_PT)
    bottom = HEIGHT - MARGIN - line_height(MIN_PT)
    page.text(MARGIN, bottom, footer, MIN_PT)
    bottom -= 0.1
    x = MARGIN
    dictionary_column(page, x, y, bottom, picture, data, channels, spec.value("positions"))
    x += DICTIONARY_W + COLUMN_GAP
    attribution_column(page, x, y, bottom, picture, data, channels, top, index.classifier,
                       attribution_of(index.settings))
    x += ATTRIBUTION_W + COLUMN_GAP
    groups_column(page, x, y, bottom, WIDTH - MARGIN - x, run.folder, photo, data, top)
    return FigureLayout(spec.name, "explain", WIDTH, HEIGHT, title, page.texts, page.panels, page.patches,
                        overlays=page.overlays)


def renders_mode(run: Run, wanted: str | None) -> Mode | None:
    """The mode whose renders the poster shows: the one asked for, else noise, else the run's first; None if the
    run has no renders at all (every channel is then a gap with its name)."""
    if wanted or any(mode.id == NOISE for mode in run.modes):
        return find_mode(run, wanted)
    return run.modes[0] if run.modes else None


def find_explained(index: ExplainIndex, key: str, layer: str) -> tuple[ExplainedPhoto, ExplainLayer]:
    """The photo (by name, file name or sha256 prefix) and one of its explained layers, or a one-line error."""
    photo = index.photo(key)
    if layer not in photo.layers or layer not in index.layers:
        raise UserError(f"photo {photo.name} is not explained at layer '{layer}'; its layers: "
                        f"{', '.join(photo.layers) or 'none'}")
    return photo, index.layers[layer]


def classes_shown(photo: ExplainedPhoto, data: LayerExplanation, wanted: int) -> list[tuple[int, str, float]]:
    """(row in the arrays, label, logit) of the top `wanted` classes the photo has, best first."""
    labels = {c.index: c.label for c in photo.classes}
    count = min(wanted, len(data.classes))
    return [(k, labels.get(int(data.classes[k]), f"class {int(data.classes[k])}"), float(data.logits[k]))
            for k in range(count)]


def heading(page: Page, x: float, y: float, width: float, title: str, note: str) -> float:
    """A column's heading and its note (NOTE_LINES lines at most, the same room in every column, so that the
    columns start level); returns the y below them."""
    y = page.text(x, y, title, HEAD_PT, "bold")
    chars = max(10, int(width * POINTS / (CHAR_EM * MIN_PT)))
    for i, line in enumerate(textwrap.wrap(note, chars, max_lines=NOTE_LINES, placeholder=" …")):
        page.text(x, y + i * line_height(MIN_PT), line, MIN_PT)
    return y + NOTE_LINES * line_height(MIN_PT) + 0.06


def strongest_positions(data: LayerExplanation, count: int) -> list[tuple[int, int]]:
    """The (row, column) of the `count` positions whose most active channel fires most, strongest first."""
    import numpy as np

    values = data.dictionary_values[..., 0] if data.dictionary_values.size else np.zeros((0, 0))
    order = np.argsort(-values, axis=None, kind="stable")[:count]
    return [tuple(int(i) for i in np.unravel_index(flat, values.shape)) for flat in order]  # type: ignore[misc]


def dictionary_column(page: Page, x: float, y: float, bottom: float, picture: Path, data: LayerExplanation,
                      channels: Channels, count: int) -> None:
    """The photo under the layer's grid, its strongest positions numbered; for each, its most active channels."""
    rows, cols = data.dictionary_channels.shape[:2]
    positions = strongest_positions(data, count)
    y = heading(page, x, y, DICTIONARY_W, "Semantic dictionary",
                f"the layer's {rows}×{cols} grid over the photo; for its {len(positions)} strongest positions, "
                "their most active channels, strongest first")
    label = 0.22  # room for a position's number left of its renders
    per = min(PER_POSITION, data.dictionary_channels.shape[2])
    pitch = (DICTIONARY_W - label) / max(1, per)
    shown = [[channels[int(c)] for c in data.dictionary_channels[r, c0, :per]] for r, c0 in positions]
    names = name_lines([ch for row in shown for ch in row], pitch) * line_height(MIN_PT) + 0.03
    side = min(pitch - TILE_GAP, DICTIONARY_TILE)
    photo_side = min(DICTIONARY_W, bottom - y - len(positions) * (side + names + 0.05) - 0.08)
    marks = tuple((r, c, str(i + 1)) for i, (r, c) in enumerate(positions))
    page.overlays.append(Overlay(Box(round(x, 4), round(y, 4), photo_side, photo_side), picture, grid=(rows, cols),
                                 marks=marks, mark_pt=MIN_PT, key=("dictionary", data.layer, -1)))
    y += photo_side + 0.08
    for i, row in enumerate(shown):
        page.text(x, y, str(i + 1), HEAD_PT, "bold")
        for j, channel in enumerate(row):
            page.tile(x + label + j * pitch, y, side, pitch, channel)
        y += side + names + 0.05


def attribution_column(page: Page, x: float, y: float, bottom: float, picture: Path, data: LayerExplanation,
                       channels: Channels, top: list[tuple[int, str, float]], classifier: str | None,
                       words: str) -> None:
    """Per top class: its label and logit, where it comes from (a heatmap of `words`, what the attribution is) and
    which channels add and take most."""
    y = heading(page, x, y, ATTRIBUTION_W, "Attribution to the top classes",
                f"heatmap: {words} per position (red adds, blue takes away); renders: the channels adding (+), "
                "taking (−) most")
    if not top:
        why = ("the model has no classifier" if classifier is None and not len(data.classes)
               else "the photo has no classes")
        page.text(x, y, f"attribution needs class logits: {why}", TEXT_PT)
        return
    row = min((bottom - y) / len(top), 1.45)
    heat = min(row - line_height(TEXT_PT) - 0.1, 1.2)
    pitch = (ATTRIBUTION_W - heat - 0.25) / (2 * PER_SIGN)
    picks = [(adding(data.channels[k]), taking(data.channels[k])) for k, _, _ in top]
    shown = [channels[c] for plus, minus in picks for c in plus + minus]
    names = (name_lines(shown, pitch) + 1) * line_height(MIN_PT)  # the name, then the attribution
    side = min(pitch - TILE_GAP, heat - names - 0.02)
    scale = float(abs(data.spatial[:len(top)]).max())  # one scale for every class, as in the gallery
    for number, ((k, label, logit), (plus, minus)) in enumerate(zip(top, picks), start=1):
        text = f"{number} · {label} · logit {logit:.2f}"
        page.text(x, y, shorten(text, ATTRIBUTION_W, TEXT_PT), TEXT_PT, "bold")
        box_y = y + line_height(TEXT_PT) + 0.02
        page.overlays.append(Overlay(Box(round(x, 4), round(box_y, 4), heat, heat), picture, data.spatial[k],
                                     scale, key=("spatial", data.layer, int(data.classes[k]))))
        tile_x = x + heat + 0.15
        for sign, chosen in (("+", plus), ("−", minus)):
            for slot in range(PER_SIGN):
                if slot < len(chosen):
                    channel = chosen[slot]
                    page.tile(tile_x + slot * pitch, box_y, side, pitch, channels[channel],
                              f"{sign} {signed(float(data.channels[k, channel]))[1:]}")
            tile_x += PER_SIGN * pitch + 0.1
        y += row


def adding(values: Any) -> list[int]:
    """The channels with the largest positive attribution, largest first."""
    import numpy as np

    order = np.argsort(-values, kind="stable")[:PER_SIGN]
    return [int(c) for c in order if values[c] > 0]


def taking(values: Any) -> list[int]:
    """The channels with the most negative attribution, most negative first."""
    import numpy as np

    order = np.argsort(values, kind="stable")[:PER_SIGN]
    return [int(c) for c in order if values[c] < 0]


def groups_column(page: Page, x: float, y: float, bottom: float, width: float, folder: Path,
                  photo: ExplainedPhoto, data: LayerExplanation, top: list[tuple[int, str, float]]) -> None:
    """Per neuron group: where it fires (a heatmap), what it is (its render) and its attribution to each class."""
    from atlas.run.explainfiles import group_render

    count = data.group_spatial.shape[0]
    y = heading(page, x, y, width, "Neuron groups",
                f"the activations factored (NMF) into {count} groups: where each fires, what it is, its "
                "attribution to each class (numbered as at left)")
    number_w, cell_w = 0.2, 0.36
    page.text(x + number_w, y, "where", MIN_PT)
    row = min((bottom - y - line_height(MIN_PT)) / max(1, count), 1.0)
    side = min(row - 0.08, (width - number_w - 0.15 - len(top) * cell_w) / 2)
    page.text(x + number_w + side + 0.06, y, "what", MIN_PT)
    cells_x = x + number_w + 2 * side + 0.15
    for number in range(1, len(top) + 1):
        page.text(cells_x + (number - 0.5) * cell_w, y, str(number), MIN_PT, "bold", "center")
    y += line_height(MIN_PT) + 0.02
    picture = folder / photo.photo
    strongest = float(abs(data.group_classes[:, :len(top)]).max()) if top and data.group_classes.size else 0.0
    for g in range(count):
        page.text(x, y + side / 2 - line_height(HEAD_PT) / 2, str(g + 1), HEAD_PT, "bold")
        where = data.group_spatial[g]
        page.overlays.append(Overlay(Box(round(x + number_w, 4), round(y, 4), side, side), picture, where,
                                     float(where.max()), key=("group", data.layer, g)))
        render = folder / group_render(photo.sha256, data.layer, g)
        page.panels.append(Panel(Box(round(x + number_w + side + 0.06, 4), round(y, 4), side, side),
                                 render if render.is_file() else None, "",
                                 MIN_PT, key=("group", data.layer, g)))
        for k in range(len(top)):  # one cell per class: red adds, blue takes away, pale enough for black text
            value = data.group_classes[g, k:k + 1][None]
            box = Box(round(cells_x + k * cell_w + 0.02, 4), round(y + side / 2 - 0.1, 4), cell_w - 0.04, 0.2)
            page.patches.append(Patch(box, value, strongest * CELL_FADE, key=(f"group {g + 1}", k + 1)))
            page.text(box.x + box.w / 2, box.y + 0.03, signed(float(value[0, 0])), MIN_PT, align="center")
        y += row
