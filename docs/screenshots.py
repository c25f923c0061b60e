"""Remake the screenshots of the docs (docs/img/*.png) from a real run of the trained EfficientNet-Lite0.

    python docs/screenshots.py                 # runs the demo, a little richer, in a temporary folder first
    python docs/screenshots.py output/demo     # or shoots an existing run folder of the demo

The richer demo is the shipped one with 12 channels a layer and the photo explained for its top 3 classes with the
4 strongest channels at each position (about 5 minutes on 2 cores).

It opens the run's gallery in Debian's Chromium through Playwright (`pip install -e ".[test]"`,
`apt-get install chromium`), takes the README's layer page, docs/gallery.md's class page and the sections of the explained photo's page that
docs/explain.md shows, and writes each as a palette PNG. Every caption in the docs names the network and the run.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from PIL import Image

from atlas.shipped import shipped_configs

DOCS_IMG = Path(__file__).resolve().parent / "img"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LAYER = "block12_project"  # the README's layer page
EXPLAINED = "block10_add"  # the explained layer whose sections docs/explain.md shows
CLASS_PAGE = "0285"  # docs/gallery.md's class page: Egyptian cat, one of the demo's classes


def save(png: bytes, name: str, colours: int = 256) -> Path:
    """A screenshot reduced to a palette (a tenth of the bytes, no visible change at this size)."""
    target = DOCS_IMG / f"{name}.png"
    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colours, method=Image.Quantize.MEDIANCUT)
    tmp = target.with_suffix(".tmp.png")
    image.save(tmp, optimize=True)
    tmp.replace(target)
    print(f"{target} ({target.stat().st_size // 1024} KB)")
    return target


def shoot(site: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto((site / "layers" / f"{LAYER}.html").as_uri())
        page.wait_for_load_state("networkidle")
        save(page.screenshot(full_page=False), "gallery")

        page.goto((site / "classes" / f"{CLASS_PAGE}.html").as_uri())
        page.wait_for_load_state("networkidle")
        save(page.screenshot(full_page=True), "class-page")

        page.set_viewport_size({"width": 1280, "height": 900})
        page.goto((site / "photos.html").as_uri())
        page.locator("ul.photo-cards li a").first.click()
        page.wait_for_load_state("networkidle")
        page.add_style_tag(content="header.top { position: static; }")  # not stuck over the sections
        page.click(f"button[data-mode='{EXPLAINED}']")
        section = page.locator(f"section.explain-layer[data-panel='{EXPLAINED}']")
        frame = section.locator(".dictionary-frame")
        box = frame.bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.35)  # the cat's face
        page.wait_for_load_state("networkidle")
        save(section.locator("section.dictionary").screenshot(), "explain-dictionary")
        section.locator("figure.class-map").first.hover()
        for part in ("spatial", "channel-attribution", "groups"):
            save(section.locator(f"section.{part}").screenshot(), f"explain-{part}")
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", help="a run folder of the demo (default: run the demo now)")
    args = parser.parse_args()
    if args.run:
        shoot(Path(args.run) / "site")
        return
    with tempfile.TemporaryDirectory() as tmp:
        config = yaml.safe_load(shipped_configs()["demo"].read_text())
        config.update(channels=12, name="demo")
        config["explain"].update(classes=3, top=4)
        (Path(tmp) / "demo.yaml").write_text(yaml.safe_dump(config))
        subprocess.run([sys.executable, "-m", "atlas", "run", "demo.yaml"], cwd=tmp, check=True)
        shoot(Path(tmp) / "output" / "demo" / "site")


if __name__ == "__main__":
    main()
