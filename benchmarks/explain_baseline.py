"""Attribution against a baseline on a trained network: the top class's spatial attribution summed over the map,
before (zero baseline, the gradient at the photo: the article's activation x gradient) and after (the mean
activation over the shipped photos, the gradient integrated from it: atlas's default), next to the logit and to
the differences the sums should add up to, logit(x) - logit(0) and logit(x) - logit(mean), each the real network's
logit with the layer's activations replaced by the baseline.

Usage: python benchmarks/explain_baseline.py [--model efficientnet-lite0] [--layers ...] [--steps 16] [--rounds 3]

The photos are the shipped ones (astronaut, chelsea, coffee, rocket), their centred square at 224 px; they are
also the reference set of the mean. Layers: the model's default explain layers, then block9_add, head_conv and
block15_project where the model has them. Last, the seconds per photo of the arrays (5 classes, 6 groups, the
default layers) with the gradient at the photo (--ig-steps 0) and integrated over --steps steps, side by side in
alternating rounds after an untimed warm-up, and their ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

EXTRA_LAYERS = ("block9_add", "head_conv", "block15_project")


def cpu_name() -> str:
    """The CPU's model name (Linux), else the platform's word for it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def shipped_pixels(size: int) -> tuple[list[str], np.ndarray]:
    """The shipped photos' names and their centred squares at `size`, as the explain pass fits them (they are the
    reference set of its default baseline)."""
    from atlas.analysis.explain import reference_batches, reference_photos
    from atlas.run.plans import ExplainPlan

    plan = ExplainPlan(photos=(), layers=(), size=size)
    reference = reference_photos(plan)
    return [e.name.removesuffix(".jpg") for e in reference.photos], np.concatenate(
        list(reference_batches(reference, plan, [])))


def sums_table(model, layers: list[str], names: list[str], pixels: np.ndarray, steps: int) -> list[str]:
    """The table's Markdown rows: per layer and photo, the top class, its logit, the sums and the differences."""
    from atlas.analysis.attribution import explain_batch, logits_at, mean_activations
    from atlas.model.classifier import class_count, class_labels

    labels = class_labels(model.source, class_count(model) or 0)
    means = mean_activations(model, layers, [pixels])
    runs = {"before": explain_batch(model, layers, pixels, classes=1, groups=1),
            "mean": explain_batch(model, layers, pixels, classes=1, groups=1, baselines=means),
            "after": explain_batch(model, layers, pixels, classes=1, groups=1, baselines=means, steps=steps)}
    rows = ["| layer | photo: top class | logit | before: zero, gradient at the photo | logit(x) − logit(0) | "
            f"mean, gradient at the photo | after: mean, integrated ({steps} steps) | logit(x) − logit(mean) |",
            "|---|---|---|---|---|---|---|---|"]
    for layer in layers:
        top = np.array([runs["before"][p][layer].classes[0] for p in range(len(pixels))])
        logits = np.array([runs["before"][p][layer].logits[0] for p in range(len(pixels))])
        to_zero = logits - logits_at(model, layer, pixels, np.float32(0), top)
        to_mean = logits - logits_at(model, layer, pixels, means[layer], top)
        for p, name in enumerate(names):
            total = {key: float(found[p][layer].spatial[0].sum()) for key, found in runs.items()}
            rows.append(f"| {layer} | {name}: {labels[top[p]]} | {logits[p]:.2f} | {total['before']:+.2f} | "
                        f"{to_zero[p]:+.2f} | {total['mean']:+.2f} | {total['after']:+.2f} | {to_mean[p]:+.2f} |")
    return rows


def seconds_per_photo(model, layers: list[str], pixels: np.ndarray, steps: int, rounds: int) -> dict[int, float]:
    """Median seconds per photo of the arrays (5 classes, 6 groups) with the gradient at the photo (0) and
    integrated over `steps`, measured in alternating rounds after an untimed warm-up."""
    from atlas.analysis.attribution import explain_batch, mean_activations

    means = mean_activations(model, layers, [pixels])
    times: dict[int, list[float]] = {0: [], steps: []}
    for chosen in times:  # warm-up: trace every function once
        explain_batch(model, layers, pixels[:1], baselines=means, steps=chosen)
    for r in range(rounds):
        for chosen in (list(times) if r % 2 == 0 else list(times)[::-1]):
            began = time.perf_counter()
            explain_batch(model, layers, pixels, baselines=means, steps=chosen)
            times[chosen].append((time.perf_counter() - began) / len(pixels))
    return {chosen: statistics.median(values) for chosen, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--layers", nargs="+", default=None)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from atlas.console import import_tensorflow

    import_tensorflow()
    from atlas.model.graph import load_model
    from atlas.run.plan import default_explain_layers

    model = load_model(args.model)
    defaults = list(default_explain_layers(model))
    names = {b.name for b in model.blocks} | {layer.name for layer in model.layers}
    layers = args.layers or defaults + [name for name in EXTRA_LAYERS if name in names and name not in defaults]
    photos, pixels = shipped_pixels(args.size)
    print(f"model {args.model}, default explain layers {' '.join(defaults)}; {cpu_name()}, {os.cpu_count()} "
          f"logical CPUs; photos {', '.join(photos)} at {args.size} px")
    print("\n".join(sums_table(model, layers, photos, pixels, args.steps)))
    timed = seconds_per_photo(model, defaults, pixels, args.steps, args.rounds)
    print(f"arrays at {' '.join(defaults)}, seconds per photo (medians of {args.rounds} rounds): gradient at the "
          f"photo {timed[0]:.2f}, integrated over {args.steps} steps {timed[args.steps]:.2f}: "
          f"{timed[args.steps] / timed[0]:.1f} times as long")


if __name__ == "__main__":
    main()
