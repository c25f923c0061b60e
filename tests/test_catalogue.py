import pytest

from atlas.errors import UserError
from atlas.model.catalogue import build_catalogue
from atlas.model.source import read_graph_bytes, resolve
from atlas.model.synthetic import build_graph_def


@pytest.mark.fullsize
def test_full_width_catalogue_matches_inception5h(full_model):
    layers = full_model.layers
    assert len(layers) == 59
    assert sum(layer.channels for layer in layers) == 7548
    assert (layers[0].name, layers[0].channels, layers[0].kernel, layers[0].stride) == ("conv2d0_pre_relu", 64, 7, 2)
    names = [layer.name for layer in layers]
    assert names[:4] == ["conv2d0_pre_relu", "conv2d1_pre_relu", "conv2d2_pre_relu", "mixed3a_1x1_pre_relu"]
    assert names.index("mixed3b_pool_reduce_pre_relu") < names.index("mixed4a_1x1_pre_relu")
    assert names.index("mixed4e_pool_reduce_pre_relu") < names.index("mixed5a_1x1_pre_relu")
    heads = {layer.name: layer for layer in layers if layer.block.startswith("head")}
    assert set(heads) == {"head0_bottleneck_pre_relu", "head1_bottleneck_pre_relu"}
    assert all(layer.channels == 128 for layer in heads.values())
    bd = full_model.layer("mixed4d_3x3_bottleneck_pre_relu")
    assert (bd.channels, bd.in_channels, bd.block, bd.kernel) == (144, 512, "mixed4d", 1)
    assert [layer.index for layer in layers] == list(range(59))
    blocks = list(dict.fromkeys(layer.block for layer in layers))
    assert blocks == ["stem", "mixed3a", "mixed3b", "mixed4a", "mixed4b", "mixed4c", "mixed4d", "mixed4e",
                      "mixed5a", "mixed5b", "head0", "head1"]


@pytest.mark.fullsize
def test_receptive_fields_checked_by_hand(full_model):
    # conv2d0 7x7/2: rf 7, jump 2; maxpool0 3x3/2 -> rf 11, jump 4; conv2d1 1x1 keeps 11;
    # conv2d2 3x3 -> 11 + 2*4 = 19; maxpool1 3x3/2 -> 27, jump 8; mixed3a_1x1 keeps 27;
    # mixed3a_3x3: bottleneck 27 then 3x3 -> 27 + 2*8 = 43; mixed3a_5x5 -> 27 + 4*8 = 59.
    expected = {"conv2d0_pre_relu": (7, 2), "conv2d1_pre_relu": (11, 4), "conv2d2_pre_relu": (19, 4),
                "mixed3a_1x1_pre_relu": (27, 8), "mixed3a_3x3_pre_relu": (43, 8),
                "mixed3a_5x5_pre_relu": (59, 8), "mixed3a_pool_reduce_pre_relu": (43, 8)}
    for name, (rf, jump) in expected.items():
        layer = full_model.layer(name)
        assert (layer.receptive_field, layer.cumulative_stride) == (rf, jump), name
    assert full_model.layer("mixed5b_1x1_pre_relu").cumulative_stride == 32
    assert full_model.layer("head0_bottleneck_pre_relu").cumulative_stride == 48


def test_scaled_stand_in_keeps_the_layers(small_model):
    assert len(small_model.layers) == 59
    assert small_model.channels < 7548 / 4
    assert small_model.layers[0].channels == 8


def test_stand_in_is_deterministic():
    assert read_graph_bytes(resolve("synthetic:0.125")) == read_graph_bytes(resolve("synthetic:0.125"))
    assert build_graph_def(0.125, seed=3).SerializeToString() != build_graph_def(0.125, seed=4).SerializeToString()


def test_unknown_layer_suggests_close_names(small_model):
    with pytest.raises(UserError, match="did you mean mixed4d_3x3_bottleneck_pre_relu"):
        small_model.layer("mixed4d_3x3_botleneck_pre_relu")


def test_graph_without_conv_is_refused():
    graph = build_graph_def(0.125)
    kept = [n for n in graph.node if n.name in ("input",)]
    del graph.node[:]
    graph.node.extend(kept)
    with pytest.raises(UserError, match="no Conv2D"):
        build_catalogue(graph)


def test_filter_behind_identity_gives_the_same_catalogue():
    """A frozen graph may read a filter through an Identity; kernel and receptive field must not change."""
    graph = build_graph_def(0.125)
    plain = build_catalogue(graph)
    conv = next(n for n in graph.node if n.name == "conv2d2_pre_relu/conv")
    identity = graph.node.add(name="conv2d2_w/read", op="Identity", input=["conv2d2_w"])
    identity.attr["T"].type = 1  # DT_FLOAT
    conv.input[1] = "conv2d2_w/read"
    assert build_catalogue(graph) == plain


def test_stand_in_bytes_are_identical_across_processes():
    """Its sha256 identifies the weights in manifests, so it must not depend on the process's hash seed."""
    import os
    import subprocess
    import sys

    code = ("import hashlib; from atlas.model.source import read_graph_bytes, resolve; "
            "print(hashlib.sha256(read_graph_bytes(resolve('synthetic:0.125'))).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(digests) == 1
