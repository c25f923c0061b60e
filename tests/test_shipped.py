"""Shipped configs by name: `atlas configs`, `atlas configs show`, and a config argument that names one."""

from pathlib import Path

import pytest

from atlas.cli import main
from atlas.publish.figures import load_spec
from atlas.run.config import load_config
from atlas.shipped import shipped_configs, shipped_figure_specs, templates_dir

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_ships_the_checkouts_templates_and_configs():
    assert sorted(p.name for p in templates_dir().rglob("*.*") if p.suffix != ".py") == \
        sorted(p.name for p in (ROOT / "templates").rglob("*.*") if p.suffix != ".py")
    assert sorted(shipped_configs()) == sorted(p.stem for p in (ROOT / "configs").glob("*.yaml"))
    assert sorted(shipped_figure_specs()) == sorted(p.stem for p in (ROOT / "configs" / "figures").glob("*.yaml"))


def test_configs_lists_each_sweep_config_with_its_first_comment_line(capsys):
    assert main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    files = sorted((ROOT / "configs").glob("*.yaml"))
    assert [line.split()[0] for line in lines] == [f.stem for f in files]
    for line, file in zip(lines, files):
        first = next(text for text in file.read_text().splitlines() if text.startswith("#"))
        assert line.split(None, 1)[1] == first.lstrip("# ") and len(line) <= 120
    assert not any(line.startswith(tuple(shipped_figure_specs())) for line in lines)  # figure specs are not sweeps


def test_configs_show_prints_one_that_loads_as_an_editable_copy(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["configs", "show", "demo"]) == 0
    text = capsys.readouterr().out
    assert text == (ROOT / "configs" / "demo.yaml").read_text()
    Path("mine.yaml").write_text(text.replace("channels: 4 ", "channels: 2 "))
    loaded = load_config("mine.yaml")
    assert loaded.name == "mine" and loaded.config.channels == 2 and loaded.run_folder == tmp_path / "output" / "mine"


def test_a_shipped_name_loads_that_config_and_runs_into_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for arg in ("demo", "demo.yaml"):
        loaded = load_config(arg)
        assert loaded.path == shipped_configs()["demo"] and loaded.name == "demo"
        assert loaded.run_folder == tmp_path / "output" / "demo"
        assert Path(loaded.explain_folder).name == "chelsea.jpg"  # a shipped photo named by a shipped config
        assert Path(loaded.examples_folder).is_dir()  # `photos`: the shipped photos' folder
    assert load_config("photo").photos["chelsea"].is_file()


def test_a_file_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("demo.yaml").write_text("model: synthetic:0.125\nchannels: 1\n")
    loaded = load_config("demo.yaml")
    assert loaded.path == Path("demo.yaml") and loaded.config.channels == 1


@pytest.mark.parametrize("argv", [["sweep", "nowhere"], ["run", "nowhere.yaml", "--dry-run"]])
def test_neither_a_file_nor_a_shipped_name_is_one_line_naming_both(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("atlas: error: ")
    assert f"no such file ({tmp_path / argv[1]})" in err and ", ".join(shipped_configs()) in err


def test_configs_show_of_an_unknown_name_is_a_user_error(capsys):
    assert main(["configs", "show", "lecture3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "demo, full, photo, quick" in err


def test_figure_spec_by_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_spec("lecture3") == load_spec(ROOT / "configs" / "figures" / "lecture3.yaml")


def test_verbose_is_global_before_or_after_the_subcommand():
    from atlas.cli import build_parser

    parse = build_parser().parse_args
    assert parse(["sweep", "full", "--verbose"]).verbose and parse(["--verbose", "configs"]).verbose
    assert parse(["configs", "show", "full", "--verbose"]).verbose
    assert not parse(["sweep", "full"]).verbose and not parse(["configs"]).verbose
