"""The distributions behind the tests' bounds: every statistic of renders, layouts or samples a test bounds,
re-measured over seeds and precisions.

A statistic measured once on one machine is a coin toss as a bound on the next (other oneDNN and OpenBLAS
kernels, numba compiled for the host CPU). For each statistic a test in tests/ bounds, this script repeats the
test's computation over `--seeds` seeds (the render seed, or the map's seed) under each `--precisions` and prints
the test's bound beside min / median / max; the tests set their bounds below the worst value here with a margin
and quote these ranges in their docstrings. Kernels vary with the CPU; here they also vary with the batch size
(the drift statistics compare a batch of 4 with a render alone) and with `--isa`:

    python benchmarks/test_bounds.py                      # everything, 10 seeds, float32 and bfloat16
    python benchmarks/test_bounds.py --only maps_specificity --seeds 20
    python benchmarks/test_bounds.py --isa AVX2           # ONEDNN_MAX_CPU_ISA=AVX2 (set before TensorFlow loads)

`--list` prints the statistics and the tests that bound them. Whole run: see docs/benchmarks.md#test-bounds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Statistic:
    """One bounded figure: its name, the test that bounds it and how (`bound`, text), and whether larger is
    better (the worst seed is then the minimum)."""

    name: str
    bound: str
    larger_is_better: bool = True


@dataclass(frozen=True)
class Measurement:
    """A function of (models, seed, precision) returning {statistic name: value}, and the statistics it gives."""

    test: str
    stats: tuple[Statistic, ...]
    run: Callable[..., dict[str, float]]
    precisions: bool = True  # False: the measurement compares precisions itself (or has none)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(float).ravel(), b.astype(float).ravel()
    return float(np.corrcoef(a - a.mean(), b - b.mean())[0, 1])


# ------------------------------------------------------------------------------------------------------------
# The measurements, one per test (or per fixture several tests share), in the tests' own settings


def render_metrics(models, seed: int, precision: str) -> dict[str, float]:
    """tests/test_render.py::test_metrics_hold_over_ten_layers_low_to_high: 8 channels of 10 layers of the
    quarter-width stand-in at the default settings."""
    from atlas.render.loop import render_channels
    from atlas.render.settings import RenderSettings

    model = models("synthetic:0.25")
    specific = top = above = total = 0
    for index in np.linspace(0, 56, 10).astype(int):
        layer = model.layers[index]
        rng = np.random.default_rng(layer.index)
        channels = sorted(rng.choice(layer.channels, min(8, layer.channels), replace=False).tolist())
        results = render_channels(model, layer.name, channels, settings=RenderSettings(precision=precision),
                                  seed=seed)
        for result in results:
            specific += bool(result.specific)
            top += result.rank <= max(1, int(layer.channels * 0.1))
            total += 1
        above += own_above_mean(model, layer.name, results, "channel")
    return {"render.specific_share": specific / total, "render.top10_share": top / total,
            "render.above_mean_share": above / total}


FOURIER = {"method": "fourier", "size": 64, "steps": 128}


def fourier_ten_layers(models, seed: int, precision: str) -> dict[str, float]:
    """tests/test_fourier.py's ten_layers fixture and its two tests: specificity and median lift of both methods,
    and the finest-level share of the Fourier renders against the same Adam steps on pixels."""
    from atlas.images import to_uint8
    from atlas.render import fourier, param, transforms
    from atlas.render.loop import render_channels
    from atlas.render.settings import RenderSettings

    model = models("synthetic:0.125")
    methods = {"deepdream": RenderSettings(size=64, batch_size=4, precision=precision),
               "fourier": RenderSettings(**FOURIER, batch_size=4, precision=precision)}
    picks = [(model.layers[i].name, list(range(min(4, model.layers[i].channels))))
             for i in np.linspace(0, 56, 10).astype(int)]
    renders = {m: [render_channels(model, layer, channels, settings=s, seed=seed) for layer, channels in picks]
               for m, s in methods.items()}
    out = {}
    for m, per_layer in renders.items():
        results = [r for layer in per_layer for r in layer]
        out[f"fourier.specific_{m}"] = float(np.mean([bool(r.specific) for r in results]))
        out[f"fourier.median_lift_{m}"] = float(np.median([r.lift for r in results]))
    out["fourier.specific_fourier_minus_deepdream"] = (out["fourier.specific_fourier"]
                                                       - out["fourier.specific_deepdream"])
    out["fourier.lift_ratio"] = out["fourier.median_lift_fourier"] / out["fourier.median_lift_deepdream"]
    s = methods["fourier"]
    fourier_share, pixel_share = [], []
    for (layer, channels), results in zip(picks, renders["fourier"]):
        fourier_share.append(transforms.finest_band_share(np.stack([r.image for r in results])).mean())
        keys = [fourier.image_key(seed, c, 0) for c in channels]
        finals = fourier.dream_fourier(model, layer, np.array(channels), keys, s.size, s.steps, s.learning_rate,
                                       s.spectrum_std, "channel", parameterisation=param.PIXEL,
                                       precision=precision).final
        pixel_share.append(transforms.finest_band_share(to_uint8(finals)).mean())
    fourier_share, pixel_share = np.array(fourier_share), np.array(pixel_share)
    out["noise.share_ratio"] = float(fourier_share.mean() / pixel_share.mean())
    out["noise.layers_fourier_below_pixels"] = float((fourier_share < pixel_share).sum())
    return out


def transforms_noise(models, seed: int, precision: str) -> dict[str, float]:
    """tests/test_fourier.py::test_transforms_keep_pixel_noise_out_of_fourier_renders: finest-level share without
    the transforms over with them, the smaller of the two layers."""
    from atlas.render import transforms
    from atlas.render.loop import render_channels
    from atlas.render.settings import RenderSettings

    model = models("synthetic:0.125")
    layers = ["mixed3b_5x5_bottleneck_pre_relu", "mixed4c_5x5_pre_relu"]
    settings = RenderSettings(**FOURIER, precision=precision)

    def shares(settings: RenderSettings) -> np.ndarray:
        results = [r for layer in layers for r in render_channels(model, layer, [0, 1, 2, 3], settings=settings,
                                                                  seed=seed)]
        return transforms.finest_band_share(np.stack([r.image for r in results])).reshape(len(layers), -1).mean(1)

    robust, plain = shares(settings), shares(replace(settings, transforms=()))  # the empty chain: no transform
    return {"noise.identity_over_transforms": float((plain / robust).min())}


DRIFT_LAYERS = {"deepdream": ["mixed3a_3x3_pre_relu", "mixed4d_1x1_pre_relu",
                              "mixed4d_3x3_bottleneck_pre_relu", "mixed5b_5x5_pre_relu"],
                "fourier": ["conv2d2_pre_relu", "mixed3b_5x5_pre_relu", "mixed4c_1x1_pre_relu",
                            "mixed4d_3x3_bottleneck_pre_relu"]}


def batch_drift(method: str) -> Callable[..., dict[str, float]]:
    """tests/test_render.py's and tests/test_fourier.py's whole-render drift tests: channel 2 in a batch of 4 and
    alone, worst over the test's four layers."""

    def run(models, seed: int, precision: str) -> dict[str, float]:
        from atlas.render.loop import render_channels
        from atlas.render.settings import RenderSettings

        model = models("synthetic:0.125")
        settings = (RenderSettings(precision=precision) if method == "deepdream"
                    else RenderSettings(**{**FOURIER, "steps": 24}, precision=precision))
        margin, over_mean, same, rank, end = [], [], [], [], []
        for layer in DRIFT_LAYERS[method]:
            batched = render_channels(model, layer, [0, 1, 2, 3], settings=replace(settings, batch_size=4), seed=seed)
            alone = render_channels(model, layer, [2], settings=replace(settings, batch_size=1), seed=seed)[0]
            corr = correlation(batched[2].image, alone.image)
            others = [correlation(batched[i].image, alone.image) for i in (0, 1, 3)]
            same.append(corr)
            margin.append(corr - max(others))
            over_mean.append(corr - float(np.mean(others)))
            rank.append(abs(alone.rank - batched[2].rank))
            end.append(abs(alone.end - batched[2].end) / abs(batched[2].end))
        return {f"drift.{method}.corr": min(same), f"drift.{method}.corr_minus_other": min(margin),
                f"drift.{method}.corr_minus_mean_other": min(over_mean),
                f"drift.{method}.rank_change": max(rank), f"drift.{method}.end_change": max(end)}

    return run


def one_step(method: str) -> Callable[..., dict[str, float]]:
    """The one-step tests of both methods (batch of 4 against alone, every sixth layer): the largest and the
    mean grey-level difference, worst over the layers."""

    def run(models, seed: int, precision: str) -> dict[str, float]:
        from atlas.render.loop import render_channels
        from atlas.render.settings import RenderSettings

        model = models("synthetic:0.125")
        settings = (RenderSettings(octaves=1, steps=1, precision=precision) if method == "deepdream"
                    else RenderSettings(**{**FOURIER, "steps": 1}, precision=precision))
        largest, mean, end = 0.0, 0.0, 0.0
        for layer in model.layers[0:59:6]:
            channels = list(range(min(4, layer.channels)))
            batched = render_channels(model, layer.name, channels, settings=replace(settings, batch_size=4), seed=seed)
            alone = render_channels(model, layer.name, channels[-1:], settings=replace(settings, batch_size=1),
                                    seed=seed)[0]
            difference = np.abs(batched[-1].image.astype(int) - alone.image.astype(int))
            largest, mean = max(largest, float(difference.max())), max(mean, float(difference.mean()))
            end = max(end, abs(alone.end - batched[-1].end) / max(abs(batched[-1].end), 1.0))
        return {f"step.{method}.max_grey": largest, f"step.{method}.mean_grey": mean, f"step.{method}.end_change": end}

    return run


def diversity_facets(models, seed: int, precision: str) -> dict[str, float]:
    """tests/test_fourier.py::test_diversity_facets_differ_and_each_excites_the_channel, worst over its layers."""
    from atlas.render.loop import render_channels
    from atlas.render.settings import RenderSettings

    model = models("synthetic:0.125")
    settings = RenderSettings(**FOURIER, precision=precision)
    corr, lift = [], []
    for layer in ["conv2d2_pre_relu", "mixed3b_3x3_pre_relu", "mixed4e_3x3_pre_relu"]:
        single = render_channels(model, layer, [3], settings=settings, seed=seed)[0]
        facets = render_channels(model, layer, [3], settings=replace(settings, diversity=4), seed=seed)
        corr.append(max(correlation(facets[i].image, facets[j].image) for i in range(4) for j in range(i + 1, 4)))
        lift.append(min(f.lift for f in facets) / single.lift)
    return {"facets.max_pair_corr": max(corr), "facets.min_lift_over_single": min(lift)}


def diversity_gram(models, seed: int, precision: str, weight: float | None = None) -> dict[str, float]:
    """tests/test_fourier.py::test_diversity_term_pushes_gram_matrices_apart (DeepDream, conv2d2), at the default
    diversity weight or at `weight`."""
    import tensorflow as tf

    from atlas.render.loop import render_channels
    from atlas.render.settings import RenderSettings
    from atlas.render.objectives import Diversity

    model = models("synthetic:0.125")
    layer, settings = "conv2d2_pre_relu", RenderSettings(size=64, precision=precision)

    def gram(results) -> float:
        acts = model.layer_fn(layer)(tf.constant(np.stack([r.image for r in results]), tf.float32))
        return float(tf.reduce_sum(Diversity(len(results))(acts, tf.zeros([len(results)], tf.int32))))  # one group

    single = render_channels(model, layer, [3], settings=settings, seed=seed)[0]
    pushed = replace(settings, diversity=4, **({} if weight is None else {"diversity_weight": weight}))
    facets = render_channels(model, layer, [3], settings=pushed, seed=seed)
    free = render_channels(model, layer, [3], settings=replace(settings, diversity=4, diversity_weight=0), seed=seed)
    key = "gram" if weight is None else f"gram@{weight:g}"
    return {f"{key}.with_over_without": gram(facets) / gram(free),
            f"{key}.min_lift_over_single": min(f.lift for f in facets) / single.lift}


def neuron_objective(models, seed: int, precision: str) -> dict[str, float]:
    """tests/test_fourier.py::test_neuron_objective_raises_the_centre_unit: specific renders of 3, and the
    smallest lift, per method."""
    from atlas.render.loop import render_channels
    from atlas.render.settings import RenderSettings

    model = models("synthetic:0.125")
    out = {}
    for method, settings in {"deepdream": RenderSettings(size=64, objective="neuron", steps=10),
                             "fourier": RenderSettings(**{**FOURIER, "steps": 48}, objective="neuron")}.items():
        results = render_channels(model, "mixed4a_3x3_pre_relu", [0, 1, 2],
                                  settings=replace(settings, precision=precision), seed=seed)
        out[f"neuron.{method}.specific_of_3"] = float(sum(bool(r.specific) for r in results))
        out[f"neuron.{method}.above_mean_of_3"] = float(own_above_mean(model, "mixed4a_3x3_pre_relu", results))
        out[f"neuron.{method}.min_lift"] = min(r.lift for r in results)
    return out


BLOCK_OUTPUT = "block9_add"  # tests/test_block_outputs.py: a residual sum of the trained EfficientNet-Lite0
BLOCK_RENDER = {"size": 96, "octaves": 2, "steps": 10}  # that test's sweep settings (its config's `render:`)


def block_output_sweep(models, seed: int, precision: str) -> dict[str, float]:
    """tests/test_block_outputs.py::test_a_sweep_renders_a_block_output_and_its_renders_are_specific: the first 8
    channels of efficientnet-lite0's block9_add at the test sweep's settings: renders that are their channel's
    most active of all 112 (rank 1), specific ones, ones above the mean of the others, and the smallest lift."""
    from atlas.render.loop import render_channels
    from atlas.render.settings import RenderSettings

    model = models("efficientnet-lite0")
    results = render_channels(model, BLOCK_OUTPUT, list(range(8)),
                              settings=RenderSettings(**BLOCK_RENDER, precision=precision), seed=seed)
    return {"blocks.rank1_share": sum(r.rank == 1 for r in results) / len(results),
            "blocks.specific_share": sum(bool(r.specific) for r in results) / len(results),
            "blocks.above_mean_share": own_above_mean(model, BLOCK_OUTPUT, results, "channel") / len(results),
            "blocks.min_lift": min(r.lift for r in results)}


def own_above_mean(model, layer: str, results, objective: str = "neuron") -> int:
    """How many renders excite their own channel (its centre unit: `neuron`; its mean: `channel`) more than the
    mean of the other renders do (as tests/test_fourier.py::test_neuron_objective_raises_the_centre_unit and
    tests/test_render.py::test_metrics_hold_over_ten_layers_low_to_high count them)."""
    from atlas.render.loop import readings

    values = readings(model, layer, np.stack([r.image for r in results]).astype(np.float32), 8, objective)
    own = np.array([r.channel for r in results])
    cross = values[:, own]  # cross[i, j]: render j's channel's value on render i
    others = np.where(np.eye(len(own), dtype=bool), np.nan, cross)
    return int((np.diag(cross) > np.nanmean(others, axis=0)).sum())


def photo_tiling(models, seed: int, precision: str) -> dict[str, float]:
    """tests/test_render.py::test_photo_dream_keeps_the_photo_size_and_tiles_without_seams: tiled over untiled
    lift."""
    from atlas.images import load_photo
    from atlas.render.loop import render_channels
    from atlas.render.settings import RenderSettings

    model = models("synthetic:0.125")
    photo, layer = load_photo("chelsea"), "mixed4c_pool_reduce_pre_relu"
    tiled = render_channels(model, layer, [0, 1], photo, RenderSettings(photo_octaves=2, photo_steps=4, tile=160,
                                                                         precision=precision), seed=seed)
    untiled = render_channels(model, layer, [0], photo, RenderSettings(photo_octaves=2, photo_steps=4, tile=1024,
                                                                       precision=precision), seed=seed)[0]
    return {"photo.tiled_over_untiled_lift": tiled[0].lift / untiled.lift,
            "photo.min_lift": min(r.lift for r in tiled)}


def _map_photos(root: Path) -> Path:
    """tests/test_maps.py's `photos` fixture: ten smooth random colour images and the cat."""
    from PIL import Image

    from atlas.images import PHOTOS_DIR

    for i in range(10):
        rng = np.random.default_rng(i)
        size = (140 + 10 * (i % 3), 110 + 7 * (i % 4))
        small = rng.uniform(0, 255, (size[1] // 16 + 2, size[0] // 16 + 2, 3)).astype(np.uint8)
        Image.fromarray(small).resize(size, Image.Resampling.BICUBIC).save(root / f"p{i:02d}.png")
    (root / "sub").mkdir()
    shutil.copy(PHOTOS_DIR / "chelsea.jpg", root / "sub" / "chelsea.jpg")
    return root


def maps_specificity(models, seed: int, precision: str) -> dict[str, float]:
    """tests/test_maps.py::test_cell_renders_are_specific_and_resumable with the map's seed `seed`: the share of
    specific cells (own render beats every other cell's render), and the share whose own render beats the mean
    of the other cells' renders; as a control, the same two shares for the cells' start images (no ascent)."""
    from atlas.run.mapfiles import read_map
    from atlas.analysis.maps import run_map
    from atlas.run.plan import resolve_map

    model = models("synthetic:0.125")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "photos").mkdir()
        photos = _map_photos(Path(tmp) / "photos")
        plan = resolve_map(str(photos), model, seed, layers=["mixed4c"], samples=700, per_photo=64, grid=[10],
                           min_samples=4, neighbours=10, size=160, batch_size=4, crops=2, render=True)
        plan = replace(plan, render=replace(plan.render, precision=precision))
        run = Path(tmp) / "run"
        run_map(plan, run, model, progress=False)
        data = read_map(run, "mixed4c")
        out = {"maps.cells": float(len(data.cells))}
        for key, images in (("", _cell_images(run, data.cells)), ("start.", _start_images(plan, data.cells))):
            values = _cell_matrix(model, run, data, plan, images)
            own = np.diag(values)
            others = np.where(np.eye(len(values), dtype=bool), np.nan, values)
            out[f"maps.{key}specific_share"] = float(np.mean(own > np.nanmax(others, axis=0)))
            out[f"maps.{key}above_mean_share"] = float(np.mean(own > np.nanmean(others, axis=0)))
        return out


def _cell_images(run: Path, cells) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(run / c.render).convert("RGB")) for c in cells]).astype(np.float32)


def _start_images(plan, cells) -> np.ndarray:
    from atlas.images import to_uint8
    from atlas.render.loop import noise_start
    from atlas.analysis.maps import cell_seed_key

    return to_uint8(np.stack([noise_start(cell_seed_key(c.grid, c.row, c.col), plan.seed, plan.render)
                              for c in cells])).astype(np.float32)


def _cell_matrix(model, run: Path, data, plan, images: np.ndarray) -> np.ndarray:
    """values[i, j]: cell j's direction objective on image i (as atlas.run.maps.record_specificity reads it)."""
    from atlas.render.objectives import direction_matrix
    from atlas.run.mapfiles import map_dir
    from atlas.analysis.maps import centre_activations

    folder = run / map_dir("mixed4c")
    acts = centre_activations(model, model.tensor_name("mixed4c"), images)
    directions = np.stack([np.load(folder / c.direction) for c in data.cells])
    return direction_matrix(acts, directions, np.load(folder / data.info["whitening"]), plan.power)


def bfloat16_gradient(models, seed: int, precision: str) -> dict[str, float]:
    """tests/test_model.py::test_bfloat16_layer_function_gives_a_gradient_close_to_float32 with image seed
    `seed`: cosine of the two input gradients and |norm ratio - 1|."""
    import tensorflow as tf

    model = models("synthetic:0.125")
    name = "mixed4d_3x3_bottleneck_pre_relu"
    images = tf.constant(np.random.default_rng(seed).uniform(0, 255, (2, 96, 96, 3)).astype(np.float32))
    grads = {}
    for p in ("float32", "bfloat16"):
        fn = model.layer_fn(name, p)
        with tf.GradientTape() as tape:
            tape.watch(images)
            loss = tf.reduce_mean(fn(images)[..., 3])
        grads[p] = tape.gradient(loss, images).numpy().ravel()
    g32, g16 = grads["float32"], grads["bfloat16"]
    return {"bf16.grad_cosine": float(g32 @ g16 / (np.linalg.norm(g32) * np.linalg.norm(g16))),
            "bf16.norm_ratio_off": float(abs(np.linalg.norm(g16) / np.linalg.norm(g32) - 1))}


def tv_penalty(models, seed: int, precision: str) -> dict[str, float]:
    """tests/test_objectives.py::test_a_composed_objective_renders: 10 channels of mixed4a rendered with and
    without a total-variation penalty in the objective; each render's TV with it over without it (worst and mean)."""
    import tensorflow as tf

    from atlas.render.loop import render_channels
    from atlas.render.objectives import channel, total_variation
    from atlas.render.settings import RenderSettings

    model = models("synthetic:0.125")
    out = {}
    for method in ("deepdream", "fourier"):
        settings = RenderSettings(method=method, size=32, octaves=1, steps=4 if method == "deepdream" else 8,
                                  batch_size=10, precision=precision)
        tvs = []
        for objective in (channel, channel - 1000 * total_variation):
            results = render_channels(model, "mixed4a", list(range(10)), settings=settings, objective=objective,
                                      seed=seed)
            images = tf.constant(np.stack([r.image for r in results]), tf.float32)
            tvs.append(total_variation(None, None, images).numpy())
        ratio = tvs[1] / tvs[0]
        out[f"tv.{method}.worst_ratio"] = float(ratio.max())
        out[f"tv.{method}.median_ratio"] = float(np.median(ratio))
        out[f"tv.{method}.smoother_of_10"] = float((ratio < 0.95).sum())
    return out


REAL_LAYERS = ("block3_expand", "block9_expand", "block12_project", "head_conv")  # low, middle, high, head
REAL_FOURIER = {"method": "fourier", "size": 96, "steps": 48, "batch_size": 4}


def real_renders(models, seed: int, precision: str) -> dict[str, float]:
    """tests/test_zoo.py::test_renders_of_the_trained_network_are_specific_at_every_depth: channels 0-3 of four
    layers of the trained EfficientNet-Lite0, Fourier at 96 px for 48 steps, judged by the network itself."""
    from atlas.render.loop import render_channels
    from atlas.render.settings import RenderSettings

    model = models("efficientnet-lite0")
    specific = top = above = total = 0
    for layer in REAL_LAYERS:
        results = render_channels(model, layer, [0, 1, 2, 3], seed=seed,
                                  settings=RenderSettings(**REAL_FOURIER, precision=precision))
        channels = model.layer(layer).channels
        specific += sum(bool(r.specific) for r in results)
        top += sum(r.rank <= max(1, channels // 10) for r in results)
        above += own_above_mean(model, layer, results, "channel")
        total += len(results)
    return {"real.specific_share": specific / total, "real.top10_share": top / total,
            "real.above_mean_share": above / total}


def quality_classes(models, seed: int, precision: str) -> dict[str, float]:
    """tests/test_quality.py::test_fourier_class_renders_are_their_class_and_survive_a_photocopy_for_the_siblings:
    four classes of the trained EfficientNet-Lite0 (Fourier, 128 px, 96 steps) judged by Lite0, and by Lite1 and
    Lite2 after the photocopy."""
    from atlas.analysis import quality
    from atlas.render.classes import render_classes
    from atlas.render.settings import RenderSettings

    classes = quality.even_classes(4)
    settings = RenderSettings(method="fourier", size=128, steps=96, batch_size=4, precision=precision)
    images = np.stack([r.image for r in render_classes(models("efficientnet-lite0"), classes, settings=settings,
                                                       seed=seed)])
    copied = quality.photocopy(images)
    judged = [quality.hits(quality.top_k(models(name), copied, 5), classes, 5).mean()
              for name in ("efficientnet-lite1", "efficientnet-lite2")]
    return {"quality.lite0_top1_share": quality.hits(quality.top_k(models("efficientnet-lite0"), images, 1),
                                                     classes, 1).mean(),
            "quality.judges_copy_top5": float(np.mean(judged)),
            "quality.min_contrast": float(quality.contrast(images).min())}


def maco_mask(models, seed: int, precision: str) -> dict[str, float]:
    """tests/test_quality.py::test_the_importance_mask_is_where_the_gradient_went: MACO renders of channels 0 and 1
    of Lite0's block3_expand, 128 px, 16 steps: the centre neuron (the lower share of the two masks' mass in the
    centre quarter) and, the control, the whole channel (the higher share)."""
    from atlas.render.loop import render_channels
    from atlas.render.settings import RenderSettings

    shares = {}
    for objective in ("neuron", "channel"):
        settings = RenderSettings(method="maco", objective=objective, size=128, steps=16, batch_size=2,
                                  precision=precision)
        shares[objective] = [centre_share(r.mask) for r in render_channels(
            models("efficientnet-lite0"), "block3_expand", [0, 1], settings=settings, seed=seed)]
    return {"maco.mask_centre_share": min(shares["neuron"]), "maco.mask_centre_share_channel": max(shares["channel"])}


def centre_share(mask: np.ndarray) -> float:
    """The share of a mask's mass in the centre quarter of the image (the middle half of each side)."""
    mask = mask.astype(np.float64)
    quarter = mask.shape[0] // 4
    return float(mask[quarter:-quarter, quarter:-quarter].sum() / mask.sum())

S = Statistic
MEASUREMENTS = {
    "render_metrics": Measurement("test_render.py::test_metrics_hold_over_ten_layers_low_to_high", (
        S("render.specific_share", ">= 0.8"), S("render.top10_share", ">= 0.65"),
        S("render.above_mean_share", ">= 0.9")), render_metrics),
    "fourier_ten_layers": Measurement("test_fourier.py::test_fourier_against_the_noise_method_over_ten_layers and "
                                      "::test_fourier_keeps_the_pixel_noise_of_pixel_space_ascent_out_over_ten_"
                                      "layers", (
        S("fourier.specific_deepdream", ">= 0.7"), S("fourier.specific_fourier", ">= 0.7"),
        S("fourier.specific_fourier_minus_deepdream", "not bounded"),
        S("fourier.median_lift_deepdream", "-"), S("fourier.median_lift_fourier", "-"),
        S("fourier.lift_ratio", "> 0.8"),
        S("noise.share_ratio", "< 0.7", larger_is_better=False),
        S("noise.layers_fourier_below_pixels", ">= 8 of 10")), fourier_ten_layers),
    "transforms_noise": Measurement("test_fourier.py::test_transforms_keep_pixel_noise_out_of_fourier_renders", (
        S("noise.identity_over_transforms", "> 1.3"),), transforms_noise),
    "drift_deepdream": Measurement("test_render.py::test_a_whole_render_in_another_batch_is_the_same_channels_dream", (
        S("drift.deepdream.corr", "not bounded"), S("drift.deepdream.corr_minus_other", "> 0"),
        S("drift.deepdream.corr_minus_mean_other", "> 0.1"),
        S("drift.deepdream.rank_change", "<= 2", False), S("drift.deepdream.end_change", "< 0.6", False)),
        batch_drift("deepdream")),
    "drift_fourier": Measurement("test_fourier.py::test_fourier_batched_and_alone_reach_the_same_result_where_"
                                 "rounding_drifts", (
        S("drift.fourier.corr", "not bounded"), S("drift.fourier.corr_minus_other", "> 0"),
        S("drift.fourier.corr_minus_mean_other", "> 0.1"),
        S("drift.fourier.rank_change", "<= 2", False), S("drift.fourier.end_change", "< 0.5", False)),
        batch_drift("fourier")),
    "step_deepdream": Measurement("test_render.py::test_one_batched_step_equals_the_step_alone", (
        S("step.deepdream.max_grey", "<= 1", False), S("step.deepdream.mean_grey", "< 0.01", False),
        S("step.deepdream.end_change", "rel 1e-2", False)), one_step("deepdream")),
    "step_fourier": Measurement("test_fourier.py::test_fourier_one_batched_step_equals_the_step_alone", (
        S("step.fourier.max_grey", "<= 1", False), S("step.fourier.mean_grey", "< 0.2", False),
        S("step.fourier.end_change", "rel 0.5", False)), one_step("fourier")),
    "facets": Measurement("test_fourier.py::test_diversity_facets_differ_and_each_excites_the_channel", (
        S("facets.max_pair_corr", "< 0.6", False), S("facets.min_lift_over_single", ">= 0.25")), diversity_facets),
    "gram": Measurement("test_fourier.py::test_diversity_term_pushes_gram_matrices_apart", (
        S("gram.with_over_without", "not bounded", False), S("gram.min_lift_over_single", ">= 0.5")), diversity_gram),
    "gram_strong": Measurement("test_fourier.py::test_diversity_term_pushes_gram_matrices_apart (weight 1)", (
        S("gram@1.with_over_without", "< 0.9", False), S("gram@1.min_lift_over_single", "not bounded")),
        lambda models, seed, precision: diversity_gram(models, seed, precision, weight=1.0)),
    "neuron": Measurement("test_fourier.py::test_neuron_objective_raises_the_centre_unit", (
        S("neuron.deepdream.specific_of_3", "not bounded"), S("neuron.fourier.specific_of_3", "not bounded"),
        S("neuron.deepdream.above_mean_of_3", "3 of 3"), S("neuron.fourier.above_mean_of_3", "3 of 3"),
        S("neuron.deepdream.min_lift", "> 0"), S("neuron.fourier.min_lift", "> 0")), neuron_objective),
    "photo_tiling": Measurement("test_render.py::test_photo_dream_keeps_the_photo_size_and_tiles_without_seams", (
        S("photo.tiled_over_untiled_lift", "> 0.35"), S("photo.min_lift", "> 0")), photo_tiling),
    "maps_specificity": Measurement("test_maps.py::test_cell_renders_are_specific_and_resumable", (
        S("maps.cells", ">= 20"), S("maps.specific_share", ">= 0.5"), S("maps.above_mean_share", ">= 0.85"),
        S("maps.start.specific_share", "control: < 0.5", False),
        S("maps.start.above_mean_share", "control: < 0.85", False)), maps_specificity),
    "bf16_gradient": Measurement("test_model.py::test_bfloat16_layer_function_gives_a_gradient_close_to_float32", (
        S("bf16.grad_cosine", "> 0.85"), S("bf16.norm_ratio_off", "< 0.15", False)), bfloat16_gradient,
        precisions=False),
    "block_outputs": Measurement("test_block_outputs.py::test_a_sweep_renders_a_block_output_and_its_renders_are_"
                                 "specific", (
        S("blocks.rank1_share", ">= 0.75"), S("blocks.specific_share", ">= 0.75"),
        S("blocks.above_mean_share", ">= 0.875"), S("blocks.min_lift", "> 3")), block_output_sweep),
    "tv_penalty": Measurement("test_objectives.py::test_a_composed_objective_renders", (
        S("tv.deepdream.worst_ratio", "not bounded", False), S("tv.deepdream.median_ratio", "< 0.9", False),
        S("tv.deepdream.smoother_of_10", ">= 8"), S("tv.fourier.worst_ratio", "not bounded", False),
        S("tv.fourier.median_ratio", "< 0.9", False), S("tv.fourier.smoother_of_10", ">= 8")),
        tv_penalty),
    "real_renders": Measurement("test_zoo.py::test_renders_of_the_trained_network_are_specific_at_every_depth", (
        S("real.specific_share", ">= 0.75"), S("real.top10_share", ">= 0.75"),
        S("real.above_mean_share", ">= 0.9")), real_renders),
    "quality_classes": Measurement("test_quality.py::test_fourier_class_renders_are_their_class_and_survive_a_"
                                   "photocopy_for_the_siblings", (
        S("quality.lite0_top1_share", ">= 0.75"), S("quality.judges_copy_top5", ">= 0.375"),
        S("quality.min_contrast", ">= 20")), quality_classes),
    "maco_mask": Measurement("test_quality.py::test_the_importance_mask_is_where_the_gradient_went", (
        S("maco.mask_centre_share", ">= 0.9"),
        S("maco.mask_centre_share_channel", "control: < 0.4", larger_is_better=False)), maco_mask),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0 .. N-1 (default 10)")
    parser.add_argument("--start", type=int, default=0, help="begin at this seed (to continue a run cut short)")
    parser.add_argument("--only", nargs="+", choices=list(MEASUREMENTS), help="these measurements only")
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--isa", help="set ONEDNN_MAX_CPU_ISA (e.g. AVX2) before TensorFlow loads")
    parser.add_argument("--each", action="store_true", help="also print every seed's values as they come")
    parser.add_argument("--list", action="store_true", help="list the measurements and the tests they stand for")
    args = parser.parse_args()
    if args.list:
        for key, m in MEASUREMENTS.items():
            print(f"{key:20s} tests/{m.test}")
        return
    if args.isa:
        os.environ["ONEDNN_MAX_CPU_ISA"] = args.isa
    os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "atlas", "numba"))
    from atlas.console import import_tensorflow

    import_tensorflow()
    from atlas.model.graph import load_model

    loaded: dict[str, object] = {}

    def models(spec: str):
        if spec not in loaded:
            loaded[spec] = load_model(spec)
        return loaded[spec]

    print(f"# {cpu_name()}, ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '(unset)')}, "
          f"seeds 0..{args.seeds - 1}", flush=True)
    print(f"{'statistic':42s} {'precision':9s} {'bound':>22s} {'worst':>8s} {'min':>8s} {'median':>8s} {'max':>8s}"
          f" {'s/seed':>6s}", flush=True)
    for key in args.only or list(MEASUREMENTS):
        m = MEASUREMENTS[key]
        for precision in args.precisions if m.precisions else ["-"]:
            began, values = time.perf_counter(), []
            for seed in range(args.start, args.seeds):
                values.append(m.run(models, seed, precision if precision != "-" else "float32"))
                if args.each:
                    shown = ", ".join(f"{k} {v:.3f}" for k, v in values[-1].items())
                    print(f"# {key} {precision} seed {seed}: {shown}", flush=True)
            per_seed = (time.perf_counter() - began) / max(1, args.seeds - args.start)
            for stat in m.stats:
                v = np.array([row[stat.name] for row in values])
                worst = v.min() if stat.larger_is_better else v.max()
                print(f"{stat.name:42s} {precision:9s} {stat.bound:>22s} {worst:8.3f} {v.min():8.3f} "
                      f"{np.median(v):8.3f} {v.max():8.3f} {per_seed:6.1f}", flush=True)


def cpu_name() -> str:
    """The CPU's model name (Linux), for the record."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} cores)"
    except OSError:
        pass
    return sys.platform


if __name__ == "__main__":
    main()
