"""The static gallery builder, on fake run folders (no TensorFlow rendering involved)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import urllib.request
from dataclasses import replace
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import unquote, urlsplit

import pytest
from fakerun import make_fake_run, synthetic_layers
from PIL import Image

from atlas.errors import UserError
from atlas.model.selection import format_channels
from atlas.publish.site import INDEX_JS, build_site, display_order, make_server
from atlas.run.manifest import MANIFEST_FILE, Manifest, read_run, write_run_info

BLOCKS = ["stem", "mixed3a", "mixed3b", "mixed4a", "head0", "mixed4b", "mixed4c", "mixed4d", "head1", "mixed4e",
          "mixed5a", "mixed5b"]
ATTR = re.compile(r'(?:href|src)="([^"]*)"')


@pytest.fixture(scope="module")
def layers():
    return synthetic_layers(0.125)


@pytest.fixture(scope="module")
def site(tmp_path_factory, layers):
    """A built site of a half-rendered run of all 59 layers (0.125 width), shared by the read-only tests."""
    run = make_fake_run(tmp_path_factory.mktemp("runs") / "half", layers=layers, fraction=0.5)
    report = build_site(run)
    return run, report


def small_run(folder: Path, layers, blocks=("stem", "head0"), **kwargs) -> Path:
    return make_fake_run(folder, layers=[layer for layer in layers if layer.block in blocks], **kwargs)


def test_every_page_type_is_written(site, layers):
    run, report = site
    out = run / "site"
    for page in ["index.html", "about.html", "compare.html", "progression.html", "figures.html", INDEX_JS,
                 "static/style.css", "static/atlas.js", "static/missing.svg"]:
        assert (out / page).is_file(), page
    assert len(list((out / "layers").glob("*.html"))) == 59
    rendered = {layer.name: max(1, round(layer.channels * 0.5)) for layer in layers}
    assert len(list((out / "channels").rglob("*.html"))) == sum(rendered.values())  # rendered channels only
    assert (out / "channels" / "mixed4d_3x3_bottleneck_pre_relu" / "0008.html").is_file()
    assert not (out / "channels" / "mixed4d_3x3_bottleneck_pre_relu" / "0009.html").exists()
    assert report.pages_written > 500 and report.pages_unchanged == 0 and report.seconds > 0


def test_index_shows_blocks_low_to_high_with_heads_where_they_branch(site):
    run, _ = site
    html = (run / "site" / "index.html").read_text()
    assert re.findall(r'<section class="block[^"]*" id="([^"]+)"', html) == BLOCKS
    assert "branches off after mixed4a" in html and "branches off after mixed4d" in html
    rows = re.findall(r'<a href="layers/([^"]+)\.html">', html)
    assert rows[0] == "conv2d0_pre_relu" and rows[-1] == "mixed5b_pool_reduce_pre_relu" and len(rows) == 59


def test_display_order_places_heads_after_their_branch_point(layers):
    order = display_order(layers)
    assert [block for block, _, _ in order] == BLOCKS
    assert dict((block, after) for block, _, after in order)["head1"] == "mixed4d"


def test_every_link_is_relative_and_resolves(site):
    run, _ = site
    pages = sorted((run / "site").rglob("*.html"))
    for page in pages:
        for target in ATTR.findall(page.read_text()):
            parts = urlsplit(target)
            assert not parts.scheme and not parts.netloc and not target.startswith("/"), (page, target)
            if parts.path:
                assert (page.parent / unquote(parts.path)).resolve().exists(), (page, target)


def test_nothing_is_fetched_from_the_network(site):
    run, _ = site
    for path in (run / "site" / "static").iterdir():
        text = path.read_text().replace('xmlns="http://www.w3.org/2000/svg"', "")  # a name, never fetched
        assert not re.search(r"https?://|@import|url\(", text), path


def test_partial_run_counts_and_placeholders(site, layers):
    run, report = site
    rendered = {layer.name: max(1, round(layer.channels * 0.5)) for layer in layers}
    assert report.missing_renders == 2 * sum(layer.channels - rendered[layer.name] for layer in layers)
    layer = next(layer for layer in layers if layer.name == "mixed4d_3x3_bottleneck_pre_relu")
    html = (run / "site" / "layers" / f"{layer.name}.html").read_text()
    missing = layer.channels - rendered[layer.name]
    assert f"{rendered[layer.name]} of {layer.channels} channels rendered" in html
    # the rendered tiles are in the page; the others are one line per mode, their tiles drawn on demand
    assert len(re.findall(r'<a class="cell" data-ch=', html)) == 2 * rendered[layer.name]  # one grid per mode
    assert html.count(f"{missing} channels not rendered yet") == 2
    assert html.count(f'data-channels="{rendered[layer.name]}-{layer.channels - 1}"') == 2
    assert html.count('class="missing"') == 2  # the one tile each line's button copies
    assert not (run / "site" / "channels" / layer.name / f"{layer.channels - 1:04d}.html").exists()


def test_a_channel_rendered_in_one_mode_shows_the_other_as_not_rendered(tmp_path, layers):
    import sqlite3

    run = small_run(tmp_path / "run", layers, blocks=("head0",), fraction=0.5)
    layer = next(layer for layer in layers if layer.block == "head0")
    name, rendered = layer.name, round(layer.channels * 0.5)
    with sqlite3.connect(run / MANIFEST_FILE) as db:  # channel 0 of the photo mode was never rendered
        db.execute("DELETE FROM renders WHERE layer = ? AND mode = 'photo-chelsea' AND channel = 0", (name,))
    build_site(run)
    channel = (run / "site" / "channels" / name / "0000.html").read_text()
    assert channel.count('<span class="warn">not rendered yet</span>') == 1 and "static/missing.svg" in channel
    page = (run / "site" / "layers" / f"{name}.html").read_text()
    missing = layer.channels - rendered + 1
    assert re.search(rf'data-panel="photo-chelsea" hidden>\s*<p><span class="count">{missing} channels not rendered yet'
                     rf'.*?data-channels="0,{rendered}-{layer.channels - 1}"', page, re.S)


def test_thumbnails_have_explicit_size_and_lazy_loading(site):
    run, _ = site
    html = (run / "site" / "layers" / "conv2d0_pre_relu.html").read_text()
    images = re.findall(r"<img [^>]*>", html)
    assert images and all('width="' in img and 'height="' in img for img in images)
    assert all('loading="lazy"' in img for img in images if "thumb" in img)


def test_channel_page_has_neighbours_metrics_and_keys(site):
    run, _ = site
    html = (run / "site" / "channels" / "mixed4a_pool_reduce_pre_relu" / "0000.html").read_text()
    assert 'data-key="ArrowLeft"' in html and "mixed4a_5x5_pre_relu" in html  # previous layer's last channel
    assert re.search(r'href="\.\./\.\./channels/head0_bottleneck_pre_relu/0000\.html" data-key="ArrowDown"', html)
    assert 'class="badge gain"' in html and "+5.0" in html and "rank in layer" in html
    assert "receptive field" in html


def test_search_index_lists_layers_in_display_order(site):
    run, _ = site
    text = (run / "site" / INDEX_JS).read_text()
    data = json.loads(text.removeprefix("window.ATLAS_INDEX = ").rstrip().rstrip(";"))
    names = [layer["name"] for layer in data["layers"]]
    assert names.index("head0_bottleneck_pre_relu") == names.index("mixed4a_pool_reduce_pre_relu") + 1
    first = data["layers"][0]
    assert first["rendered"] == {"noise": "0-3", "photo-chelsea": "0-3"} and first["channels"] == 8
    assert [mode["web"] for mode in data["modes"]][0] == "images/noise/{layer}/{cccc}.web.jpg"
    assert "photo-chelsea" in first["dreams"]


def test_search_index_takes_the_thumbnail_format_from_the_run(tmp_path, layers):
    run = small_run(tmp_path / "run", layers, blocks=("head0",), thumb_ext="webp")
    build_site(run)
    data = json.loads((run / "site" / INDEX_JS).read_text().removeprefix("window.ATLAS_INDEX = ").rstrip()
                      .rstrip(";"))
    noise = data["modes"][0]
    assert noise["web"].endswith(".web.jpg") and noise["thumb"] == "images/noise/{layer}/{cccc}.thumb.webp"


def test_ranges():
    assert format_channels([]) == "" and format_channels([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert format_channels([3]) == "3"


def test_rebuild_rewrites_only_what_changed(tmp_path, layers):
    run = small_run(tmp_path / "run", layers, fraction=0.5)
    first = build_site(run)
    again = build_site(run)
    assert again.pages_written == 0 and again.pages_unchanged == first.pages_written
    before = {p: p.read_bytes() for p in (run / "site").rglob("*.html")}
    # one more render arrives: a channel that was missing
    done = read_run(run).renders[0]
    new = replace(done, channel=5, thumb=done.thumb.replace("0000", "0005"), web=done.web.replace("0000", "0005"),
                  image=done.image.replace("0000", "0005"))
    for path in (new.thumb, new.web, new.image):
        Image.new("RGB", (32, 32), "red").save(run / path)
    with Manifest(run / MANIFEST_FILE) as manifest:
        manifest.add([new])
    third = build_site(run)
    changed = sorted(p.relative_to(run / "site").as_posix() for p, data in before.items() if p.read_bytes() != data)
    # the new channel's page, and the pages whose ← → lead to it now (the one before it, and the first one after it,
    # in the next layer)
    after = read_run(run).layers[[layer.name for layer in read_run(run).layers].index(new.layer) + 1].name
    assert changed == sorted(["about.html", f"channels/{new.layer}/0003.html", f"channels/{after}/0000.html",
                              "index.html", f"layers/{new.layer}.html"])
    assert (run / "site" / f"channels/{new.layer}/0005.html").is_file()
    assert third.pages_written == len(changed) + 2  # and the new page, and atlas-index.js
    assert third.missing_renders == first.missing_renders - 1


def test_stale_pages_are_removed_and_other_files_kept(tmp_path, layers):
    run = small_run(tmp_path / "run", layers)
    build_site(run)
    keep = run / "site" / "notes.txt"
    keep.write_text("mine")
    info = read_run(run)
    write_run_info(run, info.name, info.model, [layer for layer in info.layers if layer.block == "stem"],
                   info.modes, info.settings)
    report = build_site(run)
    assert report.pages_removed > 0 and not (run / "site" / "layers" / "head0_bottleneck_pre_relu.html").exists()
    assert not (run / "site" / "channels" / "head0_bottleneck_pre_relu").exists() and keep.read_text() == "mine"


def test_figures_page_lists_pngs_and_pdfs(tmp_path, layers):
    run = small_run(tmp_path / "run", layers, blocks=("head0",))
    build_site(run)
    assert "No figures yet — see <code>atlas figure</code>" in (run / "site" / "figures.html").read_text()
    (run / "figures").mkdir()
    Image.new("RGB", (40, 30)).save(run / "figures" / "lift.png")
    (run / "figures" / "lift.pdf").write_bytes(b"%PDF-1.4\n")
    build_site(run)
    html = (run / "site" / "figures.html").read_text()
    assert '<img src="../figures/lift.png" width="40" height="30"' in html
    assert '<a class="pdf" href="../figures/lift.pdf">' in html


def test_text_from_the_run_is_escaped(tmp_path, layers):
    run = small_run(tmp_path / "run", layers, blocks=("head0",))
    info = read_run(run)
    modes = [replace(mode, credit="<script>alert(1)</script> & co") for mode in info.modes]
    write_run_info(run, "<b>demo</b>", info.model, info.layers, modes, info.settings)
    build_site(run)
    about = (run / "site" / "about.html").read_text()
    assert "<script>alert" not in about and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in about
    assert "<b>demo</b>" not in about


def test_site_can_live_outside_the_run_folder(tmp_path, layers):
    run = small_run(tmp_path / "run", layers, blocks=("head0",))
    out = tmp_path / "public" / "atlas"
    build_site(run, out)
    html = (out / "layers" / "head0_bottleneck_pre_relu.html").read_text()
    thumb = re.search(r'src="([^"]+thumb\.jpg)"', html).group(1)
    assert thumb.startswith("../../../run/images/") and (out / "layers" / thumb).resolve().is_file()


def test_a_folder_that_is_not_a_run_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not an atlas run folder"):
        build_site(tmp_path)
    run = subprocess.run([sys.executable, "-m", "atlas.cli", "build", str(tmp_path)], capture_output=True,
                         text=True)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr


def test_cli_build_prints_a_summary(tmp_path, layers, capsys):
    from atlas.cli import main

    run = small_run(tmp_path / "run", layers, blocks=("head0",), fraction=0.5)
    assert main(["build", str(run)]) == 0
    out = capsys.readouterr().out
    assert "site/index.html" in out and "files written" in out and "renders missing" in out


def test_serve_answers_on_loopback_only(tmp_path, layers):
    run = small_run(tmp_path / "run", layers, blocks=("head0",))
    build_site(run)
    server = make_server(run, 0)
    host, port = server.server_address[:2]
    assert host == "127.0.0.1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as answer:  # redirected
            assert answer.url.endswith("/site/index.html") and b"head0_bottleneck_pre_relu" in answer.read()
        with pytest.raises(HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/site/nope.html", timeout=10)
    finally:
        server.shutdown()
        server.server_close()


def test_serve_rejects_a_bad_port(tmp_path):
    with pytest.raises(UserError, match="not a port number"):
        make_server(tmp_path, 70000)


def test_methods_as_modes_and_facet_strips(tmp_path, layers):
    """Two methods as two modes, one with facets: tabs and captions name the method, the channel page shows
    every facet as a strip, and each facet's image is linked."""
    run = small_run(tmp_path / "facets", layers, photos=(), fourier_facets=3)
    build_site(run)
    layer = next(layer for layer in layers if layer.block == "stem")
    page = (run / "site" / "layers" / f"{layer.name}.html").read_text()
    assert 'data-mode="fourier"' in page and "noise · Fourier" in page and "noise · DeepDream" in page
    channel = (run / "site" / "channels" / layer.name / "0002.html").read_text()
    strip = re.search(r'<div class="facets".*?</div>', channel, re.S).group(0)
    assert re.findall(r'href="\.\./\.\./\.\./images/fourier/[^/]+/(0002[^"]*)\.web\.jpg"', strip) == [
        "0002", "0002-facet1", "0002-facet2"]
    assert channel.count('class="facets"') == 1  # the DeepDream mode has one image per channel


def test_neuron_renders_say_their_objective_and_outline_the_centre_units_receptive_field(tmp_path, layers):
    """A neuron run's channel page names the objective and draws each noise mode's recorded box over its image,
    in percent of the recorded render size; a layer without a box, a photo mode and a channel run draw none."""
    stem = [layer for layer in layers if layer.block == "stem"]
    boxes = {stem[0].name: (24, 20, 31, 33), stem[2].name: (0, 8, 64, 64)}  # on 64 px renders
    run = small_run(tmp_path / "neuron", layers, neuron=boxes, fourier_facets=1)
    build_site(run)
    for layer, box in boxes.items():
        page = (run / "site" / "channels" / layer / "0000.html").read_text()
        figures = re.findall(r'<figure class="large">.*?</figure>', page, re.S)
        assert len(figures) == 3 and page.count("objective: neuron (centre unit)") == 3  # noise, fourier, photo
        for figure in figures[:2]:
            style = re.search(r'class="unit-outline" style="([^"]*)"', figure).group(1)
            percent = dict((k.strip(), float(v.strip().rstrip("%"))) for k, v in
                           (part.split(":") for part in style.split(";")))
            drawn = (percent["left"], percent["top"], percent["left"] + percent["width"],
                     percent["top"] + percent["height"])
            assert [v * 64 / 100 for v in drawn] == pytest.approx(box, abs=1e-3)
            assert f'data-box="{",".join(map(str, box))}"' in figure
            assert f"outline its receptive field ({box[2] - box[0]}×{box[3] - box[1]} px of 64×64)" in figure
        assert "unit-outline" not in figures[2]  # photo: its tiles shift every step, no one unit
    assert "unit-outline" not in (run / "site" / "channels" / stem[1].name / "0000.html").read_text()
    assert "neuron (centre unit)" in (run / "site" / "about.html").read_text()


def test_channel_renders_say_their_objective_and_draw_no_outline(site, layers):
    run, _ = site
    page = (run / "site" / "channels" / layers[5].name / "0000.html").read_text()
    assert "objective: channel" in page and "unit-outline" not in page and "outline-toggle" not in page


def test_a_manifest_from_before_facets_still_reads_and_builds(tmp_path, layers):
    """Run folders written before methods and facets existed: no `facet` column, modes without method."""
    import sqlite3

    run = small_run(tmp_path / "old", layers)
    with sqlite3.connect(run / MANIFEST_FILE) as db:
        db.execute("CREATE TABLE old AS SELECT layer, channel, mode, seed, settings_hash, start, \"end\", lift, rank, "
                   "specific, seconds, image, web, thumb, versions, created FROM renders")
        db.execute("DROP TABLE renders")
        db.execute("ALTER TABLE old RENAME TO renders")
    info = json.loads((run / "run.json").read_text())
    for mode in info["modes"]:
        del mode["method"], mode["facets"], mode["objective"]
    info["settings"]["render"]["objective"] = "negative"  # modes without one take their settings' objective
    (run / "run.json").write_text(json.dumps(info))
    before = read_run(run)
    assert before.renders and all(r.facet == 0 for r in before.renders) and not before.facets
    assert all(r.batch is None and r.device == "" for r in before.renders)  # not recorded back then
    assert {m.method for m in before.modes} == {"deepdream"} and {m.objective for m in before.modes} == {"negative"}
    assert not before.centre_units
    build_site(run)
    assert "noise · DeepDream" in (run / "site" / "index.html").read_text()
    with Manifest(run / MANIFEST_FILE, create=True) as manifest:  # a sweep resuming it adds the columns,
        assert {"facet", "batch", "device"} <= manifest._columns()  # keeping every row
    assert read_run(run).renders == before.renders


PARTIAL = {"conv2d0_pre_relu": 3, "mixed4d_3x3_bottleneck_pre_relu": 4}  # 7 renders of the 59-layer catalogue


@pytest.fixture(scope="module")
def partial(tmp_path_factory, layers, small_model):
    """A few renders of a large catalogue, with circuits for every layer (as `atlas run` leaves it)."""
    from fakerun import add_fake_circuits

    run = make_fake_run(tmp_path_factory.mktemp("runs") / "partial", layers=layers, photos=(), rendered=PARTIAL)
    add_fake_circuits(run, small_model)
    build_site(run)
    return run


def local_links(page: Path) -> list[str]:
    return [target for target in ATTR.findall(page.read_text()) if not urlsplit(target).scheme]


def test_a_partial_run_has_pages_for_what_it_rendered_and_links_to_the_rest_land_on_layer_pages(partial, layers):
    site = partial / "site"
    pages = sorted(p.relative_to(site / "channels").as_posix() for p in (site / "channels").rglob("*.html"))
    assert pages == [f"{name}/{c:04d}.html" for name, count in PARTIAL.items() for c in range(count)]
    assert len(list((site / "layers").glob("*.html"))) == len(layers)  # every layer still has its page
    channels = {layer.name: layer.channels for layer in layers}
    anchors = set()
    for page in site.rglob("*.html"):
        for target in local_links(page):
            path, fragment = urlsplit(target).path, urlsplit(target).fragment
            if path:
                assert (page.parent / unquote(path)).resolve().is_file(), (page, target)
            if fragment.startswith("c="):  # a unit without a page: its layer page at that channel
                layer = unquote(Path(path).stem)
                assert Path(path).parent.name == "layers" and 0 <= int(fragment[2:]) < channels[layer], target
                anchors.add((layer, int(fragment[2:])))
    assert len(anchors) > 20  # the circuits' edges and the neighbours of the channel pages
    assert all(channel >= PARTIAL.get(layer, 0) for layer, channel in anchors)  # never a unit that has a page


def test_channel_pages_walk_the_rendered_channels_and_step_up_and_down_into_layer_pages(partial):
    site = partial / "site" / "channels"
    last = (site / "conv2d0_pre_relu" / "0002.html").read_text()
    assert re.search(r'href="\.\./\.\./channels/mixed4d_3x3_bottleneck_pre_relu/0000\.html" rel="next"', last)
    assert re.search(r'href="\.\./\.\./layers/conv2d1_pre_relu\.html#c=2" data-key="ArrowDown"', last)
    first = (site / "mixed4d_3x3_bottleneck_pre_relu" / "0000.html").read_text()
    assert re.search(r'href="\.\./\.\./channels/conv2d0_pre_relu/0002\.html" rel="prev"', first)
    assert "mixed4d_3x3_bottleneck_pre_relu.html#c=" not in first


def test_layer_pages_show_renders_first_and_fold_the_circuit_matrix_when_there_are_renders(partial, layers):
    rendered = (partial / "site" / "layers" / "mixed4d_3x3_bottleneck_pre_relu.html").read_text()
    facts, grid, matrix = (rendered.index(s) for s in ('<dl class="facts">', '<div class="grid" data-panel="noise"',
                                                       '<details class="circuit-matrix"'))
    assert facts < grid < matrix
    assert '<details class="circuit-matrix">' in rendered  # folded
    channels = next(layer.channels for layer in layers if layer.name == "mixed4d_3x3_bottleneck_pre_relu")
    assert f"{channels - 4} channels not rendered yet" in rendered and f'data-channels="4-{channels - 1}"' in rendered
    assert 'data-pages="0-3"' in rendered
    empty = (partial / "site" / "layers" / "mixed4c_3x3_pre_relu.html").read_text()
    assert '<details class="circuit-matrix" open>' in empty
    assert not re.search(r'<a class="cell" ', empty) and 'data-channels="0-' in empty and 'data-pages=""' in empty


def test_the_index_groups_layers_without_renders_per_block_in_one_line(partial, layers):
    html = (partial / "site" / "index.html").read_text()
    rows = re.findall(r'<li class="layer-row">\s*<div class="layer-name">\s*<a href="layers/([^"]+)\.html">', html)
    assert rows == list(PARTIAL)
    blocks = dict(re.findall(r'<section class="block[^"]*" id="([^"]+)">(.*?)</section>', html, re.S))
    assert list(blocks) == BLOCKS
    for block, body in blocks.items():
        names = [layer.name for layer in layers if layer.block == block and layer.name not in PARTIAL]
        line = re.findall(r'<p class="unrendered">(.*?)</p>', body, re.S)
        assert re.findall(r'<a href="layers/([^"]+)\.html"', "".join(line)) == names
        assert len(line) == (1 if names else 0)
    assert '<section class="block quiet" id="mixed3a">' in html and 'class="block" id="stem"' in html
    assert "59 convolutional layers (2 with renders)" in html


def test_the_search_index_says_which_channels_have_pages(partial):
    data = json.loads((partial / "site" / INDEX_JS).read_text().removeprefix("window.ATLAS_INDEX = ").rstrip()
                      .rstrip(";"))
    pages = {layer["name"]: layer["pages"] for layer in data["layers"]}
    assert pages["conv2d0_pre_relu"] == "0-2" and pages["mixed4d_3x3_bottleneck_pre_relu"] == "0-3"
    assert pages["mixed4c_3x3_pre_relu"] == "" and len(pages) == 59


def test_a_full_run_still_gets_every_page(tmp_path, layers):
    run = small_run(tmp_path / "full", layers, blocks=("stem", "mixed3a"), photos=())
    build_site(run)
    shown = [layer for layer in layers if layer.block in ("stem", "mixed3a")]
    pages = {p.relative_to(run / "site" / "channels").as_posix() for p in (run / "site" / "channels").rglob("*.html")}
    assert pages == {f"{layer.name}/{c:04d}.html" for layer in shown for c in range(layer.channels)}
    for layer in shown:
        html = (run / "site" / "layers" / f"{layer.name}.html").read_text()
        assert len(re.findall(r'<a class="cell" data-ch=', html)) == layer.channels and "not-shown" not in html
    index = (run / "site" / "index.html").read_text()
    assert "unrendered" not in index and "quiet" not in index and "with renders)" not in index
