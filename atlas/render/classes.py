"""Class visualisations: renders that climb one logit of the model's classifier (the `class` objective).

The logits are those explain attributes (`atlas.model.classifier.model_logits`: the input of the final softmax, or
the node `--logits` names), before the softmax, so a render raises its own class rather than lowering the others.
A class is a channel of the logits tensor: `render_classes` is `render_channels` of that tensor with the `class`
objective, batched one image per class with every method, and its metrics (lift, rank among the classes,
specificity) mean what they mean for channels.
"""

from __future__ import annotations

import difflib
from dataclasses import replace
from typing import Callable

import numpy as np

from atlas.errors import UserError
from atlas.model.classifier import class_count, class_labels, label_key, model_logits
from atlas.model.graph import Model
from atlas.render.loop import RenderResult, render_channels
from atlas.render.settings import CLASS, BatchFit, RenderSettings

CLASS_LABEL = "class"  # renders are CLASS_LABEL-NNNN.png, NNNN the zero-padded class index


def logits_layer(model: Model) -> str:
    """The node of the model's logits; one line naming the fix when it has no classifier."""
    node = model_logits(model.source, model.graph_def)
    if node is None:
        raise UserError(f"{model.spec} has no softmax classifier, so it has no classes to render; name its logits "
                        "with --logits NODE (or model: {logits: NODE} in a config)")
    return node


def labels(model: Model) -> list[str]:
    """The names of every class of the model's classifier (`class_labels`)."""
    logits_layer(model)
    return class_labels(model.source, class_count(model) or 0)


def parse_classes(text: str, names: list[str]) -> list[int]:
    """`--class` values: comma-separated class names (as `labels` names them, any case, spaces or underscores) or
    indices, or `all` -> class indices in the order given, each once; one line naming the fix otherwise."""
    if text.strip() == "all":
        return list(range(len(names)))
    wanted: list[int] = []
    by_name = {label_key(name): i for i, name in reversed(list(enumerate(names)))}  # a repeated name: its first class
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part.isdigit():
            index = int(part)
            if index >= len(names):
                raise UserError(f"--class {part}: the classifier has {len(names)} classes (0-{len(names) - 1})")
        elif label_key(part) in by_name:
            index = by_name[label_key(part)]
        else:
            close = difflib.get_close_matches(label_key(part), list(by_name), n=3)
            hint = f"did you mean {', '.join(close)}?" if close else "give an index or a name from the model's labels"
            raise UserError(f"--class {part}: no class of that name; {hint}")
        if index not in wanted:
            wanted.append(index)
    if not wanted:
        raise UserError("--class: name at least one class (a name, an index, or all)")
    return wanted


def class_render_settings(settings: RenderSettings) -> RenderSettings:
    """`settings` with the class objective."""
    return replace(settings, objective=CLASS)


def render_classes(model: Model, classes: list[int], photo: np.ndarray | None = None,
                   settings: RenderSettings = RenderSettings(), seed: int = 0,
                   progress: Callable[[float], None] | None = None, fit: BatchFit | None = None
                   ) -> list[RenderResult]:
    """A class visualisation of each class index (`render_channels` of the logits with the `class` objective,
    whatever objective `settings` names): results as for channels, `channel` holding the class index."""
    return render_channels(model, logits_layer(model), classes, photo, class_render_settings(settings), seed,
                           progress=progress, fit=fit)
