"""Gradient-step speed of atlas's layer functions versus TensorFlow's own graph import, side by side.

Usage: python benchmarks/layer_fn_speed.py [--model synthetic] [--layer mixed4d_3x3_bottleneck_pre_relu]
       [--batch 4] [--size 224] [--repeats 5]
Both ways compute d mean(channel 0) / d input for a batch; rounds alternate so machine noise hits both.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="synthetic")
    parser.add_argument("--layer", default="mixed4d_3x3_bottleneck_pre_relu")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from atlas.console import import_tensorflow

    import_tensorflow()  # its start-up lines and retracing warnings off the console (unless ATLAS_VERBOSE=1)
    import tensorflow as tf

    from atlas.model.graph import load_model

    model = load_model(args.model)
    layer = model.layer(args.layer)
    spec = [tf.TensorSpec([None, None, None, 3], tf.float32)]

    def imported_fn(x: tf.Tensor) -> tf.Tensor:
        return tf.graph_util.import_graph_def(model.graph_def, {model.input: model.preprocess.apply_tf(x)},
                                              return_elements=[f"{layer.name}:0"])[0]

    def step_of(fn):
        @tf.function(input_signature=spec)
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_mean(fn(x)[..., 0])
            return tape.gradient(loss, x)
        return step

    ways = {"atlas layer_fn": step_of(model.layer_fn(layer.name)),
            "import_graph_def": step_of(tf.compat.v1.wrap_function(imported_fn, spec))}
    images = tf.random.uniform([args.batch, args.size, args.size, 3], 0, 255)
    for step in ways.values():
        step(images)  # trace and warm up
    totals = dict.fromkeys(ways, 0.0)
    for _ in range(args.repeats):
        for name, step in ways.items():
            start = time.perf_counter()
            step(images).numpy()
            totals[name] += time.perf_counter() - start
    images_done = args.repeats * args.batch
    for name, total in totals.items():
        print(f"{name:18s} {1000 * total / images_done:7.1f} ms per image-step "
              f"({layer.name}, batch {args.batch}, {args.size}px)")
    print(f"ratio import_graph_def / atlas layer_fn: {totals['import_graph_def'] / totals['atlas layer_fn']:.2f}")


if __name__ == "__main__":
    main()
