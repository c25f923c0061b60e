"""Render speed: one channel per pass (as the TensorFlow DeepDream notebook does) versus batched, and the
model FLOP rate as a fraction of a plain fp32 matrix multiply timed in the same run.

Usage: python benchmarks/render_speed.py [--model synthetic] [--layers A B C] [--channels 8] [--batch N]
       [--steps 10] [--size 224] [--repeats 3] [--precision float32 [bfloat16]] [--intra N] [--inter N]
Both ways call `render_channels` with the same channels and settings (one octave of --steps steps at --size
px, so the work is a reduced but real render, metrics included); only batch_size differs (and precision,
when two are given). Rounds alternate ways and layers so that machine noise hits all of them. FLOPs are
counted from the GraphDef (atlas.model.flops): a step is forward + input gradient, taken as 2 × the forward
Conv2D/MatMul FLOPs; each render also runs two forward passes for its metrics (start and end image), counted
as one more image-step. The machine's speed drifts, so each render's FLOP rate is divided by the matmul rate
timed just before and after it, and the fraction printed is the median over rounds.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

LAYERS = ["mixed3b_3x3_pre_relu", "mixed4d_3x3_bottleneck_pre_relu", "mixed5b_5x5_pre_relu"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="synthetic")
    parser.add_argument("--layers", nargs="+", default=LAYERS)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--batch", type=int, default=None, help="default: auto_batch_size() for the model")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--matmul", type=int, default=2048, help="side of the square matrices")
    parser.add_argument("--precision", nargs="+", default=["float32"], choices=["float32", "bfloat16"],
                        help="one or both, measured side by side")
    parser.add_argument("--intra", type=int, default=0, help="intra-op threads (0: TensorFlow's choice)")
    parser.add_argument("--inter", type=int, default=0, help="inter-op threads (0: TensorFlow's choice)")
    args = parser.parse_args()

    import numpy as np

    from atlas.console import import_tensorflow

    import_tensorflow()  # its start-up lines and retracing warnings off the console (unless ATLAS_VERBOSE=1)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.intra)
    tf.config.threading.set_inter_op_parallelism_threads(args.inter)
    from atlas.model.flops import step_flops
    from atlas.model.graph import load_model
    from atlas.render.loop import render_channels
    from atlas.render.settings import RenderSettings, auto_batch_size

    model = load_model(args.model)
    layers = [model.layer(name).name for name in args.layers]
    batch = args.batch or auto_batch_size(args.size ** 2, work=model.work)
    channels = list(range(args.channels))
    ways = {(precision, size): RenderSettings(size=args.size, octaves=1, steps=args.steps, batch_size=size,
                                              precision=precision)
            for precision in args.precision for size in (1, batch)}
    flops = {layer: step_flops(model.graph_def, layer, args.size, args.size, model.input) for layer in layers}

    n = args.matmul
    a, b = tf.random.normal([n, n]), tf.random.normal([n, n])
    operands = {"float32": (a, b), "bfloat16": (tf.cast(a, tf.bfloat16), tf.cast(b, tf.bfloat16))}
    matmul = tf.function(tf.linalg.matmul)

    def time_matmuls() -> dict[str, float]:
        rates = {}
        for dtype, pair in operands.items():
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                matmul(*pair).numpy()
                best = min(best, time.perf_counter() - start)
            rates[dtype] = 2 * n ** 3 / best
        return rates

    time_matmuls()  # warm up
    for layer in layers:  # trace and warm up every way (steps do not change the compiled functions)
        for settings in ways.values():
            render_channels(model, layer, channels[:settings.batch_size], settings=replace(settings, steps=1))
    # Each render is paired with the matmul rates timed just before and just after it: the machine's speed
    # drifts, so a fraction is only meaningful between neighbours in time.
    seconds = {(layer, way): 0.0 for layer in layers for way in ways}
    rounds: dict[tuple[str, tuple[str, int]], list[tuple[float, dict[str, float]]]] = {key: [] for key in seconds}
    before = time_matmuls()
    history = [before]
    for _ in range(args.repeats):
        for layer in layers:
            for way, settings in ways.items():
                start = time.perf_counter()
                render_channels(model, layer, channels, settings=settings)
                took = time.perf_counter() - start
                after = time_matmuls()
                seconds[layer, way] += took
                rounds[layer, way].append((took, {d: (before[d] + after[d]) / 2 for d in operands}))
                before = after
                history.append(after)
    work = args.channels * (args.steps + 1)  # image-steps of one render, + its metric forward passes

    def fraction(layer: str, way: tuple[str, int], dtype: str) -> float:
        """Median over rounds of (this render's model FLOP rate / the matmul rate around it)."""
        return float(np.median([work * flops[layer] / took / near[dtype] for took, near in rounds[layer, way]]))

    image_steps = args.repeats * args.channels * args.steps
    threads = (tf.config.threading.get_intra_op_parallelism_threads(),
               tf.config.threading.get_inter_op_parallelism_threads())
    print(f"{args.model}, {args.size}px, {args.channels} channels per layer, 1 octave of {args.steps} steps, "
          f"{args.repeats} rounds; threads intra {threads[0]} inter {threads[1]} (0 = TensorFlow's choice)")
    for dtype in operands:
        values = [rates[dtype] / 1e9 for rates in history]
        print(f"{dtype} matmul {n}x{n}: median {np.median(values):.1f} GFLOP/s over the run "
              f"(lowest {min(values):.1f}, highest {max(values):.1f})")
    print(f"{'layer':33s} {'precision':9s} {'GFLOP/step':>10s} {'per channel':>11s} {f'batch {batch}':>9s} "
          f"{'ratio':>5s} {'GFLOP/s':>7s} {'frac':>5s} {'frac of bf16 mm':>15s}")
    for layer in layers:
        for precision in args.precision:
            alone, batched = (image_steps / seconds[layer, (precision, size)] for size in (1, batch))
            flop_rate = batched / args.steps * (args.steps + 1) * flops[layer]
            way = (precision, batch)
            print(f"{layer:33s} {precision:9s} {flops[layer] / 1e9:10.2f} {alone:11.2f} {batched:9.2f} "
                  f"{batched / alone:5.2f} {flop_rate / 1e9:7.1f} {fraction(layer, way, 'float32'):5.2f} "
                  f"{fraction(layer, way, 'bfloat16'):15.2f}")
        if len(args.precision) == 2:
            fp32, bf16 = (seconds[layer, (precision, batch)] for precision in ("float32", "bfloat16"))
            print(f"{'':33s} bfloat16 / float32 speed, batched: {fp32 / bf16:.2f}")
    print("per channel, batch: image-steps/s; ratio = batched / per channel; GFLOP/s: the batched way's model "
          "FLOP rate; frac: that rate over the fp32 (bf16) matmul rate timed around each render, median of rounds")

if __name__ == "__main__":
    main()
