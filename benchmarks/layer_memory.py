"""Peak memory of one process that builds and runs the layer function of every layer.

Usage: python benchmarks/layer_memory.py [--model synthetic] [--size 224]
Prints the peak resident set size (ru_maxrss) after each stage and the ratio to the graph's weight bytes.
"""

from __future__ import annotations

import argparse
import resource
import time


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="synthetic")
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()

    from atlas.console import import_tensorflow

    import_tensorflow()  # its start-up lines and retracing warnings off the console (unless ATLAS_VERBOSE=1)
    import tensorflow as tf

    from atlas.model.graph import load_model

    model = load_model(args.model)
    weights_mb = sum(n.attr["value"].tensor.ByteSize() for n in model.graph_def.node if n.op == "Const") / 1e6
    print(f"after load: peak {peak_mb():.0f} MB (weights {weights_mb:.1f} MB)")
    image = tf.random.uniform([1, args.size, args.size, 3], 0, 255)
    start = time.perf_counter()
    for layer in model.layers:
        fn = model.layer_fn(layer.name)
        with tf.GradientTape() as tape:
            tape.watch(image)
            loss = tf.reduce_mean(fn(image)[..., 0])
        tape.gradient(loss, image)
    print(f"after all {len(model.layers)} layer functions (forward + gradient at {args.size}px): "
          f"peak {peak_mb():.0f} MB, {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
