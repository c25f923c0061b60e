"""The explain poster (`atlas figure RUN --explain PHOTO:LAYER`): its four interfaces checked through the layout's
data against the explanation's arrays, the page's fit to A4 and a 16:9 slide, PNG and PDF files (the PDF's text
holds the class labels and channel names), and one-line errors.

The fake explanations come from tests/fakerun.py's writer (`add_fake_explain`, from the gallery's branch)."""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from atlas.cli import main
from atlas.errors import UserError
from atlas.publish import figures
from atlas.publish.figures import FigureJob, explain
from atlas.run.explainfiles import INDEX_FILE, ExplainLayer, group_render, layer_file
from atlas.run.manifest import read_run
from tests.fakerun import PHOTOS, add_fake_explain, make_fake_run, synthetic_layers

DPI = 40
BLOCK = "mixed4d"  # a block output: its channels are the catalogued branches' (ExplainLayer.sources)
CATALOGUED = "mixed4d_3x3_pre_relu"
SIDE = 7  # the fake layers' maps
A4_LANDSCAPE, SLIDE = (11.69, 8.27), (13.333, 7.5)


def block_sources(layers, block: str) -> list[tuple[str, int]]:
    """A made-up block output: the channels of the block's branch convs, one after the other."""
    branches = [layer for layer in layers if layer.block == block
                and not any(word in layer.name for word in ("bottleneck", "reduce"))]
    return [(layer.name, c) for layer in branches for c in range(layer.channels)]


def explained_layers(layers) -> list[ExplainLayer]:
    sources = block_sources(layers, BLOCK)
    channels = next(layer.channels for layer in layers if layer.name == CATALOGUED)
    return [ExplainLayer(BLOCK, len(sources), SIDE, SIDE, sources), ExplainLayer(CATALOGUED, channels, SIDE, SIDE)]


def explained_run(folder: Path, classifier: str | None = "softmax2_pre_activation") -> Path:
    """Half of every channel of the block's layers rendered (a run of those layers only: cheap); chelsea and coffee
    explained at the block output and a catalogued layer (tests/fakerun.py's writer), group 1's render of chelsea at
    the block output deleted."""
    layers = [layer for layer in synthetic_layers(0.125) if layer.block == BLOCK]
    make_fake_run(folder, layers=layers, fraction=0.5, size=32, thumb=16)
    add_fake_explain(folder, explained_layers(layers), size=64, groups=4, classifier=classifier)
    (folder / group_render(sha("chelsea"), BLOCK, 1)).unlink()
    return folder


def sha(photo: str) -> str:
    return hashlib.sha256((PHOTOS / f"{photo}.jpg").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    return explained_run(tmp_path_factory.mktemp("explain") / "run")


@pytest.fixture(scope="module")
def run(run_folder):
    return read_run(run_folder)


def labels(run_folder: Path, photo: str = "chelsea") -> list[str]:
    index = json.loads((run_folder / INDEX_FILE).read_text())
    return [c["label"] for c in next(p for p in index["photos"] if p["name"] == f"{photo}.jpg")["classes"]]


def poster(run, photo: str = "chelsea.jpg", layer: str = BLOCK, **options) -> figures.FigureLayout:
    return figures.layout_figure(run, figures.FigureSpec(name="p", kind="explain", explained=photo, layer=layer,
                                                         **options))


def arrays(run_folder: Path, photo: str = "chelsea", layer: str = BLOCK) -> dict[str, np.ndarray]:
    with np.load(run_folder / layer_file(sha(photo), layer)) as data:
        return dict(data)


def texts(layout) -> list[str]:
    return [t.text for t in layout.texts]


def tile_names(layout, panel) -> str:
    """The lines centred under a render, joined: its channel's name (and, in the attribution, its value)."""
    b = panel.box
    lines = [t for t in layout.texts if t.align == "center" and abs(t.x - (b.x + b.w / 2)) < 1e-3
             and b.y + b.h < t.y < b.y + b.h + 0.5]
    return "".join(t.text for t in sorted(lines, key=lambda t: t.y))


def pdf_text(path: Path) -> list[str]:
    """Each text object of a PDF written by matplotlib (one per drawn line), decoded: its content streams are
    zlib-compressed and a Type 42 font's strings are UTF-16BE code points (their kerned chunks joined)."""
    found = []
    escapes = {b"n": b"\n", b"r": b"\r", b"\\": b"\\", b"(": b"(", b")": b")"}
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", path.read_bytes(), re.S):
        try:
            content = zlib.decompress(stream)
        except zlib.error:
            continue
        for block in re.findall(rb"\bBT\b(.*?)\bET\b", content, re.S):
            chunks = re.findall(rb"\(((?:\\.|[^\\)])*)\)", block, re.S)
            raw = b"".join(re.sub(rb"\\(.)", lambda m: escapes.get(m.group(1), m.group(1)), c, flags=re.S)
                           for c in chunks)
            found.append(raw.decode("utf-16be", "replace"))
    return found


# ----------------------------------------------------------------------------------------------- the interfaces


def test_the_dictionary_numbers_the_strongest_positions_and_shows_their_top_channels(run, run_folder):
    layout = poster(run, positions=3)
    data = arrays(run_folder)
    (grid,) = [o for o in layout.overlays if o.key[0] == "dictionary"]
    assert grid.grid == data["dictionary_channels"].shape[:2] and grid.values is None
    strongest = data["dictionary_values"][..., 0]
    marked = [(r, c) for r, c, _ in grid.marks]
    assert [text for *_, text in grid.marks] == ["1", "2", "3"]
    assert [strongest[r, c] for r, c in marked] == sorted(strongest.ravel(), reverse=True)[:3]
    sources = run_sources(run_folder)
    tiles = [p for p in layout.panels if p.box.x < explain.MARGIN + explain.DICTIONARY_W and p.box.y > grid.box.y]
    expected = [sources[c] for r, c0 in marked for c in data["dictionary_channels"][r, c0, :explain.PER_POSITION]]
    assert [p.key[1:] for p in tiles] == expected
    for panel, (layer, channel) in zip(tiles, expected):
        assert tile_names(layout, panel) == f"{layer.removesuffix('_pre_relu')}:{channel}"
        rendered = any(r.key == ("noise", layer, channel) for r in run.renders)
        assert (panel.image is not None) == rendered  # a channel the run has not rendered: a gap with its name


def run_sources(run_folder: Path) -> list[tuple[str, int]]:
    index = json.loads((run_folder / INDEX_FILE).read_text())
    return [tuple(s) for s in next(la for la in index["layers"] if la["name"] == BLOCK)["sources"]]


def test_attribution_shows_each_class_heatmap_logit_and_its_strongest_channels_by_sign(run, run_folder):
    layout = poster(run, classes=3)
    data = arrays(run_folder)
    heatmaps = [o for o in layout.overlays if o.key[0] == "spatial"]
    assert [o.key[2] for o in heatmaps] == [int(c) for c in data["classes"][:3]]
    for k, overlay in enumerate(heatmaps):
        assert np.array_equal(overlay.values, data["spatial"][k])
        assert overlay.scale == pytest.approx(float(np.abs(data["spatial"][:3]).max()))  # one scale for all
        line = next(t.text for t in layout.texts if t.text.startswith(f"{k + 1} · "))
        assert line == f"{k + 1} · {labels(run_folder)[k]} · logit {data['logits'][k]:.2f}"
        row = sorted((p for p in layout.panels if p.box.y > overlay.box.y - 1e-6 and p.box.x > overlay.box.x
                      and p.box.y < overlay.box.y + overlay.box.h and p.key[0] == "noise"), key=lambda p: p.box.x)
        values = data["channels"][k]
        adds = [c for c in np.argsort(-values)[:explain.PER_SIGN] if values[c] > 0]
        takes = [c for c in np.argsort(values)[:explain.PER_SIGN] if values[c] < 0]
        sources = run_sources(run_folder)
        assert [p.key[1:] for p in row] == [sources[c] for c in adds + takes]
        signs = [tile_names(layout, p)[-6:] for p in row]
        assert all("+" in s for s in signs[:len(adds)]) and all("−" in s for s in signs[len(adds):])
    rgba = heatmaps[0].rgba()  # red where the class gains, blue where it loses, opaque where strongest
    spatial = data["spatial"][0]
    assert (rgba[spatial > 0][:, 0] > rgba[spatial > 0][:, 2]).all()
    assert (rgba[spatial < 0][:, 2] > rgba[spatial < 0][:, 0]).all()
    assert rgba[..., 3].max() == pytest.approx(rgba[np.unravel_index(np.abs(spatial).argmax(), spatial.shape)][3])


def test_neuron_groups_show_where_what_and_their_attribution_to_each_class(run, run_folder):
    layout = poster(run, classes=2)
    data = arrays(run_folder)
    groups = data["group_spatial"].shape[0]
    where = [o for o in layout.overlays if o.key[0] == "group"]
    assert [o.key[2] for o in where] == list(range(groups))
    assert all(np.array_equal(o.values, data["group_spatial"][g]) for g, o in enumerate(where))
    what = [p for p in layout.panels if p.key[0] == "group"]
    assert [p.key[2] for p in what] == list(range(groups))
    assert [p.image is None for p in what] == [g == 1 for g in range(groups)]  # group 1's render is missing
    assert what[0].image == run_folder / group_render(sha("chelsea"), BLOCK, 0)
    cells = [p for p in layout.patches if p.key[0].startswith("group")]
    assert [p.key for p in cells] == [(f"group {g + 1}", k + 1) for g in range(groups) for k in range(2)]
    assert np.allclose([p.data[0, 0] for p in cells], data["group_classes"][:, :2].ravel())
    assert "group mixed4d:1" in layout.missing_summary()


def test_a_catalogued_layer_names_its_own_channels(run, run_folder):
    layout = poster(run, "coffee.jpg", CATALOGUED)
    data = arrays(run_folder, "coffee", CATALOGUED)
    keys = [p.key for p in layout.panels if p.key[0] == "noise"]
    assert keys and all(layer == CATALOGUED for _, layer, _ in keys)
    assert {c for *_, c in keys} <= set(data["dictionary_channels"].ravel()) | set(range(data["channels"].shape[1]))


def test_a_channel_is_named_and_shown_as_the_catalogued_channel_it_is(run):
    noise = figures.find_mode(run, None)
    block = explain.Channels(run, ExplainLayer(BLOCK, 2, SIDE, SIDE, [(CATALOGUED, 0), (CATALOGUED, 1000)]), noise)
    assert block[0] == explain.Channel("mixed4d_3x3:0", ("noise", CATALOGUED, 0), block[0].image)
    assert block[0].image is not None and block[1].image is None  # rendered; not rendered: a gap with its name
    residual = explain.Channels(run, ExplainLayer("add_3", 4, SIDE, SIDE), noise)  # no sources, not catalogued
    assert residual[2] == explain.Channel("add_3:2", ("noise", "add_3", 2), None)
    assert explain.renders_mode(run, None) == noise and explain.renders_mode(run, "chelsea").id == "photo-chelsea"


def test_a_model_without_classifier_still_gets_dictionary_and_groups(tmp_path):
    layout = poster(read_run(explained_run(tmp_path / "run", classifier=None)))
    assert "attribution needs class logits: the model has no classifier" in texts(layout)
    assert not [o for o in layout.overlays if o.key[0] == "spatial"]
    assert [o.key[0] for o in layout.overlays].count("group") == 4 and not layout.patches


# ----------------------------------------------------------------------------------------------- the page


def text_box(t) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of a placed text, by the generous glyph width the layouts fit with."""
    w = explain.text_width(t.text, t.size)
    x0 = t.x - w / 2 if t.align == "center" else t.x - w if t.align == "right" else t.x
    return x0, t.y, x0 + w, t.y + t.size / 72 * 1.2


def overlap(a, b) -> bool:
    return a[0] < b[2] - 1e-6 and b[0] < a[2] - 1e-6 and a[1] < b[3] - 1e-6 and b[1] < a[3] - 1e-6


@pytest.mark.parametrize("classes, positions", [(1, 1), (3, 3), (5, 4)])
def test_the_poster_fits_a4_and_a_slide_and_every_label_is_legible(run, classes, positions):
    """16:9, printed at 100% on A4 in landscape and shown whole on a 13.33 x 7.5 in slide; no text under 7 pt on
    A4 (8 on the slide); no two texts, images or cells overlap (cell values sit on their cells)."""
    layout = poster(run, classes=classes, positions=positions)
    assert layout.width / layout.height == pytest.approx(16 / 9, rel=1e-3)
    assert layout.width <= A4_LANDSCAPE[0] and layout.height <= A4_LANDSCAPE[1]
    slide = min(SLIDE[0] / layout.width, SLIDE[1] / layout.height)
    assert min(t.size for t in layout.texts) >= explain.MIN_PT and round(explain.MIN_PT * slide, 1) >= 8
    images = [(b.x, b.y, b.x + b.w, b.y + b.h) for b in
              [p.box for p in layout.panels] + [o.box for o in layout.overlays] + [p.box for p in layout.patches]]
    words = [text_box(t) for t in layout.texts]
    page = (explain.MARGIN - 1e-6, explain.MARGIN - 1e-6, layout.width - explain.MARGIN + 1e-6,
            layout.height - explain.MARGIN + 1e-6)
    for box in images + words:
        assert page[0] <= box[0] and box[2] <= page[2] and page[1] <= box[1] and box[3] <= page[3], box
    assert not [pair for pair in combinations(images, 2) if overlap(*pair)]
    on_cells = [w for w in words if any(overlap(w, (p.box.x, p.box.y, p.box.x + p.box.w, p.box.y + p.box.h))
                                        for p in layout.patches)]
    assert len(on_cells) == len(layout.patches)  # each cell's value, on it
    others = [w for w in words if w not in on_cells]
    assert not [pair for pair in combinations(others, 2) if overlap(*pair)]
    assert not [(w, i) for w in others for i in images if overlap(w, i)]
    assert len([o for o in layout.overlays if o.key[0] == "spatial"]) == classes
    assert len(next(o for o in layout.overlays if o.key[0] == "dictionary").marks) == positions
    assert not [t for t in texts(layout) if t.endswith("…")]  # nothing cut on this run


def test_long_channel_names_wrap_under_their_tile():
    lines = explain.wrap_name("conv4_block23_2_conv:117", 0.7)
    assert "".join(lines) == "conv4_block23_2_conv:117" and len(lines) == 2
    assert all(explain.text_width(line, explain.MIN_PT) <= 0.7 for line in lines)
    cut = explain.wrap_name("a_very_long_block_name_of_some_model_layer:3", 0.6)
    assert len(cut) == 2 and cut[-1].endswith("…") and all(explain.text_width(x, 7) <= 0.6 for x in cut)


# ----------------------------------------------------------------------------------------------- files and CLI


def test_cli_writes_png_and_pdf_with_classes_and_channel_names_as_text(run, run_folder, tmp_path, capsys):
    png, pdf = tmp_path / "dog.png", tmp_path / "dog.pdf"
    assert main(["figure", str(run_folder), "--explain", "chelsea.jpg:mixed4d", "--dpi", str(DPI), "-o", str(png)]) == 0
    assert main(["figure", str(run_folder), "--explain", f"{sha('chelsea')[:8]}:mixed4d", "--classes", "2",
                 "-o", str(pdf), "--dpi", str(DPI)]) == 0
    out, err = capsys.readouterr()
    assert out.split() == [str(png), str(pdf)] and "missing render(s) left as gaps" in err
    layout = poster(run)
    with Image.open(png) as image:
        assert image.size == (round(layout.width * DPI), round(layout.height * DPI))
    data = pdf.read_bytes()
    assert b"/FontFile2" in data and len(re.findall(rb"/Type\s*/Page\b(?!s)", data)) == 1
    shown = pdf_text(pdf)
    two = poster(run, classes=2)
    for k in range(2):
        assert f"{k + 1} · {labels(run_folder)[k]} · logit {arrays(run_folder)['logits'][k]:.2f}" in shown
    names = [t.text for t in two.texts if t.align == "center" and t.size == explain.MIN_PT]
    assert names and all(name in shown for name in names)
    assert "Semantic dictionary" in shown and "Neuron groups" in shown


def test_the_command_line_names_the_poster_after_the_photo_and_layer(run_folder, capsys):
    assert main(["figure", str(run_folder), "--explain", f"{sha('coffee')}:mixed4d", "--dpi", str(DPI)]) == 0
    assert Path(capsys.readouterr().out.strip()) == run_folder / "figures" / "explain-coffee-mixed4d.png"


def test_a_spec_file_names_the_kind(run_folder, tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"dpi": DPI, "figures": [
        {"name": "dog", "kind": "explain", "explained": "chelsea.jpg", "layer": BLOCK, "classes": 2,
         "output": str(tmp_path / "dog.pdf")}]}))
    made, _ = figures.draw_job(read_run(run_folder), figures.SpecJob(path))
    assert made[0].path == tmp_path / "dog.pdf" and made[0].layout.kind == "explain"
    job, _ = figures.draw_job(read_run(run_folder), FigureJob("explain", {"explained": "coffee.jpg", "layer": BLOCK},
                                                              output=tmp_path / "cat.png", dpi=DPI))
    assert job[0].path.is_file()


@pytest.mark.parametrize("argv, message", [
    (["--explain", "chelsea.jpg"], "--explain takes PHOTO:LAYER, e.g. dog.jpg:mixed4d, not 'chelsea.jpg'"),
    (["--explain", ":mixed4d"], "--explain takes PHOTO:LAYER"),
    (["--explain", "horse.jpg:mixed4d"], "no explained photo horse.jpg; the run has: chelsea.jpg, coffee.jpg"),
    (["--explain", "chelsea.jpg:mixed5b"], "photo chelsea.jpg is not explained at layer 'mixed5b'; its layers: "
                                           "mixed4d, mixed4d_3x3_pre_relu"),
    (["--explain", "chelsea.jpg:mixed4d", "--classes", "9"], "classes"),
    (["--explain", "chelsea.jpg:mixed4d", "--grid", "3"], "--grid does not apply to --explain"),
])
def test_user_errors_are_one_line_exit_2(run_folder, tmp_path, capsys, argv, message):
    assert main(["figure", str(run_folder), *argv, "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "x.png").exists()


def test_a_run_without_explanations_is_one_line(tmp_path, capsys):
    folder = make_fake_run(tmp_path / "plain", layers=synthetic_layers(0.125)[:2], fraction=0.1, size=32, thumb=16)
    assert main(["figure", str(folder), "--explain", "chelsea.jpg:mixed4d"]) == 2
    err = capsys.readouterr().err
    assert "has no explained photos; make them with `atlas explain" in err and err.count("\n") == 1
    with pytest.raises(UserError):
        poster(read_run(folder))
