"""The run folder contract: `run.json` (what was asked), `manifest.sqlite` (what was rendered), the image tree.

The sweep writes the renders (under its lock); the passes of `atlas.analysis` write the examples, maps and
circuits, each under its own lock (the examples and map cells through this module's `Manifest`). The site and the
figures only read, through `read_run`. Nothing here imports TensorFlow, so reading a run is fast.

    output/<run>/
      run.json                          name, model, layer catalogue (`layers`: the conv layers; `blocks`: the
                                        block outputs), modes (with photo credits), settings, and
                                        `planned`: per mode and layer the channels the config asks for
                                        ("0-15,20"; over every shard), what readers count as missing
      manifest.sqlite                   one row per finished render (table `renders`)
      manifest.shard-K-of-N.sqlite      ... of a `--shard K/N` sweep: one file per slice, so slices run at once
                                        and merge by copying folders together; readers take the union
      photos/<name>.<ext>               copies of the base photos
      images/<mode>/<layer>/<cccc>.png        lossless master (cccc = channel, 4 digits; `layer` = whole-layer dream)
      images/<mode>/<layer>/<cccc>.web.jpg    web image
      images/<mode>/<layer>/<cccc>.thumb.jpg  thumbnail
      images/<mode>/<layer>/<cccc>-facet<k>.png ... facet k >= 1 of a mode rendered with diversity N (facet 0 is
                                        the plain <cccc> files; a manifest row per facet, column `facet`)
      images/<mode>/<layer>/<cccc>-mask.png   beside a render by the maco method: its importance mask
      images/<mode>/<layer>/<cccc>-raw.png    beside a render whose display is not its optimised pixels (visstd):
                                        those pixels (columns `mask`, `raw`; empty: none)
      images/<mode>/class/<cccc>.png     a class visualisation (cccc = the class index) in a noise-started mode;
                                        run.json `classes` lists the run's classes with their labels
      classes/<hash>/scores.json              the photos of the examples folder that score highest for each class
                                        (atlas.run.classfiles), their thumbnails in classes/<hash>/photos/
      examples/<hash>/photos/<sha12>.jpg      dataset examples: a thumbnail of each photo in a top list
      examples/<hash>/crops/<layer>/<sha12>-<row>-<col>.jpg   the patch a layer position sees in that photo
      examples/skipped.txt                    files the last examples pass could not read, with the reason

Modes: `noise` (DeepDream from noise), `fourier` (the Fourier method, from a random spectrum), `photo-<name>`
(DeepDream from a photo). run.json records each mode's method, facets and objective; folders written before those
existed read as method deepdream with one facet and the objective of their render settings, and their manifests
(no `facet` column) as facet 0. A run whose noise modes maximise the `neuron` objective also records, per such mode,
the receptive-field box of that unit in every layer (`centre_units`, see `CentreUnits`); other runs, and folders
written before it, have none.

Dataset examples live in the main manifest too (tables `examples`, `example_photos`, `example_meta`); run folders
written before them have no such tables and read as runs without examples.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

from atlas.atomic import atomic_write_text, write_problem
from atlas.errors import UserError
from atlas.model.catalogue import AnyLayer, BlockOutput, Layer, find_layer
from atlas.model.selection import WHOLE_LAYER, parse_channels

RUN_FILE = "run.json"
RUN_KEYS = ("name", "layers", "modes")  # what every reader of run.json relies on
BLOCKS = "blocks"  # run.json: the model's block outputs (none in folders written before they were recorded)
PLANNED = "planned"  # run.json: mode id -> layer -> the channels the config asks for ("0-15,20")
CENTRE_UNITS = "centre_units"  # run.json: mode id -> CentreUnits, for noise modes rendered with `neuron`
MANIFEST_FILE = "manifest.sqlite"
IMAGES_DIR = "images"
EXAMPLES_DIR = "examples"
NOISE = "noise"
FOURIER_MODE = "fourier"  # the mode id of the Fourier method (render/param.py's FOURIER is its parameterisation)
MACO_MODE = "maco"  # the mode id of the MACO method (phases only, natural photos' magnitude)
METHOD_LABELS = {"deepdream": "DeepDream", "fourier": "Fourier", "maco": "MACO"}  # how the site and figures name a
# method
CLASS_LAYER = "class"  # the `layer` of class visualisations in work items, records and paths (images/<mode>/class/)
CLASSES = "classes"  # run.json: the classes the run renders ({index, label} each) and how many the classifier has
CLASSES_DIR = "classes"  # the class-photos pass's files (the examples folder's photos scored per class)
OBJECTIVE_LABELS = {"neuron": "neuron (centre unit)", "negative": "negative channel"}  # ... an objective


@dataclass(frozen=True)
class Mode:
    """A starting point for renders: noise, or one base photo."""

    id: str  # folder name: "noise" or "photo-<name>"
    kind: str  # "noise" or "photo"
    photo: str | None = None  # the photo's short name, e.g. "chelsea"
    file: str | None = None  # the copy inside the run folder, relative to it
    credit: str | None = None  # who made the photo and its licence
    method: str = "deepdream"  # deepdream | fourier: how its images were made
    facets: int = 1  # images per channel (the diversity of the render)
    objective: str = "channel"  # channel | neuron | negative: what its channel renders maximise

    @staticmethod
    def noise(facets: int = 1, objective: str = "channel") -> Mode:
        return Mode(id=NOISE, kind=NOISE, facets=facets, objective=objective)

    @staticmethod
    def fourier(facets: int = 1, objective: str = "channel") -> Mode:
        """The Fourier method: starts from a random spectrum (noise), so its kind is noise."""
        return Mode(id=FOURIER_MODE, kind=NOISE, method="fourier", facets=facets, objective=objective)

    @staticmethod
    def maco(facets: int = 1, objective: str = "channel") -> Mode:
        """The MACO method: starts from random phases (noise), so its kind is noise."""
        return Mode(id=MACO_MODE, kind=NOISE, method="maco", facets=facets, objective=objective)

    @property
    def method_label(self) -> str:
        return METHOD_LABELS.get(self.method, self.method)

    @property
    def objective_label(self) -> str:
        return OBJECTIVE_LABELS.get(self.objective, self.objective)

    @staticmethod
    def for_photo(name: str, file: str | None = None, credit: str | None = None, objective: str = "channel") -> Mode:
        return Mode(id=f"photo-{name}", kind="photo", photo=name, file=file, credit=credit, objective=objective)


@dataclass(frozen=True)
class CentreUnits:
    """Where the unit that a noise mode's `neuron` renders maximise sits in their images: per layer, the box of
    its receptive field, (x0, y0, x1, y1) in the rendered image's pixels (x1, y1 exclusive), clipped to it."""

    width: int  # the rendered image's pixels (the web image and thumbnail are scaled copies)
    height: int
    boxes: dict[str, tuple[int, int, int, int]]  # layer -> box

    def to_dict(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height, "boxes": {k: list(v) for k, v in self.boxes.items()}}

    @staticmethod
    def from_dict(values: dict[str, Any]) -> CentreUnits:
        return CentreUnits(int(values["width"]), int(values["height"]),
                           {layer: tuple(int(v) for v in box) for layer, box in values["boxes"].items()})


@dataclass(frozen=True)
class Render:
    """One finished render, as the manifest records it. Paths are relative to the run folder."""

    layer: str
    channel: int  # WHOLE_LAYER for a whole-layer dream
    mode: str  # Mode.id
    seed: int
    settings_hash: str  # hash of every setting that affects the pixels
    start: float  # target's mean activation on the start image
    end: float  # ... on the result (the final 8-bit image)
    lift: float  # (end - start) / spread of the layer's channel means on the start image
    rank: int  # 1 = the most active channel of its layer on the result
    specific: bool | None  # excited more by its own image than by any other image of its batch (None: alone)
    seconds: float  # wall time attributed to this render
    image: str  # master PNG
    web: str
    thumb: str
    versions: str = "{}"  # JSON: atlas, tensorflow, numpy, pillow, python
    created: float = 0.0  # unix time
    facet: int = 0  # which of the channel's images in a mode rendered with diversity N (0 .. N-1)
    batch: int | None = None  # images in the pass that rendered it (None: recorded before passes were)
    device: str = ""  # what rendered it: `host cpu` or `host gpu N` (empty: recorded before devices were)
    mask: str = ""  # its importance mask PNG (the maco method's; empty: none)
    raw: str = ""  # its optimised pixels as a PNG, when `image` displays them otherwise (empty: none)

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.mode, self.layer, self.channel)

    @property
    def facet_key(self) -> tuple[str, str, int, int]:
        return (self.mode, self.layer, self.channel, self.facet)


def manifest_name(shard: tuple[int, int] | None = None) -> str:
    """The manifest file a sweep (or one slice of it) writes."""
    return MANIFEST_FILE if shard is None else f"manifest.shard-{shard[0]}-of-{shard[1]}.sqlite"


def manifest_files(folder: str | Path) -> list[Path]:
    """Every manifest of a run folder: the main one and any slices'."""
    return sorted(Path(folder).glob("manifest*.sqlite"))


def recorded_hashes(folder: str | Path) -> dict[tuple[str, str, int], str]:
    """(mode, layer, channel) -> settings hash over every manifest of the folder."""
    hashes: dict[tuple[str, str, int], str] = {}
    for path in manifest_files(folder):
        with Manifest(path) as manifest:
            hashes.update(manifest.hashes())
    return hashes


def image_stem(mode: str, layer: str, channel: int, facet: int = 0) -> str:
    """The image path without suffix, relative to the run folder."""
    leaf = "layer" if channel == WHOLE_LAYER else f"{channel:04d}"
    return f"{IMAGES_DIR}/{mode}/{layer}/{leaf}" + (f"-facet{facet}" if facet else "")


def image_paths(mode: str, layer: str, channel: int, web_ext: str = "jpg",
                thumb_ext: str | None = None, facet: int = 0) -> tuple[str, str, str]:
    """(master, web, thumb) paths of one render, relative to the run folder; the thumbnail has the web
    image's format unless `thumb_ext` says otherwise."""
    stem = image_stem(mode, layer, channel, facet)
    return f"{stem}.png", f"{stem}.web.{web_ext}", f"{stem}.thumb.{thumb_ext or web_ext}"


def extra_paths(mode: str, layer: str, channel: int, facet: int = 0) -> tuple[str, str]:
    """(mask, raw) PNG paths beside one render, relative to the run folder (written only when it has them)."""
    stem = image_stem(mode, layer, channel, facet)
    return f"{stem}-mask.png", f"{stem}-raw.png"


@dataclass(frozen=True)
class RunClass:
    """A class the run renders: its index among the classifier's classes and its label."""

    index: int
    label: str


def examples_root(settings_hash: str) -> str:
    """The folder of one examples setting's files, relative to the run folder."""
    return f"{EXAMPLES_DIR}/{settings_hash}"


def example_photo_path(settings_hash: str, sha256: str) -> str:
    """The thumbnail of a whole example photo, relative to the run folder."""
    return f"{examples_root(settings_hash)}/photos/{sha256[:12]}.jpg"


def example_crop_path(settings_hash: str, layer: str, sha256: str, row: int, col: int) -> str:
    """The patch one layer position sees in one photo, relative to the run folder."""
    return f"{examples_root(settings_hash)}/crops/{layer}/{sha256[:12]}-{row}-{col}.jpg"


@dataclass(frozen=True)
class PhotoRecord:
    """A photo a pass driven by photos read (the examples pass, a map's sampling), and how it was fitted to the
    network's input."""

    photo: str  # the path as found in the folder (POSIX, relative to it), or probes/<name>
    sha256: str
    key: str  # size and mtime (or the probe set's version): an unchanged key means an unchanged photo
    width: int  # the upright photo's pixels
    height: int
    scaled_width: int  # after scaling its shorter side to `size`
    scaled_height: int
    left: int  # the centred crop's offset in the scaled photo (0 with fit: whole)
    top: int
    thumb: str = ""  # run-relative path of its thumbnail (the examples pass's; "": none)


@dataclass(frozen=True)
class Example:
    """One entry of a channel's top list."""

    layer: str
    channel: int
    rank: int  # 1 = the photo that excites the channel most
    photo: str  # PhotoRecord.photo
    sha256: str
    value: float  # the maximum of the channel's pre-ReLU activation over the photo
    row: int  # where, in the layer's map
    col: int
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the upright original photo's pixels (x1, y1 exclusive)
    crop: str | None  # run-relative path of the patch (None beyond the shown `top`)

    def to_dict(self) -> dict[str, Any]:
        """The output contract of `atlas examples --format json`."""
        return {"photo": self.photo, "value": self.value, "box": list(self.box), "position": [self.row, self.col]}


_EXAMPLES_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS example_meta (key TEXT PRIMARY KEY, value TEXT)""",
    """CREATE TABLE IF NOT EXISTS example_photos (
    photo TEXT PRIMARY KEY, sha256 TEXT NOT NULL, key TEXT, width INTEGER, height INTEGER, scaled_width INTEGER,
    scaled_height INTEGER, "left" INTEGER, top INTEGER, thumb TEXT)""",
    """CREATE TABLE IF NOT EXISTS examples (
    layer TEXT NOT NULL, channel INTEGER NOT NULL, rank INTEGER NOT NULL, photo TEXT NOT NULL, sha256 TEXT,
    value REAL, "row" INTEGER, col INTEGER, x0 INTEGER, y0 INTEGER, x1 INTEGER, y1 INTEGER, crop TEXT,
    PRIMARY KEY (layer, channel, rank))""",
]
_PHOTO_COLUMNS = [f.name for f in fields(PhotoRecord)]
_EXAMPLE_COLUMNS = ["layer", "channel", "rank", "photo", "sha256", "value", "row", "col", "x0", "y0", "x1", "y1",
                    "crop"]


def _quoted(columns: list[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


def _example(row: tuple[Any, ...]) -> Example:
    layer, channel, rank, photo, sha, value, r, c, x0, y0, x1, y1, crop = row
    return Example(layer, channel, rank, photo, sha, value, r, c, (x0, y0, x1, y1), crop)


_COLUMNS = [f.name for f in fields(Render)]
_SCHEMA = """
CREATE TABLE IF NOT EXISTS renders (
    layer TEXT NOT NULL, channel INTEGER NOT NULL, mode TEXT NOT NULL, seed INTEGER NOT NULL,
    settings_hash TEXT NOT NULL, start REAL, "end" REAL, lift REAL, rank INTEGER, specific INTEGER,
    seconds REAL, image TEXT, web TEXT, thumb TEXT, versions TEXT, created REAL, facet INTEGER NOT NULL DEFAULT 0,
    batch INTEGER, device TEXT NOT NULL DEFAULT '', mask TEXT NOT NULL DEFAULT '', raw TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (mode, layer, channel, facet)
)"""
_LATER = {"facet": "0", "batch": "NULL", "device": "''", "mask": "''", "raw": "''"}  # columns added since the first
# manifests, their default
_ADDED = {"batch": "INTEGER", "device": "TEXT NOT NULL DEFAULT ''", "mask": "TEXT NOT NULL DEFAULT ''",
          "raw": "TEXT NOT NULL DEFAULT ''"}  # added to a manifest in place
_OLD_COLUMNS = [c for c in _COLUMNS if c not in _LATER]  # manifests written before facets existed


class Manifest:
    """The SQLite manifest of a run. Each `add` is one transaction, so a killed writer loses nothing
    already committed and leaves no half-written row."""

    def __init__(self, path: str | Path, create: bool = False) -> None:
        path = Path(path)
        if not create and not path.exists():
            raise UserError(f"no manifest at {path}; run `atlas sweep CONFIG` first")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, timeout=30)
            self._db.execute("PRAGMA synchronous=FULL")
            if create:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute(_SCHEMA)
                self._db.commit()
                if not self._has_facets():
                    self._add_facets()
                self._add_columns()
        except sqlite3.DatabaseError as exc:
            problem = write_problem(exc, path.parent) if create else None
            if problem:  # the folder is read-only or full, the file itself is fine
                raise UserError(problem) from None
            raise UserError(f"{path} is not a readable atlas manifest ({exc}); move it away and re-run the "
                            "sweep, which re-records every image it finds") from None

    def add(self, renders: Iterable[Render]) -> None:
        """Insert or replace renders in one transaction."""
        rows = [tuple(_to_sql(getattr(r, c)) for c in _COLUMNS) for r in renders]
        with self._db:
            self._db.executemany(f"INSERT OR REPLACE INTO renders ({_quoted(_COLUMNS)}) VALUES "
                                 f"({', '.join('?' * len(_COLUMNS))})", rows)

    def renders(self) -> list[Render]:
        """Every recorded render (every facet), ordered by mode, layer, channel, facet."""
        present = self._columns()
        cols = ", ".join(f'"{c}"' if c in present else _LATER[c] for c in _COLUMNS)
        order = "mode, layer, channel" + (", facet" if "facet" in present else "")
        rows = self._db.execute(f"SELECT {cols} FROM renders ORDER BY {order}").fetchall()
        return [_from_row(row) for row in rows]

    def hashes(self) -> dict[tuple[str, str, int], str]:
        """(mode, layer, channel) -> settings hash of every recorded render (its facet 0: a channel's facets
        are recorded together, in one transaction)."""
        where = " WHERE facet = 0" if self._has_facets() else ""
        rows = self._db.execute(f"SELECT mode, layer, channel, settings_hash FROM renders{where}").fetchall()
        return {(m, l, c): h for m, l, c, h in rows}

    def _columns(self) -> set[str]:
        """The columns the renders table has (older manifests lack some of `_LATER`)."""
        return {row[1] for row in self._db.execute("PRAGMA table_info(renders)")}

    def _has_facets(self) -> bool:
        """Whether the table has the `facet` column (manifests written before facets existed do not)."""
        return "facet" in self._columns()

    def _add_columns(self) -> None:
        """Give an older manifest the columns added after facets (`batch`, `device`), empty for its rows."""
        present = self._columns()
        for column, kind in _ADDED.items():
            if column not in present:  # each ALTER is atomic; one killed between them is finished next time
                self._db.execute(f'ALTER TABLE renders ADD COLUMN "{column}" {kind}')
        self._db.commit()

    def _add_facets(self) -> None:
        """Give an older manifest the `facet` column and its key, in one transaction (rows become facet 0)."""
        cols = _quoted(_OLD_COLUMNS)
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")  # DDL too: Python's sqlite3 opens transactions only for DML
            self._db.execute("ALTER TABLE renders RENAME TO renders_before_facets")
            self._db.execute(_SCHEMA)
            self._db.execute(f"INSERT INTO renders ({cols}) SELECT {cols} FROM renders_before_facets")
            self._db.execute("DROP TABLE renders_before_facets")

    # Dataset examples ----------------------------------------------------------------------------------

    def has_examples(self) -> bool:
        """Whether an examples pass ever wrote to this manifest."""
        row = self._db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='example_meta'").fetchone()
        return row is not None

    def ensure_examples(self) -> None:
        """Create the examples tables (a no-op when they exist)."""
        with self._db:
            for statement in _EXAMPLES_SCHEMA:
                self._db.execute(statement)

    def example_meta(self) -> dict[str, Any]:
        """The settings of the recorded examples ({} if none)."""
        if not self.has_examples():
            return {}
        return {k: json.loads(v) for k, v in self._db.execute("SELECT key, value FROM example_meta")}

    def example_photos(self) -> list[PhotoRecord]:
        if not self.has_examples():
            return []
        rows = self._db.execute(f"SELECT {_quoted(_PHOTO_COLUMNS)} FROM example_photos ORDER BY photo")
        return [PhotoRecord(*row) for row in rows]

    def examples(self, layer: str | None = None, channel: int | None = None,
                 max_rank: int | None = None) -> list[Example]:
        """Recorded top-list entries (of one layer or channel), by layer, channel and rank."""
        if not self.has_examples():
            return []
        where, args = ["1"], []
        for test, value in (("layer = ?", layer), ("channel = ?", channel), ("rank <= ?", max_rank)):
            if value is not None:
                where.append(test)
                args.append(value)
        rows = self._db.execute(f"SELECT {_quoted(_EXAMPLE_COLUMNS)} FROM examples WHERE {' AND '.join(where)} "
                                "ORDER BY layer, channel, rank", args)
        return [_example(row) for row in rows]

    def reset_examples(self, meta: dict[str, Any]) -> None:
        """Forget every recorded example and photo, and record new settings, in one transaction."""
        self.ensure_examples()
        with self._db:
            for table in ("examples", "example_photos", "example_meta"):
                self._db.execute(f"DELETE FROM {table}")
            self._db.executemany("INSERT INTO example_meta VALUES (?, ?)",
                                 [(k, json.dumps(v)) for k, v in meta.items()])

    def record_examples(self, photos: list[PhotoRecord], forget: list[str],
                        lists: dict[tuple[str, int], list[Example]], meta: dict[str, Any] | None = None) -> None:
        """One transaction: add processed photos, forget removed ones, replace whole top lists, update `meta`."""
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO example_meta VALUES (?, ?)",
                                 [(k, json.dumps(v)) for k, v in (meta or {}).items()])
            self._db.executemany("DELETE FROM example_photos WHERE photo = ?", [(p,) for p in forget])
            self._db.executemany(f"INSERT OR REPLACE INTO example_photos ({_quoted(_PHOTO_COLUMNS)}) VALUES "
                                 f"({', '.join('?' * len(_PHOTO_COLUMNS))})",
                                 [tuple(getattr(p, c) for c in _PHOTO_COLUMNS) for p in photos])
            self._db.executemany("DELETE FROM examples WHERE layer = ? AND channel = ?", list(lists))
            self._db.executemany(
                f"INSERT INTO examples ({_quoted(_EXAMPLE_COLUMNS)}) VALUES ({', '.join('?' * len(_EXAMPLE_COLUMNS))})",
                [(e.layer, e.channel, e.rank, e.photo, e.sha256, e.value, e.row, e.col, *e.box, e.crop)
                 for entries in lists.values() for e in entries])

    def ensure_map_cells(self) -> None:
        """Create the table of rendered map cells (the `map` mode) if this manifest has none yet."""
        with self._db:
            self._db.execute(_MAP_CELLS_SCHEMA)

    def record_map_cells(self, rows: Iterable[MapCellRender]) -> None:
        """Insert or replace rendered cells in one transaction."""
        self.ensure_map_cells()
        names = [f.name for f in fields(MapCellRender)]
        with self._db:
            self._db.executemany(f"INSERT OR REPLACE INTO map_cells ({_quoted(names)}) VALUES "
                                 f"({', '.join('?' * len(names))})", [tuple(_to_sql(getattr(r, n)) for n in names)
                                                                      for r in rows])

    def map_cells(self, layer: str | None = None) -> list[MapCellRender]:
        """Rendered cells (of one layer), by layer, grid, row, col; none in a manifest without the table."""
        if not self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'map_cells'").fetchone():
            return []
        names = [f.name for f in fields(MapCellRender)]
        where, args = ("WHERE layer = ?", (layer,)) if layer else ("", ())
        rows = self._db.execute(f"SELECT {_quoted(names)} FROM map_cells {where} ORDER BY layer, grid, row, col",
                                args).fetchall()
        return [MapCellRender(*(bool(v) if n == "specific" and v is not None else v for n, v in zip(names, row)))
                for row in rows]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class MapCellRender:
    """One rendered cell of an activation atlas (the `map` mode of the manifest). Paths relative to the run."""

    layer: str
    grid: int  # cells a side of its zoom level
    row: int
    col: int
    settings_hash: str  # samples, layout and render settings: a changed hash renders the cell again
    image: str  # PNG
    value: float  # its direction objective on its render
    specific: bool | None  # its render excites its direction more than any other cell's render of its level
    seconds: float
    created: float = 0.0


_MAP_CELLS_SCHEMA = """CREATE TABLE IF NOT EXISTS map_cells (layer TEXT, grid INTEGER, row INTEGER, col INTEGER,
    settings_hash TEXT, image TEXT, value REAL, specific INTEGER, seconds REAL, created REAL,
    PRIMARY KEY (layer, grid, row, col))"""


def _to_sql(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


def _from_row(row: tuple[Any, ...]) -> Render:
    values = dict(zip(_COLUMNS, row))
    values["specific"] = None if values["specific"] is None else bool(values["specific"])
    return Render(**values)


@dataclass
class Run:
    """Everything a reader needs about a run folder."""

    folder: Path
    name: str
    model: dict[str, Any]  # spec, sha256
    layers: list[Layer]  # the conv layers
    modes: list[Mode]
    settings: dict[str, Any]  # render settings, seed, formats ... as the sweep used them
    renders: list[Render] = field(default_factory=list)  # facet 0 of every render: one per key
    info: dict[str, Any] = field(default_factory=dict)  # the whole run.json
    facets: dict[tuple[str, str, int], list[Render]] = field(default_factory=dict)  # key -> all its facets, in
    # order, for keys rendered with more than one
    centre_units: dict[str, CentreUnits] = field(default_factory=dict)  # mode id -> its neuron renders' unit
    planned: dict[str, dict[str, list[int]]] | None = None  # mode id -> layer -> the channels the last sweep's
    # config asked for; None in folders written before it was recorded (then every catalogued channel counts)

    def mode(self, mode_id: str) -> Mode | None:
        return next((mode for mode in self.modes if mode.id == mode_id), None)
    examples: dict[tuple[str, int], list[Example]] = field(default_factory=dict)  # shown top lists, best first
    example_photos: dict[str, PhotoRecord] = field(default_factory=dict)  # photo -> record
    example_meta: dict[str, Any] = field(default_factory=dict)  # folder, top, size, fit, hash, complete ({}: none)
    circuits: Any = None  # atlas.run.circuits.Circuits of the run's weights, or None when it has none
    blocks: list[BlockOutput] = field(default_factory=list)  # the model's block outputs
    classes: list[RunClass] = field(default_factory=list)  # the classes it renders (none in older folders)
    class_count: int = 0  # the classifier's classes (0: the run renders none)

    def layer(self, name: str) -> Layer:
        return find_layer(self.layers, name)

    def any_layer(self, name: str) -> AnyLayer:
        """A conv layer or a block output by name; unknown: one line with suggestions."""
        return find_layer([*self.layers, *self.blocks], name)

    def by_key(self) -> dict[tuple[str, str, int], Render]:
        return {r.key: r for r in self.renders}


def write_run_info(folder: str | Path, name: str, model: dict[str, Any], layers: list[Layer],
                   modes: list[Mode], settings: dict[str, Any], centre_units: dict[str, CentreUnits] | None = None,
                   blocks: list[BlockOutput] | None = None, **extra: Any) -> Path:
    """Write `run.json` atomically; returns its path."""
    info = {"name": name, "model": model, "layers": [layer.to_dict() for layer in layers],
            "modes": [asdict(mode) for mode in modes], "settings": settings, **extra}
    if blocks is not None:
        info[BLOCKS] = [block.to_dict() for block in blocks]
    if centre_units:
        info[CENTRE_UNITS] = {mode: units.to_dict() for mode, units in centre_units.items()}
    return rewrite_run_info(folder, info)


def rewrite_run_info(folder: str | Path, info: dict[str, Any]) -> Path:
    """Write `run.json` from its data as `read_run_info` gives it (e.g. after a pass added to it); returns its path."""
    path = Path(folder) / RUN_FILE
    atomic_write_text(path, json.dumps(info, indent=1, sort_keys=True) + "\n")
    return path


def read_run_info(folder: str | Path) -> dict[str, Any]:
    """A run folder's `run.json` alone (no manifest rows): what a pass needs to know of an existing run, e.g.
    its model; a clear error if the folder is not a run folder or the file is damaged."""
    info_path = Path(folder) / RUN_FILE
    if not info_path.is_file():
        raise UserError(f"{folder} is not an atlas run folder (no {RUN_FILE}); pass the output folder of "
                        "`atlas sweep`, e.g. output/quick")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UserError(f"{info_path} is damaged ({exc}); re-run `atlas sweep` on its config") from None
    missing = [key for key in RUN_KEYS if not isinstance(info, dict) or key not in info]
    if missing:
        raise UserError(f"{info_path} is damaged (no {', '.join(missing)}); re-run `atlas sweep` on its config")
    return info


def read_examples_meta(folder: str | Path) -> dict[str, Any]:
    """The settings of a run folder's recorded dataset examples ({} if none), without reading its renders."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        return {}
    with Manifest(path) as manifest:
        return manifest.example_meta()


def _recorded_objective(info: dict[str, Any], mode: str) -> str:
    """A mode's objective as its render settings in run.json record it (for folders written before modes did)."""
    settings = info.get("settings", {})
    return settings.get("mode_render", {}).get(mode, settings.get("render", {})).get("objective", "channel")


def _planned(recorded: dict[str, dict[str, str]] | None, counts: dict[str, int]
             ) -> dict[str, dict[str, list[int]]] | None:
    """run.json's `planned` selections expanded to channel lists (None if the run did not record them)."""
    if recorded is None:
        return None
    return {mode: {layer: parse_channels(text, counts[layer], layer) for layer, text in layers.items()}
            for mode, layers in recorded.items()}


def read_run(folder: str | Path) -> Run:
    """Read a run folder written by `atlas sweep`; a clear error if it is not one."""
    folder = Path(folder)
    info = read_run_info(folder)
    try:
        layers = [Layer(**layer) for layer in info["layers"]]
        blocks = [BlockOutput(**block) for block in info.get(BLOCKS, [])]
        modes = [Mode(**{"objective": _recorded_objective(info, mode["id"]), **mode}) for mode in info["modes"]]
        centre_units = {mode: CentreUnits.from_dict(units) for mode, units in info.get(CENTRE_UNITS, {}).items()}
        planned = _planned(info.get(PLANNED), {layer.name: layer.channels for layer in [*layers, *blocks]})
        recorded_classes = info.get(CLASSES) or {}
        classes = [RunClass(int(c["index"]), str(c["label"])) for c in recorded_classes.get("list", [])]
    except (ValueError, KeyError, TypeError, AttributeError, UserError) as exc:
        raise UserError(f"{folder / RUN_FILE} is damaged ({exc}); re-run `atlas sweep` on its config") from None
    latest: dict[tuple[str, str, int, int], Render] = {}
    for path in manifest_files(folder):
        with Manifest(path) as manifest:
            for render in manifest.renders():
                if render.facet_key not in latest or render.created >= latest[render.facet_key].created:
                    latest[render.facet_key] = render
    every = sorted(latest.values(), key=lambda r: r.facet_key)
    facets: dict[tuple[str, str, int], list[Render]] = {}
    for render in every:
        facets.setdefault(render.key, []).append(render)
    run = Run(folder=folder, name=info["name"], model=info.get("model", {}), layers=layers, modes=modes,
              settings=info.get("settings", {}), renders=[r for r in every if r.facet == 0], info=info,
              facets={key: found for key, found in facets.items() if len(found) > 1}, centre_units=centre_units,
              planned=planned, blocks=blocks, classes=classes, class_count=int(recorded_classes.get("count", 0)))
    from atlas.run.circuits import read_circuits  # (that module writes through this one's neighbours only)

    run.circuits = read_circuits(folder, run.model.get("sha256", "")) if run.model.get("sha256") else None
    if (folder / MANIFEST_FILE).is_file():
        with Manifest(folder / MANIFEST_FILE) as manifest:
            run.example_meta = manifest.example_meta()
            if not run.example_meta.get("complete", True):  # a pass is under way or was killed: crops may be missing
                return run
            for example in manifest.examples(max_rank=run.example_meta.get("top", 0)):
                run.examples.setdefault((example.layer, example.channel), []).append(example)
            shown = {e.photo for entries in run.examples.values() for e in entries}
            run.example_photos = {p.photo: p for p in manifest.example_photos() if p.photo in shown}
    return run
