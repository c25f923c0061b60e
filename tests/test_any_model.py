"""Every capability on a Keras model (issue 23): `atlas run` with a config naming a `.keras` file makes a
complete gallery of it (renders, dataset examples, a map of a block output, circuits), `atlas dream` runs on it
with every method and objective, and the dry run's estimate comes from the model's own FLOPs. Offline: the model
is built here with random weights, small, so the whole file stays cheap."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

keras = pytest.importorskip("keras")
layers = keras.layers

CHANNELS = 3  # the first channels of every layer


def _bn(x, name: str):
    return layers.BatchNormalization(momentum=0.0, name=name)(x)  # momentum 0: one calibration pass sets them


def _small_cnn(width: int = 8):
    """A stem (conv, batch norm, ReLU), a residual block, a depthwise-separable block, a strided conv block and
    a head (global pooling, Dense); `width` channels wide. Its batch norms' moving statistics are those of
    random photos-like inputs (as a trained model's are of its data), their scales and shifts random."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((None, None, 3))
    x = layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.ReLU(name="stem_relu")(_bn(x, "stem_bn"))
    y = layers.Conv2D(width, 3, padding="same", name="res_conv1")(x)
    y = layers.ReLU(name="res_relu1")(_bn(y, "res_bn1"))
    y = layers.Conv2D(width, 3, padding="same", name="res_conv2")(y)
    x = layers.ReLU(name="res_out")(layers.Add(name="res_add")([x, y]))
    x = layers.DepthwiseConv2D(3, padding="same", name="sep_dw")(x)
    x = layers.ReLU(name="sep_dw_relu")(_bn(x, "sep_dw_bn"))
    x = layers.Conv2D(2 * width, 1, name="sep_pw")(x)
    x = layers.ReLU(name="sep_out")(_bn(x, "sep_pw_bn"))
    x = layers.Conv2D(2 * width, 3, strides=2, padding="same", name="top_conv")(x)
    x = layers.ReLU(name="top_out")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(5, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs, name="small_cnn")
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n), np.zeros(n), np.ones(n)])
    model(_textures(rng, 8, 48) / 127.5 - 1, training=True)  # the moving statistics of inputs like photos
    return model


def _textures(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    """`count` smooth random colour textures with noise, pixels 0..255, float32 [count, size, size, 3]."""
    yy, xx = np.mgrid[0:size, 0:size]
    out = []
    for _ in range(count):
        f = rng.uniform(0.1, 0.6, (3, 2))
        base = np.stack([np.sin(xx * f[c, 0] + yy * f[c, 1] + rng.uniform(0, 6)) for c in range(3)], -1)
        out.append(np.clip(base * 80 + 128 + rng.normal(0, 20, base.shape), 0, 255))
    return np.asarray(out, np.float32)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The small CNN saved as a .keras file."""
    path = tmp_path_factory.mktemp("model") / "small_cnn.keras"
    _small_cnn().save(path)
    return path


def _photos(folder: Path, n: int = 4) -> Path:
    folder.mkdir()
    for i, pixels in enumerate(_textures(np.random.default_rng(1), n, 56)):
        Image.fromarray(pixels[:48].astype(np.uint8)).save(folder / f"photo{i}.png")
    return folder


def _config(tmp_path: Path, saved: Path, circuits: bool = True) -> Path:
    photos = _photos(tmp_path / "photos")
    config = {"name": "small_cnn", "model": {"path": str(saved), "preprocess": "tf"}, "layers": "all",
              "channels": CHANNELS, "workers": 1, "render": {"octaves": 1, "steps": 8, "size": 48, "method": "deepdream"},
              "formats": {"web": {"size": 48}, "thumb": {"size": 24}}, "output": str(tmp_path / "out"),
              "examples": {"folder": str(photos), "top": 2, "size": 48},
              "map": {"folder": str(photos), "layers": ["res_out"], "samples": 200, "per_photo": 30,
                      "grid": [3], "min_samples": 2, "neighbours": 10, "render_size": 32, "steps": 4}}
    if not circuits:
        config["circuits"] = False
    path = tmp_path / "small_cnn.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


ATTR = re.compile(r'(?:href|src)="([^"]*)"')


def _local_links_resolve(site: Path) -> int:
    """Assert every href and src of the site's pages (but inline images) is relative and names a file that
    exists; how many."""
    from urllib.parse import unquote, urlsplit

    checked = 0
    for page in sorted(site.rglob("*.html")):
        for target in ATTR.findall(page.read_text()):
            if target.startswith("data:image/"):  # inline (a circuit's kernel), nothing to fetch
                continue
            parts = urlsplit(target)
            assert not parts.scheme and not parts.netloc and not target.startswith("/"), (page, target)
            if parts.path:
                assert (page.parent / unquote(parts.path)).resolve().exists(), (page, target)
                checked += 1
    return checked


@pytest.fixture(scope="module")
def gallery(saved, tmp_path_factory):
    """`atlas run` of the small CNN's config without circuits (they have their own test): renders, examples, a
    map of the residual block's output, the gallery; the summary, the run folder and the model."""
    from atlas.model.graph import load_model
    from atlas.pipeline import run_pipeline
    from atlas.run.config import load_config

    loaded = load_config(_config(tmp_path_factory.mktemp("run"), saved, circuits=False))
    model = load_model(loaded.config.model_spec, loaded.config.model_preprocess)
    lines: list[str] = []
    summary = run_pipeline(loaded, model, out=lines.append)
    return summary, loaded.run_folder, model


def test_a_keras_file_gets_a_complete_gallery(gallery):
    """Every layer x channel is rendered, most with a positive lift (over seeds 0-9 of the config, 16-18 of the
    18 renders had a positive lift and the median lift was 0.34-0.94: the bounds are 14 and 0.15), every channel
    has its dataset examples, the map of
    `res_out` (a residual sum) has cells with crops, and the gallery has one section per catalogue block, in
    the catalogue's order, with every local link resolving."""
    from atlas.run.manifest import read_run

    summary, folder, model = gallery
    run = read_run(folder)
    assert [layer.name for layer in run.layers] == [layer.name for layer in model.layers]
    planned = {(layer.name, c) for layer in model.layers for c in range(min(CHANNELS, layer.channels))}
    rendered = {(r.layer, r.channel) for r in run.renders}
    assert rendered == planned and not summary.sweep.failed
    for render in run.renders:
        assert (folder / render.image).is_file()
    lifts = sorted(r.lift for r in run.renders)
    assert sum(lift > 0 for lift in lifts) >= 14 and lifts[len(lifts) // 2] > 0.15
    assert summary.examples.processed == 4
    every = {(layer.name, c) for layer in model.layers for c in range(layer.channels)}
    assert {key for key, found in run.examples.items() if len(found) == 2} == every
    for layer in model.layers:  # each patch is the receptive field of its position, clipped to the 56 x 48 photo
        for example in run.examples[(layer.name, 0)]:
            x0, y0, x1, y1 = example.box
            assert 0 <= x0 < x1 <= 56 and 0 <= y0 < y1 <= 48
            assert max(x1 - x0, y1 - y0) <= layer.receptive_field + 1
            assert max(x1 - x0, y1 - y0) >= min(layer.receptive_field, 48) // 2
            assert (folder / example.crop).is_file()
    cells = json.loads((folder / "maps" / "res_out" / "cells.json").read_text())
    assert cells["layer"] == "res_out" and cells["cells"]
    assert all((folder / c["render"]).is_file() for c in cells["cells"])
    assert all((folder / p["crop"]).is_file() for c in cells["cells"] for p in c["photos"])
    site = folder / "site"
    index = (site / "index.html").read_text()
    blocks = list(dict.fromkeys(layer.block for layer in model.layers))
    assert blocks == ["stem", "res_out", "sep", "top"]
    assert re.findall(r"<h2[^>]*>\s*([^<\s]+)", index)[:len(blocks)] == blocks
    for layer in model.layers:
        assert (site / "layers" / f"{layer.name}.html").is_file()
        assert (site / "channels" / layer.name / "0000.html").is_file()
    assert (site / "maps" / "res_out.html").is_file()
    assert _local_links_resolve(site) > 50


def test_figures_of_the_keras_run(gallery, tmp_path):
    """`atlas figure RUN --sheet LAYER` and `--map BLOCK_OUTPUT` on the Keras run: PNGs of the layer's renders and
    of the residual block's map."""
    from atlas.cli import main

    _, folder, model = gallery
    layer = model.layers[-1].name
    assert main(["figure", str(folder), "--sheet", layer, "-o", str(tmp_path / "sheet.png")]) == 0
    with Image.open(tmp_path / "sheet.png") as image:
        assert image.size[0] > 32 and image.size[1] > 32
    assert main(["figure", str(folder), "--map", "res_out", "-o", str(tmp_path / "map.png")]) == 0
    with Image.open(tmp_path / "map.png") as image:
        assert image.size[0] > 32 and image.size[1] > 32


def test_the_keras_gallery_gains_circuits(gallery, tmp_path):
    """The same config with circuits on (the default), resumed in a copy of the run: nothing is rendered again,
    every layer's circuits are computed (a residual sum's sources included), the rebuilt gallery shows them with
    every link resolving, and `atlas figure RUN --circuit LAYER:CH` draws one."""
    import shutil

    from atlas.model.graph import load_model
    from atlas.pipeline import run_pipeline
    from atlas.run.config import load_config

    _, folder, model = gallery
    config = yaml.safe_load((folder.parent.parent / "small_cnn.yaml").read_text())
    shutil.copytree(folder, tmp_path / "out" / folder.name)
    config.pop("circuits")
    config["output"] = str(tmp_path / "out")
    (tmp_path / "small_cnn.yaml").write_text(yaml.safe_dump(config))
    loaded = load_config(tmp_path / "small_cnn.yaml")
    summary = run_pipeline(loaded, load_model(loaded.config.model_spec, loaded.config.model_preprocess),
                           out=lambda line: None)
    assert summary.sweep.done == 0
    assert set(summary.circuits.computed) == {layer.name for layer in model.layers}
    site = loaded.run_folder / "site"
    assert _local_links_resolve(site) > 50
    assert (site / "circuits").is_dir() and any((site / "circuits").iterdir())
    assert "circuit" in (site / "channels" / "sep_pw" / "0000.html").read_text().lower()
    from atlas.cli import main

    assert main(["figure", str(loaded.run_folder), "--circuit", "sep_pw:0", "-o", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_dream_on_a_keras_file_with_every_method_and_objective(saved, tmp_path, capsys):
    """`atlas dream --model FILE.keras --preprocess tf`: DeepDream and Fourier from noise, a photo, the neuron
    objective and facets, each writing one PNG per channel (and facet) and a metrics line per image."""
    from atlas.cli import main

    photo = _photos(tmp_path / "photos", 1) / "photo0.png"
    base = ["dream", "--model", str(saved), "--preprocess", "tf", "--layer", "sep_pw", "--size", "32",
            "--octaves", "1", "--steps", "2"]
    runs = {"deepdream": ["--channel", "0-3"], "fourier": ["--channel", "0-3", "--method", "fourier"],
            "photo": ["--channel", "0-3", "--photo", str(photo), "--photo-octaves", "1", "--photo-steps", "2"],
            "neuron": ["--channel", "0-3", "--objective", "neuron"],
            "facets": ["--channel", "0-1", "--diversity", "2"]}
    for name, extra in runs.items():
        assert main(base + extra + ["-o", str(tmp_path / name)]) == 0, name
    for name in ("deepdream", "fourier", "photo", "neuron"):
        assert sorted(f.name for f in (tmp_path / name).glob("*.png")) == [f"sep_pw-000{c}.png" for c in range(4)]
    assert sorted(f.name for f in (tmp_path / "facets").glob("*.png")) == [
        f"sep_pw-000{c}-facet{k}.png" for c in range(2) for k in range(2)]
    assert capsys.readouterr().out.count("lift") == 4 * 4 + 4
    assert main(["dream", "--model", str(saved), "--layer", "sep_pw", "--channel", "0"]) == 2  # no --preprocess


def test_the_dry_run_estimates_a_keras_config_from_its_own_work(saved, tmp_path, capsys):
    """`atlas sweep CONFIG --dry-run` on the Keras config: every layer with its step FLOPs, counted from the
    model's own graph (depthwise convs included), and a measured step; it writes nothing. A model twice as wide
    does about four times the work at a layer between widened ones."""
    from atlas.cli import main
    from atlas.model.graph import load_model
    from atlas.run.estimate import layer_step_flops

    config = _config(tmp_path, saved)
    assert main(["sweep", str(config), "--dry-run"]) == 0
    out = capsys.readouterr().out
    model = load_model(str(saved), "tf")
    for layer in model.layers:
        found = re.search(rf"^{layer.name}\s+{CHANNELS}\s+([\d.]+)\s+[\d.]+ms", out, re.M)
        assert found, (layer.name, out)
        assert float(found[1]) == pytest.approx(layer_step_flops(model, layer.name) / 1e9, abs=0.001)
    assert "18 renders in this config" in out and "map: about" in out
    from atlas.render.devices import discover_devices
    from atlas.render.settings import BatchFit, auto_batch_size

    first = BatchFit(auto_batch_size(224 * 224, discover_devices()[0], model.work)).size("", 48 * 48)
    assert f"batches of {first} images of 48 px (automatic: the model's forward pass is {model.work:g}x " in out
    assert re.search(rf"to do in \d+ batches of up to {first};", out)  # the plan's batches are the same size
    assert not (tmp_path / "out" / "small_cnn").exists()
    flops = [layer_step_flops(model, layer.name) for layer in model.layers]
    assert all(a < b for a, b in zip(flops, flops[1:]))  # each layer's step includes every layer below
    wide_path = tmp_path / "wide.keras"
    _small_cnn(width=16).save(wide_path)
    wide = load_model(str(wide_path), "tf")
    narrow_work, wide_work = layer_step_flops(model, "top_conv"), layer_step_flops(wide, "top_conv")
    assert 3 * narrow_work < wide_work < 4.1 * narrow_work  # the stem's 3 input channels stay: a little under 4x


def _vgg_like():
    """VGG16's first two blocks (3x3 convs of 64 and 128 channels at full and half size): about three times
    GoogLeNet's work per image, in 0.26 M weights."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    x = inputs
    for block, width in enumerate((64, 128), 1):
        for conv in (1, 2):
            x = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"block{block}_conv{conv}")(x)
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    return keras.Model(inputs, x, name="vgg_like")


def _mobilenet_like():
    """MobileNetV2's stem and first two inverted residual blocks (a strided conv, depthwise-separable convs):
    about a thirtieth of GoogLeNet's work per image."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="stem")(inputs)
    x = layers.DepthwiseConv2D(3, padding="same", activation="relu", name="block1_dw")(x)
    x = layers.Conv2D(16, 1, name="block1_project")(x)
    x = layers.Conv2D(96, 1, activation="relu", name="block2_expand")(x)
    x = layers.DepthwiseConv2D(3, strides=2, padding="same", activation="relu", name="block2_dw")(x)
    x = layers.Conv2D(24, 1, name="block2_project")(x)
    return keras.Model(inputs, x, name="mobilenet_like")


def test_heavy_models_start_with_smaller_batches_and_light_ones_with_larger(tmp_path):
    """The automatic batch size divides by the model's work per image (its full forward pass at 224 px over
    GoogLeNet's, counted from its own graph): a VGG-like model starts with fewer images per pass than GoogLeNet,
    a MobileNet-like one with more, on a CPU and on a GPU."""
    from atlas.model.flops import GOOGLENET_FLOPS, full_pass_flops
    from atlas.model.graph import load_model
    from atlas.render.devices import GIB, Device
    from atlas.render.settings import auto_batch_size

    works = {}
    for build in (_vgg_like, _mobilenet_like):
        path = tmp_path / f"{build.__name__[1:]}.keras"
        build().save(path)
        model = load_model(str(path), "caffe")
        flops = full_pass_flops(model.graph_def, [layer.tensor for layer in model.layers], model.input)
        assert model.work == pytest.approx(flops / GOOGLENET_FLOPS, rel=0.05)
        works[build.__name__] = model.work
    heavy, light = works["_vgg_like"], works["_mobilenet_like"]
    assert 2 < heavy < 4 and light < 0.1
    for device in (Device("cpu", 0, "CPU", 8 * GIB, cores=2), Device("gpu", 0, "T4", 15 * GIB, (7, 5))):
        googlenet = auto_batch_size(224 * 224, device, 1.0)  # GoogLeNet's work (test_render_settings.py)
        assert auto_batch_size(224 * 224, device, heavy) < googlenet < auto_batch_size(224 * 224, device, light)
