"""The Laplacian normalisation of the DeepDream step two ways, side by side: the pyramid's blur as a depthwise
convolution (and its transpose) against an ordinary convolution with a per-channel diagonal kernel, which atlas
uses. Prints the time of each per batch shape, their ratio and the largest relative difference of the results.

    python benchmarks/laplacian_speed.py [--threads 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from atlas.console import import_tensorflow

SHAPES = [(4, 224, 224, 3), (4, 160, 160, 3), (4, 114, 114, 3), (4, 300, 451, 3), (1, 149, 224, 3), (8, 64, 64, 3)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow threads (a sweep's worker has 1 or 2)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import_tensorflow()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from atlas.render import transforms

    depthwise_kernel = tf.reduce_sum(transforms.PYRAMID_KERNEL, axis=3, keepdims=True)  # [5, 5, 3, 1]: each channel

    def depthwise(grad: tf.Tensor, levels: int = 4) -> tf.Tensor:
        down = lambda x: tf.nn.depthwise_conv2d(x, depthwise_kernel, [1, 2, 2, 1], "SAME")  # noqa: E731
        up = lambda x, s: tf.nn.depthwise_conv2d_backprop_input(s, depthwise_kernel * 4, x, [1, 2, 2, 1],  # noqa
                                                                "SAME")
        bands, image = [], grad
        for _ in range(levels - 1):
            low = down(image)
            bands.append(image - up(low, tf.shape(image)))
            image = low
        bands.append(image)
        normed = [b / (tf.sqrt(tf.reduce_mean(tf.square(b), axis=[1, 2, 3], keepdims=True)) + 1e-8) for b in bands]
        out = normed[-1]
        for high in normed[-2::-1]:
            out = up(out, tf.shape(high)) + high
        return out

    spec = [tf.TensorSpec([None, None, None, 3], tf.float32)]
    ways = {"depthwise": tf.function(depthwise, input_signature=spec, autograph=False),
            "diagonal conv": tf.function(transforms.laplacian_normalize, input_signature=spec, autograph=False)}
    for shape in SHAPES:
        grad = tf.constant(np.random.default_rng(0).normal(0, 1, shape).astype(np.float32))
        results = {name: fn(grad).numpy() for name, fn in ways.items()}
        error = np.abs(results["depthwise"] - results["diagonal conv"]).max() / np.abs(results["depthwise"]).max()
        seconds = dict.fromkeys(ways, 0.0)
        for _ in range(args.rounds):
            for name, fn in ways.items():
                began = time.perf_counter()
                for _ in range(5):
                    fn(grad).numpy()
                seconds[name] += (time.perf_counter() - began) / 5 / args.rounds
        print(f"{str(shape):18s} depthwise {seconds['depthwise'] * 1000:7.1f} ms  diagonal conv "
              f"{seconds['diagonal conv'] * 1000:7.1f} ms  ratio {seconds['depthwise'] / seconds['diagonal conv']:.2f}"
              f"  largest relative difference {error:.1e}", flush=True)


if __name__ == "__main__":
    main()
