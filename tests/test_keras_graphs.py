"""Keras models frozen into GraphDefs: the interpreter runs them as Keras does, and the catalogue reads their
layers and blocks from the graph (issue 23). Offline: every model is built here with random weights."""

import numpy as np
import pytest

from atlas.errors import UserError
from atlas.model.catalogue import catalogue
from atlas.model.graph import load_model_bytes
from atlas.model.preprocess import SCHEMES
from atlas.model.synthetic import build_graph_def

keras = pytest.importorskip("keras")
layers = keras.layers

SIZES = ((37, 45), (64, 64))  # two input sizes: odd and even, so SAME and explicit padding both matter

# Each catalogued conv of `_small_model` -> the Keras layer whose output is its activation (after bias and
# batch norm, before the non-linearity).
ACTIVATIONS = {"stem_conv": "stem_bn", "res_expand": "res_expand_bn", "res_dw": "res_dw_bn",
               "res_se_reduce": "res_se_reduce", "res_se_expand": "res_se_expand", "res_project": "res_project_bn",
               "mix_1x1": "mix_1x1", "mix_3x3": "mix_3x3_bn", "mix_pool_proj": "mix_pool_proj",
               "head_conv": "head_conv"}
BLOCKS = {"stem_conv": "stem", "res_expand": "res_out", "res_dw": "res_out", "res_se_reduce": "res_out",
          "res_se_expand": "res_out", "res_project": "res_out", "mix_1x1": "mix", "mix_3x3": "mix",
          "mix_pool_proj": "mix", "head_conv": "head"}


def _bn(x, name: str):
    return layers.BatchNormalization(name=name)(x)


def _small_model():
    """A stem (explicit pad, strided conv, batch norm), an inverted residual block (ReLU6, depthwise conv,
    swish, squeeze-and-excitation gate, residual add), an inception-style block (concat) and a head."""
    keras.utils.set_random_seed(7)
    inputs = keras.Input((None, None, 3))
    x = layers.ZeroPadding2D(((1, 1), (1, 1)), name="stem_pad")(inputs)
    x = layers.Conv2D(8, 3, strides=2, use_bias=False, name="stem_conv")(x)
    x = layers.ReLU(name="stem_relu")(_bn(x, "stem_bn"))
    y = layers.Conv2D(16, 1, name="res_expand")(x)
    y = layers.ReLU(6.0, name="res_expand_relu")(_bn(y, "res_expand_bn"))
    y = layers.DepthwiseConv2D(3, padding="same", name="res_dw")(y)
    y = layers.Activation("swish", name="res_dw_swish")(_bn(y, "res_dw_bn"))
    s = layers.GlobalAveragePooling2D(keepdims=True, name="res_se_pool")(y)
    s = layers.ReLU(name="res_se_relu")(layers.Conv2D(4, 1, name="res_se_reduce")(s))
    s = layers.Activation("sigmoid", name="res_se_sigmoid")(layers.Conv2D(16, 1, name="res_se_expand")(s))
    y = layers.Multiply(name="res_se_gate")([y, s])
    y = _bn(layers.Conv2D(8, 1, name="res_project")(y), "res_project_bn")
    x = layers.ReLU(name="res_out")(layers.Add(name="res_add")([x, y]))
    a = layers.ReLU(name="mix_1x1_relu")(layers.Conv2D(4, 1, name="mix_1x1")(x))
    b = layers.ReLU(name="mix_3x3_relu")(_bn(layers.Conv2D(6, 3, padding="same", name="mix_3x3")(x), "mix_3x3_bn"))
    c = layers.MaxPooling2D(3, 1, padding="same", name="mix_pool")(x)
    c = layers.Activation("sigmoid", name="mix_pool_sigmoid")(layers.Conv2D(2, 1, name="mix_pool_proj")(c))
    x = layers.Concatenate(name="mix")([a, b, c])
    x = layers.ReLU(name="head_relu")(layers.Conv2D(10, 3, strides=2, name="head_conv")(x))
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(5, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs, name="small")
    rng = np.random.default_rng(0)
    for layer in model.layers:  # batch norms that are not the identity
        if isinstance(layer, layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.5, n), rng.normal(0, 0.5, n),
                               rng.uniform(0.5, 2.0, n)])
    return model


@pytest.fixture(scope="module")
def small():
    from atlas.model.freeze import freeze_keras_model

    keras_model = _small_model()
    # compare raw inputs: Keras's model has no preprocessing of its own
    model = load_model_bytes(freeze_keras_model(keras_model).SerializeToString(), "small", SCHEMES["none"])
    return keras_model, model


def test_small_catalogue_reads_layers_and_blocks_from_the_graph(small):
    _, model = small
    assert [layer.name for layer in model.layers] == list(ACTIVATIONS)
    assert [layer.channels for layer in model.layers] == [8, 16, 16, 4, 16, 8, 4, 6, 2, 10]
    assert {layer.name: layer.block for layer in model.layers} == BLOCKS
    assert [(b.name, b.channels) for b in model.blocks] == [("res_out", 8), ("mix", 12)]
    dw = model.layer("res_dw")
    assert (dw.op_type, dw.in_channels, dw.kernel, dw.depth) == ("DepthwiseConv2dNative", 16, 3, 3)
    for layer in model.layers:  # the activation node is in the activation's Keras layer
        assert f"/{ACTIVATIONS[layer.name]}" in layer.tensor or layer.tensor.startswith(ACTIVATIONS[layer.name])
    # stem: pad 1 then 3x3/2 -> field 3, jump 2; res_dw 3x3 at jump 2 -> 3 + 2 * 2 = 7; mix_3x3 -> 7 + 4 = 11
    fields = {layer.name: (layer.receptive_field, layer.cumulative_stride) for layer in model.layers}
    assert (fields["stem_conv"], fields["res_dw"], fields["mix_3x3"], fields["head_conv"]) == (
        (3, 2), (7, 2), (11, 2), (15, 4))
    # the explicit pad moves the origin: stem unit (0, 0) sees pixels -1..1, centred on pixel 0
    stem = model.grids(37, 45)["stem_conv"]
    assert (stem.size, stem.jump, stem.offset) == ((19, 23), (2, 2), (0.0, 0.0))
    assert model.tensor_name("res_out") == model.blocks[0].tensor
    with pytest.raises(UserError, match="did you mean res_out"):
        model.tensor_name("res_ou")


@pytest.mark.parametrize("size", SIZES)
def test_interpreter_matches_keras_at_every_layer(small, size):
    """Every catalogued layer and block output, float32, to rounding: the interpreter's activations are
    Keras's own (batch norm in inference mode, before the non-linearity)."""
    keras_model, model = small
    names = [layer.name for layer in model.layers] + [b.name for b in model.blocks]
    points = [ACTIVATIONS.get(name, name) for name in names]
    reference = keras.Model(keras_model.inputs[0], [keras_model.get_layer(p).output for p in points])
    images = np.random.default_rng(1).uniform(-1, 1, (2, *size, 3)).astype(np.float32)
    expected = reference(images, training=False)
    got = model.layers_fn(names)(images)
    grids = model.grids(*size)
    for name, want, have in zip(names, expected, got):
        want = np.asarray(want)
        assert have.shape == want.shape, name
        np.testing.assert_allclose(have.numpy(), want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()),
                                   err_msg=name)
        assert grids[name].size == want.shape[1:3], name


def test_bfloat16_runs_the_keras_ops(small):
    """Depthwise conv, batch norm, sigmoid, pad and mean also run in bfloat16, close to float32."""
    _, model = small
    images = np.random.default_rng(2).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    full = model.layer_fn("head_conv")(images).numpy()
    half = model.layer_fn("head_conv", "bfloat16")(images).numpy()
    assert np.abs(half - full).max() < 0.1 * np.abs(full).max()


def test_flops_count_depthwise_convs(small):
    """On 32 x 32: stem 3x3/2 on the padded 34 x 34 -> 16 x 16 x 8, 1x1 expand to 16, depthwise 3x3 x 16."""
    from atlas.model.flops import forward_flops

    _, model = small
    expected = 2 * 16 * 16 * (3 * 3 * 3 * 8 + 8 * 16 + 3 * 3 * 16)
    assert forward_flops(model.graph_def, model.layer("res_dw").tensor, 32, 32, model.input) == expected


def test_unsupported_op_names_op_and_node():
    graph = build_graph_def(0.125)
    node = next(n for n in graph.node if n.name == "conv2d0")
    node.op = "Softplus"
    model = load_model_bytes(graph.SerializeToString(), "synthetic:0.125")
    with pytest.raises(UserError, match=r"op Softplus \(node conv2d0,") as raised:
        model.layer_fn("conv2d1_pre_relu")
    assert "\n" not in str(raised.value)


def test_mobilenet_v2_catalogue_counts():
    """keras.applications.MobileNetV2(weights=None): 52 conv layers (17 depthwise), 17,056 channels.
    benchmarks/keras_catalogues.py prints the other four (ResNet50, VGG16, InceptionV3, EfficientNetB0)."""
    from atlas.model.freeze import freeze_keras_model

    layers_list, blocks = catalogue(freeze_keras_model(keras.applications.MobileNetV2(weights=None)))
    assert (len(layers_list), sum(layer.channels for layer in layers_list)) == (52, 17056)
    assert sum(layer.op_type == "DepthwiseConv2dNative" for layer in layers_list) == 17
    names = [layer.name for layer in layers_list]
    assert names[:4] == ["Conv1", "expanded_conv_depthwise", "expanded_conv_project", "block_1_expand"]
    assert len(set(names)) == len(names)
    assert [b.name for b in blocks] == [f"block_{i}_add" for i in (2, 4, 5, 7, 8, 9, 11, 12, 14, 15)]
    assert [b.channels for b in blocks][:2] == [24, 32]
    assert {layer.block for layer in layers_list[:6]} == {"stem"}
    assert [layer.block for layer in layers_list[6:9]] == ["block_2_add"] * 3
