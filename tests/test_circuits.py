"""Circuits (expanded weights): checked by algebra, independent of the gradient method, on the stand-in."""

import numpy as np
import pytest
import tensorflow as tf

from atlas.model.circuits import INPUT, channel_units, conv_kernel, edge_source, expanded_weights, top_edges

TOL = 1e-5  # float32 rounding of sums of a few hundred products of weights of order 0.1-1


def _close(got: np.ndarray, want: np.ndarray) -> None:
    scale = max(float(np.abs(want).max()), 1e-12)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= TOL * scale


def test_one_by_one_unit_reading_its_block_input_equals_its_kernel(small_model):
    for layer in ("mixed3b_1x1_pre_relu", "mixed4c_3x3_bottleneck_pre_relu"):
        weights = expanded_weights(small_model, layer)
        assert weights.source.window == 1
        _close(weights.kernels, conv_kernel(small_model, layer).transpose(3, 2, 0, 1))


def test_three_and_five_unit_is_its_kernel_composed_with_its_bottleneck(small_model):
    for block, k in (("mixed3b", "3x3"), ("mixed4d", "5x5")):
        weights = expanded_weights(small_model, f"{block}_{k}_pre_relu", [0, 2, 3])
        kernel = conv_kernel(small_model, f"{block}_{k}_pre_relu")
        bottleneck = conv_kernel(small_model, f"{block}_{k}_bottleneck_pre_relu")[0, 0]
        want = np.einsum("yxbc,ib->ciyx", kernel.astype(np.float64), bottleneck)[[0, 2, 3]]
        assert weights.source.window == kernel.shape[0]
        _close(weights.kernels, want.astype(np.float32))


def test_pool_reduce_unit_spreads_its_kernel_evenly_over_the_pool_window(small_model):
    weights = expanded_weights(small_model, "mixed4b_pool_reduce_pre_relu")
    kernel = conv_kernel(small_model, "mixed4b_pool_reduce_pre_relu")[0, 0].T  # [out, in]
    assert weights.source.window == 3
    _close(weights.kernels, np.broadcast_to(kernel[:, :, None, None] / 9, weights.kernels.shape))


def test_direct_weights_are_the_layers_own_kernel(small_model):
    for layer in ("conv2d0_pre_relu", "mixed4a_5x5_pre_relu", "mixed3a_pool_reduce_pre_relu"):
        weights = expanded_weights(small_model, layer, kind="direct")
        _close(weights.kernels, conv_kernel(small_model, layer).transpose(3, 2, 0, 1))


def _impulse_map(model, layer: str, channels: list[int]) -> tuple[np.ndarray, object]:
    """The linear map from the source window to `channels`' centre units, built by pushing one unit impulse per
    source position and channel through the linearised network (forward only) and subtracting the biases."""
    source = edge_source(model, layer)
    forward = model.subgraph_fn(source.node, (model.layer(layer).name,), linear=True)
    n, w, cs = source.size, source.window, len(source.units)
    impulses = np.zeros((cs * w * w + 1, n, n, cs), np.float32)  # the last one is all zero: the bias
    for i, (s, y, x) in enumerate(np.ndindex(cs, w, w)):
        impulses[i, source.start + y, source.start + x, s] = 1.0
    out = forward(tf.constant(impulses))[0].numpy()[:, source.centre, source.centre, :]
    response = (out[:-1] - out[-1]).reshape(cs, w, w, -1)
    return response.transpose(3, 0, 1, 2)[channels], source


@pytest.mark.parametrize("layer", ["conv2d1_pre_relu", "mixed3a_5x5_pre_relu", "mixed4a_3x3_pre_relu",
                                   "mixed5a_pool_reduce_pre_relu", "head0_bottleneck_pre_relu"])
def test_expanded_weights_across_pools_and_lrn_equal_the_brute_force_linear_map(small_model, layer):
    channels = [0, 1]
    want, source = _impulse_map(small_model, layer, channels)
    got = expanded_weights(small_model, layer, channels)
    assert got.source == source
    _close(got.kernels, want)
    # nothing is cut: the receptive field is the window, and its border is reached
    assert np.abs(got.kernels[:, :, [0, -1], :]).max() > 0 and np.abs(got.kernels[:, :, :, [0, -1]]).max() > 0


def test_linear_lrn_is_lrns_jacobian_at_zero(small_model):
    node = next(n for n in small_model.graph_def.node if n.op == "LRN")
    x = tf.zeros([1, 3, 3, 8])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.nn.local_response_normalization(x, depth_radius=node.attr["depth_radius"].i,
                                               bias=node.attr["bias"].f, alpha=node.attr["alpha"].f,
                                               beta=node.attr["beta"].f)[0, 1, 1, 2]
    linear = small_model.subgraph_fn(node.input[0], (node.name,), linear=True)(x + 1.0)[0].numpy()
    assert np.isclose(float(tape.gradient(y, x)[0, 1, 1, 2]), node.attr["bias"].f ** -node.attr["beta"].f)
    assert np.allclose(linear, node.attr["bias"].f ** -node.attr["beta"].f)


def test_sources_are_named_as_catalogued_units(small_model):
    units = channel_units(small_model, "mixed3b")
    widths = [small_model.layer(f"mixed3b_{b}_pre_relu").channels for b in ("1x1", "3x3", "5x5", "pool_reduce")]
    assert len(units) == sum(widths)
    assert units[widths[0]] == ("mixed3b_3x3_pre_relu", 0) and units[-1] == ("mixed3b_pool_reduce_pre_relu",
                                                                             widths[3] - 1)
    assert edge_source(small_model, "mixed4a_5x5_pre_relu").node == "mixed3b"  # skips the bottleneck and pool
    assert edge_source(small_model, "conv2d1_pre_relu").node == "conv2d0_pre_relu"  # across LRN and pool
    assert edge_source(small_model, "conv2d0_pre_relu").units == ((INPUT, 0), (INPUT, 1), (INPUT, 2))
    assert edge_source(small_model, "mixed3b_3x3_pre_relu", "direct").layers == ["mixed3b_3x3_bottleneck_pre_relu"]


def test_batching_does_not_change_the_weights(small_model):
    alone = expanded_weights(small_model, "mixed4a_5x5_pre_relu", [3], batch_size=1).kernels
    batched = expanded_weights(small_model, "mixed4a_5x5_pre_relu", [1, 3, 5], batch_size=3).kernels[1:2]
    _close(batched, alone)


def test_top_edges_split_by_sign_and_rank_by_norm():
    norms = np.array([[1.0, 5.0, 3.0, 2.0, 4.0]])
    sums = np.array([[1.0, -1.0, 2.0, -0.5, 0.0]])
    assert top_edges(norms, sums, 2).tolist() == [[2, 0, 1, 3]]
    assert top_edges(norms, sums, 3).tolist() == [[2, 0, -1, 1, 3, -1]]


def test_an_output_edge_is_the_same_kernel_as_the_later_units_input_edge(small_model):
    from atlas.model.circuits import output_weights

    outputs = dict(output_weights(small_model, "mixed4a_3x3_pre_relu", 2))
    assert set(outputs) == {f"mixed4b_{b}_pre_relu" for b in
                            ("1x1", "3x3_bottleneck", "3x3", "5x5_bottleneck", "5x5", "pool_reduce")} \
        | {"head0_bottleneck_pre_relu"}
    later = expanded_weights(small_model, "mixed4b_5x5_pre_relu", [1, 4])
    s = later.source.units.index(("mixed4a_3x3_pre_relu", 2))
    _close(outputs["mixed4b_5x5_pre_relu"][[1, 4]], later.kernels[:, s])


def test_weights_cli_table_json_and_one_line_errors(capsys):
    import json

    from atlas.cli import main

    assert main(["weights", "--model", "synthetic:0.125", "--layer", "mixed3b_3x3_pre_relu", "--channel", "5",
                 "--top", "3", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["inputs"]) <= 6 and len(data["outputs"]) <= 6
    assert [e["sum"] > 0 for e in data["inputs"]] == sorted((e["sum"] > 0 for e in data["inputs"]), reverse=True)
    kernel = np.array(data["inputs"][0]["kernel"])
    assert kernel.shape == (3, 3) and np.isclose(np.linalg.norm(kernel), data["inputs"][0]["norm"], rtol=1e-5)
    assert main(["weights", "--model", "synthetic:0.125", "--layer", "conv2d0_pre_relu", "--channel", "0"]) == 0
    assert {"input:R", "input:G", "input:B"} <= set(capsys.readouterr().out.split())
    for bad in (["--layer", "mixed3b_3x3", "--channel", "5"], ["--layer", "mixed3b_3x3_pre_relu", "--channel", "999"]):
        assert main(["weights", "--model", "synthetic:0.125", *bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("atlas: error:")
