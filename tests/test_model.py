import numpy as np
import tensorflow as tf


def test_layer_function_is_reused_and_differentiable(small_model):
    fn = small_model.layer_fn("mixed4d_3x3_bottleneck_pre_relu")
    assert small_model.layer_fn("mixed4d_3x3_bottleneck_pre_relu") is fn
    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (2, 96, 96, 3)).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(images)
        acts = fn(images)
        loss = tf.reduce_mean(acts[0, ..., 5])
    grad = tape.gradient(loss, images).numpy()
    assert acts.shape[-1] == small_model.layer("mixed4d_3x3_bottleneck_pre_relu").channels
    assert np.isfinite(grad).all() and np.abs(grad[0]).sum() > 0
    assert np.abs(grad[1]).sum() == 0  # image 1 does not enter image 0's objective
    # a finite-difference check along the gradient direction
    direction = grad / np.linalg.norm(grad)
    eps = 1.0
    plus = tf.reduce_mean(fn(images + eps * direction)[0, ..., 5])
    minus = tf.reduce_mean(fn(images - eps * direction)[0, ..., 5])
    numeric = float(plus - minus) / (2 * eps)
    assert numeric == np.float32(numeric) and abs(numeric - np.linalg.norm(grad)) < 0.05 * np.linalg.norm(grad)


def test_layer_function_takes_any_size(small_model):
    fn = small_model.layer_fn("conv2d0_pre_relu")
    assert fn(tf.zeros([1, 64, 80, 3])).shape == (1, 32, 40, 8)
    assert fn(tf.zeros([3, 30, 30, 3])).shape == (3, 15, 15, 8)


def test_layer_function_matches_tensorflow_import(small_model):
    """The interpreter computes what TensorFlow's own graph import computes."""
    images = tf.constant(np.random.default_rng(1).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32))
    name = "mixed3b_5x5_pre_relu"
    ours = small_model.layer_fn(name)(images).numpy()
    imported = tf.compat.v1.wrap_function(
        lambda x: tf.graph_util.import_graph_def(small_model.graph_def, {"input": x - 117.0},
                                                 return_elements=[f"{name}:0"])[0],
        [tf.TensorSpec([None, None, None, 3], tf.float32)])
    np.testing.assert_allclose(ours, imported(images).numpy(), rtol=1e-4, atol=1e-3)


def test_bfloat16_layer_function_gives_a_gradient_close_to_float32(small_model):
    """The opt-in bfloat16 precision (weights and activations) keeps float32 inputs and outputs, and its
    input gradient points the same way as float32's. Measured by benchmarks/test_bounds.py --only bf16_gradient
    (image seeds 0-9, AMD EPYC, AVX2): cosine 0.935-0.965, norm ratio off by 0.004-0.051; bounds 0.85 and 0.15."""
    name = "mixed4d_3x3_bottleneck_pre_relu"
    images = tf.constant(np.random.default_rng(2).uniform(0, 255, (2, 96, 96, 3)).astype(np.float32))
    grads = {}
    for precision in ("float32", "bfloat16"):
        fn = small_model.layer_fn(name, precision)
        with tf.GradientTape() as tape:
            tape.watch(images)
            acts = fn(images)
            loss = tf.reduce_mean(acts[..., 3])
        assert acts.dtype == tf.float32
        grads[precision] = tape.gradient(loss, images).numpy().ravel()
    assert small_model.layer_fn(name, "bfloat16") is not small_model.layer_fn(name)
    g32, g16 = grads["float32"], grads["bfloat16"]
    cosine = g32 @ g16 / (np.linalg.norm(g32) * np.linalg.norm(g16))
    assert cosine > 0.85
    assert abs(np.linalg.norm(g16) / np.linalg.norm(g32) - 1) < 0.15
