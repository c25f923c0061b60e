"""Count the multiply-add work of a layer, from the GraphDef, at a given image size.

Only Conv2D, DepthwiseConv2dNative and MatMul are counted (2 FLOPs per multiply-add:
2·H_out·W_out·kh·kw·c_in·c_out for a convolution, 2·H_out·W_out·kh·kw·c_in·multiplier for a depthwise one);
pooling, LRN, bias, batch norm and the activations are a few per cent at most and left out. Shapes come from
TensorFlow's own shape inference on the layer's subgraph with a fixed input size.

A gradient step of the renderer needs the forward pass and the gradient with respect to the input (not the
weights). The input gradient of a convolution is a transposed convolution of the same size, so
`step_flops` is taken as twice the forward count: an approximation that ignores the element-wise ops.

`relative_work` is a model's full forward pass (every catalogued layer) at 224 px over GoogLeNet's: the render
stage's automatic batch size divides by it (atlas.render.settings.auto_batch_size), so a network with ten times
GoogLeNet's work per image starts with a tenth of its images per pass.
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow.core.framework import graph_pb2, node_def_pb2

from atlas.model.catalogue import source_name

WORK_SIZE = 224  # the image side a model's work is counted at
GOOGLENET_FLOPS = 3_171_942_144  # of GoogLeNet's full forward pass at 224 px: the stand-in at scale 1, its shapes
BIG_CONST = 1 << 16  # bytes: larger constants (weights) enter shape inference as placeholders of their shape


def _subgraph(graph_def: graph_pb2.GraphDef, targets: list[str]) -> list[node_def_pb2.NodeDef]:
    """The nodes the `targets` depend on (themselves included, each node once), in the GraphDef's order."""
    by_name = {n.name: n for n in graph_def.node}
    needed, stack = set(), list(targets)
    while stack:
        name = stack.pop()
        if name not in needed:
            needed.add(name)
            stack.extend(source_name(ref) for ref in by_name[name].input)
    return [n for n in graph_def.node if n.name in needed]


def _shape_only(node: node_def_pb2.NodeDef) -> node_def_pb2.NodeDef:
    """A large constant (a layer's weights) as a placeholder of its shape and type: shape inference needs no
    values of it, and copying a big network's weights into a graph takes seconds."""
    if node.op != "Const":  # first: reading attr["value"] of another node would add an empty one to it
        return node
    tensor = node.attr["value"].tensor
    if len(tensor.tensor_content) < BIG_CONST:
        return node
    stub = node_def_pb2.NodeDef(name=node.name, op="Placeholder")
    stub.attr["dtype"].CopyFrom(node.attr["dtype"])
    stub.attr["shape"].shape.CopyFrom(tensor.tensor_shape)
    return stub


def forward_flops(graph_def: graph_pb2.GraphDef, target: str | list[str], height: int, width: int,
                  input_name: str = "input") -> int:
    """FLOPs of one image's forward pass from `input_name` up to node `target` at height × width pixels; for a
    list of targets, of the one pass that computes them all (each node counted once)."""
    nodes = _subgraph(graph_def, [target] if isinstance(target, str) else list(target))
    sub = graph_pb2.GraphDef(node=[_shape_only(node) for node in nodes])
    with tf.Graph().as_default() as graph:
        image = tf.compat.v1.placeholder(tf.float32, [1, height, width, 3])
        tf.graph_util.import_graph_def(sub, {input_name: image}, name="")
    total = 0
    for op in graph.get_operations():
        if op.type in ("Conv2D", "DepthwiseConv2dNative"):
            kh, kw, cin, cout = op.inputs[1].shape.as_list()  # depthwise: cout is the channel multiplier
            out = op.outputs[0].shape.as_list()
            spatial = out[2] * out[3] if op.get_attr("data_format") == b"NCHW" else out[1] * out[2]
            total += 2 * spatial * kh * kw * cin * cout
        elif op.type == "MatMul":
            a, b = op.inputs[0].shape.as_list(), op.inputs[1].shape.as_list()
            rows = a[1] if op.get_attr("transpose_a") else a[0]
            inner, cols = (b[1], b[0]) if op.get_attr("transpose_b") else (b[0], b[1])
            total += 2 * rows * inner * cols
    return total


def step_flops(graph_def: graph_pb2.GraphDef, target: str, height: int, width: int,
               input_name: str = "input") -> int:
    """FLOPs of one image's gradient step: forward plus input gradient, taken as 2 × forward."""
    return 2 * forward_flops(graph_def, target, height, width, input_name)


def full_pass_flops(graph_def: graph_pb2.GraphDef, tensors: list[str], input_name: str = "input") -> int:
    """FLOPs of one 224 px image's forward pass through every node of `tensors` (a model's catalogued layers)."""
    return forward_flops(graph_def, tensors, WORK_SIZE, WORK_SIZE, input_name)


def relative_work(flops: int) -> float:
    """`flops` of a full forward pass over GoogLeNet's, to two significant digits (GoogLeNet's own is 1.0)."""
    return float(f"{flops / GOOGLENET_FLOPS:.2g}")
