"""One site of several models (atlas build RUN RUN ... -o SITE), on fake run folders of two made-up models."""

from __future__ import annotations

import json
import re
import shutil
import threading
import urllib.request
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from fakerun import add_fake_examples, keras_like_layers, make_fake_run, synthetic_layers

from atlas.cli import main
from atlas.publish.site import make_server
from atlas.run.manifest import read_run
from atlas.publish.multisite import (
    MODELS_FILE,
    RESERVED,
    build_multisite,
    depth_rows,
    is_multisite,
    nearest_layer,
    relative_depth,
    slugify,
    unique_slugs,
)

GOOGLENET_BLOCKS = ("stem", "mixed3a", "mixed4d", "head1", "mixed5b")  # 22 layers, a head among them


class Links(HTMLParser):
    """Every href and src of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found += [value for name, value in attrs if name in ("href", "src") and value]


def links(page: Path) -> list[str]:
    parser = Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.found


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    """Two runs of different models: GoogLeNet-like (22 layers, with a photo mode and examples) and a Keras
    ResNet-like catalogue (10 layers, noise only)."""
    root = tmp_path_factory.mktemp("runs")
    googlenet = [replace(layer, channels=min(layer.channels, 6)) for layer in synthetic_layers(0.125)
                 if layer.block in GOOGLENET_BLOCKS]  # few channels: few pages to write
    first = make_fake_run(root / "googlenet", layers=googlenet, fraction=0.5)
    add_fake_examples(first, googlenet[:3])
    second = make_fake_run(root / "resnet", layers=keras_like_layers(channels=4), fraction=0.5, photos=(),
                           spec="keras:ResNet50")
    return [first, second]


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> list[Path]:
    """Two runs of three-layer models, for the tests that build again and again."""
    root = tmp_path_factory.mktemp("tiny")
    return [make_fake_run(root / name, layers=keras_like_layers(blocks=1, per_block=2, channels=2), fraction=0.5,
                          photos=(), spec=spec) for name, spec in [("first", "keras:ResNet50"),
                                                                   ("second", "keras:MobileNetV2")]]


@pytest.fixture(scope="module")
def site(runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("published") / "site"
    build_multisite(runs, out)
    return out


def model_info(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def test_index_lists_every_model_with_its_counts_samples_and_link(site, runs):
    html = (site / "index.html").read_text()
    cards = re.findall(r'<li class="model-card" id="([^"]+)">(.*?)</li>', html, re.S)
    assert [slug for slug, _ in cards] == ["googlenet", "resnet"]
    for (slug, card), run in zip(cards, runs):
        info = model_info(run)
        assert f'href="{slug}/index.html">{info["name"]}</a>' in card
        assert f"<code>{info['model']['spec']}</code>" in card
        assert f"{len(info['layers'])} layers" in card
        assert f"{sum(layer['channels'] for layer in info['layers']):,} channels" in card
        samples = re.findall(rf'<img src="{slug}/run/images/[^"]+"', card)
        assert 2 <= len(samples) <= 4
        assert "depth 0%" in card and "depth 100%" in card


def test_each_model_has_its_whole_gallery_and_a_link_back(site, runs):
    for slug, run in zip(["googlenet", "resnet"], runs):
        info = model_info(run)
        folder = site / slug
        assert len(list((folder / "layers").glob("*.html"))) == len(info["layers"])
        found = read_run(run)  # a page per channel with a render or dataset examples
        shown = {(r.layer, r.channel) for r in found.renders if r.channel >= 0} | set(found.examples)
        assert len(list((folder / "channels").rglob("*.html"))) == len(shown) > 0
        for page in ["index.html", "compare.html", "about.html", "atlas-index.js", "static/style.css"]:
            assert (folder / page).is_file(), (slug, page)
        layer = (folder / "layers" / f"{info['layers'][0]['name']}.html").read_text()
        assert 'href="../../index.html" class="home"' in layer  # "All models", from layers/


def test_every_local_link_resolves_within_the_site(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 100
    root = site.resolve()
    checked = 0
    for page in pages:
        for target in links(page):
            parts = urlsplit(target)
            assert not parts.scheme and not parts.netloc and not target.startswith("/"), (page, target)
            if not parts.path:
                continue
            resolved = (page.parent / unquote(parts.path)).resolve()
            assert resolved.is_file(), (page, target)
            assert root in resolved.parents, (page, target)  # self-contained: nothing outside SITE
            checked += 1
    assert checked > 1000


def test_run_files_are_hard_linked_or_copied_into_the_site(site, runs):
    for slug, run in zip(["googlenet", "resnet"], runs):
        images = sorted((run / "images").rglob("*.*"))
        assert images
        for image in images:
            copy = site / slug / "run" / image.relative_to(run)
            assert copy.read_bytes() == image.read_bytes()
    assert (site / "googlenet" / "run" / "photos" / "chelsea.jpg").is_file()
    assert any((site / "googlenet" / "run" / "examples").rglob("*.jpg"))


def test_relative_depth_and_nearest_layer():
    assert [relative_depth(i, 5) for i in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert relative_depth(0, 1) == 0.0
    assert nearest_layer(0.5, 21) == 10 and nearest_layer(0.5, 11) == 5
    assert nearest_layer(0.5, 10) == 4  # 4/9 and 5/9 are as near: the lower one
    assert nearest_layer(0.3, 1) == 0


@pytest.mark.parametrize("first, second", [(24, 10), (10, 24), (59, 3), (2, 7), (1, 5)])
def test_depth_rows_pair_layers_by_relative_depth(first, second):
    rows = depth_rows(first, second)
    assert [depth for depth, _, _ in rows] == pytest.approx([step / 10 for step in range(11)])
    assert rows[0][1:] == (0, 0) and rows[-1][1:] == (first - 1, second - 1)
    for depth, a, b in rows:
        for index, count in ((a, first), (b, second)):  # no other layer is nearer the row's depth
            best = min(abs(relative_depth(i, count) - depth) for i in range(count))
            assert abs(relative_depth(index, count) - depth) == pytest.approx(best)
    for column in (1, 2):
        indices = [row[column] for row in rows]
        assert indices == sorted(indices)


def test_compare_pages_pair_the_layers_of_two_catalogues_of_different_lengths(site, runs):
    low_high = [[layer["name"] for layer in sorted(model_info(run)["layers"], key=lambda x: x["index"])]
                for run in runs]
    rendered = {layer["name"]: max(1, round(layer["channels"] * 0.5)) for run in runs  # fraction=0.5
                for layer in model_info(run)["layers"]}
    assert len(low_high[0]) == 22 and len(low_high[1]) == 10
    for page, (a, b) in [("compare.html", (0, 1)), ("compare/googlenet--resnet.html", (0, 1)),
                         ("compare/resnet--googlenet.html", (1, 0))]:
        html = (site / page).read_text()
        rows = re.findall(r'<tr><th scope="row">(\d+)%</th>(.*?)</tr>', html, re.S)
        assert [int(depth) for depth, _ in rows] == list(range(0, 101, 10)), page
        for (depth, row), (_, i, j) in zip(rows, depth_rows(len(low_high[a]), len(low_high[b]))):
            names = re.findall(r'<a href="[^"]*/layers/([^"/]+)\.html">', row)
            assert names == [low_high[a][i], low_high[b][j]], (page, depth)
            assert len(re.findall(r"<img ", row)) == sum(min(4, rendered[name]) for name in names)  # up to 4 each
    assert "resnet--googlenet.html" in (site / "compare.html").read_text()  # every pair is linked


def test_slugs_are_url_safe_unique_and_leave_the_top_level_alone():
    assert slugify("ResNet 50 (run #2)") == "resnet-50-run-2"
    assert slugify("ééé") == "model" and "--" not in slugify("a -- b")
    slugs = unique_slugs(["A b", "a-b", "static", "compare", "Dämon"])
    assert len(set(slugs)) == 5 and not set(slugs) & RESERVED
    assert all(re.fullmatch(r"[a-z0-9._-]+", slug) and "--" not in slug for slug in slugs)


def test_two_runs_of_one_model_spec_stay_apart(tmp_path):
    layers = keras_like_layers(blocks=2, per_block=2)
    runs = [make_fake_run(tmp_path / folder, layers=layers, fraction=0.5, photos=(), spec="keras:MobileNetV2",
                          run_name=name, seed=seed) for folder, name, seed in [("a", "Mobile v1", 0),
                                                                               ("b", "mobile-v1", 1)]]
    report = build_multisite(runs, tmp_path / "site")
    assert [model.slug for model in report.models] == ["mobile-v1", "mobile-v1-2"]
    html = (tmp_path / "site" / "index.html").read_text()
    assert "Mobile v1</a>" in html and "mobile-v1</a>" in html
    assert (tmp_path / "site" / "mobile-v1-2" / "index.html").is_file()


def test_rebuild_changes_nothing_and_drops_a_model_no_longer_given(tmp_path, tiny_runs):
    out = tmp_path / "site"
    build_multisite(tiny_runs, out)
    again = build_multisite(tiny_runs, out)
    assert again.written == 0 and all(s.pages_written == 0 for s in again.sites) and again.removed == 0
    alone = build_multisite(tiny_runs[:1], out)
    assert not (out / "second").exists() and alone.removed > 0
    assert json.loads((out / MODELS_FILE).read_text()) == ["first"]
    assert not list((out / "compare").glob("*.html"))
    assert "holds one model" in (out / "compare.html").read_text()


def test_the_site_works_moved_elsewhere(site, tmp_path):
    moved = tmp_path / "elsewhere"
    shutil.copytree(site, moved)
    for page in [moved / "index.html", moved / "compare.html", moved / "resnet" / "index.html"]:
        for target in links(page):
            assert (page.parent / unquote(urlsplit(target).path)).is_file(), target


def test_cli_builds_several_runs_into_one_site(tiny_runs, tmp_path, capsys):
    out = tmp_path / "cli-site"
    assert main(["build", *map(str, tiny_runs), "-o", str(out)]) == 0
    assert "2 models" in capsys.readouterr().out
    assert (out / "index.html").is_file() and (out / "second" / "layers" / "conv1_conv.html").is_file()


def test_a_site_of_several_models_is_served_from_its_index(site):
    assert is_multisite(site) and not is_multisite(site / "resnet")
    server = make_server(site, 0, start="/index.html")
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as answer:  # redirected
            assert answer.url.endswith("/index.html") and b'class="model-card"' in answer.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/resnet/layers/conv1_conv.html", timeout=10) as answer:
            assert b"conv1_conv" in answer.read()
    finally:
        server.shutdown()
        server.server_close()


def test_a_site_config_names_the_runs_and_the_folder(tiny_runs, tmp_path, capsys):
    config = tmp_path / "conf" / "site.yaml"
    config.parent.mkdir()
    relative = Path("..") / tiny_runs[1].relative_to(tiny_runs[1].parents[1])  # from the config's folder
    shutil.copytree(tiny_runs[1], tmp_path / relative.parent.name / relative.name)
    config.write_text(f"runs:\n  - {tiny_runs[0]}\n  - {relative}\nout: published\n")
    assert main(["build", str(config)]) == 0
    assert (config.parent / "published" / "first" / "index.html").is_file()
    assert (config.parent / "published" / "second" / "index.html").is_file()
    config.write_text("runs: []\nout: published\n")
    assert "runs" in user_error(["build", str(config)], capsys)
    config.write_text(f"runs: [{tiny_runs[0]}]\noutput: x\n")
    assert "unknown key 'output'" in user_error(["build", str(config)], capsys)


def test_cli_one_run_without_o_builds_its_own_site_as_before(tmp_path, capsys):
    run = make_fake_run(tmp_path / "solo", layers=keras_like_layers(blocks=1, per_block=1), photos=())
    assert main(["build", str(run)]) == 0
    assert (run / "site" / "index.html").is_file() and not (run / "site" / MODELS_FILE).exists()
    assert "All models" not in (run / "site" / "index.html").read_text()


def user_error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("atlas: error: ") and "Traceback" not in err
    return err


def test_user_errors_exit_2_with_one_line(tiny_runs, tmp_path, capsys):
    first, second = map(str, tiny_runs)
    assert "not an atlas run folder" in user_error(["build", first, str(tmp_path), "-o", str(tmp_path / "s")],
                                                   capsys)
    assert "given twice" in user_error(["build", first, first, "-o", str(tmp_path / "s")], capsys)
    twin = tmp_path / "twin"
    shutil.copytree(tiny_runs[0], twin, ignore=shutil.ignore_patterns("site"))
    assert "both named 'first'" in user_error(["build", first, str(twin), "-o", str(tmp_path / "s")], capsys)
    assert "inside the run folder" in user_error(["build", first, second, "-o", f"{first}/site"], capsys)
    assert "inside -o" in user_error(["build", first, second, "-o", str(tiny_runs[0].parent)], capsys)
    assert "need -o SITE" in user_error(["build", first, second], capsys)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert "holds other files" in user_error(["build", first, second, "-o", str(busy)], capsys)
    (tmp_path / "file").write_text("x")
    assert "not a folder" in user_error(["build", first, second, "-o", str(tmp_path / "file")], capsys)
    assert not (tmp_path / "s").exists()
