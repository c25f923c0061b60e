"""Method speed: image-steps per second of the Fourier method against the DeepDream (noise) method, side by
side in one run at the same image size and batch; then the full-atlas sweep time of each method, estimated by
`atlas sweep CONFIG --dry-run` on configs that differ only in the method.

Usage: python benchmarks/method_speed.py [--model synthetic] [--layers A B C] [--channels 8] [--batch 8]
       [--steps 16] [--size 224] [--repeats 2] [--no-dry-run | --only-dry-run] [--dry-run-model synthetic]
Both ways call `render_channels` with the same channels, size and batch: DeepDream with one octave of --steps
steps, Fourier with --steps Adam steps (so both do --steps gradient steps per image at --size px, metrics
included; a Fourier step sees the padded canvas, size + 12 px). Rounds alternate ways and layers so machine
noise hits both. Also printed, for information: the median lift and the finest-Laplacian-level share of each
way's images (at these reduced steps). The dry runs measure one step of every layer and take a few minutes each.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from render_speed import LAYERS  # the same three layers as the render benchmark

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--model", default="synthetic")
    parser.add_argument("--layers", nargs="+", default=LAYERS)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-dry-run", action="store_true", help="skip the full-atlas estimates")
    parser.add_argument("--only-dry-run", action="store_true", help="only the full-atlas estimates")
    parser.add_argument("--dry-run-model", default="synthetic", help="model of the full-atlas dry runs")
    args = parser.parse_args()
    if args.only_dry_run:
        full_atlas_estimates(args.dry_run_model)
        return

    import numpy as np

    from atlas.model.graph import load_model
    from atlas.render.loop import render_channels
    from atlas.render.settings import RenderSettings
    from atlas.render.transforms import finest_band_share

    model = load_model(args.model)
    layers = [model.layer(name).name for name in args.layers]
    channels = list(range(args.channels))
    ways = {"deepdream": RenderSettings(size=args.size, octaves=1, steps=args.steps, batch_size=args.batch),
            "fourier": RenderSettings(method="fourier", size=args.size, steps=args.steps, batch_size=args.batch)}
    for layer in layers:  # trace and warm up every way
        for settings in ways.values():
            render_channels(model, layer, channels[:args.batch], settings=replace(settings, steps=1))
    seconds = {(layer, way): 0.0 for layer in layers for way in ways}
    lifts, shares = {way: [] for way in ways}, {way: [] for way in ways}
    for _ in range(args.repeats):
        for layer in layers:
            for way, settings in ways.items():
                began = time.perf_counter()
                results = render_channels(model, layer, channels, settings=settings)
                seconds[layer, way] += time.perf_counter() - began
                lifts[way] += [r.lift for r in results]
                shares[way] += list(finest_band_share(np.stack([r.image for r in results])))
    image_steps = args.repeats * args.channels * args.steps
    print(f"{args.model}, {args.size}px, batch {args.batch}, {args.channels} channels per layer, {args.steps} "
          f"steps per image, {args.repeats} rounds; image-steps/s (metric passes included)")
    print(f"{'layer':33s} {'deepdream':>9s} {'fourier':>9s} {'fourier/deepdream':>17s}")
    for layer in layers:
        dd, ff = (image_steps / seconds[layer, way] for way in ways)
        print(f"{layer:33s} {dd:9.2f} {ff:9.2f} {ff / dd:17.2f}")
    for way in ways:
        print(f"{way}: median lift {np.median(lifts[way]):.1f}, finest-level energy share "
              f"{np.mean(shares[way]):.3f} (at {args.steps} steps)")
    if not args.no_dry_run:
        full_atlas_estimates(args.dry_run_model)


def full_atlas_estimates(model: str) -> None:
    """`atlas sweep --dry-run` of the whole atlas (59 layers, every channel) with each method's defaults."""
    variants = {"deepdream (3 octaves x 10 steps)": "{}",
                "fourier (512 steps)": "{method: fourier}"}
    with tempfile.TemporaryDirectory() as folder:
        for name, render in variants.items():
            config = Path(folder) / "full.yaml"
            config.write_text(f"model: {model}\nlayers: all\nchannels: all\nrender: {render}\noutput: {folder}/out\n")
            began = time.perf_counter()
            run = subprocess.run([sys.executable, "-m", "atlas.cli", "sweep", str(config), "--dry-run"],
                                 capture_output=True, text=True)
            if run.returncode:
                raise SystemExit(f"the dry run failed: {run.stderr.strip().splitlines()[-1]}")
            print(f"full atlas, {name}: {run.stdout.strip().splitlines()[-1]} "
                  f"(dry run took {time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
