"""Activation atlases in the gallery (map pages, the compare view) and the map poster figure, on fake maps."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakerun import add_fake_map, make_fake_run, synthetic_layers
from PIL import Image

from atlas.cli import main
from atlas.publish.figures import FigureJob, FigureSpec, draw_job
from atlas.publish.figures.grids import map_layout
from atlas.publish.site import build_site
from atlas.run.manifest import read_run
from atlas.run.mapfiles import read_map

CHROMIUM = Path("/usr/bin/chromium")
BRANCHES = ["mixed4c_1x1_pre_relu", "mixed4c_3x3_pre_relu"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A fake run of two catalogued layers with channel pages, a map of a block output made of their channels,
    and a map of a catalogued layer."""
    layers = [layer for layer in synthetic_layers(0.125) if layer.name in BRANCHES]
    folder = make_fake_run(tmp_path_factory.mktemp("maps") / "run", layers=layers, fraction=1.0, photos=())
    sources = [(layer.name, c) for layer in layers for c in range(layer.channels)]
    add_fake_map(folder, "mixed4c", sources, grids=(3, 6))
    add_fake_map(folder, BRANCHES[0], sources[:layers[0].channels], grids=(4,), seed=1)
    build_site(folder)
    return folder


def test_map_pages_show_every_cell_at_every_zoom_level_with_links(run):
    site = run / "site"
    html = (site / "maps" / "mixed4c.html").read_text()
    data = read_map(run, "mixed4c")
    assert html.count('class="map-cell"') == len(data.cells)
    for grid in data.grids:
        assert f'data-grid="{grid}"' in html
    rendered = [c for c in data.cells if (run / c.render).is_file()]
    assert html.count('class="cell-render"') == len(rendered) and 0 < len(rendered) < len(data.cells)
    assert "../channels/mixed4c_1x1_pre_relu/" in html or "../channels/mixed4c_3x3_pre_relu/" in html
    compare = (site / "maps.html").read_text()
    assert compare.count('class="map-column"') == 2 and 'href="maps/mixed4c.html"' in compare
    assert 'href="maps.html"' in (site / "index.html").read_text()


def test_a_run_without_maps_has_no_maps_pages(tmp_path):
    folder = make_fake_run(tmp_path / "plain", layers=synthetic_layers(0.125)[:2], photos=())
    build_site(folder)
    assert not (folder / "site" / "maps.html").exists()
    assert "maps.html" not in (folder / "site" / "index.html").read_text()


def test_map_poster_places_cells_on_the_grid_as_png_and_pdf(run, tmp_path):
    data = read_map(run, "mixed4c")
    layout = map_layout(read_run(run), FigureSpec(name="m", kind="map", layer="mixed4c", grid=6))
    cells = data.level(6)
    assert len(layout.panels) == len(cells)
    side = layout.panels[0].box.w
    for panel, cell in zip(layout.panels, cells):
        assert panel.box.w == panel.box.h == side
        assert panel.box.x == pytest.approx(layout.panels[0].box.x - data.level(6)[0].col * side + cell.col * side)
        assert panel.missing == (not (run / cell.render).is_file())
    assert 6 * side <= layout.width
    for suffix in ("png", "pdf"):
        out = tmp_path / f"poster.{suffix}"
        assert main(["figure", str(run), "--map", "mixed4c", "--grid", "3", "-o", str(out)]) == 0
        assert out.stat().st_size > 1000
    assert Image.open(tmp_path / "poster.png").width > 1000


def test_map_figure_errors_are_one_line(run, capsys):
    assert main(["figure", str(run), "--map", "mixed5b"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no map of mixed5b" in err and "atlas map" in err
    assert main(["figure", str(run), "--map", "mixed4c", "--grid", "7"]) == 2
    assert "no 7 x 7 grid" in capsys.readouterr().err


def test_map_figure_default_name(run):
    made, _ = draw_job(read_run(run), FigureJob("map", {"layer": "mixed4c"}, dpi=40))
    assert made[0].path == run / "figures" / "map-mixed4c.png"


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
def test_map_page_and_compare_view_in_chromium(run):
    sync_api = pytest.importorskip("playwright.sync_api")
    from test_site_browser import CHROMIUM_ARGS, Watch, load_all_images, url

    site = run / "site"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            watch = Watch(browser)
            page = watch.page
            page.goto(url(site, "maps/mixed4c.html"))
            assert not load_all_images(page)
            levels = page.locator(".map-level")
            assert levels.nth(0).is_visible() and not levels.nth(1).is_visible()
            cell = page.locator(".map-level").nth(0).locator(".map-cell").first
            count = cell.get_attribute("data-count")
            cell.hover()
            panel = page.locator(".map-level").nth(0).locator(".cell-detail")
            assert f"{int(count):,} samples" in panel.inner_text()
            cell.click()
            assert "selected" in cell.get_attribute("class")
            page.locator(".map-level").nth(0).locator(".map-cell").nth(1).hover()
            assert f"{int(count):,} samples" in panel.inner_text()  # pinned by the click
            assert panel.locator(".cell-photos img").count() == 1
            watch.shot("map-cell")
            page.click("button[data-zoom='6']")
            assert levels.nth(1).is_visible() and not levels.nth(0).is_visible()
            levels.nth(1).locator(".map-cell").first.click()
            link = levels.nth(1).locator(".cell-detail .cell-channels a").first
            target = link.get_attribute("href")
            link.click()
            assert page.url.endswith(target.removeprefix("../")) and "/channels/" in page.url

            page.goto(url(site, "maps.html"))
            columns = page.locator(".map-column")
            assert columns.count() == 2 and columns.nth(0).is_visible() and columns.nth(1).is_visible()
            box0, box1 = columns.nth(0).bounding_box(), columns.nth(1).bounding_box()
            assert box0["y"] == box1["y"] and box1["x"] > box0["x"]  # side by side
            page.select_option("select[name=zoom]", "1")
            assert columns.nth(0).locator(".map-level").nth(1).is_visible()
            assert columns.nth(1).locator(".map-level").nth(0).is_visible()  # a map with one level keeps it
            page.uncheck(f"input[value='{BRANCHES[0]}']")
            assert not columns.nth(1).is_visible()
            watch.shot("maps-compare")
            assert not watch.errors, watch.errors
        finally:
            browser.close()

