"""The gallery's photo pages (per-photo explanations), on fake run folders with a fake `explain/` folder (no
TensorFlow): the Photos page and nav, a tab per layer, the four interfaces' data, links to channel pages, a channel
page's photos, a model without a classifier, and the site of several models."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from fakerun import add_fake_explain, explain_layer, keras_like_layers, make_fake_run, synthetic_layers
from PIL import Image

from atlas.publish.explain_view import TOP_CHANNELS, photo_url
from atlas.publish.site import build_site, channel_url, layer_url
from atlas.run.explainfiles import ExplainLayer, read_explanation, read_index
from atlas.run.manifest import read_run

FAMOUS = "mixed4d_3x3_bottleneck_pre_relu"
RUN_LAYERS = ["conv2d0_pre_relu", FAMOUS, "mixed4d_1x1_pre_relu", "mixed4d_3x3_pre_relu"]  # not 5x5, pool_reduce
ATTR = re.compile(r'(?:href|src)="([^"]*)"')


@pytest.fixture(scope="module")
def catalogue():
    return synthetic_layers(0.125)


def explained_run(folder: Path, catalogue, **kwargs) -> Path:
    """A half-rendered run of four layers with two photos explained at FAMOUS and at the block output mixed4d
    (whose 5x5 and pool_reduce branches the run does not catalogue: no pages, no renders)."""
    make_fake_run(folder, layers=[layer for layer in catalogue if layer.name in RUN_LAYERS], fraction=0.5)
    add_fake_explain(folder, [explain_layer(catalogue, FAMOUS, 14), explain_layer(catalogue, "mixed4d", 14)],
                     **kwargs)
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory, catalogue) -> Path:
    folder = explained_run(tmp_path_factory.mktemp("explain") / "run", catalogue)
    build_site(folder)
    return folder


def panels(html: str) -> dict[str, str]:
    """A photo page's layer tabs: layer -> the HTML of its panel."""
    parts = re.split(r'<section class="explain-layer" data-panel="([^"]+)"', html)[1:]
    return dict(zip(parts[::2], parts[1::2]))


def dictionary_data(panel: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" class="dictionary-data">(.*?)</script>', panel,
                                re.S).group(1))


def decode(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB")).astype(int)


def label_of(layer, channel: int) -> str:
    source = layer.sources[channel] if layer.sources else (layer.name, channel)
    return f"{source[0]}:{source[1]}"


def test_photos_page_nav_and_index_strip(run):
    site = run / "site"
    index = read_index(run)
    photos = (site / "photos.html").read_text()
    for photo in index.photos:
        assert f'href="{photo_url(photo.sha256)}"' in photos and photo.name in photos
        assert photo.classes[0].label in photos
        assert (site / photo_url(photo.sha256)).is_file()
    assert len(list((site / "photos").glob("*.html"))) == len(index.photos) == 2
    home = (site / "index.html").read_text()
    assert 'href="photos.html"' in home and 'id="photos"' in home
    layer_page = (site / "layers" / f"{FAMOUS}.html").read_text()
    assert 'href="../photos.html">Photos</a>' in layer_page


def test_a_run_without_explanations_has_no_photos(tmp_path, catalogue):
    folder = make_fake_run(tmp_path / "plain", layers=[layer for layer in catalogue if layer.name in RUN_LAYERS])
    build_site(folder)
    assert not (folder / "site" / "photos.html").exists()
    assert "photos.html" not in (folder / "site" / "index.html").read_text()


def test_photo_page_has_a_tab_per_layer_and_every_link_and_image_resolves(run):
    site = run / "site"
    photo = read_index(run).photos[0]
    page = site / photo_url(photo.sha256)
    html = page.read_text()
    assert re.findall(r'role="tab" data-mode="([^"]+)"', html) == [FAMOUS, "mixed4d"]
    found = panels(html)
    assert list(found) == [FAMOUS, "mixed4d"]
    assert re.search(rf'data-panel="{FAMOUS}">', html) and re.search(r'data-panel="mixed4d" hidden>', html)
    assert 'static/explain.js' in html
    for ref in ATTR.findall(html):
        if ref.startswith("data:"):
            continue
        target = (page.parent / unquote(ref.split("#")[0])).resolve()
        assert target.is_file(), ref


def test_dictionary_json_holds_each_positions_channels_with_their_pages_and_renders(run, catalogue):
    site = run / "site"
    index = read_index(run)
    photo = index.photos[1]
    html = (site / photo_url(photo.sha256)).read_text()
    for name, panel in panels(html).items():
        layer = index.layers[name]
        data = read_explanation(run, photo.sha256, name)
        shown = dictionary_data(panel)
        assert (shown["h"], shown["w"]) == data.dictionary_channels.shape[:2] == (14, 14)
        assert shown["channels"] == data.dictionary_channels.tolist()
        assert np.allclose(shown["values"], data.dictionary_values, atol=1e-4)
        assert shown["top"] == pytest.approx(float(data.dictionary_values.max()))
        for channel, (label, href, thumb, short) in shown["units"].items():
            assert label == label_of(layer, int(channel))
            assert short == (channel if name == FAMOUS else label.removeprefix("mixed4d_").replace("_pre_relu", ""))
            catalogued, number = label.split(":")
            if catalogued in RUN_LAYERS:  # its page where it has one (a render, or listed by a photo), else its layer's
                page = channel_url(catalogued, int(number))
                assert href == (page if (site / page).is_file() else f"{layer_url(catalogued)}#c={number}")
                assert (site / href.split("#")[0]).is_file()
                assert (not thumb) or ((run / thumb).is_file() and href == page)
            else:  # a branch the run does not catalogue: no page, no render (a placeholder)
                assert href == "" and thumb == ""
        if name == FAMOUS:
            assert {u[0].split(":")[0] for u in shown["units"].values()} == {FAMOUS}
            assert any(not unit[2] for unit in shown["units"].values())  # half its channels are not rendered


def test_spatial_attribution_heatmaps_follow_the_sign_and_size_of_the_arrays(run):
    index = read_index(run)
    photo = index.photos[0]
    html = (run / "site" / photo_url(photo.sha256)).read_text()
    panel = panels(html)[FAMOUS]
    data = read_explanation(run, photo.sha256, FAMOUS)
    maps = re.findall(r'<figure class="class-map" data-class="(\d+)">.*?<img class="heat" src="([^"]+)"', panel, re.S)
    assert [int(c) for c, _ in maps] == data.classes.tolist() and len(maps) == 5
    biggest = np.unravel_index(np.abs(data.spatial).argmax(), data.spatial.shape)
    for k, (_, uri) in enumerate(maps):
        pixels = decode(uri)
        assert pixels.shape == (14, 14, 3)
        values = data.spatial[k]
        red, blue = values > 0, values < 0
        assert (pixels[red][:, 0] == 255).all() and (pixels[blue][:, 2] == 255).all()
        fade = np.where(red, pixels[..., 1], pixels[..., 0])  # lower for a larger |value|, on one scale
        order = np.argsort(np.abs(values).ravel())
        assert (np.diff(fade.ravel()[order]) <= 0).all()
        if k == biggest[0]:
            assert tuple(pixels[biggest[1:]]) in [(255, 0, 0), (0, 0, 255)]
    for label in [c.label for c in photo.classes]:
        assert label in panel


def test_the_page_says_what_the_attribution_is_and_shows_between_layers_only_when_the_run_has_it(run):
    """The notes name the baseline and the integration (as the index records them); a run explained without the
    attribution between layers (the default) has no view of it."""
    photo = read_index(run).photos[0]
    html = (run / "site" / photo_url(photo.sha256)).read_text()
    words = ("(activation − its mean over the 4 shipped photos) × gradient of the class logit, integrated from the "
             "baseline (16 steps)")
    assert html.count(words) == 2 * len(photo.layers)  # the spatial and the channel attribution's notes
    assert 'class="between"' not in html
    assert all(dictionary_data(panel)["between"] == [] for panel in panels(html).values())


def test_channel_attribution_shows_the_top_channels_each_way_linked_to_their_pages(run):
    index = read_index(run)
    photo = index.photos[0]
    site = run / "site"
    html = (site / photo_url(photo.sha256)).read_text()
    for name, panel in panels(html).items():
        layer = index.layers[name]
        data = read_explanation(run, photo.sha256, name)
        rows = re.findall(r'<tr data-class="(\d+)">(.*?)</tr>', panel.split('class="groups"')[0], re.S)
        assert [int(c) for c, _ in rows] == data.classes.tolist()
        for k, (_, row) in enumerate(rows):
            up_html, down_html = row.split('<td class="down">')
            values = data.channels[k]
            up = [c for c in np.argsort(-values)[:TOP_CHANNELS] if values[c] > 0]
            down = [c for c in np.argsort(values)[:TOP_CHANNELS] if values[c] < 0]
            assert re.findall(r'data-unit="([^"]+)"', up_html) == [label_of(layer, c) for c in up]
            assert re.findall(r'data-unit="([^"]+)"', down_html) == [label_of(layer, c) for c in down]
        for ref in re.findall(r'href="\.\./(channels/[^"]+)"', panel):
            assert (site / unquote(ref)).is_file()


def test_neuron_groups_show_where_they_fire_their_render_channels_and_classes(run):
    index = read_index(run)
    photo = index.photos[0]
    html = (run / "site" / photo_url(photo.sha256)).read_text()
    panel = panels(html)["mixed4d"]
    layer = index.layers["mixed4d"]
    data = read_explanation(run, photo.sha256, "mixed4d")
    groups = re.split(r'<article class="group" data-group="\d+">', panel)[1:]
    assert len(groups) == data.group_spatial.shape[0] == 3
    for g, card in enumerate(groups):
        pixels = decode(re.search(r'<img class="heat" src="([^"]+)"', card).group(1))
        grey = pixels[..., 0]
        assert (pixels[..., 0] == pixels[..., 1]).all() and grey.max() == 255
        order = np.argsort(data.group_spatial[g].ravel())
        assert (np.diff(grey.ravel()[order]) >= 0).all()  # brighter where the group fires more
        assert f"explain/{photo.sha256}/mixed4d-group-{g}.png" in card
        top = np.argsort(-data.group_channels[g])[:4]
        assert re.findall(r'data-unit="([^"]+)"', card) == [label_of(layer, c) for c in top]
        bars = re.findall(r'<tr data-class="(\d+)"><th>[^<]*</th><td class="bar-cell"><span class="bar (up|down)"',
                          card)
        assert [(int(c), s) for c, s in bars] == [(int(c), "up" if v > 0 else "down")
                                                 for c, v in zip(data.classes, data.group_classes[g])]


def test_a_channel_page_lists_the_photos_where_it_is_a_top_contributor(run):
    index = read_index(run)
    site = run / "site"
    listed: dict[int, set[str]] = {}
    for photo in index.photos:
        data = read_explanation(run, photo.sha256, FAMOUS)
        for row in data.channels:  # the channels its photo page shows per class: the top positive and negative
            shown = [c for c in np.argsort(-row)[:TOP_CHANNELS] if row[c] > 0]
            shown += [c for c in np.argsort(row)[:TOP_CHANNELS] if row[c] < 0]
            for c in shown:
                listed.setdefault(int(c), set()).add(photo.sha256)
        for row in data.group_channels:
            for c in np.argsort(-row)[:4]:
                listed.setdefault(int(c), set()).add(photo.sha256)
    rendered = {r.channel for r in read_run(run).renders if r.layer == FAMOUS}
    for channel in range(index.layers[FAMOUS].channels):
        page = site / channel_url(FAMOUS, channel)
        assert page.is_file() == (channel in rendered or channel in listed), channel  # a page for what it has
        if not page.is_file():
            continue
        html = page.read_text()
        links = set(re.findall(r'href="\.\./\.\./(photos/[0-9a-f]{16}\.html)#m=([^"]+)"', html))
        assert links == {(photo_url(sha), FAMOUS) for sha in listed.get(channel, set())}, channel
        assert ("In explained photos" in html) == (channel in listed)
    assert listed and set(listed) - rendered  # some listed channels have a page for that alone


def test_a_model_without_a_classifier_gets_dictionaries_and_groups_only(tmp_path, catalogue):
    folder = explained_run(tmp_path / "nologits", catalogue, classifier=None, photos=("rocket",))
    build_site(folder)
    photo = read_index(folder).photos[0]
    assert photo.classes == []
    html = (folder / "site" / photo_url(photo.sha256)).read_text()
    for panel in panels(html).values():
        assert "Attribution needs class logits" in panel
        assert 'class="spatial"' not in panel and 'class="channel-attribution"' not in panel
        assert 'class="dictionary"' in panel and panel.count('<article class="group"') == 3
        assert 'class="group-classes"' not in panel
    assert "this model has no classifier" in html.lower()


def test_a_rebuild_without_the_explain_folder_drops_the_photo_pages(tmp_path, catalogue):
    import shutil

    folder = explained_run(tmp_path / "dropped", catalogue, photos=("coffee",))
    build_site(folder)
    assert (folder / "site" / "photos.html").is_file()
    shutil.rmtree(folder / "explain")
    report = build_site(folder)
    assert not (folder / "site" / "photos.html").exists() and not (folder / "site" / "photos").exists()
    assert report.pages_removed >= 2


def test_the_site_of_several_models_copies_the_explained_photos(tmp_path, catalogue):
    from atlas.publish.multisite import build_multisite

    first = explained_run(tmp_path / "first", catalogue, photos=("chelsea",))
    second = make_fake_run(tmp_path / "second", layers=[l for l in catalogue if l.name in RUN_LAYERS[:2]])
    out = tmp_path / "site"
    build_multisite([first, second], out)
    photo = read_index(first).photos[0]
    page = out / "first" / photo_url(photo.sha256)
    html = page.read_text()
    assert (out / "first" / "run" / photo.photo).is_file()
    for ref in ATTR.findall(html):
        if not ref.startswith("data:"):
            assert (page.parent / unquote(ref.split("#")[0])).resolve().is_file(), ref
    assert not (out / "second" / "photos.html").exists()


def test_a_keras_like_run_links_catalogued_layers_and_shows_a_residual_sum_unlinked(tmp_path):
    """A model named like a Keras ResNet: a catalogued conv layer's channels link to their pages; a residual sum
    (`conv2_block1_out`, no catalogued source: sources None) is shown by number, unlinked, as a placeholder."""
    layers = keras_like_layers(channels=6)
    folder = make_fake_run(tmp_path / "resnet", layers=layers, photos=(), fraction=1.0, spec="keras:ResNet50")
    explained = [explain_layer(layers, "conv2_block1_2_conv", 7), ExplainLayer("conv2_block1_out", 6, 7, 7)]
    add_fake_explain(folder, explained, photos=("astronaut",), classes=3, groups=2)
    build_site(folder)
    photo = read_index(folder).photos[0]
    found = panels((folder / "site" / photo_url(photo.sha256)).read_text())
    conv = dictionary_data(found["conv2_block1_2_conv"])["units"]
    assert all(href == channel_url("conv2_block1_2_conv", int(c)) and thumb for c, (_, href, thumb, _) in conv.items())
    residual = dictionary_data(found["conv2_block1_out"])["units"]
    assert all(unit == [f"conv2_block1_out:{c}", "", "", c] for c, unit in residual.items())
    assert "../channels/conv2_block1_out" not in found["conv2_block1_out"]


def test_attribution_between_layers_is_in_the_dictionary_data_as_signed_bytes(tmp_path, catalogue):
    """With `from_<lower>` arrays, each position's attribution over the lower layer's positions is in the page, scaled
    by its own largest |value| to -127..127 (signs kept), with a canvas to draw it on."""
    folder = explained_run(tmp_path / "between", catalogue, photos=("rocket",), between=("mixed4c", 14))
    build_site(folder)
    photo = read_index(folder).photos[0]
    found = panels((folder / "site" / photo_url(photo.sha256)).read_text())
    for name, panel in found.items():
        attribution = read_explanation(folder, photo.sha256, name).between["mixed4c"]
        [shown] = dictionary_data(panel)["between"]
        assert (shown["layer"], shown["h"], shown["w"]) == ("mixed4c", 14, 14)
        data = np.frombuffer(base64.b64decode(shown["data"]), np.int8).reshape(14, 14, 14, 14).astype(int)
        assert (np.abs(data).reshape(196, 196).max(axis=1) == 127).all()
        assert (np.sign(data) == np.sign(attribution))[np.abs(attribution) > 0.01 * np.abs(attribution).max()].all()
        assert re.search(r'<figure class="between" data-lower="mixed4c">.*?<canvas class="heat" width="14" height="14">',
                         panel, re.S)
