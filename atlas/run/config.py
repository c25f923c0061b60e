"""Sweep configs: YAML validated before any work starts, then resolved against the model's catalogue.

Two steps, one way. `load_config(path)` checks the file on its own (keys, types, photos on disk) and gives
a `LoadedConfig`. `atlas.run.plan.resolve_plan` then expands layer globs and channel selections against
the catalogue, once, into the plan every pass over the run works from. Every mistake is one line naming the fix.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from atlas.errors import UserError
from atlas.images import PHOTOS_DIR, SHIPPED_FOLDER, SHIPPED_PHOTOS, photo_credit, photo_path
from atlas.model.catalogue import AnyLayer, BlockOutput, Layer, find_layer, in_order
from atlas.model.classifier import IMAGENET
from atlas.model.selection import check_channels, parse_channels
from atlas.model.source import MODEL_HELP, names_a_path
from atlas.render.settings import ADAM_METHODS, AUTO, RenderSettings, for_network
from atlas.run.manifest import FOURIER_MODE, MACO_MODE, NOISE, Mode
from atlas.run.plans import DEFAULT_BASELINE, IG_STEPS, ZERO_BASELINE
from atlas.shipped import config_name, file_or_shipped, shipped_configs
from atlas.validation import load_yaml, validate

if TYPE_CHECKING:
    from atlas.model.graph import Model

_Strict = ConfigDict(extra="forbid")


class ChannelRule(BaseModel):
    """`{first: N}`, `{every: K}` (optionally with `start`), or both: every K-th of the first N."""

    model_config = _Strict
    first: int | None = Field(default=None, ge=1)
    every: int | None = Field(default=None, ge=1)
    start: int = Field(default=0, ge=0)


Channels = Union[Literal["all"], int, str, list[int], ChannelRule]
Classes = Union[Literal["all"], str, list[Union[int, str]]]  # names or indices of the classifier's classes


class PhotoSpec(BaseModel):
    """A base photo: a shipped name (`chelsea`) or a path, with an optional short name and credit."""

    model_config = _Strict
    path: str
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
    credit: str | None = None

    @property
    def short_name(self) -> str:
        return self.name or Path(self.path).stem


class ImageFormat(BaseModel):
    """One derived image: its long side in pixels, format and quality."""

    model_config = _Strict
    size: int = Field(ge=16, le=4096)
    format: Literal["jpg", "webp", "png"] = "jpg"
    quality: int = Field(default=85, ge=1, le=100)


class Formats(BaseModel):
    """The images written for each render besides the lossless PNG master."""

    model_config = _Strict
    web: ImageFormat = ImageFormat(size=448, format="jpg", quality=88)
    thumb: ImageFormat = ImageFormat(size=112, format="jpg", quality=80)


class ExamplesConfig(BaseModel):
    """Dataset examples: the photos of `folder` (or the built-in `probes`) that excite each channel most."""

    model_config = _Strict
    folder: str
    top: int = Field(default=9, ge=1, le=100)
    size: int = Field(default=224, ge=32, le=2048)
    fit: Literal["crop", "whole"] = "crop"
    batch_size: int = Field(default=16, ge=1)


class CircuitsConfig(BaseModel):
    """Circuits: every unit's strongest inputs and outputs (expanded weights), stored in the run folder."""

    model_config = _Strict
    top: int = Field(default=10, ge=1, le=100)  # excitatory and inhibitory edges kept per unit, each way
    batch_size: int = Field(default=32, ge=1)  # target channels per gradient


_D = RenderSettings()  # one source of truth for the defaults


class ExplainConfig(BaseModel):
    """Per-photo explanations: for each photo of `folder` at each of `layers`, the semantic dictionary, spatial and
    channel attribution to the top `classes`, and `groups` neuron groups (atlas.analysis.explain; docs/explain.md)."""

    model_config = _Strict
    folder: str
    layers: list[str] | None = Field(default=None, min_length=1)  # None: the model's default (atlas.run.plan)
    classes: int = Field(default=5, ge=0, le=100)  # top classes attributed
    groups: int = Field(default=6, ge=1, le=32)  # neuron groups (NMF components)
    top: int = Field(default=6, ge=1, le=64)  # channels per position in the dictionary
    size: int = Field(default=224, ge=32, le=2048)  # the photo's centred square in the network's input
    batch_size: int = Field(default=8, ge=1)  # photos per forward and backward pass
    baseline: str = Field(default=DEFAULT_BASELINE, min_length=1)  # zero, or a folder of photos (`photos`)
    ig_steps: int = Field(default=IG_STEPS, ge=0, le=1024)  # integrated gradients' steps; 0: the gradient at a photo
    between: bool = False  # also the attribution between consecutive layers (15 times the cost of the rest)
    render: bool = True  # false: the arrays only (no group renders, no missing channel renders)

    @field_validator("layers", mode="after")
    @classmethod
    def _layers(cls, layers: list[str] | None) -> list[str] | None:
        if layers is not None and len(set(layers)) != len(layers):
            raise ValueError("lists a layer twice")
        return layers


class MapConfig(BaseModel):
    """Activation atlases: `layers`' activations over the photos of `folder` (or `probes`), laid out by UMAP,
    gridded at each `grid` (cells a side), every kept cell rendered (atlas.analysis.maps; docs/maps.md)."""

    model_config = _Strict
    folder: str
    layers: list[str] = Field(default_factory=lambda: ["mixed3b", "mixed4c", "mixed5b"], min_length=1)
    samples: int = Field(default=100_000, ge=2)  # per layer, at most
    per_photo: int = Field(default=50, ge=1)  # positions per photo and layer
    grid: Annotated[int, Field(ge=1, le=400)] | list[Annotated[int, Field(ge=1, le=400)]] = Field(
        default_factory=lambda: [10, 20])
    min_samples: int = Field(default=5, ge=1)  # a cell with fewer is dropped
    neighbours: int = Field(default=50, ge=2)  # UMAP n_neighbors
    min_dist: float = Field(default=0.05, ge=0)  # UMAP min_dist
    metric: str = "cosine"  # UMAP metric
    size: int = Field(default=224, ge=32, le=2048)  # photos' shorter side in the network's input
    batch_size: int = Field(default=16, ge=1)  # photos per forward pass
    crops: int = Field(default=4, ge=0, le=16)  # photo crops shown per cell
    method: Literal["deepdream", "fourier"] = "deepdream"  # how cells are rendered
    render_size: int | None = Field(default=None, ge=32, le=1024)  # cells' side in pixels (default 96)
    steps: int | None = Field(default=None, ge=1, le=10000)  # deepdream: per octave (12); fourier: Adam (256)
    octaves: int | None = Field(default=None, ge=1, le=12)  # deepdream (2)
    power: float = Field(default=3.0, ge=0)  # of the cosine in the direction objective (docs/maps.md)
    render: bool = True  # false: sample and lay out only

    @field_validator("grid", mode="after")
    @classmethod
    def _grids(cls, grid: int | list[int]) -> list[int]:
        grids = [grid] if isinstance(grid, int) else list(grid)
        if not grids or len(set(grids)) != len(grids):
            raise ValueError("give one or more different sizes, e.g. [10, 20, 40]")
        return sorted(grids)


class RenderConfig(BaseModel):
    """The render settings a config may set (see atlas.render.settings.RenderSettings), with their ranges."""

    model_config = _Strict
    objective: Literal["channel", "negative", "neuron"] = "channel"
    # fourier or maco: the run's one noise-started mode is `fourier` or `maco`; auto: for the network (resolved in
    # the plan, `SweepConfig.for_network`: fourier on trained weights when modes: is not given, else deepdream)
    method: Literal["auto", "deepdream", "fourier", "maco"] = AUTO
    # how DeepDream renders from noise are saved: raw | visstd (the raw pixels kept beside); auto: for the network
    display: Literal["auto", "raw", "visstd"] = AUTO
    size: int = Field(default=_D.size, ge=32, le=4096)
    octaves: int = Field(default=_D.octaves, ge=1, le=12)
    octave_scale: float = Field(default=_D.octave_scale, ge=1.0, le=4.0)
    steps: int | None = Field(default=None, ge=1, le=10000)  # of `method`; default 10 per octave, or 512
    step_size: float = Field(default=_D.step_size, gt=0)
    noise: float = Field(default=_D.noise, ge=0)
    jitter: int = Field(default=_D.jitter, ge=0)
    laplacian_levels: int = Field(default=_D.laplacian_levels, ge=1, le=8)
    photo_octaves: int = Field(default=_D.photo_octaves, ge=1, le=12)
    photo_octave_scale: float = Field(default=_D.photo_octave_scale, ge=1.0, le=4.0)
    photo_steps: int = Field(default=_D.photo_steps, ge=1, le=1000)
    photo_step_size: float = Field(default=_D.photo_step_size, gt=0)
    photo_size: int | None = Field(default=None, ge=32, le=16384)  # longest side of a base photo; None: as it is
    tile: int = Field(default=_D.tile, ge=64)
    precision: Literal["float32", "bfloat16", "auto"] = "float32"  # auto: see atlas.render.settings.choose_precision
    learning_rate: float | None = Field(default=None, gt=0)  # Adam's (fourier, maco); None: the method's default
    spectrum_std: float = Field(default=_D.spectrum_std, gt=0)  # fourier
    diversity_weight: float = Field(default=_D.diversity_weight, ge=0)


class FourierConfig(BaseModel):
    """Settings of the `fourier` mode when the run also has DeepDream modes (`render:` holds theirs)."""

    model_config = _Strict
    steps: int | None = Field(default=None, ge=1, le=10000)
    learning_rate: float | None = Field(default=None, gt=0)
    spectrum_std: float | None = Field(default=None, gt=0)


class ModelConfig(BaseModel):
    """`model: {path: ..., preprocess: ..., labels: ..., logits: ...}`: a model (anything --model takes), how its
    input is made from RGB pixels 0..255 (a scheme name such as caffe, or {mean, std, bgr}; docs/own-model.md), the
    names of its classes (`imagenet`, or a file with one name a line) and the node holding its classifier's logits
    (as --logits), each optional."""

    model_config = _Strict
    path: str
    preprocess: Union[str, dict[str, Any], None] = None
    labels: str | None = Field(default=None, min_length=1)
    logits: str | None = Field(default=None, min_length=1)


KEYWORDS = ("all", "blocks")  # in `layers:`: every conv layer; every block output


class SweepConfig(BaseModel):
    """A whole sweep: which layers and channels, from what, with which settings, written where."""

    model_config = _Strict
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    model: Union[str, ModelConfig] = "inception5h"  # a --model value, or {path, preprocess}
    layers: Union[Literal["all"], list[str], str] = "all"  # KEYWORDS, names or patterns (select_layers)
    channels: Channels = "all"
    classes: Classes | None = None  # also class visualisations (the logits) in every noise-started mode
    modes: list[Literal["noise", "fourier", "photo"]] = Field(default_factory=lambda: ["noise"], min_length=1)
    photos: list[Union[str, PhotoSpec]] = Field(default_factory=list)
    layer_dreams: bool = False  # also one whole-layer DeepDream per layer and photo
    render: RenderConfig = RenderConfig()
    fourier: FourierConfig | None = None  # the fourier mode's own settings, beside DeepDream modes
    diversity: int = Field(default=1, ge=1, le=16)  # facets per channel in the noise and fourier modes
    seed: int = 0
    output: str = "output"
    formats: Formats = Formats()
    batch_size: int | None = Field(default=None, ge=1)
    workers: int | Literal["auto"] = "auto"
    gpus: list[Annotated[int, Field(ge=0)]] | None = None  # GPU ids as nvidia-smi numbers them; None: all; []: none
    examples: ExamplesConfig | None = None  # also find each channel's dataset examples
    map: MapConfig | None = None  # also make activation atlases of some layers
    explain: ExplainConfig | None = None  # also explain each photo of a folder (dictionary, attribution, groups)
    circuits: Union[bool, CircuitsConfig] = True  # also every unit's circuit: true, false or {top: N}

    @property
    def model_spec(self) -> str:
        """The model as --model takes it."""
        return self.model if isinstance(self.model, str) else self.model.path

    @property
    def model_preprocess(self) -> str | dict[str, Any] | None:
        """The config's preprocessing of the model's input, if it gives one."""
        return None if isinstance(self.model, str) else self.model.preprocess

    @property
    def model_labels(self) -> str | None:
        """The config's names of the model's classes, if it gives them."""
        return None if isinstance(self.model, str) else self.model.labels

    @property
    def model_logits(self) -> str | None:
        """The node the config names as the classifier's logits, if it names one."""
        return None if isinstance(self.model, str) else self.model.logits

    def load_model(self) -> Model:
        """The config's model with its preprocessing, labels and logits (`atlas.model.graph.load_model`)."""
        from atlas.model.graph import load_model

        return load_model(self.model_spec, self.model_preprocess, labels=self.model_labels, logits=self.model_logits)

    @field_validator("photos", mode="after")
    @classmethod
    def _photo_specs(cls, photos: list[str | PhotoSpec]) -> list[PhotoSpec]:
        return [p if isinstance(p, PhotoSpec) else PhotoSpec(path=p) for p in photos]

    @model_validator(mode="after")
    def _modes_need_photos(self) -> SweepConfig:
        if "photo" in self.modes and not self.photos:
            raise ValueError("mode 'photo' needs at least one entry under photos: (e.g. photos: [chelsea])")
        if self.photos and "photo" not in self.modes:
            raise ValueError("photos are listed but modes has no 'photo'; add it (modes: [noise, photo])")
        names = [p.short_name for p in self.photos]
        if len(set(names)) != len(names):
            raise ValueError(f"two photos share the name {sorted(n for n in names if names.count(n) > 1)[0]}; "
                             "give one a name: key")
        if isinstance(self.workers, int) and self.workers < 1:
            raise ValueError("workers must be at least 1, or auto")
        method = self.render.method
        if method in ADAM_METHODS and "modes" in self.model_fields_set and set(self.modes) != {FOURIER_MODE}:
            raise ValueError(f"render.method {method} makes render: the settings of the {method} mode alone; to "
                             "render DeepDream modes too, keep method deepdream, list modes: [noise, fourier] "
                             "and put the fourier settings under fourier:")
        if self.fourier is not None and (method in ADAM_METHODS or FOURIER_MODE not in self.modes):
            raise ValueError("fourier: sets the fourier mode beside DeepDream modes; add fourier to modes, or "
                             "write its settings under render: with method: fourier when it is the only mode")
        return self

    def mode_names(self) -> list[str]:
        """The modes asked for: `render.method: fourier` (or `maco`) alone means the fourier (maco) mode; `auto` must
        be resolved first (`for_network`)."""
        method = self.render.method
        if method == AUTO:
            raise ValueError("resolve render.method auto first (SweepConfig.for_network)")
        if method in ADAM_METHODS:
            return [{"fourier": FOURIER_MODE, "maco": MACO_MODE}[method]]
        return list(dict.fromkeys(self.modes))

    def for_network(self, trained: bool) -> SweepConfig:
        """The config with `render.method` and `render.display` `auto` made what they mean for a network with trained
        or random weights (`atlas.render.settings.for_network`). The method: on trained weights fourier when the
        config lists no modes (its one noise-started mode becomes the fourier mode), deepdream when it lists some
        (they name DeepDream modes); on random weights (the stand-in) deepdream."""
        method, display = self.render.method, self.render.display
        if method == AUTO and trained and "modes" in self.model_fields_set:
            method = "deepdream"
        chosen = for_network(trained, method, display)
        return self.model_copy(update={"render": self.render.model_copy(update=chosen)})

    def settings(self, method: str | None = None, facets: int = 1) -> RenderSettings:
        """The render settings of modes of `method` (default: `render.method`); `render:` holds those of its
        method, the `fourier:` block those of the fourier mode beside DeepDream modes."""
        values = self.render.model_dump()
        if values["method"] == AUTO or values["display"] == AUTO:
            raise ValueError("resolve render.method and render.display auto first (SweepConfig.for_network)")
        if method is not None and method != values["method"]:
            values.update(method=method, steps=None)  # the other method's steps mean something else
            values.update(self.fourier.model_dump(exclude_none=True) if self.fourier else {})
        return RenderSettings(**values, diversity=facets, batch_size=self.batch_size)


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config and where it came from."""

    path: Path
    config: SweepConfig
    name: str  # the run's name: `name:` or the file's stem
    run_folder: Path
    photos: dict[str, Path]  # short name -> file
    examples_folder: str | None = None  # `examples.folder` as found on disk (or "probes")
    map_folder: str | None = None  # `map.folder` as found on disk (or "probes")
    explain_folder: str | None = None  # `explain.folder` as found on disk

    def for_network(self, trained: bool) -> LoadedConfig:
        """This config with `auto` resolved for a network with trained or random weights (`SweepConfig.for_network`)."""
        return replace(self, config=self.config.for_network(trained))

    def modes(self) -> list[Mode]:
        """The run's modes, with photo credits and the objective: noise and fourier first, then each photo."""
        names, facets, objective = self.config.mode_names(), self.config.diversity, self.config.render.objective
        modes = [Mode.noise(facets, objective)] if NOISE in names else []
        modes += [Mode.fourier(facets, objective)] if FOURIER_MODE in names else []
        modes += [Mode.maco(facets, objective)] if MACO_MODE in names else []
        for spec in self.config.photos:
            file = self.photos[spec.short_name]
            credit = spec.credit or photo_credit(spec.path)
            modes.append(Mode.for_photo(spec.short_name, f"photos/{spec.short_name}{file.suffix.lower()}", credit,
                                        objective))
        return modes


def load_config(path: str | Path) -> LoadedConfig:
    """Read and validate a sweep config (a file, or the name of a shipped one); photos must exist and be
    readable."""
    from atlas.images import load_photo

    path = file_or_shipped(path, shipped_configs(), "config")
    config = validate(SweepConfig, load_yaml(path), str(path))
    if config_name(path) == str(path):  # a config file; a shipped one (by name) has no files beside it
        config = _model_beside(config, path)
    name = config.name or path.stem
    base = Path(config.output)
    if not base.is_absolute():
        base = Path(os.getcwd()) / base
    photos: dict[str, Path] = {}
    for spec in config.photos:
        where = spec.path if spec.path in SHIPPED_PHOTOS else str(_relative_to(path, spec.path))
        try:
            photos[spec.short_name] = photo_path(where)
            load_photo(photos[spec.short_name])
        except UserError as exc:
            raise UserError(f"{path}: photos: {exc}") from None
    examples_folder = None
    if config.examples:
        examples_folder = examples_folder_of(config.examples.folder, path)
    map_folder = examples_folder_of(config.map.folder, path, "map") if config.map else None
    explain_folder = explain_path_of(config.explain.folder, path) if config.explain else None
    if config.explain:
        baseline = baseline_of(config.explain.baseline, path)
        config = config.model_copy(update={"explain": config.explain.model_copy(update={"baseline": baseline})})
    return LoadedConfig(path=path, config=config, name=name, run_folder=base / name, photos=photos,
                        examples_folder=examples_folder, map_folder=map_folder, explain_folder=explain_folder)


def _model_beside(config: SweepConfig, config_path: Path) -> SweepConfig:
    """The config with its model's path (`model: my_net.keras` or `model: {path: ...}`) and label file made
    absolute, a relative one starting at the config file's folder; inception5h, synthetic, keras:NAME and the
    zoo's names (and labels: imagenet) stay as they are."""
    labels = config.model_labels
    if labels is not None and labels != IMAGENET:
        where = _relative_to(config_path, labels)
        config = config.model_copy(update={"model": config.model.model_copy(update={"labels": str(where)})})
    given = config.model_spec
    if not names_a_path(given):
        return config
    where = Path(os.path.abspath(config_path.parent / Path(given.strip()).expanduser()))
    if not where.exists():
        raise UserError(f"{config_path}: model: {given}: no such file or folder {where} (a relative path starts at "
                        f"the config's folder); give {MODEL_HELP}")
    model = str(where) if isinstance(config.model, str) else config.model.model_copy(update={"path": str(where)})
    return config.model_copy(update={"model": model})


def examples_folder_of(folder: str, config_path: Path | None = None, key: str = "examples") -> str:
    """An examples folder as given (in a config: relative to the current folder, else to the config), checked
    to exist; `probes` is the built-in set."""
    from atlas.probes import PROBES

    if folder == PROBES:
        return folder
    return _on_disk(folder, config_path, key, f"folder {folder}: no such folder; give a folder of photos, `photos` "
                    "for the shipped ones, or `probes` for the built-in teaching probes", {SHIPPED_FOLDER: PHOTOS_DIR})


def explain_path_of(photo: str, config_path: Path | None = None) -> str:
    """A photo or folder of photos to explain as given (in a config: relative to the current folder, else to the
    config), checked to exist."""
    shipped = {SHIPPED_FOLDER: PHOTOS_DIR, **{name: photo_path(name) for name in SHIPPED_PHOTOS}}
    return _on_disk(photo, config_path, "explain", f"{photo}: no such photo or folder; give photo files or folders "
                    "of photos, `photos` for the shipped ones, or a shipped photo's name (chelsea)", shipped,
                    folder=False)


def baseline_of(baseline: str, config_path: Path | None = None) -> str:
    """An explain baseline as given: `zero` as it is, else a folder of photos (in a config: relative to the current
    folder, else to the config), checked to exist and made absolute; `photos`, the shipped ones' folder, stays
    `photos`."""
    if baseline == ZERO_BASELINE:
        return baseline
    found = _on_disk(baseline, config_path, "explain", f"baseline {baseline}: no such folder; give {ZERO_BASELINE}, "
                     "`photos` for the shipped photos, or a folder of photos whose mean activation is the baseline",
                     {SHIPPED_FOLDER: PHOTOS_DIR})
    return SHIPPED_FOLDER if Path(found) == PHOTOS_DIR else found


def _on_disk(given: str, config_path: Path | None, key: str, problem: str, shipped: dict[str, Path],
             folder: bool = True) -> str:
    """A path as given (in a config: relative to the current folder, else to the config), made absolute; a name of
    `shipped` where nothing is at that path is its shipped file or folder; when no folder (or with `folder` False,
    nothing) is there, one line: the config and its `key`, and `problem`."""
    where = _relative_to(config_path, given) if config_path else Path(given).expanduser()
    if not where.exists() and given in shipped:
        return str(shipped[given])
    if not (where.is_dir() if folder else where.exists()):
        raise UserError((f"{config_path}: {key}: " if config_path else "") + problem)
    return str(where.resolve())


def _relative_to(config_path: Path, photo: str) -> Path:
    """A photo path as written in a config: absolute, or relative to the current folder if it exists
    there, else relative to the config file."""
    candidate = Path(photo).expanduser()
    if candidate.is_absolute() or candidate.exists():
        return candidate
    return config_path.parent / candidate


def select_layers(selection: str | list[str], layers: list[Layer], blocks: Sequence[BlockOutput] = ()
                  ) -> list[AnyLayer]:
    """`all` (every conv layer), `blocks` (every block output), names or glob patterns (`mixed4*_pre_relu`) of
    conv layers and block outputs, kept in catalogue order (low to high, each block output after the conv layer it
    follows)."""
    every = in_order([*layers, *blocks])
    chosen: set[str] = set()
    for pattern in [selection] if isinstance(selection, str) else selection:
        if pattern == "blocks" and not blocks:
            raise UserError("layers: blocks: this model has no block outputs (where branches merge); run "
                            "`atlas layers` to list its layers")
        if pattern in KEYWORDS:
            chosen.update(layer.name for layer in (layers if pattern == "all" else blocks))
        elif any(ch in pattern for ch in "*?["):
            matched = [layer.name for layer in every if fnmatch.fnmatchcase(layer.name, pattern)]
            if not matched:
                raise UserError(f"layers: pattern '{pattern}' matches no layer; run `atlas layers` to list them")
            chosen.update(matched)
        else:
            try:
                chosen.add(find_layer(every, pattern).name)
            except UserError as exc:
                raise UserError(f"layers: {exc}") from None
    return [layer for layer in every if layer.name in chosen]


def select_channels(rule: Any, layer: AnyLayer) -> list[int]:
    """Expand a channel rule for one layer; a listed channel beyond its count names the layer and count."""
    if rule == "all":
        return list(range(layer.channels))
    if isinstance(rule, bool):
        raise UserError("channels: use all, a number N (the first N), a list, a range string or {every: K}")
    if isinstance(rule, int):
        if rule < 1:
            raise UserError("channels: a number means the first N channels and must be at least 1")
        return list(range(min(rule, layer.channels)))
    if isinstance(rule, str):
        return parse_channels(rule, layer.channels, layer.name)
    if isinstance(rule, list):
        check_channels(rule, layer.channels, layer.name)
        return list(dict.fromkeys(rule))
    first = min(rule.first or layer.channels, layer.channels)
    return list(range(rule.start, first, rule.every or 1))
