"""A fake run folder, written through the same manifest API as the sweep, for site and figure tests and the
site benchmark. Images are cheap coloured noise; metrics are made up but plausible."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from atlas.model.catalogue import Layer, build_catalogue
from atlas.model.synthetic import build_graph_def
from atlas.run.explainfiles import ExplainLayer
from atlas.run.manifest import (
    MANIFEST_FILE,
    WHOLE_LAYER,
    CentreUnits,
    Manifest,
    Mode,
    Render,
    image_paths,
    write_run_info,
)

PHOTOS = Path(__file__).resolve().parents[1] / "atlas" / "data" / "photos"


def synthetic_layers(scale: float = 1.0) -> list[Layer]:
    """The stand-in's catalogue (same 59 layers as the real graph; channel counts scale with `scale`)."""
    return build_catalogue(build_graph_def(scale=scale))


def keras_like_layers(blocks: int = 3, per_block: int = 3, channels: int = 8) -> list[Layer]:
    """A made-up catalogue named like a Keras ResNet's (conv1_conv, conv2_block1_1_conv ...): a stem layer, then
    `blocks` blocks of `per_block` layers, channels doubling per block."""
    layers = [Layer("conv1_conv", "conv1_conv/Conv2D", channels, 7, 7, 2, 3, "conv1", 0, 1, 7, 2)]
    for block in range(blocks):
        for unit in range(per_block):
            index = len(layers)
            name = f"conv{block + 2}_block1_{unit + 1}_conv"
            width = channels * 2 ** block
            layers.append(Layer(name, f"{name}/Conv2D", width, 3, 3, 1, layers[-1].channels, f"conv{block + 2}",
                                index, index + 1, 7 + 8 * index, 2 ** (block + 2)))
    return layers


def make_fake_run(folder: Path, layers: list[Layer] | None = None, photos: tuple[str, ...] = ("chelsea",),
                  fraction: float = 1.0, size: int = 64, thumb: int = 32, layer_dreams: bool = True,
                  seed: int = 0, thumb_ext: str | None = None, fourier_facets: int = 0,
                  neuron: dict[str, tuple[int, int, int, int]] | None = None, spec: str = "synthetic:0.125",
                  run_name: str | None = None, rendered: dict[str, int] | None = None) -> Path:
    """Write run.json, images and manifest rows for `fraction` of every layer's channels in every mode (with
    `rendered`, layer -> N: the first N channels of those layers only, recorded as the run's plan, as a sweep of a
    few layers of a large model leaves it); with
    `fourier_facets` N, also a `fourier` mode rendered with diversity N (N images per channel); with `neuron`
    (layer -> box), every mode maximises the neuron objective and the noise modes record those centre-unit boxes.
    `spec` is the model spec recorded in run.json, `run_name` the run's name (default: the folder's name)."""
    layers = layers if layers is not None else synthetic_layers(0.125)
    rng = np.random.default_rng(seed)
    objective = "neuron" if neuron else "channel"
    modes = [Mode.noise(objective=objective)] + ([Mode.fourier(fourier_facets, objective)] if fourier_facets else [])
    for name in photos:
        (folder / "photos").mkdir(parents=True, exist_ok=True)
        shutil.copy(PHOTOS / f"{name}.jpg", folder / "photos" / f"{name}.jpg")
        modes.append(Mode.for_photo(name, f"photos/{name}.jpg", "test credit, CC0", objective))
    units = {mode.id: CentreUnits(size, size, neuron) for mode in modes if mode.kind == "noise"} if neuron else None
    settings = {"render": {"size": size}, "seed": seed,
                "formats": {"web": {"size": size, "format": "jpg"}, "thumb": {"size": thumb, "format": "jpg"}}}
    planned = {} if rendered is None else {"planned": {mode.id: {name: f"0-{count - 1}" for name, count in
                                                                  rendered.items()} for mode in modes}}
    write_run_info(folder, run_name or folder.name, {"spec": spec, "sha256": "0" * 64}, layers, modes,
                   settings, units, versions={"atlas": "test"}, **planned)
    tile = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    renders = []
    for mode in modes:
        for layer in layers:
            if rendered is not None and layer.name not in rendered:
                continue
            count = (rendered[layer.name] if rendered is not None else
                     max(1, int(round(layer.channels * fraction))) if fraction > 0 else 0)
            channels = list(range(count)) + ([WHOLE_LAYER] if layer_dreams and mode.kind == "photo" else [])
            for channel in channels:
                for facet in range(mode.facets):
                    paths = image_paths(mode.id, layer.name, channel, thumb_ext=thumb_ext, facet=facet)
                    _write_images(folder, paths, np.roll(tile, channel * 7 + layer.index + facet * 3, axis=1), thumb)
                    renders.append(Render(layer=layer.name, channel=channel, mode=mode.id, seed=seed,
                                          settings_hash="fake", start=0.1, end=2.0 + channel % 5, lift=5.0,
                                          rank=1 + channel % 3, specific=True, seconds=0.5, image=paths[0],
                                          web=paths[1], thumb=paths[2], versions=json.dumps({"atlas": "test"}),
                                          created=0.0, facet=facet))
    with Manifest(folder / MANIFEST_FILE, create=True) as manifest:
        manifest.add(renders)
    return folder


def add_fake_classes(folder: Path, classes: tuple[tuple[int, str], ...] = ((1, "goldfish"), (285, "Egyptian cat")),
                     count: int = 1000, size: int = 64, thumb: int = 32) -> Path:
    """Record class visualisations of `classes` ((index, label) each) in the run's noise mode, each with an
    importance mask beside it (its left half bright), and the classes in run.json, as a sweep with `classes:` does."""
    from atlas.run.manifest import CLASS_LAYER, CLASSES, extra_paths, read_run_info, rewrite_run_info

    info = read_run_info(folder)
    info[CLASSES] = {"count": count, "logits": "logits", "modes": ["noise"],
                     "list": [{"index": index, "label": label} for index, label in classes]}
    rewrite_run_info(folder, info)
    rng = np.random.default_rng(len(classes))
    mask = np.zeros((size, size), np.uint8)
    mask[:, : size // 2] = 255
    renders = []
    for index, _ in classes:
        paths = image_paths("noise", CLASS_LAYER, index)
        _write_images(folder, paths, rng.integers(0, 255, (size, size, 3), dtype=np.uint8), thumb)
        mask_path = extra_paths("noise", CLASS_LAYER, index)[0]
        Image.fromarray(mask).save(folder / mask_path)
        renders.append(Render(layer=CLASS_LAYER, channel=index, mode="noise", seed=0, settings_hash="fakeclass",
                              start=-1.0, end=9.0, lift=4.0, rank=1, specific=True, seconds=0.5, image=paths[0],
                              web=paths[1], thumb=paths[2], versions=json.dumps({"atlas": "test"}), mask=mask_path))
    with Manifest(folder / MANIFEST_FILE, create=True) as manifest:
        manifest.add(renders)
    return folder


def _write_images(folder: Path, paths: tuple[str, str, str], pixels: np.ndarray, thumb: int) -> None:
    image = Image.fromarray(pixels)
    (folder / paths[0]).parent.mkdir(parents=True, exist_ok=True)
    image.save(folder / paths[0])
    image.save(folder / paths[1], quality=85)
    image.resize((thumb, thumb)).save(folder / paths[2], quality=80)


def add_fake_examples(folder: Path, layers: list[Layer], photos: tuple[str, ...] = ("chelsea", "coffee", "rocket"),
                      top: int = 3, fraction: float = 0.5, seed: int = 0) -> Path:
    """Record made-up dataset examples (for `fraction` of every layer's channels) through the manifest API, with
    real thumbnail and crop files, as `atlas examples` would leave them."""
    from atlas.run.manifest import Example, PhotoRecord, example_crop_path, example_photo_path

    rng = np.random.default_rng(seed)
    hash_ = "fakeexamples0000"
    records = []
    for name in photos:
        sha = hashlib.sha256(name.encode()).hexdigest()
        image = Image.open(PHOTOS / f"{name}.jpg").convert("RGB")
        thumb = example_photo_path(hash_, sha)
        (folder / thumb).parent.mkdir(parents=True, exist_ok=True)
        image.resize((image.width // 2, image.height // 2)).save(folder / thumb, quality=80)
        records.append((PhotoRecord(f"{name}.jpg", sha, "fake", image.width, image.height, image.width,
                                     image.height, 0, 0, thumb), image))
    lists = {}
    for layer in layers:
        for channel in range(max(1, int(layer.channels * fraction))):
            entries = []
            for rank, index in enumerate(rng.permutation(len(records))[:top], start=1):
                photo, image = records[index]
                row, col = (int(v) for v in rng.integers(0, 8, 2))
                x0, y0 = int(rng.integers(0, photo.width // 2)), int(rng.integers(0, photo.height // 2))
                box = (x0, y0, x0 + photo.width // 4, y0 + photo.height // 4)
                crop = example_crop_path(hash_, layer.name, photo.sha256, row, col)
                if not (folder / crop).exists():
                    (folder / crop).parent.mkdir(parents=True, exist_ok=True)
                    image.crop(box).resize((48, 48)).save(folder / crop, quality=80)
                entries.append(Example(layer.name, channel, rank, photo.photo, photo.sha256, 10.0 - rank, row, col,
                                       box, crop))
            lists[(layer.name, channel)] = entries
    with Manifest(folder / MANIFEST_FILE, create=True) as manifest:
        manifest.reset_examples({"folder": "/photos", "top": top, "size": 224, "fit": "crop", "hash": hash_})
        manifest.record_examples([photo for photo, _ in records], [], lists)
    return folder


def add_fake_map(folder: Path, layer: str, sources: list[tuple[str, int]], grids: tuple[int, ...] = (3, 6),
                 fraction: float = 0.6, rendered: float = 0.8, seed: int = 0) -> Path:
    """Write a made-up activation atlas of `layer` (whose channels are `sources`: catalogued layer and channel)
    as `atlas map` leaves it: cells.json, directions, renders for `rendered` of the kept cells, photo crops."""
    from atlas.run.mapfiles import CELLS_FILE, MapCell, cell_leaf, map_dir

    rng = np.random.default_rng(seed)
    root = folder / map_dir(layer)
    crop = f"{map_dir(layer)}/crops/fake-0-0.jpg"
    (folder / crop).parent.mkdir(parents=True, exist_ok=True)
    Image.open(PHOTOS / "chelsea.jpg").convert("RGB").resize((48, 48)).save(folder / crop, quality=80)
    cells = []
    for zoom, grid in enumerate(grids):
        for row in range(grid):
            for col in range(grid):
                if rng.random() > fraction:
                    continue
                leaf = cell_leaf(grid, row, col)
                direction = rng.normal(size=len(sources)).astype(np.float32)
                (root / "directions" / leaf).parent.mkdir(parents=True, exist_ok=True)
                np.save(root / "directions" / f"{leaf}.npy", direction)
                render = f"{map_dir(layer)}/cells/{leaf}.png"
                if rng.random() < rendered:
                    (folder / render).parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / render)
                top = np.argsort(-direction)[:4]
                channels = [{"source": int(c), "layer": sources[c][0], "channel": sources[c][1],
                             "weight": float(direction[c] / np.linalg.norm(direction))} for c in top]
                cells.append(MapCell(zoom, grid, row, col, int(rng.integers(5, 90)), f"directions/{leaf}.npy", render,
                                     channels, [{"photo": "chelsea.jpg", "row": 0, "col": 0, "crop": crop}]))
    info = {"layer": layer, "format": 1, "hash": "fake", "samples": sum(c.count for c in cells if c.zoom == 0),
            "photos": 12, "channels": len(sources), "folder": "/photos", "grids": list(grids), "min_samples": 5,
            "seed": seed, "umap": {"n_neighbors": 50, "min_dist": 0.05, "metric": "cosine"}}
    (root / CELLS_FILE).write_text(json.dumps({**info, "cells": [c.to_dict() for c in cells]}))
    return folder


def add_fake_circuits(folder: Path, model, layers: list[str] | None = None, top: int = 3, seed: int = 0,
                      sha: str = "0" * 64) -> Path:
    """Store made-up circuits (random kernels in the real sources' shapes, through the pass's own writer) for
    `layers` of `model` (default: all), keyed by `sha` (the fake run's model sha256)."""
    from atlas.analysis.circuits import open_index, write_layer
    from atlas.model.circuits import KINDS, edge_source
    from atlas.run.circuits import circuits_folder

    rng = np.random.default_rng(seed)
    target = circuits_folder(folder, sha)
    index = open_index(target, sha, top)
    for layer in model.layers:
        if layers is not None and layer.name not in layers:
            continue
        kernels = {}
        for kind in KINDS:
            source = edge_source(model, layer, kind)
            shape = (layer.channels, len(source.units), source.window, source.window)
            kernels[kind] = (source, rng.normal(0, 0.1, shape).astype(np.float32))
        write_layer(target, index, layer.name, kernels)
    return target


BRANCHES = ("1x1", "3x3", "5x5", "pool_reduce")  # a GoogLeNet block output's channels, in concatenation order


def explain_layer(layers: list[Layer], name: str, grid: int) -> ExplainLayer:
    """An explained layer of `grid` x `grid` positions: a catalogued layer (its channels are its own), or a block
    output such as `mixed4d` (its channels are its branches' `<block>_<branch>_pre_relu`, concatenated)."""
    by_name = {layer.name: layer for layer in layers}
    if name in by_name:
        return ExplainLayer(name, by_name[name].channels, grid, grid)
    branches = [by_name[f"{name}_{branch}_pre_relu"] for branch in BRANCHES if f"{name}_{branch}_pre_relu" in by_name]
    sources = [(layer.name, c) for layer in branches for c in range(layer.channels)]
    return ExplainLayer(name, len(sources), grid, grid, sources)


def add_fake_explain(folder: Path, layers: list[ExplainLayer], photos: tuple[str, ...] = ("chelsea", "coffee"),
                     classes: int = 5, groups: int = 3, top: int = 6, size: int = 224, seed: int = 0,
                     render_groups: bool = True, classifier: str | None = "softmax2_pre_activation",
                     between: tuple[str, int] | None = None) -> Path:
    """Write a made-up `explain/` folder as `atlas explain` leaves it: index.json, per photo its fitted photo.jpg
    (the centred square at `size`), one npz per layer with the contract's arrays, and the group renders. The arrays
    agree with each other where the pages rely on it: the activations are the product of the NMF factors, and the
    dictionary holds each position's `top` strongest channels of that product. With `classifier` None there are no
    classes (k = 0), as for a model without class logits. With `between` (a lower layer, its grid), each layer also
    holds a made-up attribution from that layer (`from_<lower>`)."""
    from atlas.run.explainfiles import (
        INDEX_FILE,
        PHOTO_FILE,
        ClassScore,
        ExplainedPhoto,
        ExplainIndex,
        LayerExplanation,
        group_render,
        layer_file,
        photo_dir,
    )

    rng = np.random.default_rng(seed)
    k = classes if classifier else 0
    shown = []
    for name in photos:
        source = PHOTOS / f"{name}.jpg"
        sha = hashlib.sha256(source.read_bytes()).hexdigest()
        image = Image.open(source).convert("RGB")
        side = min(image.size)
        left, top_edge = (image.width - side) // 2, (image.height - side) // 2
        (folder / photo_dir(sha)).mkdir(parents=True, exist_ok=True)
        image.crop((left, top_edge, left + side, top_edge + side)).resize((size, size)).save(
            folder / photo_dir(sha) / PHOTO_FILE, quality=85)
        indices = rng.choice(1000, k, replace=False).astype(np.int32)
        logits = np.sort(rng.normal(8.0, 2.0, k))[::-1].astype(np.float32)
        for layer in layers:
            gs = _blobs(rng, groups, layer.height, layer.width)
            gc = (rng.random((groups, layer.channels)) ** 4).astype(np.float32)
            acts = np.einsum("ghw,gc->hwc", gs, gc)
            n = min(top, layer.channels)
            strongest = np.argsort(-acts, axis=-1, kind="stable")[..., :n].astype(np.int32)
            group_classes = rng.normal(size=(groups, k)).astype(np.float32)
            spatial = np.einsum("gk,ghw->khw", group_classes, gs) + rng.normal(0, 0.05, (k, layer.height, layer.width))
            channels = np.einsum("gk,gc->kc", group_classes, gc) + rng.normal(0, 0.05, (k, layer.channels))
            data = LayerExplanation(layer.name, indices, logits, spatial.astype(np.float32),
                                    channels.astype(np.float32), gs, gc, group_classes, strongest,
                                    np.take_along_axis(acts, strongest, -1).astype(np.float32),
                                    between={} if between is None else
                                    {between[0]: _feeds(rng, layer.height, layer.width, between[1])})
            np.savez(folder / layer_file(sha, layer.name), **data.arrays())
            for g in range(groups if render_groups else 0):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
                    folder / group_render(sha, layer.name, g))
        scores = [ClassScore(int(i), f"label {int(i)}", float(v)) for i, v in zip(indices, logits)]
        shown.append(ExplainedPhoto(f"{name}.jpg", sha, scores, [layer.name for layer in layers]))
    index = ExplainIndex(shown, {layer.name: layer for layer in layers},
                         {"classes": k, "groups": groups, "top": top, "seed": seed, "size": size,
                          "baseline": "photos", "reference_photos": 4, "ig_steps": 16, "between": between is not None},
                         classifier)
    (folder / INDEX_FILE).write_text(json.dumps(index.to_dict(), indent=1))
    return folder


def _blobs(rng: np.random.Generator, count: int, height: int, width: int) -> np.ndarray:
    """`count` smooth non-negative maps [count, height, width], each a Gaussian blob at a random place."""
    y, x = np.mgrid[0:height, 0:width]
    centres = rng.random((count, 2)) * [height, width]
    spread = (0.2 + 0.25 * rng.random(count)) * max(height, width)
    d2 = (y[None] - centres[:, 0, None, None]) ** 2 + (x[None] - centres[:, 1, None, None]) ** 2
    return np.exp(-d2 / (2 * spread[:, None, None] ** 2)).astype(np.float32)


def _feeds(rng: np.random.Generator, height: int, width: int, grid: int) -> np.ndarray:
    """A made-up attribution from a `grid` x `grid` lower layer [height, width, grid, grid]: each position is fed
    mostly by the lower positions under it (a positive blob there) and lowered by a weaker blob elsewhere."""
    y, x = np.mgrid[0:grid, 0:grid]
    out = np.empty((height, width, grid, grid), np.float32)
    for row in range(height):
        for col in range(width):
            cy, cx = (row + 0.5) * grid / height, (col + 0.5) * grid / width
            oy, ox = rng.random(2) * grid
            near, far = (y - cy) ** 2 + (x - cx) ** 2, (y - oy) ** 2 + (x - ox) ** 2
            out[row, col] = np.exp(-near / 2) - 0.5 * np.exp(-far / 2) + rng.normal(0, 0.02, (grid, grid))
    return out
