import tensorflow as tf

from atlas.model.flops import forward_flops, step_flops
from atlas.model.graph import load_model


def test_first_convolution_is_counted_exactly(small_model):
    channels = small_model.layer("conv2d0_pre_relu").channels  # 7x7 stride 2 from 3 colours
    assert forward_flops(small_model.graph_def, "conv2d0_pre_relu", 224, 224) == 2 * 112 * 112 * 7 * 7 * 3 * channels
    assert step_flops(small_model.graph_def, "conv2d0_pre_relu", 224, 224) == 4 * 112 * 112 * 7 * 7 * 3 * channels


def test_deeper_layers_count_every_convolution_they_depend_on(small_model):
    graph = small_model.graph_def
    early = forward_flops(graph, "mixed3a_1x1_pre_relu", 224, 224)
    late = forward_flops(graph, "mixed4d_3x3_bottleneck_pre_relu", 224, 224)
    assert forward_flops(graph, "conv2d2_pre_relu", 224, 224) < early < late
    # all convolutions scale with the number of output pixels
    assert forward_flops(graph, "mixed4d_3x3_bottleneck_pre_relu", 448, 448) == 4 * late


def test_matmul_is_counted():
    with tf.Graph().as_default() as graph:
        image = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3], name="input")
        flat = tf.reshape(tf.reduce_mean(image, axis=[1, 2]), [-1, 3])
        tf.linalg.matmul(flat, tf.ones([3, 10]), name="logits")
    assert forward_flops(graph.as_graph_def(), "logits", 8, 8) == 2 * 3 * 10


def test_counting_leaves_the_graph_as_it_was():
    """Counting a model's work must not touch its GraphDef (an `attr["value"]` read adds an empty attribute to a
    node that has none, and TensorFlow's own import then fails on the shared graph)."""
    model = load_model("synthetic:0.125")  # its own GraphDef, which no other test has counted
    before = model.graph_def.SerializeToString(deterministic=True)
    assert model.work > 0
    assert model.graph_def.SerializeToString(deterministic=True) == before
