"""The static gallery: reads a run folder through `atlas.run.manifest` and writes `<run>/site/`.

    site/index.html                      the network, low to high: blocks, layers, counts, a strip of renders
    site/layers/<layer>.html             a layer's rendered channels as a thumbnail grid, one tab per mode; the
                                         channels not rendered yet drawn by the page on demand (a block output the
                                         run renders is a layer too, marked as one, last in its block)
    site/channels/<layer>/<cccc>.html    one channel with a render, dataset examples or explained photos that list
                                         it: the large image of each mode, metrics, facts, neighbours
    site/compare.html                    two to four channels or layers side by side (picked in the page)
    site/progression.html                one base photo dreamed at each layer, low to high
    site/figures.html, site/about.html   figures of the run; model, settings, photo credits, counts
    site/maps/<layer>.html               a layer's activation atlas: its grid of cell renders at each zoom level;
                                         a cell shows its sample count, top channels and photo crops
    site/maps.html                       the run's maps side by side (the compare view), at one zoom level
    site/atlas-index.js                  the small JSON index behind search and compare
    site/circuits/<source>.png           a block-to-block matrix of expanded-weight norms (runs with circuits)
    site/photos.html                     the explained photos (runs with `explain/`, atlas.publish.explain_view)
    site/photos/<sha16>.html             one photo, a tab per layer: semantic dictionary, spatial and channel
                                         attribution per class, neuron groups
    site/classes.html                    the classes the run renders (runs with `classes:`), a card each
    site/classes/<cccc>.html             one class: its label and index, its render in each noise-started mode (the
                                         importance mask as an overlay, the raw pixels linked), its metrics, and
                                         the photos of the examples folder the classifier scores highest for it
    site/static/                         CSS, JavaScript and the placeholder image, copied from templates/static/

The site grows with what the run has, not with the model: a channel without any of those has no page, and a link
to it (search, circuits, maps, photo pages, neighbours) leads to its layer page at that channel
(`layers/<layer>.html#c=<n>`). A full run gets every channel page.

Pages link to each other and to the run's images with relative URLs only, so the site works from `file://` and
from any sub-path of a web host. A page is rewritten only when its bytes change; files a previous build wrote
that this build no longer produces are removed (the list lives in `site/.atlas-site.json`).
"""

from __future__ import annotations

import functools
import json
import os
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from atlas.atomic import atomic_write_bytes, atomic_write_text, stop_on_write_errors
from atlas.errors import UserError
from atlas.model.catalogue import AnyLayer, BlockOutput, in_order
from atlas.model.selection import WHOLE_LAYER, format_channels
from atlas.publish.circuits_view import Matrix, UnitLink, block_matrices, channel_circuit
from atlas.publish.explain_view import PHOTOS_PAGE, Explained, photo_url, read_explained
from atlas.run.classfiles import ClassPhoto, read_class_photos
from atlas.run.manifest import CLASS_LAYER, NOISE, Example, Mode, PhotoRecord, Render, Run, image_paths, read_run
from atlas.run.mapfiles import MapCell, MapData, map_layers, read_map
from atlas.shipped import templates_dir

SITE_DIR = "site"
CLASSES_PAGE = "classes.html"  # the classes' overview (class pages: classes/<cccc>.html)
FIGURES_DIR = "figures"
LEDGER = ".atlas-site.json"  # the files the last build wrote, so a rebuild can remove stale ones
INDEX_JS = "atlas-index.js"
STRIP = 4  # renders shown per layer on the index
DEFAULT_THUMB = 128
DEFAULT_WEB = 512
WRITE_THREADS = 8
# GoogLeNet's auxiliary heads (head0, head1): shown after the block they branch off. Any other block, a Keras
# model's `head` included, is on the main line and keeps its place in the catalogue's order.
AUX_HEAD = re.compile(r"head\d+")


@dataclass
class SiteReport:
    """What a build did."""

    out: Path
    pages_written: int = 0  # files (pages and assets) whose bytes changed or that were new
    pages_unchanged: int = 0  # files left alone because their bytes were already right
    pages_removed: int = 0  # stale files of an earlier build
    missing_renders: int = 0  # (mode, channel) pairs the run asks for with no image yet
    seconds: float = 0.0

    @property
    def index(self) -> Path:
        return self.out / "index.html"

    def summary(self) -> str:
        missing = f"; {self.missing_renders:,} renders missing (shown as placeholders)" if self.missing_renders else ""
        return (f"site: {self.index} ({self.pages_written:,} files written, {self.pages_unchanged:,} unchanged, "
                f"{self.pages_removed:,} removed, {self.seconds:.1f} s){missing}")


# ---------------------------------------------------------------------------------------------------------
# The view of a run: layers in display order, each with its renders per mode


@dataclass(frozen=True)
class Size:
    width: int
    height: int


@dataclass(frozen=True)
class Outline:
    """The receptive field of the unit a `neuron` render maximises, drawn over its image: the box in the rendered
    image's pixels as the run recorded it, placed in percent of the image so it scales with it."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)
    size: Size  # of the rendered image

    @property
    def style(self) -> str:
        """CSS placing the box over its image."""
        x0, y0, x1, y1 = self.box
        width, height = self.size.width, self.size.height
        return (f"left: {_percent(x0, width)}; top: {_percent(y0, height)}; width: {_percent(x1 - x0, width)}; "
                f"height: {_percent(y1 - y0, height)}")


def _percent(value: int, total: int) -> str:
    return f"{100 * value / total:.6g}%"


@dataclass
class LayerView:
    """One layer (a conv layer, or a block output) with everything its pages show."""

    layer: AnyLayer
    position: int  # in display order
    renders: dict[str, dict[int, Render]]  # mode id -> channel -> render (present on disk)
    dreams: dict[str, Render]  # mode id -> whole-layer render
    facets: dict[str, dict[int, list[Render]]] = field(default_factory=dict)  # mode id -> channel -> its facets
    # (modes rendered with diversity N; every facet present on disk)
    examples: dict[int, list[Example]] = field(default_factory=dict)  # channel -> dataset examples, best first
    outlines: dict[str, Outline] = field(default_factory=dict)  # mode id -> its neuron renders' unit (noise modes)
    planned: dict[str, list[int]] | None = None  # mode id -> the channels the run asks for (None: every channel)
    listed: set[int] = field(default_factory=set)  # channels an explained photo lists among its top contributors
    prev: LayerView | None = None
    next: LayerView | None = None

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def channels(self) -> int:
        return self.layer.channels

    @property
    def is_block_output(self) -> bool:
        return isinstance(self.layer, BlockOutput)

    @functools.cached_property
    def rendered(self) -> int:
        """Channels with a render in at least one mode."""
        return len(set().union(*self.renders.values())) if self.renders else 0

    @property
    def has_renders(self) -> bool:
        """A channel or the whole layer rendered in some mode."""
        return bool(self.rendered or self.dreams)

    @functools.cached_property
    def pages(self) -> list[int]:
        """The channels with a page of their own, low to high: those with a render in some mode, dataset examples
        or explained photos that list them (every channel, in a full run)."""
        return sorted(set().union(*self.renders.values(), self.examples, self.listed))

    def not_rendered(self, mode: str) -> list[int]:
        """The channels without a render in `mode`, low to high (the layer page draws their tiles on demand)."""
        found = self.renders.get(mode, {})
        return [c for c in range(self.channels) if c not in found]

    def without_examples(self) -> list[int]:
        return [c for c in range(self.channels) if c not in self.examples]

    def rendered_in(self, mode: str) -> int:
        return len(self.renders.get(mode, {}))

    def asked(self, mode: str) -> set[int]:
        """The channels the run asks for in this layer and mode (every channel, in older run folders)."""
        return set(range(self.channels)) if self.planned is None else set(self.planned.get(mode, []))

    def missing(self, modes: list[Mode]) -> int:
        """Renders the run asks for in this layer that are not there."""
        return sum(len(self.asked(mode.id) - set(self.renders.get(mode.id, {}))) for mode in modes)

    def strip(self, modes: list[Mode], count: int = STRIP) -> list[Render]:
        """A few representative renders: the highest-gain channels of the first mode that has any."""
        for mode in modes:
            found = self.renders.get(mode.id)
            if found:
                return sorted(found.values(), key=lambda r: (-r.lift, r.channel))[:count]
        return []

    def first_render(self, mode: str) -> Render | None:
        """The whole-layer dream of `mode`, else its lowest rendered channel (for the progression view)."""
        if mode in self.dreams:
            return self.dreams[mode]
        found = self.renders.get(mode, {})
        return found[min(found)] if found else None


@dataclass
class Block:
    name: str
    layers: list[LayerView]
    branches_after: str | None = None  # for an auxiliary head: the block it branches off after

    @property
    def is_head(self) -> bool:
        return self.branches_after is not None

    @property
    def shown(self) -> list[LayerView]:
        """Its layers with renders: a row each on the index."""
        return [view for view in self.layers if view.has_renders]

    @property
    def quiet(self) -> list[LayerView]:
        """Its layers without renders: one line of names on the index."""
        return [view for view in self.layers if not view.has_renders]


@dataclass
class ClassView:
    """One class the run renders, with everything its page shows."""

    index: int  # among the classifier's classes
    label: str
    renders: dict[str, Render]  # noise-started mode id -> its render (present on disk)
    facets: dict[str, list[Render]] = field(default_factory=dict)  # mode id -> every facet (diversity N)
    photos: list[ClassPhoto] = field(default_factory=list)  # the examples folder's best-scoring photos, best first
    prev: ClassView | None = None
    next: ClassView | None = None

    @property
    def url(self) -> str:
        return class_url(self.index)

    def first(self, modes: list[Mode]) -> Render | None:
        """Its render in the first mode that has one (its card's image)."""
        return next((self.renders[mode.id] for mode in modes if mode.id in self.renders), None)


@dataclass
class Gallery:
    """The run as the site shows it."""

    run: Run
    blocks: list[Block]
    layers: list[LayerView]  # display order
    thumb: dict[str, Size]  # mode id -> thumbnail size
    web: dict[str, Size]  # mode id -> web image size
    photos: dict[str, Size] = field(default_factory=dict)  # mode id -> base photo size (present on disk)
    figures: list[tuple[str, Size | None]] = field(default_factory=list)  # run-relative path, size of a PNG
    maps: list[MapView] = field(default_factory=list)  # the run's activation atlases
    matrices: dict[str, Matrix] = field(default_factory=dict)  # layer -> its block-to-block matrix of norms
    explained: Explained | None = None  # the run's per-photo explanations, if any
    classes: list[ClassView] = field(default_factory=list)  # the classes the run renders, as it asked for them

    @functools.cached_property
    def by_name(self) -> dict[str, LayerView]:
        return {view.name: view for view in self.layers}

    @functools.cached_property
    def page_order(self) -> list[tuple[LayerView, int]]:
        """Every channel page, in display order: what ← and → walk through."""
        return [(view, channel) for view in self.layers for channel in view.pages]

    @functools.cached_property
    def _page_place(self) -> dict[tuple[str, int], int]:
        return {(view.name, channel): i for i, (view, channel) in enumerate(self.page_order)}

    def has_page(self, layer: str, channel: int) -> bool:
        return (layer, channel) in self._page_place

    def unit_href(self, layer: str, channel: int) -> str | None:
        """Where a link to a unit leads, from the site root: its channel page, else its layer page at that channel;
        None for a unit of a layer the site does not show (the input, a residual sum)."""
        view = self.by_name.get(layer)
        if view is None or not 0 <= channel < view.channels:
            return None
        return channel_url(layer, channel) if self.has_page(layer, channel) else unit_anchor(layer, channel)

    def page_neighbours(self, layer: str, channel: int) -> tuple[tuple[LayerView, int] | None, ...]:
        """The channel pages before and after a channel's page."""
        at = self._page_place[(layer, channel)]
        return (self.page_order[at - 1] if at > 0 else None,
                self.page_order[at + 1] if at + 1 < len(self.page_order) else None)

    def render_of(self, layer: str, channel: int, mode: str) -> Render | None:
        """A unit's render in a mode, if the run has it on disk (for the circuit section's small renders)."""
        view = self.by_name.get(layer)
        return view.renders.get(mode, {}).get(channel) if view else None

    def icon(self, layer: str, channel: int) -> Render | None:
        """A unit's render in the first mode that has one (its icon on the photo pages)."""
        for mode in self.modes:
            found = self.render_of(layer, channel, mode.id)
            if found:
                return found
        return None

    @property
    def modes(self) -> list[Mode]:
        return self.run.modes

    @property
    def example_photos(self) -> dict[str, PhotoRecord]:
        return self.run.example_photos

    @property
    def example_meta(self) -> dict[str, Any]:
        """The recorded examples pass's folder, top, size, fit ({} when the run has no examples)."""
        return self.run.example_meta

    @property
    def photo_modes(self) -> list[Mode]:
        return [mode for mode in self.modes if mode.kind == "photo"]

    @property
    def noise_modes(self) -> list[Mode]:
        """The noise-started modes: those class visualisations are rendered in."""
        return [mode for mode in self.modes if mode.kind == NOISE]

    @property
    def class_count(self) -> int:
        """The classifier's classes (0 in runs that render none)."""
        return self.run.class_count

    @property
    def total_channels(self) -> int:
        return sum(view.channels for view in self.layers)

    @property
    def block_outputs(self) -> int:
        """How many of the layers shown are block outputs."""
        return sum(view.is_block_output for view in self.layers)

    @property
    def layers_rendered(self) -> int:
        return sum(view.has_renders for view in self.layers)

    @property
    def missing(self) -> int:
        return sum(view.missing(self.modes) for view in self.layers)

    def counts(self, mode: str) -> tuple[int, int]:
        """(rendered, asked for) channels of a mode: of the run's selection, or of the whole catalogue in older
        run folders."""
        asked = [view.asked(mode) for view in self.layers]
        return (sum(len(a & set(view.renders.get(mode, {}))) for a, view in zip(asked, self.layers)),
                sum(len(a) for a in asked))


def display_order(layers: list[AnyLayer]) -> list[tuple[str, list[AnyLayer], str | None]]:
    """Blocks low to high, each auxiliary head placed right after the block it branches off; block outputs among
    the conv layers, each last in the block of its name.

    A head goes after the last main block whose deepest layer is shallower than the head's first layer
    (head0 after mixed4a, head1 after mixed4d in GoogLeNet). Returns (block, layers, branches_after) triples.
    """
    groups: dict[str, list[AnyLayer]] = {}
    for layer in in_order(layers):
        groups.setdefault(layer.block, []).append(layer)
    heads = [name for name in groups if AUX_HEAD.fullmatch(name)]
    main = [name for name in groups if name not in heads]
    order: list[tuple[str, list[AnyLayer], str | None]] = [(name, groups[name], None) for name in main]
    for head in heads:
        depth = min(layer.depth for layer in groups[head])
        after = [i for i, (name, members, _) in enumerate(order)
                 if name in main and max(layer.depth for layer in members) < depth]
        branch = order[after[-1]][0] if after else "the input"
        at = after[-1] + 1 if after else 0
        while at < len(order) and order[at][2] is not None:  # heads of one branch point keep their order
            at += 1
        order.insert(at, (head, groups[head], branch))
    return order


@dataclass
class MapView:
    """A layer's activation atlas as the site shows it: its zoom levels, which cells have a render on disk, and
    where a cell's channels link to."""

    data: MapData
    existing: set[str]  # run-relative paths of the files present on disk (renders, crops)
    href: UnitLink  # (catalogued layer, channel) -> its page or its layer page at it, None if the site has neither

    @property
    def layer(self) -> str:
        return self.data.layer

    @property
    def levels(self) -> list[tuple[int, list[MapCell]]]:
        return [(grid, self.data.level(grid)) for grid in self.data.grids]

    def has_render(self, cell: MapCell) -> bool:
        return cell.render in self.existing

    @property
    def rendered_cells(self) -> int:
        return sum(self.has_render(c) for c in self.data.cells)


def map_url(layer: str) -> str:
    """A map page's path from the site root."""
    return f"maps/{quote(layer)}.html"


def build_maps(run: Run, existing: set[str], href: UnitLink) -> list[MapView]:
    """The run folder's maps (none in runs without them)."""
    return [MapView(read_map(run.folder, layer), existing, href) for layer in map_layers(run.folder)]


def build_gallery(run: Run) -> Gallery:
    """Group the run's renders by layer and mode; a render whose files are gone counts as missing, and a
    dataset example whose patch is gone is not shown."""
    existing = _existing_files(run.folder)
    per_layer: dict[str, dict[str, dict[int, Render]]] = {}
    dreams: dict[str, dict[str, Render]] = {}
    for render in run.renders:
        if render.thumb not in existing or render.web not in existing or render.layer == CLASS_LAYER:
            continue
        if render.channel == WHOLE_LAYER:
            dreams.setdefault(render.layer, {})[render.mode] = render
        else:
            per_layer.setdefault(render.layer, {}).setdefault(render.mode, {})[render.channel] = render
    facets: dict[str, dict[str, dict[int, list[Render]]]] = {}
    for (mode, layer_name, channel), found in run.facets.items():
        shown = [r for r in found if r.thumb in existing and r.web in existing]
        if len(shown) > 1:
            facets.setdefault(layer_name, {}).setdefault(mode, {})[channel] = shown
    blocks, views = [], []
    for name, members, after in display_order([*run.layers, *shown_block_outputs(run, per_layer)]):
        block_views = []
        for layer in members:
            renders = {mode: {c: r for c, r in found.items() if 0 <= c < layer.channels}
                       for mode, found in per_layer.get(layer.name, {}).items()}
            examples = {c: shown for c in range(layer.channels)
                        if (shown := [e for e in run.examples.get((layer.name, c), []) if e.crop in existing])}
            outlines = {mode: Outline(units.boxes[layer.name], Size(units.width, units.height))
                        for mode, units in run.centre_units.items() if layer.name in units.boxes}
            planned = None if run.planned is None else {mode: layers.get(layer.name, [])
                                                        for mode, layers in run.planned.items()}
            view = LayerView(layer, len(views), renders, dreams.get(layer.name, {}), facets.get(layer.name, {}),
                             examples, outlines, planned)
            views.append(view)
            block_views.append(view)
        blocks.append(Block(name, block_views, after))
    for before, after_view in zip(views, views[1:]):
        before.next, after_view.prev = after_view, before
    gallery = Gallery(run=run, blocks=blocks, layers=views, thumb=_mode_sizes(run, "thumb", DEFAULT_THUMB),
                      web=_mode_sizes(run, "web", DEFAULT_WEB), photos=_photo_sizes(run),
                      figures=_figures(run.folder), matrices=block_matrices(run.circuits))
    gallery.maps = build_maps(run, existing, gallery.unit_href)
    gallery.classes = build_classes(run, existing)
    gallery.explained = read_explained(run.folder, gallery.icon, set(gallery.by_name), gallery.unit_href)
    for layer, channel in gallery.explained.contributions if gallery.explained else ():
        gallery.by_name[layer].listed.add(channel)
    return gallery


def build_classes(run: Run, existing: set[str]) -> list[ClassView]:
    """The run's classes in the order it asked for them, each with its renders on disk and its top photos."""
    def shown(render: Render) -> bool:
        return render.thumb in existing and render.web in existing

    renders: dict[int, dict[str, Render]] = {}
    for render in run.renders:
        if render.layer == CLASS_LAYER and shown(render):
            renders.setdefault(render.channel, {})[render.mode] = render
    photos = read_class_photos(run.folder)
    views = []
    for found in run.classes:
        facets = {mode: [r for r in run.facets.get((mode, CLASS_LAYER, found.index), []) if shown(r)]
                  for mode in renders.get(found.index, {})}
        views.append(ClassView(found.index, found.label, renders.get(found.index, {}),
                               {mode: f for mode, f in facets.items() if len(f) > 1},
                               [p for p in photos.get(found.index, []) if p.thumb in existing]))
    for before, after in zip(views, views[1:]):
        before.next, after.prev = after, before
    return views


def shown_block_outputs(run: Run, rendered: dict[str, Any]) -> list[BlockOutput]:
    """The block outputs the gallery shows as layers: those the run asks renders of, or has renders of (e.g. the
    icons of photos explained there)."""
    asked = {layer for layers in (run.planned or {}).values() for layer in layers}
    return [block for block in run.blocks if block.name in asked or block.name in rendered]


def _existing_files(folder: Path) -> set[str]:
    """Run-relative paths (POSIX) of every file under images/, examples/, maps/ and classes/: one walk instead of a
    stat per render, example patch, map cell or class photo."""
    found: set[str] = set()
    for root in (folder / "images", folder / "examples", folder / "maps", folder / "classes"):
        for parent, _, files in os.walk(root):
            rel = Path(parent).relative_to(folder).as_posix()
            found.update(f"{rel}/{name}" for name in files)
    return found


def _image_size(path: Path) -> Size | None:
    """Pixel size read from the image header, or None if it is not a readable image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return Size(*image.size)
    except (OSError, UnidentifiedImageError):
        return None


def _mode_sizes(run: Run, kind: str, default: int) -> dict[str, Size]:
    """Size of the `kind` ('thumb' or 'web') images of each mode, read from one image of that mode."""
    configured = run.settings.get("formats", {}).get(kind, {}).get("size", default)
    sizes: dict[str, Size] = {}
    for render in run.renders:
        if render.mode not in sizes:
            size = _image_size(run.folder / getattr(render, kind))
            if size:
                sizes[render.mode] = size
    return {mode.id: sizes.get(mode.id, Size(configured, configured)) for mode in run.modes}


def _photo_sizes(run: Run) -> dict[str, Size]:
    sizes = {mode.id: _image_size(run.folder / mode.file) for mode in run.modes if mode.file}
    return {mode: size for mode, size in sizes.items() if size}


def _figures(folder: Path) -> list[tuple[str, Size | None]]:
    """The run's figures (PNG and PDF), with the size of each PNG."""
    root = folder / FIGURES_DIR
    if not root.is_dir():
        return []
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in {".png", ".pdf"} and p.is_file())
    return [(p.relative_to(folder).as_posix(), _image_size(p) if p.suffix.lower() == ".png" else None)
            for p in files]


# ---------------------------------------------------------------------------------------------------------
# URLs


def cccc(channel: int) -> str:
    return f"{channel:04d}"


def layer_url(layer: str) -> str:
    """A layer page's path from the site root."""
    return f"layers/{quote(layer)}.html"


def channel_url(layer: str, channel: int) -> str:
    """A channel page's path from the site root."""
    return f"channels/{quote(layer)}/{cccc(channel)}.html"


def class_url(index: int) -> str:
    """A class page's path from the site root."""
    return f"{CLASSES_PAGE.removesuffix('.html')}/{cccc(index)}.html"


def unit_anchor(layer: str, channel: int) -> str:
    """A layer page at one channel, from the site root: where a link to a unit without a page leads (atlas.js
    scrolls to its tile, drawing the not-rendered tiles if it is one of them)."""
    return f"{layer_url(layer)}#c={channel}"


def url_path(path: str) -> str:
    """Quote a relative path for an href or src."""
    return quote(path)


@dataclass(frozen=True)
class Place:
    """Where a page sits: the prefixes that lead from it to the site root and to the run folder."""

    root: str  # '' or '../' ...
    run: str  # from the page to the run folder, ending in '/'


def place(rel: str, run_from_site: str) -> Place:
    ups = "../" * rel.count("/")
    return Place(root=ups, run=f"{ups}{run_from_site}/" if run_from_site != "." else ups)


# ---------------------------------------------------------------------------------------------------------
# Rendering


@functools.cache
def environment() -> Environment:
    """Jinja2 with autoescaping, strict undefined names and the site's filters (one per process: templates compile
    once, and Jinja2 reloads one whose file changed)."""
    env = Environment(loader=FileSystemLoader(templates_dir()), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(u=url_path, cccc=cccc, layer_url=layer_url, channel_url=channel_url, gain=_gain,
                       map_url=map_url, photo_url=photo_url, ranges=format_channels, class_url=class_url)
    env.globals["home"] = None  # in a site of several models: the path up to its index (see write_site)
    return env


def _gain(value: float | None) -> str:
    return "–" if value is None else f"{value:+.1f}"


def pages(gallery: Gallery, env: Environment, run_from_site: str, home: str | None = None
          ) -> Iterator[tuple[str, str]]:
    """(path from the site root, HTML) of every page, the big ones last."""
    common = {"gallery": gallery, "run_info": gallery.run, "modes": gallery.modes, "home": home}

    def render(template: str, rel: str, **context: Any) -> tuple[str, str]:
        where = place(rel, run_from_site)
        return rel, env.get_template(template).render(root=where.root, run=where.run, page=rel,
                                                      **common, **context)

    yield render("index.html", "index.html")
    yield render("about.html", "about.html",
                 settings_json=json.dumps(gallery.run.settings, indent=2, sort_keys=True, default=str))
    yield render("compare.html", "compare.html")
    yield render("progression.html", "progression.html", modes_shown=_progression_modes(gallery))
    yield render("figures.html", "figures.html")
    if gallery.maps:
        yield render("maps.html", "maps.html")
    for view in gallery.maps:
        yield render("map.html", map_url(view.layer), map=view)
    if gallery.classes:
        yield render("classes.html", CLASSES_PAGE)
    for view in gallery.classes:
        yield render("class.html", view.url, view=view)
    if gallery.explained:
        yield render("photos.html", PHOTOS_PAGE)
        for photo in gallery.explained.photos:
            yield render("photo.html", photo_url(photo.sha256), shown=gallery.explained.view(photo))
    for view in gallery.layers:
        yield render("layer.html", layer_url(view.name), view=view, matrix=gallery.matrices.get(view.name))
    channel_template = env.get_template("channel.html")
    for view, channel in gallery.page_order:
        rel = channel_url(view.name, channel)
        where = place(rel, run_from_site)
        circuit = channel_circuit(gallery.run.circuits, view.name, channel, gallery.unit_href)
        photos = gallery.explained.contributions.get((view.name, channel), []) if gallery.explained else []
        yield rel, channel_template.render(root=where.root, run=where.run, page=rel, view=view,
                                           channel=channel, nav=_channel_nav(gallery, view, channel),
                                           circuit=circuit, photos=photos, **common)


def _progression_modes(gallery: Gallery) -> list[Mode]:
    """The photo modes, or noise when the run has no photo."""
    return gallery.photo_modes or gallery.modes[:1]


NavTarget = tuple[str, int, str]  # layer, channel, the page a link to it leads to (from the site root)


def _channel_nav(gallery: Gallery, view: LayerView, channel: int) -> dict[str, NavTarget | None]:
    """Neighbours of a channel page: the previous/next channel page (crossing layers; every channel in a full
    run), and the same channel (or the nearest one) in the previous/next layer: its page, else that layer's page
    at it."""
    def page(found: tuple[LayerView, int] | None) -> NavTarget | None:
        return (found[0].name, found[1], channel_url(found[0].name, found[1])) if found else None

    def at(other: LayerView | None) -> NavTarget | None:
        if other is None:
            return None
        nearest = min(channel, other.channels - 1)
        return other.name, nearest, gallery.unit_href(other.name, nearest) or layer_url(other.name)

    before, after = gallery.page_neighbours(view.name, channel)
    return {"prev_channel": page(before), "next_channel": page(after),
            "prev_layer": at(view.prev), "next_layer": at(view.next)}


def search_index(gallery: Gallery) -> dict[str, Any]:
    """The data behind search and compare: layers in display order, what is rendered, image path patterns."""
    modes = []
    for mode in gallery.modes:
        _, web, thumb = (path.replace("0000", "{cccc}")
                         for path in image_paths(mode.id, "{layer}", 0, *_image_exts(gallery, mode.id)))
        modes.append({"id": mode.id, "kind": mode.kind, "photo": mode.photo, "web": web, "thumb": thumb,
                      "size": [gallery.web[mode.id].width, gallery.web[mode.id].height],
                      "thumbSize": [gallery.thumb[mode.id].width, gallery.thumb[mode.id].height]})
    layers = [{"name": v.name, "block": v.layer.block, "channels": v.channels, **_shape(v.layer),
               "rf": v.layer.receptive_field, "depth": v.layer.depth,
               "rendered": {mode: format_channels(sorted(found)) for mode, found in v.renders.items() if found},
               "pages": format_channels(v.pages),
               "dreams": {mode: r.web for mode, r in v.dreams.items()}} for v in gallery.layers]
    return {"modes": modes, "layers": layers}


def _shape(layer: AnyLayer) -> dict[str, Any]:
    """What the index says of a layer's op: a conv's kernel (`3×3`) and stride, a block output's merge (`add`)."""
    if isinstance(layer, BlockOutput):
        return {"merge": layer.kind}
    return {"kernel": f"{layer.kernel}×{layer.kernel_w}", "stride": layer.stride}


def _image_exts(gallery: Gallery, mode: str) -> tuple[str, str]:
    """The extensions of a mode's web images and thumbnails, as the sweep wrote them (jpg if none yet)."""
    for view in gallery.layers:
        for render in view.renders.get(mode, {}).values():
            return render.web.rsplit(".", 1)[-1], render.thumb.rsplit(".", 1)[-1]
    return "jpg", "jpg"


# ---------------------------------------------------------------------------------------------------------
# Writing


class _Writer:
    """Writes files under `out` atomically, only when their bytes differ; remembers what it wrote.

    Writes run on a few threads: each atomic write waits on two fsyncs, which release the GIL and which the
    file system's journal can batch, so pages are rendered while earlier ones are being synced.
    """

    def __init__(self, out: Path, report: SiteReport, threads: int = WRITE_THREADS) -> None:
        self.out = out
        self.report = report
        self.files: list[str] = []
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="site-write")
        self._pending: list[Future[bool]] = []

    def write(self, rel: str, data: bytes) -> None:
        self.files.append(rel)
        self._pending.append(self._pool.submit(self._write, self.out / rel, data))
        if len(self._pending) >= 256:
            self._collect()

    def _write(self, target: Path, data: bytes) -> bool:
        """Write `data` unless `target` already holds it; True when written."""
        try:
            if target.stat().st_size == len(data) and target.read_bytes() == data:
                return False
        except OSError:
            pass
        atomic_write_bytes(target, data)  # mode from the umask, like any file the user writes
        return True

    def _collect(self) -> None:
        for future in self._pending:
            if future.result():
                self.report.pages_written += 1
            else:
                self.report.pages_unchanged += 1
        self._pending.clear()

    def abort(self) -> None:
        """Stop after a failure: finish the writes under way, start no more, remove nothing."""
        self._pool.shutdown(cancel_futures=True)

    def close(self) -> None:
        """Wait for every write, then drop the files of an earlier build that this one did not write."""
        self._collect()
        self._pool.shutdown()
        self._remove_stale()

    def _remove_stale(self) -> None:
        ledger = self.out / LEDGER
        try:
            before = set(json.loads(ledger.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            before = set()
        for rel in sorted(before - set(self.files)):
            path = self.out / rel
            if path.is_file() and self.out.resolve() in path.resolve().parents:
                path.unlink()
                self.report.pages_removed += 1
                _remove_empty_parents(path.parent, self.out)
        text = json.dumps(sorted(self.files), indent=0) + "\n"
        if not ledger.exists() or ledger.read_text(encoding="utf-8") != text:
            atomic_write_text(ledger, text)


def _remove_empty_parents(folder: Path, stop: Path) -> None:
    while folder != stop and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def _static_files() -> Iterable[tuple[str, bytes]]:
    root = templates_dir() / "static"
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield f"static/{path.relative_to(root).as_posix()}", path.read_bytes()


def build_site(run_folder: str | Path, out: str | Path | None = None, progress: bool = False) -> SiteReport:
    """Build (or update) the gallery of a run folder; returns what was written."""
    started = time.perf_counter()
    run_folder = Path(run_folder)
    run = read_run(run_folder)
    out = Path(out) if out is not None else run_folder / SITE_DIR
    report = write_site(build_gallery(run), out, progress=progress)
    report.seconds = time.perf_counter() - started
    return report


def write_site(gallery: Gallery, out: Path, run_from_site: str | None = None, home: str | None = None,
               progress: bool = False) -> SiteReport:
    """Write `gallery` into `out`. Its pages reach the run's files through `run_from_site` (a
    relative path from `out`; default: the run folder itself) and, with `home` (a path from `out`), link up to
    the page of a site that holds several models."""
    started = time.perf_counter()
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder; move it away or pass another output folder")
    if run_from_site is None:
        run_from_site = Path(os.path.relpath(gallery.run.folder.resolve(), out.resolve())).as_posix()
    report = SiteReport(out=out, missing_renders=gallery.missing)
    with stop_on_write_errors(out, elsewhere=None):  # a site that cannot be written: one line
        writer = _Writer(out, report)
        try:
            _write_all(writer, gallery, run_from_site, progress, home)
        except BaseException:
            writer.abort()
            raise
        writer.close()
    report.seconds = time.perf_counter() - started
    return report


def _write_all(writer: _Writer, gallery: Gallery, run_from_site: str, progress: bool, home: str | None = None
               ) -> None:
    """Hand every file of the site to the writer: static assets, the index script, then the pages."""
    for rel, data in _static_files():
        writer.write(rel, data)
    writer.write(INDEX_JS, _index_js(search_index(gallery)))
    for matrix in {m.rel: m for m in gallery.matrices.values()}.values():
        writer.write(matrix.rel, matrix.png)
    total = 5 + len(gallery.layers) + len(gallery.page_order) + (1 + len(gallery.maps) if gallery.maps else 0)
    total += 1 + len(gallery.explained.photos) if gallery.explained else 0
    total += 1 + len(gallery.classes) if gallery.classes else 0
    with _progress(total, progress) as bar:
        for rel, html in pages(gallery, environment(), run_from_site, home):
            writer.write(rel, html.encode("utf-8"))
            bar.update(1)


def _index_js(data: dict[str, Any]) -> bytes:
    """The index as a script (pages opened from file:// may not fetch JSON, but may load scripts)."""
    text = json.dumps(data, separators=(",", ":"), sort_keys=True).replace("</", "<\\/")
    return f"window.ATLAS_INDEX = {text};\n".encode("utf-8")


def _progress(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    # disable=None: a bar on a terminal only, never in a redirected log
    return tqdm(total=total, unit="page", desc="site", disable=None if enabled and total >= 500 else True, leave=False)


# ---------------------------------------------------------------------------------------------------------
# Preview server


def make_server(run_folder: str | Path, port: int = 8000, start: str = f"/{SITE_DIR}/index.html") -> Any:
    """An HTTP server on 127.0.0.1 serving the run folder (the site and the images it links to); `/` leads to
    `start`."""
    import http.server

    folder = Path(run_folder)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(folder), **kwargs)

        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            if self.path in ("/", ""):
                self.send_response(302)
                self.send_header("Location", start)
                self.end_headers()
                return
            super().do_GET()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by default
            pass

    if not 0 <= port <= 65535:
        raise UserError(f"--port {port} is not a port number; use 1024-65535, e.g. 8000")
    try:
        return http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    except OSError as exc:
        raise UserError(f"cannot listen on 127.0.0.1:{port} ({exc.strerror}); pass another --port") from None


def serve(run_folder: str | Path, port: int = 8000) -> None:
    """Build the site if it is missing, then serve the run folder on 127.0.0.1 until Ctrl+C."""
    run_folder = Path(run_folder)
    read_run(run_folder)  # a clear error for a folder that is not a run
    if not (run_folder / SITE_DIR / "index.html").is_file():
        print(build_site(run_folder, progress=True).summary())
    serve_until_stopped(make_server(run_folder, port), run_folder, f"{SITE_DIR}/index.html")


def serve_until_stopped(server: Any, folder: str | Path, page: str) -> None:
    """Say where `server` serves `folder` (its `page`), then serve until Ctrl+C, closing the socket after."""
    host, bound = server.server_address[:2]
    print(f"serving {folder} at http://{host}:{bound}/{page} (Ctrl+C to stop)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
