"""A synthetic stand-in for the inception5h GoogLeNet graph: same topology, node names and op types,
seeded random weights. Built as a plain GraphDef so that every later stage treats it exactly like the
real file."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tensorflow.core.framework import attr_value_pb2, graph_pb2, node_def_pb2, tensor_shape_pb2, types_pb2
from tensorflow.python.framework import tensor_util

LRN_ATTRS = {"depth_radius": 5, "bias": 2.0, "alpha": 1e-4, "beta": 0.5}
NUM_CLASSES = 1008

# (1x1, 3x3_bottleneck, 3x3, 5x5_bottleneck, 5x5, pool_reduce) per mixed block, as in inception5h.
MIXED_BLOCKS: dict[str, tuple[int, int, int, int, int, int]] = {
    "mixed3a": (64, 96, 128, 16, 32, 32),
    "mixed3b": (128, 128, 192, 32, 96, 64),
    "mixed4a": (192, 96, 204, 16, 48, 64),
    "mixed4b": (160, 112, 224, 24, 64, 64),
    "mixed4c": (128, 128, 256, 24, 64, 64),
    "mixed4d": (112, 144, 288, 32, 64, 64),
    "mixed4e": (256, 160, 320, 32, 128, 128),
    "mixed5a": (256, 160, 320, 48, 128, 128),
    "mixed5b": (384, 192, 384, 48, 128, 128),
}
# Pools that sit between blocks: name of the block they follow -> pool node name.
POOL_AFTER = {"mixed3b": "maxpool4", "mixed4e": "maxpool10"}
# Auxiliary heads: head index -> block they hang off.
HEADS = {0: "mixed4a", 1: "mixed4d"}


def _attr(value: object) -> attr_value_pb2.AttrValue:
    """Wrap a Python value as an AttrValue of the matching kind."""
    if isinstance(value, bool):
        return attr_value_pb2.AttrValue(b=value)
    if isinstance(value, int):
        return attr_value_pb2.AttrValue(i=value)
    if isinstance(value, float):
        return attr_value_pb2.AttrValue(f=value)
    if isinstance(value, str):
        return attr_value_pb2.AttrValue(s=value.encode())
    if isinstance(value, list):
        return attr_value_pb2.AttrValue(list=attr_value_pb2.AttrValue.ListValue(i=value))
    raise TypeError(f"unsupported attr value {value!r}")


FLOAT = attr_value_pb2.AttrValue(type=types_pb2.DT_FLOAT)
INT32 = attr_value_pb2.AttrValue(type=types_pb2.DT_INT32)


@dataclass
class _Builder:
    """Accumulates nodes: constants first, then ops, in the order the real file stores them."""

    rng: np.random.Generator
    consts: list[node_def_pb2.NodeDef] = field(default_factory=list)
    ops: list[node_def_pb2.NodeDef] = field(default_factory=list)

    def const(self, name: str, array: np.ndarray, to_ops: bool = False) -> str:
        node = node_def_pb2.NodeDef(name=name, op="Const")
        node.attr["dtype"].CopyFrom(INT32 if array.dtype == np.int32 else FLOAT)
        node.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(array))
        (self.ops if to_ops else self.consts).append(node)
        return name

    def op(self, name: str, op: str, inputs: list[str], typed: bool = True, **attrs: object) -> str:
        node = node_def_pb2.NodeDef(name=name, op=op, input=inputs)
        if typed:
            node.attr["T"].CopyFrom(FLOAT)
        for key, value in attrs.items():
            node.attr[key].CopyFrom(_attr(value))
        self.ops.append(node)
        return name

    def weights(self, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        """He-normal weights, so activations keep their scale through ReLU layers."""
        return (self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    def filters(self, k: int, cin: int, cout: int) -> np.ndarray:
        """Conv filters [k, k, cin, cout] shaped like trained ones: spatially smooth (a binomial blur of
        white noise), zero-mean (they answer contrast, not brightness), at He scale."""
        w = self.rng.standard_normal((k + 2, k + 2, cin, cout))
        if k > 1:
            for axis in (0, 1):
                w = (np.take(w, range(0, k + 2), axis) + 2 * np.roll(w, -1, axis) + np.roll(w, -2, axis)) / 4
        w = w[:k, :k]
        w = w - w.mean(axis=(0, 1, 2), keepdims=True)
        w = w / (w.std() + 1e-12) * np.sqrt(2.0 / (k * k * cin))
        return w.astype(np.float32)

    def conv(self, name: str, src: str, cin: int, cout: int, k: int, stride: int = 1) -> str:
        w = self.const(f"{name}_w", self.filters(k, cin, cout))
        b = self.const(f"{name}_b", (0.01 * self.rng.standard_normal(cout)).astype(np.float32))
        conv = self.op(f"{name}_pre_relu/conv", "Conv2D", [src, w], strides=[1, stride, stride, 1],
                       padding="SAME", data_format="NHWC", use_cudnn_on_gpu=True, dilations=[1, 1, 1, 1])
        pre = self.op(f"{name}_pre_relu", "BiasAdd", [conv, b], data_format="NHWC")
        return self.op(name, "Relu", [pre])

    def pool(self, name: str, src: str, kind: str, k: int, stride: int, padding: str = "SAME") -> str:
        return self.op(name, kind, [src], ksize=[1, k, k, 1], strides=[1, stride, stride, 1],
                       padding=padding, data_format="NHWC")

    def lrn(self, name: str, src: str) -> str:
        return self.op(name, "LRN", [src], **LRN_ATTRS)

    def dense(self, name: str, src: str, cin: int, cout: int, out_name: str, pre: str) -> str:
        """MatMul + BiasAdd named like inception5h (`nn0_pre_relu/matmul`, `softmax0_pre_activation`)."""
        w = self.const(f"{name}_w", self.weights((cin, cout), cin))
        b = self.const(f"{name}_b", (0.01 * self.rng.standard_normal(cout)).astype(np.float32))
        mm = self.op(f"{name}_{pre}/matmul", "MatMul", [src, w], transpose_a=False, transpose_b=False)
        added = self.op(f"{name}_{pre}", "BiasAdd", [mm, b], data_format="NHWC")
        return self.op(out_name, "Relu" if pre == "pre_relu" else "Softmax", [added])

    def reshape(self, name: str, src: str, width: int) -> str:
        shape = self.const(f"{name}/shape", np.array([-1, width], dtype=np.int32), to_ops=True)
        node = self.op(name, "Reshape", [src, shape])
        self.ops[-1].attr["Tshape"].CopyFrom(INT32)
        return node


def _scaled(channels: int, scale: float) -> int:
    return max(1, int(round(channels * scale)))


def _mixed(b: _Builder, block: str, src: str, cin: int, widths: tuple[int, ...], scale: float) -> tuple[str, int]:
    c1, c3r, c3, c5r, c5, cp = (_scaled(c, scale) for c in widths)
    t1 = b.conv(f"{block}_1x1", src, cin, c1, 1)
    t3 = b.conv(f"{block}_3x3", b.conv(f"{block}_3x3_bottleneck", src, cin, c3r, 1), c3r, c3, 3)
    t5 = b.conv(f"{block}_5x5", b.conv(f"{block}_5x5_bottleneck", src, cin, c5r, 1), c5r, c5, 5)
    tp = b.conv(f"{block}_pool_reduce", b.pool(f"{block}_pool", src, "MaxPool", 3, 1), cin, cp, 1)
    dim = b.const(f"{block}/concat_dim", np.array(3, dtype=np.int32), to_ops=True)
    out = b.op(block, "Concat", [dim, t1, t3, t5, tp], N=4)
    return out, c1 + c3 + c5 + cp


def _head(b: _Builder, index: int, src: str, cin: int, scale: float) -> str:
    pool = b.pool(f"head{index}_pool", src, "AvgPool", 5, 3, padding="VALID")
    bottleneck = _scaled(128, scale)
    conv = b.conv(f"head{index}_bottleneck", pool, cin, bottleneck, 1)
    flat = b.reshape(f"head{index}_bottleneck/reshape", conv, 16 * bottleneck)
    hidden = _scaled(1024, scale)
    nn = b.dense(f"nn{index}", flat, 16 * bottleneck, hidden, f"nn{index}", "pre_relu")
    nn_flat = b.reshape(f"nn{index}/reshape", nn, hidden)
    return b.dense(f"softmax{index}", nn_flat, hidden, NUM_CLASSES, f"softmax{index}", "pre_activation")


def build_graph_def(scale: float = 1.0, seed: int = 0) -> graph_pb2.GraphDef:
    """Build the stand-in GraphDef; `scale` multiplies every channel count (1.0 = the real widths)."""
    if not 0 < scale <= 1:
        raise ValueError(f"synthetic scale must be in (0, 1], got {scale}")
    b = _Builder(np.random.default_rng(seed))
    placeholder = node_def_pb2.NodeDef(name="input", op="Placeholder")
    placeholder.attr["dtype"].CopyFrom(FLOAT)
    placeholder.attr["shape"].shape.CopyFrom(tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in (-1, -1, -1, 3)]))
    b.ops.append(placeholder)

    c0, c1, c2 = _scaled(64, scale), _scaled(64, scale), _scaled(192, scale)
    x = b.conv("conv2d0", "input", 3, c0, 7, stride=2)
    x = b.lrn("localresponsenorm0", b.pool("maxpool0", x, "MaxPool", 3, 2))
    x = b.conv("conv2d2", b.conv("conv2d1", x, c0, c1, 1), c1, c2, 3)
    x = b.pool("maxpool1", b.lrn("localresponsenorm1", x), "MaxPool", 3, 2)
    channels = c2
    head_inputs: dict[int, tuple[str, int]] = {}
    for block, widths in MIXED_BLOCKS.items():
        x, channels = _mixed(b, block, x, channels, widths, scale)
        for index, parent in HEADS.items():
            if parent == block:
                head_inputs[index] = (x, channels)
        if block in POOL_AFTER:
            x = b.pool(POOL_AFTER[block], x, "MaxPool", 3, 2)
    avg = b.pool("avgpool0", x, "AvgPool", 7, 1, padding="VALID")
    heads = [_head(b, index, src, cin, scale) for index, (src, cin) in sorted(head_inputs.items())]
    flat = b.reshape("avgpool0/reshape", avg, channels)
    main = b.dense("softmax2", flat, channels, NUM_CLASSES, "softmax2", "pre_activation")
    for name, src in (("output", heads[0]), ("output1", heads[1]), ("output2", main)):
        b.op(name, "Identity", [src])

    graph = graph_pb2.GraphDef()
    graph.node.extend([b.ops[0], *b.consts, *b.ops[1:]])
    return graph
