"""Freeze a Keras model into a GraphDef that atlas's interpreter runs (atlas.model.graph).

One path for every format: the model is traced once as a `tf.function` over NHWC float32 images of any
height and width (renders change size over octaves), in inference mode (batch norm uses its moving
statistics), and `convert_variables_to_constants_v2` turns its variables into constants. Nodes that depend on
constants only (a batch norm's `rsqrt(variance + eps) * gamma`, a bias reshaped for broadcasting) are then
evaluated once and stored as constants, so the interpreter sees Conv2D -> BiasAdd -> Mul -> AddV2 -> Relu
chains and no variable reads. The graph's image input is the Placeholder named `input`.

A model whose head needs a fixed input size (Flatten -> Dense, as VGG16's classifier) still traces with a
free size: its head then runs only on images of the size the model was built for, its convolutions on any
size. A model that does not trace with a free size at all is cut after its last layer with a spatial (4-D)
output, and that part is frozen.

This module imports TensorFlow and Keras only inside its functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tensorflow.core.framework import graph_pb2

INPUT = "input"  # the frozen graph's image Placeholder (atlas.model.catalogue.input_name finds it)


def freeze_keras_model(model: Any) -> graph_pb2.GraphDef:
    """The frozen inference GraphDef of a Keras model on [None, None, None, C] float32 images."""
    try:
        return _freeze(model)
    except (ValueError, TypeError) as first:
        spatial = spatial_part(model)
        if spatial is None or spatial is model:
            raise ValueError(f"cannot trace {model.name} on images of any size: {first}") from first
        return _freeze(spatial)


def _freeze(model: Any) -> graph_pb2.GraphDef:
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    channels = _input_channels(model)

    def forward(images: tf.Tensor) -> Any:
        return model(images, training=False)

    signature = [tf.TensorSpec([None, None, None, channels], tf.float32, name=INPUT)]
    concrete = tf.function(forward, input_signature=signature, autograph=False).get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)
    graph = frozen.graph.as_graph_def()
    outputs = [tensor.name.split(":")[0] for tensor in frozen.outputs]
    return fold_constants(graph, outputs)


def _input_channels(model: Any) -> int:
    """The channel count of the model's single image input (NHWC)."""
    shapes = model.inputs if getattr(model, "inputs", None) else None
    if not shapes or len(shapes) != 1:
        raise ValueError(f"{model.name} has {len(shapes or [])} inputs; atlas needs a model with one image input")
    shape = tuple(shapes[0].shape)
    if len(shape) != 4:
        raise ValueError(f"{model.name}'s input has shape {shape}; atlas needs NHWC images (batch, height, width, "
                         "channels)")
    return int(shape[-1] or 3)


def spatial_part(model: Any) -> Any:
    """The model up to its last layer with a 4-D (NHWC) output, or None if no layer has one."""
    import keras

    last = None
    for layer in model.layers:
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):
            continue
        if len(shape) == 4 and not isinstance(layer, keras.layers.InputLayer):
            last = layer
    if last is None:
        return None
    if last is model.layers[-1]:
        return model
    return keras.Model(model.inputs, last.output, name=f"{model.name}_spatial")


def fold_constants(graph: graph_pb2.GraphDef, outputs: list[str]) -> graph_pb2.GraphDef:
    """`graph` with every node that depends on constants only replaced by a Const of its value, and with the
    nodes no output depends on dropped. Node names and the order of the file are kept."""
    import tensorflow as tf
    from tensorflow.core.framework import graph_pb2 as pb
    from tensorflow.python.framework import tensor_util

    from atlas.model.catalogue import source_name, topological_order

    graph = _skip_identities(graph)
    order = topological_order(graph)
    dynamic: set[str] = set()
    for node in order:
        refs = [source_name(ref) for ref in node.input if not ref.startswith("^")]
        if node.op in ("Placeholder", "NoOp") or any(ref in dynamic for ref in refs):
            dynamic.add(node.name)
    static = {node.name: node for node in order if node.name not in dynamic and node.op != "Const"}
    needed: set[str] = set()  # static nodes a dynamic node (or an output) reads
    for node in order:
        if node.name in dynamic:
            needed.update(ref for ref in (source_name(r) for r in node.input if not r.startswith("^"))
                          if ref in static)
    needed.update(name for name in outputs if name in static)
    values: dict[str, Any] = {}
    if needed:
        names = sorted(needed)
        imported = tf.Graph()
        with imported.as_default():
            tf.graph_util.import_graph_def(graph, name="")
        with tf.compat.v1.Session(graph=imported) as session:
            results = session.run([f"{name}:0" for name in names])
        values = dict(zip(names, results))
    folded = pb.GraphDef()
    folded.versions.CopyFrom(graph.versions)
    for node in graph.node:
        if node.name in values:
            const = folded.node.add(name=node.name, op="Const")
            value = values[node.name]
            const.attr["dtype"].type = tf.as_dtype(value.dtype).as_datatype_enum
            const.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(value))
        else:
            folded.node.add().CopyFrom(node)
    return _prune(folded, outputs)


def _skip_identities(graph: graph_pb2.GraphDef) -> graph_pb2.GraphDef:
    """`graph` with every reference to an Identity of a constant (a frozen variable read) pointing at the
    constant itself, so folding does not copy the weights."""
    from atlas.model.catalogue import source_name

    by_name = {node.name: node for node in graph.node}

    def target(name: str) -> str:
        node = by_name[name]
        while node.op == "Identity" and node.input and by_name[source_name(node.input[0])].op in ("Const", "Identity"):
            node = by_name[source_name(node.input[0])]
        return node.name if node.op == "Const" else name

    for node in graph.node:
        for i, ref in enumerate(node.input):
            if not ref.startswith("^") and ":" not in ref and by_name[ref].op == "Identity":
                node.input[i] = target(ref)
    return graph


def _prune(graph: graph_pb2.GraphDef, outputs: list[str]) -> graph_pb2.GraphDef:
    """`graph` without the nodes (and control edges) no output depends on; the input Placeholder is kept."""
    from tensorflow.core.framework import graph_pb2 as pb

    from atlas.model.catalogue import source_name

    by_name = {node.name: node for node in graph.node}
    keep: set[str] = set()
    stack = [*outputs, INPUT] if INPUT in by_name else list(outputs)
    while stack:
        name = stack.pop()
        if name in keep:
            continue
        keep.add(name)
        stack.extend(source_name(ref) for ref in by_name[name].input if not ref.startswith("^"))
    pruned = pb.GraphDef()
    pruned.versions.CopyFrom(graph.versions)
    for node in graph.node:
        if node.name in keep:
            copy = pruned.node.add()
            copy.CopyFrom(node)
            del copy.input[:]
            copy.input.extend(ref for ref in node.input if not ref.startswith("^"))
    return pruned


def freeze_saved_model(loaded: Any) -> graph_pb2.GraphDef:
    """The frozen GraphDef of a loaded SavedModel's (`tf.saved_model.load`) serving signature, its image input
    renamed `input` and its height and width left free (the interpreter runs convolutions on any size; a head that
    needs the saved size keeps needing it)."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    signatures = dict(getattr(loaded, "signatures", {}) or {})
    function = signatures.get("serving_default") or next(iter(signatures.values()), None)
    if function is None:
        raise ValueError("it has no serving signature (save it with model.export(path) or tf.saved_model.save)")
    frozen = convert_variables_to_constants_v2(function)
    graph = frozen.graph.as_graph_def()
    placeholders = [node for node in graph.node if node.op == "Placeholder"]
    if len(placeholders) != 1:
        raise ValueError(f"its serving signature has {len(placeholders)} inputs; atlas needs one image input")
    _rename_input(graph, placeholders[0].name)
    outputs = [tensor.name.split(":")[0] for tensor in frozen.outputs]
    return fold_constants(graph, outputs)


def _rename_input(graph: graph_pb2.GraphDef, name: str) -> None:
    """Rename the Placeholder `name` to INPUT (and every reference to it); free its height and width."""
    from atlas.model.catalogue import source_name

    for node in graph.node:
        if node.name == name:
            node.name = INPUT
            dims = node.attr["shape"].shape.dim
            if len(dims) == 4:
                for i in range(3):
                    dims[i].size = -1
        for i, ref in enumerate(node.input):
            if source_name(ref) == name:
                node.input[i] = ref.replace(name, INPUT, 1)
