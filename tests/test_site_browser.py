"""The gallery in a real browser: Playwright drives Debian's Chromium over a small fake site opened from file://.

Screenshots land in tests/artifacts/site/ (or $ATLAS_ARTIFACTS); their paths are printed.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
from fakerun import add_fake_examples, add_fake_explain, explain_layer, make_fake_run, synthetic_layers

from atlas.atomic import atomic_write_bytes
from atlas.publish.site import build_site

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("ATLAS_ARTIFACTS", Path(__file__).resolve().parent / "artifacts" / "site"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-default-apps", "--disable-extensions"]
FAMOUS = "mixed4d_3x3_bottleneck_pre_relu"  # given 144 channels here, so that :139 exists
WANTED = ["conv2d0_pre_relu", "mixed4a_pool_reduce_pre_relu", "head0_bottleneck_pre_relu", "mixed4d_1x1_pre_relu",
          FAMOUS, "head1_bottleneck_pre_relu", "mixed5b_pool_reduce_pre_relu"]
CRAWLED = ["conv2d0_pre_relu", "head0_bottleneck_pre_relu", FAMOUS, "mixed5b_pool_reduce_pre_relu"]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium package (.ci/run does)", allow_module_level=True)


@pytest.fixture(scope="module")
def catalogue():
    return synthetic_layers(0.125)


@pytest.fixture(scope="module")
def site(tmp_path_factory, catalogue) -> Path:
    """A half-rendered site of seven layers across stem, mixed4a, both heads, mixed4d and mixed5b."""
    layers = [replace(layer, channels=144) if layer.name == FAMOUS else layer
              for layer in catalogue if layer.name in WANTED]
    return built(tmp_path_factory.mktemp("browser") / "walk", layers)


@pytest.fixture(scope="module")
def small_site(tmp_path_factory, catalogue) -> Path:
    """A half-rendered site of four narrow layers (stem, head0, mixed4d, mixed5b), small enough to crawl, with dataset
    examples and a photo explained at a catalogued layer and at a block output."""
    return built(tmp_path_factory.mktemp("browser") / "crawl", [l for l in catalogue if l.name in CRAWLED],
                 examples=True, explain=catalogue)


def built(folder: Path, layers, examples: bool = False, explain=None) -> Path:
    """A fake run of `layers` and its site; with `explain` (the whole catalogue), one photo explained at FAMOUS and
    at mixed4d."""
    make_fake_run(folder, layers=layers, fraction=0.5)
    if examples:
        add_fake_examples(folder, layers)
    if explain:
        add_fake_explain(folder, [explain_layer(explain, FAMOUS, 7), explain_layer(explain, "mixed4d", 7)],
                         photos=("astronaut",))
    build_site(folder)
    return folder / "site"


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Watch:
    """A page that records console errors, page errors and any request that leaves the file system."""

    def __init__(self, browser, height: int = 900) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": height})
        self.page.set_default_timeout(15_000)
        self.errors: list[str] = []
        self.page.on("console", lambda msg: msg.type == "error" and self.errors.append(f"console: {msg.text}"))
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.page.on("requestfailed", lambda req: req.failure == "net::ERR_ABORTED"  # cancelled by a navigation
                     or self.errors.append(f"failed: {req.url} {req.failure}"))
        self.page.on("request", lambda req: req.url.startswith(("file:", "data:")) or
                     self.errors.append(f"network: {req.url}"))

    def shot(self, name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        atomic_write_bytes(path, self.page.screenshot(full_page=False))
        print(f"screenshot: {path}")
        return path


def element_shot(locator, name: str) -> Path:
    """A screenshot of one element (docs/img/explain-*.png are these, reduced to a palette)."""
    path = ARTIFACTS / f"{name}.png"
    locator.page.add_style_tag(content="header.top { position: static; }")  # not stuck over the element
    atomic_write_bytes(path, locator.screenshot())
    print(f"screenshot: {path}")
    return path


def url(site: Path, rel: str) -> str:
    return (site / rel).as_uri()


def load_all_images(page) -> list[str]:
    """Load every image of the page, lazy or hidden ones included; return the sources that failed."""
    return page.evaluate("""async () => {
        const images = Array.from(document.images);
        images.forEach(img => { img.loading = "eager"; });
        await Promise.all(images.map(img => img.complete ? null :
            new Promise(done => { img.addEventListener("load", done); img.addEventListener("error", done); })));
        return images.filter(img => !(img.naturalWidth > 0)).map(img => img.src);
    }""")


def test_every_page_has_working_links_and_images_and_no_errors(small_site, browser):
    watch = Watch(browser)
    pages, broken, _ = crawl(watch, small_site)
    assert len(pages) == len(list(small_site.rglob("*.html"))), "some pages are not reachable by links"
    assert not broken, broken[:10]
    assert not watch.errors, watch.errors[:10]


PARTIAL = {"conv2d0_pre_relu": 4, "mixed3b_3x3_pre_relu": 6}  # 10 renders of a wide model's first 15 layers
SCREEN = 800  # the first screen of a 1280 x 800 window


@pytest.fixture(scope="module")
def partial_site(tmp_path_factory, full_model) -> Path:
    """A few renders of the full-width stand-in's stem, mixed3a and mixed3b (15 layers, 1,000 channels), with
    circuits for every layer: its layer pages hold a large circuit matrix (mixed3b's is 768 x 1,056 px)."""
    from fakerun import add_fake_circuits

    layers = [layer for layer in full_model.layers if layer.block in ("stem", "mixed3a", "mixed3b")]
    folder = make_fake_run(tmp_path_factory.mktemp("browser") / "partial", layers=layers, photos=(), rendered=PARTIAL)
    add_fake_circuits(folder, full_model, [layer.name for layer in layers])
    build_site(folder)
    return folder / "site"


def crawl(watch: Watch, site: Path, images: bool = True) -> tuple[set[str], list[str], set[str]]:
    """Every page reachable from the index: (pages, broken links and images, links to a layer page at a channel);
    `images=False` checks the links only."""
    todo, seen, broken, anchors = [url(site, "index.html")], set(), [], set()
    while todo:
        address = todo.pop()
        if address in seen:
            continue
        seen.add(address)
        watch.page.goto(address)
        broken += [f"{address}: image {src}" for src in (load_all_images(watch.page) if images else [])]
        for href in watch.page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)"):
            parts = urlsplit(href)
            target = Path(unquote(parts.path))
            if parts.scheme != "file" or not target.exists():
                broken.append(f"{address}: link {href}")
            elif target.suffix == ".html" and site in target.parents:
                todo.append(href.split("#")[0])
                if parts.fragment.startswith("c="):
                    anchors.add(href)
    return {urlsplit(address).path for address in seen}, broken, anchors


def target_tile(page, channel: int):
    """The tile a layer page marked for `#c=channel`: it must be the channel's, visible and on screen."""
    tile = page.locator("a.cell.is-target")
    assert tile.count() == 1 and tile.get_attribute("data-ch") == str(channel) and tile.is_visible()
    box, height = tile.bounding_box(), page.viewport_size["height"]
    assert 0 <= box["y"] and box["y"] + box["height"] <= height, box
    return tile


def test_a_partial_sites_layer_page_shows_its_renders_on_the_first_screen(partial_site, browser):
    watch = Watch(browser, height=SCREEN)
    page = watch.page
    page.goto(url(partial_site, "layers/mixed3b_3x3_pre_relu.html"))
    tiles = page.locator("div.grid[data-panel=noise] a.cell")
    assert tiles.count() == 6 and not load_all_images(page)
    first = tiles.first.bounding_box()
    assert first["y"] + first["height"] < SCREEN  # the whole first tile, under the facts
    matrix = page.locator("details.circuit-matrix")
    assert matrix.get_attribute("open") is None and not page.locator("img.matrix").is_visible()
    assert matrix.bounding_box()["y"] > tiles.last.bounding_box()["y"]  # after the renders
    watch.shot("layer-partial")
    page.click("details.circuit-matrix summary")
    assert page.locator("img.matrix").evaluate("img => img.height") > SCREEN  # what filled the first screen before
    page.goto(url(partial_site, "layers/mixed3b_3x3_bottleneck_pre_relu.html"))  # no renders: the matrix is open
    assert page.locator("details.circuit-matrix").get_attribute("open") is not None
    assert page.locator("img.matrix").is_visible() and page.locator("section.channels a.cell").count() == 0
    assert not watch.errors, watch.errors


def test_the_not_rendered_line_draws_its_tiles_only_when_asked(partial_site, browser):
    watch = Watch(browser, height=SCREEN)
    page = watch.page
    page.goto(url(partial_site, "layers/mixed3b_3x3_pre_relu.html"))
    line = page.locator("div.not-shown[data-panel=noise]")
    assert line.locator("p").inner_text().startswith("186 channels not rendered yet")
    missing = page.locator("a.cell.is-missing")
    assert missing.count() == 0  # not in the page's HTML
    button = line.locator("button.show-tiles")
    button.click()
    assert missing.count() == 186 and missing.first.is_visible() and button.inner_text() == "hide"
    assert missing.evaluate_all("t => t.map(x => +x.dataset.ch)") == list(range(6, 192))
    assert page.locator("a.cell.is-missing[href]").count() == 0  # no page of their own to lead to
    assert not load_all_images(page)
    page.fill("#filter", "4-7, 100")
    assert page.locator("section.channels a.cell:visible").count() == 5  # 4, 5 rendered; 6, 7, 100 not
    assert page.locator("#filter-count").inner_text() == "5 shown"
    page.fill("#filter", "")
    watch.shot("layer-not-rendered")
    button.click()
    assert not missing.first.is_visible() and button.inner_text() == "show them"
    assert missing.count() == 186  # drawn once
    assert not watch.errors, watch.errors


def test_links_to_units_without_pages_land_on_their_layer_page_at_that_channel(partial_site, browser):
    """From a circuit, the search, compare and the keys: the layer page opens with that channel's tile marked on
    screen (its not-rendered tiles drawn), and no link leads to a missing page."""
    watch = Watch(browser, height=SCREEN)
    page = watch.page
    page.goto(url(partial_site, "channels/mixed3b_3x3_pre_relu/0002.html"))
    edge = page.locator("section.circuit a.edge-unit[href*='#c=']").first
    href = edge.get_attribute("href")
    layer, channel = re.search(r"layers/([^/]+)\.html#c=(\d+)$", href).groups()
    with page.expect_navigation():
        edge.click()
    assert urlsplit(page.url).path.endswith(f"layers/{layer}.html") and page.locator("h1").inner_text() == layer
    target_tile(page, int(channel))
    watch.shot("layer-at-channel")

    page.fill("#search", "3b_5x5_pre 7")
    assert page.locator("#search-results a").first.inner_text() == "mixed3b_5x5_pre_relu:7"
    with page.expect_navigation():
        page.press("#search", "Enter")
    assert page.url.endswith("layers/mixed3b_5x5_pre_relu.html#c=7")
    target_tile(page, 7)
    page.fill("#search", "conv2d0 3")  # a rendered channel: its own page
    with page.expect_navigation():
        page.press("#search", "Enter")
    assert page.url.endswith("channels/conv2d0_pre_relu/0003.html")
    with page.expect_navigation():
        page.keyboard.press("ArrowDown")  # the same channel one layer up has no page: that layer's page at it
    assert page.url.endswith("layers/conv2d1_pre_relu.html#c=3")
    target_tile(page, 3)
    with page.expect_navigation():
        page.keyboard.press("ArrowUp")
    assert page.url.endswith("layers/conv2d0_pre_relu.html")

    page.goto(url(partial_site, "compare.html") + "?i=3b_5x5_pre+7&i=conv2d0+1")
    links = page.locator("#compare figcaption a").evaluate_all("a => a.map(x => x.getAttribute('href'))")
    assert links[0].endswith("layers/mixed3b_5x5_pre_relu.html#c=7") and links[1].endswith("conv2d0_pre_relu/0001.html")
    assert not load_all_images(page)
    assert not watch.errors, watch.errors


def test_every_link_of_a_partial_site_resolves_and_every_channel_anchor_finds_its_tile(partial_site, browser):
    watch = Watch(browser, height=SCREEN)
    pages, broken, anchors = crawl(watch, partial_site, images=False)  # (the small site's crawl loads them)
    assert len(pages) == len(list(partial_site.rglob("*.html"))), "some pages are not reachable by links"
    assert len(list((partial_site / "channels").rglob("*.html"))) == sum(PARTIAL.values())
    assert not broken, broken[:10]
    highest = {}  # per layer, the link to its highest channel (its tile drawn last, scrolled to furthest)
    for href in anchors:
        layer, channel = urlsplit(href).path, int(urlsplit(href).fragment[2:])
        highest[layer] = max(highest.get(layer, (-1, "")), (channel, href))
    assert len(anchors) > 10 and len(highest) > 5
    for channel, href in highest.values():
        watch.page.goto(href)
        target_tile(watch.page, channel)
    assert not watch.errors, watch.errors[:10]


def test_a_full_runs_site_is_unchanged_every_channel_has_its_page(tmp_path, catalogue, browser):
    layers = [layer for layer in catalogue if layer.name in CRAWLED[:2]]
    build_site(make_fake_run(tmp_path / "full", layers=layers, photos=()))
    site = tmp_path / "full" / "site"
    assert {p.relative_to(site).as_posix() for p in (site / "channels").rglob("*.html")} == {
        f"channels/{layer.name}/{c:04d}.html" for layer in layers for c in range(layer.channels)}
    watch = Watch(browser, height=SCREEN)
    page = watch.page
    page.goto(url(site, "index.html"))
    assert page.locator("li.layer-row").count() == 2 and page.locator("p.unrendered").count() == 0
    page.click(f"text={layers[0].name}")
    assert page.locator("section.channels a.cell:visible").count() == layers[0].channels
    assert page.locator("button.show-tiles").count() == 0
    with page.expect_navigation():
        page.locator(f"a.cell[data-ch='{layers[0].channels - 1}']").click()
    with page.expect_navigation():
        page.keyboard.press("ArrowRight")  # the last channel's next is the next layer's first
    assert page.url.endswith(f"channels/{layers[1].name}/0000.html")
    with page.expect_navigation():
        page.keyboard.press("ArrowLeft")
    assert page.url.endswith(f"channels/{layers[0].name}/{layers[0].channels - 1:04d}.html")
    assert not any("#c=" in page.read_text() for page in site.rglob("*.html"))  # every unit has a page of its own
    assert not watch.errors, watch.errors


def test_walk_index_layer_channel_compare_with_search_and_keys(site, browser):
    watch = Watch(browser)
    page = watch.page
    page.goto(url(site, "index.html"))
    assert page.locator("section.block").evaluate_all("s => s.map(x => x.id)") == [
        "stem", "mixed4a", "head0", "mixed4d", "head1", "mixed5b"]
    watch.shot("index")

    page.click(f"text={FAMOUS}")
    assert page.url.endswith(f"layers/{FAMOUS}.html")
    visible = "section.channels a.cell:visible"
    assert page.locator(visible).count() == 72  # the rendered half; the others on demand
    page.click("div.not-shown:visible button.show-tiles")
    assert page.locator(visible).count() == 144
    page.click("button[data-mode=photo-chelsea]")
    assert page.url.endswith("#m=photo-chelsea")
    assert page.locator("div.grid[data-panel=photo-chelsea]").is_visible()
    assert not page.locator("div.grid[data-panel=noise]").is_visible()
    page.fill("#filter", "3")
    assert page.locator(visible).count() == 1
    page.fill("#filter", "10-12, 140")
    assert page.locator(visible).count() == 3 and page.locator("#filter-count").inner_text() == "3 shown"
    page.click("div.not-shown:visible button.show-tiles")  # the filter holds for tiles drawn after it
    assert page.locator(visible).count() == 4 and page.locator("#filter-count").inner_text() == "4 shown"
    page.fill("#filter", "")
    watch.shot("layer")

    page.click(f"{visible}[data-ch='3']")
    assert page.url.endswith(f"channels/{FAMOUS}/0003.html")
    assert page.locator("figure.large img").count() == 2
    watch.shot("channel")
    for key, expected in [("ArrowRight", f"{FAMOUS}/0004.html"), ("ArrowLeft", f"{FAMOUS}/0003.html"),
                          ("ArrowDown", "head1_bottleneck_pre_relu/0003.html"),
                          ("ArrowUp", f"{FAMOUS}/0003.html"), ("ArrowUp", "mixed4d_1x1_pre_relu/0003.html")]:
        with page.expect_navigation():
            page.keyboard.press(key)
        assert page.url.endswith(expected), (key, page.url)

    for query, expected in [("head1", "layers/head1_bottleneck_pre_relu.html"),
                            ("4d 139", f"layers/{FAMOUS}.html#c=139"),  # not rendered: its layer page at it
                            (f"{FAMOUS}:3", f"channels/{FAMOUS}/0003.html")]:
        page.fill("#search", query)
        if query == "4d 139":
            assert page.locator("#search-results a").first.inner_text() == f"{FAMOUS}:139"
            watch.shot("search")
        with page.expect_navigation():
            page.press("#search", "Enter")
        assert page.url.endswith(expected), (query, page.url)
    page.fill("#search", "4d 999")
    assert "out of range" in page.locator("#search-results").inner_text()

    page.goto(url(site, "compare.html"))
    for n, item in enumerate(["conv2d0 1", "4d 139", "head0"]):
        page.locator("input[name=i]").nth(n).fill(item)
    page.select_option("select[name=mode]", "photo-chelsea")
    with page.expect_navigation():
        page.click("#compare-form button[type=submit]")
    figures = page.locator("#compare > figure")
    assert figures.count() == 3
    assert re.search(r"conv2d0_pre_relu:1.*mixed4d_3x3_bottleneck_pre_relu:139.*head0_bottleneck_pre_relu",
                     page.locator("#compare").inner_text().replace("\n", " "))
    assert not load_all_images(page)
    watch.shot("compare")

    page.goto(url(site, "progression.html"))
    assert page.locator("div.progression:not([hidden]) figure").count() == len(WANTED) + 1  # and the photo
    watch.shot("progression")
    for name in ["about", "figures"]:
        page.goto(url(site, f"{name}.html"))
        watch.shot(name)
    assert not watch.errors, watch.errors


def test_layer_page_switches_methods_and_channel_page_shows_facets(tmp_path, catalogue, browser):
    """A run with the DeepDream and Fourier methods as two modes, the Fourier one with 4 facets per channel."""
    layers = [layer for layer in catalogue if layer.name in CRAWLED[:2]]
    build_site(make_fake_run(tmp_path / "methods", layers=layers, photos=(), fraction=0.5, fourier_facets=4))
    site = tmp_path / "methods" / "site"
    watch = Watch(browser)
    page = watch.page
    page.goto(url(site, "layers/conv2d0_pre_relu.html"))
    tabs = page.locator("button[role=tab]")
    assert tabs.evaluate_all("b => b.map(x => x.textContent.trim())") == ["noise · DeepDream", "noise · Fourier"]
    page.click("button[data-mode=fourier]")
    assert page.locator("div.grid[data-panel=fourier]").is_visible()
    assert not page.locator("div.grid[data-panel=noise]").is_visible()
    page.click("div.grid[data-panel=fourier] a.cell[data-ch='1']")
    assert page.url.endswith("channels/conv2d0_pre_relu/0001.html")
    strip = page.locator("figure.large .facets a")
    assert strip.count() == 4 and page.locator("figure.large .facets img").first.is_visible()
    assert "noise · Fourier" in page.locator("figure.large").nth(1).inner_text()
    assert not load_all_images(page)
    watch.shot("facets")


def test_neuron_render_outlines_the_centre_units_receptive_field(tmp_path, catalogue, browser):
    """The outline drawn over a neuron render is the recorded box, scaled with the image; the caption's
    checkbox hides it."""
    layers = [layer for layer in catalogue if layer.name in CRAWLED[:2]]
    box = (22, 18, 41, 50)  # on 64 px renders
    build_site(make_fake_run(tmp_path / "neuron", layers=layers, photos=(), neuron={CRAWLED[0]: box}))
    watch = Watch(browser)
    page = watch.page
    page.goto(url(tmp_path / "neuron" / "site", f"channels/{CRAWLED[0]}/0001.html"))
    assert not load_all_images(page)
    img = page.locator("figure.large img").bounding_box()
    assert img["width"] > 200  # shown larger than the 64 px image: the box must scale with it
    drawn = page.locator("figure.large .unit-outline").bounding_box()
    scale = img["width"] / 64
    assert drawn["x"] - img["x"] == pytest.approx(box[0] * scale, abs=1.5)
    assert drawn["y"] - img["y"] == pytest.approx(box[1] * scale, abs=1.5)
    assert drawn["width"] == pytest.approx((box[2] - box[0]) * scale, abs=1.5)
    assert drawn["height"] == pytest.approx((box[3] - box[1]) * scale, abs=1.5)
    watch.shot("channel-neuron-outline")
    page.locator(".outline-toggle input").uncheck()
    assert not page.locator(".unit-outline").is_visible()
    assert not watch.errors, watch.errors


def test_a_class_page_overlays_the_importance_mask_on_demand(tmp_path, catalogue, browser):
    """The Classes section: the overview's cards lead to a class page with its label; the mask is hidden until the
    caption's checkbox shows it over the render, the same size, darkening what the render does not depend on."""
    from fakerun import add_fake_classes

    layers = [layer for layer in catalogue if layer.name in CRAWLED[:1]]
    folder = add_fake_classes(make_fake_run(tmp_path / "classes", layers=layers, photos=()))
    build_site(folder)
    watch = Watch(browser)
    page = watch.page
    page.goto(url(folder / "site", "index.html"))
    page.locator("header nav a", has_text="Classes").click()
    assert [t.strip() for t in page.locator(".class-label").all_inner_texts()] == ["goldfish", "Egyptian cat"]
    page.locator(".class-cards a", has_text="Egyptian cat").click()
    assert page.url.endswith("classes/0285.html") and "Egyptian cat" in page.locator("h1").inner_text()
    assert not load_all_images(page)
    overlay = page.locator("figure.large img.mask-overlay")
    assert not overlay.is_visible()
    page.locator(".mask-toggle input").check()
    assert overlay.is_visible()
    image = page.locator("figure.large .unit-frame a img").bounding_box()
    drawn = overlay.bounding_box()
    assert (drawn["x"], drawn["y"]) == pytest.approx((image["x"], image["y"]), abs=1)
    assert (drawn["width"], drawn["height"]) == pytest.approx((image["width"], image["height"]), abs=1)
    watch.shot("class-mask-overlay")
    page.locator(".mask-toggle input").blur()  # arrow keys in a focused checkbox are the checkbox's
    page.keyboard.press("ArrowLeft")  # the previous class
    page.wait_for_url("**/classes/0001.html")
    assert not watch.errors, watch.errors


def test_examples_patches_open_the_whole_photo_with_the_box_drawn(small_site, browser):
    watch = Watch(browser)
    page = watch.page
    page.goto(url(small_site, f"layers/{FAMOUS}.html"))
    page.click("button[data-mode=examples]")
    panel = page.locator("div.grid[data-panel=examples]")
    assert panel.is_visible() and not page.locator("div.grid[data-panel=noise]").is_visible()
    assert panel.locator("a.cell").count() == 9  # the half with examples (add_fake_examples); the others on demand
    page.click("div.not-shown[data-panel=examples] button.show-tiles")
    missing = page.locator("div.not-shown[data-panel=examples] a.cell.is-missing")
    assert missing.count() == 9 and missing.first.inner_text().startswith("no examples")
    assert not load_all_images(page)
    watch.shot("layer-examples")

    page.goto(url(small_site, f"channels/{FAMOUS}/0001.html"))
    patches = page.locator("section.examples a.example")
    assert patches.count() == 3
    assert not load_all_images(page)
    view = page.locator(".photo-view")
    assert view.count() == 1 and not view.is_visible()
    box = [int(v) for v in patches.nth(1).get_attribute("data-box").split(",")]
    width, height = (int(v) for v in patches.nth(1).get_attribute("data-photo-size").split(","))
    patches.nth(1).click()
    assert view.is_visible() and page.url.endswith("0001.html")  # the page draws it; no navigation
    page.wait_for_function("document.querySelector('.photo-view img').complete")
    img = page.locator(".photo-view img").bounding_box()
    drawn = page.locator(".photo-view .box").bounding_box()
    assert drawn["x"] - img["x"] == pytest.approx(img["width"] * box[0] / width, abs=1.5)
    assert drawn["y"] - img["y"] == pytest.approx(img["height"] * box[1] / height, abs=1.5)
    assert drawn["width"] == pytest.approx(img["width"] * (box[2] - box[0]) / width, abs=1.5)
    assert drawn["height"] == pytest.approx(img["height"] * (box[3] - box[1]) / height, abs=1.5)
    watch.shot("channel-example-photo")
    page.keyboard.press("Escape")
    assert not view.is_visible()
    page.goto(url(small_site, f"channels/{FAMOUS}/0012.html"))
    assert page.locator("section.examples").count() == 0  # a channel without examples looks as before
    assert not watch.errors, watch.errors


CIRCUIT_LAYERS = ["conv2d0_pre_relu", "conv2d1_pre_relu", "conv2d2_pre_relu", "mixed3a_1x1_pre_relu",
                  "mixed3a_3x3_bottleneck_pre_relu", "mixed3a_3x3_pre_relu"]


def _decode(fill: str, scale: float) -> float:
    """The value a kernel cell's colour stands for (red positive, blue negative, white zero)."""
    r, g, b = (int(v) for v in re.findall(r"\d+", fill)[:3])
    return (1 - g / 255) * scale if r == 255 and g == b else -(1 - r / 255) * scale


def test_circuit_links_lead_to_the_input_unit_and_kernels_and_matrix_match_the_data(tmp_path, small_model, browser):
    from fakerun import add_fake_circuits

    from atlas.run.circuits import read_circuits

    folder = tmp_path / "circuits"
    make_fake_run(folder, layers=[l for l in small_model.layers if l.name in CIRCUIT_LAYERS], fraction=0.5)
    add_fake_circuits(folder, small_model, CIRCUIT_LAYERS)
    build_site(folder)
    circuits = read_circuits(folder, "0" * 64)
    layer, channel = "mixed3a_3x3_pre_relu", 1
    inputs = circuits.inputs(layer, channel)
    watch = Watch(browser)
    page = watch.page
    page.goto(url(folder / "site", f"channels/{layer}/0001.html"))
    items = page.locator("section.circuit .circuit-list").first.locator("li.edge")
    assert items.count() == len(inputs) > 0
    scale = max(float(abs(e.kernel).max()) for e in inputs)
    for i in (0, len(inputs) - 1):  # the strongest excitatory and the last inhibitory kernel, cell by cell
        img = items.nth(i).locator("img.kernel")
        assert float(img.get_attribute("data-scale")) == pytest.approx(scale, rel=1e-6)
        kernel = inputs[i].kernel
        drawn = img.evaluate("""img => { const c = document.createElement("canvas");
            c.width = img.naturalWidth; c.height = img.naturalHeight;
            const g = c.getContext("2d"); g.drawImage(img, 0, 0);
            return [c.width, c.height, Array.from(g.getImageData(0, 0, c.width, c.height).data)]; }""")
        assert drawn[:2] == [kernel.shape[1], kernel.shape[0]]
        pixels = np.array(drawn[2]).reshape(kernel.shape[0], kernel.shape[1], 4)
        for (y, x), value in np.ndenumerate(kernel):
            fill = "rgb({}, {}, {})".format(*pixels[y, x, :3])
            assert _decode(fill, scale) == pytest.approx(float(value), abs=scale / 255 + 1e-7)
        assert img.evaluate("i => i.clientWidth") == kernel.shape[1] * 6  # enlarged: a weight is a 6-pixel square
    page.locator("section.circuit h3").first.scroll_into_view_if_needed()
    watch.shot("circuit")
    rendered = [i for i, e in enumerate(inputs)
                if (folder / "site" / f"channels/{e.layer}/{e.channel:04d}.html").exists()]
    first = inputs[rendered[0]]  # a unit with a page of its own (the others lead to their layer page at them)
    items.nth(rendered[0]).locator("a.edge-unit").click()
    assert page.url.endswith(f"channels/{first.layer}/{first.channel:04d}.html")
    assert page.locator("h1.channel-title").inner_text().replace("\n", "") == f"{first.layer}:{first.channel}"

    page.goto(url(folder / "site", f"layers/{layer}.html"))
    assert not page.locator("img.matrix").is_visible()  # folded under its heading: the layer has renders
    page.click("details.circuit-matrix summary")
    matrix = page.locator("img.matrix")
    assert matrix.evaluate("img => img.naturalWidth") == 24  # the source's units: conv2d2's channels
    matrix.scroll_into_view_if_needed()
    box = matrix.bounding_box()
    rows = matrix.evaluate("img => JSON.parse(img.dataset.rows)")
    total = sum(count for _, count in rows)
    row = sum(count for name, count in rows[:rows.index([layer, small_model.layer(layer).channels])]) + 2
    page.mouse.move(box["x"] + box["width"] * (5.5 / 24), box["y"] + box["height"] * ((row + 0.5) / total))
    assert page.locator(".matrix-pair").inner_text() == f"{layer}:2 ← conv2d2_pre_relu:5"
    assert not watch.errors, watch.errors


def test_site_of_two_models_index_compare_by_depth_and_a_layer_page(tmp_path, catalogue, browser):
    """`atlas build RUN RUN -o SITE`: the index of models, the chooser of two models, a compare row's layer link
    into one model's own gallery and back; every image loads, nothing is logged as an error."""
    from fakerun import keras_like_layers

    from atlas.publish.multisite import build_multisite

    googlenet = [l for l in catalogue if l.name in WANTED]
    runs = [make_fake_run(tmp_path / "googlenet", layers=googlenet, fraction=0.5),
            make_fake_run(tmp_path / "resnet50", layers=keras_like_layers(channels=6), fraction=0.5, photos=(),
                          spec="keras:ResNet50")]
    site = tmp_path / "site"
    build_multisite(runs, site)
    watch = Watch(browser)
    page = watch.page
    page.goto(url(site, "index.html"))
    cards = page.locator("li.model-card")
    assert cards.count() == 2 and "keras:ResNet50" in cards.nth(1).inner_text()
    assert not load_all_images(page)
    watch.shot("models-index")

    with page.expect_navigation():
        page.click("nav >> text=Compare by depth")
    assert page.locator("#pair-form").is_visible()  # the script shows the chooser
    rows = page.locator("table.depths tbody tr")
    assert rows.count() == 11
    page.select_option("select[name=a]", "resnet50")
    page.select_option("select[name=b]", "resnet50")
    page.click("#pair-form button[type=submit]")
    assert page.locator("#pair-message").is_visible() and page.url.endswith("/compare.html")
    page.select_option("select[name=b]", "googlenet")
    with page.expect_navigation():
        page.click("#pair-form button[type=submit]")
    assert page.url.endswith("compare/resnet50--googlenet.html")
    heads = page.locator("table.depths thead th").evaluate_all("t => t.map(x => x.textContent.trim())")
    assert heads[1].startswith("resnet50") and heads[2].startswith("googlenet")
    assert not load_all_images(page)
    watch.shot("models-compare")
    middle = rows.nth(5)
    assert middle.locator("th").inner_text() == "50%"
    middle.scroll_into_view_if_needed()
    watch.shot("models-compare-middle")

    layer = middle.locator("td").nth(1).locator(".depth-layer a").inner_text()
    with page.expect_navigation():
        middle.locator("td").nth(1).locator(".depth-layer a").click()
    assert page.url.endswith(f"googlenet/layers/{layer}.html")
    assert page.locator("h1").inner_text() == layer
    assert not load_all_images(page)
    watch.shot("models-layer")
    with page.expect_navigation():
        page.click("nav >> text=All models")
    assert urlsplit(page.url).path == (site / "index.html").as_posix()
    assert not watch.errors, watch.errors


def test_photo_page_tabs_dictionary_hover_and_links_to_channel_pages(tmp_path, catalogue, browser):
    """A photo explained at a catalogued layer and at a block output (mixed4d, two of whose branches the run does
    not catalogue): the layer tabs switch panels; hovering a dictionary position shows that position's channels,
    strongest first and largest, with placeholders where no render exists; the channel attribution's renders lead to
    their channel pages, whose photo list leads back to the right tab; hovering a class lights it in every list."""
    from atlas.publish.explain_view import ICON_MAX, photo_url
    from atlas.run.explainfiles import read_explanation, read_index

    kept = (CRAWLED[0], FAMOUS, "mixed4d_1x1_pre_relu", "mixed4d_3x3_pre_relu")
    folder = make_fake_run(tmp_path / "explained", layers=[l for l in catalogue if l.name in kept], fraction=0.5)
    add_fake_explain(folder, [explain_layer(catalogue, FAMOUS, 14), explain_layer(catalogue, "mixed4d", 14)],
                     photos=("chelsea", "coffee"), between=("mixed4c", 14))
    build_site(folder)
    site, index = folder / "site", read_index(folder)
    photo = index.photos[0]
    watch = Watch(browser)
    page = watch.page
    page.goto(url(site, "photos.html"))
    assert page.locator("ul.photo-cards li").count() == 2
    assert not load_all_images(page)
    watch.shot("photos")
    with page.expect_navigation():
        page.locator("ul.photo-cards li a").first.click()
    assert page.url.endswith(photo_url(photo.sha256))
    tabs = page.locator(".tabs [role=tab]")
    assert tabs.evaluate_all("t => t.map(x => x.textContent.trim())") == [FAMOUS, "mixed4d"]
    first, second = (page.locator(f"section.explain-layer[data-panel='{name}']") for name in (FAMOUS, "mixed4d"))
    assert first.is_visible() and not second.is_visible()
    page.click("button[data-mode=mixed4d]")
    assert second.is_visible() and not first.is_visible() and page.url.endswith("#m=mixed4d")
    assert not load_all_images(page)

    layer, data = index.layers["mixed4d"], read_explanation(folder, photo.sha256, "mixed4d")
    frame = second.locator(".dictionary-frame")
    box = frame.bounding_box()
    for row, col in [(2, 11), np.unravel_index(data.dictionary_values[..., 0].argmax(), (14, 14))]:
        page.mouse.move(box["x"] + box["width"] * (col + 0.5) / 14, box["y"] + box["height"] * (row + 0.5) / 14)
        assert frame.get_attribute("data-position") == f"{row},{col}"
        icons = second.locator(".dictionary-detail figure.unit-icon")
        assert icons.evaluate_all("f => f.map(x => x.dataset.unit)") == [
            "%s:%d" % layer.sources[c] for c in data.dictionary_channels[row, col]]
        widths = icons.locator("img").evaluate_all("i => i.map(x => x.width)")
        assert widths == sorted(widths, reverse=True)
        mark = second.locator(".position-mark").bounding_box()
        assert mark["x"] - box["x"] == pytest.approx(box["width"] * col / 14, abs=1.5)
        assert mark["y"] - box["y"] == pytest.approx(box["height"] * row / 14, abs=1.5)
    assert widths[0] == ICON_MAX  # the layer's strongest activation
    canvas = second.locator("figure.between canvas")  # the attribution from mixed4c to the hovered position
    drawn = np.array(canvas.evaluate("c => Array.from(c.getContext('2d').getImageData(0, 0, 14, 14).data)"))
    drawn = drawn.reshape(14, 14, 4)[..., :3]
    feeds = data.between["mixed4c"][row, col]
    strong = np.abs(feeds) > 0.05 * np.abs(feeds).max()
    assert (drawn[(feeds > 0) & strong][:, 0] == 255).all() and (drawn[(feeds < 0) & strong][:, 2] == 255).all()
    assert tuple(drawn[np.unravel_index(np.abs(feeds).argmax(), (14, 14))]) in [(255, 0, 0), (0, 0, 255)]
    assert not load_all_images(page)
    watch.shot("photo-dictionary")
    element_shot(second.locator("section.dictionary"), "explain-dictionary")
    frame.click(position={"x": box["width"] * 11.5 / 14, "y": box["height"] * 2.5 / 14})  # keep a position
    page.mouse.move(box["x"] + box["width"] * 0.5 / 14, box["y"] + box["height"] * 0.5 / 14)
    assert frame.get_attribute("data-position") == "2,11"
    frame.press("ArrowDown")  # the keyboard moves the kept position
    assert frame.get_attribute("data-position") == "3,11"
    frame.press("ArrowUp")
    assert frame.get_attribute("data-position") == "2,11"
    linked = second.locator(".dictionary-detail figure.unit-icon:has(a)")
    unlinked = second.locator(".dictionary-detail figure.unit-icon:not(:has(a))")
    sources = ["%s:%d" % layer.sources[c] for c in data.dictionary_channels[2, 11]]
    assert linked.count() == sum(s.split(":")[0] in kept for s in sources)
    assert unlinked.count() == len(sources) - linked.count()
    if linked.count():
        unit = linked.first.get_attribute("data-unit")
        with page.expect_navigation():
            linked.first.locator("a").click()
        assert page.locator("h1.channel-title").inner_text().replace("\n", "") == unit
        page.go_back()

    page.click(f"button[data-mode='{FAMOUS}']")
    assert first.is_visible() and not second.is_visible()
    spatial = first.locator("figure.class-map")
    assert spatial.count() == 5
    spatial.first.hover()
    lit = first.locator(".lit")
    assert lit.count() == 2 + 3  # its heatmap, its channel row, its bar in each of the 3 groups
    for part in ("spatial", "channel-attribution", "groups"):  # screenshots for docs/explain.md
        element_shot(first.locator(f"section.{part}"), f"explain-{part}")
    channels = read_explanation(folder, photo.sha256, FAMOUS).channels[0]
    best = int(np.argmax(channels))
    with page.expect_navigation():
        first.locator(".channel-attribution tbody tr").first.locator("td.up a").first.click()
    assert page.url.endswith(f"channels/{FAMOUS}/{best:04d}.html")
    back = page.locator(f"section.contributions a[href*='{photo_url(photo.sha256)}#m={FAMOUS}']")
    assert back.count() >= 1
    assert not load_all_images(page)
    with page.expect_navigation():
        back.first.click()
    assert first.is_visible() and not second.is_visible()
    assert not watch.errors, watch.errors
