"""The layer catalogue: every Conv2D of a frozen graph, low to high, with facts read from the graph."""

from __future__ import annotations

import heapq
import math
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Iterable

from atlas.errors import UserError

if TYPE_CHECKING:  # protobuf types only; importing this module must not load TensorFlow
    from tensorflow.core.framework import graph_pb2, node_def_pb2

POOL_OPS = {"MaxPool", "AvgPool"}
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

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


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


def _filter_shape(nodes: dict[str, node_def_pb2.NodeDef], ref: str) -> list[int]:
    """Shape of a conv's filter: its Const, found through any Identity nodes in front of it."""
    node = nodes[source_name(ref)]
    while node.op != "Const" and node.input:
        node = nodes[source_name(node.input[0])]
    if node.op != "Const":
        raise UserError(f"cannot read the filter shape of {ref}; is the graph frozen?")
    return [d.size for d in node.attr["value"].tensor.tensor_shape.dim]


def _window(node: node_def_pb2.NodeDef, nodes: dict[str, node_def_pb2.NodeDef]) -> tuple[int, int] | None:
    """(kernel extent, stride) of a spatial op, or None for ops that keep the spatial grid."""
    if node.op == "Conv2D":
        shape = _filter_shape(nodes, node.input[1])
        dilation = list(node.attr["dilations"].list.i) or [1, 1, 1, 1]
        kernel = (shape[0] - 1) * dilation[1] + 1
        return kernel, list(node.attr["strides"].list.i)[1]
    if node.op in POOL_OPS:
        return list(node.attr["ksize"].list.i)[1], list(node.attr["strides"].list.i)[1]
    return None


def _spatial_inputs(node: node_def_pb2.NodeDef, nodes: dict[str, node_def_pb2.NodeDef]) -> list[str]:
    """Inputs that carry activations (not weights, shapes or control edges)."""
    names = [source_name(i) for i in node.input if not i.startswith("^")]
    return [n for n in names if n in nodes and nodes[n].op != "Const"]


def _blocks(names: list[str]) -> list[str]:
    """Block of each layer: the name prefix before the first '_' shared by several layers; layers
    before the first such block form the stem, and lone layers after it keep their own prefix."""
    prefixes = [re.split(r"_", name, maxsplit=1)[0] for name in names]
    counts = {p: prefixes.count(p) for p in prefixes}
    first_block = next((i for i, p in enumerate(prefixes) if counts[p] > 1), len(prefixes))
    return [STEM if i < first_block else p for i, p in enumerate(prefixes)]


def _layer_name(conv: node_def_pb2.NodeDef, consumers: dict[str, list[node_def_pb2.NodeDef]]) -> str:
    """A conv's layer is the BiasAdd right after it when there is one (the `_pre_relu` tensor)."""
    for user in consumers.get(conv.name, []):
        if user.op in {"BiasAdd", "Add", "AddV2"}:
            return user.name
    return conv.name


def build_catalogue(graph: graph_pb2.GraphDef) -> list[Layer]:
    """Catalogue every Conv2D of `graph`, low to high."""
    order = topological_order(graph)
    nodes = {n.name: n for n in graph.node}
    consumers: dict[str, list[node_def_pb2.NodeDef]] = {}
    for node in order:
        for ref in _spatial_inputs(node, nodes):
            consumers.setdefault(ref, []).append(node)
    start = input_name(graph)
    field: dict[str, tuple[int, int, int]] = {}  # node -> (receptive field, jump, conv depth)
    convs: list[tuple[node_def_pb2.NodeDef, tuple[int, int, int]]] = []
    for node in order:
        if node.name == start:
            field[node.name] = (1, 1, 0)
            continue
        parents = [field[p] for p in _spatial_inputs(node, nodes) if p in field]
        if not parents:
            continue
        rf = max(p[0] for p in parents)
        jump = max(p[1] for p in parents)
        depth = max(p[2] for p in parents)
        window = _window(node, nodes)
        if window:
            kernel, stride = window
            rf, jump = rf + (kernel - 1) * jump, jump * stride
        if node.op == "Conv2D":
            depth += 1
            convs.append((node, (rf, jump, depth)))
        field[node.name] = (rf, jump, depth)
    if not convs:
        raise UserError("the model graph has no Conv2D op reachable from its input; "
                        "atlas needs a convolutional image network such as inception5h")
    names = [_layer_name(conv, consumers) for conv, _ in convs]
    layers = []
    for index, ((conv, (rf, jump, depth)), name, block) in enumerate(zip(convs, names, _blocks(names))):
        kh, kw, cin, cout = _filter_shape(nodes, conv.input[1])
        layers.append(Layer(name=name, op=conv.name, channels=cout, kernel=kh, kernel_w=kw,
                            stride=list(conv.attr["strides"].list.i)[1], in_channels=cin, block=block,
                            index=index, depth=depth, receptive_field=rf, cumulative_stride=jump))
    return layers


def find_layer(layers: list[Layer], name: str, also: Iterable[str] = ()) -> Layer:
    """Look a layer up by its name or by its conv op's name; a helpful error otherwise, suggesting the
    closest layer names and the closest of `also` (other names the caller would accept)."""
    for layer in layers:
        if name in (layer.name, layer.op):
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
    if node.op == "Conv2D":
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


def layer_grids(graph: graph_pb2.GraphDef, height: int, width: int) -> dict[str, Grid]:
    """The output grid of every catalogued layer (by layer name) for an input image of height x width.

    Branches of one block are padded to the same centres (GoogLeNet's are), so where they meet the first
    input's geometry is taken.
    """
    nodes = {n.name: n for n in graph.node}
    start = input_name(graph)
    geometry: dict[str, tuple[tuple[int, float, int], tuple[int, float, int]]] = {
        start: ((height, 0.0, 1), (width, 0.0, 1))}
    for node in topological_order(graph):
        parents = [p for p in _spatial_inputs(node, nodes) if p in geometry]
        if node.name == start or not parents:
            continue
        rows, cols = geometry[parents[0]]
        window = _window_2d(node, nodes)
        if window:
            (kh, kw), (sh, sw), padding = window
            rows = _axis_step(*rows, kh, sh, padding)
            cols = _axis_step(*cols, kw, sw, padding)
        geometry[node.name] = (rows, cols)
    grids = {}
    for layer in build_catalogue(graph):
        rows, cols = geometry[layer.name]
        grids[layer.name] = Grid(size=(rows[0], cols[0]), jump=(rows[2], cols[2]), offset=(rows[1], cols[1]))
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
    nodes = {n.name: n for n in graph.node}
    geometry: dict[str, tuple[int, int, float, int]] = {start: (1, size, 0.0, 1)}
    for node in order or topological_order(graph):
        parents = [geometry[p] for p in _spatial_inputs(node, nodes) if p in geometry]
        if node.name == start or not parents:
            continue
        rf, out, offset, jump = parents[0]
        rf = max(p[0] for p in parents)
        window = _window_2d(node, nodes)
        if window:
            (kernel, _), (stride, _), padding = window
            rf += (kernel - 1) * jump
            out, offset, jump = _axis_step(out, offset, jump, kernel, stride, padding)
        geometry[node.name] = (rf, out, offset, jump)
        if node.name == target:
            return geometry[target]
    raise ValueError(f"{target} does not depend on {start}")
