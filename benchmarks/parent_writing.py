"""The sweep parent's writing rate with a dask cluster versus local worker processes, side by side in one run.

    python benchmarks/parent_writing.py [--model synthetic:0.125] [--channels 16] [--rounds 2]

Workers render and return encoded images; the parent writes every file (atomically) and records each batch in
the manifest. This times the parent's share (`_record`: the files of a batch, then its transaction) in the
same small sweep run through a local dask cluster (2 worker processes of 1 thread) and through the local
pool (`workers: 2`), alternating A B A B into fresh folders, and prints renders per second written by the
parent and overall, with their ratios. No GPU is involved.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atlas.console import import_tensorflow  # noqa: E402

import_tensorflow()  # quietly (unless ATLAS_VERBOSE=1), before the modules below import it

from atlas.run import sweep as sweep_module  # noqa: E402
from atlas.run.config import load_config  # noqa: E402

LAYERS = ["conv2d0_pre_relu", "conv2d2_pre_relu", "mixed3b_3x3_pre_relu"]


def timed_record() -> list[float]:
    """Wrap the parent's record step; returns the list its seconds accumulate in."""
    spent: list[float] = []
    real = sweep_module._record

    def record(*args: object) -> None:
        began = time.perf_counter()
        real(*args)
        spent.append(time.perf_counter() - began)

    sweep_module._record = record
    return spent


def run_once(folder: Path, model: str, channels: int, scheduler: str | None) -> tuple[float, float, float]:
    """(renders per second written by the parent, renders per second overall, share of the sweep's time the
    parent spent writing) of one fresh sweep."""
    config = {"model": model, "layers": LAYERS, "channels": channels, "workers": 2, "batch_size": 4,
              "render": {"octaves": 1, "steps": 2}, "output": str(folder)}
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    spent = timed_record()
    began = time.perf_counter()
    with open(os.devnull, "w") as quiet:
        summary = sweep_module.sweep(load_config(path), backend="dask" if scheduler else None,
                                     scheduler=scheduler, out=quiet)
    overall = time.perf_counter() - began
    assert not summary.failed, summary.failed
    return summary.done / sum(spent), summary.done / overall, sum(spent) / overall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="synthetic:0.125")
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from dask.distributed import LocalCluster

    rates: dict[str, list[tuple[float, float, float]]] = {"local": [], "dask": []}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        for round_ in range(args.rounds):
            for way, scheduler in (("local", None), ("dask", cluster.scheduler_address)):
                with tempfile.TemporaryDirectory() as tmp:
                    rates[way].append(run_once(Path(tmp), args.model, args.channels, scheduler))
                writing, overall, busy = rates[way][-1]
                print(f"round {round_ + 1}: {way:5}: parent writes {writing:6.1f} renders/s, busy writing "
                      f"{busy:4.0%} of the sweep; sweep {overall:5.2f} renders/s", flush=True)
    mid = {way: (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
           for way, runs in rates.items()}
    print(f"median of {args.rounds}: parent writing rate local {mid['local'][0]:.1f}, dask {mid['dask'][0]:.1f} "
          f"renders/s (dask / local {mid['dask'][0] / mid['local'][0]:.2f}); sweep local {mid['local'][1]:.2f}, "
          f"dask {mid['dask'][1]:.2f} renders/s (dask / local {mid['dask'][1] / mid['local'][1]:.2f}; the local pool "
          "starts its processes, TensorFlow and the model in every sweep, the cluster's workers stay warm)")

if __name__ == "__main__":
    main()
