"""Finest-band share: how much of each render's energy sits in the finest Laplacian level (pixel-scale detail),
for three ways of rendering the same channels side by side in one run, at each method's default settings:

- `deepdream`: the DeepDream method from noise (3 octaves of 10 Laplacian-normalised steps);
- `fourier`: the Fourier method (Adam on the decorrelated spectrum through the random transforms);
- `pixels`: the same Adam steps through the same transforms on plain pixels (Lucid's `image(fft=False,
  decorrelate=False)`), the baseline the Fourier method is published against.

Usage: python benchmarks/finest_band.py [--model synthetic:0.125] [--layers A B ...] [--channels 4]
       [--size 224] [--steps 512] [--filters white]
Prints each layer's mean share per way, then the ratios Fourier / pixels and Fourier / DeepDream over all layers
(below 1: the Fourier renders carry less pixel-scale energy). Photos resized to --size give the share of real
images for scale. `--filters white` swaps the stand-in's smoothed filters for white He-normal ones (unsmoothed
random weights), to see whether the result depends on the stand-in's filters; it applies to `synthetic` specs.
"""

from __future__ import annotations

import argparse
import time

LAYERS = ["conv2d2_pre_relu", "mixed3b_5x5_pre_relu", "mixed4a_3x3_pre_relu", "mixed4c_5x5_pre_relu",
          "mixed4e_3x3_pre_relu", "mixed5b_5x5_pre_relu"]


def white_filters(builder, k: int, cin: int, cout: int):
    """Zero-mean He-normal filters without the stand-in's spatial smoothing."""
    import numpy as np

    w = builder.rng.standard_normal((k, k, cin, cout))
    w = w - w.mean(axis=(0, 1, 2), keepdims=True)
    return (w / (w.std() + 1e-12) * np.sqrt(2.0 / (k * k * cin))).astype(np.float32)


def photo_shares(size: int) -> list[float]:
    """The share of each shipped photo, centre-cropped square and resized to `size`."""
    import numpy as np
    from PIL import Image

    from atlas.images import SHIPPED_PHOTOS, photo_path
    from atlas.render.transforms import finest_band_share

    images = []
    for name in SHIPPED_PHOTOS:
        with Image.open(photo_path(name)) as image:
            image = image.convert("RGB")
            side = min(image.size)
            left, top = (image.width - side) // 2, (image.height - side) // 2
            square = image.crop((left, top, left + side, top + side)).resize((size, size), Image.LANCZOS)
            images.append(np.asarray(square, np.float32))
    return list(finest_band_share(np.stack(images)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="synthetic:0.125")
    parser.add_argument("--layers", nargs="+", default=LAYERS)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=512, help="Adam steps of the Fourier and pixel ways")
    parser.add_argument("--filters", choices=["stand-in", "white"], default="stand-in")
    args = parser.parse_args()

    from atlas.console import import_tensorflow

    import_tensorflow()  # its start-up lines and retracing warnings off the console (unless ATLAS_VERBOSE=1)
    import numpy as np

    from atlas.images import to_uint8
    from atlas.model import synthetic
    from atlas.model.graph import load_model
    from atlas.render import fourier, param
    from atlas.render.loop import render_channels
    from atlas.render.settings import RenderSettings
    from atlas.render.transforms import finest_band_share

    if args.filters == "white":
        synthetic._Builder.filters = white_filters
    model = load_model(args.model)
    deepdream = RenderSettings(size=args.size, batch_size=args.channels)
    fourier_settings = RenderSettings(method="fourier", size=args.size, steps=args.steps)
    print(f"{args.model} ({args.filters} filters), {args.size} px, {args.channels} channels per layer; "
          f"Fourier and pixels {args.steps} Adam steps")
    shares: dict[str, list[float]] = {"deepdream": [], "fourier": [], "pixels": []}
    for name in args.layers:
        layer = model.layer(name)
        channels = list(range(min(args.channels, layer.channels)))
        began = time.perf_counter()
        images = np.stack([r.image for r in render_channels(model, layer.name, channels, settings=deepdream)])
        shares["deepdream"].append(float(finest_band_share(images).mean()))
        keys = [fourier.image_key(0, c, 0) for c in channels]
        for way, parameterisation in (("fourier", param.SPECTRUM), ("pixels", param.PIXEL)):
            finals = fourier.dream_fourier(model, layer.name, np.array(channels), keys, args.size, args.steps,
                                           fourier_settings.learning_rate, fourier_settings.spectrum_std,
                                           "channel", parameterisation=parameterisation).final
            shares[way].append(float(finest_band_share(to_uint8(finals)).mean()))
        print(f"  {layer.name:34s}" + "".join(f"  {way} {values[-1]:.3f}" for way, values in shares.items())
              + f"  ({time.perf_counter() - began:.0f} s)", flush=True)
    mean = {way: float(np.mean(values)) for way, values in shares.items()}
    print("mean share: " + ", ".join(f"{way} {value:.3f}" for way, value in mean.items()))
    print(f"Fourier / pixels: {mean['fourier'] / mean['pixels']:.2f}; "
          f"Fourier / DeepDream: {mean['fourier'] / mean['deepdream']:.2f}; "
          f"layers where Fourier < pixels: {sum(f < p for f, p in zip(shares['fourier'], shares['pixels']))}"
          f" of {len(args.layers)}, Fourier < DeepDream: "
          f"{sum(f < d for f, d in zip(shares['fourier'], shares['deepdream']))} of {len(args.layers)}")
    photos = photo_shares(args.size)
    print(f"photos at {args.size} px: {min(photos):.3f}-{max(photos):.3f} (mean {np.mean(photos):.3f})")


if __name__ == "__main__":
    main()
