"""Time, peak memory and on-disk size of the circuits pass: every edge (direct and expanded) of every layer.

Usage: python benchmarks/circuits_speed.py [--model synthetic] [--batch-size 32] [--top 10] [--layers N]
Prints the time per layer (gradient batches, compression and atomic writes included), the whole pass, the peak
resident set size (ru_maxrss) before and after, and the bytes written into the run folder. `--layers N` stops
after the first N layers (a quick look); the default is all of them.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="synthetic")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--layers", type=int, default=None)
    args = parser.parse_args()

    from atlas.console import import_tensorflow

    import_tensorflow()
    from atlas.model.graph import load_model
    from atlas.analysis.circuits import run_circuits
    from atlas.run.circuits import circuits_folder
    from atlas.run.plans import CircuitsPlan

    model = load_model(args.model)
    if args.layers:
        model.layers = model.layers[:args.layers]
    print(f"{args.model}: {len(model.layers)} layers, {model.channels:,} channels; after load: peak "
          f"{peak_mb():.0f} MB")
    with tempfile.TemporaryDirectory() as run:
        start = time.perf_counter()
        summary = run_circuits(CircuitsPlan(top=args.top, batch_size=args.batch_size), run, model, progress=True)
        seconds = time.perf_counter() - start
        folder = circuits_folder(run, model.sha256)
        files = list(Path(folder).iterdir())
        size = sum(f.stat().st_size for f in files)
    print(f"pass: {seconds:.1f} s for {len(summary.computed)} layers ({model.channels:,} target units, direct and "
          f"expanded), {seconds / max(model.channels, 1) * 1000:.1f} ms per unit")
    print(f"peak memory: {peak_mb():.0f} MB")
    print(f"on disk: {size / 1e6:.1f} MB in {len(files)} files (top {args.top}, batch {args.batch_size})")


if __name__ == "__main__":
    main()
