"""ONNX models (issue 30): graphs in the patterns torch.onnx.export writes, converted by atlas.model.onnx_graph,
match onnxruntime at every converted tensor, at the exported size and batch and at others; layers are named by
PyTorch module path; the classifier is found or named; bad files are one line; every command runs on an ONNX
model; and EfficientNet-Lite0 written from its real weights names the shipped photos as the zoo's Keras build does.
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from atlas.cli import main  # noqa: E402
from atlas.errors import UserError  # noqa: E402
from atlas.model.classifier import SOURCE_NAMES, logits_node, model_logits  # noqa: E402
from atlas.model.graph import load_model  # noqa: E402
from tests import onnx_graphs as graphs  # noqa: E402
from tests.photos import smooth_photo  # noqa: E402

TOLERANCE = 1e-4  # of each tensor's largest magnitude
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def _saved(model, folder: Path, name: str = "model.onnx") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / name))
    return folder / name


def _onnx_names(onnx_model, atlas_model) -> dict[str, str]:
    """Every node of the converted graph that holds an ONNX tensor -> that tensor (but a conv node named as its layer,
    whose name stands for the layer's unit after its batch norm)."""
    tensors = {out for node in onnx_model.graph.node for out in node.output}
    found = {}
    for node in atlas_model.graph_def.node:
        names = [s.decode() for s in node.attr[SOURCE_NAMES].list.s] if SOURCE_NAMES in node.attr else []
        held = [n for n in names if n in tensors]
        if held and node.op not in ("Const", "Placeholder") and atlas_model.tensor_name(node.name) == node.name:
            found[node.name] = held[0]
    return found


def _session(onnx_model) -> "ort.InferenceSession":
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(onnx_model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _worst_differences(onnx_model, atlas_model, nodes: dict[str, str], batch: int, size: tuple[int, int],
                       seed: int = 0) -> dict[str, float]:
    """Per converted node, max |atlas - onnxruntime| over the tensor's largest magnitude, on random images."""
    session = _session(graphs.free_sizes(onnx_model, list(nodes.values())))
    pixels = np.random.default_rng(seed).uniform(0, 255, (batch, *size, 3)).astype(np.float32)
    ours = atlas_model.layers_fn(list(nodes))(pixels)
    theirs = session.run(list(nodes.values()), {graphs.IMAGE: atlas_model.preprocess.apply(pixels)
                                                .transpose(0, 3, 1, 2)})
    found = {}
    for name, a, r in zip(nodes, ours, theirs):
        a, r = np.asarray(a), np.asarray(r)
        if r.ndim == 4:
            assert len({r.shape[1:], r.transpose(0, 2, 3, 1).shape[1:]}) == 2, (name, "NHWC or NCHW? pick other sizes")
            r = r if a.shape == r.shape else r.transpose(0, 2, 3, 1)  # held NHWC
        assert a.shape == r.shape, (name, a.shape, r.shape)
        scale = float(np.abs(r).max()) or 1.0
        found[name] = float(np.abs(a.astype(np.float64) - r).max()) / scale
    return found


GRAPHS = {  # name: (builder, sizes other than the exported one (batch, (height, width)), whole graph at them)
    "torch_cnn-opset13": (lambda: graphs.torch_cnn(13), [(3, (45, 70))], True),
    "torch_cnn-bn-folded": (lambda: graphs.torch_cnn(13, fold_bn=True), [(2, (33, 50))], True),
    "torch_cnn-opset11": (lambda: graphs.torch_cnn(11), [(2, (80, 40))], True),
    "torch_cnn-opset18": (lambda: graphs.torch_cnn(18), [(2, (57, 63))], True),
    "pooling_cnn-opset18": (lambda: graphs.pooling_cnn(18), [(3, (41, 37))], False),
    "pooling_cnn-opset13": (lambda: graphs.pooling_cnn(13), [(2, (31, 44))], False),
    "ops_cnn-opset20": (lambda: graphs.ops_cnn(20), [(3, (40, 56))], True),
}


@pytest.mark.parametrize("name", list(GRAPHS))
def test_every_converted_tensor_matches_onnxruntime(name, tmp_path):
    """Every ONNX tensor the converted graph holds (activations, shapes, logits) matches onnxruntime's within 1e-4
    of its largest magnitude, at the exported batch 1 and size, and at other batches and sizes (the graphs with a
    Flatten after a pool that is not global: up to the Flatten, as in torch their Gemm takes only the exported
    size). Largest relative differences measured (AMD EPYC, float32; at the exported size / at the others):
    torch_cnn 6.1e-7 / 6.1e-7, BN folded 3.9e-7 / 4.0e-7, opset 11 6.1e-7 / 4.7e-7, opset 18 7.3e-7 / 6.5e-7,
    pooling_cnn (opsets 18 and 13) 7.2e-7 / 3.0e-7, ops_cnn 7.9e-7 / 7.5e-7."""
    build, others, whole = GRAPHS[name]
    onnx_model = build()
    model = load_model(str(_saved(onnx_model, tmp_path)), "mean=127.5 std=127.5")
    nodes = _onnx_names(onnx_model, model)
    assert len(nodes) >= 10
    dims = onnx_model.graph.input[0].type.tensor_type.shape.dim
    worst = _worst_differences(onnx_model, model, nodes, 1, (dims[2].dim_value, dims[3].dim_value))
    assert max(worst.values()) < TOLERANCE, sorted(worst.items(), key=lambda kv: -kv[1])[:3]
    spatial = nodes if whole else {k: v for k, v in nodes.items() if k in {layer.tensor for layer in model.layers}}
    for batch, size in others:
        found = _worst_differences(onnx_model, model, spatial, batch, size, seed=1)
        assert max(found.values()) < TOLERANCE, (batch, size, sorted(found.items(), key=lambda kv: -kv[1])[:3])


def test_layers_are_named_by_pytorch_module_path(tmp_path):
    """A conv is named by its weight initializer without `.weight`, or after torch folded a batch norm into it (its
    weights `onnx::Conv_N`) by the module path in its node name; its unit is after the batch norm where one follows.
    Residual Adds and Concats are named by their module and op. Every name is safe in file names and URLs."""
    kept = load_model(str(_saved(graphs.torch_cnn(13), tmp_path / "kept")), "torch")
    folded = load_model(str(_saved(graphs.torch_cnn(13, fold_bn=True), tmp_path / "folded")), "torch")
    expected = ["stem.conv", "layer1.0.conv1", "layer1.0.conv2", "sep.dw", "sep.pw", "grouped", "dilated"]
    assert [layer.name for layer in kept.layers] == expected == [layer.name for layer in folded.layers]
    assert [layer.tensor for layer in kept.layers][:4] == ["stem.bn", "layer1.0.bn1", "layer1.0.bn2", "sep.bn1"]
    assert [layer.tensor for layer in folded.layers][:2] == ["stem.conv.bias", "layer1.0.conv1.bias"]
    ops = {layer.name: layer.op_type for layer in kept.layers}
    assert ops["sep.dw"] == "DepthwiseConv2dNative" and ops["grouped"] == "Conv2D"
    assert {(layer.name, layer.in_channels, layer.channels) for layer in kept.layers} >= {
        ("sep.dw", 8, 8), ("grouped", 8, 16), ("stem.conv", 3, 8)}  # a grouped conv: in-channels per group
    nodes = {node.name: node.op for node in kept.graph_def.node}
    assert nodes["layer1.0.Add"] == "AddV2" and nodes["pool.Concat"] == "ConcatV2"
    assert all(SAFE_NAME.match(name) for name in nodes), [n for n in nodes if not SAFE_NAME.match(n)]
    assert kept.layer("layer1.0.conv1").receptive_field == 7 and kept.layer("sep.pw").cumulative_stride == 2
    assert kept.tensor_name("layer1.0.conv1") == "layer1.0.bn1"  # the layer's unit, not its conv node's output
    b = graphs.Builder(13)  # a plain chain (no merges to read blocks from): blocks are the parent modules
    x = graphs.IMAGE
    for path, (cin, cout) in zip(["stem.conv", "stage1.0.conv1", "stage1.0.conv2", "stage2.0.conv1", "stage2.0.conv2"],
                                 [(3, 4), (4, 4), (4, 4), (4, 6), (6, 6)]):
        x = b.node("Relu", [b.conv(x, path, cin, cout, 3)], f"{path}.act")
    chain = load_model(str(_saved(b.model(x, (16, 16)), tmp_path / "chain")), "torch")
    assert [layer.block for layer in chain.layers] == ["stem", "stage1.0", "stage1.0", "stage2.0", "stage2.0"]


def test_the_classifier_is_found_or_named(tmp_path):
    """A torch export ending in a Gemm gets a Softmax appended, so the Gemm's output is the logits; a graph with its
    own Softmax keeps it; `--logits` names the logits by an ONNX tensor or node name (or the converted node's), and
    a name that is nowhere is one line with close names."""
    cnn = load_model(str(_saved(graphs.torch_cnn(13), tmp_path / "cnn")), "torch")
    assert logits_node(cnn.graph_def) == "fc"
    ops = load_model(str(_saved(graphs.ops_cnn(20), tmp_path / "ops")), "torch")
    assert logits_node(ops.graph_def) == "fc.shift.Sub"
    assert [n.name for n in ops.graph_def.node if n.op == "Softmax"][-1] == "probabilities.Softmax"
    path = str(tmp_path / "ops" / "model.onnx")
    for name in ("/fc/Gemm_output_0", "/fc/Gemm", "fc"):
        assert model_logits(load_model(str(tmp_path / "cnn" / "model.onnx"), "torch", logits=name).source,
                            cnn.graph_def) == "fc"
    assert model_logits(load_model(path, "torch", logits="/fc/MatMul_output_0").source, ops.graph_def) == "fc"
    with pytest.raises(UserError, match=r"--logits fc\.matmull: .* did you mean .*fc\.matmul") as caught:
        load_model(str(tmp_path / "cnn" / "model.onnx"), "torch", logits="fc.matmull")
    assert "\n" not in str(caught.value)


def test_the_run_folder_keeps_the_logits_and_labels(tmp_path, capsys):
    """`--logits` and `--labels` are recorded in run.json like the preprocessing, so a later `atlas explain` on the
    run folder finds the same classifier (here `fc`, not the `fc.shift.Sub` its final Softmax marks) and names its
    classes alike without them; the labels are checked against the named logits' width (5 classes)."""
    path = _saved(graphs.ops_cnn(20), tmp_path / "ops")
    names = tmp_path / "names.txt"
    names.write_text("".join(f"shape {i}\n" for i in range(5)))
    six = tmp_path / "six.txt"
    six.write_text("".join(f"shape {i}\n" for i in range(6)))
    with pytest.raises(UserError, match="6 names for the 5 classes"):
        load_model(str(path), "torch", labels=str(six), logits="/fc/MatMul_output_0")
    photos = [smooth_photo(tmp_path / f"p{seed}.png", seed, (40, 36)) for seed in range(2)]
    run = tmp_path / "run"
    common = ["-o", str(run), "--layer", "conv2", "--size", "32", "--classes", "2", "--groups", "1", "--ig-steps",
              "1", "--no-render"]
    assert main(["explain", str(photos[0]), *common, "--model", str(path), "--preprocess", "torch", "--logits",
                 "/fc/MatMul_output_0", "--labels", str(names)]) == 0
    capsys.readouterr()
    recorded = json.loads((run / "run.json").read_text())["model"]
    assert (recorded["logits"], recorded["labels"]) == ("/fc/MatMul_output_0", str(names.resolve()))
    assert main(["explain", str(photos[1]), *common]) == 0  # the run's model, logits and labels
    assert "1 photos explained, 0 unchanged, 2 in the index" in capsys.readouterr().out  # the same classifier: kept
    from atlas.run.explainfiles import read_index

    index = read_index(run)
    assert index.classifier == "fc" and len(index.photos) == 2
    assert all(c.label.startswith("shape ") for photo in index.photos for c in photo.classes)


def _bad(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_bad_files_and_unknown_ops_are_one_line(tmp_path, capsys, monkeypatch):
    """Exit code 2 and one line for: a truncated file, one that is not ONNX at all, an op outside the list (naming
    the op and the node), an output of a node that is not converted (a MaxPool's indices), a graph with two inputs,
    a missing --preprocess; and without the onnx package, the line names the extra."""
    good = _saved(graphs.torch_cnn(13), tmp_path / "good").read_bytes()
    b = graphs.Builder(13)
    x = b.node("Relu", [b.conv(graphs.IMAGE, "conv", 3, 4, 3)], "act")
    b.nodes.append(onnx.helper.make_node("Hardmax", [x], ["hard"], name="/head/Hardmax"))
    unknown = b.model("hard", (16, 16))
    b = graphs.Builder(13)
    pooled = b.node("MaxPool", [b.conv(graphs.IMAGE, "conv", 3, 4, 3)], "pool", outputs=2, kernel_shape=[2, 2],
                    strides=[2, 2])
    indices = b.model(b.node("Cast", ["/pool/MaxPool_output_1"], "indices", to=1), (16, 16))
    two = graphs.torch_cnn(13)
    two.graph.input.append(onnx.helper.make_tensor_value_info("mask", onnx.TensorProto.FLOAT, [1, 1, 16, 16]))
    cases = {
        "truncated": (_bad(tmp_path, "cut.onnx", good[: len(good) // 2]), "is not a readable ONNX model"),
        "garbage": (_bad(tmp_path, "junk.onnx", b"\x00\xff" * 64), "is not"),
        "unknown op": (_saved(unknown, tmp_path / "unknown"), "cannot convert ONNX op Hardmax (node '/head/Hardmax')"),
        "an output not converted": (_saved(indices, tmp_path / "indices"), "reads '/pool/MaxPool_output_1': it is "
                                    "output 1 of MaxPool node '/pool/MaxPool', which atlas does not convert"),
        "two inputs": (_saved(two, tmp_path / "two"), "has 2 inputs (input, mask); atlas needs a model with one"),
    }
    for case, (path, message) in cases.items():
        assert main(["layers", "--model", str(path), "--preprocess", "torch"]) == 2, case
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, (case, err)
    assert main(["layers", "--model", str(tmp_path / "good" / "model.onnx")]) == 2
    assert "needs --preprocess" in capsys.readouterr().err
    import builtins

    real = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name == "onnx" else real(name, *a, **k))
    assert main(["layers", "--model", str(_saved(graphs.pooling_cnn(18), tmp_path / "other")), "--preprocess",
                 "torch"]) == 2
    assert "pip install 'atlas[onnx]'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory) -> Path:
    return _saved(graphs.torch_cnn(13), tmp_path_factory.mktemp("small"), "small_cnn.onnx")


def test_every_command_on_an_onnx_model(small_onnx, tmp_path, capsys):
    """`atlas layers`, `atlas dream`, `atlas run` (renders, dataset examples, an activation map, circuits, the
    gallery; the config names the logits, which run.json records), `atlas explain` with attribution to the classifier
    the appended Softmax marks, `atlas figure`, and one site of two models, on the small CNN: pages exist for layer
    names with dots and every local link resolves."""
    from tests.test_any_model import _local_links_resolve

    model = ["--model", str(small_onnx), "--preprocess", "torch"]
    assert main(["layers", *model, "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [layer["name"] for layer in listed["layers"]][:2] == ["stem.conv", "layer1.0.conv1"]
    assert main(["dream", *model, "--layer", "layer1.0.conv2", "--channel", "0-1", "--size", "32", "--octaves",
                 "1", "--steps", "2", "-o", str(tmp_path / "dream")]) == 0
    assert sorted(p.name for p in (tmp_path / "dream").glob("*.png")) == ["layer1.0.conv2-0000.png",
                                                                          "layer1.0.conv2-0001.png"]
    photos = tmp_path / "photos"
    for seed in range(3):
        smooth_photo(photos / f"p{seed}.png", seed, (56, 48))
    runs = []
    for name, layers in (("onnx_a", ["stem.conv", "layer1.0.conv2", "sep.pw"]), ("onnx_b", ["grouped"])):
        config = {"name": name, "model": {"path": str(small_onnx), "preprocess": "torch", "logits": "fc"},
                  "layers": layers, "channels": 2, "workers": 1,
                  "render": {"octaves": 1, "steps": 3, "size": 32}, "formats": {"web": {"size": 32},
                                                                               "thumb": {"size": 16}},
                  "output": str(tmp_path / "out"), "examples": {"folder": str(photos), "top": 2, "size": 48}}
        if name == "onnx_a":
            config["map"] = {"folder": str(photos), "layers": ["layer1.0.conv2"], "samples": 120, "per_photo": 40,
                             "grid": [3], "min_samples": 2, "neighbours": 10, "render_size": 32, "steps": 3}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
        assert main(["run", str(tmp_path / f"{name}.yaml")]) == 0, capsys.readouterr()
        runs.append(tmp_path / "out" / name)
    run = runs[0]
    site = run / "site"
    assert json.loads((run / "run.json").read_text())["model"]["logits"] == "fc"  # as the config named it
    assert (site / "layers" / "layer1.0.conv2.html").is_file()
    assert (site / "channels" / "layer1.0.conv2" / "0001.html").is_file()
    assert (run / "circuits").is_dir() and _local_links_resolve(site) > 20
    assert (site / "maps" / "layer1.0.conv2.html").is_file()
    assert main(["explain", str(photos / "p0.png"), "-o", str(run), "--layer", "layer1.0.conv2", "sep.pw",
                 "--size", "48", "--groups", "2", "--no-render"]) == 0
    assert "needs class logits" not in capsys.readouterr().out
    from atlas.run.explainfiles import read_index

    index = read_index(run)
    assert index.classifier == "fc" and len(index.photos[0].classes) == 5
    assert main(["figure", str(run), "--sheet", "layer1.0.conv2", "-o", str(tmp_path / "sheet.png")]) == 0
    assert (tmp_path / "sheet.png").stat().st_size > 1000
    assert main(["build", *map(str, runs), "-o", str(tmp_path / "site")]) == 0
    assert {p.name for p in (tmp_path / "site").iterdir()} >= {"onnx_a", "onnx_b", "index.html"}
    assert (tmp_path / "site" / "onnx_b" / "layers" / "grouped.html").is_file()
    assert _local_links_resolve(tmp_path / "site") > 20


DOMESTIC_CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


def test_efficientnet_lite0_from_onnx_names_the_photos_as_the_zoo_does(lite0_model, tmp_path):
    """EfficientNet-Lite0 written from its real state_dict as torch exports it (NCHW, OIHW, Pad for TensorFlow's
    "same" padding, batch norms kept, ReLU6 as Clip(0, 6)): the same 49 convs and 21,008 channels as the zoo's Keras
    build, chelsea's top three classes cats and coffee's top class espresso, as the zoo's; its logits match
    onnxruntime's and, with every layer's activations, the zoo's within 1e-4 of the largest (measured: logits 5.3e-7
    from onnxruntime's, 4.4e-7 from the zoo's; layers 4.5e-6 at most)."""
    from atlas.analysis.photos import fit_to_input
    from atlas.images import load_photo_image
    from atlas.model.classifier import class_labels

    onnx_model = graphs.efficientnet_lite0(graphs.lite0_weights())
    model = load_model(str(_saved(onnx_model, tmp_path)), "tf")
    assert len(model.layers) == 49 and model.channels == lite0_model.channels == 21_008
    assert model.layers[0].name == "conv_stem" and model.layers[-1].name == "conv_head"
    photos = np.concatenate([fit_to_input(n, n, "", load_photo_image(f"atlas/data/photos/{n}.jpg"), 224,
                                          "crop").pixels[None] for n in ("chelsea", "coffee")])
    ours = np.asarray(model.layer_fn(logits_node(model.graph_def))(photos))
    zoo = np.asarray(lite0_model.layer_fn(logits_node(lite0_model.graph_def))(photos))
    assert set(np.argsort(-ours[0])[:3]) <= DOMESTIC_CATS and int(np.argmax(ours[1])) == ESPRESSO
    assert list(np.argsort(-ours[0])[:3]) == list(np.argsort(-zoo[0])[:3])
    assert np.abs(ours - zoo).max() < TOLERANCE * np.abs(zoo).max()
    pairs = zip(model.layers_fn([layer.name for layer in model.layers])(photos),
                lite0_model.layers_fn([layer.name for layer in lite0_model.layers])(photos))
    worst = max(float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max()) for a, b in pairs)
    assert worst < TOLERANCE
    assert class_labels(model.source, 1000)[ESPRESSO] == "class 967"  # an ONNX file names no classes itself
    session = _session(onnx_model)
    theirs = np.concatenate([session.run(None, {graphs.IMAGE: model.preprocess.apply(p[None])
                                                .transpose(0, 3, 1, 2)})[0] for p in photos])
    assert np.abs(ours - theirs).max() < TOLERANCE * np.abs(theirs).max()
