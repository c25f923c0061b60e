"""The catalogue of keras.applications networks (weights=None, frozen by atlas.model.freeze): for each, the ops
its frozen graph holds, its conv layers, channels and block outputs, and whether atlas's interpreter runs it
(its last layer, on one image). tests/test_keras_graphs.py checks MobileNetV2's counts; this prints all five.

Usage: python benchmarks/keras_catalogues.py [ResNet50 MobileNetV2 VGG16 InceptionV3 EfficientNetB0]
"""

from __future__ import annotations

import collections
import sys
import time

EXPECTED = {"ResNet50": (53, 26560), "MobileNetV2": (52, 17056), "VGG16": (13, 4224), "InceptionV3": (94, 17216),
            "EfficientNetB0": (81, 30348)}


def main() -> None:
    from atlas.console import import_tensorflow

    import_tensorflow()
    import keras
    import numpy as np

    from atlas.model.freeze import freeze_keras_model
    from atlas.model.graph import OPS, load_model_bytes

    for name in sys.argv[1:] or list(EXPECTED):
        start = time.perf_counter()
        graph = freeze_keras_model(getattr(keras.applications, name)(weights=None))
        frozen = time.perf_counter() - start
        model = load_model_bytes(graph.SerializeToString(), name)
        ops = collections.Counter(n.op for n in graph.node if n.op not in ("Const", "Placeholder"))
        count = (len(model.layers), model.channels)
        print(f"{name}: {count[0]} conv layers, {count[1]:,} channels "
              f"({'as expected' if count == EXPECTED.get(name, count) else f'expected {EXPECTED[name]}'}), "
              f"{len(model.blocks)} block outputs; built and frozen in {frozen:.1f} s")
        print(f"  ops: {', '.join(f'{op} {n}' for op, n in sorted(ops.items()))}")
        missing = sorted(set(ops) - set(OPS))
        print(f"  ops atlas cannot run: {', '.join(missing) or 'none'}")
        blocks = collections.Counter(layer.block for layer in model.layers)
        print(f"  blocks: {', '.join(f'{b} {n}' for b, n in blocks.items())}")
        print(f"  first layers: {', '.join(layer.name for layer in model.layers[:4])}; last: {model.layers[-1].name}"
              f" (field {model.layers[-1].receptive_field}, stride {model.layers[-1].cumulative_stride})")
        image = np.random.default_rng(0).uniform(0, 255, (1, 96, 96, 3)).astype(np.float32)
        out = model.layer_fn(model.layers[-1].name)(image)
        print(f"  {model.layers[-1].name} on a 96 x 96 image: {tuple(out.shape)}, "
              f"finite: {bool(np.isfinite(out).all())}", flush=True)


if __name__ == "__main__":
    main()
