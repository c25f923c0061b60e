"""Speed of atlas on any model (issue 23, part 8): for ResNet50, MobileNetV2 and VGG16 (keras.applications,
weights=None, saved as .keras files) beside GoogLeNet (`synthetic`: the full-width stand-in, inception5h's
topology and shapes), in one process:

- load: `load_model(FILE.keras, preprocess)` with an empty frozen-graph cache (load, freeze, catalogue) and again
  with the cache filled (hash the file, read the graph); the stand-in is built in code, so both are its build;
- image-steps per second: a DeepDream gradient step at 224 px on a mid-depth catalogued layer, batch 8 (the CPU's
  automatic batch size), the best of 3 timed calls after the first (`atlas.render.cost.measure_step`);
- the model's FLOP rate: FLOPs of one image's forward + input-gradient step to that layer (`atlas.model.flops`)
  times image-steps per second, as a share of the matmul rate measured in the same run (float32 2048 x 2048
  `tf.matmul`, best of 5, before and after the models: the machine is shared, so both are printed).

Usage: python benchmarks/any_model_speed.py [ResNet50 MobileNetV2 VGG16 GoogLeNet]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

PREPROCESS = {"ResNet50": "caffe", "MobileNetV2": "tf", "VGG16": "caffe", "GoogLeNet": "mean=117"}
BATCH = 8
SIZE = 224


def matmul_rate(n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a float32 n x n matmul in TensorFlow (best of `repeats`)."""
    import tensorflow as tf

    a, b = tf.random.normal([n, n]), tf.random.normal([n, n])
    tf.matmul(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        tf.matmul(a, b).numpy()
        best = min(best, time.perf_counter() - began)
    return 2 * n ** 3 / best


def load_times(name: str, folder: Path) -> tuple[object, float, float, float]:
    """(model, first load's wall seconds, its CPU seconds, cached load's wall seconds) of `name`: a
    keras.applications model saved to `folder`, or the stand-in."""
    from atlas.model.graph import load_model

    if name == "GoogLeNet":
        spec = "synthetic"
    else:
        import keras

        spec = str(folder / f"{name}.keras")
        getattr(keras.applications, name)(weights=None).save(spec)
        keras.backend.clear_session()
    began, cpu = time.perf_counter(), time.process_time()
    load_model(spec, PREPROCESS[name])
    first, first_cpu = time.perf_counter() - began, time.process_time() - cpu
    began = time.perf_counter()
    model = load_model(spec, PREPROCESS[name])
    return model, first, first_cpu, time.perf_counter() - began


def main() -> None:
    from atlas.console import import_tensorflow

    import_tensorflow()
    from atlas.model.flops import step_flops
    from atlas.render.cost import measure_step

    names = sys.argv[1:] or ["GoogLeNet", "ResNet50", "MobileNetV2", "VGG16"]
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ATLAS_CACHE_DIR"] = tmp  # an empty frozen-graph cache: the first load freezes
        rates = [matmul_rate()]
        print(f"matmul (float32 2048 x 2048): {rates[0] / 1e9:.1f} GFLOP/s; load average {os.getloadavg()[0]:.1f}")
        print(f"{'model':<12} {'layer':<28} {'first load (CPU)':>17} {'cached':>8} {'img-steps/s':>11} "
              f"{'GFLOP/img-step':>14} {'GFLOP/s':>8} {'of matmul':>9}", flush=True)
        rows = []
        for name in names:
            model, first, first_cpu, cached = load_times(name, Path(tmp))
            layer = model.layers[len(model.layers) // 2].name
            seconds, _ = measure_step(model, layer, BATCH, "float32", repeats=3)
            flops = step_flops(model.graph_def, model.tensor_name(layer), SIZE, SIZE, model.input)
            rows.append((name, layer, first, cached, 1 / seconds, flops, flops / seconds))
            print(f"{name:<12} {layer:<28} {first:>7.1f}s ({first_cpu:>5.1f}s) {cached:>7.2f}s {1 / seconds:>11.2f} "
                  f"{flops / 1e9:>14.2f} {flops / seconds / 1e9:>8.1f} {flops / seconds / rates[0]:>8.0%}",
                  flush=True)
        rates.append(matmul_rate())
        print(f"matmul again: {rates[1] / 1e9:.1f} GFLOP/s; load average {os.getloadavg()[0]:.1f}")
        best = max(rates)
        print("as a share of the better matmul rate: " + ", ".join(
            f"{name} {rate / best:.0%}" for name, _, _, _, _, _, rate in rows))


if __name__ == "__main__":
    main()
