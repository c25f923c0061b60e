"""Per-photo explanations: seconds per photo for 3 layers, with and without rendering the neuron groups.

Usage: python benchmarks/explain_speed.py [--model synthetic] [--photos 16] [--layers mixed3b mixed4a mixed4d]
       [--rounds 2]

Measured side by side in one run, on this machine, on generated photos (smooth random colour JPEGs) at 224 px,
with the defaults (5 classes, 6 groups, top 6, batches of 8), after one untimed warm-up pass (tracing):
  a. the arrays alone (`--no-render`), with the attribution between consecutive layers;
  b. the arrays alone without it (`--no-between`);
  c. the arrays and the neuron groups' renders (the default group icons: DeepDream, 96 px, 2 octaves of 12 steps),
     the groups timed apart;
each round into fresh run folders, a and b in alternating order, so that drift of the machine falls on both; c is
a's folder's groups, rendered right after it. The channel icons a run lacks are not timed: how many there are
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
    timings: dict[str, list[float]] = {"arrays": [], "arrays, no between": [], "groups": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_photos(root / "photos", args.photos)
        write_photos(root / "warm", 2, seed=1)
        plan = resolve_explain([str(root / "photos")], model, layers=args.layers, render=False)
        flat = replace(plan, between=False)
        for warm in (plan, flat):  # trace every function once, untimed
            run_explain(replace(warm, photos=(str(root / "warm"),)), root / f"warm-{warm.between}", model,
                        progress=False)
        index = read_index(root / "warm-True")
        render_groups(root / "warm-True", model, index.photos[:1], plan, index.settings["hash"], progress=False)
        for r in range(args.rounds):
            for name, chosen in (("arrays", plan), ("arrays, no between", flat)) if r % 2 == 0 else \
                    (("arrays, no between", flat), ("arrays", plan)):
                folder = root / f"run-{r}-{chosen.between}"
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
        print(f"{name:<22} {median[name]:7.2f} s/photo (rounds: {', '.join(f'{v:.2f}' for v in values)})")
    with_groups = median["arrays"] + median["groups"]
    print(f"{'arrays + groups':<22} {with_groups:7.2f} s/photo")
    print(f"ratio: with groups / arrays alone = {with_groups / median['arrays']:.2f}; "
          f"arrays / arrays without between = {median['arrays'] / median['arrays, no between']:.2f}")


if __name__ == "__main__":
    main()
