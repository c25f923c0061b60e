"""Circuits on Keras graphs (issue 23): expanded weights through batch norm, residual sums and depthwise convs
equal a brute-force impulse map computed by Keras itself, on the linearised network (ReLU -> identity), and the
circuits pass, the gallery, the figures and `atlas weights` run over a whole small Keras model."""

import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from atlas.model.circuits import channel_units, edge_source, expanded_weights, unit_circuit
from atlas.model.graph import load_model_bytes
from atlas.model.preprocess import SCHEMES

keras = pytest.importorskip("keras")
L = keras.layers


def _randomise_batch_norms(model, seed: int) -> None:
    """Batch norms that are not the identity: scale, shift, mean and variance all matter."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.5, n), rng.normal(0, 0.5, n),
                               rng.uniform(0.5, 2.0, n)])


def _freeze(model):
    from atlas.model.freeze import freeze_keras_model

    return load_model_bytes(freeze_keras_model(model).SerializeToString(), model.name, SCHEMES["none"])


def _residual_net():
    """stem conv-BN-ReLU; a residual block (conv-BN-ReLU, conv-BN, add, ReLU); a second one; a head conv.
    Returns the Keras model and, per catalogued layer, its linearised path from its expanded source (Keras's own
    layers, ReLU taken as the identity) and the name of that source."""
    keras.utils.set_random_seed(3)
    ls = SimpleNamespace(
        stem=L.Conv2D(4, 3, padding="same", use_bias=False, name="stem"), stem_bn=L.BatchNormalization(name="stem_bn"),
        a1=L.Conv2D(4, 3, padding="same", name="b1_a"), a1_bn=L.BatchNormalization(name="b1_a_bn"),
        b1=L.Conv2D(4, 3, padding="same", name="b1_b"), b1_bn=L.BatchNormalization(name="b1_b_bn"),
        a2=L.Conv2D(4, 1, name="b2_a"), a2_bn=L.BatchNormalization(name="b2_a_bn"),
        b2=L.Conv2D(4, 3, padding="same", name="b2_b"), b2_bn=L.BatchNormalization(name="b2_b_bn"),
        head=L.Conv2D(5, 3, padding="same", name="head"))
    inputs = keras.Input((None, None, 3))
    x = L.ReLU(name="stem_relu")(ls.stem_bn(ls.stem(inputs)))
    y = L.ReLU(name="b1_a_relu")(ls.a1_bn(ls.a1(x)))
    x = L.ReLU(name="b1_out")(L.Add(name="b1_add")([x, ls.b1_bn(ls.b1(y))]))
    y = L.ReLU(name="b2_a_relu")(ls.a2_bn(ls.a2(x)))
    x = L.ReLU(name="b2_out")(L.Add(name="b2_add")([x, ls.b2_bn(ls.b2(y))]))
    model = keras.Model(inputs, ls.head(x), name="residual")
    _randomise_batch_norms(model, 3)

    def bn(layer, t):
        return layer(t, training=False)

    paths = {"stem": (lambda s: bn(ls.stem_bn, ls.stem(s)), "input"),
             "b1_a": (lambda s: bn(ls.a1_bn, ls.a1(s)), "stem"),
             "b1_b": (lambda s: bn(ls.b1_bn, ls.b1(bn(ls.a1_bn, ls.a1(s)))), "stem"),
             "b2_a": (lambda s: bn(ls.a2_bn, ls.a2(s)), "b1_out"),
             "b2_b": (lambda s: bn(ls.b2_bn, ls.b2(bn(ls.a2_bn, ls.a2(s)))), "b1_out"),
             "head": (lambda s: ls.head(s), "b2_out")}
    return model, paths


def _inverted_residual_net():
    """MobileNet-like: stem conv-BN-ReLU6, then expand 1x1-BN-ReLU6, depthwise 3x3-BN-ReLU6, project 1x1-BN,
    residual add (no ReLU after it), and a head 1x1 conv."""
    keras.utils.set_random_seed(4)
    ls = SimpleNamespace(
        stem=L.Conv2D(4, 3, padding="same", use_bias=False, name="stem"), stem_bn=L.BatchNormalization(name="stem_bn"),
        ex=L.Conv2D(8, 1, use_bias=False, name="expand"), ex_bn=L.BatchNormalization(name="expand_bn"),
        dw=L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw"), dw_bn=L.BatchNormalization(name="dw_bn"),
        pr=L.Conv2D(4, 1, use_bias=False, name="project"), pr_bn=L.BatchNormalization(name="project_bn"),
        head=L.Conv2D(6, 1, name="head"))
    inputs = keras.Input((None, None, 3))
    x = L.ReLU(6.0, name="stem_relu")(ls.stem_bn(ls.stem(inputs)))
    y = L.ReLU(6.0, name="expand_relu")(ls.ex_bn(ls.ex(x)))
    y = L.ReLU(6.0, name="dw_relu")(ls.dw_bn(ls.dw(y)))
    x = L.Add(name="block_add")([x, ls.pr_bn(ls.pr(y))])
    model = keras.Model(inputs, ls.head(x), name="inverted")
    _randomise_batch_norms(model, 4)

    def bn(layer, t):
        return layer(t, training=False)

    def dw(s):
        return bn(ls.dw_bn, ls.dw(bn(ls.ex_bn, ls.ex(s))))

    paths = {"stem": (lambda s: bn(ls.stem_bn, ls.stem(s)), "input"),
             "expand": (lambda s: bn(ls.ex_bn, ls.ex(s)), "stem"),
             "dw": (dw, "stem"),
             "project": (lambda s: bn(ls.pr_bn, ls.pr(dw(s))), "stem"),
             "head": (lambda s: ls.head(s), "block_add")}
    return model, paths


def _brute_force(path, source, channels: int) -> np.ndarray:
    """The linear map from every position of the source map to the target's centre unit, [targets, sources,
    size, size]: one unit impulse per source position and channel through Keras's layers, minus the response
    to zero (the biases). The path is affine, so this is exact, not a finite-difference estimate."""
    n = source.size
    impulses = np.zeros((n * n * channels + 1, n, n, channels), np.float32)  # the last one: zero
    for i, (y, x, c) in enumerate(np.ndindex(n, n, channels)):
        impulses[i, y, x, c] = 1.0
    out = np.asarray(path(impulses))[:, source.centre, source.centre, :]
    return (out[:-1] - out[-1]).reshape(n, n, channels, -1).transpose(3, 2, 0, 1)


NETS = {"residual": _residual_net, "inverted": _inverted_residual_net}


@pytest.fixture(scope="module", params=list(NETS))
def net(request):
    keras_model, paths = NETS[request.param]()
    return keras_model, _freeze(keras_model), paths


def test_expanded_weights_equal_a_brute_force_impulse_map_through_keras(net):
    """Every layer, from its expanded source (the image, the stem, the previous block output), through batch
    norms, ReLU/ReLU6 as the identity, depthwise convs and residual sums: atlas's gradient equals Keras's own
    impulse map to float32 rounding, and nothing outside the W x W window reaches the target's centre."""
    _, model, paths = net
    assert [layer.name for layer in model.layers] == list(paths)
    for layer in model.layers:
        path, source_layer = paths[layer.name]
        weights = expanded_weights(model, layer.name)
        source = weights.source
        assert source.layers == [source_layer], layer.name
        if source_layer != "input":  # the image and the stem's conv are fed pre-ReLU: the same in the linear net
            expected = model.layer(source_layer).tensor if source_layer == "stem" else next(
                b.tensor for b in model.blocks if b.name == source_layer)
            assert source.node == expected
        brute = _brute_force(path, source, len(source.units))
        a, w = source.start, source.window
        inside = brute[:, :, a:a + w, a:a + w]
        scale = float(np.abs(inside).max())
        assert scale > 0
        np.testing.assert_allclose(weights.kernels, inside, rtol=0, atol=2e-6 * scale, err_msg=layer.name)
        outside = brute.copy()
        outside[:, :, a:a + w, a:a + w] = 0
        assert np.abs(outside).max() <= 1e-6 * scale, layer.name
        # the window is the receptive field: its border rows and columns are non-zero, so nothing is cut
        assert np.abs(inside[:, :, [0, -1], :]).max() > 0 and np.abs(inside[:, :, :, [0, -1]]).max() > 0


def test_receptive_windows_and_source_names(net):
    keras_model, model, _ = net
    windows = {layer.name: edge_source(model, layer).window for layer in model.layers}
    if keras_model.name == "residual":  # two 3x3 convs in block 1; 1x1 then 3x3 in block 2
        assert windows == {"stem": 3, "b1_a": 3, "b1_b": 5, "b2_a": 1, "b2_b": 3, "head": 3}
        # a residual sum's channels are its own units, read through its ReLU
        assert channel_units(model, model.tensor_name("b1_out")) == tuple(("b1_out", c) for c in range(4))
    else:
        assert windows == {"stem": 3, "expand": 1, "dw": 3, "project": 3, "head": 1}
        assert channel_units(model, model.tensor_name("block_add")) == tuple(("block_add", c) for c in range(4))


def _bn_scale(keras_model, name: str) -> np.ndarray:
    gamma, _, _, var = keras_model.get_layer(name).get_weights()
    return gamma / np.sqrt(var + keras_model.get_layer(name).epsilon)


def test_direct_weights_are_the_kernels_as_the_batch_norm_scales_them(net):
    """Direct: a layer's own kernel over the tensor its conv reads, times its batch norm's per-channel scale
    (the activation is read after batch norm); a depthwise unit reads one channel, its kernel over the others
    is zero."""
    keras_model, model, _ = net
    if keras_model.name == "residual":
        weights = expanded_weights(model, "b1_b", kind="direct")
        kernel = keras_model.get_layer("b1_b").get_weights()[0]  # [kh, kw, in, out]
        expected = kernel.transpose(3, 2, 0, 1) * _bn_scale(keras_model, "b1_b_bn")[:, None, None, None]
        assert weights.source.units == tuple(("b1_a", c) for c in range(4))
    else:
        weights = expanded_weights(model, "dw", kind="direct")
        kernel = keras_model.get_layer("dw").get_weights()[0][:, :, :, 0]  # [kh, kw, channels], multiplier 1
        expected = np.zeros((8, 8, 3, 3), np.float32)
        for c in range(8):
            expected[c, c] = kernel[:, :, c] * _bn_scale(keras_model, "dw_bn")[c]
        assert weights.source.units == tuple(("expand", c) for c in range(8))
    np.testing.assert_allclose(weights.kernels, expected, rtol=0, atol=1e-6 * float(np.abs(expected).max()))


@pytest.fixture(scope="module")
def small():
    """test_keras_graphs' small model: pad, strided stem, inverted residual block with swish and a
    squeeze-and-excitation gate, an inception-style concat with a sigmoid branch, a head."""
    from tests.test_keras_graphs import _small_model

    keras_model = _small_model()
    return keras_model, _freeze(keras_model)


def test_every_layer_of_a_keras_model_has_sources_named_as_units(small):
    """Sources are named through Pad, batch norm, swish's IdentityN and Mul, the gate (by its spatial input),
    a global mean, Sigmoid and concats; the expanded source stops at the previous block output."""
    _, model = small
    expanded = {layer.name: edge_source(model, layer).layers for layer in model.layers}
    assert expanded == {"stem_conv": ["input"], "res_expand": ["stem_conv"], "res_dw": ["stem_conv"],
                        "res_se_reduce": ["stem_conv"], "res_se_expand": ["stem_conv"], "res_project": ["stem_conv"],
                        "mix_1x1": ["res_out"], "mix_3x3": ["res_out"], "mix_pool_proj": ["res_out"],
                        "head_conv": ["mix_1x1", "mix_3x3", "mix_pool_proj"]}
    direct = {layer.name: edge_source(model, layer, "direct").layers for layer in model.layers}
    assert direct["stem_conv"] == ["input"]  # through the explicit Pad
    assert direct["res_se_reduce"] == ["res_dw"]  # through the global mean and the swish
    assert direct["res_project"] == ["res_dw"]  # the gate's channels are the depthwise conv's, not the SE's
    assert direct["mix_pool_proj"] == ["res_out"]  # through the max-pool, to the residual sum


def test_the_pass_writes_circuits_the_gallery_figures_and_cli_show(small, tmp_path, capsys):
    from atlas.analysis.circuits import run_circuits
    from atlas.cli import main
    from atlas.publish.site import build_site
    from atlas.run.circuits import read_circuits
    from atlas.run.plans import CircuitsPlan
    from tests.fakerun import make_fake_run

    keras_model, model = small
    folder = make_fake_run(tmp_path / "run", layers=model.layers, fraction=1.0, size=32, thumb=16, photos=(),
                           spec="small.keras")
    fake = replace(model, sha256="0" * 64)  # the fake run records this sha256
    summary = run_circuits(CircuitsPlan(top=3), folder, fake, progress=False)
    assert summary.computed == [layer.name for layer in model.layers]
    circuits = read_circuits(folder, "0" * 64)
    live = unit_circuit(model, "res_dw", 5, top=3)
    stored = circuits.inputs("res_dw", 5)
    assert [(e.layer, e.channel) for e in stored] == [(e.layer, e.channel) for e in live.inputs]
    assert all(np.allclose(s.kernel, e.kernel, atol=1e-6) for s, e in zip(stored, live.inputs))
    assert {e.layer for e in circuits.outputs("stem_conv", 0)} <= {"res_expand", "res_dw", "res_se_reduce",
                                                                    "res_se_expand", "res_project"}
    assert {e.layer for e in circuits.inputs("mix_3x3", 1)} == {"res_out"}

    build_site(folder)
    page = (folder / "site" / "channels" / "mix_3x3" / "0001.html").read_text()
    assert 'class="circuit"' in page and "res_out:" in page and "<code>res_out</code>" in page
    assert "not rendered yet" not in page  # a residual sum's units have no render: no placeholder either
    assert (folder / "site" / "circuits" / "res_out.png").is_file()  # the block-to-block matrix of res_out
    capsys.readouterr()
    assert main(["figure", str(folder), "--circuit", "mix_3x3:1", "--dpi", "30", "-o", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 0 and "missing" not in capsys.readouterr().err

    path = tmp_path / "small.keras"
    keras_model.save(path)
    capsys.readouterr()
    assert main(["weights", "--model", str(path), "--preprocess", "none", "--layer", "res_project", "--channel", "2",
                 "--top", "2", "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert {e["layer"] for e in shown["inputs"]} == {"stem_conv"}
    assert {e["layer"] for e in shown["outputs"]} == set()  # read only through its block output, res_out
