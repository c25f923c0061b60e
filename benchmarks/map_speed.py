"""Activation-atlas speed: the sampling pass, UMAP, cell rendering, and a whole map end to end.

Usage: python benchmarks/map_speed.py [--model synthetic] [--photos 2000] [--umap-samples 100000]
       [--layers mixed3b mixed4c mixed5b] [--skip-end-to-end]

Measured in one run, on this machine:
  1. sampling: samples per second of the pass over generated photos (all map layers in one forward pass, 50
     positions per photo and layer), and photos per second;
  2. UMAP: the seconds umap-learn takes for --umap-samples vectors at mixed4c's width (random vectors with
     the samples' spread; UMAP's cost depends on the count and width, not on the values), first call in the
     process (numba compiled or loaded from its cache) and a second call;
  3. rendering: cells per second with the default DeepDream cell settings, the cells of a 12 x 12 grid of
     mixed4c from the sampled photos, and Fourier's for comparison (a tenth of its steps, timed and scaled up);
  4. end to end: `atlas map` of the --layers from --photos generated photos with the defaults (DeepDream).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def write_photos(folder: Path, count: int, seed: int = 0) -> None:
    """Smooth random colour JPEGs of several sizes (photo-like spectra)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        w, h = int(rng.integers(240, 400)), int(rng.integers(240, 400))
        small = rng.uniform(0, 255, (h // 16, w // 16, 3)).astype(np.uint8)
        Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC).save(folder / f"{i:05d}.jpg", quality=90)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="synthetic")
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--sample-photos", type=int, default=200, help="photos of the sampling measurement")
    parser.add_argument("--umap-samples", type=int, default=100_000)
    parser.add_argument("--layers", nargs="+", default=["mixed3b", "mixed4c", "mixed5b"])
    parser.add_argument("--skip-end-to-end", action="store_true")
    parser.add_argument("--parts", default="1234", help="which measurements to run, e.g. 13")
    parser.add_argument("--render-grid", type=int, default=12, help="cells a side of the rendered grid (part 3)")
    args = parser.parse_args()

    import numpy as np

    from atlas.model.graph import load_model
    from atlas.analysis.maps import MapSummary, render_cells, run_map, sample_photos, umap_layout
    from atlas.run.plan import resolve_map

    model = load_model(args.model)
    print(f"model {args.model}, TF threads: {os.cpu_count()} logical CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_photos(root / "photos", args.sample_photos)
        plan = resolve_map(str(root / "photos"), model, 0, layers=args.layers, render=False)
        summary = MapSummary(folder=plan.folder)
        began = time.perf_counter()
        state = sample_photos(plan, root / "run", model, summary, progress=False) if "1" in args.parts else None
        seconds = time.perf_counter() - began
        total = sum(state["counts"].values()) if state else 0
        if state:
            print(f"1. sampling: {len(state['photos'])} photos, {total:,} samples over {len(args.layers)} layers in "
              f"{seconds:.1f} s: {total / seconds:,.0f} samples/s, {len(state['photos']) / seconds:.1f} photos/s")

        width = model.layer_fn("mixed4c")(np.zeros((1, 224, 224, 3), np.float32)).shape[-1]
        rng = np.random.default_rng(0)
        vectors = np.maximum(rng.normal(size=(args.umap_samples, width)), 0).astype(np.float32)
        for attempt in ("first", "second") if "2" in args.parts else ():
            began = time.perf_counter()
            umap_layout(vectors, plan)
            print(f"2. UMAP ({attempt} call): {args.umap_samples:,} samples x {width} channels in "
                  f"{time.perf_counter() - began:.1f} s")

        from dataclasses import replace

        small = replace(plan, layers=("mixed4c",), samples=args.sample_photos * 50, grids=(args.render_grid,),
                        min_samples=2, render_cells=True)
        from atlas.analysis.maps import layout_layer, write_crops

        state = sample_photos(small, root / "cells", model, MapSummary(folder=small.folder), progress=False)
        layout_layer(small, root / "cells", model, "mixed4c", state)
        write_crops(small, root / "cells", model)
        for method in ("deepdream", "fourier") if "3" in args.parts else ():
            from atlas.run.plans import default_cell_settings

            settings = default_cell_settings(method)
            scale = 1.0
            if method == "fourier":
                scale = 10.0
                settings = replace(settings, steps=settings.steps // 10)
            run_plan = replace(small, render=settings)
            (root / "cells" / "manifest.sqlite").unlink(missing_ok=True)
            began = time.perf_counter()
            done = render_cells(run_plan, root / "cells", model, "mixed4c", progress=False)
            seconds = (time.perf_counter() - began) * scale
            print(f"3. rendering ({method}, {settings.size} px, "
                  f"{'2 octaves x 12 steps' if method == 'deepdream' else '256 steps (timed at 25, x10)'}): "
                  f"{done} cells in {seconds:.1f} s: {done / seconds:.2f} cells/s")

        if not args.skip_end_to_end and "4" in args.parts:
            write_photos(root / "many", args.photos, seed=1)
            plan = resolve_map(str(root / "many"), model, 0, layers=args.layers)
            began = time.perf_counter()
            summary = run_map(plan, root / "e2e", model, progress=False)
            seconds = time.perf_counter() - began
            print(f"4. end to end: {len(args.layers)} layers from {args.photos} photos in {seconds / 60:.1f} min")
            print("\n".join("   " + line for line in summary.lines()))


if __name__ == "__main__":
    main()
