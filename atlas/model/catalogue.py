"""The layer catalogue: every Conv2D and DepthwiseConv2dNative of a frozen graph, low to high, and the block
outputs where its branches merge, with facts read from the graph."""

from __future__ import annotations

import heapq
import math
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Iterable, Sequence, TypeVar

from atlas.errors import UserError

if TYPE_CHECKING:  # protobuf types only; importing this module must not load TensorFlow
    from tensorflow.core.framework import graph_pb2, node_def_pb2

POOL_OPS = {"MaxPool", "AvgPool"}
CONVS = {"Conv2D", "DepthwiseConv2dNative"}  # each one a catalogued layer
CONCATS = {"Concat", "ConcatV2"}
MERGES = {"Add", "AddV2", *CONCATS}  # where branches meet (with two or more activation inputs): block outputs
AFFINE = {"BiasAdd", "Add", "AddV2", "Sub", "Mul", "RealDiv", "Identity", "FusedBatchNorm", "FusedBatchNormV3"}
PASS_THROUGH = {"Relu", "Relu6", "Identity"}  # a block output is read after these (a residual sum's ReLU)
PADS = {"Pad", "PadV2", "MirrorPad"}
GLOBAL_POOLS = {"Mean", "Max"}
STEM = "stem"


@dataclass(frozen=True)
class Layer:
    """One convolutional layer: what a user picks and what the gallery shows."""

    name: str  # the layer's output tensor, e.g. mixed4d_3x3_bottleneck_pre_relu
    op: str  # the Conv2D node, e.g. mixed4d_3x3_bottleneck_pre_relu/conv
    channels: int
    kernel: int  # kernel height (GoogLeNet kernels are square); see kernel_w
    kernel_w: int
    stride: int
    in_channels: int
    block: str  # stem, mixed3a ... mixed5b, head0, head1
    index: int  # position in the catalogue, 0 = lowest
    depth: int  # convolutions on the longest path from the input, this one included
    receptive_field: int  # in input pixels
    cumulative_stride: int  # input pixels between neighbouring output positions
    tensor: str = ""  # the node whose output is the activation (after bias and batch norm); default: `name`
    op_type: str = "Conv2D"  # or DepthwiseConv2dNative (channels = in_channels x depth multiplier)

    def __post_init__(self) -> None:
        if not self.tensor:
            object.__setattr__(self, "tensor", self.name)

    @property
    def order(self) -> tuple[int, int]:
        """Its place among the conv layers and block outputs, low to high (see `BlockOutput.order`)."""
        return (self.index, 0)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class BlockOutput:
    """Where branches of the network merge (inception5h's `mixed4c`, a residual sum such as ResNet's
    `conv2_block1_out`): a layer a sweep renders and the gallery shows beside the conv layers (it closes the
    gallery section of its name), a map layer and a circuit source."""

    name: str  # the Keras layer name of `tensor`, or the node's own name (mixed4c)
    tensor: str  # the node whose output it is: the merge, or the activation that alone reads it
    merge: str  # the merge node (Add, AddV2, Concat, ConcatV2)
    channels: int
    index: int  # position among the block outputs, 0 = lowest
    depth: int  # convolutions on the longest path from the input
    receptive_field: int  # in input pixels; that of its widest branch
    cumulative_stride: int
    op_type: str  # the merge's op: Add, AddV2 (a residual sum), Concat, ConcatV2
    after: int  # index of the conv layer it follows: the last one it reads, directly or not (-1: none)

    @property
    def block(self) -> str:
        """The gallery section it closes: its own name, as the conv layers inside its branches have."""
        return self.name

    @property
    def kind(self) -> str:
        """`add` (a residual sum) or `concat`: how it is marked where layers are listed."""
        return "concat" if self.op_type in CONCATS else "add"

    @property
    def order(self) -> tuple[int, int]:
        """Its place among the conv layers and block outputs, low to high: right after the conv layer it follows."""
        return (self.after, 1)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


AnyLayer = Layer | BlockOutput  # what a sweep selects and the gallery shows: a conv layer or a block output
Found = TypeVar("Found", Layer, BlockOutput, AnyLayer)  # what `find_layer` looks among


def in_order(layers: Iterable[AnyLayer]) -> list[AnyLayer]:
    """Conv layers and block outputs low to high, each block output right after the conv layer it follows."""
    return sorted(layers, key=lambda layer: layer.order)


def input_name(graph: graph_pb2.GraphDef) -> str:
    """The graph's image input: the Placeholder named `input`, or its only Placeholder."""
    placeholders = [n.name for n in graph.node if n.op == "Placeholder"]
    if "input" in placeholders:
        return "input"
    if len(placeholders) == 1:
        return placeholders[0]
    raise UserError(f"the model graph has {len(placeholders)} placeholders and none is named 'input'; "
                    "export the graph with a single image input named 'input'")


def source_name(ref: str) -> str:
    """Strip control-dependency marks and output indices from a NodeDef input reference."""
    return ref.lstrip("^").split(":")[0]


def output_index(ref: str) -> int:
    """Which output of its node a NodeDef input reference reads: k for `name:k`, else 0."""
    _, _, index = ref.lstrip("^").partition(":")
    return int(index) if index else 0


def topological_order(graph: graph_pb2.GraphDef) -> list[node_def_pb2.NodeDef]:
    """Nodes in dependency order; ties keep the order of the file, so the result is deterministic."""
    nodes = {n.name: n for n in graph.node}
    position = {n.name: i for i, n in enumerate(graph.node)}
    pending = {n.name: {source_name(i) for i in n.input if source_name(i) in nodes} for n in graph.node}
    users: dict[str, list[str]] = {name: [] for name in nodes}
    for name, deps in pending.items():
        for dep in deps:
            users[dep].append(name)
    ready = [(position[name], name) for name, deps in pending.items() if not deps]
    heapq.heapify(ready)
    order = []
    while ready:
        _, name = heapq.heappop(ready)
        order.append(nodes[name])
        for user in users[name]:
            pending[user].discard(name)
            if not pending[user]:
                heapq.heappush(ready, (position[user], user))
    if len(order) != len(nodes):
        raise UserError("the model graph has a cycle; it is not a frozen feed-forward graph")
    return order


def _const_value(node: node_def_pb2.NodeDef) -> list[int]:
    """The integers of a small integer Const (paddings, axes), without TensorFlow."""
    import numpy as np

    tensor = node.attr["value"].tensor
    if tensor.tensor_content:
        return np.frombuffer(tensor.tensor_content, np.int64 if tensor.dtype == 9 else np.int32).tolist()
    values = list(tensor.int64_val) or list(tensor.int_val)
    size = math.prod(d.size for d in tensor.tensor_shape.dim)
    return values * size if len(values) == 1 and size > 1 else values


def _through_identity(nodes: dict[str, node_def_pb2.NodeDef], ref: str) -> node_def_pb2.NodeDef:
    """The node `ref` names, followed back through Identity nodes to a Const where there is one."""
    node = nodes[source_name(ref)]
    while node.op != "Const" and node.input:
        node = nodes[source_name(node.input[0])]
    return node


def _filter_shape(nodes: dict[str, node_def_pb2.NodeDef], ref: str) -> list[int]:
    """Shape of a conv's filter: its Const, found through any Identity nodes in front of it."""
    node = _through_identity(nodes, ref)
    if node.op != "Const":
        raise UserError(f"cannot read the filter shape of {ref}; is the graph frozen?")
    return [d.size for d in node.attr["value"].tensor.tensor_shape.dim]


def _pads(node: node_def_pb2.NodeDef, nodes: dict[str, node_def_pb2.NodeDef]) -> tuple[tuple[int, int], ...]:
    """(before, after) padding of a Pad op along rows and columns (NHWC)."""
    values = _const_value(_through_identity(nodes, node.input[1]))
    return (values[2], values[3]), (values[4], values[5])


def _is_global_pool(node: node_def_pb2.NodeDef, nodes: dict[str, node_def_pb2.NodeDef]) -> bool:
    """A Mean or Max over both spatial axes (global pooling): the spatial part of the network ends there."""
    if node.op not in GLOBAL_POOLS:
        return False
    axes = {a % 4 for a in _const_value(_through_identity(nodes, node.input[1]))}
    return {1, 2} <= axes


def _window(node: node_def_pb2.NodeDef, nodes: dict[str, node_def_pb2.NodeDef]) -> tuple[int, int] | None:
    """(kernel extent, stride) of a spatial op along rows, or None for ops that keep the spatial grid."""
    window = _window_2d(node, nodes)
    return (window[0][0], window[1][0]) if window else None


def _channels(node: node_def_pb2.NodeDef, nodes: dict[str, node_def_pb2.NodeDef]) -> tuple[int, int]:
    """(input channels, output channels) of a conv op."""
    kh, kw, cin, cout = _filter_shape(nodes, node.input[1])
    return cin, cin * cout if node.op == "DepthwiseConv2dNative" else cout


@dataclass
class _Graph:
    """A frozen graph read once: its nodes, their order, which carry activations and who reads them."""

    nodes: dict[str, node_def_pb2.NodeDef]
    order: list[node_def_pb2.NodeDef]  # topological
    start: str  # the image input
    live: set[str]  # nodes that depend on the input: activations (the rest are weights and shapes)
    consumers: dict[str, list[node_def_pb2.NodeDef]]  # live node -> the live nodes that read it

    def inputs(self, node: node_def_pb2.NodeDef) -> list[str]:
        """The activations a node reads, in input order (a name once per reference)."""
        return [source_name(i) for i in node.input if not i.startswith("^") and source_name(i) in self.live]


def _read(graph: graph_pb2.GraphDef, order: list[node_def_pb2.NodeDef] | None = None) -> _Graph:
    order = order or topological_order(graph)
    start = input_name(graph)
    live = {start}
    consumers: dict[str, list[node_def_pb2.NodeDef]] = {start: []}
    for node in order:
        sources = [source_name(i) for i in node.input if not i.startswith("^")]
        if node.name == start or not any(s in live for s in sources):
            continue
        live.add(node.name)
        consumers[node.name] = []
        for src in dict.fromkeys(s for s in sources if s in live):
            consumers[src].append(node)
    return _Graph({n.name: n for n in graph.node}, order, start, live, consumers)


def _scopes(graph: _Graph) -> tuple[int, bool]:
    """How to read a Keras layer name from a node name: (path components to drop in front, whether to drop
    a `_N` suffix that the export added to every layer's name scope).

    A frozen Keras model names its nodes `model_scope/layer_scope/.../op`; every activation node with a path
    then shares the first component, which is dropped (nodes without a path, such as the function's output
    `Identity`, are their own names). Keras 3 also suffixes each layer scope with `_1` when the model had
    been called before (`conv1_conv_1`): dropped when every layer scope has such a suffix and no two layer
    names become one. A graph built the inception5h way (`mixed4b_3x3_pre_relu/conv`) has no common scope."""
    names = [n for n in graph.live if "/" in n]
    firsts = {n.split("/")[0] for n in names}
    drop = 1 if len(firsts) == 1 and len(names) > 1 else 0
    layers = {n.split("/")[drop] for n in names if n.count("/") > drop}
    stripped = {re.sub(r"_\d+$", "", s) for s in layers}
    suffixed = bool(layers) and all(re.search(r"_\d+$", s) for s in layers) and len(stripped) == len(layers)
    return drop, suffixed


def keras_name(node_name: str, scopes: tuple[int, bool]) -> str:
    """The layer name of a node (see `_scopes`): its layer scope, or the node's own name where it has none."""
    drop, suffixed = scopes
    parts = node_name.split("/")[drop:]
    if len(parts) == 1:
        return parts[0]
    return re.sub(r"_\d+$", "", parts[0]) if suffixed else parts[0]


def _affine_end(graph: _Graph, conv: node_def_pb2.NodeDef) -> str:
    """Where a conv's own per-channel computation ends, before its non-linearity: after its bias and batch
    norm, following the single reader while it is a per-channel affine op of this one activation (the other
    inputs weights), up to the first non-linearity or merge. inception5h: the BiasAdd, `..._pre_relu`."""
    name = conv.name
    while len(graph.consumers[name]) == 1:
        user = graph.consumers[name][0]
        if user.op not in AFFINE or graph.inputs(user) != [name]:
            break
        if user.op.startswith("FusedBatchNorm") and source_name(user.input[0]) != name:
            break
        name = user.name
    return name


def _dominators(graph: _Graph) -> tuple[dict[str, str | None], dict[str, int]]:
    """The immediate dominator of every live node (the last node every path from the input to it passes
    through) and its depth in the dominator tree."""
    idom: dict[str, str | None] = {graph.start: None}
    depth = {graph.start: 0}

    def common(a: str, b: str) -> str:
        while a != b:
            if depth[a] >= depth[b]:
                a = idom[a]
            else:
                b = idom[b]
        return a

    for node in graph.order:
        parents = [p for p in graph.inputs(node) if p in idom]
        if node.name == graph.start or not parents:
            continue
        dom = parents[0]
        for parent in parents[1:]:
            dom = common(dom, parent)
        idom[node.name], depth[node.name] = dom, depth[dom] + 1
    return idom, depth


def dominators(graph: graph_pb2.GraphDef) -> dict[str, str | None]:
    """The immediate dominator of every live node (node -> the last node every path from the input to it passes
    through; None for the input): where the circuits analysis finds a layer's expanded source."""
    return _dominators(_read(graph))[0]


def live_nodes(graph: graph_pb2.GraphDef) -> set[str]:
    """The nodes that depend on the image input (activations; the rest are weights and shapes)."""
    return _read(graph).live


def is_global_pool(node: node_def_pb2.NodeDef, nodes: dict[str, node_def_pb2.NodeDef]) -> bool:
    """A Mean or Max over both spatial axes (global pooling)."""
    return _is_global_pool(node, nodes)


def _dominates(a: str, b: str, idom: dict[str, str | None], depth: dict[str, int]) -> bool:
    """Whether `a` strictly dominates `b`."""
    node = idom.get(b)
    while node is not None and depth[node] >= depth[a]:
        if node == a:
            return True
        node = idom[node]
    return False


@dataclass(frozen=True)
class _Merge:
    node: str  # the merge (Add, AddV2, Concat, ConcatV2)
    fork: str  # its immediate dominator: where its branches split
    tensor: str  # the block output: the merge, read on through a single-reader ReLU or Identity
    name: str


def _channel_axis(node: node_def_pb2.NodeDef, nodes: dict[str, node_def_pb2.NodeDef]) -> bool:
    """Whether a concat joins its inputs along the channel axis (NHWC: 3, or -1)."""
    ref = node.input[0] if node.op == "Concat" else [i for i in node.input if not i.startswith("^")][-1]
    axis = _through_identity(nodes, ref)
    return axis.op == "Const" and _const_value(axis) in ([3], [-1])


def _is_block_merge(graph: _Graph, node: node_def_pb2.NodeDef, fork: str | None, field: dict[str, Field]) -> bool:
    """The rule of a block output: an Add/AddV2 or a Concat/ConcatV2 of two or more activations (a concat along the
    channel axis), whose output is still spatial (not past a global pool or a matrix product) and one of whose
    branches holds a conv (is deeper in convs than the node where the branches fork)."""
    inputs = set(graph.inputs(node))
    if node.op not in MERGES or len(inputs) < 2 or fork is None or field[node.name][3]:
        return False
    if node.op in CONCATS and not _channel_axis(node, graph.nodes):
        return False
    return max(field[i][2] for i in inputs) > field[fork][2]


def _merges(graph: _Graph, scopes: tuple[int, bool], dominators: tuple[dict[str, str | None], dict[str, int]],
            field: dict[str, Field]) -> tuple[list[_Merge], dict[str, set[str]]]:
    """The block outputs (outermost merges of branches that follow `_is_block_merge`, in topological order) and,
    for every live node, the merges it reaches."""
    idom, depth = dominators
    candidates = [n for n in graph.order
                  if n.name in graph.live and _is_block_merge(graph, n, idom.get(n.name), field)]
    names = {n.name for n in candidates}
    reach: dict[str, set[str]] = {}
    for node in reversed(graph.order):
        if node.name in graph.live:
            found = {node.name} if node.name in names else set()
            for user in graph.consumers[node.name]:
                found |= reach[user.name]
            reach[node.name] = found
    merges = []
    for node in candidates:
        fork = idom[node.name]
        nested = any(other != node.name and _dominates(idom[other], node.name, idom, depth)
                     for other in reach[node.name])
        if nested:
            continue
        tensor = node.name
        while len(graph.consumers[tensor]) == 1 and graph.consumers[tensor][0].op in PASS_THROUGH:
            tensor = graph.consumers[tensor][0].name
        merges.append(_Merge(node.name, fork, tensor, keras_name(tensor, scopes)))
    return merges, reach


def _block_of(graph: _Graph, conv: str, merges: list[_Merge], reach: dict[str, set[str]],
              dominators: tuple[dict[str, str | None], dict[str, int]], after: set[str]) -> str | None:
    """The block output whose branches hold `conv` (between the fork and the merge); for a conv between
    blocks, the next block output it feeds; "stem" before the first block; None after the last."""
    idom, depth = dominators
    reached = [m for m in merges if m.node in reach[conv]]
    inside = [m for m in reached if _dominates(m.fork, conv, idom, depth)]
    if inside:
        return inside[0].name
    if conv not in after:
        return STEM
    return reached[0].name if reached else None


def _blocks(names: list[str]) -> list[str]:
    """Block of each layer by name, where the graph has no merges to read them from (and for layers after
    the last merge): a PyTorch module path's parent module (`features.3.conv` -> `features.3`, a converted ONNX
    model's names), else the name up to the first '_' after a number (`head0`, `block_16`, `block1`), else up to
    the first '_'; layers before the first prefix shared by several layers form the stem."""
    prefixes = [name.rsplit(".", 1)[0] if "." in name else
                (re.match(r"(.*?\d+[a-z]?)_", name) or re.match(r"([^_]*)", name)).group(1) for name in names]
    counts = {p: prefixes.count(p) for p in prefixes}
    first_block = next((i for i, p in enumerate(prefixes) if counts[p] > 1), len(prefixes))
    return [STEM if i < first_block else p for i, p in enumerate(prefixes)]


def _after(graph: _Graph, merges: list[_Merge]) -> set[str]:
    """The live nodes downstream of some block output's merge."""
    after = {m.node for m in merges}
    for node in graph.order:
        if node.name in graph.live and any(p in after for p in graph.inputs(node)):
            after.add(node.name)
    return after


Field = tuple[int, int, int, bool]  # (receptive field, jump, conv depth, past the spatial part)


def _fields(graph: _Graph) -> dict[str, Field]:
    """Receptive field and jump in input pixels, and convolutions on the longest path, of every live node.

    A global pool (Mean over rows and columns) or a matrix product (a dense layer) ends the spatial part: what is
    computed from it alone (a squeeze-and-excitation branch) keeps the field of the units it averaged, and where
    such a branch meets the spatial path again (the gate's Mul) the spatial input's field is taken."""
    field: dict[str, Field] = {graph.start: (1, 1, 0, False)}
    for node in graph.order:
        parents = [field[p] for p in graph.inputs(node) if p in field]
        if node.name == graph.start or not parents:
            continue
        spatial = [p for p in parents if not p[3]] or parents
        rf, jump = max(p[0] for p in spatial), max(p[1] for p in spatial)
        depth = max(p[2] for p in parents)
        pooled = all(p[3] for p in parents) or _is_global_pool(node, graph.nodes) or node.op == "MatMul"
        window = _window(node, graph.nodes)
        if window and not pooled:
            kernel, stride = window
            rf, jump = rf + (kernel - 1) * jump, jump * stride
        if node.op in CONVS:
            depth += 1
        field[node.name] = (rf, jump, depth, pooled)
    return field


def _catalogue(graph_def: graph_pb2.GraphDef) -> tuple[list[Layer], list[BlockOutput]]:
    graph = _read(graph_def)
    field = _fields(graph)
    convs = [n for n in graph.order if n.op in CONVS and n.name in field]
    if not convs:
        raise UserError("the model graph has no Conv2D op reachable from its input; "
                        "atlas needs a convolutional image network such as inception5h")
    scopes = _scopes(graph)
    dominators = _dominators(graph)
    merges, reach = _merges(graph, scopes, dominators, field)
    after = _after(graph, merges)
    names = [keras_name(conv.name, scopes) for conv in convs]
    names = [name if names.count(name) == 1 else conv.name for conv, name in zip(convs, names)]
    found = [_block_of(graph, conv.name, merges, reach, dominators, after) for conv in convs]
    fallback = _blocks(names)
    blocks = [block if block is not None else fallback[i] for i, block in enumerate(found)] if merges else fallback
    layers = []
    for index, (conv, name, block) in enumerate(zip(convs, names, blocks)):
        kh, kw = _filter_shape(graph.nodes, conv.input[1])[:2]
        cin, cout = _channels(conv, graph.nodes)
        rf, jump, depth, _ = field[conv.name]
        layers.append(Layer(name=name, op=conv.name, channels=cout, kernel=kh, kernel_w=kw,
                            stride=list(conv.attr["strides"].list.i)[1], in_channels=cin, block=block,
                            index=index, depth=depth, receptive_field=rf, cumulative_stride=jump,
                            tensor=_affine_end(graph, conv), op_type=conv.op))
    channels = _node_channels(graph, {layer.op: layer.channels for layer in layers})
    reads = _last_conv_read(graph, {layer.op: layer.index for layer in layers})
    outputs = []
    for index, merge in enumerate(merges):
        rf, jump, depth, _ = field[merge.tensor]
        outputs.append(BlockOutput(name=merge.name, tensor=merge.tensor, merge=merge.node,
                                   channels=channels[merge.tensor], index=index, depth=depth, receptive_field=rf,
                                   cumulative_stride=jump, op_type=graph.nodes[merge.node].op,
                                   after=reads[merge.node]))
    return layers, outputs


def _last_conv_read(graph: _Graph, convs: dict[str, int]) -> dict[str, int]:
    """For every live node, the highest catalogue index of the conv layers it reads, directly or through others
    (-1: none)."""
    last = {graph.start: -1}
    for node in graph.order:
        parents = [last[p] for p in graph.inputs(node) if p in last]
        if node.name != graph.start and parents:
            last[node.name] = max([*parents, convs.get(node.name, -1)])
    return last


def _node_channels(graph: _Graph, convs: dict[str, int]) -> dict[str, int]:
    """Channels of every live node up to the end of the spatial part: a conv's own, the sum of a concat's
    inputs, otherwise those of its first input."""
    channels = {graph.start: 3}
    for node in graph.order:
        parents = [channels[p] for p in graph.inputs(node) if p in channels]
        if node.name == graph.start or not parents:
            continue
        if node.name in convs:
            channels[node.name] = convs[node.name]
        elif node.op in CONCATS:
            channels[node.name] = sum(parents)
        else:
            channels[node.name] = max(parents)
    return channels


def build_catalogue(graph: graph_pb2.GraphDef) -> list[Layer]:
    """Catalogue every Conv2D and DepthwiseConv2dNative of `graph`, low to high."""
    return _catalogue(graph)[0]


def block_outputs(graph: graph_pb2.GraphDef) -> list[BlockOutput]:
    """The graph's block outputs (where branches merge: a concat, a residual sum), low to high."""
    return _catalogue(graph)[1]


def catalogue(graph: graph_pb2.GraphDef) -> tuple[list[Layer], list[BlockOutput]]:
    """The conv layers and the block outputs of `graph`, from one reading of it."""
    return _catalogue(graph)


def find_layer(layers: Sequence[Found], name: str, also: Iterable[str] = ()) -> Found:
    """Look a layer up by its name or by its conv op's name; a helpful error otherwise, suggesting the
    closest layer names and the closest of `also` (other names the caller would accept). Given block outputs
    among `layers`, it finds them too (by name)."""
    for layer in layers:
        if name == layer.name or isinstance(layer, Layer) and name == layer.op:
            return layer
    import difflib

    close = difflib.get_close_matches(name, [layer.name for layer in layers] + sorted(also), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "run `atlas layers` to list them"
    raise UserError(f"unknown layer '{name}': {hint}")


@dataclass(frozen=True)
class Grid:
    """Where a layer's output grid sits on an input image of a given size, per axis (rows, columns)."""

    size: tuple[int, int]  # output positions (rows, columns)
    jump: tuple[int, int]  # input pixels between neighbouring positions
    offset: tuple[float, float]  # input pixel (row, column) at the centre of output position (0, 0)


def _window_2d(node: node_def_pb2.NodeDef, nodes: dict[str, node_def_pb2.NodeDef]
               ) -> tuple[tuple[int, int], tuple[int, int], str] | None:
    """((kernel rows, kernel columns), (stride rows, stride columns), padding) of a spatial op, else None."""
    if node.op in CONVS:
        shape = _filter_shape(nodes, node.input[1])
        dilation = list(node.attr["dilations"].list.i) or [1, 1, 1, 1]
        kernel = ((shape[0] - 1) * dilation[1] + 1, (shape[1] - 1) * dilation[2] + 1)
    elif node.op in POOL_OPS:
        ksize = list(node.attr["ksize"].list.i)
        kernel = (ksize[1], ksize[2])
    else:
        return None
    strides = list(node.attr["strides"].list.i)
    return kernel, (strides[1], strides[2]), node.attr["padding"].s.decode()


def _axis_step(size: int, offset: float, jump: int, kernel: int, stride: int, padding: str
               ) -> tuple[int, float, int]:
    """One window op along one axis, as TensorFlow pads it: (output size, offset, jump) after it.

    SAME pads max((out - 1) * stride + kernel - size, 0) pixels, the smaller half before: so the offset of a
    stride-2 layer depends on whether the input size is even or odd.
    """
    if padding == "SAME":
        out = -(-size // stride)
        before = max((out - 1) * stride + kernel - size, 0) // 2
    else:
        out = -(-(size - kernel + 1) // stride)
        before = 0
    return out, offset + ((kernel - 1) / 2 - before) * jump, jump * stride


Axis = tuple[int, float, int]  # (positions, offset of position 0 in input pixels, input pixels between positions)


def _geometry(graph: _Graph, start: str, axes: tuple[Axis, Axis], stop: str | None = None
              ) -> dict[str, tuple[Axis, Axis, int, bool]]:
    """Every live node's grid from node `start` on, per axis, with the receptive field along rows (in
    `start` positions) and whether it is past a global pool. Explicit Pad ops grow the grid and move its
    origin; a global pool leaves one position, centred on the map it averaged. Where inputs meet, the first
    spatial one's grid is taken (branches of a block are padded to the same centres)."""
    geometry = {start: (axes[0], axes[1], 1, False)}
    for node in graph.order:
        parents = [geometry[p] for p in graph.inputs(node) if p in geometry]
        if node.name == start or not parents:
            continue
        spatial = [p for p in parents if not p[3]] or parents
        rows, cols, _, pooled = spatial[0]
        rf = max(p[2] for p in spatial)
        window = _window_2d(node, graph.nodes)
        if pooled:
            pass
        elif window:
            (kh, kw), (sh, sw), padding = window
            rf += (kh - 1) * rows[2]
            rows, cols = _axis_step(*rows, kh, sh, padding), _axis_step(*cols, kw, sw, padding)
        elif node.op in PADS:
            pads = _pads(node, graph.nodes)
            rows, cols = ((size + before + after, offset - before * jump, jump)
                          for (size, offset, jump), (before, after) in zip((rows, cols), pads))
        elif _is_global_pool(node, graph.nodes):
            rows, cols = ((1, offset + (size - 1) / 2 * jump, jump * size) for size, offset, jump in (rows, cols))
            pooled = True
        geometry[node.name] = (rows, cols, rf, pooled)
        if node.name == stop:
            break
    return geometry


def layer_grids(graph: graph_pb2.GraphDef, height: int, width: int) -> dict[str, Grid]:
    """The output grid of every catalogued layer and block output (by name) for an input image of
    height x width."""
    read = _read(graph)
    geometry = _geometry(read, read.start, ((height, 0.0, 1), (width, 0.0, 1)))
    layers, outputs = _catalogue(graph)
    grids = {}
    for item in [*layers, *outputs]:
        rows, cols, _, _ = geometry[item.tensor]
        grids[item.name] = Grid(size=(rows[0], cols[0]), jump=(rows[2], cols[2]), offset=(rows[1], cols[1]))
    return grids


def centre_index(size: int) -> int:
    """The centre position of a map `size` positions long, as the `neuron` objective reads it: the middle one
    of an odd size, the later of the two middle ones of an even size. Works on tensors too."""
    return size // 2


def centre_unit_box(grid: Grid, receptive_field: int, height: int, width: int) -> tuple[int, int, int, int]:
    """The input pixels the centre unit of a layer sees on a height x width image, as (x0, y0, x1, y1) with x1
    and y1 exclusive, clipped to the image: its `receptive_field` square centred on `offset + index x jump`."""
    half = (receptive_field - 1) / 2
    row, col = centre_index(grid.size[0]), centre_index(grid.size[1])
    cy, cx = grid.offset[0] + row * grid.jump[0], grid.offset[1] + col * grid.jump[1]
    return (max(0, math.floor(cx - half)), max(0, math.floor(cy - half)),
            min(width, math.ceil(cx + half + 1)), min(height, math.ceil(cy + half + 1)))


def relative_geometry(graph: graph_pb2.GraphDef, start: str, target: str, size: int,
                      order: list[node_def_pb2.NodeDef] | None = None) -> tuple[int, int, float, int]:
    """Along rows, from node `start` (a map `size` positions long) to node `target`, over the window ops
    between them: (receptive field of one target position in start positions, target size, offset of target
    position 0 in start positions, start positions between neighbouring target positions). `order`: the
    graph's topological order, if the caller has it."""
    geometry = _geometry(_read(graph, order), start, ((size, 0.0, 1), (size, 0.0, 1)), stop=target)
    if target not in geometry:
        raise ValueError(f"{target} does not depend on {start}")
    rows, _, rf, _ = geometry[target]
    return rf, rows[0], rows[1], rows[2]
