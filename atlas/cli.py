"""The `atlas` command line: one subcommand per user task; user errors end as one line and exit code 2."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from atlas.atomic import OUTPUT_FLAG, stop_on_write_errors
from atlas.console import import_tensorflow, set_verbose
from atlas.errors import UserError
from atlas.pipeline import SweepFailed

if TYPE_CHECKING:
    from atlas.model.graph import Model
    from atlas.publish.figures.jobs import FigureJob, SpecJob
    from atlas.render.settings import RenderSettings

EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other user error
        raise UserError(f"{message} (see `{self.prog} --help`)")


def _model_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="inception5h (default, or $ATLAS_MODEL), synthetic[:SCALE], keras:NAME (e.g. "
                        "keras:ResNet50), or a path to a .keras, .h5, .onnx, .pb or .zip file or a SavedModel folder")
    parser.add_argument("--preprocess", default=None,
                        help="how RGB pixels 0..255 become the model's input: caffe, tf, torch, none, or "
                        "'mean=M[,M,M] std=S[,S,S] bgr' (pixel units) or JSON; a Keras or ONNX file needs it "
                        "(docs/own-model.md)")
    parser.add_argument("--labels", metavar="imagenet|FILE", default=None,
                        help="the names of the classifier's classes: imagenet (the 1000 ImageNet classes, "
                        "Keras's order) or a text file with one name a line (docs/own-model.md)")
    parser.add_argument("--logits", default=None, metavar="NODE",
                        help="the node (or ONNX tensor) holding the classifier's logits, where the graph has no final "
                        "softmax to find them by (docs/own-model.md#the-classifier)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="atlas", description="Render and browse a DeepDream atlas of GoogLeNet.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    layers = sub.add_parser("layers", help="list the model's convolutional layers and block outputs, low to high")
    _model_arg(layers)
    layers.add_argument("--format", choices=["table", "json", "csv"], default="table")
    _dream_parser(sub)
    _sweep_parsers(sub)
    _figure_parser(sub)
    _examples_parser(sub)
    _map_parser(sub)
    _explain_parser(sub)
    _weights_parser(sub)
    build = sub.add_parser("build", help="build the static gallery of a run folder into RUN_FOLDER/site/, or of "
                           "several run folders into one site (-o SITE)")
    build.add_argument("run_folder", metavar="RUN_FOLDER", nargs="+",
                       help="run folders, or one site config (SITE.yaml: `runs:` a list of run folders, `out:` the "
                       "site's folder)")
    build.add_argument("-o", "--out", metavar="SITE", default=None,
                       help="one self-contained site of every RUN_FOLDER given: an index of the models, each "
                       "model's gallery, a compare-by-depth view (needed for two or more run folders)")
    serve = sub.add_parser("serve", help="preview a run's gallery (or a site of several models built with -o) on "
                           "http://127.0.0.1:PORT (builds it if missing)")
    serve.add_argument("run_folder", metavar="RUN_FOLDER|SITE")
    serve.add_argument("--port", type=int, default=8000)
    _configs_parser(sub)
    _verbose_flag(parser, sub)
    return parser


VERBOSE_HELP = "show TensorFlow's own logging too (as does ATLAS_VERBOSE=1)"


def _verbose_flag(parser: argparse.ArgumentParser, sub: argparse._SubParsersAction) -> None:
    """`--verbose` before or after the subcommand (`atlas sweep full --verbose`)."""
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    for command in sub.choices.values():
        _verbose_after(command)


def _verbose_after(command: argparse.ArgumentParser) -> None:
    # SUPPRESS: when not given after the subcommand, the main parser's value stands
    command.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)


def _configs_parser(sub: argparse._SubParsersAction) -> None:
    configs = sub.add_parser("configs", help="list the shipped sweep configs; `atlas configs show NAME` prints one")
    show = configs.add_subparsers(dest="configs_command", parser_class=_Parser).add_parser(
        "show", help="print a shipped config, e.g. as a starting point: atlas configs show full > mine.yaml")
    show.add_argument("name", metavar="NAME")
    _verbose_after(show)


def cmd_configs(args: argparse.Namespace) -> None:
    from atlas.shipped import purpose, shipped_configs

    shipped = shipped_configs()
    if args.configs_command == "show":
        if args.name not in shipped:
            raise UserError(f"no shipped config is named {args.name}; the shipped configs: {', '.join(shipped)}")
        sys.stdout.write(shipped[args.name].read_text(encoding="utf-8"))
        return
    width = max(map(len, shipped), default=0)
    for name, path in shipped.items():
        print(f"{name:<{width}}  {purpose(path)}")


def _sweep_parsers(sub: argparse._SubParsersAction) -> None:
    for name, text in [("sweep", "render every layer x channel a config asks for (resumable)"),
                       ("run", "sweep, then build the gallery")]:
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("config", help="a YAML config file, or a shipped config's name (`atlas configs` lists "
                         "them), e.g. demo")
        cmd.add_argument("--shard", help="K/N: render only slice K of N (for job arrays); outputs merge")
        cmd.add_argument("--backend", choices=["local", "dask"], default=None,
                         help="worker processes here (default: one per GPU, else splitting the CPU) or a "
                         "dask.distributed cluster")
        cmd.add_argument("--gpus", help="GPU ids to render on, as nvidia-smi numbers them, e.g. 0,2, or none "
                         "(default: the config's gpus:, else all)")
        cmd.add_argument("--scheduler", help="dask scheduler address, e.g. tcp://host:8786 (default: a local "
                         "cluster)")
        cmd.add_argument("--dry-run", action="store_true", help="list the work and estimate its time; render "
                         "nothing")
        cmd.add_argument("--examples", metavar="FOLDER", help="then find each channel's dataset examples in "
                         "FOLDER (a folder of photos, or `probes`); replaces the config's examples folder")
        cmd.add_argument("--map", metavar="FOLDER", help="then make activation atlases from the photos of FOLDER "
                         "(or `probes`) of the config's map layers (default mixed3b, mixed4c, mixed5b)")
        cmd.add_argument("--explain", metavar="FOLDER", help="then explain each photo of FOLDER (or one photo) at "
                         "the config's explain layers (default: the model's; mixed4a, mixed4d on GoogLeNet): "
                         "dictionary, attribution, groups")


def cmd_sweep(args: argparse.Namespace) -> None:
    from atlas.pipeline import run_pipeline
    from atlas.run.config import load_config
    from atlas.run.layout import parse_gpus
    from atlas.run.plan import parse_shard

    if args.scheduler and args.backend != "dask":
        raise UserError("--scheduler needs --backend dask")
    loaded = load_config(args.config)
    model = loaded.config.load_model()
    run_pipeline(loaded, model, parse_shard(args.shard), parse_gpus(args.gpus), args.backend, args.scheduler,
                 args.examples, args.map, build_site=args.command == "run", dry_run=args.dry_run,
                 explain_folder=args.explain)


def _examples_parser(sub: argparse._SubParsersAction) -> None:
    cmd = sub.add_parser("examples", help="find the photos (and patches) of a folder that excite each channel "
                         "most, into a run folder (resumable)")
    cmd.add_argument("folder", metavar="FOLDER", help="a folder of photos (searched recursively), or `probes` for "
                     "the built-in teaching probes")
    _model_arg(cmd)
    cmd.add_argument("-o", "--output", required=True, metavar="RUN_FOLDER",
                     help="an existing run folder (its model is used) or a new one")
    cmd.add_argument("--layer", help="print this layer's top list for --channel (after processing the folder)")
    cmd.add_argument("--channel", type=int, help="with --layer: the channel whose top list to print")
    cmd.add_argument("--format", choices=["table", "json", "csv"], default="table", help="of the printed list")
    cmd.add_argument("--top", type=int, help="entries per channel (default 9, or as the run recorded)")
    cmd.add_argument("--size", type=int, help="shorter side of a photo in the network's input (default 224)")
    cmd.add_argument("--fit", choices=["crop", "whole"], help="crop: the centred square (default); whole: the "
                     "whole scaled photo, batched with photos of the same size")
    cmd.add_argument("--batch-size", type=int, help="photos per forward pass (default 16)")


def run_model(run_folder: Path, args: argparse.Namespace) -> Model:
    """The model of a pass into `run_folder`: the run's own (as its run.json records it) unless --model names
    another; its recorded preprocessing, labels and logits unless --preprocess, --labels and --logits give them."""
    from atlas.model.graph import load_model
    from atlas.run.manifest import RUN_FILE, read_run_info

    spec, preprocess, labels, logits = args.model, args.preprocess, args.labels, args.logits
    if (run_folder / RUN_FILE).is_file():
        recorded = read_run_info(run_folder).get("model", {})
        if spec is None or spec == recorded.get("spec"):
            spec, preprocess = recorded.get("spec", spec), preprocess or recorded.get("preprocess")
            labels, logits = labels or recorded.get("labels"), logits or recorded.get("logits")
    return load_model(spec, preprocess, labels=labels, logits=logits)


def given_model(args: argparse.Namespace) -> Model:
    """The model --model, --preprocess, --labels and --logits name (`atlas.model.graph.load_model`)."""
    from atlas.model.graph import load_model

    return load_model(args.model, args.preprocess, labels=args.labels, logits=args.logits)


def cmd_examples(args: argparse.Namespace) -> None:
    from atlas.model.selection import check_channels
    from atlas.run.config import examples_folder_of
    from atlas.analysis.examples import channel_examples, run_examples
    from atlas.run.manifest import RUN_FILE, read_examples_meta
    from atlas.run.plan import resolve_examples

    if (args.layer is None) != (args.channel is None):
        raise UserError("--layer and --channel go together, e.g. --layer mixed4d_3x3_bottleneck_pre_relu "
                        "--channel 139")
    folder = examples_folder_of(args.folder)
    run_folder = Path(args.output)
    recorded: dict = {}
    if (run_folder / RUN_FILE).is_file():  # the run's examples settings, not its render rows
        meta = read_examples_meta(run_folder)
        if meta.get("folder") == folder:  # options left out keep what the run recorded
            recorded = meta
    model = run_model(run_folder, args)
    if args.layer is not None:  # a mistyped layer or channel is told before the folder is processed, not after
        shown = model.any_layer(args.layer)
        check_channels([args.channel], shown.channels, shown.name)
    layers = [model.any_layer(name) for name in recorded.get("layers", [])] or model.layers
    plan = resolve_examples(folder, layers, *(getattr(args, k) if getattr(args, k) is not None else
                                              recorded.get(k) for k in ("top", "size", "fit")), args.batch_size)
    summary = run_examples(plan, run_folder, model, elsewhere=OUTPUT_FLAG)  # a folder it cannot write: one line
    print("\n".join(summary.lines()), file=sys.stderr if args.layer else sys.stdout)
    if args.layer:
        print(format_examples(channel_examples(run_folder, args.layer, args.channel), args.format))
    else:
        print(f"output: {run_folder} (`atlas build {run_folder}` shows the examples in the gallery)")


def _map_parser(sub: argparse._SubParsersAction) -> None:
    cmd = sub.add_parser("map", help="activation atlases: sample layers' activations over a folder of photos, lay "
                         "them out with UMAP, render every grid cell, into a run folder (resumable)")
    cmd.add_argument("folder", metavar="FOLDER", help="a folder of photos (searched recursively), or `probes`")
    _model_arg(cmd)
    cmd.add_argument("-o", "--output", required=True, metavar="RUN_FOLDER",
                     help="an existing run folder (its model is used) or a new one")
    cmd.add_argument("--layer", nargs="+", metavar="LAYER", help="layers to map: catalogued layers or block outputs "
                     "(default: mixed3b mixed4c mixed5b)")
    cmd.add_argument("--samples", type=int, help="activation vectors per layer, at most (default 100000)")
    cmd.add_argument("--per-photo", type=int, help="positions sampled per photo and layer (default 50)")
    cmd.add_argument("--grid", type=int, nargs="+", help="cells a side of each zoom level (default 10 20)")
    cmd.add_argument("--min-samples", type=int, help="a cell with fewer samples is dropped (default 5)")
    cmd.add_argument("--neighbours", type=int, help="UMAP n_neighbors (default 50)")
    cmd.add_argument("--method", choices=["deepdream", "fourier"], help="how cells are rendered (default "
                     "deepdream)")
    cmd.add_argument("--render-size", type=int, help="cells' side in pixels (default 96)")
    cmd.add_argument("--steps", type=int, help="deepdream: steps per octave (default 12); fourier: Adam steps "
                     "(default 256)")
    cmd.add_argument("--seed", type=int, default=0)
    cmd.add_argument("--no-render", action="store_true", help="sample and lay out only")
    cmd.add_argument("--dry-run", action="store_true", help="estimate the work and its time; write nothing")


def cmd_map(args: argparse.Namespace) -> None:
    from atlas.run.config import examples_folder_of
    from atlas.analysis.maps import estimate_map, run_map
    from atlas.run.plan import resolve_map

    folder = examples_folder_of(args.folder, key="map")
    run_folder = Path(args.output)
    model = run_model(run_folder, args)
    plan = resolve_map(folder, model, args.seed, layers=args.layer, samples=args.samples, per_photo=args.per_photo,
                       grid=args.grid, min_samples=args.min_samples, neighbours=args.neighbours, method=args.method,
                       render_size=args.render_size, steps=args.steps, render=False if args.no_render else None)
    if args.dry_run:
        estimate_map(plan, run_folder, model)
        return
    print("\n".join(run_map(plan, run_folder, model, elsewhere=OUTPUT_FLAG).lines()))
    print(f"output: {run_folder} (`atlas build {run_folder}` shows the maps in the gallery)")


def _explain_parser(sub: argparse._SubParsersAction) -> None:
    cmd = sub.add_parser("explain", help="what the network sees in each photo: per layer, the semantic dictionary, "
                         "attribution to the top classes and neuron groups, into a run folder (resumable)")
    cmd.add_argument("photos", metavar="PHOTO_OR_FOLDER", nargs="*", help="photo files and folders of photos "
                     "(searched recursively)")
    _model_arg(cmd)
    cmd.add_argument("-o", "--output", required=True, metavar="RUN_FOLDER",
                     help="an existing run folder (its model is used) or a new one")
    cmd.add_argument("--layer", nargs="+", metavar="LAYER", help="layers to explain: catalogued layers or block "
                     "outputs (default: mixed4a mixed4d on GoogLeNet; on other models the block outputs at 0.4 and "
                     "0.7 of its depth, docs/explain.md)")
    cmd.add_argument("--classes", type=int, help="top classes attributed (default 5; 0: none)")
    cmd.add_argument("--groups", type=int, help="neuron groups per photo and layer (default 6)")
    cmd.add_argument("--top", type=int, help="channels per position in the dictionary, and per class and group "
                     "shown (default 6)")
    cmd.add_argument("--size", type=int, help="the photo's centred square in the network's input (default 224)")
    cmd.add_argument("--batch-size", type=int, help="photos per forward and backward pass (default 8)")
    cmd.add_argument("--seed", type=int, default=0, help="of the neuron groups (NMF) and their renders")
    cmd.add_argument("--baseline", metavar="photos|zero|FOLDER", help="what a layer's activations are measured "
                     "against: the mean activation over the photos of FOLDER (default `photos`, the shipped ones), "
                     "or zero (the article's)")
    cmd.add_argument("--ig-steps", type=int, metavar="N", help="integrated gradients: the gradient averaged along "
                     "the path from the baseline to the photo's activations over N steps (default 16; 0: the "
                     "gradient at the photo, as the article)")
    cmd.add_argument("--between", action=argparse.BooleanOptionalAction, default=None, help="also the attribution "
                     "between consecutive layers (off by default: it costs 15 times the rest)")
    cmd.add_argument("--no-render", action="store_true", help="the arrays only: render neither the neuron groups "
                     "nor the channels the run lacks")


def cmd_explain(args: argparse.Namespace) -> None:
    from atlas.analysis.explain import run_explain
    from atlas.run.plan import resolve_explain

    if not args.photos:
        raise UserError("explain: no photo given; name photo files or folders of photos, e.g. "
                        f"`atlas explain dog.jpg photos/ -o {args.output} --layer mixed4d`")
    run_folder = Path(args.output)
    model = run_model(run_folder, args)
    plan = resolve_explain(args.photos, model, args.seed, layers=args.layer, classes=args.classes,
                           groups=args.groups, top=args.top, size=args.size, batch_size=args.batch_size,
                           baseline=args.baseline, ig_steps=args.ig_steps, between=args.between,
                           render=False if args.no_render else None)
    print("\n".join(run_explain(plan, run_folder, model, elsewhere=OUTPUT_FLAG).lines()))
    print(f"output: {run_folder} (`atlas build {run_folder}` shows the photos in the gallery)")


EXAMPLE_COLUMNS = ["rank", "photo", "value", "x0", "y0", "x1", "y1", "row", "col"]


def format_examples(examples: list, fmt: str) -> str:
    """A channel's top list as JSON (the output contract), CSV or a table."""
    if fmt == "json":
        return json.dumps([e.to_dict() for e in examples], indent=2)
    rows = [[e.rank, e.photo, f"{e.value:.6g}", *e.box, e.row, e.col] for e in examples]
    if fmt == "csv":
        return to_csv(EXAMPLE_COLUMNS, rows)
    return "\n".join(f"{r[0]:>3}  {r[2]:>10}  box {r[3]},{r[4]}-{r[5]},{r[6]}  at {r[7]},{r[8]}  {r[1]}"
                     for r in rows) or "no examples recorded for this channel"


# RenderSettings fields `atlas dream` takes as --flags (besides --objective and --precision).
DREAM_SETTINGS = [("size", int), ("octaves", int), ("octave_scale", float), ("steps", int), ("step_size", float),
                  ("photo_octaves", int), ("photo_steps", int), ("photo_step_size", float), ("photo_size", int),
                  ("tile", int),
                  ("batch_size", int), ("learning_rate", float), ("diversity", int), ("diversity_weight", float)]


def _dream_parser(sub: argparse._SubParsersAction) -> None:
    dream = sub.add_parser("dream", help="render one layer's channels from noise or from a photo")
    _model_arg(dream)
    dream.add_argument("--layer", help="a layer name from `atlas layers` (not with --objective class)")
    dream.add_argument("--channel", help="139, 0-15, 0,3,7-9 or all (required unless --objective layer); with "
                       "--objective class, class indices")
    dream.add_argument("--class", dest="classes", metavar="NAME|INDEX[,...]",
                       help="classes to visualise, by name (from the model's labels) or index; implies --objective "
                       "class")
    dream.add_argument("--photo", help="a base photo (any format Pillow reads) or a shipped one: "
                       "astronaut, chelsea, coffee, rocket; without it, dreams start from noise")
    dream.add_argument("--objective", choices=["channel", "neuron", "layer", "negative", "class"], default=None,
                       help="neuron: the channel at the centre of the layer's map; class: a logit of the classifier "
                       "(default channel, or class with --class)")
    dream.add_argument("--method", choices=["auto", "deepdream", "fourier", "maco"], default="auto",
                       help="deepdream (pixels, octaves; fast), fourier (a decorrelated spectrum through random "
                       "transforms, Adam; --steps default 512) or maco (the spectrum's phase, its magnitude natural "
                       "photos'; saves an importance mask beside each render); auto: fourier on a trained network, "
                       "deepdream on the stand-in's random weights (docs/quality.md)")
    dream.add_argument("--display", choices=["auto", "raw", "visstd"], default="auto",
                       help="how DeepDream renders from noise are saved: raw pixels, or visstd (the notebook's "
                       "display; the raw pixels are saved beside, -raw.png); auto: visstd on a trained network")
    dream.add_argument("-o", "--output", default=".", help="a .png/.jpg/.webp file for one image, else a folder")
    dream.add_argument("--seed", type=int, default=0)
    dream.add_argument("--precision", choices=["auto", "float32", "bfloat16"], default=None,
                       help="of gradient steps (default float32; bfloat16 is faster on CPUs with "
                       "AVX512_BF16/AMX; auto picks it there)")
    for name, kind in DREAM_SETTINGS:
        dream.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None,
                           help="render setting (see docs/dream.md)")


LAYER_COLUMNS = ["index", "name", "block", "channels", "kernel", "stride", "in_channels", "depth",
                 "receptive_field", "cumulative_stride"]


def to_csv(header: list[str], rows: list[list]) -> str:
    """A header and rows as CSV text (no trailing newline)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().rstrip("\n")


def format_layers(layers: list, fmt: str, preprocess: object = None, blocks: Sequence = ()) -> str:
    """Render the catalogue as a table, JSON or CSV; the table and JSON also say how the model's input is made
    from pixels (`preprocess`, an atlas.model.preprocess.Preprocess), when given. The table lists the block outputs
    (`blocks`) among the conv layers, marked `bN` in its `#` column, and JSON lists them apart (`blocks`); CSV is the
    conv layers alone."""
    from atlas.model.catalogue import Layer, in_order

    if fmt == "json":
        data = {"layers": [layer.to_dict() for layer in layers], "total_layers": len(layers),
                "total_channels": sum(layer.channels for layer in layers),
                "blocks": [block.to_dict() for block in blocks]}
        if preprocess is not None:
            data["preprocess"] = {"name": preprocess.name, **preprocess.to_dict()}  # type: ignore[attr-defined]
        return json.dumps(data, indent=2)
    if fmt == "csv":
        return to_csv(LAYER_COLUMNS, [[getattr(layer, column) for column in LAYER_COLUMNS] for layer in layers])
    rows = [[getattr(layer, column) for column in LAYER_COLUMNS] if isinstance(layer, Layer) else
            [f"b{layer.index}", layer.name, layer.block, layer.channels, layer.kind, "", "", layer.depth,
             layer.receptive_field, layer.cumulative_stride] for layer in in_order([*layers, *blocks])]
    headers = ["#", "layer", "block", "channels", "kernel", "stride", "in", "depth", "rf px", "jump px"]
    cells = [headers] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(w) if i in (1, 2) else cell.rjust(w) for i, (cell, w) in
                       enumerate(zip(row, widths))) for row in cells]
    lines.insert(1, "-" * len(lines[0]))
    if preprocess is not None:
        lines.insert(0, f"input: RGB pixels 0..255 -> {preprocess.describe()}")  # type: ignore[attr-defined]
    total = f"{len(layers)} layers, {sum(layer.channels for layer in layers):,} channels"
    if blocks:
        total += (f"; and {len(blocks)} block outputs (b0-b{len(blocks) - 1}: where branches merge, kernel add or "
                  f"concat), {sum(block.channels for block in blocks):,} channels")
    lines.append(total)
    return "\n".join(lines)


def cmd_layers(args: argparse.Namespace) -> None:
    model = given_model(args)
    print(format_layers(model.layers, args.format, model.preprocess, model.blocks))


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


def cmd_dream(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from atlas.images import load_photo
    from atlas.model.selection import WHOLE_LAYER, parse_channels
    from atlas.render.loop import render_channels, tensor_channels

    objective = args.objective or ("class" if args.classes else "channel")
    if objective == "class" and args.layer:
        raise UserError("--objective class renders the classifier's logits: leave out --layer")
    if objective != "class" and args.classes:
        raise UserError(f"--class goes with --objective class, not {objective}")
    if objective != "class" and not args.layer:
        raise UserError("--layer is required (a name from `atlas layers`), or give --class to visualise classes")
    if objective not in ("layer", "class") and args.channel is None:
        raise UserError("--channel is required with --objective channel, neuron or negative (e.g. --channel 139 "
                        "or 0-15)")
    if objective == "class" and (args.channel is None) == (args.classes is None):
        raise UserError("--objective class takes --class NAME|INDEX[,...] or --channel INDICES (one of them)")
    photo = load_photo(args.photo) if args.photo else None
    model = given_model(args)
    settings = dream_settings(args, objective, model.source.trained, photo is not None)
    if photo is not None and (settings.method != "deepdream" or settings.diversity > 1):
        raise UserError("--photo works with --method deepdream and no --diversity; the fourier and maco methods "
                        "and facets start from noise")
    if objective == "class":
        from atlas.render.classes import CLASS_LABEL, labels, logits_layer, parse_classes

        name, label = logits_layer(model), CLASS_LABEL
        names = labels(model)
        channels = parse_classes(args.classes, names) if args.classes else \
            parse_channels(args.channel, len(names), "the classifier")
    else:
        name = model.tensor_name(args.layer)  # the graph node (a Keras layer's is a path: model/layer/op)
        label = args.layer.replace("/", "_")  # as the user named it: files are LABEL-CCCC.png
        count = tensor_channels(model, name)
        channels = parse_channels(args.channel, count, args.layer) if objective != "layer" else [WHOLE_LAYER]
    target = Path(args.output)
    single = target.suffix.lower() in IMAGE_SUFFIXES
    images = len(channels) * settings.diversity
    if single and images > 1:
        raise UserError(f"{len(channels)} channel(s) x {settings.diversity} facet(s) make {images} images; give -o a "
                        f"folder, not {target}")
    folder = target.parent if single else target
    with stop_on_write_errors(folder, OUTPUT_FLAG, resumable=False):  # told now, not after the renders
        folder.mkdir(parents=True, exist_ok=True)
    steps_bar = "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total_fmt} channels [{elapsed}<{remaining}]"
    with tqdm(total=len(channels), disable=None, desc=label, bar_format=steps_bar) as bar:  # moves every step
        results = render_channels(model, name, channels, photo, settings, args.seed, progress=bar.update)
    count = tensor_channels(model, name)
    for result in results:
        leaf = "layer" if result.channel == WHOLE_LAYER else f"{result.channel:04d}"
        leaf += f"-facet{result.facet}" if settings.diversity > 1 else ""
        with stop_on_write_errors(folder, OUTPUT_FLAG, resumable=False):  # e.g. the disk filled up meanwhile
            path = save_render(target if single else target / f"{label}-{leaf}.png", result)
        text = describe_metrics(result, count)
        if objective == "class":
            text += f"  {names[result.channel]}"
        print(f"{path}  {text}")


def dream_settings(args: argparse.Namespace, objective: str, trained: bool, from_photo: bool) -> RenderSettings:
    """`atlas dream`'s render settings: its flags, with `auto` method and display chosen for the network (and
    DeepDream from a photo)."""
    from atlas.render.settings import RenderSettings, for_network, with_overrides

    chosen = for_network(trained, args.method, args.display, from_photo)
    try:
        return with_overrides(RenderSettings(objective=objective, **chosen),
                              precision=args.precision, **{name: getattr(args, name) for name, _ in DREAM_SETTINGS})
    except ValueError as exc:
        raise UserError(f"bad render setting: {exc}") from None


def save_render(path: Path, result: object) -> Path:
    """Write a render's image to `path`, and beside it what the render keeps apart (`-raw`: the optimised pixels
    when the display differs; `-mask`: the importance mask); returns `path`."""
    from atlas.images import save_image

    for suffix, pixels in (("-raw", result.raw), ("-mask", result.mask)):  # type: ignore[attr-defined]
        if pixels is not None:
            save_image(path.with_name(f"{path.stem}{suffix}.png"), pixels)
    return save_image(path, result.image)  # type: ignore[attr-defined]


def describe_metrics(result: object, channels: int) -> str:
    """One line of a render's metrics for the terminal."""
    text = f"activation {result.start:.3g} -> {result.end:.3g}  lift {result.lift:+.2f}"
    if result.rank is not None:
        text += f"  rank {result.rank}/{channels}"
    if result.specific is not None:
        text += f"  specific {'yes' if result.specific else 'no'}"
    return text


def _weights_parser(sub: argparse._SubParsersAction) -> None:
    cmd = sub.add_parser("weights", help="a unit's strongest inputs and outputs (expanded weights through the "
                         "linearised network), computed from the model")
    _model_arg(cmd)
    cmd.add_argument("--layer", required=True, help="a layer name from `atlas layers`")
    cmd.add_argument("--channel", required=True, type=int, help="the unit's channel")
    cmd.add_argument("--top", type=int, default=10, help="excitatory and inhibitory edges each way (default 10)")
    cmd.add_argument("--kind", choices=["expanded", "direct"], default="expanded",
                     help="expanded: from the previous block's output, through bottlenecks and pools (default); "
                     "direct: the unit's own kernel over the units it reads")
    cmd.add_argument("--format", choices=["table", "json", "csv"], default="table",
                     help="json includes every kernel")


WEIGHT_COLUMNS = ["direction", "rank", "layer", "channel", "sign", "norm", "sum", "window"]


def format_circuit(circuit: object, fmt: str) -> str:
    """A unit's circuit as a table, JSON (with kernels: the output contract) or CSV (without them)."""
    if fmt == "json":
        return json.dumps(circuit.to_dict(), indent=2)
    rows = []
    for direction, edges in (("input", circuit.inputs), ("output", circuit.outputs)):
        for rank, edge in enumerate(edges, 1):
            rows.append([direction, rank, edge.layer, edge.channel, edge.sign, f"{edge.norm:.4g}",
                         f"{edge.sum:+.4g}", f"{edge.kernel.shape[0]}x{edge.kernel.shape[1]}"])
    if fmt == "csv":
        return to_csv(WEIGHT_COLUMNS, rows)
    lines = [f"{circuit.layer}:{circuit.channel}  {circuit.kind} weights (kernels in the source layer's grid)"]
    for direction, edges in (("inputs", circuit.inputs), ("outputs", circuit.outputs)):
        lines.append(f"{direction}:" if edges else f"{direction}: none (no later layer reads this unit "
                     f"{'directly' if circuit.kind == 'direct' else 'through the linearised network'})")
        for edge in edges:
            lines.append(f"  {edge.sign:<8}  {edge.unit:<40}  norm {edge.norm:>9.4g}  sum {edge.sum:>+10.4g}  "
                         f"{edge.kernel.shape[0]}x{edge.kernel.shape[1]}")
    return "\n".join(lines)


def cmd_weights(args: argparse.Namespace) -> None:
    from atlas.model.circuits import unit_circuit

    if args.top < 1:
        raise UserError(f"--top {args.top}: give at least 1")
    model = given_model(args)
    print(format_circuit(unit_circuit(model, args.layer, args.channel, args.top, args.kind), args.format))


def _figure_parser(sub: argparse._SubParsersAction) -> None:
    from atlas.publish.figures.jobs import SPEC
    from atlas.publish.figures.kinds import COMMON, KINDS, cli_options

    fig = sub.add_parser("figure", help=f"teaching figures ({', '.join(KINDS)}) as PNG or PDF")
    fig.add_argument("run", metavar="RUN_FOLDER", help="a run folder written by `atlas sweep`")
    what = fig.add_mutually_exclusive_group(required=True)
    for kind in KINDS.values():  # --sheet LAYER, --progression, ...: one per registered kind
        if kind.metavar:
            what.add_argument(f"--{kind.name}", metavar=kind.metavar, help=kind.help)
        else:
            what.add_argument(f"--{kind.name}", action="store_true", help=kind.help)
    what.add_argument(f"--{SPEC}", metavar="FILE", help="a YAML file describing several figures, or a shipped one's "
                      "name (lecture3)")
    for name, (option, kinds) in cli_options().items():
        fig.add_argument(f"--{name}", help=f"{', '.join(kinds)}: {option.help}", **option.argparse_kwargs())
    for option in COMMON:  # --title, --columns: every kind's
        if option.cli:
            fig.add_argument(f"--{option.name}", help=option.help, **option.argparse_kwargs())
    fig.add_argument("--dpi", type=int, help="PNG resolution and PDF image resolution (default 200)")
    fig.add_argument("-o", "--output", help="a .png or .pdf file (default: RUN_FOLDER/figures/NAME.png)")


def figure_command_job(args: argparse.Namespace) -> FigureJob | SpecJob:
    """The plain figure job (FigureJob or SpecJob) an `atlas figure` command line asks for."""
    from atlas.publish.figures.jobs import SPEC, command_job
    from atlas.publish.figures.kinds import COMMON, KINDS, cli_options

    chosen = next(name for name in [*KINDS, SPEC] if getattr(args, name) not in (None, False))
    options = {name: getattr(args, name) for name in [*cli_options(), *(o.name for o in COMMON if o.cli)]}
    return command_job(chosen, getattr(args, chosen), options, args.output, args.dpi)


def cmd_figure(args: argparse.Namespace) -> None:
    from atlas.publish.figures.jobs import draw_job
    from atlas.run.manifest import read_run

    made, combined = draw_job(read_run(args.run), figure_command_job(args))
    for item in made:
        print(item.path)
        if item.layout.gaps:
            print(f"atlas: warning: {item.path.name}: {len(item.layout.gaps)} missing render(s) left as gaps: "
                  f"{item.layout.missing_summary()}", file=sys.stderr)
    if combined:
        print(combined)


def cmd_build(args: argparse.Namespace) -> None:
    from atlas.publish.multisite import build_multisite, is_site_config, load_site_config

    if len(args.run_folder) == 1 and is_site_config(args.run_folder[0]):
        runs, out = load_site_config(args.run_folder[0])
        print(build_multisite(runs, args.out or out, progress=True).summary())
        return
    if args.out is not None:
        print(build_multisite(args.run_folder, args.out, progress=True).summary())
        return
    if len(args.run_folder) > 1:
        raise UserError(f"{len(args.run_folder)} run folders need -o SITE, the folder of their one site; e.g. "
                        f"atlas build {' '.join(args.run_folder)} -o output/site")
    from atlas.publish.site import build_site

    print(build_site(args.run_folder[0], progress=True).summary())


def cmd_serve(args: argparse.Namespace) -> None:
    from atlas.publish.multisite import is_multisite, serve_multisite
    from atlas.publish.site import serve

    if is_multisite(args.run_folder):
        serve_multisite(args.run_folder, args.port)
    else:
        serve(args.run_folder, args.port)


COMMANDS = {"layers": cmd_layers, "dream": cmd_dream, "figure": cmd_figure, "build": cmd_build,
            "serve": cmd_serve, "sweep": cmd_sweep, "run": cmd_sweep, "configs": cmd_configs,
            "examples": cmd_examples, "map": cmd_map, "weights": cmd_weights, "explain": cmd_explain}
TF_COMMANDS = {"layers", "dream", "sweep", "run", "examples", "map", "weights", "explain"}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        set_verbose(args.verbose)
        if args.command in TF_COMMANDS:
            import_tensorflow()
        COMMANDS[args.command](args)
    except UserError as exc:
        print(f"atlas: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except SweepFailed as exc:
        print(f"atlas: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `atlas configs | head -1`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("atlas: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
