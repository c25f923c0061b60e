"""One handler per ONNX op: what atlas.model.onnx_graph calls, while it traces the converted graph, to turn an ONNX
node into TensorFlow ops. `HANDLERS` maps each op type to its handler; the op types it holds are the ops atlas
converts (docs/own-model.md lists them).

A handler takes the node (`Node`: its TensorFlow name, attributes, opset) and its inputs (`Value`s; None for an
omitted optional input) and returns its output value, or a tuple of them. A value is a numpy constant (weights, and
anything computed from constants alone) or a TensorFlow tensor. ONNX lays images out NCHW and TensorFlow's CPU
kernels want NHWC, so a 4-D tensor may be held NHWC (`Value.nhwc`): the graph's image input is, and every op that
keeps the layout (convolutions, pools, batch norms, element-wise ops) keeps it, while an op that reads axes
(Concat, Pad, Softmax, ReduceMean, LayerNormalization, Gather, Slice, Squeeze, Transpose, Shape) maps its axes
onto it. Ops that mix axes (Flatten and Reshape of a map larger than 1 x 1, MatMul) take the tensor back to ONNX's
order first (`as_plain`), as torch flattens channels first. Weights are converted once, in numpy: OIHW filters to
HWIO (depthwise ones to TensorFlow's depthwise layout), batch norms to one scale and one shift per channel.

Each handler names the TensorFlow op that holds its output by the node's name (`Node.name`, chosen by
onnx_graph), and the ops before it `<name>.<part>`, so the converted graph reads like the ONNX one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from atlas.errors import UserError

TO_NHWC = (0, 2, 3, 1)  # NCHW -> NHWC
NHWC_AXIS = (0, 3, 1, 2)  # where ONNX's axis k of an NCHW tensor is in the NHWC one; also the NHWC -> NCHW perm
INT32_MAX = 2**31 - 1

# ONNX TensorProto element types -> the dtype atlas computes in (floats all become float32, as atlas renders in it)
DTYPES = {1: tf.float32, 2: tf.uint8, 3: tf.int8, 5: tf.int16, 6: tf.int32, 7: tf.int64, 9: tf.bool, 10: tf.float32,
          11: tf.float32, 16: tf.float32}


@dataclass
class Value:
    """An ONNX tensor as the converter holds it: a numpy constant (in ONNX's axis order) or a TensorFlow tensor, in
    ONNX's axis order or, for a 4-D image tensor, NHWC (`nhwc`)."""

    data: Any  # np.ndarray or tf.Tensor
    nhwc: bool = False
    padded: tuple[Value, tuple[tuple[int, int], ...]] | None = None  # a zero Pad's input and its (rows, cols) pads
    plain: Any = field(default=None, repr=False)  # the data in ONNX's axis order, once `as_plain` made it

    @property
    def const(self) -> bool:
        return isinstance(self.data, np.ndarray)

    @property
    def rank(self) -> int:
        return self.data.ndim if self.const else self.data.shape.rank

    def shape(self) -> list[int | None]:
        """The static shape in ONNX's axis order (None where it is only known when the graph runs)."""
        dims = list(self.data.shape) if self.const else self.data.shape.as_list()
        return [dims[a] for a in NHWC_AXIS] if self.nhwc else dims


@dataclass
class Node:
    """An ONNX node being converted: its op type, its TensorFlow name, its attributes (plain Python values and numpy
    arrays) and the model's opset."""

    op: str
    name: str  # of the TensorFlow op holding its (first) output
    onnx_name: str  # the node's name in the ONNX file (may be empty)
    attrs: dict[str, Any]
    opset: int

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def part(self, suffix: str) -> str:
        """The TensorFlow name of a helper op of this node."""
        return f"{self.name}.{suffix}"

    def fail(self, why: str) -> UserError:
        """The one-line error for an input atlas cannot convert, naming the op and the node."""
        return UserError(f"cannot convert ONNX {self.op} node '{self.onnx_name or self.name}': {why}")


Inputs = list[Value | None]
Handler = Callable[[Node, Inputs], "Value | tuple[Value, ...]"]


# --------------------------------------------------------------------------------------------------- layout


def as_plain(value: Value, node: Node) -> Any:
    """The value's data in ONNX's axis order (an NHWC tensor transposed back to NCHW once, then reused)."""
    if not value.nhwc:
        return value.data
    if value.plain is None:
        _, h, w, c = value.data.shape.as_list()
        if h == 1 and w == 1 and c is not None:  # 1 x 1 maps: NHWC and NCHW hold the numbers in one order
            value.plain = tf.reshape(value.data, [-1, c, 1, 1], name=node.part("nchw"))
        else:
            value.plain = tf.transpose(value.data, NHWC_AXIS, name=node.part("nchw"))
    return value.plain


def as_nhwc(value: Value, node: Node) -> Any:
    """The data of a 4-D value, NHWC."""
    if value.rank != 4:
        raise node.fail(f"it needs a 4-D (NCHW) input, not one of rank {value.rank}")
    if value.nhwc:
        return value.data
    if value.const:
        return np.transpose(value.data, TO_NHWC)
    return tf.transpose(value.data, TO_NHWC, name=node.part("nhwc"))


def _broadcast_nhwc(value: Value, node: Node) -> Any:
    """An operand broadcast against an NHWC tensor, NHWC too: one of lower rank gains leading axes first (as ONNX's
    numpy-style broadcasting aligns trailing axes)."""
    if value.nhwc or value.rank == 0:
        return value.data
    if value.rank > 4:
        raise node.fail(f"it broadcasts a 4-D image tensor against one of rank {value.rank}")
    if value.const:
        return np.transpose(value.data.reshape((1,) * (4 - value.rank) + value.data.shape), TO_NHWC)
    data = value.data
    for _ in range(4 - value.rank):
        data = tf.expand_dims(data, 0, name=node.part("expand"))
    return tf.transpose(data, TO_NHWC, name=node.part("nhwc"))


def _matched(a: Any, b: Any) -> tuple[Any, Any]:
    """Two operands of one dtype (a constant takes the tensor's; two tensors the first's)."""
    if isinstance(a, np.ndarray) and not isinstance(b, np.ndarray):
        return a.astype(b.dtype.as_numpy_dtype), b
    if isinstance(b, np.ndarray) and not isinstance(a, np.ndarray):
        return a, b.astype(a.dtype.as_numpy_dtype)
    if not isinstance(a, np.ndarray) and a.dtype != b.dtype:
        return a, tf.cast(b, a.dtype)
    return a, b


def _axis(value: Value, axis: int) -> int:
    """The data's axis that holds ONNX's `axis` (negative counts from the end)."""
    axis %= max(value.rank, 1)
    return NHWC_AXIS[axis] if value.nhwc else axis


def _keeps_order(axes: list[int]) -> bool:
    """Whether ONNX axes (ascending) keep their order in the NHWC tensor: then dropping the others leaves ONNX's
    order."""
    mapped = [NHWC_AXIS[a] for a in axes]
    return mapped == sorted(mapped)


def _const(value: Value | None, node: Node, what: str) -> np.ndarray | None:
    """A constant input (None when omitted); one that is computed at run time is an error."""
    if value is None:
        return None
    if not value.const:
        raise node.fail(f"its {what} must be a constant (an initializer or computed from them), not computed from "
                        "the image")
    return value.data


def _float32(array: np.ndarray) -> np.ndarray:
    return np.asarray(array, np.float32)


# ------------------------------------------------------------------------------------------ element-wise


def _unary(fn: Callable[..., Any]) -> Handler:
    return lambda node, inputs: Value(fn(inputs[0].data, name=node.name), inputs[0].nhwc)


def _binary(fn: Callable[..., Any], integer: Callable[..., Any] | None = None) -> Handler:
    """An element-wise op of two inputs, with ONNX's broadcasting; `integer` replaces `fn` on integer tensors."""

    def handle(node: Node, inputs: Inputs) -> Value:
        a, b = inputs[0], inputs[1]
        nhwc = a.nhwc or b.nhwc
        if nhwc and max(a.rank, b.rank) > 4:
            x, y, nhwc = as_plain(a, node), as_plain(b, node), False
        elif nhwc:
            x, y = _broadcast_nhwc(a, node), _broadcast_nhwc(b, node)
        else:
            x, y = a.data, b.data
        x, y = _matched(x, y)
        dtype = x.dtype if isinstance(x, tf.Tensor) else tf.as_dtype(x.dtype)
        op = integer if integer is not None and dtype.is_integer else fn
        return Value(op(x, y, name=node.name), nhwc)

    return handle


def clip(node: Node, inputs: Inputs) -> Value:
    """Clip: ReLU6 for [0, 6] (torch's ReLU6), ReLU for [0, inf), else a maximum and a minimum."""
    x = inputs[0]
    if node.opset < 11:
        low, high = node.attr("min"), node.attr("max")
    else:
        low, high = (_const(v, node, "bound") for v in (_input(inputs, 1), _input(inputs, 2)))
    low = -math.inf if low is None else float(low)
    high = math.inf if high is None else float(high)
    if low == 0 and high == 6:
        return Value(tf.nn.relu6(x.data, name=node.name), x.nhwc)
    if low == 0 and high == math.inf:
        return Value(tf.nn.relu(x.data, name=node.name), x.nhwc)
    data = x.data
    if low > -math.inf:
        data = tf.maximum(data, np.float32(low), name=node.name if high == math.inf else node.part("low"))
    if high < math.inf:
        data = tf.minimum(data, np.float32(high), name=node.name)
    return Value(data, x.nhwc)


def _input(inputs: Inputs, index: int) -> Value | None:
    return inputs[index] if len(inputs) > index else None


def leaky_relu(node: Node, inputs: Inputs) -> Value:
    return Value(tf.nn.leaky_relu(inputs[0].data, alpha=node.attr("alpha", 0.01), name=node.name), inputs[0].nhwc)


def hard_sigmoid(node: Node, inputs: Inputs) -> Value:
    """max(0, min(1, alpha x + beta))."""
    x = inputs[0]
    y = tf.math.multiply(x.data, np.float32(node.attr("alpha", 0.2)), name=node.part("scale"))
    y = tf.math.add(y, np.float32(node.attr("beta", 0.5)), name=node.part("shift"))
    y = tf.maximum(y, np.float32(0), name=node.part("low"))
    return Value(tf.minimum(y, np.float32(1), name=node.name), x.nhwc)


def hard_swish(node: Node, inputs: Inputs) -> Value:
    """x * relu6(x + 3) / 6 (HardSigmoid's alpha 1/6, beta 1/2)."""
    x = inputs[0]
    gate = tf.nn.relu6(tf.math.add(x.data, np.float32(3), name=node.part("shift")), name=node.part("relu6"))
    gate = tf.math.multiply(gate, np.float32(1 / 6), name=node.part("gate"))
    return Value(tf.math.multiply(x.data, gate, name=node.name), x.nhwc)


def gelu(node: Node, inputs: Inputs) -> Value:
    """x Phi(x), exactly (erf) or with the tanh approximation (`approximate="tanh"`)."""
    x = inputs[0].data
    if node.attr("approximate", "none") == "tanh":
        cube = tf.math.multiply(tf.math.multiply(x, x, name=node.part("square")), x, name=node.part("cube"))
        inner = tf.math.add(x, tf.math.multiply(cube, np.float32(0.044715), name=node.part("cubic")),
                            name=node.part("inner"))
        inner = tf.math.multiply(inner, np.float32(math.sqrt(2 / math.pi)), name=node.part("scaled"))
        phi = tf.math.tanh(inner, name=node.part("tanh"))
    else:
        phi = tf.math.erf(tf.math.multiply(x, np.float32(1 / math.sqrt(2)), name=node.part("scaled")),
                          name=node.part("erf"))
    phi = tf.math.multiply(tf.math.add(phi, np.float32(1), name=node.part("one")), np.float32(0.5),
                           name=node.part("cdf"))
    return Value(tf.math.multiply(x, phi, name=node.name), inputs[0].nhwc)


# ------------------------------------------------------------------------------------- convolutions, norms


Pads = tuple[tuple[int, int], tuple[int, int]]  # (before, after) along rows and along columns
SAME = "SAME"  # TensorFlow's SAME padding (ONNX's auto_pad SAME_UPPER)


def _window_pads(node: Node, kernel: list[int], strides: list[int]) -> Pads | str:
    """A conv's or pool's padding from `auto_pad` and `pads` ([top, left, bottom, right]): explicit pads, or SAME."""
    auto = node.attr("auto_pad", "NOTSET")
    if auto == "VALID":
        return (0, 0), (0, 0)
    if auto == "SAME_UPPER":
        return SAME
    if auto == "SAME_LOWER":  # the odd pixel before: static only at stride 1
        if any(s != 1 for s in strides):
            raise node.fail("auto_pad SAME_LOWER with a stride above 1 is not supported; export with explicit pads")
        return tuple((k // 2, (k - 1) // 2) for k in kernel)  # type: ignore[return-value]
    pads = [int(p) for p in node.attr("pads", [0, 0, 0, 0])]
    if len(pads) != 4:
        raise node.fail(f"only 2-D windows are converted (pads {pads})")
    if any(p < 0 for p in pads):
        raise node.fail(f"negative pads {pads} are not supported")
    return (pads[0], pads[2]), (pads[1], pads[3])


def _is_same(pads: Pads, kernel: list[int], strides: list[int]) -> bool:
    """Whether explicit pads are TensorFlow's SAME at every input size: at stride 1, half the kernel on each side
    (the odd pixel after)."""
    return all(s == 1 and p == ((k - 1) // 2, k - 1 - (k - 1) // 2) for p, k, s in zip(pads, kernel, strides))


def _padded(data: Any, pads: Pads, node: Node, value: float = 0.0, suffix: str = "pad") -> Any:
    """`data` (NHWC) padded along rows and columns with `value`."""
    if all(p == (0, 0) for p in pads):
        return data
    return tf.pad(data, [[0, 0], list(pads[0]), list(pads[1]), [0, 0]], constant_values=value,
                  name=node.part(suffix))


def _window_input(x: Value, pads: Pads | str, kernel: list[int], strides: list[int], node: Node,
                  value: float = 0.0, fuse: bool = False) -> tuple[Any, str]:
    """The NHWC input of a conv or pool and its TensorFlow padding: SAME where that is exact, else VALID on the input
    padded with `value`. SAME (whose padding adds nothing to a conv, never wins a max and is not counted by an
    average) stands for the node's own pads, and with `fuse` (a conv) for a zero Pad in front of it, as torch writes
    for TensorFlow-style "same" padding, at stride 1; a Pad in front is otherwise used as it is."""
    if pads == SAME:
        return as_nhwc(x, node), SAME
    if fuse and x.padded is not None and all(p == (0, 0) for p in pads):
        source, outer = x.padded
        if _is_same(outer, kernel, strides):
            return as_nhwc(source, node), SAME
        return as_nhwc(x, node), "VALID"
    if _is_same(pads, kernel, strides):
        return as_nhwc(x, node), SAME
    return _padded(as_nhwc(x, node), pads, node, value), "VALID"


def conv(node: Node, inputs: Inputs) -> Value:
    """Conv (2-D): a Conv2D with HWIO weights (grouped: in-depth per group, as TensorFlow reads a grouped filter), a
    DepthwiseConv2dNative where each group is one input channel, and a BiasAdd for the bias."""
    x, weights, bias = inputs[0], _const(inputs[1], node, "weights"), _const(_input(inputs, 2), node, "bias")
    if weights.ndim != 4:
        raise node.fail(f"only 2-D convolutions are converted (weights of rank {weights.ndim})")
    out_channels, per_group, kh, kw = weights.shape
    strides = [int(s) for s in node.attr("strides", [1, 1])]
    dilations = [int(d) for d in node.attr("dilations", [1, 1])]
    kernel = [(k - 1) * d + 1 for k, d in zip((kh, kw), dilations)]
    data, padding = _window_input(x, _window_pads(node, kernel, strides), kernel, strides, node, fuse=True)
    group = int(node.attr("group", 1))
    in_channels = per_group * group
    stride4, dilation4 = [1, *strides, 1], [1, *dilations, 1]
    if group > 1 and per_group == 1 and strides[0] == strides[1] and dilations[0] == dilations[1]:
        multiplier = out_channels // in_channels  # output o = input o // multiplier, as TensorFlow orders them
        kernel_hwcm = weights.reshape(in_channels, multiplier, kh, kw).transpose(2, 3, 0, 1)
        y = tf.raw_ops.DepthwiseConv2dNative(input=data, filter=_float32(kernel_hwcm), strides=stride4,
                                             padding=padding, dilations=dilation4, name=node.name)
    else:
        y = tf.nn.conv2d(data, _float32(weights.transpose(2, 3, 1, 0)), stride4, padding, dilations=dilation4,
                         name=node.name)
    if bias is not None:
        y = tf.nn.bias_add(y, _float32(bias), name=node.part("bias"))
    return Value(y, nhwc=True)


def batch_norm(node: Node, inputs: Inputs) -> Value:
    """BatchNormalization in inference: x * scale + shift per channel, the scale gamma / sqrt(var + eps) and the shift
    beta - mean * scale computed once (in float64)."""
    if node.attr("training_mode", 0):
        raise node.fail("batch norm in training mode; export the model in eval mode (model.eval())")
    x = inputs[0]
    gamma, beta, mean, var = (np.asarray(_const(v, node, "statistics"), np.float64) for v in inputs[1:5])
    scale = gamma / np.sqrt(var + node.attr("epsilon", 1e-5))
    shift = beta - mean * scale
    if not x.nhwc and x.rank > 2:  # [N, C, ...]: per channel along axis 1
        scale, shift = (v.reshape(v.shape + (1,) * (x.rank - 2)) for v in (scale, shift))
    y = tf.math.multiply(x.data, _float32(scale), name=node.part("scale"))
    return Value(tf.math.add(y, _float32(shift), name=node.name), x.nhwc)


def layer_norm(node: Node, inputs: Inputs) -> Value:
    """LayerNormalization over the axes from `axis` on: (x - mean) / sqrt(var + eps) * scale + bias."""
    x, scale, bias = inputs[0], _const(inputs[1], node, "scale"), _const(_input(inputs, 2), node, "bias")
    first = node.attr("axis", -1) % x.rank
    onnx_axes = list(range(first, x.rank))
    axes = sorted(_axis(x, a) for a in onnx_axes)

    def broadcast(array: np.ndarray) -> np.ndarray:
        return _broadcast_nhwc(Value(_float32(array)), node) if x.nhwc else _float32(array)

    mean = tf.reduce_mean(x.data, axes, keepdims=True, name=node.part("mean"))
    centred = tf.math.subtract(x.data, mean, name=node.part("centred"))
    var = tf.reduce_mean(tf.math.multiply(centred, centred, name=node.part("square")), axes, keepdims=True,
                         name=node.part("variance"))
    inv = tf.math.rsqrt(tf.math.add(var, np.float32(node.attr("epsilon", 1e-5)), name=node.part("eps")),
                        name=node.part("rsqrt"))
    y = tf.math.multiply(centred, inv, name=node.part("normed"))
    y = tf.math.multiply(y, broadcast(scale), name=node.name if bias is None else node.part("scale"))
    if bias is not None:
        y = tf.math.add(y, broadcast(bias), name=node.name)
    return Value(y, x.nhwc)


# -------------------------------------------------------------------------------------------------- pools


def _pool_window(node: Node) -> tuple[list[int], list[int]]:
    kernel = [int(k) for k in node.attr("kernel_shape", [])]
    if len(kernel) != 2:
        raise node.fail(f"only 2-D pools are converted (kernel_shape {kernel})")
    if any(int(d) != 1 for d in node.attr("dilations", [1, 1])):
        raise node.fail("dilated pools are not supported")
    return kernel, [int(s) for s in node.attr("strides", [1, 1])]


def _ceil_extra(node: Node, pads: Pads | str, kernel: list[int], strides: list[int]) -> Pads:
    """The pixels ceil_mode adds after each axis, outside the pads. ONNX (as torch and onnxruntime) counts
    ceil((n + pads - kernel) / stride) + 1 windows, but drops a last one that would start in the pad after the
    input; a VALID pool over min(stride, kernel - pad after) - 1 extra pixels counts exactly that at every size n
    (without the cap it would be stride - 1 pixels; the cap only bites when kernel - pad after < stride)."""
    if not node.attr("ceil_mode", 0):
        return (0, 0), (0, 0)
    if pads == SAME:
        raise node.fail("ceil_mode with auto_pad SAME is not supported")
    return tuple((0, min(s, k - p[1]) - 1) for p, k, s in zip(pads, kernel, strides))  # type: ignore[return-value]


def _plus(a: Pads, b: Pads) -> Pads:
    return tuple((x[0] + y[0], x[1] + y[1]) for x, y in zip(a, b))  # type: ignore[return-value]


def max_pool(node: Node, inputs: Inputs) -> Value:
    """MaxPool: padding (and ceil_mode's extra pixels) is -inf, so it never wins; SAME where that is exact."""
    kernel, strides = _pool_window(node)
    pads = _window_pads(node, kernel, strides)
    extra = _ceil_extra(node, pads, kernel, strides)
    if pads != SAME:
        pads = _plus(pads, extra)
    data, padding = _window_input(inputs[0], pads, kernel, strides, node, value=-np.inf)
    return Value(tf.nn.max_pool2d(data, kernel, strides, padding, name=node.name), nhwc=True)


def average_pool(node: Node, inputs: Inputs) -> Value:
    """AveragePool: the sum of each window over the number of its pixels that count: those in the input
    (count_include_pad 0), or in the input and its pads (1); ceil_mode's extra pixels never count."""
    x = inputs[0]
    kernel, strides = _pool_window(node)
    include = bool(node.attr("count_include_pad", 0))
    pads = _window_pads(node, kernel, strides)
    extra = _ceil_extra(node, pads, kernel, strides)
    if pads == SAME:
        if include:
            raise node.fail("auto_pad SAME with count_include_pad is not supported; export with explicit pads")
        return Value(tf.nn.avg_pool2d(as_nhwc(x, node), kernel, strides, SAME, name=node.name), nhwc=True)
    full = _plus(pads, extra)
    data = as_nhwc(x, node)
    if all(p == (0, 0) for p in extra):
        if include or all(p == (0, 0) for p in pads):  # every window counts all its pixels: the kernel's size
            return Value(tf.nn.avg_pool2d(_padded(data, pads, node), kernel, strides, "VALID", name=node.name), True)
        if _is_same(pads, kernel, strides):  # SAME counts the pixels of the input only
            return Value(tf.nn.avg_pool2d(data, kernel, strides, SAME, name=node.name), nhwc=True)
    mean = tf.nn.avg_pool2d(_padded(data, full, node), kernel, strides, "VALID", name=node.part("mean"))
    counted = tf.ones_like(data[..., :1], name=node.part("ones"))  # where pixels count: 1, elsewhere 0
    if include:
        counted = tf.ones_like(_padded(counted, pads, node, suffix="padded"), name=node.part("counted"))
        counted = _padded(counted, extra, node, suffix="extra")
    else:
        counted = _padded(counted, full, node, suffix="mask")
    share = tf.nn.avg_pool2d(counted, kernel, strides, "VALID", name=node.part("share"))
    return Value(tf.math.truediv(mean, share, name=node.name), nhwc=True)


def global_pool(fn: Callable[..., Any]) -> Handler:
    """GlobalAveragePool, GlobalMaxPool: over rows and columns, kept as 1 x 1."""
    return lambda node, inputs: Value(fn(as_nhwc(inputs[0], node), [1, 2], keepdims=True, name=node.name), True)


def reduce(fn: Callable[..., Any]) -> Handler:
    """ReduceMean, ReduceMax: over `axes` (an attribute, or from opset 18 an input; none: every axis)."""

    def handle(node: Node, inputs: Inputs) -> Value:
        x = inputs[0]
        axes = node.attr("axes") if node.opset < 18 else _const(_input(inputs, 1), node, "axes")
        keep = bool(node.attr("keepdims", 1))
        if axes is None or len(axes) == 0:
            if node.attr("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.rank))
        axes = sorted({int(a) % x.rank for a in np.ravel(axes)})
        rest = [a for a in range(x.rank) if a not in axes]
        if x.nhwc and (keep or _keeps_order(rest)):
            return Value(fn(x.data, [NHWC_AXIS[a] for a in axes], keepdims=keep, name=node.name), keep)
        return Value(fn(as_plain(x, node), axes, keepdims=keep, name=node.name))

    return handle


# --------------------------------------------------------------------------------------------------- dense


def gemm(node: Node, inputs: Inputs) -> Value:
    """Gemm: alpha A' B' + beta C as a MatMul (B folded with its transpose and alpha when it is a constant) and a
    BiasAdd (or Add) for C."""
    a, b, c = inputs[0], inputs[1], _input(inputs, 2)
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    left = as_plain(a, node)
    if a.rank != 2:
        raise node.fail(f"Gemm takes 2-D inputs, not rank {a.rank}")
    if node.attr("transA", 0):
        left = tf.transpose(left, name=node.part("transpose"))
    last = node.name if c is None else node.part("matmul")
    if b.const:
        right = b.data.T if node.attr("transB", 0) else b.data
        y = tf.linalg.matmul(left, _float32(right * alpha), name=last)
    else:
        y = tf.linalg.matmul(left, as_plain(b, node), transpose_b=bool(node.attr("transB", 0)), name=last)
        if alpha != 1.0:
            y = tf.math.multiply(y, np.float32(alpha), name=node.part("alpha"))
    if c is None:
        return Value(y)
    if c.const and c.data.ndim >= 1 and c.data.size == c.data.shape[-1]:  # one bias per output
        return Value(tf.nn.bias_add(y, _float32(c.data.reshape(-1) * beta), name=node.name))
    bias = _float32(c.data * beta) if c.const else as_plain(c, node)
    return Value(tf.math.add(*_matched(y, bias), name=node.name))


def matmul(node: Node, inputs: Inputs) -> Value:
    """MatMul with numpy's rules: a MatMul of two matrices, else a batched one."""
    a, b = (as_plain(v, node) for v in inputs[:2])
    if isinstance(b, np.ndarray):
        b = _float32(b)
    return Value(tf.linalg.matmul(*_matched(a, b), name=node.name))


# ------------------------------------------------------------------------------------------------ shapes


def flatten(node: Node, inputs: Inputs) -> Value:
    """Flatten to 2-D at `axis`, in ONNX's (channels-first) order."""
    x = inputs[0]
    axis = int(node.attr("axis", 1))
    axis = axis + x.rank if axis < 0 else axis
    shape = x.shape()
    if x.nhwc and axis == 1 and shape[2] == 1 and shape[3] == 1 and shape[1] is not None:
        return Value(tf.reshape(x.data, [-1, shape[1]], name=node.name))  # after a global pool: one order
    data = as_plain(x, node)
    lead, rest = shape[:axis], shape[axis:]
    if None not in lead:
        target: Any = [math.prod(lead), -1]
    elif None not in rest:
        target = [-1, math.prod(rest)]
    elif axis == 1:
        target = tf.stack([tf.shape(data, name=node.part("shape"))[0], -1], name=node.part("target"))
    else:
        raise node.fail(f"Flatten at axis {axis} of a tensor with unknown sizes {shape} is not supported")
    return Value(tf.reshape(data, target, name=node.name))


def reshape(node: Node, inputs: Inputs) -> Value:
    """Reshape in ONNX's order (0 copies the input's size unless `allowzero`); a 1 x 1 NHWC map is reshaped as it
    is, the numbers being in ONNX's order already."""
    x, shape = inputs[0], inputs[1]
    dims = x.shape()
    data = x.data if x.nhwc and dims[2] == 1 and dims[3] == 1 else as_plain(x, node)
    if not shape.const:
        return Value(tf.reshape(data, shape.data, name=node.name))
    target = [int(t) for t in shape.data]
    if not node.attr("allowzero", 0) and 0 in target:
        if any(t == 0 and dims[i] is None for i, t in enumerate(target)):
            sizes = tf.shape(data, out_type=tf.int64, name=node.part("shape"))
            source = [NHWC_AXIS[i] if data is x.data and x.nhwc else i for i in range(len(dims))]
            parts = [sizes[source[i]] if t == 0 else tf.constant(t, tf.int64) for i, t in enumerate(target)]
            return Value(tf.reshape(data, tf.stack(parts, name=node.part("target")), name=node.name))
        target = [dims[i] if t == 0 else t for i, t in enumerate(target)]
    return Value(tf.reshape(data, np.asarray(target, np.int64), name=node.name))


def transpose(node: Node, inputs: Inputs) -> Value:
    """Transpose; on an NHWC tensor the permutation is composed with the layout's, often to none at all (torch's
    permute(0, 2, 3, 1) before a LayerNorm over channels is the NHWC tensor as it is)."""
    x = inputs[0]
    perm = [int(p) for p in node.attr("perm", list(range(x.rank))[::-1])]
    if not x.nhwc:
        if perm == sorted(perm):
            return x
        if tuple(perm) == NHWC_AXIS:  # channels-last back to NCHW: the tensor as it is, held NHWC
            return Value(x.data, nhwc=True)
        return Value(tf.transpose(x.data, perm, name=node.name))
    plain = [NHWC_AXIS[p] for p in perm]  # the result in ONNX's order, from the NHWC tensor
    as_nhwc_perm = [plain[a] for a in TO_NHWC]  # the result NHWC, from the NHWC tensor
    if as_nhwc_perm == [0, 1, 2, 3]:
        return x
    if plain == [0, 1, 2, 3]:
        return Value(x.data)
    return Value(tf.transpose(x.data, plain, name=node.name))


def pad(node: Node, inputs: Inputs) -> Value:
    """Pad: constant (zeros: Pad; other values: PadV2), reflect (MirrorPad) or edge (MirrorPad SYMMETRIC, for pads
    of at most 1). A zero Pad of rows and columns remembers its input, so a conv after it can use SAME instead."""
    x = inputs[0]
    mode = node.attr("mode", "constant")
    if node.opset < 11:
        pads, value, axes = node.attr("pads"), float(node.attr("value", 0.0)), None
    else:
        pads = _const(inputs[1], node, "pads")
        fill = _const(_input(inputs, 2), node, "constant value")
        value = float(fill.reshape(-1)[0]) if fill is not None and fill.size else 0.0
        axes = _const(_input(inputs, 3), node, "axes")
    pads = [int(p) for p in np.ravel(pads)]
    axes = list(range(x.rank)) if axes is None else [int(a) % x.rank for a in np.ravel(axes)]
    per_axis = [[0, 0] for _ in range(x.rank)]
    for i, axis in enumerate(axes):
        per_axis[axis] = [pads[i], pads[i + len(axes)]]
    if any(p < 0 for pair in per_axis for p in pair):
        raise node.fail(f"negative pads (cropping) {pads} are not supported")
    paddings = [per_axis[a] for a in TO_NHWC] if x.nhwc else per_axis
    data = x.data
    if mode == "constant":
        y = tf.pad(data, paddings, constant_values=value, name=node.name)
        spatial_only = x.nhwc and paddings[0] == [0, 0] and paddings[3] == [0, 0]
        padded = (x, (tuple(paddings[1]), tuple(paddings[2]))) if value == 0 and spatial_only else None
        return Value(y, x.nhwc, padded=padded)  # type: ignore[arg-type]
    if mode == "edge" and max(pads) > 1:
        raise node.fail("edge padding of more than 1 pixel is not supported")
    if mode not in ("reflect", "edge"):
        raise node.fail(f"pad mode '{mode}' is not supported (constant, reflect and edge are)")
    return Value(tf.pad(data, paddings, mode="REFLECT" if mode == "reflect" else "SYMMETRIC", name=node.name),
                 x.nhwc)


def concat(node: Node, inputs: Inputs) -> Value:
    """Concat along `axis` (channels of NHWC maps along their last axis)."""
    values = [v for v in inputs if v is not None]
    axis = int(node.attr("axis"))
    if len(values) == 1:
        return values[0]
    if any(v.nhwc for v in values) and all(v.rank == 4 for v in values):
        return Value(tf.concat([as_nhwc(v, node) for v in values], NHWC_AXIS[axis % 4], name=node.name), True)
    parts = [as_plain(v, node) for v in values]
    tensor = next(p for p in parts if not isinstance(p, np.ndarray))
    parts = [_matched(p, tensor)[0] for p in parts]
    return Value(tf.concat(parts, axis % values[0].rank, name=node.name))


def softmax(node: Node, inputs: Inputs) -> Value:
    """Softmax along `axis` (from opset 13; before, over the axes from `axis` on, converted on the last axis)."""
    x = inputs[0]
    axis = node.attr("axis", -1 if node.opset >= 13 else 1) % x.rank
    if node.opset < 13 and axis != x.rank - 1:
        raise node.fail(f"Softmax over the axes from {axis} on (opset {node.opset}) is converted on the last axis "
                        "only; export with opset 13 or later")
    target = _axis(x, axis)
    if target == x.rank - 1:
        return Value(tf.nn.softmax(x.data, name=node.name), x.nhwc)
    perm = list(range(x.rank))
    perm[target], perm[-1] = perm[-1], perm[target]
    moved = tf.transpose(x.data, perm, name=node.part("moved"))
    y = tf.nn.softmax(moved, name=node.part("softmax"))
    return Value(tf.transpose(y, perm, name=node.name), x.nhwc)


def shape(node: Node, inputs: Inputs) -> Value:
    """Shape (int64, ONNX's order; `start`/`end` from opset 15), computed on the tensor the graph runs on."""
    x = inputs[0]
    start, end = node.attr("start", 0), node.attr("end")
    if x.const:
        return Value(np.asarray(x.data.shape, np.int64)[start:end])
    order = [NHWC_AXIS[a] if x.nhwc else a for a in range(x.rank)][start:end]
    if order == list(range(x.rank)):
        return Value(tf.shape(x.data, out_type=tf.int64, name=node.name))
    sizes = tf.shape(x.data, out_type=tf.int64, name=node.part("shape"))
    return Value(tf.gather(sizes, order, name=node.name))


def gather(node: Node, inputs: Inputs) -> Value:
    """Gather along `axis` with constant indices (negative ones counted from the end)."""
    x, indices = inputs[0], _const(inputs[1], node, "indices")
    axis = node.attr("axis", 0) % x.rank
    if np.any(indices < 0):
        size = x.shape()[axis]
        if size is None:
            raise node.fail("negative indices into an axis whose size is known only at run time")
        indices = np.where(indices < 0, indices + size, indices)
    if x.nhwc and indices.ndim == 1:
        return Value(tf.gather(x.data, indices, axis=NHWC_AXIS[axis], name=node.name), True)
    return Value(tf.gather(as_plain(x, node), indices, axis=axis, name=node.name))


def unsqueeze(node: Node, inputs: Inputs) -> Value:
    """Unsqueeze: new axes of size 1 (`axes` an attribute before opset 13, then an input)."""
    x = inputs[0]
    axes = node.attr("axes") if node.opset < 13 else _const(inputs[1], node, "axes")
    rank = x.rank + len(np.ravel(axes))
    data = as_plain(x, node)
    ordered = sorted(int(a) % rank for a in np.ravel(axes))
    for i, axis in enumerate(ordered):
        data = tf.expand_dims(data, axis, name=node.name if i == len(ordered) - 1 else node.part(f"expand{i}"))
    return Value(data)


def squeeze(node: Node, inputs: Inputs) -> Value:
    """Squeeze `axes` (all of size 1 when none are given)."""
    x = inputs[0]
    axes = node.attr("axes") if node.opset < 13 else _const(_input(inputs, 1), node, "axes")
    dims = x.shape()
    if axes is None:
        if None in dims:
            raise node.fail("Squeeze without axes of a tensor whose sizes are known only at run time")
        axes = [i for i, d in enumerate(dims) if d == 1]
    axes = sorted(int(a) % x.rank for a in np.ravel(axes))
    rest = [a for a in range(x.rank) if a not in axes]
    if x.nhwc and _keeps_order(rest):
        return Value(tf.squeeze(x.data, [NHWC_AXIS[a] for a in axes], name=node.name))
    return Value(tf.squeeze(as_plain(x, node), axes, name=node.name))


def slice_(node: Node, inputs: Inputs) -> Value:
    """Slice with constant starts, ends, axes and steps (attributes before opset 10), as a StridedSlice; bounds past
    the size (torch writes INT64_MAX for "to the end") are clamped."""
    x = inputs[0]
    if node.opset < 10:
        starts, ends, axes, steps = node.attr("starts"), node.attr("ends"), node.attr("axes"), None
    else:
        starts, ends, axes, steps = (_const(_input(inputs, i), node, what) for i, what in
                                     ((1, "starts"), (2, "ends"), (3, "axes"), (4, "steps")))
    starts, ends = [int(s) for s in np.ravel(starts)], [int(e) for e in np.ravel(ends)]
    axes = list(range(len(starts))) if axes is None else [int(a) % x.rank for a in np.ravel(axes)]
    steps = [1] * len(starts) if steps is None else [int(s) for s in np.ravel(steps)]
    begin, end, stride = [0] * x.rank, [0] * x.rank, [1] * x.rank
    whole = (1 << x.rank) - 1  # axes not sliced run from start to end
    for axis, first, last, step in zip(axes, starts, ends, steps):
        target = _axis(x, axis)
        # out-of-range bounds are clamped to the axis as ONNX does (past the start with a negative step: to -1)
        begin[target], end[target], stride[target] = _clamped(first), _clamped(last), step
        whole &= ~(1 << target)
    begin_mask = end_mask = whole
    y = tf.strided_slice(x.data, np.asarray(begin, np.int64), np.asarray(end, np.int64), np.asarray(stride, np.int64),
                         begin_mask=begin_mask, end_mask=end_mask, name=node.name)
    return Value(y, x.nhwc)


def _clamped(bound: int) -> int:
    return max(-INT32_MAX, min(INT32_MAX, bound))


def cast(node: Node, inputs: Inputs) -> Value:
    """Cast (every float type becomes float32, atlas's)."""
    x, to = inputs[0], int(node.attr("to"))
    if to not in DTYPES:
        raise node.fail(f"cast to ONNX type {to} is not supported")
    if x.data.dtype == DTYPES[to]:
        return x
    return Value(tf.cast(x.data, DTYPES[to], name=node.name), x.nhwc)


def identity(node: Node, inputs: Inputs) -> Value:
    return inputs[0]


def dropout(node: Node, inputs: Inputs) -> Value:
    """Dropout in inference: its input (a mask output is not supported)."""
    training = _const(_input(inputs, 2), node, "training mode")
    if training is not None and bool(np.ravel(training)[0]):
        raise node.fail("dropout in training mode; export the model in eval mode (model.eval())")
    return inputs[0]


def constant(node: Node, inputs: Inputs) -> Value:
    """Constant: its `value` tensor, or `value_float(s)` / `value_int(s)`."""
    for key, dtype in (("value", None), ("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in node.attrs:
            return Value(np.asarray(node.attrs[key], dtype))
    raise node.fail("a Constant without a value, value_float(s) or value_int(s) is not supported")


def _divide(x: Any, y: Any, name: str) -> Any:
    return tf.math.truediv(x, y, name=name)


HANDLERS: dict[str, Handler] = {
    "Conv": conv,
    "BatchNormalization": batch_norm,
    "Relu": _unary(tf.nn.relu),
    "LeakyRelu": leaky_relu,
    "Clip": clip,
    "Sigmoid": _unary(tf.math.sigmoid),
    "HardSigmoid": hard_sigmoid,
    "HardSwish": hard_swish,
    "Erf": _unary(tf.math.erf),
    "Gelu": gelu,
    "Tanh": _unary(tf.math.tanh),
    "Sqrt": _unary(tf.math.sqrt),
    "Add": _binary(tf.math.add),
    "Sub": _binary(tf.math.subtract),
    "Mul": _binary(tf.math.multiply),
    "Div": _binary(_divide, integer=tf.math.floordiv),
    "Pow": _binary(tf.math.pow),
    "Concat": concat,
    "MaxPool": max_pool,
    "AveragePool": average_pool,
    "GlobalAveragePool": global_pool(tf.reduce_mean),
    "GlobalMaxPool": global_pool(tf.reduce_max),
    "ReduceMean": reduce(tf.reduce_mean),
    "ReduceMax": reduce(tf.reduce_max),
    "Flatten": flatten,
    "Reshape": reshape,
    "Gemm": gemm,
    "MatMul": matmul,
    "Transpose": transpose,
    "Pad": pad,
    "LayerNormalization": layer_norm,
    "Softmax": softmax,
    "Identity": identity,
    "Dropout": dropout,
    "Constant": constant,
    "Shape": shape,
    "Gather": gather,
    "Unsqueeze": unsqueeze,
    "Squeeze": squeeze,
    "Slice": slice_,
    "Cast": cast,
}
