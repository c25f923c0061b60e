"""Keras models through the one loading path: .keras, .h5 and SavedModel files frozen once (cached under the
source's sha256), run by atlas's interpreter as Keras runs them; and the one-line errors of bad input."""

import numpy as np
import pytest

from atlas.cli import main
from atlas.errors import UserError
from atlas.model.graph import load_model
from atlas.model.preprocess import SCHEMES
from atlas.model.source import frozen_path, resolve

SIZES = (64, 96)


@pytest.fixture(scope="module")
def keras_model():
    """A tiny conv -> batch norm -> relu -> max pool -> conv network whose batch norm has moving statistics
    far from 0 and 1 (so inference mode matters); saved at a fixed 32 x 32 input size."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="r1")(x)
    x = keras.layers.MaxPooling2D(2, name="p1")(x)
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", name="c2")(x)
    model = keras.Model(inputs, x, name="tiny")
    rng = np.random.default_rng(0)
    bn = model.get_layer("bn1")
    gamma, beta, mean, var = bn.get_weights()
    bn.set_weights([rng.uniform(0.5, 2, gamma.shape), rng.normal(0, 1, beta.shape), rng.normal(0, 2, mean.shape),
                    rng.uniform(0.3, 3, var.shape)])
    return model


@pytest.fixture(scope="module")
def saved(keras_model, tmp_path_factory):
    """The model as a .keras file, a .h5 file and a SavedModel folder."""
    folder = tmp_path_factory.mktemp("saved")
    keras_model.save(folder / "tiny.keras")
    keras_model.save(folder / "tiny.h5")
    keras_model.export(str(folder / "tiny_savedmodel"), verbose=False)
    return {"keras": folder / "tiny.keras", "h5": folder / "tiny.h5", "savedmodel": folder / "tiny_savedmodel"}


@pytest.fixture(scope="module")
def any_size(keras_model):
    """The same layers (the same weights) on an input of any height and width: Keras's own forward pass at
    sizes other than the saved one."""
    import keras

    inputs = keras.Input((None, None, 3))
    x = inputs
    for layer in keras_model.layers[1:]:
        x = layer(x)
    return keras.Model(inputs, x)


@pytest.mark.parametrize("kind", ["keras", "h5", "savedmodel"])
def test_each_format_loads_caches_and_runs_as_keras_does(kind, saved, any_size, monkeypatch):
    """The interpreter's output at the last conv equals Keras's own forward pass (inference mode) on the same
    pixels after the declared preprocessing, at two sizes other than the saved 32; the second load reads the
    cached frozen graph (no freezing) and gives the same sha256."""
    from atlas.model import source

    model = load_model(str(saved[kind]), "torch")
    assert model.preprocess == SCHEMES["torch"]
    assert [layer.channels for layer in model.layers] == [8, 6]
    assert model.input == "input"
    cached = frozen_path(resolve(str(saved[kind]), SCHEMES["torch"]).source_sha256)
    assert cached.is_file()

    def no_freezing(path):
        raise AssertionError(f"{path} was frozen again")

    monkeypatch.setattr(source, "_freeze_keras_file", no_freezing)
    again = load_model(str(saved[kind]), "torch")
    assert again.sha256 == model.sha256

    output = "Identity" if "Identity" in {n.name for n in model.graph_def.node} else None
    assert output is not None
    rng = np.random.default_rng(1)
    for size in SIZES:
        pixels = rng.uniform(0, 255, (2, size, size, 3)).astype(np.float32)
        ours = model.layer_fn(output)(pixels).numpy()
        theirs = np.asarray(any_size(SCHEMES["torch"].apply(pixels), training=False))
        assert ours.shape == theirs.shape == (2, size // 4, size // 4, 6)
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())


def test_two_preprocessings_of_one_file_share_weights_not_renders(saved):
    """Same weights (sha256), different render identity: renders of one preprocessing are never reused by
    another."""
    caffe = load_model(str(saved["keras"]), "caffe")
    tf_ = load_model(str(saved["keras"]), "tf")
    assert caffe.sha256 == tf_.sha256
    assert caffe.render_key != tf_.render_key
    assert load_model(str(saved["keras"]), "mean=117").render_key == caffe.sha256  # GoogLeNet's adds nothing


def test_freeze_keras_model_has_a_free_input_and_folded_batch_norm(keras_model):
    from atlas.model.freeze import freeze_keras_model

    graph = freeze_keras_model(keras_model)
    ops = {node.op for node in graph.node}
    placeholder = next(node for node in graph.node if node.op == "Placeholder")
    assert placeholder.name == "input"
    assert [d.size for d in placeholder.attr["shape"].shape.dim] == [-1, -1, -1, 3]
    assert {"Conv2D", "BiasAdd", "Relu", "MaxPool"} <= ops
    assert not ops & {"ReadVariableOp", "VarHandleOp", "Rsqrt", "NoOp"}  # variables frozen, constants folded


def test_a_flatten_dense_head_keeps_working_at_the_native_size():
    """A fixed-size head (Flatten -> Dense) still freezes: its convolutions run on any size, the head at the
    size the model was built for."""
    import keras

    from atlas.model.freeze import freeze_keras_model
    from atlas.model.graph import load_model_bytes

    keras.utils.set_random_seed(1)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(5)(x))
    import tensorflow as tf

    graph = freeze_keras_model(model)
    loaded = load_model_bytes(graph.SerializeToString(), "flatten-dense")
    assert loaded.layer_fn(loaded.layers[0].name)(np.zeros((1, 40, 40, 3), np.float32)).shape[1:3] == (40, 40)
    pixels = np.random.default_rng(2).uniform(0, 255, (1, 16, 16, 3)).astype(np.float32)
    head = tf.compat.v1.wrap_function(lambda: tf.graph_util.import_graph_def(graph, {"input": tf.constant(pixels)},
                                                                            return_elements=["Identity:0"]), [])
    np.testing.assert_allclose(head()[0].numpy(), np.asarray(model(pixels)), rtol=1e-4, atol=1e-4)


def _one_line_error(args, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_keras_file_without_preprocess_asks_for_it(saved, capsys):
    err = _one_line_error(["layers", "--model", str(saved["keras"])], capsys)
    assert "needs --preprocess" in err


def test_corrupt_missing_and_foreign_files_give_one_line(tmp_path, capsys):
    corrupt = tmp_path / "broken.keras"
    corrupt.write_bytes(b"PK\x03\x04 this is not a keras archive")
    assert "cannot load" in _one_line_error(["layers", "--model", str(corrupt), "--preprocess", "tf"], capsys)
    h5 = tmp_path / "broken.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n garbage")
    assert "cannot load" in _one_line_error(["layers", "--model", str(h5), "--preprocess", "tf"], capsys)
    missing = tmp_path / "nowhere.keras"
    assert "not found" in _one_line_error(["layers", "--model", str(missing), "--preprocess", "tf"], capsys)
    folder = tmp_path / "folder"
    folder.mkdir()
    assert "not a SavedModel" in _one_line_error(["layers", "--model", str(folder), "--preprocess", "tf"], capsys)
    assert "unknown --model" in _one_line_error(["layers", "--model", str(tmp_path / "m.tflite")], capsys)
    assert "not found" in _one_line_error(["layers", "--model", str(tmp_path / "m.onnx"), "--preprocess", "torch"],
                                          capsys)  # an ONNX file (tests/test_onnx.py) that is not there


def test_a_model_without_convolutions_is_refused(tmp_path, capsys):
    import keras

    inputs = keras.Input((8, 8, 3))
    dense = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Flatten()(inputs)))
    path = tmp_path / "dense.keras"
    dense.save(path)
    assert "has no convolution" in _one_line_error(["layers", "--model", str(path), "--preprocess", "none"], capsys)


def test_unknown_keras_application_suggests_close_names(capsys):
    err = _one_line_error(["layers", "--model", "keras:ResNet5"], capsys)
    assert "keras:ResNet50" in err


def test_keras_application_offline_fails_fast_in_one_line(monkeypatch, tmp_path, capsys):
    """keras:NAME with no route to the weights' host (the network is absent here) and nothing in Keras's download
    cache: one line, exit 2, nothing cached, and the model is never built (the check comes first)."""
    import keras
    from keras.src.backend import config

    from atlas.model import source

    problem = source.weights_route_problem()
    if problem is None:
        pytest.skip(f"this machine reaches {source.KERAS_WEIGHTS_HOST}: not offline")
    (tmp_path / "keras_home").mkdir()
    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path / "keras_home"))
    built = []
    real = keras.applications.MobileNetV2
    monkeypatch.setattr(keras.applications, "MobileNetV2", lambda *a, **k: built.append(k) or real(*a, **k))
    assert main(["layers", "--model", "keras:MobileNetV2"]) == 2
    out, err = capsys.readouterr()
    assert not out.strip() and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"cannot download the ImageNet weights of keras:MobileNetV2 ({problem})" in err and "--model" in err
    assert built == [] and not list((tmp_path / "cache").glob("frozen/*.pb"))


def test_keras_application_whose_download_fails_is_one_line(monkeypatch, tmp_path, capsys):
    """keras:NAME where a route seems open but Keras's own download fails (here every URL fetch fails): the same
    one line, exit 2, nothing cached."""
    import urllib.error

    from keras.src.backend import config
    from keras.src.utils import file_utils

    from atlas.model import source

    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path / "keras_home"))
    monkeypatch.setattr(source, "weights_route_problem", lambda: None)

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    assert main(["layers", "--model", "keras:MobileNetV2"]) == 2
    out, err = capsys.readouterr()
    assert not out.strip() and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "cannot download the ImageNet weights of keras:MobileNetV2 ([Errno -2] Name or service not known)" in err
    assert "--model" in err
    assert not list((tmp_path / "cache").glob("frozen/*.pb"))


def test_the_route_check_names_why_a_host_cannot_be_reached(monkeypatch):
    """An unresolvable host (.invalid never resolves, RFC 2606) and a closed local port each give a reason; a
    listening one gives none."""
    import socket

    for name in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    from atlas.model.source import weights_route_problem

    assert weights_route_problem("weights.invalid", 443, 2.0)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert weights_route_problem("127.0.0.1", port, 2.0)
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)
        assert weights_route_problem("127.0.0.1", listening.getsockname()[1], 2.0) is None


def test_keras_application_knows_its_preprocessing_and_loads_from_the_cache_without_keras(capsys):
    """keras:NAME with its frozen graph cached (here the stand-in's graph in its place): no Keras, no network;
    the preprocessing is the family's own unless --preprocess overrides it."""
    from atlas.model.source import application_sha256, write_synthetic

    target = frozen_path(application_sha256("ResNet50"))
    target.parent.mkdir(parents=True)
    write_synthetic(target, 0.125)
    assert resolve("keras:ResNet50").preprocess == SCHEMES["caffe"]
    assert resolve("keras:ResNet50", SCHEMES["none"]).preprocess == SCHEMES["none"]
    assert main(["layers", "--model", "keras:ResNet50"]) == 0
    assert capsys.readouterr().out.startswith("input: RGB pixels 0..255 -> caffe (BGR, mean 103.939/116.779/123.68)")
    with pytest.raises(UserError, match="unknown Keras application"):
        resolve("keras:NotAModel")
