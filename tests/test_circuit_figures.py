"""The circuit and first-layer-weights figures: layout facts, drawn data, PNG and PDF, one-line errors."""

import re
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from atlas.cli import main
from atlas.errors import UserError
from atlas.publish import figures
from atlas.publish.figures import circuits, page
from atlas.run.manifest import read_run
from tests.fakerun import add_fake_circuits, make_fake_run

UNIT = ("mixed4b_5x5_pre_relu", 3)


@pytest.fixture(scope="module")
def run(small_model, tmp_path_factory):
    folder = make_fake_run(tmp_path_factory.mktemp("circuit-figures") / "quick", layers=small_model.layers,
                           fraction=0.5, size=48, thumb=16)
    add_fake_circuits(folder, small_model, top=10)
    return read_run(folder)


def _inside(box, layout) -> bool:
    return 0 <= box.x and box.x + box.w <= layout.width and 0 <= box.y and box.y + box.h <= layout.height


def _overlap(a, b) -> bool:
    return a.x < b.x + b.w and b.x < a.x + a.w and a.y < b.y + b.h and b.y < a.y + a.h


def test_circuit_layout_shows_the_strongest_edges_by_sign_and_strength(run):
    mode = figures.find_mode(run, None)
    layout = circuits.circuit_layout(run, *UNIT, mode, "c")
    inputs, outputs = run.circuits.inputs(*UNIT), run.circuits.outputs(*UNIT)
    shown = circuits._strongest(inputs, circuits.CIRCUIT_TOP) + circuits._strongest(outputs, circuits.CIRCUIT_TOP)
    assert len(layout.links) == len(shown) == 4 * circuits.CIRCUIT_TOP
    assert [link.excites for link in layout.links] == [e.sum > 0 for e in shown]
    widths = sorted(zip((e.norm for e in shown), (link.width for link in layout.links)))
    assert [w for _, w in widths] == sorted(w for _, w in widths)  # wider for stronger
    kernels = [p for p in layout.patches if p.data.ndim == 2]
    assert [p.key for p in kernels] == [(e.layer, e.channel) for e in shown]
    for patch, edge in zip(kernels, shown):
        assert np.array_equal(patch.data, edge.kernel)
        rgb = patch.rgb()  # red where positive, blue where negative, white at zero
        assert (rgb[edge.kernel > 0][:, 0] == 1).all() and (rgb[edge.kernel < 0][:, 2] == 1).all()
    boxes = [p.box for p in layout.panels] + [p.box for p in layout.patches]
    assert all(_inside(b, layout) for b in boxes)
    assert not [pair for pair in combinations(boxes, 2) if _overlap(*pair)]
    assert layout.panels[0].key == ("noise", *UNIT) and layout.panels[0].box.w > 1.5  # the unit, large
    assert layout.width <= 8.27 and layout.height <= 11.69 and layout.height / layout.width < 1  # A4 and a slide
    assert min(t.size for t in layout.texts) >= page.FOOTER_PT
    labels = [t for t in layout.texts[:-1] if t.size in (circuits.NAME_PT, circuits.WEIGHT_PT)]  # not the footer
    assert len(labels) == 2 * len(shown)
    assert all(len(t.text) * page.CHAR_EM * t.size / 72 <= circuits.LABEL_W for t in labels)  # fit beside kernels


def test_first_layer_weights_are_colour_patches_of_the_kernels(run):
    layout = circuits.weights_layout(run, "conv2d0_pre_relu", "w")
    full = run.circuits.full("conv2d0_pre_relu", "direct")
    assert len(layout.patches) == full.shape[0] and full.shape[1:] == (3, 7, 7)
    for patch, kernel in zip(layout.patches, full):
        rgb = kernel.transpose(1, 2, 0)
        assert np.allclose(patch.rgb(), 0.5 + rgb / (2 * np.abs(rgb).max()))
    assert all(_inside(p.box, layout) for p in layout.patches)
    with pytest.raises(UserError, match="RGB image"):
        circuits.weights_layout(run, "conv2d1_pre_relu", "w")


def test_cli_writes_png_and_pdf_and_errors_are_one_line(run, tmp_path, capsys):
    folder = str(run.folder)
    assert main(["figure", folder, "--circuit", f"{UNIT[0]}:{UNIT[1]}", "--dpi", "40", "-o",
                 str(tmp_path / "c.png")]) == 0
    assert main(["figure", folder, "--circuit", "conv2d0_pre_relu:1", "--mode", "chelsea", "--dpi", "40", "-o",
                 str(tmp_path / "c.pdf")]) == 0
    assert main(["figure", folder, "--weights", "conv2d0_pre_relu", "--dpi", "40"]) == 0
    with Image.open(tmp_path / "c.png") as image:
        layout = circuits.circuit_layout(run, *UNIT, figures.find_mode(run, None), "c")
        assert image.size == (round(layout.width * 40), round(layout.height * 40))
    pdf = (tmp_path / "c.pdf").read_bytes()
    assert len(re.findall(rb"/Type\s*/Page\b(?!s)", pdf)) == 1 and b"DejaVuSans" in pdf
    assert Path(folder, "figures", "weights-conv2d0_pre_relu.png").is_file()
    capsys.readouterr()
    for argv in (["--circuit", "mixed4b_5x5_pre_relu:99"], ["--circuit", "nolayer:1"],
                 ["--weights", "mixed3a_1x1_pre_relu"], ["--circuit", "conv2d0_pre_relu:1", "--channels", "2"]):
        assert main(["figure", folder, *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("atlas: error:"), err


def test_a_run_without_circuits_says_how_to_get_them(tmp_path, capsys):
    folder = make_fake_run(tmp_path / "plain", fraction=0.25, size=32, thumb=16)
    assert main(["figure", str(folder), "--circuit", "conv2d0_pre_relu:1"]) == 2
    assert "circuits: true" in capsys.readouterr().err
