"""Speed of a network read from ONNX against the same network from Keras (issue 30): EfficientNet-Lite0 with its
real weights, as the zoo builds it (`--model efficientnet-lite0`: a Keras model, frozen) and as torch.onnx.export
writes it (tests/onnx_graphs.py: NCHW, OIHW weights, a Pad before each conv TensorFlow pads "same", batch norms kept,
ReLU6 as Clip), converted by atlas.model.onnx_graph. In one process:

- the first load of each (an empty cache: the Keras build and freeze, or the ONNX conversion) and the cached one;
- the graph each gives the interpreter: its nodes and its Pad nodes;
- seconds per 224 px image-step of a DeepDream gradient step at batch 8 on a shallow, a middle and a deep layer (the
  same conv in both), timed in turns (Keras then ONNX, ONNX then Keras, ...): the best of each, and the median of the
  turns' ratios ONNX / Keras, whose two steps ran back to back, so that a shared machine's load falls on both alike.

Usage: python benchmarks/onnx_speed.py [--precision float32|bfloat16] [--rounds 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

BATCH = 8
DEPTHS = (0.2, 0.5, 0.85)  # where the timed layers sit, as a share of the catalogue


def _loaded(spec: str, preprocess: str | None) -> tuple[object, float, float]:
    """(model, first load's seconds with an empty cache, a cached load's seconds)."""
    from atlas.model.graph import load_model

    began = time.perf_counter()
    load_model(spec, preprocess)
    first = time.perf_counter() - began
    began = time.perf_counter()
    model = load_model(spec, preprocess)
    return model, first, time.perf_counter() - began


def _turns(calls: list[Callable[[], None]], rounds: int) -> tuple[list[float], list[float]]:
    """The best seconds of each of two calls over `rounds` turns (after one call each, which traces), and each
    turn's ratio second / first."""
    for call in calls:
        call()
    best, ratios = [float("inf")] * 2, []
    for turn in range(rounds):
        seconds = [0.0, 0.0]
        for k in (0, 1) if turn % 2 == 0 else (1, 0):  # each first in every other turn
            began = time.perf_counter()
            calls[k]()
            seconds[k] = time.perf_counter() - began
            best[k] = min(best[k], seconds[k])
        ratios.append(seconds[1] / seconds[0])
    return best, ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from atlas.console import import_tensorflow

    import_tensorflow()
    from atlas.render.engine import step_call
    from tests.onnx_graphs import write_lite0

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ATLAS_CACHE_DIR"] = tmp  # empty: the first loads build and convert
        path = write_lite0(Path(tmp) / "efficientnet-lite0.onnx")
        keras_model, keras_first, keras_cached = _loaded("efficientnet-lite0", None)
        onnx_model, onnx_first, onnx_cached = _loaded(str(path), "tf")
        print(f"load average {os.getloadavg()[0]:.1f}; {args.precision}, batch {BATCH}, 224 px, {args.rounds} turns")
        print(f"{'':<6} {'first load':>10} {'cached':>7} {'nodes':>6} {'Pads':>5}")
        for name, model, first, cached in (("Keras", keras_model, keras_first, keras_cached),
                                           ("ONNX", onnx_model, onnx_first, onnx_cached)):
            nodes = [n for n in model.graph_def.node if n.op != "Const"]
            print(f"{name:<6} {first:>9.1f}s {cached:>6.2f}s {len(nodes):>6} {sum(n.op == 'Pad' for n in nodes):>5}")
        assert len(keras_model.layers) == len(onnx_model.layers)
        print(f"{'Keras layer':<16} {'ONNX layer':<26} {'Keras s/img-step':>16} {'ONNX s/img-step':>15} "
              f"{'best ratio':>10} {'median ratio':>12}")
        medians = []
        for depth in DEPTHS:
            index = int(depth * (len(keras_model.layers) - 1))
            pair = (keras_model.layers[index].name, onnx_model.layers[index].name)
            best, ratios = _turns([step_call(model, layer, BATCH, 224, args.precision)
                                   for model, layer in zip((keras_model, onnx_model), pair)], args.rounds)
            medians.append(statistics.median(ratios))
            print(f"{pair[0]:<16} {pair[1]:<26} {best[0] / BATCH:>16.4f} {best[1] / BATCH:>15.4f} "
                  f"{best[1] / best[0]:>10.2f} {medians[-1]:>12.2f}", flush=True)
        print(f"ONNX / Keras step time (median of the turns): {min(medians):.2f}-{max(medians):.2f}; load average "
              f"{os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
