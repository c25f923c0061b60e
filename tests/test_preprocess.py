"""Declared preprocessing: the named schemes equal keras.applications' own preprocess_input, GoogLeNet's stays
pixels - 117 bit for bit, and the text, JSON and config forms parse to the same thing."""

import numpy as np
import pytest

from atlas.errors import UserError
from atlas.model.preprocess import GOOGLENET, SCHEMES, Preprocess, keras_application_preprocess, parse_preprocess


@pytest.fixture(scope="module")
def pixels():
    return np.random.default_rng(0).uniform(0, 255, (2, 7, 9, 3)).astype(np.float32)


def _keras_preprocessors():
    from keras.applications import efficientnet, imagenet_utils, mobilenet_v2, resnet50

    return {"caffe": resnet50.preprocess_input, "tf": mobilenet_v2.preprocess_input,
            "torch": lambda x: imagenet_utils.preprocess_input(x, mode="torch"),
            "none": efficientnet.preprocess_input}


@pytest.mark.parametrize("scheme", ["caffe", "tf", "torch", "none"])
def test_schemes_equal_keras_preprocess_input(scheme, pixels):
    import tensorflow as tf

    theirs = np.asarray(_keras_preprocessors()[scheme](pixels.copy()))
    ours = SCHEMES[scheme].apply(pixels)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(SCHEMES[scheme].apply_tf(tf.constant(pixels)).numpy(), theirs, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("name, scheme", [("ResNet50", "caffe"), ("VGG16", "caffe"), ("MobileNetV2", "tf"),
                                          ("InceptionV3", "tf"), ("DenseNet121", "torch"),
                                          ("EfficientNetB0", "none"), ("ConvNeXtTiny", "none")])
def test_keras_applications_table(name, scheme):
    assert keras_application_preprocess(name) == SCHEMES[scheme]


def test_googlenet_is_pixels_minus_117_bit_for_bit(pixels, small_model):
    import tensorflow as tf

    assert small_model.preprocess == GOOGLENET
    assert np.array_equal(GOOGLENET.apply_tf(tf.constant(pixels)).numpy(), (tf.constant(pixels) - 117.0).numpy())
    assert np.array_equal(GOOGLENET.apply(pixels), pixels - 117.0)


def test_the_forms_parse_alike():
    explicit = Preprocess(mean=(123.68, 116.779, 103.939), std=(58.4, 57.1, 57.4), bgr=True)
    assert parse_preprocess("mean=123.68,116.779,103.939 std=58.4,57.1,57.4 bgr") == explicit
    assert parse_preprocess('{"mean": [123.68, 116.779, 103.939], "std": [58.4, 57.1, 57.4], "bgr": true}') == explicit
    assert parse_preprocess({"mean": [123.68, 116.779, 103.939], "std": [58.4, 57.1, 57.4], "bgr": True}) == explicit
    assert parse_preprocess("mean=117").key() == GOOGLENET.key()
    assert parse_preprocess("Caffe") == SCHEMES["caffe"]
    assert parse_preprocess(SCHEMES["tf"].to_dict()).key() == SCHEMES["tf"].key()


@pytest.mark.parametrize("text, words", [("cafe", "did you mean caffe"), ("mean=1,2", "one number or three"),
                                         ("std=0", "positive"), ("mean=x", "must be numbers"),
                                         ("{bad json", "not valid JSON"), ("scale=2", "unknown preprocessing")])
def test_bad_preprocessing_is_one_clear_error(text, words):
    with pytest.raises(UserError, match=words):
        parse_preprocess(text)


def test_config_takes_a_model_mapping_and_still_a_string():
    from atlas.run.config import SweepConfig

    plain = SweepConfig(model="synthetic:0.125")
    assert (plain.model_spec, plain.model_preprocess) == ("synthetic:0.125", None)
    mapped = SweepConfig(model={"path": "m.keras", "preprocess": {"mean": [117]}})
    assert (mapped.model_spec, mapped.model_preprocess) == ("m.keras", {"mean": [117]})


def test_preprocessing_enters_the_render_hash_only_when_not_googlenet(small_model):
    from dataclasses import replace

    from atlas.render.loop import RenderSettings
    from atlas.run.plan import settings_hash

    other = replace(small_model, preprocess=SCHEMES["tf"])
    assert small_model.render_key == small_model.sha256
    assert settings_hash(other.render_key, RenderSettings(), 0, None, {}) != \
        settings_hash(small_model.render_key, RenderSettings(), 0, None, {})
