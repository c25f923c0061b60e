"""One registry of figure kinds: for each kind its name, what it shows, its options (spec-file type, default, help),
how `atlas figure --KIND VALUE` names one, its default file name and its layout function.

The spec-file schema (`spec.py`) and the options of `atlas figure` (atlas/cli.py) are both derived from `KINDS`:
adding a kind is one entry here.
"""

from __future__ import annotations

import hashlib
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from atlas.errors import UserError
from atlas.publish.figures.circuits import circuit_layout, weights_layout
from atlas.publish.figures.explain import CLASSES, MAX_CLASSES, MAX_POSITIONS, POSITIONS, explain_layout
from atlas.publish.figures.grids import class_layout, map_layout, panel_layout, progression_layout, sheet_layout
from atlas.publish.figures.page import FigureLayout, ItemSpec, find_mode
from atlas.run.manifest import Run


def _selection_text(value: Any) -> Any:
    """Accept `5`, `[1, 2, 3]` and `"0-63"` alike, as selection text."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return ",".join(str(v) for v in value)
    return value


def _names(text: str) -> list[str]:
    """`a,b,c` as a list of names."""
    return [n.strip() for n in text.split(",") if n.strip()]


@dataclass(frozen=True)
class Option:
    """One key of a figure kind: its spec-file name and type, the value a figure gets without it, its help, and
    whether `atlas figure` takes it as `--NAME`."""

    name: str
    type: Any  # the spec file's type, as pydantic reads it (constraints in Annotated[...])
    help: str  # one line; the command line's help puts the kinds that take it in front
    default: Any = None  # the value when the key is left out; None: worked out from the run (said in `help`)
    spec: bool = True  # a key of the spec file
    cli: bool = True  # an option of `atlas figure`
    from_text: Callable[[str], Any] | None = None  # the command line's text -> the spec's value

    @property
    def base(self) -> Any:
        """The type without its constraints: `int` for Annotated[int, Field(ge=1)]."""
        return typing.get_args(self.type)[0] if typing.get_origin(self.type) is Annotated else self.type

    def argparse_kwargs(self) -> dict[str, Any]:
        """How argparse reads `--NAME` (help aside): a switch for a bool, an int, else text."""
        if self.base is bool:
            return {"action": "store_const", "const": True, "default": None}
        return {"type": int} if self.base is int else {}


def _subject(key: str) -> Callable[[Any, dict[str, Any]], dict[str, Any]]:
    """`--KIND VALUE` sets the spec key `key` to VALUE; the other options pass as they are."""
    return lambda value, options: {key: value, **options}


@dataclass(frozen=True)
class FigureKind:
    """A kind of figure: everything the spec file, the command line and the layout need to know about it."""

    name: str
    help: str  # what it shows: the help of `atlas figure --NAME`
    layout: Callable[[Run, Any], FigureLayout]  # (run, FigureSpec) -> its layout
    file_name: Callable[[Run, Any], str]  # (run, FigureSpec) -> the file name of one made on the command line
    options: tuple[Option, ...] = ()
    needs: tuple[str, ...] = ()  # keys a figure of this kind must have
    metavar: str | None = None  # the value of `--NAME`; None: a switch
    from_flag: Callable[[Any, dict[str, Any]], dict[str, Any]] = _subject("layer")  # (VALUE, options) -> spec keys

    @property
    def keys(self) -> list[str]:
        """Its own spec-file keys (besides those of every figure)."""
        return [o.name for o in self.options if o.spec]

    @property
    def cli_options(self) -> list[str]:
        """Its own `atlas figure` options (besides --title, --columns, --dpi, --output)."""
        return [o.name for o in self.options if o.cli]

    def default(self, key: str) -> Any:
        return next((o.default for o in self.options + COMMON if o.name == key), None)


# ----------------------------------------------------------------------------------------------- options

LAYER = Option("layer", str, "a layer name from `atlas layers`", cli=False)
MODE = Option("mode", str, "noise, fourier, photo-NAME or NAME (default: the run's first noise-started mode)")
COMMON = (  # every kind's keys
    Option("title", str, "replace the generated title"),
    Option("columns", Annotated[int, Field(ge=1, le=32)], "panels per row"),
    Option("dpi", Annotated[int, Field(ge=20, le=1200)], "PNG resolution and PDF image resolution (default: the "
           "spec file's dpi, 200)", cli=False),
    Option("format", Literal["png", "pdf"], "png or pdf (default: the spec file's format, png)", cli=False),
    Option("output", str, "a .png or .pdf path; relative paths are inside RUN_FOLDER/figures/", cli=False),
)
CLI_COMMON = ("columns", "title", "output")  # the options of `atlas figure` that every kind takes (and --dpi)


def _sheet_name(run: Run, spec: Any) -> str:
    if spec.examples:
        return f"sheet-{spec.layer}-{find_mode(run, spec.mode).id if run.modes else 'examples'}-examples"
    return f"sheet-{spec.layer}-{find_mode(run, spec.mode).id}"


def _panel_name(run: Run, spec: Any) -> str:
    picked = ",".join(f"{i.layer}:{i.channel}:{i.mode}" for i in spec.items or [])
    return f"panel-{find_mode(run, spec.mode).id}-{hashlib.sha1(picked.encode()).hexdigest()[:8]}"


def _circuit_name(run: Run, spec: Any) -> str:
    return f"circuit-{run.layer(spec.layer).name}-{spec.channel:04d}-{find_mode(run, spec.mode).id}"


def parse_items(text: str, captions: str | None = None) -> list[ItemSpec]:
    """`layer:ch,layer:ch` (and captions `a|b`, in the same order) as panel items."""
    pairs = [p.strip() for p in text.split(",") if p.strip()]
    notes = captions.split("|") if captions else []
    if len(notes) > len(pairs):
        raise UserError(f"{len(notes)} captions for {len(pairs)} channels; give at most one caption per channel")
    items = []
    for i, pair in enumerate(pairs):
        layer, _, channel = pair.rpartition(":")
        if not layer or not channel.strip().isdigit():
            raise UserError(f"bad panel item '{pair}': write layer:channel, e.g. mixed4d_3x3_pre_relu:139")
        caption = notes[i].strip() if i < len(notes) and notes[i].strip() else None
        items.append(ItemSpec(layer=layer.strip(), channel=int(channel), caption=caption))
    if not items:
        raise UserError("--panel needs at least one layer:channel pair")
    return items


def _panel_flag(value: str, options: dict[str, Any]) -> dict[str, Any]:
    """`--panel a:1,b:2 --captions 'x|y'` as the spec's items."""
    rest = {k: v for k, v in options.items() if k != "captions"}
    return {"items": [i.model_dump() for i in parse_items(value, options.get("captions"))], **rest}


def _circuit_flag(value: str, options: dict[str, Any]) -> dict[str, Any]:
    """`--circuit LAYER:CH` as the spec's layer and channel."""
    try:
        items = parse_items(value)
    except UserError:
        items = []
    if len(items) != 1:
        raise UserError(f"--circuit takes one layer:channel, e.g. mixed4b_5x5_pre_relu:27, not '{value}'")
    return {"layer": items[0].layer, "channel": items[0].channel, **options}


def _explain_flag(value: str, options: dict[str, Any]) -> dict[str, Any]:
    """`--explain PHOTO:LAYER` as the spec's explained photo and layer (a photo's name may hold a colon)."""
    photo, _, layer = str(value).rpartition(":")
    if not photo.strip() or not layer.strip():
        raise UserError(f"--explain takes PHOTO:LAYER, e.g. dog.jpg:mixed4d, not '{value}'")
    return {"explained": photo.strip(), "layer": layer.strip(), **options}


def _explain_name(run: Run, spec: Any) -> str:
    """explain-<photo's file name without suffix>-<layer>, in the characters a figure name may hold."""
    from atlas.run.explainfiles import read_index

    stem = Path(read_index(run.folder).photo(spec.explained).name).stem
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"explain-{stem}-{spec.layer}")


def _circuit_layout(run: Run, spec: Any) -> FigureLayout:
    return circuit_layout(run, spec.layer, spec.channel, find_mode(run, spec.mode), spec.name, spec.title)


def _weights_layout(run: Run, spec: Any) -> FigureLayout:
    return weights_layout(run, spec.layer, spec.name, spec.columns, spec.title)


# ----------------------------------------------------------------------------------------------- the registry

KINDS: dict[str, FigureKind] = {kind.name: kind for kind in [
    FigureKind(
        "sheet", "contact sheet of one layer's channels", sheet_layout, _sheet_name, metavar="LAYER",
        needs=("layer",), options=(
            LAYER,
            Option("channels", Annotated[str, BeforeValidator(_selection_text)], "channels to show, e.g. 0-63, "
                   "0,3,7-9 (default: all)", default="all"),
            MODE,
            Option("examples", bool, "one row per channel, its dream then its dataset examples (see `atlas "
                   "examples`)", default=False))),
    FigureKind(
        "progression", "one start image across layers, low to high", progression_layout,
        lambda run, spec: f"progression-{find_mode(run, spec.photo).id}", from_flag=lambda _, options: options,
        options=(
            Option("photo", str, "base photo (default: noise renders)"),
            Option("layers", list[str], "a,b,c (default: about 10 layers from low to high)", from_text=_names))),
    FigureKind(
        "panel", "hand-picked channels, e.g. mixed4d_3x3_pre_relu:139", panel_layout, _panel_name,
        metavar="LAYER:CH,...", needs=("items",), from_flag=_panel_flag, options=(
            Option("items", list[ItemSpec], "the channels: {layer, channel, caption, mode} each", cli=False),
            MODE,
            Option("captions", str, "captions in the order of the channels, separated by |", spec=False))),
    FigureKind(
        "class", "class visualisations in a grid, each labelled (runs with classes:), e.g. goldfish,espresso or all",
        class_layout, lambda run, spec: f"class-{find_mode(run, spec.mode).id}" + (
            f"-{hashlib.sha1(spec.names.encode()).hexdigest()[:8]}" if spec.names and spec.names != "all" else ""),
        metavar="NAME|INDEX,...|all", from_flag=_subject("names"), options=(
            Option("names", str, "the classes: labels or indices, comma-separated, or all (default: every class the "
                   "run renders)", default="all", cli=False),
            MODE)),
    FigureKind(
        "map", "a poster of the layer's activation atlas (see `atlas map`)", map_layout,
        lambda run, spec: f"map-{spec.layer}" + (f"-{spec.grid}" if spec.grid else ""), metavar="LAYER",
        needs=("layer",), options=(
            LAYER,
            Option("grid", Annotated[int, Field(ge=1)], "the zoom level, as cells a side (default: the finest)"))),
    FigureKind(
        "circuit", "a unit's render with its strongest inputs and outputs, their kernels, edges coloured by sign "
        "(needs a run with circuits)", _circuit_layout, _circuit_name, metavar="LAYER:CH",
        needs=("layer", "channel"), from_flag=_circuit_flag, options=(
            LAYER,
            Option("channel", Annotated[int, Field(ge=0)], "the unit's channel", cli=False),
            MODE)),
    FigureKind(
        "weights", "a layer's kernels over the RGB image as colour patches, e.g. conv2d0_pre_relu", _weights_layout,
        lambda run, spec: f"weights-{run.layer(spec.layer).name}", metavar="LAYER", needs=("layer",),
        options=(LAYER,)),
    FigureKind(
        "explain", "a poster of what the network sees in an explained photo at one layer: semantic dictionary, "
        "attribution to its top classes by position and by channel, neuron groups (needs `atlas explain`)",
        explain_layout, _explain_name, metavar="PHOTO:LAYER", needs=("explained", "layer"), from_flag=_explain_flag,
        options=(
            Option("explained", str, "the explained photo: its name, file name or sha256 prefix", cli=False),
            LAYER,
            Option("classes", Annotated[int, Field(ge=1, le=MAX_CLASSES)], f"top classes to show, 1-{MAX_CLASSES} "
                   f"(default {CLASSES})", default=CLASSES),
            Option("positions", Annotated[int, Field(ge=1, le=MAX_POSITIONS)], "strongest positions of the semantic "
                   f"dictionary to show, 1-{MAX_POSITIONS} (default {POSITIONS})", default=POSITIONS),
            MODE)),
]}


def spec_options() -> dict[str, Option]:
    """Every spec-file key of any kind, once (a key shared by kinds must mean one thing: the same Option)."""
    found: dict[str, Option] = {}
    for option in [*COMMON, *(o for kind in KINDS.values() for o in kind.options)]:
        if option.spec:
            assert found.setdefault(option.name, option) is option, f"two meanings of the figure key {option.name}"
    return found


def cli_options() -> dict[str, tuple[Option, list[str]]]:
    """Every kind's own `atlas figure` option, once, with the kinds that take it."""
    found: dict[str, tuple[Option, list[str]]] = {}
    for kind in KINDS.values():
        for option in kind.options:
            if option.cli:
                found.setdefault(option.name, (option, []))[1].append(kind.name)
    return found
