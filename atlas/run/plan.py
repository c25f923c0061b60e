"""A config resolved once into a plan: the layers, channels, modes, settings hashes and work of a run.

`resolve_plan(loaded, model, shard)` is the only place that turns a config into work. The sweep, the dry run
and the other passes over a run folder take the plan as plain data (the passes' own plans are in
`atlas.run.plans`, which imports no pass) and never re-read the config; what is
already done is a question for the run folder (`pending`), asked after the plan is made.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from atlas.errors import UserError
from atlas.model.catalogue import AnyLayer, BlockOutput, Layer, centre_unit_box
from atlas.model.selection import WHOLE_LAYER, format_channels
from atlas.render import devices
from atlas.render.devices import Device
from atlas.render.settings import CLASS, RenderSettings
from atlas.run.config import LoadedConfig, baseline_of, examples_folder_of, select_channels, select_layers
from atlas.run.layout import Layout, resolve_cluster_layout, resolve_layout
from atlas.run.manifest import CLASS_LAYER, NOISE, CentreUnits, Mode, image_paths, recorded_hashes
from atlas.run.plans import (
    CircuitsPlan,
    ClassesPlan,
    ClassPhotosPlan,
    ExamplesPlan,
    ExplainPlan,
    MapPlan,
    default_cell_settings,
)
from atlas.shipped import config_name
from atlas.validation import validate


@dataclass(frozen=True)
class WorkItem:
    """One render to do."""

    mode: str  # Mode.id
    layer: str  # CLASS_LAYER for a class visualisation
    channel: int  # WHOLE_LAYER for a whole-layer dream; the class index of a class visualisation


@dataclass(frozen=True)
class Batch:
    """Channels of one layer and mode rendered in one pass."""

    mode: str
    layer: str
    channels: tuple[int, ...]


@dataclass(frozen=True)
class RunPlan:
    """Everything a run needs from its config and model, resolved once."""

    name: str
    folder: Path
    config_path: Path
    config: str  # what run.json records of the config: a shipped one's name (`demo`), else its path
    model_spec: str
    model_sha256: str
    catalogue: list[Layer]  # every conv layer of the model, low to high (run.json lists them all)
    modes: list[Mode]
    settings: RenderSettings
    seed: int
    formats: dict[str, dict[str, Any]]
    layer_dreams: bool
    photos: dict[str, Path]  # mode id -> base photo file, for photo modes
    hashes: dict[str, str]  # mode id -> settings hash
    items: list[WorkItem]  # everything this shard owns, in order
    shard: tuple[int, int] | None
    layout: Layout  # the worker processes, their devices and batch sizes, the precision (settings has it too)
    mode_settings: dict[str, RenderSettings] = field(default_factory=dict)  # mode id -> its settings (method,
    # steps, facets), where they differ from `settings`
    examples: ExamplesPlan | None = None  # the dataset-examples pass, if the config or command line asks
    map: MapPlan | None = None  # the activation-atlas pass, if the config or command line asks
    explain: ExplainPlan | None = None  # the per-photo explanations, if the config or command line asks
    circuits: CircuitsPlan | None = None  # the circuits pass, if the config asks (it does by default)
    centre_units: dict[str, CentreUnits] = field(default_factory=dict)  # noise mode id -> where the unit of its
    # `neuron` renders sits in every layer (none for other objectives)
    planned: dict[str, dict[str, str]] = field(default_factory=dict)  # mode id -> layer -> the channels the
    # config asks for, as a selection ("0-15,20"), over every shard: what the site counts as missing
    model_preprocess: dict[str, Any] = field(default_factory=dict)  # how pixels become the model's input
    model_labels: str | None = None  # the names of its classes: imagenet or a label file (ModelSource.labels)
    model_logits: str | None = None  # the node it names as its classifier's logits (ModelSource.logits)
    blocks: list[BlockOutput] = field(default_factory=list)  # every block output of the model (run.json: `blocks`)
    classes: ClassesPlan | None = None  # the class visualisations, if the config asks (`classes:`)
    class_photos: ClassPhotosPlan | None = None  # the examples folder's photos scored per class (classes and examples)

    def settings_for(self, mode: str) -> RenderSettings:
        """The render settings of one mode."""
        return self.mode_settings.get(mode, self.settings)

    def hash_of(self, mode: str, layer: str) -> str:
        """The settings hash of a render of `layer` in `mode`: the mode's, or its class renders' for CLASS_LAYER."""
        return class_or_mode_hash(self.hashes, self.classes.hashes if self.classes else {}, mode, layer)

    def node(self, layer: str) -> str:
        """The model's node a render of `layer` climbs: the logits for CLASS_LAYER, else the layer."""
        return self.classes.logits if layer == CLASS_LAYER and self.classes else layer

    def facets(self, mode: str) -> int:
        """Images per channel in `mode`."""
        return self.settings_for(mode).diversity

    @property
    def web_ext(self) -> str:
        return self.formats["web"]["format"]

    @property
    def thumb_ext(self) -> str:
        return self.formats["thumb"]["format"]

    def run_settings(self) -> dict[str, Any]:
        """The settings block of run.json."""
        info = {"render": self.settings.pixel_dict(), "seed": self.seed, "formats": self.formats,
                "layer_dreams": self.layer_dreams, "config": self.config}
        if self.mode_settings:
            info["mode_render"] = {mode: settings.pixel_dict() for mode, settings in self.mode_settings.items()}
        return info


def class_or_mode_hash(hashes: dict[str, str], class_hashes: dict[str, str], mode: str, layer: str) -> str:
    """The settings hash of a render of `layer` in `mode` (`class_hashes` for CLASS_LAYER, else `hashes`)."""
    return class_hashes[mode] if layer == CLASS_LAYER else hashes[mode]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """`K/N` with 1 <= K <= N, or None."""
    if text is None:
        return None
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text}: write K/N, e.g. 3/8 for the third of eight slices") from None
    if not 1 <= k <= n:
        raise UserError(f"--shard {text}: K must be between 1 and N")
    return k, n


def shard_items(items: list[WorkItem], shard: tuple[int, int] | None) -> list[WorkItem]:
    """A deterministic slice: item i belongs to shard (i mod N) + 1, so slices are disjoint, their union is
    everything, and every slice gets a share of every layer (the costly high layers too)."""
    if shard is None:
        return items
    k, n = shard
    return [item for i, item in enumerate(items) if i % n == k - 1]


def settings_hash(model_sha: str, settings: RenderSettings, seed: int, photo: Path | None,
                  formats: dict[str, Any]) -> str:
    """Hash of everything that affects a render's files: weights (and preprocessing: `Model.render_key`), pixel
    settings, seed, photo, formats."""
    photo_sha = hashlib.sha256(photo.read_bytes()).hexdigest() if photo else None
    blob = json.dumps({"model": model_sha, "render": settings.pixel_dict(), "seed": seed, "photo": photo_sha,
                       "formats": formats}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def centre_units(model: Any, size: int) -> CentreUnits:
    """The receptive-field box of every layer's and block output's centre unit (the one `neuron` maximises) on
    size x size images."""
    grids = model.grids(size, size)
    return CentreUnits(size, size, {layer.name: centre_unit_box(grids[layer.name], layer.receptive_field, size, size)
                                    for layer in model.all_layers})


def planned_channels(work: list[WorkItem]) -> dict[str, dict[str, str]]:
    """Each mode's asked-for channels per layer, as selections (whole-layer dreams left out)."""
    planned: dict[str, dict[str, list[int]]] = {}
    for item in work:
        if item.channel != WHOLE_LAYER and item.layer != CLASS_LAYER:  # classes: run.json's `classes`
            planned.setdefault(item.mode, {}).setdefault(item.layer, []).append(item.channel)
    return {mode: {layer: format_channels(channels) for layer, channels in layers.items()}
            for mode, layers in planned.items()}


def resolve_work(loaded: LoadedConfig, layers: list[AnyLayer], modes: list[Mode]) -> list[WorkItem]:
    """Everything the config asks for of the selected `layers` (conv layers and block outputs, low to high), each
    layer's modes together, channels ascending."""
    config = loaded.config
    items = []
    for layer in layers:
        channels = select_channels(config.channels, layer)
        for mode in modes:
            items.extend(WorkItem(mode.id, layer.name, c) for c in channels)
            if config.layer_dreams and mode.kind == "photo":
                items.append(WorkItem(mode.id, layer.name, WHOLE_LAYER))
    return items


def class_items(classes: ClassesPlan | None) -> list[WorkItem]:
    """The class visualisations to do: each noise-started mode's classes together, as asked."""
    if classes is None:
        return []
    return [WorkItem(mode, CLASS_LAYER, index) for mode in classes.modes for index in classes.indices]


def class_text(given: Any) -> str:
    """A config's `classes:` (all, a comma-separated string, or a list of names and indices) as `--class` text."""
    if isinstance(given, list):
        return ",".join(str(part) for part in given)
    return str(given)


def resolve_classes(given: Any, model: Any, modes: list[Mode], settings: dict[str, RenderSettings], seed: int,
                    formats: dict[str, Any]) -> ClassesPlan:
    """The config's `classes:` resolved against the model's labels (`atlas.render.classes.parse_classes`), rendered in
    every noise-started mode with its settings and the `class` objective; one line naming the fix otherwise."""
    from atlas.render.classes import labels, logits_layer, parse_classes

    noise = [mode.id for mode in modes if mode.kind == NOISE]
    if not noise:
        raise UserError("classes: class visualisations start from noise; add a noise-started mode (modes: [noise, "
                        "photo]) or remove classes:")
    try:
        node = logits_layer(model)
        names = labels(model)
        indices = parse_classes(class_text(given), names)
    except UserError as exc:
        raise UserError(f"classes: {str(exc).removeprefix('--class ').removeprefix('--class: ')}") from None
    hashes = {mode: settings_hash(model.render_key, replace(settings[mode], objective=CLASS), seed, None, formats)
              for mode in noise}
    return ClassesPlan(indices=tuple(indices), labels=tuple(names[i] for i in indices), count=len(names),
                       logits=node, modes=tuple(noise), hashes=hashes)


def resolve_examples(folder: str, layers: list[AnyLayer], top: int | None = None, size: int | None = None,
                     fit: str | None = None, batch_size: int | None = None) -> ExamplesPlan:
    """The examples pass over `folder` (checked to exist, or `probes`) for `layers`; None picks the default."""
    from atlas.run.config import ExamplesConfig

    given = {k: v for k, v in {"top": top, "size": size, "fit": fit, "batch_size": batch_size}.items()
             if v is not None}
    spec = validate(ExamplesConfig, {"folder": folder, **given}, "examples")
    return ExamplesPlan(folder=folder, top=spec.top, size=spec.size, fit=spec.fit,
                        layers=tuple(layer.name for layer in layers), batch_size=spec.batch_size)


def resolve_map(folder: str, model: Any, seed: int = 0, **given: Any) -> MapPlan:
    """The map pass over `folder` (checked to exist, or `probes`): `given` holds MapConfig fields (None or left
    out: the default); layers are checked against the model (catalogued layers or block outputs)."""
    from atlas.run.config import MapConfig

    spec = validate(MapConfig, {"folder": folder, **{k: v for k, v in given.items() if v is not None}}, "map")
    layers = tuple(spec.layers)  # by the names given: a Keras block output's folder is maps/res_out, not its node
    if len({model.tensor_name(name) for name in layers}) != len(layers):
        raise UserError(f"map: layers lists a layer twice ({', '.join(spec.layers)})")
    cell = default_cell_settings(spec.method)
    overrides = {"size": spec.render_size, "steps": spec.steps, "octaves": spec.octaves}
    cell = replace(cell, **{k: v for k, v in overrides.items() if v is not None})
    return MapPlan(folder=folder, layers=layers, samples=spec.samples, per_photo=spec.per_photo,
                   grids=tuple(spec.grid), min_samples=spec.min_samples, neighbours=spec.neighbours,
                   min_dist=spec.min_dist, metric=spec.metric, seed=seed, size=spec.size,
                   batch_size=spec.batch_size, crops=spec.crops, power=spec.power, render=cell,
                   render_cells=spec.render)




def layer_depth(model: Any, name: str) -> int:
    """Convolutions on the longest path from the input to `name` (a catalogued layer or block output); -1 for any
    other activation node (kept where it was given)."""
    block = next((b for b in model.blocks if b.name == name), None)
    if block is not None:
        return block.depth
    found = next((layer for layer in model.layers if name in (layer.name, layer.op)), None)
    return found.depth if found is not None else -1


GOOGLENET_EXPLAIN = ("mixed4a", "mixed4d")  # the article's layers, GoogLeNet's default
EXPLAIN_DEPTHS = (0.4, 0.7)  # any other model's: the units nearest these fractions of its depth (docs/explain.md)


def default_explain_layers(model: Any) -> tuple[str, ...]:
    """The layers a model is explained at by default: GoogLeNet's `mixed4a mixed4d` (the article's); for any other
    model, the unit nearest each fraction of EXPLAIN_DEPTHS of the deepest catalogued layer's depth (convolutions
    from the input; ties: the deeper), among its block outputs (its concats and residual sums) when it has at
    least two, else among its catalogued layers. On GoogLeNet the rule picks mixed4a and mixed4d too (9 and 15 of
    21)."""
    names = {block.name for block in model.blocks}
    if set(GOOGLENET_EXPLAIN) <= names:
        return GOOGLENET_EXPLAIN
    units = [(b.depth, b.name) for b in model.blocks] if len(model.blocks) >= len(EXPLAIN_DEPTHS) else \
        [(layer.depth, layer.name) for layer in model.layers]
    deepest = max(layer.depth for layer in model.layers)
    chosen = [min(units, key=lambda unit: (abs(unit[0] - fraction * deepest), -unit[0]))[1]
              for fraction in EXPLAIN_DEPTHS]
    return tuple(dict.fromkeys(chosen))


def resolve_explain(photos: list[str] | tuple[str, ...], model: Any, seed: int = 0, **given: Any) -> ExplainPlan:
    """The explain pass over `photos` (files and folders, checked to exist): `given` holds ExplainConfig fields
    (None or left out: the default); layers are checked against the model (catalogued layers or block outputs,
    a mistyped one is one line with suggestions; left out: `default_explain_layers`) and ordered low to high; a
    baseline folder is checked to exist (relative to the current folder)."""
    from atlas.run.config import ExplainConfig, explain_path_of

    if not photos:
        raise UserError("explain: no photo given; name photo files or folders of photos, e.g. "
                        "`atlas explain dog.jpg photos/ -o output/quick --layer mixed4d`")
    found = tuple(dict.fromkeys(explain_path_of(photo) for photo in photos))
    spec = validate(ExplainConfig, {"folder": found[0], **{k: v for k, v in given.items() if v is not None}},
                    "explain")
    chosen = spec.layers or list(default_explain_layers(model))
    tensors = [model.tensor_name(name) for name in chosen]  # unknown: one line with suggestions
    if len(set(tensors)) != len(tensors):
        raise UserError(f"explain: layers lists a layer twice ({', '.join(chosen)})")
    layers = tuple(sorted(chosen, key=lambda name: layer_depth(model, name)))  # stable: ties as given
    return ExplainPlan(photos=found, layers=layers, classes=spec.classes, groups=spec.groups, top=spec.top,
                       seed=seed, size=spec.size, batch_size=spec.batch_size, baseline=baseline_of(spec.baseline),
                       ig_steps=spec.ig_steps, between=spec.between, render=spec.render)


def resolve_config_explain(loaded: LoadedConfig, model: Any, folder: str | None = None) -> ExplainPlan | None:
    """The config's `explain:` (its folder replaced by the command line's `folder`, which alone also asks for the
    pass with the defaults), or None."""
    config = loaded.config
    if not folder and not config.explain:
        return None
    photos = folder or loaded.explain_folder
    given = config.explain.model_dump(exclude={"folder"}) if config.explain else {}
    return resolve_explain([photos], model, config.seed, **given)


def resolve_circuits(setting: Any, model: Any, layers: list[AnyLayer]) -> CircuitsPlan | None:
    """The config's `circuits:` (true, false or {top, batch_size}) as the pass's plan for the selected conv `layers`
    and the layers that read them (their outputs), or None when off or when only block outputs are selected (they
    have no weights of their own)."""
    from atlas.model.circuits import circuit_layers

    names = [layer.name for layer in layers if isinstance(layer, Layer)]
    if setting is False or not names:
        return None
    every = None if len(names) == len(model.layers) else tuple(circuit_layers(model, names))
    if setting is True:
        return CircuitsPlan(layers=every)
    return CircuitsPlan(top=setting.top, batch_size=setting.batch_size, layers=every)


def resolve_plan(loaded: LoadedConfig, model: Any, shard: tuple[int, int] | None = None,
                 gpus: list[int] | None = None, cluster: list[Device] | None = None,
                 examples_folder: str | None = None, map_folder: str | None = None,
                 explain_folder: str | None = None) -> RunPlan:
    """Resolve a loaded config against the model's catalogue and this machine's devices (`gpus` from the
    command line overrides the config's), or a dask cluster's (`cluster`: what each worker process renders on;
    `workers` and `gpus` do not apply there); every config mistake is raised here, before anything is created.
    `examples_folder` (the command line's) adds or replaces the config's examples folder, `map_folder` its map
    folder, `explain_folder` its explain folder (a folder of photos, or one photo)."""
    loaded = loaded.for_network(model.source.trained)  # `auto` method and display: what they mean for this network
    config = loaded.config
    modes = loaded.modes()
    if cluster is not None:
        layout = resolve_cluster_layout(cluster, config.batch_size, config.render.precision, model.work)
    else:
        layout = resolve_layout(devices.discover_devices(), config.workers, config.gpus if gpus is None else gpus,
                                config.batch_size, config.render.precision, model.work)
    settings = replace(config.settings(), precision=layout.precision)  # `auto` decided once, for every worker
    every = {m.id: replace(config.settings(m.method, m.facets), precision=layout.precision,
                           **({"display": "raw"} if m.kind != NOISE else {})) for m in modes}  # display: from noise
    formats = config.formats.model_dump()
    photos = {m.id: loaded.photos[m.photo] for m in modes if m.photo}
    hashes = {m.id: settings_hash(model.render_key, every[m.id], config.seed, photos.get(m.id), formats) for m in modes}
    selected = select_layers(config.layers, model.layers, model.blocks)
    classes = None if config.classes is None else resolve_classes(config.classes, model, modes, every, config.seed,
                                                                  formats)
    work = resolve_work(loaded, selected, modes) + class_items(classes)
    items = shard_items(work, shard)
    units = {m.id: centre_units(model, every[m.id].size) for m in modes if m.kind == NOISE and m.objective == "neuron"}
    examples = None
    if examples_folder or config.examples:
        folder = examples_folder_of(examples_folder) if examples_folder else loaded.examples_folder
        given = config.examples.model_dump(exclude={"folder"}) if config.examples else {}
        examples = resolve_examples(folder, selected, **given)
    class_photos = None
    if examples and classes:
        class_photos = ClassPhotosPlan(folder=examples.folder, size=examples.size, fit=examples.fit,
                                       batch_size=examples.batch_size, classes=classes.indices, logits=classes.logits)
    maps = None
    if map_folder or config.map:
        folder = examples_folder_of(map_folder, key="map") if map_folder else loaded.map_folder
        given = config.map.model_dump(exclude={"folder"}) if config.map else {}
        maps = resolve_map(folder, model, config.seed, **given)
    return RunPlan(name=loaded.name, folder=loaded.run_folder, config_path=loaded.path,
                   config=config_name(loaded.path), model_spec=model.spec,
                   model_sha256=model.sha256, model_preprocess=model.preprocess.to_dict(),
                   model_labels=model.source.labels, model_logits=model.source.logits,
                   catalogue=list(model.layers), modes=modes, settings=settings,
                   seed=config.seed, formats=formats, layer_dreams=config.layer_dreams, photos=photos,
                   hashes=hashes, items=items, shard=shard, layout=layout, examples=examples, map=maps,
                   explain=resolve_config_explain(loaded, model, explain_folder),
                   circuits=resolve_circuits(config.circuits, model, selected), blocks=list(model.blocks),
                   mode_settings={mode: s for mode, s in every.items() if s != settings}, centre_units=units,
                   planned=planned_channels(work), classes=classes, class_photos=class_photos)


def is_done(item: WorkItem, recorded: dict[tuple[str, str, int], str], plan: RunPlan) -> bool:
    """Recorded with the current settings hash, and the three image files of every facet present."""
    if recorded.get((item.mode, item.layer, item.channel)) != plan.hash_of(item.mode, item.layer):
        return False
    facets = plan.facets(item.mode) if item.channel != WHOLE_LAYER else 1
    return all((plan.folder / p).is_file() for facet in range(facets)
               for p in image_paths(item.mode, item.layer, item.channel, plan.web_ext, plan.thumb_ext, facet))


def pending(plan: RunPlan) -> list[WorkItem]:
    """The plan's items not yet done in its run folder."""
    recorded = recorded_hashes(plan.folder) if plan.folder.exists() else {}
    return [item for item in plan.items if not is_done(item, recorded, plan)]


def make_batches(todo: list[WorkItem], batch_size: int) -> list[Batch]:
    """Group work by (layer, mode) in order, chunked into batches; whole-layer dreams go alone."""
    groups: dict[tuple[str, str], list[int]] = {}
    for item in todo:
        groups.setdefault((item.layer, item.mode), []).append(item.channel)
    batches = []
    for (layer, mode), channels in groups.items():
        per_channel = [c for c in channels if c != WHOLE_LAYER]
        for i in range(0, len(per_channel), batch_size):
            batches.append(Batch(mode, layer, tuple(per_channel[i:i + batch_size])))
        batches.extend(Batch(mode, layer, (c,)) for c in channels if c == WHOLE_LAYER)
    return batches
