"""Circuits: the weights that connect units of one layer to units of a later one (issue 17).

Two kinds of edge per catalogued layer (the *target*):

- **direct**: the unit's own kernel over the units it reads (the tensor its convolution takes);
- **expanded**: the linear map from the previous block's output (a concat or a residual sum; in the stem, the
  previous convolution; for the first convolution, the RGB image) to the unit, through bottlenecks, pools, LRN,
  batch norms and depthwise convs in between. The source is found up the graph's dominators, so a swish or a
  squeeze-and-excitation gate (two paths from one activation) is crossed as one.

Both are computed one way: the gradient of the target's centre unit, in the linearised network
(`atlas.model.graph.LINEAR_OPS`: ReLU -> identity, max-pool -> average pool, LRN -> bias^-beta), with respect to
a zero source tensor just large enough to hold the unit's receptive field, cut to the W x W window of that
field. The linearised network is affine, so that gradient does not depend on the source values. Target
channels are batched, one source image each, each differentiating its own centre unit.

Source channels are named as catalogued units: channel k of a block output (a Concat) is channel k - offset
of the branch layer the concat order puts there; a residual sum's channels are its own (`conv2_block1_out`, k);
channels of per-channel ops (pools, LRN, ReLU, Pad, batch norm, Sigmoid, swish and gate products) are those of
the layer before them; the image's channels are `("input", 0..2)`. docs/circuits.md, "On other networks".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from atlas.model.catalogue import (
    CONCATS,
    GLOBAL_POOLS,
    STEM,
    BlockOutput,
    Layer,
    dominators,
    is_global_pool,
    live_nodes,
    relative_geometry,
    source_name,
)
from atlas.model.selection import check_channels

if TYPE_CHECKING:
    from atlas.model.graph import Model

RESHAPES = {"Reshape", "Squeeze", "ExpandDims"}  # named through only after a global pool: channels kept
KINDS = ("direct", "expanded")
INPUT = "input"  # the layer name of the image's colour channels as sources
# Ops whose output channel c is a function of their inputs' channel c alone (their other inputs constants, a
# broadcast gate or the same activation; IdentityN passes each input through): a source's channels are named
# through them.
CHANNEL_WISE = {"Relu", "Relu6", "LRN", "MaxPool", "AvgPool", "Identity", "BiasAdd", "Sigmoid", "Pad", "PadV2",
                "MirrorPad", "Mul", "Add", "AddV2", "Sub", "RealDiv", "Maximum", "Mean", "Max", "IdentityN",
                "Minimum", "LeakyRelu", "Erf", "Tanh", "Pow", "Sqrt"}
SHAPE_ONLY = {"OnesLike"}  # made from its input's shape alone (a converted average pool's count of pixels that count)
DEFAULT_BATCH = 32
EAGER_BATCHES = 4  # layers of at most this many batches run eagerly: tracing (about 1 s) would cost more


@dataclass(frozen=True)
class Source:
    """Where a layer's edges of one kind come from: a graph node, the catalogued unit of each of its channels,
    and the geometry of the window the kernels are cut from."""

    node: str
    units: tuple[tuple[str, int], ...]  # (layer, channel) of each channel of `node`
    window: int  # W: the target unit's receptive field in `node`'s grid
    size: int  # the side of the zero source tensor that holds it
    start: int  # where the W x W window starts in it (rows and columns)
    centre: int  # the target's centre position (rows and columns) on that tensor
    name: str = ""  # what a user calls `node`: a layer, a block output (`mixed4a`, `conv2_block1_out`), `input`
    sums: tuple[str, ...] = ()  # the residual sums among the source's unit layers: units of no conv layer

    @property
    def layers(self) -> list[str]:
        """The source layers, in channel order, each once."""
        return list(dict.fromkeys(layer for layer, _ in self.units))


@dataclass
class Weights:
    """One kind of edge into some channels of a layer: kernels[i, s] is target channel `channels[i]`'s W x W
    kernel over source channel s (named by `source.units[s]`)."""

    layer: str
    kind: str
    channels: list[int]
    source: Source
    kernels: np.ndarray  # [targets, sources, W, W] float32

    @property
    def norms(self) -> np.ndarray:
        """L2 norm of each kernel, [targets, sources]."""
        return np.sqrt(np.square(self.kernels.astype(np.float64)).sum(axis=(2, 3))).astype(np.float32)

    @property
    def sums(self) -> np.ndarray:
        """Sum of each kernel, [targets, sources]: positive excites, negative inhibits."""
        return self.kernels.astype(np.float64).sum(axis=(2, 3)).astype(np.float32)


def _nodes(model: Model) -> dict:
    return {n.name: n for n in model.graph_def.node}


def _catalogued(model: Model) -> dict[str, Layer]:
    """Catalogued layers by layer name, by conv op name and by activation node."""
    return {**{layer.op: layer for layer in model.layers}, **{layer.tensor: layer for layer in model.layers},
            **{layer.name: layer for layer in model.layers}}


def _residual_outputs(model: Model) -> dict[str, BlockOutput]:
    """Block outputs that are sums (a residual add), by their tensor and their merge node: their channels are
    their own units (`conv2_block1_out:5`), since every branch adds into every channel."""
    found, nodes = {}, _nodes(model)
    for block in model.blocks:
        if nodes[block.merge].op not in CONCATS:
            found.update({block.tensor: block, block.merge: block})
    return found


def _block_nodes(model: Model) -> set[str]:
    """Every block output's tensor and merge node: where an expanded source stops."""
    return {name for block in model.blocks for name in (block.tensor, block.merge)}


_GRAPH_FACTS: dict[str, tuple[dict[str, str | None], set[str]]] = {}  # model sha256 -> (dominators, live)


def _graph_facts(model: Model) -> tuple[dict[str, str | None], set[str]]:
    """The graph's immediate dominators and live nodes (read once per graph)."""
    if model.sha256 not in _GRAPH_FACTS:
        _GRAPH_FACTS[model.sha256] = (dominators(model.graph_def), live_nodes(model.graph_def))
    return _GRAPH_FACTS[model.sha256]


def _data_inputs(node) -> list[str]:
    return [source_name(ref) for ref in node.input if not ref.startswith("^")]


def channel_units(model: Model, node_name: str) -> tuple[tuple[str, int], ...]:
    """The catalogued unit (layer, channel) of every channel of a node, read through concats and per-channel
    ops (ReLU, pools, LRN, Pad, batch norm's Mul/AddV2 with constants, Sigmoid, a swish or gate Mul); a residual
    block output's channels are its own (block name, channel); the image's channels are ("input", c)."""
    units, _ = _units(model, node_name, _nodes(model), _catalogued(model), _residual_outputs(model),
                      _graph_facts(model)[1])
    return units


def _units(model: Model, name: str, nodes: dict, layers: dict[str, Layer], sums: dict[str, BlockOutput],
           live: set[str]) -> tuple[tuple[tuple[str, int], ...], bool]:
    """`channel_units` of `name`, and whether it was read through a global pool (a squeeze-and-excitation
    branch: a gate Mul names its channels by its other, spatial input)."""
    if name in layers:
        return tuple((layers[name].name, c) for c in range(layers[name].channels)), False
    if name in sums:
        return tuple((sums[name].name, c) for c in range(sums[name].channels)), False
    if name == model.input:
        return tuple((INPUT, c) for c in range(model.layers[0].in_channels)), False
    node = nodes[name]
    if node.op in SHAPE_ONLY:  # no channels of its own: an op reading it names them by its other input, as a gate's
        return (), True
    inputs = [i for i in dict.fromkeys(_data_inputs(node)) if i in live]
    if node.op in CONCATS:
        return tuple(unit for part in inputs for unit in _units(model, part, nodes, layers, sums, live)[0]), False
    if node.op in RESHAPES:  # a globally pooled [N, C] made [N, 1, 1, C] again (Keras's squeeze-and-excitation)
        units, pooled = _units(model, _data_inputs(node)[0], nodes, layers, sums, live)
        if pooled:
            return units, pooled
    if node.op not in CHANNEL_WISE or not inputs:
        raise ValueError(f"cannot name the channels of {name}: it is a {node.op}")
    parts = [_units(model, i, nodes, layers, sums, live) for i in inputs]
    units, pooled = next((part for part in parts if not part[1]), parts[0])
    return units, pooled or (node.op in GLOBAL_POOLS and is_global_pool(node, nodes))


def _conv_input(model: Model, layer: Layer) -> str:
    return _data_inputs(_nodes(model)[layer.op])[0]


def _walk_to_source(model: Model, name: str) -> str:
    """From a node, up its dominators (the nodes every path from the input to it passes through) to the first
    catalogued layer, block output, concat or the input: across batch norms, swish and gate products."""
    nodes, layers = _nodes(model), _catalogued(model)
    idom, _ = _graph_facts(model)
    stops = _block_nodes(model)
    while name not in layers and name != model.input and name not in stops and nodes[name].op not in CONCATS:
        name = idom[name]
    return name


def source_node(model: Model, layer: Layer, kind: str) -> str:
    """The node a layer's edges of `kind` start from: for `direct` the tensor its convolution reads; for
    `expanded` the previous block's output (a concat, a residual sum), skipping the convolutions of the
    layer's own block (in the stem, the previous convolution, across LRN and pools; for the first
    convolution, the image)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    if kind == "direct":
        return _conv_input(model, layer)
    layers = _catalogued(model)
    name = _walk_to_source(model, _conv_input(model, layer))
    while name in layers and layers[name].block == layer.block and layer.block != STEM:
        name = _walk_to_source(model, _conv_input(model, layers[name]))
    if name in layers:
        return layers[name].tensor
    return name


def source_label(model: Model, node: str) -> str:
    """A source node as a user names it: the layer or block output whose tensor it is, `input`, else the node."""
    if node == model.input:
        return INPUT
    names = {**{b.merge: b.name for b in model.blocks}, **{b.tensor: b.name for b in model.blocks},
             **{layer.tensor: layer.name for layer in model.layers}}
    return names.get(node, node)


def window_of(model: Model, start: str, target: str) -> tuple[int, int, int, int]:
    """(W, source side, window start, target centre index): the smallest square source map whose centre target
    unit has its whole W x W receptive field inside it (so no padding reaches it)."""
    order = model._ordered()
    rf = relative_geometry(model.graph_def, start, target, 1, order)[0]  # the field does not depend on the size
    for size in range(rf, 4 * rf + 64):
        _, out, offset, jump = relative_geometry(model.graph_def, start, target, size, order)
        if out < 1:
            continue
        centre = out // 2
        first = offset + centre * jump - (rf - 1) / 2
        if first == math.floor(first) and first >= 0 and first + rf <= size:
            return rf, size, int(first), centre
    raise ValueError(f"no source size holds the receptive field of {target} in {start}")


_SOURCES: dict[tuple[str, str, str], Source] = {}  # (model sha256, layer, kind) -> its source


def edge_source(model: Model, layer: Layer | str, kind: str = "expanded") -> Source:
    """Where `layer`'s edges of `kind` come from, with the geometry of their window (cached per graph)."""
    layer = model.layer(layer) if isinstance(layer, str) else layer
    key = (model.sha256, layer.name, kind)
    if key not in _SOURCES:
        node = source_node(model, layer, kind)
        window, size, start, centre = window_of(model, node, layer.tensor)
        units = channel_units(model, node)
        sums = {block.name for block in _residual_outputs(model).values()}
        _SOURCES[key] = Source(node=node, units=units, window=window, size=size, start=start, centre=centre,
                               name=source_label(model, node),
                               sums=tuple(dict.fromkeys(unit for unit, _ in units if unit in sums)))
    return _SOURCES[key]


class _Gradient:
    """The batched gradient of centre units of one layer w.r.t. one source tensor, traced once."""

    def __init__(self, model: Model, layer: Layer, source: Source, eager: bool = False) -> None:
        import tensorflow as tf

        forward = model.subgraph_fn(source.node, (layer.name,), linear=True)
        c, a, w = source.centre, source.start, source.window

        def grad(zeros: tf.Tensor, channels: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape() as tape:
                tape.watch(zeros)
                out = forward(zeros)[0]
                total = tf.reduce_sum(out[:, c, c, :] * tf.one_hot(channels, out.shape[-1]))  # each its own
            g = tape.gradient(total, zeros)[:, a:a + w, a:a + w, :]
            return tf.transpose(g, [0, 3, 1, 2])

        self.fn = grad if eager else tf.function(grad, input_signature=[
            tf.TensorSpec([None, source.size, source.size, len(source.units)], tf.float32),
            tf.TensorSpec([None], tf.int32)])
        self.source = source

    def __call__(self, channels: list[int]) -> np.ndarray:
        import tensorflow as tf

        zeros = tf.zeros([len(channels), self.source.size, self.source.size, len(self.source.units)])
        return self.fn(zeros, tf.constant(channels, tf.int32)).numpy()


def expanded_weights(model: Model, layer: str, channels: list[int] | None = None, kind: str = "expanded",
                     batch_size: int = DEFAULT_BATCH, progress: object = None) -> Weights:
    """The kernels of `kind` ("expanded" or "direct") into `channels` of `layer` (default: all), as numpy.

    `progress`, if given, is called with the number of channels done after each batch."""
    target = model.layer(layer)
    channels = list(range(target.channels)) if channels is None else [int(c) for c in channels]
    check_channels(channels, target.channels, target.name)
    source = edge_source(model, target, kind)
    grad = _Gradient(model, target, source, eager=len(channels) <= EAGER_BATCHES * batch_size)
    parts = []
    for i in range(0, len(channels), batch_size):
        parts.append(grad(channels[i:i + batch_size]))
        if progress:
            progress(len(parts[-1]))
    kernels = np.concatenate(parts) if parts else np.zeros((0, len(source.units), source.window, source.window),
                                                            np.float32)
    return Weights(layer=target.name, kind=kind, channels=channels, source=source, kernels=kernels)


def conv_kernel(model: Model, layer: str) -> np.ndarray:
    """A layer's own filter as stored in the graph, [kh, kw, in, out] (what the algebra checks compare with)."""
    from tensorflow.python.framework import tensor_util

    nodes = _nodes(model)
    name = _data_inputs(nodes[model.layer(layer).op])[1]
    while nodes[name].op != "Const":
        name = _data_inputs(nodes[name])[0]
    return tensor_util.MakeNdarray(nodes[name].attr["value"].tensor)


def top_edges(norms: np.ndarray, sums: np.ndarray, top: int) -> np.ndarray:
    """Per row, the indices of the `top` excitatory (sum > 0) then the `top` inhibitory (sum < 0) columns by
    norm, strongest first; -1 where a row has fewer. [rows, 2 * top] int32."""
    rows = norms.shape[0]
    out = np.full((rows, 2 * top), -1, np.int32)
    for half, mask in enumerate((sums > 0, sums < 0)):
        ranked = np.where(mask, norms, -np.inf)
        order = np.argsort(-ranked, axis=1, kind="stable")[:, :top]
        valid = np.take_along_axis(mask, order, axis=1)
        out[:, half * top:half * top + order.shape[1]] = np.where(valid, order, -1)
    return out


RGB = "RGB"


@dataclass(frozen=True)
class Edge:
    """One connection as a user sees it: the other unit, the kernel and its L2 norm and sum."""

    layer: str
    channel: int
    norm: float
    sum: float
    kernel: np.ndarray  # W x W, in the source layer's grid

    @property
    def sign(self) -> str:
        return "excites" if self.sum > 0 else "inhibits"

    @property
    def unit(self) -> str:
        """`layer:channel`, or `input:R` for the image's colour channels."""
        return f"{self.layer}:{RGB[self.channel] if self.layer == INPUT and self.channel < 3 else self.channel}"

    def to_dict(self) -> dict[str, object]:
        return {"layer": self.layer, "channel": self.channel, "norm": self.norm, "sum": self.sum,
                "kernel": self.kernel.tolist()}


@dataclass
class Circuit:
    """A unit's strongest inputs and outputs, each list excitatory edges first, then inhibitory ones."""

    layer: str
    channel: int
    kind: str
    inputs: list[Edge]
    outputs: list[Edge]

    def to_dict(self) -> dict[str, object]:
        return {"layer": self.layer, "channel": self.channel, "kind": self.kind,
                "inputs": [e.to_dict() for e in self.inputs], "outputs": [e.to_dict() for e in self.outputs]}


def ranked_edges(units: list[tuple[str, int]], kernels: list[np.ndarray] | np.ndarray, top: int) -> list[Edge]:
    """The `top` excitatory then the `top` inhibitory of the kernels (each W x W, W may differ) to or from
    `units`, by norm."""
    norms = np.array([np.sqrt(np.square(k.astype(np.float64)).sum()) for k in kernels])
    sums = np.array([k.astype(np.float64).sum() for k in kernels])
    picked = [int(i) for i in top_edges(norms[None], sums[None], top)[0] if i >= 0]
    return [Edge(units[i][0], units[i][1], float(norms[i]), float(sums[i]), kernels[i]) for i in picked]


def circuit_layers(model: Model, layers: list[str]) -> list[str]:
    """`layers` and every layer that reads one of them (directly or expanded), in catalogue order: what the
    circuits of `layers` need, their inputs and their outputs."""
    wanted = {model.layer(name).name for name in layers}
    readers = {target.name for name in wanted for kind in KINDS for target, _ in later_layers(model, name, kind)}
    return [layer.name for layer in model.layers if layer.name in wanted | readers]


def later_layers(model: Model, layer: str, kind: str = "expanded") -> list[tuple[Layer, Source]]:
    """The layers whose edges of `kind` start from units of `layer`, with their sources."""
    name = model.layer(layer).name
    found = []
    for target in model.layers:
        source = edge_source(model, target, kind)
        if any(unit_layer == name for unit_layer, _ in source.units):
            found.append((target, source))
    return found


def output_weights(model: Model, layer: str, channel: int, kind: str = "expanded"
                   ) -> list[tuple[str, np.ndarray]]:
    """What one unit feeds: for each later layer that reads it, kernels [target channels, W, W] from it, built
    by pushing a unit impulse at each position of its window through the linearised network (forward)."""
    import tensorflow as tf

    shown = model.layer(layer)
    check_channels([channel], shown.channels, shown.name)
    found = []
    for target, source in later_layers(model, shown.name, kind):
        s = source.units.index((shown.name, channel))
        forward = model.subgraph_fn(source.node, (target.name,), linear=True)
        n, w = source.size, source.window
        impulses = np.zeros((w * w + 1, n, n, len(source.units)), np.float32)  # the last: zero, the bias
        for i, (y, x) in enumerate(np.ndindex(w, w)):
            impulses[i, source.start + y, source.start + x, s] = 1.0
        out = forward(tf.constant(impulses))[0].numpy()[:, source.centre, source.centre, :]
        found.append((target.name, (out[:-1] - out[-1]).reshape(w, w, -1).transpose(2, 0, 1)))
    return found


def unit_circuit(model: Model, layer: str, channel: int, top: int = 10, kind: str = "expanded") -> Circuit:
    """A unit's `top` excitatory and `top` inhibitory inputs and outputs of `kind`, computed from the model."""
    weights = expanded_weights(model, layer, [channel], kind)
    inputs = ranked_edges(list(weights.source.units), weights.kernels[0], top)
    units, kernels = [], []
    for target, k in output_weights(model, weights.layer, channel, kind):
        units.extend((target, c) for c in range(len(k)))
        kernels.extend(k)
    outputs = ranked_edges(units, kernels, top) if kernels else []
    return Circuit(weights.layer, channel, kind, inputs, outputs)
