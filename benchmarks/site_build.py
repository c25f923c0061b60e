"""Gallery build time and page weight on a fake run of all 59 layers and 7,548 channels, side by side.

Usage: python benchmarks/site_build.py [--photos chelsea] [--size 128] [--thumb 64] [--folder PATH] [--keep]
Writes a fake run (noise plus each photo, every channel, whole-layer dreams) with the same manifest API as the
sweep, then times: a full build into an empty site folder, a rebuild with nothing changed, and a rebuild after
one layer's renders changed. Prints the index page's size before images.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from fakerun import make_fake_run, synthetic_layers  # noqa: E402

from atlas.publish.site import build_site  # noqa: E402
from atlas.run.manifest import MANIFEST_FILE, Manifest, read_run  # noqa: E402


def touch_one_layer(folder: Path, layer: str) -> int:
    """Re-record one layer's renders with new metrics, as a re-render would; returns how many."""
    renders = [replace(r, lift=r.lift + 1.0) for r in read_run(folder).renders if r.layer == layer]
    with Manifest(folder / MANIFEST_FILE) as manifest:
        manifest.add(renders)
    return len(renders)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", nargs="*", default=["chelsea"])
    parser.add_argument("--size", type=int, default=128, help="web image size of the fake renders")
    parser.add_argument("--thumb", type=int, default=64)
    parser.add_argument("--folder", type=Path, default=None, help="where to write the fake run (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the fake run and its site")
    args = parser.parse_args()

    folder = args.folder or Path(tempfile.mkdtemp(prefix="atlas-site-bench-")) / "bench"
    layers = synthetic_layers(1.0)
    started = time.perf_counter()
    make_fake_run(folder, layers=layers, photos=tuple(args.photos), size=args.size, thumb=args.thumb)
    renders = len(read_run(folder).renders)
    print(f"fake run: {len(layers)} layers, {sum(l.channels for l in layers):,} channels, {renders:,} renders, "
          f"{len(args.photos) + 1} modes, written in {time.perf_counter() - started:.1f} s")
    shutil.rmtree(folder / "site", ignore_errors=True)

    full = build_site(folder)
    same = build_site(folder)
    touched = touch_one_layer(folder, "mixed4d_3x3_pre_relu")
    changed = build_site(folder)
    index_kb = (folder / "site" / "index.html").stat().st_size / 1024
    largest = max((folder / "site" / "layers").glob("*.html"), key=lambda p: p.stat().st_size)
    thumbs = {Path(r.thumb).suffix for r in read_run(folder).renders}

    print(f"{'build':34s} {'seconds':>8s} {'written':>8s} {'unchanged':>9s}")
    for name, report in [("full (empty site folder)", full), ("rebuild, nothing changed", same),
                         (f"rebuild, {touched} renders of 1 layer new", changed)]:
        print(f"{name:34s} {report.seconds:8.2f} {report.pages_written:8,d} {report.pages_unchanged:9,d}")
    print(f"no-change rebuild / full build: {same.seconds / full.seconds:.2f}; "
          f"one-layer rebuild / full build: {changed.seconds / full.seconds:.2f}")
    print(f"index.html: {index_kb:.1f} KB before images (target < 300 KB); largest layer page: "
          f"{largest.name} {largest.stat().st_size / 1024:.0f} KB; thumbnails: {', '.join(sorted(thumbs))}")
    print(f"full build {'under' if full.seconds < 30 else 'OVER'} the 30 s target")
    if not args.keep and args.folder is None:
        shutil.rmtree(folder.parent)
    else:
        print(f"kept: {folder}")


if __name__ == "__main__":
    main()
