"""Class visualisations: the class objective is exactly a logit before the softmax, batched with every method,
found from the graph as explain finds it; `atlas dream --class` names, files and errors; the methods and displays
`auto` picks for a network; the raw pixels and MACO's mask kept beside a render."""

import numpy as np
import pytest
import tensorflow as tf

from atlas.errors import UserError
from atlas.model.classifier import logits_node
from atlas.render.classes import labels, logits_layer, parse_classes, render_classes
from atlas.render.engine import climb
from atlas.render.objectives import for_render
from atlas.render.settings import RenderSettings, for_network

SMALL_RENDER = {"size": 64, "octaves": 1, "steps": 3, "batch_size": 4}


def test_the_class_objective_is_the_logit_and_its_gradient_is_that_logits_alone(small_model):
    """What a class render climbs is the sum of each image's own logit (pre-softmax), so each image's gradient is
    exactly the gradient of its own class's logit."""
    node = logits_layer(small_model)
    assert node == logits_node(small_model.graph_def) == "softmax2_pre_activation"
    fn = small_model.layer_fn(node)
    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3)), tf.float32)
    classes = tf.constant([3, 0, 700], tf.int32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(images)
        logits = fn(images)
        climbed = climb(fn, for_render("class"), images, classes, None)
        own = tf.reduce_sum(tf.gather(logits, classes, axis=1, batch_dims=1))
    assert logits.shape == (3, 1008)  # the head sees every image at 224 px, whatever its size
    assert float(climbed) == pytest.approx(float(own), rel=1e-6)
    assert np.allclose(tape.gradient(climbed, images), tape.gradient(own, images), atol=1e-6)


@pytest.mark.parametrize("method", ["deepdream", "fourier", "maco"])
def test_class_renders_are_batched_with_every_method_and_raise_their_class(small_model, method):
    """Every method renders a batch of classes, each image its own class's logit, ranked among all the classifier's
    classes. On the stand-in's random classifier some logits barely climb in a few steps: at least 2 of the 3
    renders raise their logit (seeds 0-9, AMD EPYC with AVX-512: 2-3 of 3 with every method)."""
    settings = RenderSettings(method=method, **{**SMALL_RENDER, "steps": 8 if method == "deepdream" else 16})
    results = render_classes(small_model, [2, 9, 40], settings=settings, seed=0)
    assert [r.channel for r in results] == [2, 9, 40] and {r.objective for r in results} == {"class"}
    assert all(r.layer == "softmax2_pre_activation" and r.image.shape == (64, 64, 3) for r in results)
    assert sum(r.end > r.start for r in results) >= 2 and all(1 <= r.rank <= 1008 for r in results)
    assert all((r.mask is not None) == (method == "maco") for r in results)


def test_class_names_and_indices_resolve_once_with_one_line_errors(lite0_model):
    names = labels(lite0_model)
    assert len(names) == 1000 and names[285] == "Egyptian cat" and names[967] == "espresso"
    assert parse_classes("Egyptian cat, espresso,1,egyptian_cat", names) == [285, 967, 1]
    assert parse_classes("all", names) == list(range(1000))
    for text, message in [("egyptan cat", "did you mean egyptian cat"), ("1000", "has 1000 classes (0-999)"),
                          (" , ", "name at least one class")]:
        with pytest.raises(UserError) as error:
            parse_classes(text, names)
        assert message in str(error.value) and "\n" not in str(error.value)


def test_a_model_without_classifier_has_no_classes_to_render():
    keras = pytest.importorskip("keras")
    from atlas.model.freeze import freeze_keras_model
    from atlas.model.graph import load_model_bytes
    from atlas.model.source import ModelSource

    inputs = keras.Input((None, None, 3))
    graph = freeze_keras_model(keras.Model(inputs, keras.layers.Conv2D(4, 3, name="c1")(inputs)))
    model = load_model_bytes(graph.SerializeToString(), ModelSource(spec="headless", pb_path=None))
    with pytest.raises(UserError, match="headless has no softmax classifier.*--logits NODE"):
        render_classes(model, [0])


def test_auto_means_fourier_and_visstd_on_trained_weights_and_deepdream_on_random_ones(small_model, lite0_model):
    assert not small_model.source.trained and lite0_model.source.trained
    assert for_network(True) == {"method": "fourier", "display": "visstd"}
    assert for_network(False) == {"method": "deepdream", "display": "raw"}
    assert for_network(True, "maco", "raw") == {"method": "maco", "display": "raw"}
    assert for_network(True, from_photo=True)["method"] == "deepdream"  # the one method that starts from a photo


def test_earlier_renders_keep_their_hashes():
    """The new settings (display, per-method learning rates) add nothing to the pixel hash of settings that
    existed before them."""
    assert RenderSettings().pixel_hash() == "819627dcd1b45b01"  # as before the settings existed
    assert RenderSettings(method="fourier").pixel_hash() == "920c5ba7718baaa1"
    assert RenderSettings(method="fourier").learning_rate == 0.05 and RenderSettings(method="maco").learning_rate == 0.3
    assert RenderSettings(display="visstd").pixel_hash() != RenderSettings().pixel_hash()
    assert RenderSettings(method="fourier", display="visstd").pixel_hash() == RenderSettings(method="fourier").pixel_hash()


def test_visstd_shows_the_raw_pixels_standardised_and_keeps_them(small_model):
    """The visstd display is the notebook's formula of the optimised pixels, which are kept as `raw`; the metrics
    read the raw pixels, so the display changes none of them."""
    from atlas.render.loop import render_channels, visstd

    raw_settings = RenderSettings(**SMALL_RENDER)
    (raw,) = render_channels(small_model, "mixed4a", [5], settings=raw_settings)
    (shown,) = render_channels(small_model, "mixed4a", [5], settings=RenderSettings(**SMALL_RENDER, display="visstd"))
    assert raw.raw is None and np.array_equal(shown.raw, raw.image)
    assert (shown.lift, shown.rank) == (raw.lift, raw.rank)
    a = raw.image.astype(np.float64) / 255
    expected = np.clip((a - a.mean()) / max(a.std(), 1e-4) * 0.1 + 0.5, 0, 1) * 255
    # the display is made of the float pixels, the raw image rounds them: up to half a level, times 0.1 / std
    assert np.abs(shown.image.astype(np.float64) - expected).max() <= 0.5 + 0.1 / a.std()
    assert np.allclose(visstd(np.full((1, 4, 4, 3), 77.0)), 127.5)  # a flat image stays mid-grey


def test_dream_class_by_name_writes_class_files_with_mask_and_raw_beside(tmp_path, capsys, lite0):
    from PIL import Image

    from atlas.cli import main

    base = ["dream", "--model", lite0, "--size", "64", "--steps", "4", "--octaves", "1"]
    assert main(base + ["--class", "Egyptian cat,espresso", "--method", "maco", "-o", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "class-0285-mask.png", "class-0285.png", "class-0967-mask.png", "class-0967.png"]
    assert "Egyptian cat" in out and "rank" in out and "/1000" in out
    assert Image.open(tmp_path / "m" / "class-0285-mask.png").mode == "L"
    assert main(base + ["--objective", "class", "--channel", "1", "--method", "deepdream",
                        "-o", str(tmp_path / "d")]) == 0  # auto display on trained weights: visstd, raw beside
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["class-0001-raw.png", "class-0001.png"]
    assert "goldfish" in capsys.readouterr().out


def test_dream_class_errors_exit_2_with_one_line(tmp_path, capsys):
    from atlas.cli import main

    cases = [(["--class", "1", "--layer", "mixed3a"], "leave out --layer"),
             (["--objective", "class"], "takes --class NAME|INDEX[,...] or --channel INDICES"),
             (["--objective", "class", "--class", "1", "--channel", "2"], "(one of them)"),
             (["--class", "1", "--objective", "channel"], "--class goes with --objective class"),
             (["--class", "9999"], "has 1008 classes"),
             (["--channel", "1"], "--layer is required"),
             (["--class", "1", "--method", "maco", "--photo", "chelsea"], "--photo works with --method deepdream")]
    for extra, message in cases:
        assert main(["dream", "--model", "synthetic:0.125", "-o", str(tmp_path), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (extra, err)
