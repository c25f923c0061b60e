"""Render quality on the real network: class visualisations of EfficientNet-Lite0 by each method, judged by its
siblings EfficientNet-Lite1 and Lite2 before and after a light photocopy, with their contrast and spectrum; and
the specificity of channel renders at three depths of Lite0. docs/quality.md explains the columns and holds the
measured table.

    python benchmarks/real_quality.py                                  # 50 classes, every method, seed 0
    python benchmarks/real_quality.py --classes 24 --save /tmp/quality  # keep each variant's renders (and reuse
                                                                        # them: a cut run continues where it stopped)
    python benchmarks/real_quality.py --methods maco:256:0.5 maco:512:2.0 --no-channels   # tuning MACO

A variant is METHOD[:STEPS[:LEARNING_RATE[:crops]]] (defaults: the method's, atlas/render/settings.py; `crops`:
through large random crops, `crops`). `deepdream` gives
two rows from the same renders: `raw` (the optimised pixels) and `visstd` (the DeepDream notebook's display, what
`atlas dream --display visstd` saves); every column judges the pixels a row saves. Classes: `--classes N` indices
spread evenly over the 1000 ImageNet classes (0, 1000/N, ...; atlas.analysis.quality.even_classes). Channels:
`--channels` per layer, spread evenly over each of --layers. Renders are batched (`--batch` images a pass).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

LAYERS = ("block3_expand", "block9_expand", "head_conv")  # low, mid, high layers of Lite0
JUDGES = ("efficientnet-lite1", "efficientnet-lite2")


@dataclass(frozen=True)
class Variant:
    """One way of rendering: a method with its steps and learning rate (None: the method's defaults)."""

    method: str
    steps: int | None = None
    learning_rate: float | None = None
    crops: bool = False  # the Adam methods through CROPS instead of the default transforms

    @classmethod
    def parse(cls, text: str) -> "Variant":
        parts = text.split(":")
        return cls(parts[0], int(parts[1]) if len(parts) > 1 and parts[1] else None,
                   float(parts[2]) if len(parts) > 2 and parts[2] else None, len(parts) > 3 and parts[3] == "crops")

    def settings(self, size: int, batch: int):
        from atlas.render.settings import RenderSettings

        display = "visstd" if self.method == "deepdream" else "raw"
        extra = {"transforms": crops(size)} if self.crops else {}
        return RenderSettings(method=self.method, steps=self.steps, learning_rate=self.learning_rate, size=size,
                              batch_size=batch, display=display, **extra)

    def name(self, size: int) -> str:
        s = self.settings(size, 1)
        if s.method == "deepdream":
            return s.method
        return f"{s.method} {s.steps} steps, lr {s.learning_rate:g}" + (", large crops" if self.crops else "")

    def key(self, size: int, seed: int) -> str:
        s = self.settings(size, 1)
        return f"{s.method}-{s.steps}-{s.learning_rate:g}{'-crops' if self.crops else ''}-{size}-{seed}"


def crops(size: int):
    """Large random crops, as MACO's paper climbs through: the default chain zooming in 1-1.6x (a crop of 63-100% of
    the side about the centre) and then cutting a quarter of the side at a random offset, so each step sees about
    half to three quarters of the image's side somewhere in it (the classifier resizes it back to 224 px)."""
    from atlas.render.chain import Jitter, Pad, Rotate, Scale

    return (Pad(12), Jitter(8), Scale(tuple(1 + i / 20 for i in range(13))), Rotate(), Jitter(size // 4))


def cpu() -> str:
    """The CPU's model name and its bfloat16 flags (lscpu)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = set(fields.get("Flags", "").split())
    native = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags] or ["no avx512_bf16/amx"]
    return f"{fields.get('Model name', '?').strip()}, {os.cpu_count()} cores, {' '.join(native)}"


def render_variant(model, variant: Variant, classes: list[int], args, seed: int, save: Path | None):
    """{'shown', 'raw': uint8 [N, H, W, 3] of the classes, 'seconds': per image, 'specific': {layer: [bool]}
    of the channel renders (each on the pixels it saves: raw and visstd for deepdream)}, reused from `save`."""
    cached = save / f"{variant.key(args.size, seed)}-{len(classes)}.npz" if save else None
    if cached and cached.exists():
        with np.load(cached) as data:
            return {k: data[k] for k in data.files}
    from atlas.render.classes import render_classes
    from atlas.render.loop import render_channels
    from atlas.render.settings import RenderSettings

    settings: RenderSettings = variant.settings(args.size, args.batch)
    began = time.perf_counter()
    results = render_classes(model, classes, settings=settings, seed=seed)
    out = {"shown": np.stack([r.image for r in results]),
           "raw": np.stack([r.image if r.raw is None else r.raw for r in results]),
           "seconds": np.float64((time.perf_counter() - began) / len(classes))}
    if not args.no_channels:
        from atlas.analysis.quality import specificity

        for layer in args.layers:
            count = next(lay.channels for lay in model.layers if lay.name == layer)
            channels = [i * count // args.channels for i in range(args.channels)]
            made = render_channels(model, layer, channels, settings=settings, seed=seed)
            out[f"raw:{layer}"] = np.array([bool(r.specific) for r in made])
            shown = np.stack([r.image for r in made])
            out[f"shown:{layer}"] = specificity(model, layer, channels, shown)
    if cached:
        from atlas.atomic import atomic_path

        cached.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cached) as part:
            with open(part, "wb") as handle:
                np.savez(handle, **out)
    return out


def judge(models: dict, images: np.ndarray, classes: list[int]) -> dict[str, float]:
    """Top-1 of Lite0 and top-1 and top-5 of each judge before and after the photocopy, contrast and slope."""
    from atlas.analysis.quality import contrast, hits, photocopy, spectrum_slope, top_k

    copied = photocopy(images)
    row = {"lite0 top-1": hits(top_k(models["lite0"], images, 1), classes, 1).mean()}
    for name in JUDGES:
        short = name.split("-")[1]
        for label, pixels in (("", images), (" copy", copied)):
            top = top_k(models[name], pixels, 5)
            row[f"{short}{label} top-1"] = hits(top, classes, 1).mean()
            row[f"{short}{label} top-5"] = hits(top, classes, 5).mean()
    row["contrast"] = contrast(images).mean()
    row["slope"] = spectrum_slope(images).mean()
    return row


COLUMNS = ("lite0 top-1", "lite1 top-1", "lite1 top-5", "lite2 top-1", "lite2 top-5", "lite1 copy top-1",
           "lite1 copy top-5", "lite2 copy top-1", "lite2 copy top-5", "copy top-5 mean", "contrast", "slope")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classes", type=int, default=50, help="how many classes, spread evenly over ImageNet's")
    parser.add_argument("--methods", nargs="+", default=["deepdream", "fourier", "fourier:256", "maco"],
                        help="variants METHOD[:STEPS[:LR[:crops]]]")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--layers", nargs="+", default=list(LAYERS), help="Lite0 layers of the channel renders")
    parser.add_argument("--channels", type=int, default=4, help="channels per layer (evenly spread)")
    parser.add_argument("--no-channels", action="store_true", help="class renders only")
    parser.add_argument("--save", type=Path, help="folder keeping each variant's renders, reused when present")
    args = parser.parse_args()

    from atlas.console import import_tensorflow

    import_tensorflow()
    from atlas.analysis.quality import even_classes
    from atlas.model.graph import load_model

    began = time.perf_counter()
    models = {"lite0": load_model("efficientnet-lite0"), **{name: load_model(name) for name in JUDGES}}
    classes = even_classes(args.classes)
    rows: dict[str, list[dict[str, float]]] = {}
    specific: dict[str, dict[str, list[float]]] = {}
    for seed in args.seeds:
        for variant in map(Variant.parse, args.methods):
            out = render_variant(models["lite0"], variant, classes, args, seed, args.save)
            displays = ("raw", "shown") if variant.method == "deepdream" else ("shown",)
            for display in displays:
                name = variant.name(args.size) + (f" {'visstd' if display == 'shown' else 'raw'}"
                                                  if variant.method == "deepdream" else "")
                row = judge(models, out[display], classes)
                row["copy top-5 mean"] = (row["lite1 copy top-5"] + row["lite2 copy top-5"]) / 2
                row["s/image"] = float(out["seconds"])
                rows.setdefault(name, []).append(row)
                for layer in args.layers if not args.no_channels else ():
                    if f"{display}:{layer}" in out:  # (a variant kept from a run with --no-channels has none)
                        specific.setdefault(name, {}).setdefault(layer, []).append(
                            float(np.mean(out[f"{display}:{layer}"])))
            print(f"# {variant.name(args.size)}, seed {seed} done at {time.perf_counter() - began:.0f} s",
                  file=sys.stderr, flush=True)

    print(f"Lite0 class visualisations, {len(classes)} classes ({', '.join(map(str, classes[:6]))}, ...), "
          f"{args.size} px, seeds {args.seeds}, batch {args.batch}; judged on the pixels each row saves")
    print("| variant | " + " | ".join(COLUMNS) + " | s/image |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for name, seeds in rows.items():
        mean = {k: float(np.mean([r[k] for r in seeds])) for k in seeds[0]}
        cells = [f"{mean[c]:.1f}" if c in ("contrast",) else f"{mean[c]:.2f}" for c in COLUMNS]
        print(f"| {name} | " + " | ".join(cells) + f" | {mean['s/image']:.1f} |")
    if specific:
        print(f"\nChannel renders of Lite0: share specific ({args.channels} channels a layer, each own image "
              "excites its channel more than the other channels' images do)")
        print("| variant | " + " | ".join(args.layers) + " |")
        print("|---" * (len(args.layers) + 1) + "|")
        for name, layers in specific.items():
            print(f"| {name} | " + " | ".join(f"{np.mean(layers[lay]):.2f}" for lay in args.layers) + " |")
    print(f"\nCPU: {cpu()}; wall time {time.perf_counter() - began:.0f} s")
    print("command: python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
