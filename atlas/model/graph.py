"""Load a frozen GoogLeNet-style graph, catalogue its layers, and build differentiable layer functions.

A layer function maps a batch of NHWC float32 images (RGB pixels 0..255) to that layer's activations; the
model's `Preprocess` (atlas.model.preprocess) turns the pixels into its input first. It is
a `tf.function` that evaluates only the nodes the layer depends on. Weights are eager constants created
once per model and captured by reference, so every layer function shares one copy.

With `precision="bfloat16"` the weights (one bfloat16 copy, also shared) and activations are bfloat16 while
inputs and outputs stay float32: about 1.5x faster gradient steps on CPUs with AVX512_BF16 (see
benchmarks/render_speed.py), at the cost of gradients that are close to but not equal to float32's.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Callable

import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow.core.framework import graph_pb2, node_def_pb2
from tensorflow.python.framework import tensor_util

from atlas.errors import UserError
from atlas.model.catalogue import (
    AnyLayer,
    BlockOutput,
    Grid,
    Layer,
    catalogue,
    find_layer,
    in_order,
    input_name,
    layer_grids,
    output_index,
    source_name,
    topological_order,
)
from atlas.model.classifier import named_logits
from atlas.model.preprocess import GOOGLENET, Preprocess
from atlas.model.source import ModelSource, read_graph_bytes, resolve

LayerFn = Callable[[tf.Tensor], tf.Tensor]
LayersFn = Callable[[tf.Tensor], tuple[tf.Tensor, ...]]
PatchedFn = Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, ...]]  # (images, a layer's value) -> targets
GradientsFn = Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor, tuple[tf.Tensor, ...], tuple[tf.Tensor, ...]]]
PathGradientsFn = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]  # (images, a layer's value, classes)
PRECISIONS = {"float32": tf.float32, "bfloat16": tf.bfloat16}
# No bfloat16 kernel on every CPU build (LRN; Rsqrt and Sqrt of a batch norm's variance, which also lose most of
# their precision in bfloat16): computed in float32 inside a bfloat16 model.
FLOAT32_ONLY = {"LRN", "Rsqrt", "Sqrt"}


def _s(node: node_def_pb2.NodeDef, key: str) -> str:
    return node.attr[key].s.decode() if key in node.attr else "NHWC"


def _ints(node: node_def_pb2.NodeDef, key: str) -> list[int]:
    return list(node.attr[key].list.i)


def _dilations(node: node_def_pb2.NodeDef) -> list[int] | None:
    return _ints(node, "dilations") or None


def _depthwise(node: node_def_pb2.NodeDef, args: list[tf.Tensor]) -> tf.Tensor:
    return tf.raw_ops.DepthwiseConv2dNative(
        input=args[0], filter=args[1], strides=_ints(node, "strides"), padding=_s(node, "padding"),
        explicit_paddings=_ints(node, "explicit_paddings"), data_format=_s(node, "data_format"),
        dilations=_dilations(node) or [1, 1, 1, 1])


def _pool(fn: Callable[..., tf.Tensor]) -> Callable[[node_def_pb2.NodeDef, list[tf.Tensor]], tf.Tensor]:
    return lambda n, a: fn(a[0], ksize=_ints(n, "ksize"), strides=_ints(n, "strides"),
                           padding=_s(n, "padding"), data_format=_s(n, "data_format"))


# Each supported op: (node, evaluated data inputs) -> tensor.
OPS: dict[str, Callable[[node_def_pb2.NodeDef, list[tf.Tensor]], tf.Tensor]] = {
    "Conv2D": lambda n, a: tf.nn.conv2d(a[0], a[1], strides=_ints(n, "strides"), padding=_s(n, "padding"),
                                        dilations=_dilations(n), data_format=_s(n, "data_format")),
    "DepthwiseConv2dNative": _depthwise,
    "BiasAdd": lambda n, a: tf.nn.bias_add(a[0], a[1], data_format=_s(n, "data_format")),
    "Add": lambda n, a: a[0] + a[1],
    "AddV2": lambda n, a: a[0] + a[1],
    "Sub": lambda n, a: a[0] - a[1],
    "Mul": lambda n, a: a[0] * a[1],
    "Relu": lambda n, a: tf.nn.relu(a[0]),
    "Relu6": lambda n, a: tf.nn.relu6(a[0]),
    "RealDiv": lambda n, a: a[0] / a[1],
    "Maximum": lambda n, a: tf.maximum(a[0], a[1]),
    "Rsqrt": lambda n, a: tf.math.rsqrt(a[0]),
    "Sqrt": lambda n, a: tf.sqrt(a[0]),
    "Sigmoid": lambda n, a: tf.sigmoid(a[0]),
    "Identity": lambda n, a: a[0],
    "IdentityN": lambda n, a: tuple(a),  # several outputs: a consumer's `name:k` reads the k-th
    "Pad": lambda n, a: tf.pad(a[0], a[1]),
    "Mean": lambda n, a: tf.reduce_mean(a[0], axis=a[1], keepdims=n.attr["keep_dims"].b),
    "Max": lambda n, a: tf.reduce_max(a[0], axis=a[1], keepdims=n.attr["keep_dims"].b),
    "Shape": lambda n, a: tf.shape(a[0], out_type=n.attr["out_type"].type),
    "StridedSlice": lambda n, a: tf.raw_ops.StridedSlice(
        input=a[0], begin=a[1], end=a[2], strides=a[3], **{k: n.attr[k].i for k in (
            "begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask", "shrink_axis_mask")}),
    "Pack": lambda n, a: tf.stack(a, axis=n.attr["axis"].i),
    "Squeeze": lambda n, a: tf.squeeze(a[0], axis=_ints(n, "squeeze_dims") or None),
    "LRN": lambda n, a: tf.nn.local_response_normalization(
        a[0], depth_radius=n.attr["depth_radius"].i, bias=n.attr["bias"].f, alpha=n.attr["alpha"].f,
        beta=n.attr["beta"].f),
    "MaxPool": _pool(tf.nn.max_pool2d),
    "AvgPool": _pool(tf.nn.avg_pool2d),
    "Concat": lambda n, a: tf.concat(a[1:], axis=a[0]),
    "ConcatV2": lambda n, a: tf.concat(a[:-1], axis=a[-1]),
    "Reshape": lambda n, a: tf.reshape(a[0], a[1]),
    "MatMul": lambda n, a: tf.linalg.matmul(a[0], a[1], transpose_a=n.attr["transpose_a"].b,
                                            transpose_b=n.attr["transpose_b"].b),
    "Softmax": lambda n, a: tf.nn.softmax(a[0]),
    # what converted ONNX graphs use besides (atlas.model.onnx_ops)
    "LeakyRelu": lambda n, a: tf.nn.leaky_relu(a[0], alpha=n.attr["alpha"].f),
    "Minimum": lambda n, a: tf.minimum(a[0], a[1]),
    "Erf": lambda n, a: tf.math.erf(a[0]),
    "Tanh": lambda n, a: tf.math.tanh(a[0]),
    "Pow": lambda n, a: tf.math.pow(a[0], a[1]),
    "FloorDiv": lambda n, a: tf.math.floordiv(a[0], a[1]),
    "Transpose": lambda n, a: tf.transpose(a[0], a[1]),
    "GatherV2": lambda n, a: tf.gather(a[0], a[1], axis=a[2], batch_dims=n.attr["batch_dims"].i),
    "ExpandDims": lambda n, a: tf.expand_dims(a[0], a[1]),
    "Cast": lambda n, a: tf.cast(a[0], n.attr["DstT"].type),
    "OnesLike": lambda n, a: tf.ones_like(a[0]),
    "PadV2": lambda n, a: tf.pad(a[0], a[1], constant_values=a[2]),
    "MirrorPad": lambda n, a: tf.pad(a[0], a[1], mode=n.attr["mode"].s.decode()),
    "BatchMatMulV2": lambda n, a: tf.linalg.matmul(a[0], a[1], adjoint_a=n.attr["adj_x"].b,
                                                   adjoint_b=n.attr["adj_y"].b),
}


# The linearised network of the circuits analysis (atlas.model.circuits): each non-linear op replaced by its
# expansion at an all-zero input, where the expanded weights are read (their source tensor is zero):
# - ReLU, ReLU6 -> identity (their slope just above zero; ReLU6's cap at 6 plays no part near zero);
# - max-pool -> the average pool of the same window, stride and padding (the linear pool closest to a max);
#   a global max (Max over rows and columns) -> the global mean, likewise;
# - LRN -> x / (bias + alpha * sum x^2)^beta ~ x * bias^-beta, its Jacobian at zero, a constant scale;
# - Sigmoid -> its tangent at zero, sigmoid(0) + sigmoid'(0) x = 1/2 + x/4; likewise Erf -> 2x/sqrt(pi), Tanh -> x,
#   LeakyRelu -> identity (as ReLU), and a max-pool's -inf padding (PadV2) -> zeros, for the average pool above.
# A product of two activations (Mul: EfficientNet's swish x * sigmoid(x), a squeeze-and-excitation gate
# x * sigmoid(s)) stays a product: the gradient the circuits take at the zero source is then the product rule,
# exactly the product's first-order term there; for a swish at zero that is 1/2 = swish'(0). Such a network is
# no longer affine: forward impulses (`output_weights`) also carry the product's second-order term.
# Everything else (conv, bias, batch norm's affine ops, Add, Concat, Pad, Mean, AvgPool) is linear already.
LINEAR_OPS: dict[str, Callable[[node_def_pb2.NodeDef, list[tf.Tensor]], tf.Tensor]] = {
    "Relu": lambda n, a: a[0],
    "Relu6": lambda n, a: a[0],
    "MaxPool": _pool(tf.nn.avg_pool2d),
    "LRN": lambda n, a: a[0] * (n.attr["bias"].f ** -n.attr["beta"].f),
    "Sigmoid": lambda n, a: 0.5 + a[0] / 4,
    "Max": lambda n, a: tf.reduce_mean(a[0], axis=a[1], keepdims=n.attr["keep_dims"].b),
    "LeakyRelu": lambda n, a: a[0],  # its slope just above zero
    "Erf": lambda n, a: a[0] * (2 / math.sqrt(math.pi)),  # its tangent at zero
    "Tanh": lambda n, a: a[0],
    "PadV2": lambda n, a: tf.pad(a[0], a[1]),  # a max-pool's -inf padding, for the average pool standing in for it
}
LINEARISED = {**OPS, **LINEAR_OPS}


def parse_graph_def(data: bytes, origin: str) -> graph_pb2.GraphDef:
    """Parse serialized bytes as a GraphDef, or explain in one line why they are not one."""
    graph = graph_pb2.GraphDef()
    try:
        graph.ParseFromString(data)
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise UserError(f"{origin} is not a TensorFlow GraphDef ({exc}); pass a frozen .pb such as "
                        "tensorflow_inception_graph.pb, or delete a damaged cached copy") from None
    if not graph.node or any(not node.op for node in graph.node):
        raise UserError(f"{origin} is not a TensorFlow GraphDef (no nodes); pass a frozen .pb such as "
                        "tensorflow_inception_graph.pb, or delete a damaged cached copy")
    return graph


@dataclass
class Model:
    """A loaded graph, its catalogue and a cache of layer functions."""

    source: ModelSource
    graph_def: graph_pb2.GraphDef
    layers: list[Layer]
    sha256: str  # of the serialized graph: identifies the weights in manifests
    preprocess: Preprocess = GOOGLENET  # RGB pixels 0..255 -> the graph's input
    input: str = "input"
    blocks: list[BlockOutput] = field(default_factory=list)  # where branches merge, low to high
    _consts: dict[str, dict[str, tf.Tensor]] = field(default_factory=dict, repr=False)
    _fns: dict[tuple[str, str], LayerFn] = field(default_factory=dict, repr=False)
    _multi: dict[tuple[tuple[str, ...], str], LayersFn] = field(default_factory=dict, repr=False)
    _patched: dict[tuple, PatchedFn] = field(default_factory=dict, repr=False)
    _gradients: dict[tuple, GradientsFn] = field(default_factory=dict, repr=False)
    _paths: dict[tuple, PathGradientsFn] = field(default_factory=dict, repr=False)
    _between: dict[tuple[str, str], Callable[[tf.Tensor, tf.Tensor], tf.Tensor]] = field(default_factory=dict,
                                                                                         repr=False)
    _order: list[node_def_pb2.NodeDef] = field(default_factory=list, repr=False)
    _nodes: set[str] = field(default_factory=set, repr=False)
    _grids: dict[tuple[int, int], dict[str, Grid]] = field(default_factory=dict, repr=False)
    _work: list[float] = field(default_factory=list, repr=False)
    _logits: list[str | None] = field(default_factory=list, repr=False)

    @property
    def spec(self) -> str:
        return self.source.spec

    @property
    def render_key(self) -> str:
        """What identifies the model in the hash of its renders: the weights' sha256 and the preprocessing, so two
        preprocessings of the same weights never share renders. GoogLeNet's (mean 117) adds nothing, so runs made
        before models declared their preprocessing keep their hashes."""
        if self.preprocess.key() == GOOGLENET.key():
            return self.sha256
        return f"{self.sha256} {self.preprocess.key()}"

    @property
    def work(self) -> float:
        """This model's work per image over GoogLeNet's: the FLOPs of a full forward pass (every catalogued layer)
        at 224 px, counted once from the graph (atlas.model.flops.relative_work); the automatic batch size divides
        by it."""
        if not self._work:
            from atlas.model.flops import full_pass_flops, relative_work

            flops = full_pass_flops(self.graph_def, [layer.tensor for layer in self.layers], self.input)
            self._work.append(relative_work(flops))
        return self._work[0]

    @property
    def channels(self) -> int:
        return sum(layer.channels for layer in self.layers)

    def layer(self, name: str) -> Layer:
        return find_layer(self.layers, name)

    @property
    def all_layers(self) -> list[AnyLayer]:
        """The conv layers and the block outputs, low to high: what a sweep can select."""
        return in_order([*self.layers, *self.blocks])

    def any_layer(self, name: str) -> AnyLayer:
        """A conv layer (by name or conv op) or a block output (by name); unknown: one line with suggestions."""
        return find_layer(self.all_layers, name)

    def tensor_name(self, name: str) -> str:
        """The graph node whose output `name` is: a catalogued layer or block output by its name (a layer's unit,
        after bias and batch norm, even where its conv node has that name too, as in a converted ONNX graph; a block
        output such as `mixed4c`, `conv2_block1_out`, which classic DeepDream targets), any activation node of the
        graph by its own name, or a catalogued layer by its conv op; unknown names get the catalogue's helpful
        error, which also suggests block outputs."""
        named = next((item for item in [*self.layers, *self.blocks] if item.name == name), None)
        if named is not None:
            return named.tensor
        if name in self._activation_nodes():
            return name
        return find_layer(self.layers, name, also=[b.name for b in self.blocks]).tensor

    def layer_fn(self, name: str, precision: str = "float32") -> LayerFn:
        """The differentiable function images (0..255) -> activations of `name`; built once.

        Inputs and outputs are float32; `precision` ("float32" or "bfloat16") is that of the weights and
        activations in between. The classifier's logits see images of any size resized to CLASSIFIER_PX (class
        visualisations: a fixed-size head such as GoogLeNet's takes no other size, and any classifier was trained
        at its own).
        """
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
        key = (self.tensor_name(name), precision)
        if key not in self._fns:
            forward = self._forward((key[0],), precision)
            if key[0] == self.logits_tensor():  # a classifier sees every image at its input size
                self._fns[key] = _image_function(lambda images: forward(tf.image.resize(
                    images, [CLASSIFIER_PX, CLASSIFIER_PX], method="bilinear", antialias=True))[0])
            else:
                self._fns[key] = _image_function(lambda images: forward(images)[0])
        return self._fns[key]

    def logits_tensor(self) -> str | None:
        """The node of the classifier's logits (atlas.model.classifier.model_logits), or None; found once."""
        if not self._logits:
            from atlas.model.classifier import model_logits

            self._logits.append(model_logits(self.source, self.graph_def))
        return self._logits[0]

    def layers_fn(self, names: list[str] | tuple[str, ...], precision: str = "float32") -> LayersFn:
        """One function images (0..255) -> the activations of every layer in `names`, in that order,
        evaluating the union of the nodes they need once per call (the all-layers pass); built once."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
        key = (tuple(self.tensor_name(name) for name in names), precision)
        if key not in self._multi:
            self._multi[key] = _image_function(self._forward(key[0], precision))
        return self._multi[key]

    def subgraph_fn(self, start: str, targets: tuple[str, ...], linear: bool = False) -> LayersFn:
        """The plain (untraced) function activations of node `start` -> activations of `targets`, evaluating only
        the nodes between them; `linear` swaps every non-linear op for its linear stand-in (`LINEAR_OPS`).
        With `start` the graph's input it takes pixels (0..255), as `layer_fn` does. float32 throughout."""
        return self._forward(tuple(self.tensor_name(t) for t in targets), "float32", start=self.tensor_name(start)
                             if start != self.input else start, linear=linear)

    def patched_fn(self, layer: str, targets: tuple[str, ...] | list[str], linear: bool = False) -> PatchedFn:
        """The function (images 0..255, a value for `layer`'s tensor) -> activations of `targets`: `layer` takes
        the value, everything else is computed from the images (a catalogued layer's sibling branches too);
        `linear` linearises the network above `layer` (`LINEAR_OPS`, as the circuits do), which is then affine
        in the value. float32; built once."""
        key = (self.tensor_name(layer), tuple(self.tensor_name(t) for t in targets), linear)
        if key not in self._patched:
            forward = self._forward(key[1], start=None, linear=linear, patch=key[0])
            self._patched[key] = tf.function(forward, input_signature=[
                tf.TensorSpec([None, None, None, 3], tf.float32), tf.TensorSpec(None, tf.float32)],
                reduce_retracing=True, autograph=False)
        return self._patched[key]

    def reads(self, upper: str, lower: str) -> bool:
        """Whether the tensor `upper` depends on the tensor `lower` (or is it)."""
        lower, upper = self.tensor_name(lower), self.tensor_name(upper)
        return upper == lower or any(source_name(ref) == lower for node in self._needed((upper,), patch=lower)
                                     for ref in node.input)

    def class_gradients_fn(self, layers: list[str] | tuple[str, ...], logits: str, k: int, linear: bool = False
                           ) -> GradientsFn:
        """One function images (0..255) -> (the top `k` classes [N, k] int32, best first, and their logits
        [N, k], from the node `logits`; the activations of every layer in `layers`; per layer, the gradients of
        the k logits with respect to its activations [N, k, H, W, C]), from one forward pass and one persistent
        tape (one backward per class). With `linear`, each layer's gradients are taken through the network above
        it linearised (`patched_fn`), so a logit is affine in the layer's activations; the classes and logits are
        still the real network's. Layers that do not feed the logits get zero gradients. Built once."""
        names = tuple(self.tensor_name(name) for name in layers)
        target = self.tensor_name(logits)
        key = (names, target, k, linear)
        if key not in self._gradients:
            forward = self._forward((*names, target))
            linearised = [self._forward((target,), linear=True, patch=name) for name in names] if linear else []

            def gradients(images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tuple[tf.Tensor, ...],
                                                      tuple[tf.Tensor, ...]]:
                with tf.GradientTape(persistent=True) as tape:
                    tape.watch(images)
                    *acts, scores = forward(images)
                    if scores.shape.rank != 2:  # per photo, its logits as one vector
                        scores = tf.reshape(scores, [tf.shape(scores)[0], -1])
                    top = tf.math.top_k(scores, min(k, scores.shape[-1] or k))
                    heads = [tf.reshape(f(images, a)[0], tf.shape(scores)) for f, a in zip(linearised, acts)]
                    picked = [tf.gather(h, top.indices, batch_dims=1) for h in heads or [scores]]  # [N, k] each
                    sums = [[tf.reduce_sum(p[:, j]) for j in range(top.indices.shape[-1])] for p in picked]
                if linear:
                    grads = [_stacked_gradients(tape, s, [a])[0] for s, a in zip(sums, acts)]
                else:  # one backward per class gives every layer's gradients
                    grads = _stacked_gradients(tape, sums[0], acts)
                return top.indices, top.values, tuple(acts), tuple(grads)

            self._gradients[key] = _image_function(gradients)
        return self._gradients[key]

    def path_gradients_fn(self, layer: str, logits: str, k: int, linear: bool = False) -> PathGradientsFn:
        """The function (images 0..255, a value of `layer`'s tensor [N, H, W, C], class indices [N, k] int32) ->
        the gradients of each photo's k class logits (from the node `logits`) with respect to the value
        [N, k, H, W, C], the network above the layer evaluated at the value (`patched_fn`: its sibling branches
        from the images; `linear` linearises it): what integrated gradients average along a path. Built once."""
        key = (self.tensor_name(layer), self.tensor_name(logits), k, linear)
        if key not in self._paths:
            forward = self._forward((key[1],), linear=linear, patch=key[0])

            def gradients(images: tf.Tensor, value: tf.Tensor, classes: tf.Tensor) -> tf.Tensor:
                with tf.GradientTape(persistent=True) as tape:
                    tape.watch(value)
                    scores = forward(images, value)[0]
                    picked = tf.gather(tf.reshape(scores, [tf.shape(scores)[0], -1]), classes, batch_dims=1)
                    sums = [tf.reduce_sum(picked[:, j]) for j in range(k)]
                return _stacked_gradients(tape, sums, [value])[0]

            self._paths[key] = tf.function(gradients, input_signature=[
                tf.TensorSpec([None, None, None, 3], tf.float32), tf.TensorSpec([None, None, None, None], tf.float32),
                tf.TensorSpec([None, k], tf.int32)], reduce_retracing=True, autograph=False)
        return self._paths[key]

    def between_fn(self, lower: str, upper: str) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
        """The function (images 0..255, flat positions [P] int32 of `upper`'s map) -> [N, P, h, w]: for each of
        those positions, how much each position of `lower` feeds it: activation x gradient of the position's
        summed positive activation (its ReLU'd channels), summed over `lower`'s channels (a batched jacobian).
        Built once."""
        key = (self.tensor_name(lower), self.tensor_name(upper))
        if key not in self._between:
            below = self._forward((key[0],))
            above = self._forward((key[1],), patch=key[0])

            def between(images: tf.Tensor, positions: tf.Tensor) -> tf.Tensor:
                low = below(images)[0]
                with tf.GradientTape() as tape:
                    tape.watch(low)
                    up = above(images, low)[0]
                    total = tf.reshape(tf.reduce_sum(tf.nn.relu(up), axis=-1), [tf.shape(up)[0], -1])
                    chosen = tf.gather(total, positions, axis=1)
                jacobian = tape.batch_jacobian(chosen, low, unconnected_gradients=tf.UnconnectedGradients.ZERO)
                return tf.reduce_sum(jacobian * low[:, None], axis=-1)

            self._between[key] = tf.function(between, input_signature=[
                tf.TensorSpec([None, None, None, 3], tf.float32), tf.TensorSpec([None], tf.int32)],
                reduce_retracing=True, autograph=False)
        return self._between[key]

    def grids(self, height: int, width: int) -> dict[str, Grid]:
        """Every layer's output grid (size, jump, receptive-field offset) on a height x width input; cached."""
        if (height, width) not in self._grids:
            self._grids[(height, width)] = layer_grids(self.graph_def, height, width)
        return self._grids[(height, width)]

    def channel_sources(self, name: str) -> list[tuple[str, int]] | None:
        """For each channel of the tensor `name`, the catalogued layer and channel it is: itself for a catalogued
        layer; for a block output such as `mixed4c`, its branches' channels, traced back through ReLUs and the
        concatenation, else (a residual sum, a concat with a pool branch) its own channels; None for any other
        tensor whose channels are not each one catalogued channel (e.g. a pool)."""
        by_name = {n.name: n for n in self._ordered()}
        layers = {layer.tensor: layer for layer in self.layers}

        def trace(node_name: str) -> list[tuple[str, int]] | None:
            if node_name in layers:
                return [(layers[node_name].name, c) for c in range(layers[node_name].channels)]
            node = by_name.get(node_name)
            inputs = [source_name(ref) for ref in node.input if not ref.startswith("^")] if node else []
            inputs = [i for i in inputs if by_name[i].op != "Const"]
            if node is None or not inputs:
                return None
            if node.op in ("Relu", "Relu6", "Identity") and len(inputs) == 1:
                return trace(inputs[0])
            if node.op in ("ConcatV2", "Concat"):
                parts = [trace(i) for i in inputs]
                return None if any(p is None for p in parts) else [c for p in parts for c in p]
            return None

        traced = trace(self.tensor_name(name))
        block = next((b for b in self.blocks if name in (b.name, b.tensor)), None)
        if traced is None and block is not None:
            return [(block.name, c) for c in range(block.channels)]
        return traced

    def _activation_nodes(self) -> set[str]:
        """Names of the graph's non-constant nodes other than the input (computed once)."""
        if not self._nodes:
            self._nodes = {n.name for n in self._ordered() if n.op not in ("Const", "Placeholder")}
        return self._nodes

    def _ordered(self) -> list[node_def_pb2.NodeDef]:
        """The graph's nodes in topological order (computed once)."""
        if not self._order:
            self._order = topological_order(self.graph_def)
        return self._order

    def _constants(self, precision: str = "float32") -> dict[str, tf.Tensor]:
        if "float32" not in self._consts:
            self._consts["float32"] = {n.name: tf.constant(tensor_util.MakeNdarray(n.attr["value"].tensor))
                                       for n in self.graph_def.node if n.op == "Const"}
        if precision not in self._consts:
            dtype = PRECISIONS[precision]
            self._consts[precision] = {k: tf.cast(v, dtype) if v.dtype == tf.float32 else v
                                       for k, v in self._consts["float32"].items()}
        return self._consts[precision]

    def _needed(self, targets: tuple[str, ...], start: str | None = None, patch: str | None = None
                ) -> list[node_def_pb2.NodeDef]:
        """The non-constant nodes the `targets` depend on (the union, each once), in topological order, from
        `start` (default: the input) on; with `patch`, that node is given, so what only it needs is left out."""
        start = start or self.input
        by_name = {n.name: n for n in self._ordered()}
        needed, stack = set(), list(targets)
        while stack:
            name = stack.pop()
            if name in needed:
                continue
            needed.add(name)
            if name not in (start, patch):
                stack.extend(source_name(ref) for ref in by_name[name].input if not ref.startswith("^"))
        nodes = [n for n in self._ordered() if n.name in needed and n.op != "Const" and n.name not in (start, patch)]
        if start != self.input and any(n.op == "Placeholder" for n in nodes):
            raise ValueError(f"{', '.join(targets)} do not all depend on {start} alone")
        return nodes

    def _forward(self, targets: tuple[str, ...], precision: str = "float32", start: str | None = None,
                 linear: bool = False, patch: str | None = None) -> Callable[..., tuple[tf.Tensor, ...]]:
        """The plain Python forward pass images -> activations of `targets` (traced by `_image_function`); with
        `start`, activations of that node -> `targets`, and with `linear`, through the linearised network.
        With `patch`, (images, value) -> `targets`: the node `patch` takes `value`, everything else is computed
        from the images, and `linear` linearises only the nodes that depend on `patch` (the network above it)."""
        nodes = self._needed(targets, start, patch)
        linearised = _descendants(nodes, patch) if linear and patch else {n.name for n in nodes} if linear else set()
        unsupported = next((n for n in nodes if n.op not in (LINEARISED if n.name in linearised else OPS)), None)
        if unsupported is not None:
            ops = LINEARISED if unsupported.name in linearised else OPS
            raise UserError(f"atlas cannot run op {unsupported.op} (node {unsupported.name}, which "
                            f"{', '.join(targets)} depends on); it runs {', '.join(sorted(ops))}")
        consts = self._constants(precision)
        dtype = PRECISIONS[precision]
        from_pixels = start in (None, self.input)
        input_node = self.input if from_pixels else start
        preprocess = self.preprocess.apply_tf if from_pixels else (lambda images: images)

        def run(node: node_def_pb2.NodeDef, args: list[tf.Tensor]) -> tf.Tensor:
            ops = LINEARISED if node.name in linearised else OPS
            if dtype == tf.float32 or node.op not in FLOAT32_ONLY:
                return ops[node.op](node, args)
            return tf.cast(ops[node.op](node, [tf.cast(a, tf.float32) for a in args]), dtype)

        def value(values: dict[str, tf.Tensor | tuple[tf.Tensor, ...]], ref: str) -> tf.Tensor:
            """The tensor a node input `name` or `name:k` refers to: output k of a multi-output op."""
            name = source_name(ref)
            found = values[name] if name in values else consts[name]
            return found[output_index(ref)] if isinstance(found, tuple) else found

        def forward(images: tf.Tensor, patched: tf.Tensor | None = None) -> tuple[tf.Tensor, ...]:
            values: dict[str, tf.Tensor | tuple[tf.Tensor, ...]] = {input_node: tf.cast(preprocess(images), dtype)}
            if patch is not None:
                values[patch] = tf.cast(patched, dtype)
            for node in nodes:
                values[node.name] = run(node, [value(values, ref) for ref in node.input if not ref.startswith("^")])
            return tuple(tf.cast(value(values, target), tf.float32) for target in targets)

        return forward


def _stacked_gradients(tape: tf.GradientTape, sums: list[tf.Tensor], sources: list[tf.Tensor]) -> list[tf.Tensor]:
    """Per source [N, ...], the gradients of each of the `sums` (a class logit summed over the batch, whose photos
    are independent) stacked on axis 1: [N, k, ...]; zero where a source does not feed them."""
    per_class = [tape.gradient(s, sources, unconnected_gradients=tf.UnconnectedGradients.ZERO) for s in sums]
    return [tf.stack([g[i] for g in per_class], axis=1) if per_class else tf.zeros_like(source)[:, None][:, :0]
            for i, source in enumerate(sources)]


def _descendants(nodes: list[node_def_pb2.NodeDef], root: str) -> set[str]:
    """The names of `nodes` (in topological order) that depend on the node `root`."""
    found = {root}
    for node in nodes:
        if any(source_name(ref) in found for ref in node.input if not ref.startswith("^")):
            found.add(node.name)
    return found - {root}


CLASSIFIER_PX = 224  # the side a classifier's input is resized to in `layer_fn` of its logits (ImageNet's)


def _image_function(forward: Callable[[tf.Tensor], object]) -> Callable[[tf.Tensor], object]:
    """A tf.function over batches of NHWC float32 images of any size."""
    return tf.function(forward, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
                       reduce_retracing=True, autograph=False)  # plain Python loops over nodes: nothing to convert


def load_model(spec: str | None = None, preprocess: Preprocess | str | dict | None = None,
               labels: str | None = None, logits: str | None = None) -> Model:
    """Resolve `spec` (see `atlas.model.source.resolve`; a Keras model is frozen once and cached), parse the graph
    and catalogue it. `preprocess` (a Preprocess, a scheme name, `mean=...` text or a mapping) overrides the
    model's own; a Keras or ONNX file needs it. `labels` (`imagenet` or a file with one class name a line) override
    the model's class names, checked to name each of its classifier's classes; `logits` names the node holding the
    classifier's logits (--logits), checked to be in the graph."""
    from dataclasses import replace

    from atlas.model.classifier import check_labels, given_labels
    from atlas.model.preprocess import parse_preprocess

    names = None if labels is None else given_labels(labels)  # a missing file is told before a model is built
    source = resolve(spec, None if preprocess is None else parse_preprocess(preprocess))
    source = replace(source, labels=names or source.labels, logits=logits.strip() if logits else source.logits)
    model = load_model_bytes(read_graph_bytes(source), source)
    if names is not None:
        check_labels(model)
    return model


def load_model_bytes(data: bytes, source: ModelSource | str, preprocess: Preprocess | None = None) -> Model:
    """A model from its serialized GraphDef (as `load_model` reads it, or as a sweep sends it to workers that
    have neither the file nor a network); `source` is where the bytes came from, or its spec; `preprocess`,
    when given, replaces the source's (workers get it with their task)."""
    if isinstance(source, str):
        source = ModelSource(spec=source, pb_path=None)
    if preprocess is not None:
        from dataclasses import replace

        source = replace(source, preprocess=preprocess)
    origin = str(source.pb_path) if source.pb_path else source.spec
    graph = parse_graph_def(data, origin)
    layers, blocks = catalogue(graph)
    if source.logits:
        named_logits(graph, source.logits)  # a name that is not there: one line now, not at the first explanation
    return Model(source=source, graph_def=graph, layers=layers, sha256=hashlib.sha256(data).hexdigest(),
                 preprocess=source.preprocess, input=input_name(graph), blocks=blocks)
