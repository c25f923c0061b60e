"""Render speed: one channel per pass (as the TensorFlow DeepDream notebook does) versus batched, and the
model FLOP rate as a fraction of a plain fp32 matrix multiply timed in the same run.

Usage: python benchmarks/render_speed.py [--model synthetic] [--layers A B C] [--channels 8] [--batch N]
       [--steps 10] [--size 224] [--repeats 3] [--precision float32|bfloat16] [--intra N] [--inter N]
Both ways call `render_channels` with the same channels and settings (one octave of --steps steps at --size
px, so the work is a reduced but real render, metrics included); only batch_size differs. Rounds alternate
ways and layers so that machine noise hits both. FLOPs are counted from the GraphDef (atlas.flops): a step
is forward + input gradient, taken as 2 × the forward Conv2D/MatMul FLOPs; each render also runs two
forward passes for its metrics (start and end image), counted as one more image-step.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

LAYERS = ["mixed3b_3x3_pre_relu", "mixed4d_3x3_bottleneck_pre_relu", "mixed5b_5x5_pre_relu"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="synthetic")
    parser.add_argument("--layers", nargs="+", default=LAYERS)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--batch", type=int, default=None, help="default: auto_batch_size()")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--matmul", type=int, default=2048, help="side of the square matrices")
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--intra", type=int, default=0, help="intra-op threads (0: TensorFlow's choice)")
    parser.add_argument("--inter", type=int, default=0, help="inter-op threads (0: TensorFlow's choice)")
    args = parser.parse_args()

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.intra)
    tf.config.threading.set_inter_op_parallelism_threads(args.inter)
    from atlas.flops import step_flops
    from atlas.model import load_model
    from atlas.render import RenderSettings, auto_batch_size, render_channels, with_overrides

    model = load_model(args.model)
    layers = [model.layer(name).name for name in args.layers]
    batch = args.batch or auto_batch_size(args.size ** 2)
    channels = list(range(args.channels))
    base = RenderSettings(size=args.size, octaves=1, steps=args.steps, precision=args.precision)
    ways = {"per channel": with_overrides(base, batch_size=1), f"batched ({batch})": with_overrides(base, batch_size=batch)}
    flops = {layer: step_flops(model.graph_def, layer, args.size, args.size, model.input) for layer in layers}

    n = args.matmul
    a, b = tf.random.normal([n, n]), tf.random.normal([n, n])
    operands = {"float32": (a, b), "bfloat16": (tf.cast(a, tf.bfloat16), tf.cast(b, tf.bfloat16))}
    matmul = tf.function(tf.linalg.matmul)
    for pair in operands.values():
        matmul(*pair).numpy()

    def time_matmul(dtype: str) -> float:
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            matmul(*operands[dtype]).numpy()
            best = min(best, time.perf_counter() - start)
        return 2 * n ** 3 / best

    for layer in layers:  # trace and warm up every batch shape (the last chunk may be smaller)
        for settings in ways.values():
            render_channels(model, layer, channels, settings=with_overrides(settings, steps=1))
    seconds = {(layer, way): 0.0 for layer in layers for way in ways}
    matmul_rates: dict[str, list[float]] = {dtype: [] for dtype in operands}
    for _ in range(args.repeats):
        for layer in layers:
            for dtype in operands:
                matmul_rates[dtype].append(time_matmul(dtype))
            for way, settings in ways.items():
                start = time.perf_counter()
                render_channels(model, layer, channels, settings=settings)
                seconds[layer, way] += time.perf_counter() - start
    for dtype in operands:
        matmul_rates[dtype].append(time_matmul(dtype))
    peak = max(matmul_rates["float32"])
    peak16 = max(matmul_rates["bfloat16"])

    image_steps = args.repeats * args.channels * args.steps
    work_steps = args.repeats * args.channels * (args.steps + 1)  # + the metric forward passes
    print(f"{args.model}, {args.size}px, {args.channels} channels per layer, 1 octave of {args.steps} steps, "
          f"{args.repeats} rounds, precision {args.precision}; threads intra {tf.config.threading.get_intra_op_parallelism_threads()} "
          f"inter {tf.config.threading.get_inter_op_parallelism_threads()} (0 = TensorFlow's choice)")
    for dtype, best in (("float32", peak), ("bfloat16", peak16)):
        print(f"{dtype} matmul {n}x{n}: {best / 1e9:.1f} GFLOP/s (best of {3 * len(matmul_rates[dtype])}, "
              f"spread over the run {min(matmul_rates[dtype]) / 1e9:.1f}-{best / 1e9:.1f})")
    header = f"{'layer':33s} {'GFLOP/step':>10s}"
    for way in ways:
        header += f" {way + ' img-steps/s':>25s} {'GFLOP/s':>7s} {'frac':>5s}"
    print(header + f" {'ratio':>6s}" + (f" {'frac of bf16 matmul':>20s}" if args.precision == "bfloat16" else ""))
    for layer in layers:
        row = f"{layer:33s} {flops[layer] / 1e9:10.2f}"
        rates = []
        for way in ways:
            rate = image_steps / seconds[layer, way]
            flop_rate = work_steps * flops[layer] / seconds[layer, way]
            rates.append(rate)
            row += f" {rate:25.2f} {flop_rate / 1e9:7.1f} {flop_rate / peak:5.2f}"
        row += f" {rates[1] / rates[0]:6.2f}"
        if args.precision == "bfloat16":
            row += f" {work_steps * flops[layer] / seconds[layer, list(ways)[1]] / peak16:20.2f}"
        print(row)
    print("ratio = batched / per channel; frac = achieved model FLOP rate / fp32 matmul rate (best in the run)")


if __name__ == "__main__":
    main()
