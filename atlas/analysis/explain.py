"""Per-photo explanations: what the network sees in each photo, at each chosen layer (docs/explain.md).

The third pass over photos, on the shared loop of `atlas.analysis.passes`. First the baseline: each layer's mean
activation per channel over the reference photos (the shipped ones by default, a folder's, or none for zero),
kept in the run. Photos (files and folders of them) are fitted as the examples pass fits them (shorter side to
the input size, centred square) and go through the network in batches (`atlas.analysis.attribution.explain_batch`):
per photo and layer, the semantic dictionary, the spatial and channel attribution to the top classes against the
baseline (integrated gradients) and the neuron groups; with `between`, `between_layers` adds the attribution
between consecutive chosen layers (into the upper one's arrays, as `from_<lower>`). Everything goes to the run
folder as `atlas.run.explainfiles` lists it, keyed by the photo's sha256:

    explain/baseline.json                                      the baseline, made once (new layers added)
    explain/<sha256>/<layer>.npz, explain/<sha256>/photo.jpg   written per batch (atomically)
    explain/index.json                                         at each checkpoint: the photos done so far
    explain/skipped.txt                                        the files that could not be read

Resume: a photo is done when the index lists it with every chosen layer and its files are there (`wanted`), so a
killed pass loses only the photos since its last checkpoint. Changing the counts, the seed, the input size or the
baseline (the settings hash) starts the index over; new class labels only rename the photos of the index.

After the photos, with `render` (the default), the icons the pages show: the channels of the dictionaries, the
top +/- channel attributions and the groups' top channels, mapped to catalogued (layer or block output, channel),
that the run has no render of, are rendered with the run's own settings by the sweep's render core
(`render_batch`) and recorded in the manifest as ordinary channel renders; and every neuron group is rendered
with the `direction` objective of its channel factor (as map cells are), to
`explain/<sha256>/<layer>-group-<i>.png`.

    from atlas.analysis.explain import run_explain
    from atlas.model.graph import load_model
    from atlas.run.plan import resolve_explain

    model = load_model("inception5h")
    plan = resolve_explain(["dog.jpg", "photos/"], model, layers=["mixed4a", "mixed4d"])
    print("\\n".join(run_explain(plan, "output/quick", model).lines()))
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from atlas.analysis.passes import Checkpoint, PhotoPass, claimed_folder, process_photos
from atlas.analysis.photos import (
    Entry,
    Fitted,
    InputFit,
    fitted_batches,
    list_photos,
    listing_digest,
    no_readable_photo,
    skipped_line,
    write_skipped,
)
from atlas.atomic import SWEEP_OUTPUT, atomic_path, atomic_write_bytes, atomic_write_text, sync_folders
from atlas.errors import UserError
from atlas.run.explainfiles import (
    BASELINE_FILE,
    GROUP_CHANNELS,
    TOP_CHANNELS,
    EXPLAIN_DIR,
    EXPLAIN_SKIPPED_FILE,
    INDEX_FILE,
    ClassScore,
    ExplainedPhoto,
    ExplainIndex,
    ExplainLayer,
    PHOTO_FILE,
    LayerExplanation,
    attribution_of,
    group_render,
    has_explanations,
    layer_file,
    photo_dir,
    read_explanation,
    read_index,
)
from atlas.run.manifest import PhotoRecord
from atlas.run.plan import layer_depth
from atlas.run.plans import ZERO_BASELINE, ExplainPlan

LOCK_FILE = ".explain.lock"
CHECKPOINT_SECONDS = 30.0  # at most this much work is lost (and done again) when a pass is killed
CHECKPOINT_PHOTOS = 256  # ... or this many photos
PHOTO_QUALITY = 90  # of explain/<sha256>/photo.jpg
NO_CLASSIFIER = ("explain: attribution needs class logits and the model has no classifier (no softmax; --logits NODE "
                 "names one), so there is none; the dictionaries and neuron groups are made")


@dataclass
class ExplainSummary:
    """What an explain pass did."""

    photos: int = 0  # photos the index lists
    processed: int = 0  # photos through the network in this pass
    unchanged: int = 0  # photos done before, with these settings
    layers: tuple[str, ...] = ()
    classifier: str | None = None  # the logits node; None: the model has none
    attribution: str = "activation"  # what the gradient is multiplied by (explainfiles.attribution_of)
    rendered_channels: int = 0  # channel renders the run lacked, made for the pages
    rendered_groups: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # photos, channels, groups
    stopped: bool = False  # ended by `stop_after`, as a kill would

    def lines(self) -> list[str]:
        lines = [f"explain: {self.processed:,} photos explained, {self.unchanged:,} unchanged, {self.photos:,} in "
                 f"the index; layers {', '.join(self.layers)}"]
        if self.classifier is None:
            lines.append(NO_CLASSIFIER)
        else:
            lines.append(f"explain: attribution is {self.attribution}")
        if self.rendered_channels or self.rendered_groups:
            lines.append(f"explain: rendered {self.rendered_channels:,} channels the run lacked and "
                         f"{self.rendered_groups:,} neuron groups")
        if self.seconds:
            lines.append("explain: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items()))
        if self.bad:
            lines.append(skipped_line("explain", self.bad, EXPLAIN_SKIPPED_FILE))
        return lines


# ---------------------------------------------------------------------------------------------------------
# The photos


def photo_entries(photos: tuple[str, ...] | list[str]) -> tuple[list[Entry], list[tuple[str, str]]]:
    """The photos to explain, in the order given (a folder's sorted, searched recursively), each file once, and
    (name, reason) of those that cannot even be opened. A file is named by its file name, a folder's photo by its
    path in the folder (prefixed with the folder's name when several folders are given)."""
    entries: list[Entry] = []
    bad: list[tuple[str, str]] = []
    folders = sum(Path(p).is_dir() for p in photos)
    seen: set[Path] = set()
    for given in photos:
        path = Path(given).expanduser()
        if path.is_dir():
            found, unreadable = list_photos(str(path), "explain folder")
            prefix = f"{path.name}/" if folders > 1 else ""
            entries += [replace(e, name=prefix + e.name) for e in found if e.path is not None and e.path not in seen]
            seen.update(e.path for e in found if e.path is not None)
            bad += [(prefix + name, reason) for name, reason in unreadable]
            continue
        if path in seen:
            continue
        seen.add(path)
        try:
            stat = path.stat()
        except OSError as exc:
            bad.append((path.name, f"cannot be read ({exc.strerror})"))
            continue
        if stat.st_size == 0:
            bad.append((path.name, "empty file (0 bytes)"))
            continue
        entries.append(Entry(path.name, path, f"{stat.st_size}:{stat.st_mtime_ns}"))
    return entries, bad


def no_photo(photos: tuple[str, ...] | list[str], bad: list[tuple[str, str]]) -> UserError:
    """The error of a pass given no photo at all."""
    given = ", ".join(photos[:3]) + (" ..." if len(photos) > 3 else "")
    return UserError(f"explain: no photos in {given}" + (f" ({len(bad)} unreadable entries)" if bad else "")
                     + "; give JPEG/PNG/... photo files or folders of them")


# ---------------------------------------------------------------------------------------------------------
# The model's classifier and the attribution core (atlas.analysis.attribution)


def class_names(model: Any) -> list[str]:
    """The names of the classifier's classes (`atlas.model.classifier.class_labels`); none without one."""
    from atlas.model.classifier import class_count, class_labels

    count = class_count(model)
    return [] if count is None else class_labels(model.source, count)


def tf_reason(exc: Exception) -> str:
    """The one line of a TensorFlow error that says what went wrong (not where)."""
    lines = [line.strip() for line in str(exc).splitlines()]
    said = [line for line in lines if line and not line.startswith(("[[", "File ", "Detected at node", "Graph "))]
    return said[-1] if said else type(exc).__name__


def label_of(labels: list[str], index: int) -> str:
    """A class's shown label, else `class N`."""
    return labels[index] if 0 <= index < len(labels) and labels[index] else f"class {index}"


def explain_photos(model: Any, plan: ExplainPlan, pixels: np.ndarray, classes: int,
                   baselines: dict[str, np.ndarray] | None = None) -> list[dict[str, LayerExplanation]]:
    """Per photo of the batch, its explanation at every layer of the plan (one forward and backward pass) against
    the layers' `baselines` (None: zero), with the attribution between consecutive layers in the upper one's
    `between` when the plan asks for it."""
    from atlas.analysis.attribution import between_layers, explain_batch

    found = explain_batch(model, list(plan.layers), pixels, classes=classes, top=plan.top, groups=plan.groups,
                          seed=plan.seed, baselines=baselines, steps=plan.ig_steps)
    if plan.between:
        for lower, upper in zip(plan.layers, plan.layers[1:]):
            links = between_layers(model, lower, upper, pixels)
            for photo, link in zip(found, links):
                photo[upper].between[lower] = np.asarray(link, np.float32)
    return found


# ---------------------------------------------------------------------------------------------------------
# The baseline: what "absent" means at a layer


@dataclass(frozen=True)
class Reference:
    """The photos whose mean activation is the baseline (none for zero), and their listing's digest."""

    folder: str
    photos: list[Entry]
    digest: str = ""


def reference_photos(plan: ExplainPlan) -> Reference:
    """The reference set of the plan's baseline: the photos of its folder (`photos`: the shipped ones; unreadable
    files are left out when read), or none (zero)."""
    from atlas.images import PHOTOS_DIR, SHIPPED_FOLDER

    if plan.baseline == ZERO_BASELINE:
        return Reference("", [])
    folder = str(PHOTOS_DIR) if plan.baseline == SHIPPED_FOLDER else plan.baseline
    entries = list_photos(folder, "explain baseline folder")[0]
    if not entries:
        raise UserError(f"explain: baseline {plan.baseline}: no photos in {folder}; give a folder of photos, or "
                        f"--baseline {ZERO_BASELINE}")
    return Reference(folder, entries, listing_digest(entries))


def reference_baselines(run_folder: Path, model: Any, plan: ExplainPlan,
                        reference: Reference) -> tuple[dict[str, np.ndarray] | None, int]:
    """Per layer of the plan, its mean activation per channel over the reference photos (fitted as the explained
    ones are), and how many photos that mean is over; (None, 0) for the zero baseline. Kept in
    explain/baseline.json with what they were made from (model, size, the photos' listing), so a rerun computes
    only the layers it lacks."""
    from atlas.analysis.attribution import mean_activations

    if not reference.photos:
        return None, 0
    made_from = {"model": model.render_key, "size": plan.size, "reference": reference.digest}
    path = run_folder / BASELINE_FILE
    recorded: dict[str, Any] = {}
    if path.is_file():
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
            recorded = recorded if recorded["made_from"] == made_from and recorded["layers"] else {}
        except (ValueError, KeyError, TypeError):
            recorded = {}  # damaged: made again
    kept = dict(recorded.get("layers", {}))
    photos = int(recorded.get("photos", 0))
    missing = [name for name in plan.layers if name not in kept]
    if missing:
        bad: list[tuple[str, str]] = []
        try:
            means = mean_activations(model, missing, reference_batches(reference, plan, bad))
        except ValueError:
            raise no_readable_photo("explain baseline", reference.folder, bad) from None
        kept.update({name: [float(v) for v in mean] for name, mean in means.items()})
        photos = len(reference.photos) - len(bad)
        atomic_write_text(path, json.dumps({"made_from": made_from, "baseline": plan.baseline, "photos": photos,
                                            "layers": kept}) + "\n")
    return {name: np.asarray(kept[name], np.float32) for name in plan.layers}, photos


def reference_batches(reference: Reference, plan: ExplainPlan, bad: list[tuple[str, str]]) -> Iterator[np.ndarray]:
    """The reference photos fitted as the plan fits the explained ones (float32 [N, S, S, 3] batches); those that
    cannot be read go to `bad`."""
    fit = InputFit(plan.size, "crop", plan.batch_size)
    for batch in fitted_batches(reference.photos, fit, bad, _NoBar()):
        yield np.stack([f.pixels for f in batch])


class _NoBar:
    """A progress bar that shows nothing (the reference photos are few)."""

    def update(self, n: int = 1) -> None:
        pass


# ---------------------------------------------------------------------------------------------------------
# The pass


class ExplainPass(PhotoPass):
    """Per batch of photos: their explanation at every chosen layer, written to `explain/<sha256>/` at once; the
    index (`explain/index.json`) at each checkpoint."""

    what = "explain"

    def __init__(self, plan: ExplainPlan, run_folder: Path, model: Any, index: ExplainIndex, settings: dict[str, Any],
                 baselines: dict[str, np.ndarray] | None = None) -> None:
        self.plan, self.folder, self.model, self.baselines = plan, run_folder, model, baselines
        self.classifier = index.classifier
        # the classifier's class names: the photos explained before are named again (the labels may be new)
        self.labels = class_names(model) if self.classifier is not None and plan.classes else []
        self.depth: dict[str, int] = {}  # layer -> convolutions from the input (its order)
        self.photos = {p.sha256: replace(p, classes=[replace(c, label=label_of(self.labels, c.index))
                                                     for c in p.classes]) for p in index.photos}
        self.layers = dict(index.layers)
        self.settings = {**index.settings, **settings}
        self.window: list[str] = []  # photo folders written since the last checkpoint
        self.taken: set[str] = set()  # photos explained in this pass
        self.checkpoint = Checkpoint(CHECKPOINT_SECONDS, CHECKPOINT_PHOTOS)

    def wanted(self, record: PhotoRecord) -> bool:
        if record.sha256 in self.taken:
            return False  # the same photo under two names
        done = self.photos.get(record.sha256)
        return done is None or not set(self.plan.layers) <= set(done.layers) or not all(
            (self.folder / layer_file(record.sha256, layer)).is_file() for layer in done.layers)

    def take(self, batch: list[Fitted]) -> None:
        pixels = np.stack([f.pixels for f in batch]).astype(np.float32)
        classes = self.plan.classes if self.classifier is not None else 0
        try:
            found = explain_photos(self.model, self.plan, pixels, min(classes, len(self.labels)), self.baselines)
        except Exception as exc:
            if type(exc).__name__ != "InvalidArgumentError":  # TensorFlow's, for an input the graph cannot take
                raise
            raise UserError(f"explain: the model cannot take photos of {self.plan.size} px ({tf_reason(exc)}); "
                            "leave out --size (config: size) for 224") from None
        for fitted, layers in zip(batch, found):
            self._write(fitted, layers)

    def _write(self, fitted: Fitted, layers: dict[str, LayerExplanation]) -> None:
        from atlas.images import encode

        sha = fitted.record.sha256
        folder = self.folder / photo_dir(sha)
        atomic_write_bytes(folder / PHOTO_FILE, encode(np.clip(fitted.pixels, 0, 255).astype(np.uint8), "jpg",
                                                         quality=PHOTO_QUALITY), sync_folder=False)
        for name in self.plan.layers:
            explanation = layers[name]
            with atomic_path(self.folder / layer_file(sha, name), sync_folder=False) as tmp, \
                    open(tmp, "wb") as handle:
                np.savez_compressed(handle, **explanation.arrays())
            if name not in self.layers:
                self.layers[name] = describe_layer(self.model, name, explanation)
        first = layers[self.plan.layers[0]]
        scores = [ClassScore(int(c), label_of(self.labels, int(c)), float(v))
                  for c, v in zip(first.classes, first.logits)]
        before = self.photos.get(sha)
        kept = [layer for layer in (before.layers if before else [])
                if (self.folder / layer_file(sha, layer)).is_file()]
        names = self.low_to_high({*kept, *self.plan.layers})
        self.photos[sha] = ExplainedPhoto(fitted.record.photo, sha, scores, names)
        self.window.append(str(folder))
        self.taken.add(sha)

    def held(self) -> int:
        return len(self.window)

    def commit(self, final: bool) -> None:
        sync_folders({Path(f) for f in self.window})
        self.window = []
        write_index(self.folder, self.index())

    def low_to_high(self, layers: Any) -> list[str]:
        """Layer names, low to high (ties as the plan gives them)."""
        given = {name: i for i, name in enumerate(self.plan.layers)}
        for name in layers:
            if name not in self.depth:
                self.depth[name] = layer_depth(self.model, name)
        return sorted(layers, key=lambda name: (self.depth[name], given.get(name, -1), name))

    def index(self) -> ExplainIndex:
        """The index as it stands: the photos in the order first explained, the layers low to high."""
        layers = {name: self.layers[name] for name in self.low_to_high(self.layers)}
        return ExplainIndex(list(self.photos.values()), layers, self.settings, self.classifier)


def plan_settings(plan: ExplainPlan, settings_hash: str, reference_photos: int = 0) -> dict[str, Any]:
    """What index.json records of the plan (and how many photos the baseline is the mean over)."""
    return {"classes": plan.classes, "groups": plan.groups, "top": plan.top, "seed": plan.seed, "size": plan.size,
            "baseline": plan.baseline, "reference_photos": reference_photos, "ig_steps": plan.ig_steps,
            "between": plan.between,
            "hash": settings_hash}


def describe_layer(model: Any, name: str, explanation: LayerExplanation) -> ExplainLayer:
    """An explained layer as the index lists it: channels, map size at the input size, channel sources."""
    height, width = explanation.dictionary_channels.shape[:2]
    return ExplainLayer(name, int(explanation.group_channels.shape[1]), int(height), int(width),
                        model.channel_sources(name))


def write_index(run_folder: Path, index: ExplainIndex) -> None:
    atomic_write_text(run_folder / INDEX_FILE, json.dumps(index.to_dict(), indent=1) + "\n")


def start_index(run_folder: Path, settings: dict[str, Any], classifier: str | None) -> ExplainIndex:
    """The index to resume: the recorded one if made with the same settings (their hash) and classifier, else an
    empty one (a damaged one is started over too)."""
    index = None
    if has_explanations(run_folder):
        try:
            index = read_index(run_folder)
        except UserError:
            index = None
    if index is None or index.settings.get("hash") != settings["hash"] or index.classifier != classifier:
        return ExplainIndex([], {}, settings, classifier)
    return index


def run_explain(plan: ExplainPlan, run_folder: str | Path, model: Any, progress: bool = True,
                stop_after: int | None = None, elsewhere: str | None = SWEEP_OUTPUT) -> ExplainSummary:
    """Explain every photo of the plan into the run folder (resumable), then render the icons its pages show
    (with `plan.render`); a folder it cannot write is one line telling how to write `elsewhere`. `stop_after`
    (tests) ends the photo loop after that many photos, as a kill would."""
    run_folder = Path(run_folder)
    for name in plan.layers:
        model.tensor_name(name)  # a mistyped layer is told before anything is read
    entries, bad = photo_entries(plan.photos)
    if not entries:
        raise no_photo(plan.photos, bad)
    summary = ExplainSummary(layers=plan.layers, bad=list(bad))
    from atlas.analysis import attribution

    classifier = attribution.classifier(model)
    summary.classifier = classifier
    reference = reference_photos(plan)
    settings_hash = plan.settings_hash(model.render_key, reference.digest)
    with claimed_folder(run_folder, model, "explain", LOCK_FILE, elsewhere):
        began = time.perf_counter()
        baselines, reference_count = reference_baselines(run_folder, model, plan, reference)
        settings = plan_settings(plan, settings_hash, reference_count)
        summary.attribution = attribution_of(settings)
        index = start_index(run_folder, settings, classifier)
        explaining = ExplainPass(plan, run_folder, model, index, settings, baselines)
        done = process_photos(explaining, entries, InputFit(plan.size, "crop", plan.batch_size), summary.bad,
                              progress, stop_after)
        summary.processed, summary.unchanged, summary.stopped = done.processed, done.skipped, done.stopped
        summary.seconds["photos"] = time.perf_counter() - began
        if done.stopped:
            return summary  # as a kill: the photos since the last checkpoint are not in the index
        explaining.commit(final=True)
        write_skipped(run_folder / EXPLAIN_SKIPPED_FILE, summary.bad)
        summary.photos = len(explaining.photos)
        if not done.processed and not done.skipped:
            raise no_readable_photo("explain", ", ".join(plan.photos), summary.bad)
        if plan.render:
            shown = [p for p in explaining.photos.values() if set(plan.layers) <= set(p.layers)]
            began = time.perf_counter()
            summary.rendered_channels = render_missing_channels(run_folder, model, explaining.index(), shown,
                                                                plan, progress)
            summary.seconds["channels"] = time.perf_counter() - began
            began = time.perf_counter()
            summary.rendered_groups = render_groups(run_folder, model, shown, plan, settings_hash, progress)
            summary.seconds["groups"] = time.perf_counter() - began
    return summary


# ---------------------------------------------------------------------------------------------------------
# The icons: the channels the pages show, and the neuron groups


def shown_channels(explanation: LayerExplanation) -> set[int]:
    """The channels of one photo at one layer that its pages show: every dictionary channel, each class's
    TOP_CHANNELS positive and negative channel attributions, each group's GROUP_CHANNELS strongest channels."""
    shown = {int(c) for c in np.unique(explanation.dictionary_channels)}
    for row in np.asarray(explanation.channels):
        order = np.argsort(row, kind="stable")
        shown |= {int(c) for c in order[::-1][:TOP_CHANNELS] if row[c] > 0}
        shown |= {int(c) for c in order[:TOP_CHANNELS] if row[c] < 0}
    for row in np.asarray(explanation.group_channels):
        shown |= {int(c) for c in np.argsort(-row, kind="stable")[:GROUP_CHANNELS]}
    return shown


def wanted_channels(run_folder: Path, index: ExplainIndex, photos: list[ExplainedPhoto], plan: ExplainPlan,
                    model: Any) -> dict[str, set[int]]:
    """Catalogued layer or block output -> the channels the photos' pages show at the plan's layers (mapped
    through each layer's channel sources, as the model gives them to an index written before block outputs
    were catalogued; channels of no catalogued layer or block output have no render to show)."""
    wanted: dict[str, set[int]] = {}
    for name in plan.layers:
        layer = index.layers.get(name)
        sources = (layer.sources or model.channel_sources(name)) if layer else None
        if sources is None:
            continue
        for photo in photos:
            for channel in shown_channels(read_explanation(run_folder, photo.sha256, name)):
                source, source_channel = sources[channel]
                wanted.setdefault(source, set()).add(source_channel)
    return wanted


@dataclass(frozen=True)
class IconMode:
    """The run's mode whose renders are the channels' icons, and what renders it as the sweep would."""

    mode: Any  # atlas.run.manifest.Mode
    settings: Any  # RenderSettings
    seed: int
    formats: dict[str, dict[str, Any]]


def icon_mode(run_folder: Path, seed: int) -> IconMode:
    """The run's first noise mode (DeepDream or Fourier) with its recorded settings; a run with none (a folder
    made by a photo pass alone) gets the default noise mode and render settings of a config, recorded in its
    run.json so that the gallery shows them."""
    from dataclasses import asdict

    from atlas.render.settings import RenderSettings
    from atlas.run.config import RenderConfig, SweepConfig
    from atlas.run.manifest import NOISE, Mode, read_run_info, rewrite_run_info

    info = read_run_info(run_folder)
    recorded = info.get("settings", {})
    for values in info["modes"]:
        mode = Mode(**values)
        if mode.kind == NOISE:
            render = recorded.get("mode_render", {}).get(mode.id, recorded.get("render", {}))
            given = {k: v for k, v in render.items() if k != "transforms"}  # fourier: recorded as its steps
            return IconMode(mode, RenderSettings(**given), int(recorded.get("seed", 0)),
                            recorded.get("formats") or SweepConfig().formats.model_dump())
    config = SweepConfig(render=RenderConfig(method="deepdream", display="raw"))  # the noise mode: DeepDream's pixels
    mode, settings, formats = Mode.noise(), config.settings(), config.formats.model_dump()
    settings_block = {"render": settings.pixel_dict(), "seed": seed, "formats": formats, "layer_dreams": False,
                      "config": None, **{k: v for k, v in recorded.items() if k not in ("render", "seed", "formats")}}
    info.update(modes=[*info["modes"], asdict(mode)], settings=settings_block)  # as write_run_info writes it
    rewrite_run_info(run_folder, info)
    return IconMode(mode, settings, seed, formats)


def render_missing_channels(run_folder: Path, model: Any, index: ExplainIndex, photos: list[ExplainedPhoto],
                            plan: ExplainPlan, progress: bool = True) -> int:
    """Render the channels the photos' pages show that the run has no render of (in its noise mode, with its
    settings: the sweep's render core, recorded in the manifest as ordinary renders); returns how many."""
    from tqdm import tqdm

    from atlas.render.settings import BatchFit, auto_batch_size
    from atlas.run.manifest import MANIFEST_FILE, Manifest, image_paths
    from atlas.run.plan import Batch, settings_hash
    from atlas.run.sweep import versions
    from atlas.run.workers import Task, adopt_model, render_batch

    wanted = wanted_channels(run_folder, index, photos, plan, model)
    if not wanted:
        return 0
    icons = icon_mode(run_folder, plan.seed)
    web, thumb = icons.formats["web"]["format"], icons.formats["thumb"]["format"]
    with Manifest(run_folder / MANIFEST_FILE, create=True) as manifest:
        recorded = manifest.hashes()
    sweeps = {h for (mode, _, _), h in recorded.items() if mode == icons.mode.id}  # the sweep's hash, if one
    hash_ = sweeps.pop() if len(sweeps) == 1 else settings_hash(model.render_key, icons.settings, icons.seed, None,
                                                                 icons.formats)
    todo = {layer: sorted(c for c in channels if recorded.get((icons.mode.id, layer, c)) != hash_ or not all(
        (run_folder / p).is_file() for p in image_paths(icons.mode.id, layer, c, web, thumb)))
        for layer, channels in wanted.items()}
    todo = {layer: channels for layer, channels in todo.items() if channels}
    if not todo:
        return 0
    task = Task(model_sha256=model.sha256, preprocess=model.preprocess.to_dict(), settings=icons.settings,
                seed=icons.seed, photos={}, hashes={icons.mode.id: hash_}, formats=icons.formats,
                versions=versions())
    batch = icons.settings.batch_size or auto_batch_size(icons.settings.size ** 2)
    adopt_model(model, BatchFit(batch, None))
    order = [layer.name for layer in model.all_layers]
    total = sum(len(c) for c in todo.values())
    with tqdm(total=total, unit="render", desc="explain channels", disable=None if progress else True,
              file=sys.stderr) as bar:
        for layer in sorted(todo, key=order.index):
            channels = todo[layer]
            for first in range(0, len(channels), batch):
                renders, files = render_batch(task, Batch(icons.mode.id, layer, tuple(channels[first:first + batch])),
                                              model)
                for path, data in files.items():
                    atomic_write_bytes(run_folder / path, data, sync_folder=False)
                sync_folders({(run_folder / path).parent for path in files})
                with Manifest(run_folder / MANIFEST_FILE) as manifest:
                    manifest.add(renders)
                bar.update(len(renders) // max(1, icons.settings.diversity))
    return total


def group_key(sha256: str, layer: str, group: int) -> int:
    """The key a group's start image is seeded with (the same in any batch or run)."""
    return int(hashlib.sha256(f"{sha256} {layer} {group}".encode()).hexdigest()[:8], 16)


def render_groups(run_folder: Path, model: Any, photos: list[ExplainedPhoto], plan: ExplainPlan,
                  settings_hash: str, progress: bool = True) -> int:
    """Render every neuron group of the photos at the plan's layers that is missing (or was rendered with other
    settings) with the `direction` objective of its channel factor; returns how many."""
    from tqdm import tqdm

    from atlas.images import encode, to_uint8
    from atlas.render.loop import dream_from_noise, noise_start
    from atlas.render.objectives import Direction
    from atlas.render.settings import auto_batch_size

    hash_ = plan.group_hash(settings_hash)
    stamp = run_folder / EXPLAIN_DIR / "groups.json"
    rendered = json.loads(stamp.read_text(encoding="utf-8")) if stamp.is_file() else {}
    settings = plan.group_render
    batch = settings.batch_size or auto_batch_size(settings.size ** 2)
    total = 0
    for layer in plan.layers:
        rows: list[tuple[str, int]] = []
        directions: list[np.ndarray] = []
        for photo in photos:
            factors = read_explanation(run_folder, photo.sha256, layer).group_channels
            for group, factor in enumerate(np.asarray(factors, np.float32)):
                target = run_folder / group_render(photo.sha256, layer, group)
                if rendered.get(f"{photo.sha256}/{layer}/{group}") != hash_ or not target.is_file():
                    rows.append((photo.sha256, group))
                    directions.append(factor)
        if not rows:
            continue
        table = np.stack(directions)
        objective = Direction(table, np.eye(table.shape[1], dtype=np.float32), plan.power)
        name = model.tensor_name(layer)
        with tqdm(total=len(rows), unit="group", desc=f"explain groups {layer}", disable=None if progress else True,
                  file=sys.stderr) as bar:
            for first in range(0, len(rows), batch):
                part = list(range(first, min(first + batch, len(rows))))
                starts = np.stack([noise_start(group_key(rows[i][0], layer, rows[i][1]), plan.seed, settings)
                                   for i in part])
                images = to_uint8(dream_from_noise(model, name, np.array(part, np.int32), starts, settings, plan.seed,
                                                   objective=objective))
                for i, image in zip(part, images):
                    sha, group = rows[i]
                    atomic_write_bytes(run_folder / group_render(sha, layer, group), encode(image, "png"),
                                       sync_folder=False)
                    rendered[f"{sha}/{layer}/{group}"] = hash_
                sync_folders({(run_folder / photo_dir(rows[i][0])) for i in part})
                atomic_write_text(stamp, json.dumps(rendered, sort_keys=True))
                bar.update(len(part))
        total += len(rows)
    return total
