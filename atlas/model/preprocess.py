"""How a model's input is made from atlas's RGB pixels 0..255: a declared, plain-data preprocessing.

atlas renders RGB pixels in 0..255 for every model. Each model declares how those pixels become its input:
optionally reversed to BGR, minus a mean, divided by a std (per channel, in pixel units 0..255, in the
model's channel order). The named schemes are those of keras.applications:

    caffe  BGR, minus the ImageNet mean [103.939, 116.779, 123.68] (BGR order)   ResNet50, VGG16
    tf     x / 127.5 - 1                                                         MobileNetV2, InceptionV3
    torch  x / 255, minus the ImageNet mean [0.485, 0.456, 0.406], over the std [0.229, 0.224, 0.225]
    none   0..255 as is (the model rescales inside)                              EfficientNet, ConvNeXt

GoogLeNet (inception5h) and the synthetic stand-in take pixels minus 117 (`GOOGLENET`).

This module imports no TensorFlow at module level: a `Preprocess` travels to sweep workers as plain data.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from atlas.errors import UserError

IMAGENET_MEAN_RGB = (123.68, 116.779, 103.939)
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)
HELP = ("caffe, tf, torch, none, or mean=M[,M,M] [std=S[,S,S]] [bgr] in pixel units 0..255 "
        "(e.g. mean=117), or JSON such as {\"mean\": [123.7, 116.3, 103.5], \"std\": [58.4, 57.1, 57.4]}")


@dataclass(frozen=True)
class Preprocess:
    """input = (pixels, in BGR order if `bgr`) - mean) / std; mean and std hold 1 or 3 values in pixel units."""

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    bgr: bool = False
    name: str = ""  # the scheme's name (caffe, tf, ...) or "" for explicit numbers; not part of the identity

    def __post_init__(self) -> None:
        for field, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, 3) or not all(math.isfinite(v) for v in values):
                raise UserError(f"preprocess {field} must be one number or three (one per channel), got "
                                f"{list(values)}; use {HELP}")
        if any(v <= 0 for v in self.std):
            raise UserError(f"preprocess std must be positive, got {list(self.std)}")

    def to_dict(self) -> dict[str, Any]:
        """The numbers that define the mapping (the name is left out: it does not change a render)."""
        return {"mean": list(self.mean), "std": list(self.std), "bgr": self.bgr}

    def key(self) -> str:
        """A canonical text of the mapping, for hashes: equal for equal mappings."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def describe(self) -> str:
        """One line for people, e.g. `caffe (BGR, mean 103.939/116.779/123.68)`."""
        parts = ["BGR"] if self.bgr else []
        if any(self.mean):
            parts.append("mean " + "/".join(f"{v:g}" for v in self.mean))
        if any(v != 1 for v in self.std):
            parts.append("std " + "/".join(f"{v:g}" for v in self.std))
        numbers = ", ".join(parts) or "pixels 0..255 as they are"
        return f"{self.name} ({numbers})" if self.name else numbers

    def apply(self, pixels: Any) -> Any:
        """The model input of RGB pixels 0..255 (a numpy array or a TensorFlow tensor, channels last)."""
        x = pixels[..., ::-1] if self.bgr else pixels
        if any(self.mean):
            x = x - (self.mean[0] if len(self.mean) == 1 else _constant(self.mean, pixels))
        if any(v != 1 for v in self.std):
            x = x / (self.std[0] if len(self.std) == 1 else _constant(self.std, pixels))
        return x

    def apply_tf(self, images: Any) -> Any:
        """`apply` on a TensorFlow tensor (NHWC float32); the BGR swap as a tf.reverse, which has a gradient."""
        import tensorflow as tf

        if self.bgr:
            images = tf.reverse(images, axis=[-1])
        return Preprocess(self.mean, self.std, False, self.name).apply(images)


def _constant(values: tuple[float, ...], like: Any) -> Any:
    """`values` as an array of the dtype of `like` (numpy) or a float32 list TensorFlow broadcasts."""
    import numpy as np

    dtype = getattr(like, "dtype", None)
    if isinstance(like, np.ndarray) and dtype is not None and np.issubdtype(dtype, np.floating):
        return np.asarray(values, dtype=dtype)
    if isinstance(like, np.ndarray):
        return np.asarray(values, dtype=np.float32)
    return list(values)


GOOGLENET = Preprocess(mean=(117.0,), name="googlenet")
SCHEMES: dict[str, Preprocess] = {
    "caffe": Preprocess(mean=IMAGENET_MEAN_RGB[::-1], bgr=True, name="caffe"),
    "tf": Preprocess(mean=(127.5,), std=(127.5,), name="tf"),
    "torch": Preprocess(mean=tuple(255 * m for m in TORCH_MEAN), std=tuple(255 * s for s in TORCH_STD),
                        name="torch"),
    "none": Preprocess(name="none"),
    "googlenet": GOOGLENET,
}

# keras.applications model -> its scheme (as each family's preprocess_input does it, Keras 3)
_FAMILIES: dict[str, tuple[str, ...]] = {
    "caffe": ("ResNet50", "ResNet101", "ResNet152", "VGG16", "VGG19"),
    "tf": ("ResNet50V2", "ResNet101V2", "ResNet152V2", "InceptionV3", "InceptionResNetV2", "Xception",
           "MobileNet", "MobileNetV2", "NASNetMobile", "NASNetLarge"),
    "torch": ("DenseNet121", "DenseNet169", "DenseNet201"),
    "none": tuple([f"EfficientNetB{i}" for i in range(8)] + [f"EfficientNetV2{s}" for s in
                  ("B0", "B1", "B2", "B3", "S", "M", "L")]
                  + [f"ConvNeXt{s}" for s in ("Tiny", "Small", "Base", "Large", "XLarge")]
                  + ["MobileNetV3Small", "MobileNetV3Large"]
                  + [f"RegNet{k}{n}" for k in "XY" for n in ("002", "004", "006", "008", "016", "032", "040",
                                                              "064", "080", "120", "160", "320")]
                  + [f"ResNetRS{n}" for n in (50, 101, 152, 200, 270, 350, 420)]),
}
KERAS_APPLICATIONS: dict[str, str] = {name: scheme for scheme, names in _FAMILIES.items() for name in names}


def parse_preprocess(value: Any) -> Preprocess:
    """A Preprocess from a scheme name, `mean=... std=... bgr` text, JSON text, or a mapping (a YAML config's)."""
    if isinstance(value, Preprocess):
        return value
    if isinstance(value, dict):
        return _from_mapping(value, json.dumps(value))
    text = str(value).strip()
    if text.lower() in SCHEMES:
        return SCHEMES[text.lower()]
    if text.startswith("{"):
        try:
            mapping = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"--preprocess {text}: not valid JSON ({exc.msg}); use {HELP}") from None
        if not isinstance(mapping, dict):
            raise UserError(f"--preprocess {text}: use {HELP}")
        return _from_mapping(mapping, text)
    mapping: dict[str, Any] = {}
    for item in text.replace(";", " ").split():
        key, sep, rest = item.partition("=")
        mapping[key.strip().lower()] = rest.split(",") if sep else True
    return _from_mapping(mapping, text)


def _from_mapping(mapping: dict[str, Any], text: str) -> Preprocess:
    unknown = sorted(set(mapping) - {"mean", "std", "bgr"})
    if unknown or not mapping:
        import difflib

        close = difflib.get_close_matches(str(unknown[0]) if unknown else text, list(SCHEMES), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UserError(f"unknown preprocessing '{text}': {hint}use {HELP}")
    try:
        mean = _numbers(mapping.get("mean", 0.0))
        std = _numbers(mapping.get("std", 1.0))
    except (TypeError, ValueError):
        raise UserError(f"preprocessing '{text}': mean and std must be numbers; use {HELP}") from None
    bgr = mapping.get("bgr", False)
    if isinstance(bgr, list):  # bgr=true / bgr=false on the command line
        bgr = str(bgr[0]).strip().lower() in ("1", "true", "yes")
    if not isinstance(bgr, bool):
        raise UserError(f"preprocessing '{text}': bgr must be true or false")
    return Preprocess(mean=mean, std=std, bgr=bgr)


def _numbers(value: Any) -> tuple[float, ...]:
    values = value if isinstance(value, (list, tuple)) else [value]
    if any(isinstance(v, bool) for v in values):
        raise TypeError("a boolean is not a number")
    return tuple(float(v) for v in values)


def keras_application_preprocess(name: str) -> Preprocess | None:
    """The scheme keras.applications' `preprocess_input` of model `name` applies, or None if atlas does not know."""
    scheme = KERAS_APPLICATIONS.get(name)
    return SCHEMES[scheme] if scheme else None
