"""One site, several models: the galleries of several run folders under one index, with a compare view that puts
layers of similar relative depth side by side.

    SITE/index.html                      one entry per run: its name and model, layer and channel counts, sample
                                         renders from low to high, a link to its gallery
    SITE/compare.html                    the first two models, layer by layer at relative depths 0%, 10% ... 100%,
                                         with a chooser of two models
    SITE/compare/<a>--<b>.html           the same for every ordered pair of models
    SITE/<slug>/                         each run's whole single-run gallery (`atlas.publish.site.write_site`)
    SITE/<slug>/run/                     the run's images, example patches, map cells, figures, photos and
                                         explained photos, hard-linked where the file system allows it, else
                                         copied
    SITE/static/                         CSS and the chooser's small script

The relative depth of a layer is its index in the catalogue's low-to-high order divided by (layers - 1), so the
first layer of every model sits at 0% and the last at 100%. SITE is self-contained: publish the folder as it is.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel, ConfigDict, Field

from atlas.atomic import PART_MARK, atomic_path, atomic_write_text, stop_on_write_errors
from atlas.errors import UserError
from atlas.publish.site import (
    LEDGER,
    Gallery,
    LayerView,
    SiteReport,
    Size,
    _remove_empty_parents,
    _static_files,
    _Writer,
    build_gallery,
    channel_url,
    environment,
    layer_url,
    write_site,
)
from atlas.run.manifest import RUN_FILE, Mode, Render, read_run, read_run_info
from atlas.validation import load_yaml, validate

RUN_COPY = "run"  # inside each model's folder: the run files its pages show
MODELS_FILE = ".atlas-models.json"  # the models (slugs) of the last build, so a rebuild drops removed ones
RESERVED = {"static", "compare", "index", RUN_COPY}  # names at SITE's top level that a slug must not take
COPIED = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".svg", ".pdf"}  # run files a gallery can show or link
RUN_PARTS = ("images", "examples", "maps", "figures", "explain")  # run sub-folders a gallery reads files from
DEPTH_STEPS = 10  # compare rows at 0%, 10%, ..., 100%
SAMPLES = 4  # renders per layer in a compare row
INDEX_SAMPLES = 4  # layers sampled (low to high) for an index entry's strip


# ---------------------------------------------------------------------------------------------------------
# Relative depth


def relative_depth(index: int, count: int) -> float:
    """A layer's place between the first (0.0) and the last (1.0) of `count` layers."""
    return index / (count - 1) if count > 1 else 0.0


def percent(depth: float) -> str:
    return f"{100 * depth:.0f}%"


def nearest_layer(depth: float, count: int) -> int:
    """The index of the layer (of `count`) whose relative depth is nearest `depth`; the lower one on a tie."""
    return min(range(count), key=lambda i: (abs(relative_depth(i, count) - depth), i))


def depth_rows(first: int, second: int, steps: int = DEPTH_STEPS) -> list[tuple[float, int, int]]:
    """(depth, layer index in the first model, in the second) at depths 0, 1/steps, ..., 1."""
    depths = [step / steps for step in range(steps + 1)]
    return [(depth, nearest_layer(depth, first), nearest_layer(depth, second)) for depth in depths]


# ---------------------------------------------------------------------------------------------------------
# Models


@dataclass
class SiteModel:
    """One run folder as the site of several models shows it."""

    slug: str  # its folder in the site, unique and URL-safe
    gallery: Gallery

    @property
    def name(self) -> str:
        return self.gallery.run.name

    @property
    def spec(self) -> str:
        return str(self.gallery.run.model.get("spec", "unknown"))

    @property
    def folder(self) -> Path:
        return self.gallery.run.folder

    @functools.cached_property
    def layers(self) -> list[LayerView]:
        """Catalogue order, low to high (the order relative depth is measured in; a block output the gallery shows
        comes right after the conv layer it follows)."""
        return sorted(self.gallery.layers, key=lambda view: view.layer.order)

    @functools.cached_property
    def _places(self) -> dict[str, int]:
        return {view.name: i for i, view in enumerate(self.layers)}

    def place(self, view: LayerView) -> int:
        """A layer's index in catalogue order."""
        return self._places[view.name]

    @property
    def channels(self) -> int:
        return self.gallery.total_channels

    @property
    def rendered(self) -> int:
        return sum(view.rendered for view in self.gallery.layers)

    def depth(self, view: LayerView) -> float:
        return relative_depth(self.place(view), len(self.layers))

    def percent(self, view: LayerView) -> str:
        return percent(self.depth(view))

    def samples(self, count: int = INDEX_SAMPLES) -> list[tuple[LayerView, Render]]:
        """The best render of `count` layers spread evenly from low to high (layers with renders only)."""
        shown = [view for view in self.layers if view.strip(self.gallery.modes, 1)]
        picks = sorted({nearest_layer(step / max(count - 1, 1), len(shown)) for step in range(count)}) if shown else []
        return [(shown[i], shown[i].strip(self.gallery.modes, 1)[0]) for i in picks]

    def strip(self, view: LayerView, count: int = SAMPLES) -> list[Render]:
        return view.strip(self.gallery.modes, count)

    def thumb(self, render: Render) -> str:
        """A render's thumbnail, from the site's root."""
        return f"{self.slug}/{RUN_COPY}/{render.thumb}"

    def thumb_size(self, render: Render) -> Size:
        return self.gallery.thumb[render.mode]

    def layer_href(self, view: LayerView) -> str:
        return f"{self.slug}/{layer_url(view.name)}"

    def channel_href(self, view: LayerView, channel: int) -> str:
        return f"{self.slug}/{channel_url(view.name, channel)}"


@dataclass(frozen=True)
class Row:
    """One compare row: a relative depth and the nearest layer of each of the two models."""

    depth: float
    first: LayerView
    second: LayerView

    @property
    def percent(self) -> str:
        return percent(self.depth)


def compare_rows(first: SiteModel, second: SiteModel, steps: int = DEPTH_STEPS) -> list[Row]:
    """The two models' layers paired at relative depths 0, 1/steps, ..., 1."""
    low_high = first.layers, second.layers
    return [Row(depth, low_high[0][a], low_high[1][b])
            for depth, a, b in depth_rows(len(low_high[0]), len(low_high[1]), steps)]


def slugify(name: str) -> str:
    """A URL-safe folder name: lower-case letters, digits, '.', '_' and single hyphens."""
    slug = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9._-]+", "-", name.lower())).strip("-.")
    return slug or "model"


def unique_slugs(names: list[str]) -> list[str]:
    """One slug per name, unique, never a name the site's top level uses (a suffix -2, -3 ... where needed)."""
    taken: set[str] = set(RESERVED)
    slugs = []
    for name in names:
        base = slugify(name)
        slug, n = base, 2
        while slug in taken:
            slug, n = f"{base}-{n}", n + 1
        taken.add(slug)
        slugs.append(slug)
    return slugs


def pair_url(first: SiteModel, second: SiteModel) -> str:
    """A compare page's path from the site root (slugs never hold '--', so the pair is unambiguous)."""
    return f"compare/{first.slug}--{second.slug}.html"


# ---------------------------------------------------------------------------------------------------------
# A site config: the run folders and the output folder in a file


class SiteConfig(BaseModel):
    """`atlas build SITE.yaml`: the runs of one site and its folder; relative paths start at the file's folder."""

    model_config = ConfigDict(extra="forbid")
    runs: list[str] = Field(min_length=1)
    out: str


def load_site_config(path: str | Path) -> tuple[list[Path], Path]:
    """The run folders and the output folder a site config names, as paths from the current folder."""
    path = Path(path)
    config = validate(SiteConfig, load_yaml(path), str(path))

    def at(value: str) -> Path:
        candidate = Path(value).expanduser()
        return candidate if candidate.is_absolute() else path.parent / candidate

    return [at(run) for run in config.runs], at(config.out)


def is_site_config(path: str | Path) -> bool:
    return Path(path).suffix.lower() in (".yaml", ".yml") and Path(path).is_file()


# ---------------------------------------------------------------------------------------------------------
# Checks of what the user asked for


def check_request(run_folders: list[Path], out: Path) -> None:
    """One line for each mistake a user can make: not a run, a run twice, two runs of one name, a bad -o."""
    seen: dict[Path, Path] = {}
    names: dict[str, Path] = {}
    for folder in run_folders:
        info = read_run_info(folder)  # a clear error for a folder that is not a run
        real = folder.resolve()
        if real in seen:
            raise UserError(f"{folder} is given twice (as {seen[real]}); pass each run folder once")
        seen[real] = folder
        name = str(info["name"])
        if name in names:
            raise UserError(f"runs {names[name]} and {folder} are both named {name!r}; give one another name (the "
                            f"`name` in its {RUN_FILE}), or build them into separate sites")
        names[name] = folder
    site = out.resolve()
    for real, folder in seen.items():
        if site == real or real in site.parents:
            raise UserError(f"-o {out} is inside the run folder {folder}; pass a folder outside every run, "
                            "e.g. output/site")
        if site in real.parents:
            raise UserError(f"the run folder {folder} is inside -o {out}; pass a folder that holds no run, "
                            "e.g. output/site")
    if out.exists() and not out.is_dir():
        raise UserError(f"-o {out} exists and is not a folder; move it away or pass another folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MODELS_FILE).is_file():
        raise UserError(f"-o {out} is a folder that holds other files (no site of several models); pass a new or "
                        "empty folder")


# ---------------------------------------------------------------------------------------------------------
# Building


@dataclass
class MultiReport:
    """What a build of several models did."""

    out: Path
    models: list[SiteModel]
    sites: list[SiteReport]
    written: int = 0  # top-level pages and run files new or changed
    unchanged: int = 0
    removed: int = 0
    seconds: float = 0.0

    @property
    def index(self) -> Path:
        return self.out / "index.html"

    def summary(self) -> str:
        pages = sum(s.pages_written for s in self.sites) + self.written
        same = sum(s.pages_unchanged for s in self.sites) + self.unchanged
        gone = sum(s.pages_removed for s in self.sites) + self.removed
        missing = sum(s.missing_renders for s in self.sites)
        tail = f"; {missing:,} renders missing (shown as placeholders)" if missing else ""
        count = len(self.models)
        return (f"site: {self.index} ({count} model{'s' if count != 1 else ''}, {pages:,} files written, {same:,} unchanged, "
                f"{gone:,} removed, {self.seconds:.1f} s){tail}")


def build_multisite(run_folders: list[str | Path], out: str | Path, progress: bool = False) -> MultiReport:
    """Build (or update) one site of several run folders in `out`: each run's gallery in its own folder, the
    index of models and the compare pages at the top."""
    started = time.perf_counter()
    folders, out = [Path(folder) for folder in run_folders], Path(out)
    if not folders:
        raise UserError("no run folder given; pass one or more, e.g. atlas build output/a output/b -o output/site")
    check_request(folders, out)
    galleries = [build_gallery(read_run(folder)) for folder in folders]
    models = [SiteModel(slug, gallery)
              for slug, gallery in zip(unique_slugs([g.run.name for g in galleries]), galleries)]
    report = MultiReport(out=out, models=models, sites=[])
    with stop_on_write_errors(out, elsewhere=None):
        out.mkdir(parents=True, exist_ok=True)
        before = _old_models(out)
        slugs = {model.slug for model in models}
        atomic_write_text(out / MODELS_FILE, json.dumps(sorted(before | slugs)) + "\n")  # marks out as a site
        report.removed += _drop_models(out, before - slugs)
        for model in models:
            report.sites.append(write_site(model.gallery, out / model.slug, run_from_site=RUN_COPY,
                                           home="../index.html", progress=progress))
        top = SiteReport(out=out)
        writer = _Writer(out, top)
        try:
            for model in models:
                for rel, source in run_files(model.folder, model.gallery.modes):
                    writer.files.append(f"{model.slug}/{RUN_COPY}/{rel}")
                    if link_or_copy(source, out / model.slug / RUN_COPY / rel):
                        top.pages_written += 1
                    else:
                        top.pages_unchanged += 1
            for rel, data in _static_files():
                writer.write(rel, data)
            for rel, html in pages(models):
                writer.write(rel, html.encode("utf-8"))
        except BaseException:
            writer.abort()
            raise
        writer.close()
        atomic_write_text(out / MODELS_FILE, json.dumps(sorted(m.slug for m in models)) + "\n")
    report.written += top.pages_written
    report.unchanged += top.pages_unchanged
    report.removed += top.pages_removed
    report.seconds = time.perf_counter() - started
    return report


def run_files(folder: Path, modes: list[Mode]) -> Iterator[tuple[str, Path]]:
    """(run-relative path, file) of every image, figure and photo a run's gallery can show or link to."""
    found: dict[str, Path] = {}
    for part in RUN_PARTS:
        for parent, _, names in os.walk(folder / part):
            for name in names:
                path = Path(parent) / name
                if path.suffix.lower() in COPIED and not name.startswith("."):
                    found[path.relative_to(folder).as_posix()] = path
    for mode in modes:  # the base photos of photo modes
        rel = Path(mode.file) if mode.file else None
        if rel and not rel.is_absolute() and ".." not in rel.parts and (folder / rel).is_file():
            found[rel.as_posix()] = folder / rel
    yield from sorted(found.items())


def link_or_copy(source: Path, target: Path) -> bool:
    """Make `target` hold `source`'s bytes: a hard link where the file system allows it, else a copy (with its
    modification time); atomic either way. False when it already did."""
    try:
        if os.path.samefile(source, target):
            return False
        have, want = target.stat(), source.stat()
        if have.st_size == want.st_size and have.st_mtime_ns == want.st_mtime_ns:
            return False
    except OSError:
        pass
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.parent / f".{target.name}.{os.getpid()}{PART_MARK}{target.suffix}"
    try:
        temp.unlink(missing_ok=True)
        os.link(source, temp)
        os.replace(temp, target)
        return True
    except OSError:
        temp.unlink(missing_ok=True)
    with atomic_path(target) as copy:
        shutil.copy2(source, copy)
    return True


def _old_models(out: Path) -> set[str]:
    """The slugs of the models an earlier build wrote into `out`."""
    try:
        return {slug for slug in json.loads((out / MODELS_FILE).read_text(encoding="utf-8"))
                if isinstance(slug, str) and slug == slugify(slug) and slug not in RESERVED}
    except (OSError, ValueError, TypeError):
        return set()


def _drop_models(out: Path, slugs: set[str]) -> int:
    """Remove the galleries of models an earlier build held and this one does not; return the files removed."""
    removed = 0
    for slug in sorted(slugs):
        folder = out / slug
        try:
            files = json.loads((folder / LEDGER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for rel in [*files, LEDGER]:
            path = folder / rel
            if path.is_file() and folder.resolve() in path.resolve().parents:
                path.unlink()
                removed += 1
                _remove_empty_parents(path.parent, out)
    return removed


# ---------------------------------------------------------------------------------------------------------
# Pages


def pages(models: list[SiteModel]) -> Iterator[tuple[str, str]]:
    """(path from the site root, HTML) of the index and every compare page."""
    env = environment()
    pairs = [(a, b) for a in models for b in models if a is not b]

    def render(template: str, rel: str, **context: Any) -> tuple[str, str]:
        root = "../" * rel.count("/")
        return rel, env.get_template(template).render(root=root, run="", page=rel, models=models, pairs=pairs,
                                                      pair_url=pair_url, **context)

    yield render("models.html", "index.html")
    first = pairs[0] if pairs else None
    yield render("models_compare.html", "compare.html", pair=first, rows=compare_rows(*first) if first else [])
    for a, b in pairs:
        yield render("models_compare.html", pair_url(a, b), pair=(a, b), rows=compare_rows(a, b))


# ---------------------------------------------------------------------------------------------------------
# Preview


def is_multisite(folder: str | Path) -> bool:
    """True for the output folder of a build of several models."""
    return (Path(folder) / MODELS_FILE).is_file()


def serve_multisite(folder: str | Path, port: int = 8000) -> None:
    """Serve a site of several models on 127.0.0.1 until Ctrl+C."""
    from atlas.publish.site import make_server, serve_until_stopped

    serve_until_stopped(make_server(folder, port, start="/index.html"), folder, "index.html")

