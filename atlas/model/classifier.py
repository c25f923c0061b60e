"""A model's main classifier, found from its graph, and the names of its classes (per-photo explanations).

The logits are the input of the model's final Softmax: GoogLeNet's `softmax2_pre_activation` (not its auxiliary
heads' `softmax0`/`softmax1`, which hang off lower blocks), a Keras model's dense layer before its `predictions`
softmax. A graph without a Softmax has no classifier (None): it still gets dictionaries and groups, no attribution.
A model source may name its logits instead (`--logits NODE`, `ModelSource.logits`): a node of the graph, or a name
of the model it was converted from (an ONNX tensor or node, recorded in the node's `SOURCE_NAMES` attribute).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from atlas.errors import UserError
from atlas.model.catalogue import source_name, topological_order

if TYPE_CHECKING:
    from tensorflow.core.framework import graph_pb2

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


def class_labels(source: ModelSource, count: int) -> list[str]:
    """The names of a classifier's `count` classes: the source's `labels` ("imagenet": the shipped names, first lemma;
    else a file with one name a line), the model's label file (inception5h's 1008 lines), the shipped ImageNet
    names for a 1000-class `keras:NAME` model, else "class N"."""
    names: list[str] = []
    if source.labels == IMAGENET:
        names = imagenet_names()
    elif source.labels:
        names = [line.strip() for line in Path(source.labels).read_text(encoding="utf-8").splitlines()]
    elif source.labels_path is not None and Path(source.labels_path).is_file():
        names = [line.strip() for line in Path(source.labels_path).read_text(encoding="utf-8").splitlines()]
    elif source.spec.startswith(KERAS_PREFIX) and count == IMAGENET_COUNT:
        names = imagenet_names()
    return [names[i] if i < len(names) and names[i] else f"class {i}" for i in range(count)]


def labels_of(source: ModelSource, indices: list[int]) -> list[str]:
    """The names of some classes (as `class_labels` names them)."""
    names = class_labels(source, max(indices, default=-1) + 1)
    return [names[i] for i in indices]


def imagenet_names() -> list[str]:
    """The 1000 ImageNet class names in Keras's order: the first comma-separated lemma of each line."""
    lines = IMAGENET_CLASSES.read_text(encoding="utf-8").splitlines()
    return [line.partition("\t")[2].split(",")[0].strip() for line in lines if line.strip()]
