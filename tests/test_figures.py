"""Teaching figures: layouts checked through their data, files checked for pixel size and page count."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from PIL import Image

from atlas.cli import build_parser, main
from atlas.errors import UserError
from atlas.publish import figures
from atlas.publish.figures import grids, page
from atlas.publish.figures import KINDS, FigureJob, FigureSpec, ItemSpec, SpecFile, SpecJob
from atlas.run.explainfiles import ExplainLayer
from atlas.run.manifest import WHOLE_LAYER, Run, read_run
from tests.fakerun import (add_fake_circuits, add_fake_classes, add_fake_explain, add_fake_map, make_fake_run,
                           synthetic_layers)

ROOT = Path(__file__).resolve().parents[1]
LECTURE = ROOT / "configs" / "figures" / "lecture3.yaml"
SHEET_LAYER = "mixed4d_3x3_bottleneck_pre_relu"  # 18 channels in the 0.125 stand-in; 9 rendered at fraction 0.5
DPI = 40  # small files, fast tests; the default 200 is checked once


def figure_run(folder: str | Path) -> Run:
    """Any run folder, fake or from a real sweep, as the figures read it."""
    return read_run(folder)


@pytest.fixture(scope="session")
def run_folder(tmp_path_factory) -> Path:
    """Half of every layer's channels rendered, in noise and one photo (with whole-layer dreams)."""
    return make_fake_run(tmp_path_factory.mktemp("runs") / "quick", fraction=0.5, size=48, thumb=16)


@pytest.fixture(scope="session")
def run(run_folder) -> Run:
    return figure_run(run_folder)


def spec(**data) -> FigureSpec:
    return FigureSpec(**{"name": "test", **data})


def pdf_pages(path: Path) -> int:
    """Page count of a PDF written by matplotlib (its page objects are plain, uncompressed dictionaries)."""
    return len(re.findall(rb"/Type\s*/Page\b(?!s)", path.read_bytes()))


# ----------------------------------------------------------------------------------------------- layouts


def test_sheet_labels_every_channel_and_leaves_gaps(run):
    layer = run.layer(SHEET_LAYER)
    rendered = {r.channel for r in run.renders if r.mode == "noise" and r.layer == SHEET_LAYER}
    layout = figures.layout_figure(run, spec(kind="sheet", layer=SHEET_LAYER, columns=6))
    assert layout.title == SHEET_LAYER and layout.width == page.PAGE_WIDTH
    assert layout.labels == [str(c) for c in range(layer.channels)]
    assert [p.key[2] for p in layout.gaps] == [c for c in range(layer.channels) if c not in rendered]
    assert 0 < len(layout.gaps) < layer.channels
    assert all(p.image.is_file() for p in layout.panels if not p.missing)
    facts = " ".join(t.text for t in layout.texts)
    assert f"{layer.channels} channels" in facts and f"receptive field {layer.receptive_field} px" in facts
    rows = sorted({p.box.y for p in layout.panels})
    assert len(rows) == 3 and len({p.box.x for p in layout.panels}) == 6  # 18 channels in 6 columns
    assert layout.height > rows[-1] + layout.panels[-1].box.h  # the page holds the last row


def test_sheet_channel_selection_and_photo_mode(run):
    layout = figures.layout_figure(run, spec(kind="sheet", layer=SHEET_LAYER, channels="0-3,7", mode="chelsea"))
    assert layout.labels == ["0", "1", "2", "3", "7"] and not layout.gaps
    assert {p.key[0] for p in layout.panels} == {"photo-chelsea"}
    assert "'chelsea'" in " ".join(t.text for t in layout.texts)  # the photo's credit is in the footer
    with pytest.raises(UserError, match="out of range .* 18 channels"):
        figures.layout_figure(run, spec(kind="sheet", layer=SHEET_LAYER, channels="0-63"))


def test_default_progression_spreads_low_to_high(run):
    chosen = grids.default_progression(run.layers)
    assert 8 <= len(chosen) <= 10
    assert [layer.index for layer in chosen] == sorted(layer.index for layer in chosen)
    assert chosen[0].name == "conv2d0_pre_relu" and chosen[-1].name == "mixed5b_3x3_pre_relu"
    assert "mixed4d_3x3_pre_relu" in [layer.name for layer in chosen]
    assert not any(layer.block.startswith("head") for layer in chosen)


def test_progression_on_a_photo_prefers_whole_layer_dreams(run):
    layout = figures.layout_figure(run, spec(kind="progression", photo="chelsea"))
    assert layout.panels[0].label == "photo: chelsea" and layout.panels[0].image.name == "chelsea.jpg"
    dreams = layout.panels[1:]
    assert [p.key[2] for p in dreams] == [WHOLE_LAYER] * len(dreams) and not layout.gaps
    assert [p.label for p in dreams] == [page.short_layer(l.name) for l in grids.default_progression(run.layers)]


def test_progression_on_noise_falls_back_to_a_channel_and_sorts_layers(run):
    names = ["mixed5a_3x3_pre_relu", "conv2d0_pre_relu", "mixed3a_1x1_pre_relu"]
    layout = figures.layout_figure(run, spec(kind="progression", layers=names, columns=3))
    assert layout.labels == ["conv2d0 · ch 0", "mixed3a_1x1 · ch 0", "mixed5a_3x3 · ch 0"]  # equal lifts: lowest
    assert len({p.box.y for p in layout.panels}) == 1  # one strip


def test_panel_items_captions_modes_and_gaps(run):
    items = [ItemSpec(layer="conv2d0_pre_relu", channel=1, caption="edges " * 40),
             ItemSpec(layer=SHEET_LAYER, channel=17),  # beyond the rendered half: a gap
             ItemSpec(layer="mixed4d_3x3_pre_relu", channel=2, mode="photo-chelsea")]
    layout = figures.layout_figure(run, spec(kind="panel", items=items))
    assert layout.labels == ["conv2d0:1", "mixed4d_3x3_bottleneck:17", "mixed4d_3x3:2 (photo-chelsea)"]
    assert [p.missing for p in layout.panels] == [False, True, False]
    caption = layout.panels[0].caption
    assert 1 < caption.count("\n") + 1 <= page.CAPTION_LINES and caption.endswith("…")
    assert "noise mixed4d_3x3_bottleneck_pre_relu:17" in layout.missing_summary()


def test_a_deleted_image_file_becomes_a_gap(tmp_path):
    folder = make_fake_run(tmp_path / "small", layers=synthetic_layers(0.125)[:3], photos=())
    for path in (folder / "images/noise/conv2d1_pre_relu").glob("0002.*"):
        path.unlink()
    layout = figures.layout_figure(figure_run(folder), spec(kind="sheet", layer="conv2d1_pre_relu"))
    assert [p.label for p in layout.gaps] == ["2"]
    assert layout.missing_summary() == "noise conv2d1_pre_relu:2"


def test_channel_ranges_and_labels_fit():
    assert page.channel_ranges([9, 3, 10, 11, WHOLE_LAYER]) == "3,9-11,layer"
    assert page.label_size(["0"], 1.0) == page.LABEL_PT_MAX
    assert page.label_size(["x" * 200], 0.5) == page.LABEL_PT_MIN


# ----------------------------------------------------------------------------------------------- files


def test_png_pixel_size_is_inches_times_dpi(run, tmp_path):
    layout = figures.layout_figure(run, spec(kind="sheet", layer=SHEET_LAYER, channels="0-11"))
    for dpi in (figures.DEFAULT_DPI, 37):
        path = figures.write_figure(layout, tmp_path / f"sheet{dpi}.png", dpi)
        with Image.open(path) as image:
            assert image.size == (round(layout.width * dpi), round(layout.height * dpi))
    assert not list(tmp_path.glob(".*"))  # the atomic temp files are gone


def test_pdf_is_one_page_with_embedded_vector_font_and_reproducible(run, tmp_path):
    layout = figures.layout_figure(run, spec(kind="progression", photo="chelsea"))
    first = figures.write_figure(layout, tmp_path / "a.pdf", DPI)
    second = figures.write_figure(layout, tmp_path / "b.pdf", DPI)
    data = first.read_bytes()
    assert pdf_pages(first) == 1
    assert b"DejaVuSans" in data and b"/FontFile2" in data  # TrueType (type 42): selectable vector text
    assert b"/CreationDate" not in data and data == second.read_bytes()
    width, height = (float(v) for v in re.search(rb"/MediaBox \[\s*0 0 ([\d.]+) ([\d.]+)", data).groups())
    assert width == pytest.approx(layout.width * 72, abs=0.5) and height == pytest.approx(layout.height * 72, abs=0.5)


def test_spec_file_writes_every_figure_and_a_combined_pdf(run, tmp_path):
    spec_file = figures.load_spec(LECTURE)
    spec_file.combined = str(tmp_path / "all.pdf")
    for figure in spec_file.figures:
        figure.output = str(tmp_path / f"{figure.name}.{figure.format or spec_file.format}")
    made, combined = figures.make_figures(run, spec_file, dpi=DPI)
    assert [m.path.name for m in made] == ["lecture3-sheet.png", "lecture3-progression.png", "lecture3-picked.pdf"]
    assert all(m.path.is_file() for m in made) and pdf_pages(made[2].path) == 1
    assert pdf_pages(combined) == len(spec_file.figures)


# ----------------------------------------------------------------------------------------------- spec errors


@pytest.mark.parametrize("text, message", [
    ("figures:\n  - {name: a, kind: sheet, layer: x, chanels: 0-3}\n",
     "figures.0: unknown key 'chanels' of a sheet figure (did you mean 'channels'?); a sheet figure's keys: layer, "
     "channels, mode, examples (and any figure's: name, kind, title, columns, dpi, format, output)"),
    ("figures:\n  - {name: a, kind: panel, items: [{layer: x, channel: 1, captoin: hi}]}\n",
     "did you mean 'caption'?"),
    ("figure:\n  - {name: a, kind: progression}\n", "did you mean 'figures'?"),
    ("figures:\n  - {name: a, kind: sheet, layer: x, columns: three}\n", "figures.0.columns: Input should be"),
    ("figures:\n  - {name: a, kind: poster}\n", "figures.0.kind"),
    ("figures:\n  - {name: a, kind: sheet}\n", "a sheet figure needs 'layer'"),
    ("figures:\n  - {name: a, kind: progression, channels: 0-3}\n", "'channels' does not apply to a progression"),
    ("figures:\n  - {name: a, kind: progression, output: a.jpg}\n", "must end in .png or .pdf"),
    ("combined: all.png\nfigures:\n  - {name: a, kind: progression}\n", "'combined' must be a .pdf"),
    ("figures:\n  - {name: a, kind: progression}\n  - {name: a, kind: progression}\n", "'a' is used twice"),
    ("figures: [\n", "not valid YAML at line"),
])
def test_bad_spec_files_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as error:
        figures.load_spec(path)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_shipped_example_spec_is_valid():
    spec_file = figures.load_spec(LECTURE)
    assert isinstance(spec_file, SpecFile) and {f.kind for f in spec_file.figures} == {"sheet", "progression", "panel"}


# ----------------------------------------------------------------------------------------------- command line


def test_cli_sheet_writes_png_and_warns_once_about_gaps(run_folder, tmp_path, capsys):
    out = tmp_path / "sheet.png"
    assert main(["figure", str(run_folder), "--sheet", SHEET_LAYER, "--channels", "0-15", "-o", str(out),
                 "--dpi", str(DPI)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out) and out.is_file()
    warning = captured.err.strip().splitlines()
    assert len(warning) == 1 and "gaps" in warning[0] and f"{SHEET_LAYER}:9-15" in warning[0]


def test_cli_defaults_to_the_run_figures_folder_and_spec_combined(run_folder, capsys):
    assert main(["figure", str(run_folder), "--progression", "--photo", "chelsea", "--dpi", str(DPI)]) == 0
    assert (run_folder / "figures" / "progression-photo-chelsea.png").is_file()
    assert main(["figure", str(run_folder), "--panel", "conv2d0_pre_relu:1,mixed4d_3x3_pre_relu:2",
                 "--captions", "first|second", "--mode", "photo-chelsea", "--dpi", str(DPI)]) == 0
    assert main(["figure", str(run_folder), "--spec", str(LECTURE), "--dpi", str(DPI)]) == 0
    written = {p.name for p in (run_folder / "figures").iterdir()}
    assert {"lecture3-sheet.png", "lecture3-progression.png", "lecture3-picked.pdf", "lecture3.pdf"} <= written
    assert any(name.startswith("panel-photo-chelsea-") for name in written)
    assert pdf_pages(run_folder / "figures" / "lecture3.pdf") == 3
    capsys.readouterr()


@pytest.mark.parametrize("argv, message", [
    (["--sheet", SHEET_LAYER, "-o", "sheet.jpg"], "sheet.jpg: a figure is written as .png or .pdf"),
    (["--sheet", "mixed4d_3x3_botleneck_pre_relu"], "did you mean mixed4d_3x3_bottleneck_pre_relu"),
    (["--progression", "--photo", "dog"], "unknown mode or photo 'dog': this run has noise, photo-chelsea"),
    (["--sheet", SHEET_LAYER, "--photo", "chelsea"], "--photo does not apply to --sheet"),
    (["--spec", "missing.yaml"], "missing.yaml: no such file"),
    (["--spec", str(LECTURE), "-o", "x.pdf"], "--output does not apply to --spec"),
    (["--panel", "conv2d0_pre_relu"], "bad panel item 'conv2d0_pre_relu'"),
    (["--panel", "conv2d0_pre_relu:1", "--captions", "a|b"], "2 captions for 1 channels"),
    (["--sheet", SHEET_LAYER, "--columns", "0"], "columns: Input should be greater than or equal to 1"),
    (["--sheet", SHEET_LAYER, "--progression"], "not allowed with argument"),
])
def test_cli_user_errors_are_one_line_exit_2(run_folder, capsys, argv, message):
    assert main(["figure", str(run_folder), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_cli_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["figure", str(tmp_path), "--progression"]) == 2
    assert "is not an atlas run folder" in capsys.readouterr().err


def test_figures_do_not_import_tensorflow():
    code = "import sys, atlas.publish.figures, atlas.cli; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


def test_a_bad_figure_in_a_spec_stops_before_any_file_is_written(run_folder, tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(f"figures:\n  - {{name: good, kind: progression, output: {tmp_path}/good.png}}\n"
                    f"  - {{name: bad, kind: sheet, layer: no_such_layer, output: {tmp_path}/bad.png}}\n")
    assert main(["figure", str(run_folder), "--spec", str(path)]) == 2
    assert "unknown layer 'no_such_layer'" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.png"))


# ----------------------------------------------------------------------------------------------- the kinds' registry

# one figure of each registered kind, as a spec file names it (a new kind needs an entry here: the test below says so)
EVERY_KIND = {
    "sheet": {"layer": SHEET_LAYER, "channels": [0, 1, 2], "mode": "chelsea"},
    "progression": {"photo": "chelsea", "layers": ["conv2d0_pre_relu", SHEET_LAYER]},
    "panel": {"items": [{"layer": "conv2d0_pre_relu", "channel": 1, "caption": "low"}], "mode": "noise"},
    "class": {"names": "Egyptian cat, 1", "mode": "noise"},
    "map": {"layer": "mixed4c", "grid": 3},
    "circuit": {"layer": "mixed4b_5x5_pre_relu", "channel": 3, "mode": "noise"},
    "weights": {"layer": "conv2d0_pre_relu", "columns": 4},
    "explain": {"explained": "chelsea.jpg", "layer": "mixed4d_3x3_pre_relu", "classes": 2},
}


@pytest.fixture(scope="module")
def every_kind_run(small_model, tmp_path_factory) -> Path:
    """A fake run with renders, circuits, a map and an explained photo: every kind of figure can be drawn from it."""
    folder = make_fake_run(tmp_path_factory.mktemp("kinds") / "run", layers=small_model.layers, fraction=0.5,
                           size=32, thumb=16)
    add_fake_classes(folder, size=32, thumb=16)
    add_fake_circuits(folder, small_model, top=5)
    add_fake_map(folder, "mixed4c", [("mixed4c_3x3_pre_relu", c) for c in range(4)], grids=(3,))
    explained = small_model.layer("mixed4d_3x3_pre_relu")
    add_fake_explain(folder, [ExplainLayer(explained.name, explained.channels, 7, 7)], photos=("chelsea",), size=64)
    return folder


def test_every_registered_kind_is_named_in_a_spec_file_and_drawn(every_kind_run, tmp_path):
    assert set(EVERY_KIND) == set(KINDS)
    path = tmp_path / "every.yaml"
    figures_ = [{"name": f"every-{kind}", "kind": kind, **keys} for kind, keys in EVERY_KIND.items()]
    path.write_text(yaml.safe_dump({"dpi": DPI, "format": "pdf", "combined": str(tmp_path / "every.pdf"),
                                    "figures": figures_}))
    made, combined = figures.draw_job(read_run(every_kind_run), SpecJob(path))
    assert [m.layout.kind for m in made] == list(EVERY_KIND)
    assert [m.path for m in made] == [every_kind_run / "figures" / f"every-{kind}.pdf" for kind in EVERY_KIND]
    assert all(pdf_pages(m.path) == 1 for m in made) and pdf_pages(combined) == len(KINDS)
    assert all(m.layout.panels or m.layout.patches for m in made)


def test_the_spec_schema_and_the_command_line_come_from_the_registry():
    for kind in KINDS.values():
        assert set(kind.keys) <= set(FigureSpec.model_fields)
        assert set(kind.needs) <= set(kind.keys)
        if kind.needs:
            with pytest.raises(ValueError, match=f"a {kind.name} figure needs '{kind.needs[0]}'"):
                FigureSpec(name="x", kind=kind.name)
    help_text = build_parser()._subparsers._group_actions[0].choices["figure"].format_help()
    for kind in KINDS.values():
        assert f"--{kind.name}" in help_text
        for option in kind.cli_options:
            assert f"--{option}" in help_text
    assert KINDS["sheet"].default("channels") == "all"
    assert FigureSpec(name="x", kind="sheet", layer="a").value("channels") == "all"


@pytest.mark.parametrize("kind, key, message", [
    ("sheet", "grid", "'grid' does not apply to a sheet figure; a sheet figure's keys: layer, channels, mode, "
                      "examples (and any figure's: name, kind, title, columns, dpi, format, output)"),
    ("circuit", "chanel", "unknown key 'chanel' of a circuit figure (did you mean 'channel'?); a circuit figure's "
                          "keys: layer, channel, mode (and any figure's"),
    ("weights", "palette", "unknown key 'palette' of a weights figure; a weights figure's keys: layer (and any "
                          "figure's: name, kind, title, columns"),
    ("map", "mode", "'mode' does not apply to a map figure; a map figure's keys: layer, grid"),
])
def test_an_unknown_key_in_a_spec_names_the_kind_and_its_keys(tmp_path, kind, key, message):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"figures": [{"name": "a", "kind": kind, **EVERY_KIND[kind], key: 1}]}))
    with pytest.raises(UserError) as error:
        figures.load_spec(path)
    assert f"figures.0: {message}" in str(error.value) and "\n" not in str(error.value), error.value


@pytest.mark.parametrize("argv, job", [
    (["--sheet", SHEET_LAYER, "--channels", "0-5", "--mode", "chelsea", "--columns", "3"],
     FigureJob("sheet", {"layer": SHEET_LAYER, "channels": "0-5", "mode": "chelsea", "columns": 3})),
    (["--progression", "--photo", "chelsea", "--layers", "conv2d0_pre_relu,mixed3a_1x1_pre_relu"],
     FigureJob("progression", {"photo": "chelsea", "layers": ["conv2d0_pre_relu", "mixed3a_1x1_pre_relu"]})),
    (["--panel", "conv2d0_pre_relu:1,mixed4d_3x3_pre_relu:2", "--captions", "one|two", "--title", "Two"],
     FigureJob("panel", {"items": [{"layer": "conv2d0_pre_relu", "channel": 1, "caption": "one"},
                                   {"layer": "mixed4d_3x3_pre_relu", "channel": 2, "caption": "two"}],
                         "title": "Two"})),
])
def test_a_job_built_in_python_draws_the_same_figure_as_the_command_line(run_folder, tmp_path, capsys, argv, job):
    cli_file, api_file = tmp_path / "cli.png", tmp_path / "api.png"
    assert main(["figure", str(run_folder), *argv, "--dpi", str(DPI), "-o", str(cli_file)]) == 0
    capsys.readouterr()
    made, combined = figures.draw_job(read_run(run_folder), replace(job, output=api_file, dpi=DPI))
    assert [m.path for m in made] == [api_file] and combined is None
    assert api_file.read_bytes() == cli_file.read_bytes()


def test_without_output_a_python_job_writes_where_the_command_line_does(run_folder, capsys):
    assert main(["figure", str(run_folder), "--sheet", SHEET_LAYER, "--channels", "0-3", "--dpi", str(DPI)]) == 0
    printed = Path(capsys.readouterr().out.strip())
    cli_bytes = printed.read_bytes()
    made, _ = figures.draw_job(read_run(run_folder), FigureJob("sheet", {"layer": SHEET_LAYER, "channels": "0-3"},
                                                               dpi=DPI))
    assert made[0].path == printed == run_folder / "figures" / f"sheet-{SHEET_LAYER}-noise.png"
    assert made[0].path.read_bytes() == cli_bytes


# ----------------------------------------------------------------------------------------------- a real sweep


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Run:
    """A small real sweep of the stand-in: 4 layers x 4 channels, noise and a photo with whole-layer dreams."""
    import yaml

    from atlas.run.config import load_config
    from atlas.run.sweep import sweep

    folder = tmp_path_factory.mktemp("real")
    config = {"name": "real", "model": "synthetic:0.125", "channels": 4, "modes": ["noise", "photo"],
              "photos": ["chelsea"], "layer_dreams": True, "output": str(folder),
              "layers": ["conv2d0_pre_relu", "mixed3b_3x3_pre_relu", SHEET_LAYER, "mixed5b_5x5_pre_relu"],
              "render": {"octaves": 1, "steps": 2, "size": 64, "photo_octaves": 1, "photo_steps": 1}}
    (folder / "real.yaml").write_text(yaml.safe_dump(config))
    loaded = load_config(folder / "real.yaml")
    assert sweep(loaded).done == 4 * 4 * 2 + 4
    return figure_run(loaded.run_folder)


def test_every_figure_type_from_a_real_sweep(real_run, tmp_path):
    sheet = figures.layout_figure(real_run, spec(kind="sheet", layer=SHEET_LAYER, channels="0-7"))
    assert sheet.labels == [str(c) for c in range(8)] and [p.key[2] for p in sheet.gaps] == [4, 5, 6, 7]
    swept = [layer.name for layer in real_run.layers if any(r.layer == layer.name for r in real_run.renders)]
    progression = figures.layout_figure(real_run, spec(kind="progression", photo="chelsea", layers=swept))
    assert len(progression.panels) == 1 + len(swept) == 5  # the base photo, then each layer low to high
    assert not progression.gaps  # every layer of the sweep has its whole-layer dream
    panel = figures.layout_figure(real_run, spec(kind="panel", items=[
        ItemSpec(layer="conv2d0_pre_relu", channel=1, caption="low"),
        ItemSpec(layer="mixed5b_5x5_pre_relu", channel=3, caption="high")]))
    assert [p.caption for p in panel.panels] == ["low", "high"] and not panel.gaps
    png = figures.write_figure(sheet, tmp_path / "sheet.png", DPI)
    with Image.open(png) as image:
        assert image.size == (round(sheet.width * DPI), round(sheet.height * DPI))
    book = figures.write_combined_pdf([sheet, progression, panel], tmp_path / "all.pdf", DPI)
    assert pdf_pages(book) == 3


def test_figures_name_the_method_and_show_a_channels_facets(tmp_path):
    folder = make_fake_run(tmp_path / "methods", layers=synthetic_layers(0.125)[:3], photos=(), size=32, thumb=16,
                           fourier_facets=3)
    run = figure_run(folder)
    items = [ItemSpec(layer="conv2d0_pre_relu", channel=1, caption="one channel, three facets"),
             ItemSpec(layer="conv2d0_pre_relu", channel=2, mode="noise")]
    layout = figures.layout_figure(run, spec(kind="panel", mode="fourier", items=items))
    assert layout.labels == ["conv2d0:1 f0", "conv2d0:1 f1", "conv2d0:1 f2", "conv2d0:2 (noise)"]
    assert [p.image.name for p in layout.panels[:3]] == ["0001.png", "0001-facet1.png", "0001-facet2.png"]
    assert [p.caption is not None for p in layout.panels] == [True, False, False, False]
    words = " ".join(t.text for t in layout.texts)
    assert "Fourier method, started from noise, 3 facets per channel" in words
    sheet = figures.layout_figure(run, spec(kind="sheet", layer="conv2d0_pre_relu"))
    assert "DeepDream method, started from noise" in " ".join(t.text for t in sheet.texts)
    figures.write_figure(layout, tmp_path / "facets.png", dpi=DPI)
    assert Image.open(tmp_path / "facets.png").size[0] > 0


@pytest.fixture(scope="module")
def partial_run(tmp_path_factory) -> Run:
    """A few layers of the 59-layer catalogue rendered, low and high, 1x1 and wider (as a partial `atlas run`)."""
    rendered = {"conv2d0_pre_relu": 2, "mixed3b_1x1_pre_relu": 2, "mixed4d_3x3_bottleneck_pre_relu": 3,
                "mixed5b_pool_reduce_pre_relu": 2}
    return figure_run(make_fake_run(tmp_path_factory.mktemp("runs") / "partial", photos=(), rendered=rendered,
                                    size=48, thumb=16))


def test_a_partial_runs_default_progression_picks_its_rendered_layers_and_misses_none(partial_run):
    layout = figures.layout_figure(partial_run, spec(kind="progression"))
    assert not layout.gaps and layout.missing_summary() == ""
    assert [p.key[1] for p in layout.panels] == ["conv2d0_pre_relu", "mixed3b_1x1_pre_relu",
                                                 "mixed4d_3x3_bottleneck_pre_relu", "mixed5b_pool_reduce_pre_relu"]


@pytest.mark.parametrize("figure", [{"kind": "sheet", "layer": "mixed4c_3x3_pre_relu"},
                                    {"kind": "panel", "items": [{"layer": "conv2d0_pre_relu", "channel": 1},
                                                                {"layer": "mixed4c_3x3_pre_relu", "channel": 0}]}])
def test_a_sheet_or_panel_of_a_layer_without_renders_is_one_line_naming_the_layers_that_have_them(partial_run, figure):
    with pytest.raises(UserError) as error:
        figures.layout_figure(partial_run, spec(**figure))
    message = str(error.value)
    assert "\n" not in message and "mixed4c_3x3_pre_relu: it has no renders in mode noise" in message
    assert message.endswith("the layers with renders: conv2d0_pre_relu, mixed3b_1x1_pre_relu, "
                            "mixed4d_3x3_bottleneck_pre_relu, mixed5b_pool_reduce_pre_relu")


def test_a_progression_of_a_mode_without_renders_is_one_line(tmp_path):
    run = figure_run(make_fake_run(tmp_path / "none", layers=synthetic_layers(0.125)[:3], fraction=0))
    with pytest.raises(UserError, match="progression: the run has no renders in mode noise yet"):
        figures.layout_figure(run, spec(kind="progression"))
