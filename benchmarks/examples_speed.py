"""Dataset-examples speed: one forward pass for all layers versus one pass per layer, the FLOP rate of that
pass as a fraction of an fp32 matrix multiply timed in the same run, and (with --photos-total) the whole
`atlas examples` pass over a folder of generated photos, end to end.

Usage: python benchmarks/examples_speed.py [--model synthetic] [--batch 16] [--repeats 3] [--size 224]
       [--matmul 2048] [--photos-total 1000] [--top 9]

Side by side, alternating in each round on the same batch of generated images: (a) `Model.layers_fn` over all
59 layers, with the per-channel maximum and arg-max the pass keeps (what the examples pass runs); (b) 59 calls
of `Model.layer_fn`, one per layer, each evaluating that layer's own subgraph. The FLOPs of (a) are counted
from the GraphDef (atlas.model.flops.forward_flops over the union of the layers' subgraphs: each Conv2D
once); its FLOP rate is divided by the fp32 matmul rate timed just before and after it (median of rounds).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def photos(count: int, size: int, seed: int = 0):
    """Smooth random colour images, like photos in their spectrum more than white noise is."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for _ in range(count):
        small = rng.uniform(0, 255, (size // 16, size // 16, 3)).astype(np.uint8)
        yield np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC), np.float32)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="synthetic")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--matmul", type=int, default=2048)
    parser.add_argument("--photos-total", type=int, default=0, help="also time `atlas examples` on this many "
                        "generated photos written to a temp folder (0: skip)")
    parser.add_argument("--top", type=int, default=9)
    args = parser.parse_args()

    import numpy as np

    from atlas.console import import_tensorflow

    import_tensorflow()  # its start-up lines and retracing warnings off the console (unless ATLAS_VERBOSE=1)
    import tensorflow as tf

    from atlas.analysis.examples import _peaks_fn, run_examples
    from atlas.model.flops import forward_flops
    from atlas.model.graph import load_model
    from atlas.run.plans import ExamplesPlan

    model = load_model(args.model)
    names = tuple(layer.name for layer in model.layers)
    images = tf.constant(np.stack(list(photos(args.batch, args.size))))
    peaks = _peaks_fn(model, names)
    singles = [model.layer_fn(name) for name in names]
    flops = forward_flops(model.graph_def, list(names), args.size, args.size, model.input)
    per_layer_flops = sum(forward_flops(model.graph_def, name, args.size, args.size, model.input) for name in names)

    n = args.matmul
    a, b = tf.random.normal([n, n]), tf.random.normal([n, n])
    matmul = tf.function(tf.linalg.matmul)

    def matmul_rate() -> float:
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            matmul(a, b).numpy()
            best = min(best, time.perf_counter() - start)
        return 2 * n ** 3 / best

    def all_layers() -> None:
        for value, where in peaks(images):
            value.numpy(), where.numpy()

    def per_layer() -> None:
        for fn in singles:
            fn(images).numpy()

    matmul_rate()
    all_layers()
    per_layer()  # trace and warm up every function
    took = {"all": [], "per": []}
    fractions, rates = [], []
    before = matmul_rate()
    for _ in range(args.repeats):
        start = time.perf_counter()
        all_layers()
        seconds = time.perf_counter() - start
        after = matmul_rate()
        took["all"].append(seconds)
        fractions.append(args.batch * flops / seconds / ((before + after) / 2))
        rates += [before, after]
        before = after
        start = time.perf_counter()
        per_layer()
        took["per"].append(time.perf_counter() - start)
        before = matmul_rate()
    all_s, per_s = (float(np.median(took[k])) for k in ("all", "per"))
    print(f"{args.model}, {len(names)} layers, batch {args.batch} of {args.size}px, {args.repeats} rounds "
          "(medians)")
    print(f"fp32 matmul {n}x{n}: median {np.median(rates) / 1e9:.1f} GFLOP/s")
    print(f"all layers in one pass (+ max/argmax): {args.batch / all_s:8.2f} photos/s   "
          f"{flops / 1e9:.2f} GFLOP/photo, {args.batch * flops / all_s / 1e9:.1f} GFLOP/s, "
          f"fraction of matmul rate {np.median(fractions):.2f}")
    print(f"{len(names)} single-layer passes:          {args.batch / per_s:8.2f} photos/s   "
          f"{per_layer_flops / 1e9:.2f} GFLOP/photo in all")
    print(f"ratio (one pass / per-layer passes, speed): {per_s / all_s:.1f}x")

    if args.photos_total:
        from PIL import Image

        with tempfile.TemporaryDirectory() as tmp:
            folder, run = Path(tmp) / "photos", Path(tmp) / "run"
            folder.mkdir()
            for i, pixels in enumerate(photos(args.photos_total, args.size, seed=1)):
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)
            plan = ExamplesPlan(folder=str(folder), top=args.top, size=args.size, fit="crop", layers=names,
                                batch_size=args.batch)
            start = time.perf_counter()
            summary = run_examples(plan, run, model, progress=False)
            total = time.perf_counter() - start
            files = sum(1 for _ in (run / "examples").rglob("*.jpg"))
            print(f"atlas examples on {args.photos_total} generated {args.size}px JPEGs, all layers, top "
                  f"{args.top}: {total:.1f} s ({summary.processed / total:.2f} photos/s end to end, incl. "
                  f"compiling, decoding, {files:,} crop/thumbnail files and the manifest); of which "
                  f"{summary.network_seconds:.1f} s in the network (first call's compile included) and top-list "
                  f"merges, {summary.files_seconds:.1f} s writing the files")


if __name__ == "__main__":
    main()
