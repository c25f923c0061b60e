"""Block outputs as first-class units (issue 28 part 3): the catalogue's rule for them on the stand-in and Keras
graphs, `atlas layers` (table, JSON, CSV), sweeps that select them, the gallery that shows them as layers, and
explanations at a residual sum whose channel icons render. The sweep, the explanation and the gallery run once, on
the trained EfficientNet-Lite0's `block9_add` (a module fixture)."""

from __future__ import annotations

import csv
import io
import json
import re

import numpy as np
import pytest
import yaml
from PIL import Image

from atlas.cli import main
from atlas.errors import UserError
from atlas.images import photo_path
from atlas.model.catalogue import BlockOutput, Layer, catalogue, in_order
from atlas.run.config import select_layers
from tests.precision import PRECISION

keras = pytest.importorskip("keras")

BLOCK = "block9_add"  # a residual sum of efficientnet-lite0 (no activation after it), 112 channels
RENDER = {"size": 96, "octaves": 2, "steps": 10}  # benchmarks/test_bounds.py's BLOCK_RENDER
MIXED = ["mixed3a", "mixed3b", "mixed4a", "mixed4b", "mixed4c", "mixed4d", "mixed4e", "mixed5a", "mixed5b"]


def _last_of_its_block(layers: list[Layer], block: BlockOutput) -> None:
    """`block` follows the last conv of its own gallery section: the conv at `after` is in it, the next is not."""
    assert layers[block.after].block == block.name, block
    assert block.after + 1 == len(layers) or layers[block.after + 1].block != block.name, block


def test_the_stand_in_s_block_outputs_are_its_mixed_concats(small_model):
    """GoogLeNet's topology: its nine `mixed` concats, each right after the last conv of its block; the 59 conv
    layers are what they were, and a concat's channels are still its branches' (its explanations unchanged)."""
    assert len(small_model.layers) == 59
    assert [b.name for b in small_model.blocks] == MIXED
    assert {b.kind for b in small_model.blocks} == {"concat"}
    for block in small_model.blocks:
        _last_of_its_block(small_model.layers, block)
    ordered = [layer.name for layer in small_model.all_layers]
    assert len(ordered) == 68 and ordered.index("mixed4d") == ordered.index("mixed4d_pool_reduce_pre_relu") + 1
    assert small_model.any_layer("mixed4d") is small_model.blocks[5]
    sources = small_model.channel_sources("mixed4d")
    assert sources[0] == ("mixed4d_1x1_pre_relu", 0) and {layer for layer, _ in sources} <= {
        layer.name for layer in small_model.layers}


def _rule_model():
    """Merges that are block outputs (a residual sum read after its ReLU, a concat along channels) and merges
    that are not: a concat along rows, a sum with no conv on either branch, a sum past the global pool."""
    layers = keras.layers
    keras.utils.set_random_seed(5)
    inputs = keras.Input((None, None, 3))
    x = layers.ReLU(name="stem_relu")(layers.Conv2D(8, 3, strides=2, padding="same", name="stem_conv")(inputs))
    y = layers.Conv2D(8, 3, padding="same", name="res_conv")(x)
    x = layers.ReLU(name="res_out")(layers.Add(name="res_add")([x, y]))
    x = layers.Add(name="pool_add")([x, layers.MaxPooling2D(3, 1, padding="same", name="pool")(x)])
    a, b = (layers.Conv2D(4, 1, name=f"rows_{k}")(x) for k in "ab")
    x = layers.Conv2D(8, 3, padding="same", name="after_rows")(layers.Concatenate(axis=1, name="rows")([a, b]))
    a, b = (layers.Conv2D(4 + 2 * i, 1, name=f"mix_{k}")(x) for i, k in enumerate("ab"))
    x = layers.Concatenate(name="mix")([a, b])
    p, q = (layers.GlobalAveragePooling2D(name=f"gap_{k}")(layers.Conv2D(6, 1, name=f"head_{k}")(x)) for k in "pq")
    outputs = layers.Dense(3, activation="softmax", name="predictions")(layers.Add(name="pooled_add")([p, q]))
    return keras.Model(inputs, outputs, name="rule")


def test_the_rule_takes_spatial_merges_of_conv_branches_along_channels():
    from atlas.model.freeze import freeze_keras_model

    layers, blocks = catalogue(freeze_keras_model(_rule_model()))
    assert [(b.name, b.kind, b.channels) for b in blocks] == [("res_out", "add", 8), ("mix", "concat", 10)]
    assert re.search(r"/res_out(_1)?/Relu$", blocks[0].tensor) and re.search(r"/res_add(_1)?/Add$", blocks[0].merge)
    names = [layer.name for layer in in_order([*layers, *blocks])]
    assert names.index("res_out") == names.index("res_conv") + 1 and names.index("mix") == names.index("mix_b") + 1


def test_mobilenet_v2_s_block_outputs_are_its_residual_adds():
    """keras.applications.MobileNetV2 (weights=None, 32 px): its ten `block_N_add` sums (no activation after
    them), each right after the projection conv of its block; the conv catalogue as before."""
    from atlas.model.freeze import freeze_keras_model

    network = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3))
    layers, blocks = catalogue(freeze_keras_model(network))
    assert [b.name for b in blocks] == [f"block_{i}_add" for i in (2, 4, 5, 7, 8, 9, 11, 12, 14, 15)]
    assert all(b.kind == "add" and b.tensor == b.merge for b in blocks)
    assert [b.channels for b in blocks[:3]] == [24, 32, 32]
    for block in blocks:
        _last_of_its_block(layers, block)
        assert layers[block.after].name == block.name.replace("_add", "_project")
    assert (len(layers), sum(layer.channels for layer in layers)) == (52, 17056)


def test_layers_json_keeps_the_convs_and_gains_the_blocks_and_csv_is_the_convs(lite0, capsys, tmp_path):
    """`atlas layers --format json`: `layers` and its totals are the conv layers; `blocks` lists each block output
    with its name, channels and cumulative stride (and where it sits). CSV stays the conv layers alone. And `atlas
    dream` renders a block output."""
    assert main(["layers", "--model", lite0, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (len(data["layers"]), data["total_layers"], data["total_channels"]) == (49, 49, 21_008)
    assert [b["name"] for b in data["blocks"]] == [f"block{n}_add" for n in (2, 4, 6, 7, 9, 10, 12, 13, 14)]
    nine = data["blocks"][4]
    assert (nine["channels"], nine["cumulative_stride"], nine["op_type"]) == (112, 16, "AddV2")
    assert data["layers"][nine["after"]]["name"] == "block9_project"
    assert {"name", "channels", "cumulative_stride", "receptive_field", "depth", "index"} <= set(nine)
    assert main(["layers", "--model", lite0, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [row["name"] for row in rows] == [layer["name"] for layer in data["layers"]]
    assert main(["layers", "--model", lite0]) == 0
    table = capsys.readouterr().out.splitlines()
    row = next(line.split() for line in table if line.split()[1:2] == [BLOCK])
    assert row[:5] == ["b4", "block9_add", "block9_add", "112", "add"]
    assert table[-1].startswith("49 layers, 21,008 channels; and 9 block outputs")
    out = tmp_path / "dream.png"
    assert main(["dream", "--model", lite0, "--layer", BLOCK, "--channel", "3", "--octaves", "1", "--steps", "2",
                 "--size", "64", "-o", str(out)]) == 0
    assert Image.open(out).size == (64, 64)


def test_a_sweep_selects_block_outputs_by_keyword_name_and_pattern(small_model):
    layers, blocks = small_model.layers, small_model.blocks
    assert [b.name for b in select_layers("blocks", layers, blocks)] == MIXED
    assert select_layers("all", layers, blocks) == layers  # `all` stays the conv layers
    both = select_layers(["all", "blocks"], layers, blocks)
    assert both == small_model.all_layers and len(both) == 68
    assert [layer.name for layer in select_layers(["mixed4d", "conv2d0_pre_relu"], layers, blocks)] == [
        "conv2d0_pre_relu", "mixed4d"]
    matched = [layer.name for layer in select_layers(["mixed5b*"], layers, blocks)]
    assert matched[-1] == "mixed5b" and len(matched) == 7
    with pytest.raises(UserError, match=r"unknown layer 'mixed4z': did you mean .*mixed4d"):
        select_layers(["mixed4z"], layers, blocks)
    with pytest.raises(UserError, match="this model has no block outputs"):
        select_layers("blocks", layers, [])


@pytest.fixture(scope="module")
def block_run(lite0_frozen, tmp_path_factory):
    """`atlas run` on efficientnet-lite0: the first 8 channels of block9_add and of the conv before it, then
    chelsea explained at block9_add (its icons rendered), then the gallery."""
    from atlas.model.graph import load_model
    from atlas.pipeline import run_pipeline
    from atlas.run.config import load_config

    folder = tmp_path_factory.mktemp("blocks")
    config = {"name": "lite0", "model": "efficientnet-lite0", "layers": ["block9_project", BLOCK], "channels": 8,
              "workers": 1, "circuits": False,  # DeepDream's raw pixels, as the bounds were measured (not `auto`)
              "render": {**RENDER, "precision": PRECISION, "method": "deepdream", "display": "raw"},
              "formats": {"web": {"size": 96}, "thumb": {"size": 48}}, "output": str(folder / "out"),
              "explain": {"folder": str(photo_path("chelsea")), "layers": [BLOCK], "classes": 1, "groups": 2,
                          "top": 2, "size": 64, "between": False}}
    path = folder / "lite0.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ATLAS_CACHE_DIR", str(lite0_frozen.parent.parent))
        loaded = load_config(path)
        model = load_model(loaded.config.model_spec, loaded.config.model_preprocess)
        run_pipeline(loaded, model, build_site=False, out=lambda line: None)  # the whole site: 21,000 channel pages
    return loaded.run_folder, model


def site_pages(folder, wanted: set[str]) -> dict[str, str]:
    """The gallery's pages at `wanted` (paths from the site root), rendered as `atlas build` renders them; the
    channel pages (last) are not reached."""
    from atlas.publish.site import build_gallery, environment, pages
    from atlas.run.manifest import read_run

    gallery = build_gallery(read_run(folder))
    found = {}
    for rel, html in pages(gallery, environment(), ".."):
        if rel in wanted:
            found[rel] = html
        if len(found) == len(wanted):
            return found
    raise AssertionError(f"no pages {wanted - set(found)}")


def test_a_sweep_renders_a_block_output_and_its_renders_are_specific(block_run):
    """Each of block9_add's 8 renders raises its own channel above all 112 (rank 1) and above what the other
    renders do to it, with a lift well above zero. Measured by benchmarks/test_bounds.py --only block_outputs
    (seeds 0-9, AMD EPYC, AVX-512 + AVX512_BF16), min-median-max, float32 / bfloat16: rank-1 share, specific share
    and above-the-mean share 1.000-1.000-1.000 / 1.000-1.000-1.000 (bounds 0.75, 0.75, 0.875); the smallest lift
    6.893-7.664-9.134 / 6.699-7.807-8.578 (bound 3)."""
    from atlas.render.loop import readings
    from atlas.run.manifest import read_run

    folder, model = block_run
    run = read_run(folder)
    assert BLOCK in {b.name for b in run.blocks} and run.planned["noise"][BLOCK] == list(range(8))
    renders = sorted((r for r in run.renders if r.layer == BLOCK and r.channel < 8), key=lambda r: r.channel)
    assert [r.channel for r in renders] == list(range(8))
    assert sum(r.rank == 1 for r in renders) / 8 >= 0.75
    assert sum(bool(r.specific) for r in renders) / 8 >= 0.75
    assert min(r.lift for r in renders) > 3
    images = np.stack([np.asarray(Image.open(folder / r.image).convert("RGB")) for r in renders]).astype(np.float32)
    values = readings(model, BLOCK, images, 8, "channel")[:, :8]  # values[i, j]: channel j on render i
    others = np.where(np.eye(8, dtype=bool), np.nan, values)
    assert (np.diag(values) > np.nanmean(others, axis=0)).sum() / 8 >= 0.875


def test_the_gallery_shows_a_block_output_as_a_layer_last_in_its_block(block_run):
    from atlas.publish.site import build_gallery, channel_url, layer_url, search_index
    from atlas.run.manifest import read_run

    folder, _ = block_run
    shown = site_pages(folder, {"index.html", layer_url(BLOCK)})
    index = shown["index.html"]
    section = re.search(r'<section class="block" id="block9_add">(.*?)</section>', index, re.S).group(1)
    rows = re.findall(r'<a href="layers/([^"]+)\.html">', section)
    assert rows[-2:] == ["block9_project", BLOCK]  # after the convs of its block
    assert 'class="layer-row block-output"' in section and "block output · add" in section
    assert index.count("block output · add") == 1  # only the block output the run renders is shown
    page = shown[layer_url(BLOCK)]
    assert "block output · add" in page and "<dt>merge</dt><dd>residual sum (add)</dd>" in page
    assert all(f'href="../{channel_url(BLOCK, c)}"' in page for c in range(8))
    entries = {layer["name"]: layer for layer in search_index(build_gallery(read_run(folder)))["layers"]}
    assert entries[BLOCK]["merge"] == "add" and "kernel" not in entries[BLOCK]
    assert entries["block9_project"]["kernel"] == "1×1"


def test_explain_at_a_block_output_renders_its_channel_icons(block_run):
    """A residual sum's channels are its own catalogued units: the explanation's icons render into the run (no
    placeholder) and link to the block output's channel pages."""
    from atlas.publish.explain_view import photo_url
    from atlas.publish.site import channel_url
    from atlas.analysis.explain import shown_channels
    from atlas.run.explainfiles import read_explanation, read_index
    from atlas.run.manifest import read_run

    folder, _ = block_run
    index = read_index(folder)
    sources = index.layers[BLOCK].sources
    assert sources == [(BLOCK, c) for c in range(112)]
    rendered = {r.channel for r in read_run(folder).renders if r.layer == BLOCK}
    photo = index.photos[0]
    html = site_pages(folder, {photo_url(photo.sha256)})[photo_url(photo.sha256)]
    panel = re.split(r'<section class="explain-layer" data-panel="([^"]+)"', html)[2]
    data = json.loads(re.search(r'<script type="application/json" class="dictionary-data">(.*?)</script>', panel,
                                re.S).group(1))
    units = data["units"]
    assert len(units) >= 4 and {int(c) for c in units} <= rendered and len(rendered) > 8  # icons beyond the sweep's
    for channel, (label, href, thumb, _) in units.items():
        assert label == f"{BLOCK}:{channel}" and href == channel_url(BLOCK, int(channel))
        assert thumb and (folder / thumb).is_file()
    # every channel the pass renders icons of (the dictionary's, each class's and group's top `top`) has one on the
    # page; a placeholder is left only for the page's further channel attributions (it lists 6 a class each way)
    explanation = read_explanation(folder, photo.sha256, BLOCK)
    shown = shown_channels(explanation)
    missing = {int(c) for c in re.findall(rf'alt="{BLOCK}:(\d+) \(not rendered\)"', panel)}
    assert shown <= rendered and not missing & shown
