"""One sweep process using every core versus N processes splitting the cores, side by side in one run.

    python benchmarks/sweep_workers.py [--model synthetic] [--workers 2] [--rounds 2]

Both ways render the same small sweep (a few channels of an early, a middle and a late layer, one short octave)
into fresh folders, alternating A B A B; model loading and TensorFlow start-up in the worker processes are
included, as a user would pay them. Prints renders per second of each way and their ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atlas.console import import_tensorflow  # noqa: E402

import_tensorflow()  # quietly (unless ATLAS_VERBOSE=1), before the modules below import it

from atlas.run.config import load_config  # noqa: E402
from atlas.run.sweep import sweep  # noqa: E402

LAYERS = ["conv2d2_pre_relu", "mixed4d_3x3_bottleneck_pre_relu", "mixed5b_5x5_pre_relu"]


def run_once(folder: Path, model: str, workers: int, channels: int) -> float:
    """Renders per second of one fresh sweep."""
    config = {"model": model, "layers": LAYERS, "channels": channels, "workers": workers, "batch_size": 4,
              "render": {"octaves": 1, "steps": 4}, "output": str(folder)}
    path = folder / f"w{workers}.yaml"
    path.write_text(yaml.safe_dump(config))
    began = time.perf_counter()
    summary = sweep(load_config(path), out=open(os.devnull, "w"))
    assert not summary.failed, summary.failed
    return summary.done / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="synthetic")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rates: dict[int, list[float]] = {1: [], args.workers: []}
    for round_ in range(args.rounds):
        for workers in (1, args.workers):
            with tempfile.TemporaryDirectory() as tmp:
                rates[workers].append(run_once(Path(tmp), args.model, workers, args.channels))
            print(f"round {round_ + 1}: {workers} process(es): {rates[workers][-1]:.2f} renders/s", flush=True)
    best_one, best_many = max(rates[1]), max(rates[args.workers])
    print(f"best: 1 process x {os.cpu_count()} threads {best_one:.2f} renders/s, {args.workers} processes "
          f"{best_many:.2f} renders/s, ratio (many / one) {best_many / best_one:.2f}")


if __name__ == "__main__":
    main()
