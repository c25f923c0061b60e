"""Labels for any model (issue 28, part 2): `--labels imagenet|FILE` on the commands that load a model and
`model: {labels: ...}` in a config; a label file that is missing, empty or names another number of classes than
the classifier has is one line; the names reach the explain index, the photo pages and the posters, and a run
folder keeps them for the passes after it. On the small stand-in (1008 classes, like inception5h)."""

import json
from pathlib import Path

import pytest

from atlas.cli import main
from atlas.errors import UserError
from atlas.model.classifier import check_labels, class_count, class_labels, given_labels
from atlas.model.graph import load_model
from atlas.publish import figures
from atlas.run.explainfiles import read_index
from atlas.run.manifest import read_run
from tests.photos import smooth_photo

MODEL = "synthetic:0.125"
COUNT = 1008  # the stand-in's classes, as inception5h's


def names_file(path: Path, prefix: str, count: int = COUNT) -> Path:
    path.write_text("".join(f"{prefix} {i}\n" for i in range(count)), encoding="utf-8")
    return path


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("atlas: error: --labels")
    return err


def test_bad_labels_are_one_line_before_anything_runs(tmp_path, capsys):
    """A missing file, an empty one (blank lines only), a file of another count, `imagenet` (1000) for a model of
    1008 classes: each one line and exit code 2, on any command that loads a model."""
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    short = names_file(tmp_path / "short.txt", "n", 3)
    assert main(["layers", "--model", MODEL, "--labels", str(tmp_path / "missing.txt")]) == 2
    assert "cannot read" in one_line_error(capsys)
    assert main(["layers", "--model", MODEL, "--labels", str(empty)]) == 2
    assert "names no class" in one_line_error(capsys)
    assert main(["weights", "--model", MODEL, "--labels", str(short), "--layer", "mixed4a_1x1_pre_relu",
                 "--channel", "0"]) == 2
    assert f"3 names for the {COUNT} classes" in one_line_error(capsys)
    assert main(["layers", "--model", MODEL, "--labels", "imagenet"]) == 2
    assert f"1000 names for the {COUNT} classes" in one_line_error(capsys)
    assert main(["layers", "--model", MODEL, "--labels", str(names_file(tmp_path / "ok.txt", "n"))]) == 0


def test_labels_name_the_classes_trailing_blank_lines_left_out(tmp_path):
    """A file's lines are the names, in the classifier's order (blank lines at its end do not count; a blank
    line inside names no class: `class N`); `imagenet` is the shipped 1000 names."""
    path = names_file(tmp_path / "names.txt", "thing")
    path.write_text(path.read_text(encoding="utf-8").replace("thing 5\n", "\n") + "\n\n", encoding="utf-8")
    model = load_model(MODEL, labels=str(path))
    assert model.source.labels == str(path.resolve()) and class_count(model) == COUNT
    names = class_labels(model.source, COUNT)
    assert names[:2] == ["thing 0", "thing 1"] and names[5] == "class 5" and names[-1] == f"thing {COUNT - 1}"
    assert given_labels("imagenet") == "imagenet"


def test_a_model_without_classifier_has_no_classes_to_name(tmp_path):
    """Labels for a model with no softmax are one line saying so."""
    keras = pytest.importorskip("keras")
    from atlas.model.freeze import freeze_keras_model
    from atlas.model.graph import load_model_bytes
    from atlas.model.source import ModelSource

    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    graph = freeze_keras_model(keras.Model(inputs, keras.layers.Conv2D(4, 3, name="c1")(inputs)))
    labels = given_labels(str(names_file(tmp_path / "n.txt", "n", 4)))
    model = load_model_bytes(graph.SerializeToString(), ModelSource(spec="headless", pb_path=None, labels=labels))
    with pytest.raises(UserError, match="headless has no classifier") as error:
        check_labels(model)
    assert "\n" not in str(error.value)


def test_explain_pages_and_posters_use_the_labels_and_the_run_keeps_them(tmp_path, capsys):
    """`atlas explain --labels FILE` names the top classes in the index, on the photo page and on the poster; the
    run folder records the labels (run.json), so a pass without --labels names them alike; new labels rename the
    photos explained before without explaining them again."""
    photo = smooth_photo(tmp_path / "photo.png", 4, (90, 70))
    run = tmp_path / "run"
    first = names_file(tmp_path / "first.txt", "beetle")
    common = [str(photo), "-o", str(run), "--layer", "mixed4a", "--classes", "2", "--groups", "1", "--ig-steps", "1",
              "--no-render"]
    assert main(["explain", *common, "--model", MODEL, "--labels", str(first)]) == 0
    capsys.readouterr()
    top = read_index(run).photos[0].classes
    assert [c.label for c in top] == [f"beetle {c.index}" for c in top]
    assert json.loads((run / "run.json").read_text())["model"]["labels"] == str(first.resolve())
    assert main(["explain", *common]) == 0  # the run's model and labels
    assert "0 photos explained, 1 unchanged" in capsys.readouterr().out
    assert [c.label for c in read_index(run).photos[0].classes] == [c.label for c in top]
    second = names_file(tmp_path / "second.txt", "kettle")
    assert main(["explain", *common, "--labels", str(second)]) == 0
    assert "0 photos explained, 1 unchanged" in capsys.readouterr().out
    assert [c.label for c in read_index(run).photos[0].classes] == [f"kettle {c.index}" for c in top]
    assert json.loads((run / "run.json").read_text())["model"]["labels"] == str(second.resolve())
    assert main(["build", str(run)]) == 0
    page = run / "site" / "photos" / f"{read_index(run).photos[0].sha256[:16]}.html"
    assert f"kettle {top[0].index}" in page.read_text(encoding="utf-8")
    poster = figures.layout_figure(read_run(run), figures.FigureSpec(name="p", kind="explain", explained="photo.png",
                                                                     layer="mixed4a"))
    assert f"1 · kettle {top[0].index} · logit {top[0].logit:.2f}" in [t.text for t in poster.texts]


def test_config_labels_relative_to_the_config(tmp_path, monkeypatch):
    """`model: {path: ..., labels: names.txt}`: the file beside the config, made absolute; the config's model is
    loaded with them (and checked)."""
    from atlas.run.config import load_config

    folder = tmp_path / "configs"
    folder.mkdir()
    names_file(folder / "names.txt", "tool")
    config = folder / "mine.yaml"
    config.write_text(f"model: {{path: {MODEL}, labels: names.txt}}\nlayers: [mixed4a_1x1_pre_relu]\n")
    monkeypatch.chdir(tmp_path)
    loaded = load_config(config)
    assert loaded.config.model_labels == str(folder / "names.txt")
    assert class_labels(loaded.config.load_model().source, 2) == ["tool 0", "tool 1"]
    names_file(folder / "names.txt", "tool", 7)
    with pytest.raises(UserError, match=f"7 names for the {COUNT} classes"):
        load_config(config).config.load_model()
