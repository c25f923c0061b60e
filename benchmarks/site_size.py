"""Gallery size and build time: a partial run of a large model beside a full run of the stand-in.

Usage: python benchmarks/site_size.py [--model efficientnet-lite0] [--layers a,b,c] [--channels 8]
                                      [--scale 0.5] [--no-circuits] [--folder PATH] [--keep]

Writes two fake runs with the sweep's own manifest API (cheap noise images; the site does not look at pixels) and
builds the gallery of each into an empty folder:

- partial: the model's whole catalogue (read from its graph), `--channels` channels rendered in each of `--layers`
  (default: six layers from the stem to the head; 48 renders), as `atlas run` leaves a few layers of a large model;
- full: every channel of the synthetic stand-in at `--scale` rendered, as a whole atlas.

Both get made-up circuits for every layer (the circuits pass stores every layer), unless `--no-circuits`. Prints,
side by side, each site's files, bytes and build time, and the partial run's largest layer page. The issue this
measures (31) started from 21,077 files and 129 MB for 48 renders of EfficientNet-Lite0.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from fakerun import add_fake_circuits, make_fake_run  # noqa: E402

from atlas.publish.site import SITE_DIR, SiteReport, build_site  # noqa: E402

LITE0_LAYERS = "stem_conv,block3_dw,block6_project,block9_dw,block12_project,head_conv"


def site_weight(site: Path) -> tuple[int, int]:
    """(files, bytes) under a built site folder."""
    files = [p for p in site.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def fake_run(folder: Path, spec: str, rendered: list[str] | None, channels: int, circuits: bool) -> Path:
    """A fake run of `spec`'s catalogue: `channels` channels of the `rendered` layers (None: every channel of every
    layer), with made-up circuits for every layer."""
    from atlas.model.graph import load_model

    model = load_model(spec)
    picks = None if rendered is None else {name: min(channels, model.layer(name).channels) for name in rendered}
    make_fake_run(folder, layers=model.layers, photos=(), spec=spec, rendered=picks, size=128, thumb=64)
    if circuits:
        add_fake_circuits(folder, model)
    return folder


def build(folder: Path) -> tuple[SiteReport, int, int, float]:
    """Build the run's site into an empty folder: (report, files, bytes, seconds)."""
    shutil.rmtree(folder / SITE_DIR, ignore_errors=True)
    started = time.perf_counter()
    report = build_site(folder)
    seconds = time.perf_counter() - started
    return (report, *site_weight(folder / SITE_DIR), seconds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="efficientnet-lite0", help="the large model of the partial run")
    parser.add_argument("--layers", default=LITE0_LAYERS, help="its rendered layers, a,b,c")
    parser.add_argument("--channels", type=int, default=8, help="channels rendered per layer")
    parser.add_argument("--scale", type=float, default=0.5, help="width of the stand-in of the full run")
    parser.add_argument("--no-circuits", dest="circuits", action="store_false")
    parser.add_argument("--folder", type=Path, default=None, help="where to write the fake runs (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the fake runs and their sites")
    args = parser.parse_args()

    folder = args.folder or Path(tempfile.mkdtemp(prefix="atlas-site-size-"))
    layers = [name.strip() for name in args.layers.split(",") if name.strip()]
    runs = {
        f"partial: {args.model}, {args.channels} ch x {len(layers)} layers":
            fake_run(folder / "partial", args.model, layers, args.channels, args.circuits),
        f"full: synthetic:{args.scale:g}, every channel":
            fake_run(folder / "full", f"synthetic:{args.scale:g}", None, 0, args.circuits),
    }
    print(f"{'run':44s} {'layers':>6s} {'channels':>8s} {'renders':>7s} {'files':>7s} {'MB':>7s} {'build s':>7s}")
    for name, run_folder in runs.items():
        from atlas.run.manifest import read_run

        run = read_run(run_folder)
        report, files, size, seconds = build(run_folder)
        largest = max((run_folder / SITE_DIR / "layers").glob("*.html"), key=lambda p: p.stat().st_size)
        print(f"{name:44s} {len(run.layers):6d} {sum(l.channels for l in run.layers):8,d} {len(run.renders):7,d} "
              f"{files:7,d} {size / 1e6:7.2f} {seconds:7.1f}   largest layer page {largest.name} "
              f"{largest.stat().st_size / 1024:.0f} KB")
    if args.keep or args.folder is not None:
        print(f"kept: {folder}")
    else:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
