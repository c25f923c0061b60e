"""An ONNX model (what `torch.onnx.export` writes) converted once into the frozen TensorFlow GraphDef atlas's
interpreter runs, as a Keras model is frozen (atlas.model.freeze): the rest of atlas sees a graph like any other.

The file is read with the `onnx` package (the extra `atlas[onnx]`). Its nodes are walked in order and each becomes
TensorFlow ops through its op's handler (atlas.model.onnx_ops), inside one `tf.function` traced on NHWC float32
images of any height, width and batch (renders change size over octaves), so shape computations such as
`x.view(x.size(0), -1)` run on the actual input. Weights become constants. A node whose inputs are all constants is
computed once at conversion, by onnx's reference evaluator. The graph's image input is the Placeholder `input`.

Names a PyTorch user knows (docs/own-model.md, "ONNX models"): a conv (and a Gemm, MatMul or norm with weights) is
named by its weight initializer without `.weight`, the PyTorch module path (`layer3.1.conv2`); where the export
renamed the weights (a batch norm folded into them), by the module path in the node's name
(`/layer3/layer3.1/conv2/Conv` -> `layer3.1.conv2`); every other node by that path and its op
(`/layer1/layer1.0/Add` -> `layer1.0.Add`), else by its ONNX name. Names keep to letters, digits, `_`, `.` and `-`
and start with a letter or digit, so they are safe in file names and URLs. Every converted node records the ONNX
tensors and node it holds (attribute `SOURCE_NAMES`), so `--logits` may name either.

The classifier: when the graph's only output is [N, classes] logits that no Softmax makes (as torch exports end in
a Gemm), a Softmax named `softmax` is appended to it, so atlas finds the classifier as in every model (the input of
the final Softmax, atlas.model.classifier).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from atlas.errors import UserError
from atlas.model.classifier import SOURCE_NAMES

if TYPE_CHECKING:
    from tensorflow.core.framework import graph_pb2

ONNX_FORMAT = 1  # bump when the conversion changes the graph it writes (the cache key holds it)
EXTRA = "pip install 'atlas[onnx]'"
SOFTMAX = "softmax"  # the Softmax appended to logits that have none
PARAMETER_OPS = {"Conv", "Gemm", "MatMul", "BatchNormalization", "LayerNormalization"}  # named by their weights
WEIGHT_SUFFIX = ".weight"
NAME_CHARS = re.compile(r"[^A-Za-z0-9_.\-]+")


def import_onnx() -> Any:
    """The onnx package, or one line naming the extra that brings it."""
    try:
        import onnx
    except ImportError:
        raise UserError(f"reading ONNX models needs the onnx package: {EXTRA}") from None
    return onnx


def read_model(path: Path) -> Any:
    """The ONNX ModelProto of `path` (its external data, if any, from beside it); one line if it is not one."""
    onnx = import_onnx()
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path))
    except (DecodeError, ValueError, OSError, RuntimeWarning) as exc:
        raise UserError(f"{path} is not a readable ONNX model ({_first_line(exc)}); export it again with "
                        "torch.onnx.export") from None
    if not model.graph.node:
        raise UserError(f"{path} is not an ONNX model (it has no graph nodes); export it again with "
                        "torch.onnx.export")
    return model


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    line = lines[0] if lines else type(exc).__name__
    return line if len(line) <= 160 else line[:157] + "..."


def opset(model: Any) -> int:
    """The model's version of the default ONNX op set."""
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        raise UserError("the ONNX model imports no version of the standard op set (ai.onnx)")
    return int(versions[0])


# ------------------------------------------------------------------------------------------------- names


def module_path(node_name: str) -> str | None:
    """The PyTorch module path in a node name torch.onnx.export writes: its scopes without the op, each nested
    module's name joined on (`/layer1/layer1.0/conv1/Conv` -> `layer1.0.conv1`); None for another kind of name."""
    parts = [p for p in node_name.split("/") if p]
    if not node_name.startswith("/") or len(parts) < 2:
        return None
    path = ""
    for part in parts[:-1]:
        path = part if not path or part.startswith(path + ".") else f"{path}.{part}"
    return path


def safe_name(text: str) -> str:
    """`text` kept to letters, digits, `_`, `.` and `-`, starting and ending with a letter or digit ("" if none)."""
    return NAME_CHARS.sub("_", text).strip("_.-")


def node_names(model: Any) -> list[str]:
    """The TensorFlow name of each node of the graph (the op holding its first output), in order (module
    docstring); unique, as TensorFlow would make them, ignoring case."""
    initializers = {init.name for init in model.graph.initializer}
    taken: set[str] = {"input"}
    names = []
    for index, node in enumerate(model.graph.node):
        name = ""
        weight = node.input[1] if node.op_type in PARAMETER_OPS and len(node.input) > 1 else ""
        if weight in initializers and weight.endswith(WEIGHT_SUFFIX):
            name = safe_name(weight[:-len(WEIGHT_SUFFIX)])
        if not name:
            path = module_path(node.name)
            if path and node.op_type in PARAMETER_OPS:
                name = safe_name(path)
            elif path:
                name = safe_name(f"{path}.{node.name.rsplit('/', 1)[-1]}")
            else:
                name = safe_name(node.name)
        names.append(_unique(name or f"{node.op_type}_{index}", taken))
    return names


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate.lower() in taken:
        candidate, n = f"{name}_{n}", n + 1
    taken.add(candidate.lower())
    return candidate


# --------------------------------------------------------------------------------------------- conversion


def check_ops(model: Any, origin: str) -> None:
    """One line for the first node atlas cannot convert: an op outside `HANDLERS` (or another domain's) that is not
    computed from constants alone; before anything is traced."""
    from atlas.model.onnx_ops import HANDLERS

    known = {init.name for init in model.graph.initializer}
    for node in model.graph.node:
        inputs = [i for i in node.input if i]
        if node.op_type == "Constant" or (inputs and all(i in known for i in inputs)):
            known.update(node.output)
            continue
        if node.domain not in ("", "ai.onnx") or node.op_type not in HANDLERS:
            op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
            raise UserError(f"{origin}: atlas cannot convert ONNX op {op} (node '{node.name or node.output[0]}'); "
                            "it converts " + ", ".join(sorted(HANDLERS)) + " (docs/own-model.md#onnx-models)")


def image_input(model: Any, origin: str) -> str:
    """The graph's one image input: NCHW float with 3 channels (sizes may be fixed; they are freed)."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise UserError(f"{origin} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); atlas needs a "
                        "model with one image input")
    tensor = inputs[0].type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    if tensor.HasField("shape") and len(dims) != 4:
        raise UserError(f"{origin}'s input '{inputs[0].name}' has shape {dims}; atlas needs NCHW images (batch, "
                        "channels, height, width)")
    if dims and dims[1] not in (None, 3):
        raise UserError(f"{origin}'s input '{inputs[0].name}' has {dims[1]} channels; atlas renders RGB images "
                        "(3 channels)")
    if tensor.elem_type not in (1, 10, 11, 16):  # float, float16, double, bfloat16
        raise UserError(f"{origin}'s input '{inputs[0].name}' is not a float tensor; atlas feeds float images")
    return inputs[0].name


def _attributes(node: Any) -> dict[str, Any]:
    """A node's attributes as plain values: strings decoded, tensors as numpy arrays."""
    from onnx import helper, numpy_helper

    attrs = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode()
        elif hasattr(value, "dims") and hasattr(value, "data_type"):  # a TensorProto
            value = numpy_helper.to_array(value)
        elif isinstance(value, list):
            value = [v.decode() if isinstance(v, bytes) else v for v in value]
        attrs[attr.name] = value
    return attrs


def _constant(array: np.ndarray) -> np.ndarray:
    """An initializer as atlas computes with it: floats as float32."""
    return array.astype(np.float32) if array.dtype.kind == "f" and array.dtype != np.float32 else array


def _fold(node: Any, arrays: list[np.ndarray | None], version: int) -> list[np.ndarray]:
    """The outputs of a node whose inputs are all constants, by onnx's reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    feeds = {name: array for name, array in zip(node.input, arrays) if name}
    return [_constant(np.asarray(out)) for out in ReferenceEvaluator(node, opsets={"": version}).run(None, feeds)]


def convert(model: Any, origin: str) -> graph_pb2.GraphDef:
    """The frozen GraphDef of an ONNX model (module docstring); one line for anything atlas cannot convert."""
    from atlas.console import import_tensorflow

    import_tensorflow()  # as atlas's processes import it (the handlers' module imports TensorFlow)
    check_ops(model, origin)
    source = image_input(model, origin)
    import tensorflow as tf
    from onnx import numpy_helper

    from atlas.model.freeze import INPUT, fold_constants
    from atlas.model.onnx_ops import Node, Value, as_plain

    version = opset(model)
    names = node_names(model)
    weights = {init.name: _constant(numpy_helper.to_array(init)) for init in model.graph.initializer}
    traced: dict[str, Any] = {"outputs": [], "sources": {}, "renames": {}}

    def forward(images: Any) -> list[Any]:
        graph = tf.compat.v1.get_default_graph()
        values: dict[str, Any] = {name: Value(array) for name, array in weights.items()}
        values[source] = Value(images, nhwc=True)
        for proto, name in zip(model.graph.node, names):
            inputs = [_value(values, ref, proto, origin) if ref else None for ref in proto.input]
            before = len(graph.get_operations())
            results = _run(proto, Node(proto.op_type, name, proto.name, _attributes(proto), version), inputs, origin)
            for index, output in enumerate(proto.output):
                if output and index >= len(results):  # read later: one line then
                    values[output] = (f"it is output {index} of {proto.op_type} node '{proto.name or name}', which "
                                      "atlas does not convert (only the first)")
                elif output:
                    values[output] = results[index]
                    if not results[index].const:
                        traced["sources"].setdefault(results[index].data.op.name, []).append(output)
            for op in graph.get_operations()[before:]:
                traced["renames"][op.name] = _scoped(op.name, name)
            if proto.name and not results[0].const:
                traced["sources"].setdefault(results[0].data.op.name, []).append(proto.name)
        outputs = [_output(values, out.name, origin) for out in model.graph.output]
        plain = [as_plain(v, Node("Output", "output", "", {}, version)) for v in outputs]
        logits = _auto_logits(model, plain)
        if logits is not None:
            plain.append(tf.nn.softmax(logits, name=SOFTMAX))
        traced["outputs"] = [tensor.op.name for tensor in plain]
        return plain

    signature = [tf.TensorSpec([None, None, None, 3], tf.float32, name=INPUT)]
    graph = tf.function(forward, input_signature=signature, autograph=False).get_concrete_function().graph
    frozen = fold_constants(graph.as_graph_def(), traced["outputs"])
    return _named(frozen, traced["renames"], traced["sources"])


def _run(proto: Any, node: Any, inputs: list[Any], origin: str) -> tuple[Any, ...]:
    """The values of a node's outputs: computed once when its inputs are all constants, else by its op's handler."""
    from atlas.model.onnx_ops import HANDLERS, Value

    if proto.op_type != "Constant" and any(inputs) and all(v is None or v.const for v in inputs):
        return tuple(Value(a) for a in _fold(proto, [v.data if v else None for v in inputs], node.opset))
    try:
        result = HANDLERS[proto.op_type](node, inputs)
    except UserError as exc:
        raise UserError(f"{origin}: {exc}") from None
    return result if isinstance(result, tuple) else (result,)


def _value(values: dict[str, Any], ref: str, node: Any, origin: str) -> Any:
    """The value of tensor `ref` that `node` reads; one line if there is none."""
    if ref not in values:
        raise UserError(f"{origin}: node '{node.name}' ({node.op_type}) reads '{ref}', which no earlier node or "
                        "initializer makes; the graph is not in order or not complete")
    if isinstance(values[ref], str):  # why it has no value
        raise UserError(f"{origin}: node '{node.name}' ({node.op_type}) reads '{ref}': {values[ref]}")
    return values[ref]


def _output(values: dict[str, Any], name: str, origin: str) -> Any:
    value = values.get(name)
    if isinstance(value, str) or value is None or value.const:
        raise UserError(f"{origin}: the graph output '{name}' is not converted: it does not depend on the image "
                        "input, or it is an output of a node that is not supported")
    return value


def _auto_logits(model: Any, outputs: list[Any]) -> Any:
    """The graph's only output when it is [N, classes] logits that no Softmax makes, else None."""
    if len(outputs) != 1 or outputs[0].shape.rank != 2 or (outputs[0].shape[1] or 0) < 2:
        return None
    producer = next((n for n in model.graph.node if model.graph.output[0].name in n.output), None)
    return None if producer is not None and producer.op_type == "Softmax" else outputs[0]


def _scoped(op_name: str, node_name: str) -> str:
    """The name a TensorFlow op made for a node ends with: its own if the handler named it after the node, else the
    node's name and its own; `/` (TensorFlow's scopes) becomes `.`."""
    if op_name != node_name and not op_name.lower().startswith((node_name.lower() + ".", node_name.lower() + "/")):
        op_name = f"{node_name}.{op_name}"
    return op_name.replace("/", ".")


def _named(graph: graph_pb2.GraphDef, renames: dict[str, str], sources: dict[str, list[str]]) -> graph_pb2.GraphDef:
    """`graph` with its nodes renamed (every other name, such as a Const folded from several ops, has its `/`
    replaced), kept unique, and each node's ONNX names recorded in its SOURCE_NAMES attribute."""
    from atlas.model.catalogue import source_name

    taken: set[str] = set()
    final: dict[str, str] = {}
    for node in graph.node:
        final[node.name] = _unique(renames.get(node.name, node.name.replace("/", ".")), taken)
    for node in graph.node:
        names = sources.get(node.name, [])
        node.name = final[node.name]
        for i, ref in enumerate(node.input):
            base = source_name(ref)
            node.input[i] = ref.replace(base, final[base], 1)
        if names:
            node.attr[SOURCE_NAMES].list.s.extend(n.encode() for n in dict.fromkeys(names))
    return graph


def convert_file(path: Path) -> graph_pb2.GraphDef:
    """The frozen GraphDef of the ONNX file `path`."""
    return convert(read_model(path), str(path))
