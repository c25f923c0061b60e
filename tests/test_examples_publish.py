"""Dataset examples in the gallery (static HTML) and in figures, on a fake run folder (no TensorFlow)."""

from __future__ import annotations

import re

import pytest
from PIL import Image

from atlas.cli import main
from atlas.publish.figures import FigureSpec, layout_figure
from atlas.publish.site import build_site
from atlas.run.manifest import read_run
from tests.fakerun import add_fake_examples, make_fake_run, synthetic_layers

LAYER = "mixed4d_3x3_bottleneck_pre_relu"  # 18 channels in the 0.125 stand-in


@pytest.fixture()
def layers():
    return [layer for layer in synthetic_layers(0.125) if layer.name in ("conv2d0_pre_relu", LAYER)]


def test_pages_show_examples_only_where_there_are_some(tmp_path, layers):
    plain = make_fake_run(tmp_path / "plain", layers=layers, fraction=0.5)
    build_site(plain)
    with_examples = add_fake_examples(make_fake_run(tmp_path / "ex", layers=layers, fraction=0.5), layers,
                                      fraction=0.25)  # channels 0-3 of 18 (0-8 rendered)
    build_site(with_examples)
    for rel in [f"layers/{LAYER}.html", f"channels/{LAYER}/0001.html", "index.html"]:
        page = (plain / "site" / rel).read_text()
        assert "example" not in page, rel  # a run without examples looks as before
    channel = (with_examples / "site" / f"channels/{LAYER}/0001.html").read_text()
    patches = re.findall(r'<a class="example" href="([^"]+)" data-box="(\d+),(\d+),(\d+),(\d+)"', channel)
    run = read_run(with_examples)
    expected = run.examples[(LAYER, 1)]
    assert len(patches) == len(expected) == 3
    for (href, *box), example in zip(patches, expected):
        assert [int(v) for v in box] == list(example.box)
        assert href == "../../../" + run.example_photos[example.photo].thumb
    assert "Dataset examples" not in (with_examples / "site" / f"channels/{LAYER}/0006.html").read_text()
    assert not (with_examples / "site" / f"channels/{LAYER}/0012.html").exists()  # no render, no examples: no page
    layer_page = (with_examples / "site" / f"layers/{LAYER}.html").read_text()
    assert 'data-mode="examples"' in layer_page and 'data-panel="examples"' in layer_page
    assert layer_page.count("best patch of channel") == 4  # the others are drawn on demand, from their ranges
    assert "14 channels without dataset examples" in layer_page and 'data-channels="4-17"' in layer_page


def test_figure_sheet_with_examples_puts_dream_and_patches_in_one_row(tmp_path, layers, capsys):
    folder = add_fake_examples(make_fake_run(tmp_path / "ex", layers=layers, fraction=1.0), layers, fraction=0.5)
    run = read_run(folder)
    layout = layout_figure(run, FigureSpec(name="s", kind="sheet", layer=LAYER, channels="0-3", examples=True))
    assert len(layout.panels) == 4 * 4  # per channel: the dream and 3 patches
    rows = [layout.panels[i:i + 4] for i in range(0, 16, 4)]
    for channel, row in enumerate(rows):
        assert len({p.box.y for p in row}) == 1 and row[0].key == ("noise", LAYER, channel)
        assert [p.image.relative_to(folder).as_posix() for p in row[1:]] == \
            [e.crop for e in run.examples[(LAYER, channel)]]
        assert [p.label for p in row[1:]] == [f"{e.value:.3g}" for e in run.examples[(LAYER, channel)]]
    out = tmp_path / "sheet.png"
    assert main(["figure", str(folder), "--sheet", LAYER, "--channels", "8-10", "--examples", "--dpi", "40",
                 "-o", str(out)]) == 0
    assert Image.open(out).width == 8 * 40
    assert "missing" in capsys.readouterr().err  # channels 9 and 10 have no examples: gaps, named
    assert main(["figure", str(folder), "--progression", "--examples"]) == 2


def test_figure_examples_without_examples_is_one_line(tmp_path, layers, capsys):
    folder = make_fake_run(tmp_path / "plain", layers=layers)
    assert main(["figure", str(folder), "--sheet", LAYER, "--examples"]) == 2
    assert "no dataset examples" in capsys.readouterr().err


def test_an_example_whose_patch_is_gone_is_not_shown(tmp_path, layers):
    """As with renders: a patch deleted from the run folder leaves no broken image on the channel page."""
    run_folder = add_fake_examples(make_fake_run(tmp_path / "ex", layers=layers, fraction=0.5), layers)
    first, *rest = read_run(run_folder).examples[(LAYER, 1)]
    (run_folder / first.crop).unlink()
    build_site(run_folder)
    channel = (run_folder / "site" / f"channels/{LAYER}/0001.html").read_text()
    shown = re.findall(r'<a class="example" href="[^"]+" data-box="(\d+,\d+,\d+,\d+)"', channel)
    assert shown == [",".join(map(str, e.box)) for e in rest] and first.crop not in channel
