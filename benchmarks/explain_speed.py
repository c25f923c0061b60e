"""Per-photo explanations: seconds per photo for 3 layers, with and without rendering the neuron groups.

Usage: python benchmarks/explain_speed.py [--model synthetic] [--photos 16] [--layers mixed3b mixed4a mixed4d]
       [--rounds 2]

Measured side by side in one run, on this machine, on generated photos (smooth random colour JPEGs) at 224 px,
with the defaults (5 classes, 6 groups, top 6, batches of 8; the mean over the shipped photos as the baseline),
after one untimed warm-up pass (tracing):
  a. the arrays alone (`--no-render`): the default, integrated gradients (16 steps), no attribution between layers;
  b. the arrays with the gradient at the photo (`--ig-steps 0`);
  c. the arrays with the attribution between consecutive layers too (`--between`);
  d. the arrays and the neuron groups' renders (the default group icons: DeepDream, 96 px, 2 octaves of 12 steps),
     the groups timed apart;
each round into fresh run folders, a, b and c in a rotating order, so that drift of the machine falls on each; d
is a's folder's groups, rendered right after it. The channel icons a run lacks are not timed: how many there are
depends on the run (none after a full sweep).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from map_speed import write_photos  # noqa: E402  (this folder is on the path when a benchmark runs as a script)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="synthetic")
    parser.add_argument("--photos", type=int, default=16)
    parser.add_argument("--layers", nargs="+", default=["mixed3b", "mixed4a", "mixed4d"])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from atlas.analysis.explain import render_groups, run_explain
    from atlas.model.graph import load_model
    from atlas.run.explainfiles import read_index
    from atlas.run.plan import resolve_explain

    model = load_model(args.model)
    print(f"model {args.model}, {os.cpu_count()} logical CPUs, {args.photos} photos, layers {' '.join(args.layers)}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_photos(root / "photos", args.photos)
        write_photos(root / "warm", 2, seed=1)
        plan = resolve_explain([str(root / "photos")], model, layers=args.layers, render=False)
        variants = {"arrays": plan, "arrays, gradient at the photo": replace(plan, ig_steps=0),
                    "arrays, with between": replace(plan, between=True)}
        timings: dict[str, list[float]] = {name: [] for name in [*variants, "groups"]}
        for name, warm in variants.items():  # trace every function once, untimed
            run_explain(replace(warm, photos=(str(root / "warm"),)), root / f"warm-{name}", model, progress=False)
        index = read_index(root / "warm-arrays")
        render_groups(root / "warm-arrays", model, index.photos[:1], plan, index.settings["hash"], progress=False)
        names = list(variants)
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                chosen = variants[name]
                folder = root / f"run-{r}-{names.index(name)}"
                began = time.perf_counter()
                done = run_explain(chosen, folder, model, progress=False)
                timings[name].append((time.perf_counter() - began) / done.processed)
                if chosen is plan:
                    index = read_index(folder)
                    began = time.perf_counter()
                    groups = render_groups(folder, model, index.photos, plan, index.settings["hash"], progress=False)
                    timings["groups"].append((time.perf_counter() - began) / len(index.photos))
                    print(f"round {r + 1}: {groups} groups rendered for {len(index.photos)} photos")
    median = {name: statistics.median(values) for name, values in timings.items()}
    for name, values in timings.items():
        print(f"{name:<30} {median[name]:7.2f} s/photo (rounds: {', '.join(f'{v:.2f}' for v in values)})")
    with_groups = median["arrays"] + median["groups"]
    print(f"{'arrays + groups':<30} {with_groups:7.2f} s/photo")
    print(f"ratios: with groups / arrays = {with_groups / median['arrays']:.2f}; arrays / gradient at the photo = "
          f"{median['arrays'] / median['arrays, gradient at the photo']:.2f}; with between / arrays = "
          f"{median['arrays, with between'] / median['arrays']:.2f}")


if __name__ == "__main__":
    main()
