"""How far a render drifts with its batch size and with the CPU's kernels: measured, not assumed.

Renders channels 0-3 of every third layer of the stand-in in one batch and channel 2 (of a layer of 2 or 3
channels: 1) alone, with both methods,
and prints per layer how the two renders of channel 2 compare: the largest and mean pixel difference, the
correlation of the two images (and the largest correlation of the lone render with another channel's image of the
batch), the change of rank, and the relative change of the end activation and of the lift. With `--save FILE` it
also keeps the batched renders, so that two runs under other kernels (e.g. `ONEDNN_MAX_CPU_ISA=AVX2`,
`TF_ENABLE_ONEDNN_OPTS=0`, another machine) compare with `--against FILE`: the same rows for the same batch size on
other kernels. This is where the tolerances of docs/dream.md#reproducibility and of the drift tests come from.

    python benchmarks/batch_drift.py --save /tmp/avx2.npz
    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/batch_drift.py --against /tmp/avx2.npz
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np

from atlas.console import import_tensorflow

import_tensorflow()

from atlas.model.graph import load_model  # noqa: E402 (after TensorFlow's quiet import)
from atlas.render.loop import RenderResult, render_channels  # noqa: E402
from atlas.render.settings import RenderSettings  # noqa: E402

METHODS = {"deepdream": RenderSettings(), "fourier": RenderSettings(method="fourier", size=64, steps=128)}


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(float).ravel(), b.astype(float).ravel()
    return float(np.corrcoef(a - a.mean(), b - b.mean())[0, 1])


def compare(one: RenderResult, other: RenderResult, others: list[np.ndarray]) -> dict[str, float]:
    """How the render `other` of a channel differs from `one`; `others` are other channels' images."""
    difference = np.abs(one.image.astype(int) - other.image.astype(int))
    return {"max": float(difference.max()), "mean": float(difference.mean()),
            "corr": correlation(one.image, other.image),
            "other": max(correlation(image, other.image) for image in others),
            "rank": float(abs(one.rank - other.rank)), "end": abs(one.end - other.end) / abs(one.end),
            "lift": abs(one.lift - other.lift) / abs(one.lift)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="synthetic:0.125")
    parser.add_argument("--every", type=int, default=3, help="every N-th layer of the catalogue")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--save", help="keep the batched renders in this .npz")
    parser.add_argument("--against", help="compare the batched renders with those of an earlier --save")
    args = parser.parse_args()
    model = load_model(args.model)
    kept, earlier = {}, dict(np.load(args.against)) if args.against else None
    rows: dict[str, list[dict[str, float]]] = {"batch": [], "kernels": []}
    print(f"{'method':10s} {'layer':34s} {'max':>4s} {'mean':>6s} {'corr':>6s} {'other':>6s} {'rank':>4s} "
          f"{'end':>6s} {'lift':>6s}")
    for method in args.methods:
        settings = METHODS[method]
        for layer in model.layers[::args.every]:
            channels = list(range(min(4, layer.channels)))
            target = len(channels) // 2
            others = [i for i in channels if i != target]
            batched = render_channels(model, layer.name, channels, settings=replace(settings, batch_size=4))
            alone = render_channels(model, layer.name, [target], settings=replace(settings, batch_size=1))[0]
            row = compare(batched[target], alone, [batched[i].image for i in others])
            rows["batch"].append(row)
            print(f"{method:10s} {layer.name:34s} " + " ".join(f"{row[k]:6.3f}" if k not in ("max", "rank")
                                                               else f"{row[k]:4.0f}" for k in row), flush=True)
            key = f"{method}/{layer.name}"
            kept[key] = np.stack([r.image for r in batched])
            kept[key + "/metrics"] = np.array([[r.end, r.lift, r.rank] for r in batched])
            if earlier is not None and key in earlier:
                then = [RenderResult(layer.name, c, "channel", 0, earlier[key][c], 0.0, *earlier[key + "/metrics"][c],
                                     None, 0.0) for c in channels]
                row = compare(then[target], batched[target], [then[i].image for i in others])
                rows["kernels"].append(row)
                print(f"{'  vs saved':10s} {'':34s} " + " ".join(f"{row[k]:6.3f}" if k not in ("max", "rank")
                                                                 else f"{row[k]:4.0f}" for k in row), flush=True)
    for name, found in rows.items():
        if found:
            worst = {k: (min if k == "corr" else max)(r[k] for r in found) for k in found[0]}
            same = sum(r["max"] <= 1 for r in found)
            print(f"{name}: {same} of {len(found)} within one level; worst: " +
                  ", ".join(f"{k} {v:.3f}" for k, v in worst.items()))
    if args.save:
        np.savez_compressed(args.save, **kept)


if __name__ == "__main__":
    main()
