"""The explain pass and its entry points (issue 24): `atlas explain` and the Python API on the stand-in, checked
against the model's own logits and activations recomputed from the photos; resume after a kill; bad photos and
none; unknown layers; the config key and `atlas run --explain`; the icons (missing channel renders in the
manifest, neuron groups' renders); and a Keras model end to end, with and without a classifier. The maths of the
attribution itself is tests/test_attribution.py's."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from atlas.analysis import explain as explain_module
from atlas.analysis.explain import run_explain
from atlas.analysis.photos import Entry, fit_to_input, read_entry
from atlas.cli import main
from atlas.errors import UserError
from atlas.run.explainfiles import group_render, layer_file, read_explanation, read_index
from atlas.run.plan import resolve_explain
from tests.photos import smooth_photo

SIZE = 224  # the photos' square in the network's input (the classifier's 7 x 7 pooling needs 224): maps 14 x 14
LAYERS = ["mixed4d", "mixed4a"]  # given high first: the pass orders them low to high


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for i in range(3):
        smooth_photo(root / f"p{i}.png", i, (90 + 10 * i, 70))
    smooth_photo(root / "sub" / "q.jpg", 7, (60, 100))
    return root


def _fitted_pixels(path: Path) -> tuple[str, np.ndarray]:
    """(sha256, the photo's centred square at SIZE), recomputed here from the file."""
    sha, image = read_entry(Entry(path.name, path, ""))
    return sha, fit_to_input(path.name, "", sha, image, SIZE, "crop").pixels


def test_cli_explains_photos_and_folders_against_the_models_own_logits_and_activations(small_model, photos,
                                                                                       tmp_path, capsys):
    """`atlas explain FILE FOLDER` writes one npz per photo and layer keyed by sha256, photo.jpg, the index and
    skipped.txt; the top classes are the top logits of softmax2_pre_activation and the dictionary holds the most
    active channels at each position, both recomputed here from the photos."""
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    single = smooth_photo(tmp_path / "single.png", 11, (90, 70))
    run = tmp_path / "run"
    assert main(["explain", str(single), str(photos), str(broken), "--model", "synthetic:0.125", "-o", str(run),
                 "--layer", *LAYERS, "--size", str(SIZE), "--classes", "3", "--groups", "2", "--top", "4",
                 "--between", "--no-render"]) == 0
    out = capsys.readouterr().out
    assert "5 photos explained" in out and "skipped 1 unreadable files: broken.jpg" in out
    assert (run / "explain" / "skipped.txt").read_text().startswith("broken.jpg\t")
    index = read_index(run)
    assert [p.name for p in index.photos] == ["single.png", "p0.png", "p1.png", "p2.png", "sub/q.jpg"]
    assert list(index.layers) == ["mixed4a", "mixed4d"] and index.classifier is not None
    assert index.settings["classes"] == 3 and index.settings["groups"] == 2
    assert index.layers["mixed4a"].sources is not None  # a block output: its channels are its branches'
    logits_fn = small_model.layers_fn(["softmax2_pre_activation", "mixed4a", "mixed4d"])
    for photo, path in zip(index.photos, [single, photos / "p0.png", photos / "p1.png", photos / "p2.png",
                                          photos / "sub" / "q.jpg"]):
        sha, pixels = _fitted_pixels(path)
        assert photo.sha256 == sha and photo.layers == ["mixed4a", "mixed4d"]
        assert (run / "explain" / sha / "photo.jpg").is_file()
        logits, *acts = (a.numpy()[0] for a in logits_fn(pixels[None]))
        logits = logits.reshape(-1)
        best = np.argsort(-logits, kind="stable")[:3]
        assert [c.index for c in photo.classes] == list(best)
        np.testing.assert_allclose([c.logit for c in photo.classes], logits[best], rtol=1e-4, atol=1e-4)
        assert photo.classes[0].label == f"class {best[0]}"  # the stand-in has no label file
        for name, act in zip(["mixed4a", "mixed4d"], acts):
            data = read_explanation(run, sha, name)
            height, width, channels = act.shape
            layer = index.layers[name]
            assert (layer.height, layer.width, layer.channels) == (height, width, channels)
            assert data.spatial.shape == (3, height, width) and data.channels.shape == (3, channels)
            assert data.group_spatial.shape == (2, height, width) and data.group_channels.shape == (2, channels)
            assert data.dictionary_channels.shape == (height, width, 4)
            strongest = np.take_along_axis(act, data.dictionary_channels.astype(np.int64), axis=2)
            np.testing.assert_allclose(strongest[..., 0], act.max(axis=2), rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(data.dictionary_values, strongest, rtol=1e-4, atol=1e-4)
        upper = read_explanation(run, sha, "mixed4d")
        assert set(upper.between) == {"mixed4a"}
        assert upper.between["mixed4a"].shape[:2] == acts[1].shape[:2]
        assert upper.between["mixed4a"].shape[2:] == acts[0].shape[:2]
    assert main(["explain", str(photos), "--model", "synthetic:0.125", "-o", str(run), "--layer", *LAYERS,
                 "--size", str(SIZE), "--classes", "3", "--groups", "2", "--top", "4", "--between",
                 "--no-render"]) == 0
    assert "0 photos explained, 4 unchanged, 5 in the index" in capsys.readouterr().out


def test_api_resumes_after_a_kill_losing_only_the_photos_since_the_checkpoint(small_model, photos, tmp_path,
                                                                            monkeypatch):
    """With a checkpoint after every photo, a pass killed at its second photo has the first in the index; the
    next run explains the other three and ends with the same arrays as an unbroken run."""
    monkeypatch.setattr(explain_module, "CHECKPOINT_SECONDS", 0.0)
    plan = resolve_explain([str(photos)], small_model, layers=["mixed4a"], size=SIZE, batch_size=1, classes=2,
                           groups=2, render=False)
    run = tmp_path / "run"
    stopped = run_explain(plan, run, small_model, progress=False, stop_after=2)
    assert stopped.stopped and [p.name for p in read_index(run).photos] == ["p0.png"]
    resumed = run_explain(plan, run, small_model, progress=False)
    assert (resumed.processed, resumed.unchanged, resumed.photos) == (3, 1, 4)
    whole = run_explain(plan, tmp_path / "whole", small_model, progress=False)
    assert whole.processed == 4
    for photo in read_index(run).photos:
        a, b = (read_explanation(folder, photo.sha256, "mixed4a") for folder in (run, tmp_path / "whole"))
        for name, value in a.arrays().items():
            np.testing.assert_allclose(value, b.arrays()[name], rtol=1e-5, atol=1e-5, err_msg=name)
    more = resolve_explain([str(photos)], small_model, layers=["mixed4a", "mixed4d"], size=SIZE, classes=2,
                           groups=2, render=False)
    added = run_explain(more, run, small_model, progress=False)  # a new layer: every photo again, both kept
    assert added.processed == 4 and all(p.layers == ["mixed4a", "mixed4d"] for p in read_index(run).photos)


def test_no_photo_bad_photos_and_unknown_layers_are_one_line_exit_2(photos, tmp_path, capsys):
    run = str(tmp_path / "run")
    common = ["--model", "synthetic:0.125", "-o", run, "--size", str(SIZE), "--no-render"]
    assert main(["explain", *common]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["explain", str(empty), *common, "--layer", "mixed4a"]) == 2
    assert "no photos in" in capsys.readouterr().err
    assert main(["explain", str(tmp_path / "missing.jpg"), *common]) == 2
    assert "no such photo or folder" in capsys.readouterr().err
    broken = tmp_path / "bad"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"nothing")
    assert main(["explain", str(broken), *common, "--layer", "mixed4a"]) == 2
    err = capsys.readouterr().err
    assert "no readable photo" in err and "a.jpg" in err and err.count("\n") == 1
    assert main(["explain", str(photos), *common, "--layer", "mixed4x"]) == 2
    err = capsys.readouterr().err
    assert "unknown layer 'mixed4x'" in err and "did you mean" in err and err.count("\n") == 1
    assert main(["explain", str(photos), *common, "--layer", "mixed4a", "--groups", "0"]) == 2
    assert "groups" in capsys.readouterr().err


def test_config_key_atlas_run_explain_and_the_icons(small_model, photos, tmp_path, capsys, monkeypatch):
    """`atlas run CONFIG --explain PHOTO` explains the photo with the config's `explain:` settings after the
    sweep, then renders the channels its pages show that the run lacks with the run's own settings (recorded in
    the manifest with the sweep's settings hash) and each neuron group to its png; a second pass renders nothing.
    A mistyped key is one line."""
    from atlas.analysis.explain import render_groups, render_missing_channels, shown_channels, wanted_channels
    from atlas.run.config import load_config
    from atlas.run.manifest import read_run

    monkeypatch.chdir(tmp_path)
    base = ("model: synthetic:0.125\nlayers: [mixed4a_1x1_pre_relu]\nchannels: 2\nrender: {size: 32, octaves: 1, "
            "steps: 1}\ncircuits: false\nworkers: 1\n")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(base + f"explain: {{folder: {photos}, clases: 3}}\n")
    with pytest.raises(UserError) as error:
        load_config(wrong)
    assert "clases" in str(error.value) and "\n" not in str(error.value)
    config = tmp_path / "tiny.yaml"
    config.write_text(base + f"explain: {{folder: {photos}, layers: [mixed4a_1x1_pre_relu], classes: 2, groups: 2, "
                      "top: 2}\n")
    assert main(["run", str(config), "--dry-run"]) == 0
    assert "explain: 4 photos at mixed4a_1x1_pre_relu after the sweep" in capsys.readouterr().out
    assert main(["run", str(config), "--explain", str(photos / "sub")]) == 0
    out = capsys.readouterr().out
    assert "explain: 1 photos explained" in out and "neuron groups" in out
    run = tmp_path / "output" / "tiny"
    assert (run / "site" / "index.html").is_file()
    index = read_index(run)
    assert [p.name for p in index.photos] == ["q.jpg"] and index.settings["groups"] == 2
    plan = resolve_explain([str(photos / "sub")], small_model, layers=["mixed4a_1x1_pre_relu"], classes=2,
                           groups=2, top=2)
    wanted = wanted_channels(run, index, index.photos, plan, small_model)
    data = read_explanation(run, index.photos[0].sha256, "mixed4a_1x1_pre_relu")
    assert wanted == {"mixed4a_1x1_pre_relu": shown_channels(data, 2)}  # a catalogued layer is its own source
    renders = read_run(run).renders
    assert {("noise", "mixed4a_1x1_pre_relu", c) for c in wanted["mixed4a_1x1_pre_relu"] | {0, 1}} == \
        {r.key for r in renders}
    assert len({r.settings_hash for r in renders}) == 1  # the run's own settings, as its sweep rendered them
    for group in range(len(data.group_channels)):
        assert Image.open(run / group_render(index.photos[0].sha256, "mixed4a_1x1_pre_relu", group)).size == (96, 96)
    assert render_missing_channels(run, small_model, index, index.photos, plan, progress=False) == 0
    assert render_groups(run, small_model, index.photos, plan, index.settings["hash"], progress=False) == 0


def test_the_icons_of_a_folder_made_by_explain_alone(small_model, photos, tmp_path):
    """A run folder made by the pass alone gets the noise mode (a config's default render settings) in its
    run.json, so that the gallery shows the channel renders made for its pages."""
    from atlas.analysis.explain import icon_mode
    from atlas.run.manifest import read_run

    plan = resolve_explain([str(photos / "sub")], small_model, layers=["mixed4a"], size=SIZE, batch_size=1,
                           classes=2, groups=2, render=False)  # as the resume test: the same traced functions
    run_explain(plan, tmp_path / "run", small_model, progress=False)
    assert read_run(tmp_path / "run").modes == []
    icons = icon_mode(tmp_path / "run", plan.seed)
    assert [m.id for m in read_run(tmp_path / "run").modes] == ["noise"] and icons.settings.size == 224
    assert icon_mode(tmp_path / "run", plan.seed) == icons  # recorded once


def test_a_keras_model_end_to_end_with_and_without_a_classifier(tmp_path, capsys):
    """A tiny .keras file made here: with a softmax head it gets classes and attribution; without one, one line
    says attribution needs class logits, and the dictionaries and groups are made. Both get their photo page in
    the gallery and a poster."""
    keras = pytest.importorskip("keras")
    layers = keras.layers
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="stem")(inputs)
    y = layers.Conv2D(8, 3, padding="same", activation="relu", name="res_conv")(x)
    x = layers.ReLU(name="res_out")(layers.Add(name="res_add")([x, y]))
    x = layers.Conv2D(12, 3, strides=2, padding="same", activation="relu", name="top_conv")(x)
    pooled = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    with_head = keras.Model(inputs, layers.Dense(4, activation="softmax", name="predictions")(pooled))
    without = keras.Model(inputs, pooled)
    photo = smooth_photo(tmp_path / "photo.png", 3, (90, 70))
    for model, name in ((with_head, "head"), (without, "plain")):
        path = tmp_path / f"{name}.keras"
        model.save(path)
        run = tmp_path / name
        assert main(["explain", str(photo), "--model", str(path), "--preprocess", "tf", "-o", str(run), "--layer",
                     "res_out", "top_conv", "--size", "48", "--groups", "2", "--no-render"]) == 0
        out = capsys.readouterr().out
        index = read_index(run)
        data = read_explanation(run, index.photos[0].sha256, "top_conv")
        assert data.group_channels.shape == (2, 12) and data.dictionary_channels.shape[:2] == (12, 12)
        assert (run / layer_file(index.photos[0].sha256, "res_out")).is_file()
        if name == "head":
            assert index.classifier is not None and len(index.photos[0].classes) == 4  # 5 asked, 4 exist
            assert data.spatial.shape == (4, 12, 12)
            assert "attribution needs class logits" not in out
        else:
            assert index.classifier is None and index.photos[0].classes == []
            assert data.spatial.shape == (0, 12, 12) and data.channels.shape == (0, 12)
            assert "attribution needs class logits" in out or "needs class logits" in out
        # the gallery's photo page and the poster, of a Keras model's explanations
        assert main(["build", str(run)]) == 0
        page = run / "site" / "photos" / f"{index.photos[0].sha256[:16]}.html"
        assert page.is_file() and "top_conv" in page.read_text(encoding="utf-8")
        assert main(["figure", str(run), "--explain", f"{index.photos[0].name}:top_conv", "-o",
                     str(tmp_path / f"{name}.png")]) == 0
        assert (tmp_path / f"{name}.png").stat().st_size > 0


def test_the_baseline_as_given_on_the_command_line_and_in_a_config(photos, tmp_path, monkeypatch, capsys):
    """`photos` (the shipped photos' folder) and `zero` stay as named; a folder is found as `folder` is (in a
    config: beside it) and made absolute; a folder that is not there is one line."""
    from atlas.run.config import load_config

    folder = tmp_path / "configs"
    (folder / "reference").mkdir(parents=True)
    config = folder / "mine.yaml"
    monkeypatch.chdir(tmp_path)
    for given, expected in (("photos", "photos"), ("zero", "zero"), ("reference", str(folder / "reference"))):
        config.write_text(f"model: synthetic:0.125\nexplain: {{folder: {photos}, baseline: {given}}}\n")
        assert load_config(config).config.explain.baseline == expected
    config.write_text(f"model: synthetic:0.125\nexplain: {{folder: {photos}, baseline: elsewhere}}\n")
    with pytest.raises(UserError, match="explain: baseline elsewhere: no such folder") as error:
        load_config(config)
    assert "\n" not in str(error.value)
    assert main(["explain", str(photos), "--model", "synthetic:0.125", "-o", str(tmp_path / "run"), "--baseline",
                 "elsewhere"]) == 2
    assert "baseline elsewhere: no such folder" in capsys.readouterr().err
