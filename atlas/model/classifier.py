"""A model's main classifier, found from its graph, and the names of its classes (per-photo explanations).

The logits are the input of the model's final Softmax: GoogLeNet's `softmax2_pre_activation` (not its auxiliary
heads' `softmax0`/`softmax1`, which hang off lower blocks), a Keras model's dense layer before its `predictions`
softmax. A graph without a Softmax has no classifier (None): it still gets dictionaries and groups, no attribution.
A model source may name its logits instead (`--logits NODE`, `ModelSource.logits`): a node of the graph, or a name
of the model it was converted from (an ONNX tensor or node, recorded in the node's `SOURCE_NAMES` attribute).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from atlas.errors import UserError
from atlas.model.catalogue import source_name, topological_order

if TYPE_CHECKING:
    from tensorflow.core.framework import graph_pb2

    from atlas.model.graph import Model
    from atlas.model.source import ModelSource

SOFTMAX = "Softmax"
IMAGENET_CLASSES = Path(__file__).with_name("imagenet_classes.txt")  # wnid<TAB>lemmas, Keras's class order
IMAGENET_COUNT = 1000
IMAGENET = "imagenet"  # ModelSource.labels: the shipped names
KERAS_PREFIX = "keras:"
SOURCE_NAMES = "_source_names"  # a converted graph's node attribute: its names in the model it was converted from
NO_CLASSIFIER = "attribution needs class logits: the model has no softmax classifier, so its photos get " \
                "dictionaries and neuron groups only"


def logits_node(graph: graph_pb2.GraphDef) -> str | None:
    """The node whose output is the main classifier's logits: the input of the final Softmax (the deepest one,
    counted in nodes on the longest path from the input; ties: the last in topological order), or None."""
    depth: dict[str, int] = {}
    found: tuple[int, int, str] | None = None
    for position, node in enumerate(topological_order(graph)):
        inputs = [source_name(ref) for ref in node.input if not ref.startswith("^")]
        depth[node.name] = 0 if node.op == "Const" else 1 + max((depth.get(i, 0) for i in inputs), default=0)
        if node.op == SOFTMAX and inputs and (found is None or (depth[node.name], position) >= found[:2]):
            found = (depth[node.name], position, inputs[0])
    return None if found is None else found[2]


def named_logits(graph: graph_pb2.GraphDef, name: str) -> str:
    """The node `name` names: a node of the graph, or the one whose `SOURCE_NAMES` holds it (an ONNX tensor or node
    name); one line suggesting close names otherwise."""
    known = {node.name: node.name for node in graph.node if node.op not in ("Const", "Placeholder")}
    for node in graph.node:
        if SOURCE_NAMES in node.attr:
            known.update({source.decode(): node.name for source in node.attr[SOURCE_NAMES].list.s})
    if name in known:
        return known[name]
    import difflib

    close = difflib.get_close_matches(name, sorted(known), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "name a node of the graph or of the ONNX model"
    raise UserError(f"--logits {name}: the model has no node or tensor of that name; {hint}")


def model_logits(source: ModelSource, graph: graph_pb2.GraphDef) -> str | None:
    """The node of the model's logits: the one its source names (`named_logits`), else `logits_node`."""
    return named_logits(graph, source.logits) if source.logits else logits_node(graph)


def class_count(model: Model) -> int | None:
    """How many classes the model's classifier has (the width of its logits, from the shapes TensorFlow infers
    when tracing them, else from one 224 px image); None without a classifier. The logits are `model_logits`'."""
    node = model_logits(model.source, model.graph_def)
    if node is None:
        return None
    function = model.layers_fn([node])
    shape = function.get_concrete_function().structured_outputs[0].shape
    if None in shape[1:]:
        import numpy as np

        shape = function(np.zeros((1, 224, 224, 3), np.float32))[0].shape
    return int(math.prod(shape[1:]))


def class_labels(source: ModelSource, count: int) -> list[str]:
    """The names of a classifier's `count` classes: the source's `labels` ("imagenet": the shipped names, first lemma;
    else a file with one name a line), the model's label file (inception5h's 1008 lines), the shipped ImageNet
    names for a 1000-class `keras:NAME` model, else "class N"."""
    names: list[str] = []
    if source.labels == IMAGENET:
        names = imagenet_names()
    elif source.labels:
        names = label_lines(Path(source.labels))
    elif source.labels_path is not None and Path(source.labels_path).is_file():
        names = [line.strip() for line in Path(source.labels_path).read_text(encoding="utf-8").splitlines()]
    elif source.spec.startswith(KERAS_PREFIX) and count == IMAGENET_COUNT:
        names = imagenet_names()
    return [names[i] if i < len(names) and names[i] else f"class {i}" for i in range(count)]


def given_labels(value: str) -> str:
    """A --labels value as `ModelSource.labels` keeps it: `imagenet`, or a label file's absolute path, checked to
    name at least one class (one name a line)."""
    value = value.strip()
    if value == IMAGENET:
        return value
    path = Path(value).expanduser().resolve()
    try:
        names = label_lines(path)
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UserError(f"--labels {value}: cannot read {path} ({why}); give imagenet or a text file with one class "
                        "name a line") from None
    if not names:
        raise UserError(f"--labels {value}: {path} names no class; give imagenet or a text file with one class "
                        "name a line")
    return str(path)


def label_lines(path: Path) -> list[str]:
    """A label file's names, one a line, without the blank lines at its end."""
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    while names and not names[-1]:
        names.pop()
    return names


def check_labels(model: Model) -> None:
    """The labels given for a model (`ModelSource.labels`) must name each of its classifier's classes: one line
    naming both counts otherwise, or saying that the model has no classifier."""
    given = model.source.labels
    if given is None:
        return
    count = class_count(model)
    if count is None:
        raise UserError(f"--labels {given}: {model.spec} has no classifier (no softmax) whose classes they could "
                        "name; leave out --labels, or name its logits with --logits NODE")
    names = IMAGENET_COUNT if given == IMAGENET else len(label_lines(Path(given)))
    if names != count:
        raise UserError(f"--labels {given}: {names} names for the {count} classes of {model.spec}'s classifier; "
                        f"give a file with {count} lines, one class name a line, in the classifier's order")


def labels_of(source: ModelSource, indices: list[int]) -> list[str]:
    """The names of some classes (as `class_labels` names them)."""
    names = class_labels(source, max(indices, default=-1) + 1)
    return [names[i] for i in indices]


def label_key(name: str) -> str:
    """A class name as names are matched (`--class`, `classes:`, class figures): any case, `_` for a space."""
    return name.strip().lower().replace("_", " ")


def imagenet_names() -> list[str]:
    """The 1000 ImageNet class names in Keras's order: the first comma-separated lemma of each line."""
    lines = IMAGENET_CLASSES.read_text(encoding="utf-8").splitlines()
    return [line.partition("\t")[2].split(",")[0].strip() for line in lines if line.strip()]
