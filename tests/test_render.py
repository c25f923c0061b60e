"""The renderer: batched equals alone, the metric thresholds on the stand-in, reproducibility, photo mode."""

from dataclasses import replace

import numpy as np
import pytest
import tensorflow as tf

from atlas.errors import UserError
from atlas.images import encode, load_photo
from atlas.model.graph import load_model
from atlas.render import transforms
from atlas.render.loop import readings, render_channels, tile_edges
from atlas.render.settings import RenderSettings
from tests.precision import PRECISION

DEFAULT = RenderSettings(precision=PRECISION)  # the default settings, at the precision the suite runs in
FAST = replace(DEFAULT, octaves=2, steps=4)


@pytest.fixture(scope="module")
def quarter_model():
    return load_model("synthetic:0.25")


def test_metrics_hold_over_ten_layers_low_to_high(quarter_model):
    """Issue 3's bar over ten layers low to high at the default settings, on the quarter-width stand-in: each
    render excites its own channel more than the mean of the batch's other renders do (the wide-margin property),
    and the stricter specificity (more than every other render) and top-10% rank hold for most renders.

    Measured by benchmarks/test_bounds.py --only render_metrics (seeds 0-9, 80 renders a seed, AMD EPYC, AVX2
    only), min-median-max, float32 / bfloat16: above the mean 1.000-1.000-1.000 / 1.000-1.000-1.000 (bound 0.9),
    specific 0.914-0.957-0.986 / 0.929-0.950-0.986 (bound 0.8), top-10% rank 0.757-0.793-0.829 /
    0.771-0.793-0.814 (bound 0.65). The half-width stand-in it ran on before took about 4x as long (218 s of the
    suite), too long to measure over ten seeds; its bounds were 0.95 and 0.75 from one seed."""
    picks = np.linspace(0, 56, 10).astype(int)  # conv2d0 ... mixed5b, spread low to high
    specific = top = above = total = 0
    for index in picks:
        layer = quarter_model.layers[index]
        rng = np.random.default_rng(layer.index)
        channels = sorted(rng.choice(layer.channels, min(8, layer.channels), replace=False).tolist())
        results = render_channels(quarter_model, layer.name, channels, settings=DEFAULT)
        values = readings(quarter_model, layer.name, np.stack([r.image for r in results]).astype(np.float32), 8,
                          "channel")[:, channels]  # values[i, j]: render j's channel on render i
        others = np.where(np.eye(len(channels), dtype=bool), np.nan, values)
        above += int((np.diag(values) > np.nanmean(others, axis=0)).sum())
        for result in results:
            specific += bool(result.specific)
            top += result.rank <= max(1, int(layer.channels * 0.1))
            total += 1
            assert result.end > result.start
    assert len(picks) >= 10 and total >= 70
    assert above / total >= 0.9, f"above the mean of the others {above}/{total}"
    assert specific / total >= 0.8, f"specificity {specific}/{total}"
    assert top / total >= 0.65, f"top-10% rank {top}/{total}"


STEP_LAYERS = range(0, 59, 6)  # every sixth layer, conv2d0 to mixed5b


@pytest.mark.parametrize("index", STEP_LAYERS)
def test_one_batched_step_equals_the_step_alone(small_model, index):
    """Where rounding stays rounding: one gradient step of a channel in a batch of four is the same step alone,
    within one grey level (the kernels of another batch size may add in another order, on any CPU): a rounding
    difference flips a pixel by one level at most, so the bound is the property, not a margin.

    Measured by benchmarks/test_bounds.py --only step_deepdream (seeds 0-9, worst of the ten layers per seed, AMD
    EPYC, AVX2 only), min-median-max, float32 / bfloat16: largest difference 0-0-1 / 0 grey levels (<= 1), mean
    difference 0.000-0.000-0.000 / 0 (< 0.01), end change over max(|end|, 1) 0-0-0.002 / 0 (was rel 1e-3, which
    seed 9 broke at float32; now 1e-2)."""
    layer = small_model.layers[index]
    settings, channels = replace(DEFAULT, octaves=1, steps=1), list(range(min(4, layer.channels)))
    batched = render_channels(small_model, layer.name, channels, settings=replace(settings, batch_size=4))
    alone = render_channels(small_model, layer.name, channels[-1:], settings=replace(settings, batch_size=1))[0]
    difference = np.abs(batched[-1].image.astype(int) - alone.image.astype(int))
    assert difference.max() <= 1 and difference.mean() < 0.01, layer.name
    assert alone.end == pytest.approx(batched[-1].end, rel=1e-2, abs=1e-2)
    assert (alone.batch, batched[-1].batch) == (1, len(channels))
    assert alone.specific is None and (batched[-1].specific is not None or len(channels) == 1)


def test_same_batch_size_same_bytes(small_model):
    """Same machine, same batch size, same precision: the same bytes, for every channel of a batch."""
    settings = replace(FAST, batch_size=4)
    first, again = (render_channels(small_model, "mixed4d_1x1_pre_relu", [0, 1, 2, 3], settings=settings)
                    for _ in range(2))
    assert [encode(r.image) for r in first] == [encode(r.image) for r in again]


DRIFT = {"over_mean": 0.1, "rank": 2, "end": 0.6}  # measured: see the test's docstring


@pytest.mark.parametrize("layer", ["mixed3a_3x3_pre_relu", "mixed4d_1x1_pre_relu", "mixed4d_3x3_bottleneck_pre_relu",
                                   "mixed5b_5x5_pre_relu"])
def test_a_whole_render_in_another_batch_is_the_same_channels_dream(small_model, layer):
    """On random weights a whole render amplifies that rounding through ReLU and max-pool switches, so the images
    of one channel rendered in a batch and alone may drift apart; what survives drift is tested: the lone render
    correlates with its batched twin more than with any other channel's image, and more than with the mean of
    the others by a margin; it keeps its rank within two places and its end activation within 60%.

    Measured by benchmarks/test_bounds.py --only drift_deepdream (seeds 0-9, worst of the four layers per seed,
    AMD EPYC, AVX2 only), min-median-max, float32 / bfloat16: twin's correlation minus the mean of the others'
    0.267-0.483-0.896 / 0.278-0.458-0.679 (bound > 0.1), minus the largest other's 0.254-0.436-0.806 /
    0.244-0.397-0.666 (> 0), rank change 0 / 0 (<= 2), end change 0-0.084-0.337 / 0.016-0.110-0.156 (was < 0.25,
    which seeds 6 and 7 broke at float32; now < 0.6). The twin's correlation alone is no bound: 0.265-0.519-1.000
    / 0.289-0.496-0.692 (0.30 at bfloat16 seed 0, the suite's, where it was asked for > 0.5)."""
    batched = render_channels(small_model, layer, [0, 1, 2, 3], settings=replace(DEFAULT, batch_size=4))
    alone = render_channels(small_model, layer, [2], settings=replace(DEFAULT, batch_size=1))[0]
    same = _correlation(batched[2].image, alone.image)
    others = [_correlation(batched[i].image, alone.image) for i in (0, 1, 3)]
    assert same > max(others) and same > np.mean(others) + DRIFT["over_mean"], (same, others)
    assert abs(alone.rank - batched[2].rank) <= DRIFT["rank"]
    assert alone.end == pytest.approx(batched[2].end, rel=DRIFT["end"])


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(float).ravel(), b.astype(float).ravel()
    return float(np.corrcoef(a - a.mean(), b - b.mean())[0, 1])


@pytest.mark.parametrize("size", [114, 224])
def test_each_image_gets_exactly_its_own_gradient(small_model, size):
    """No cross-talk in a batch, on every fourth layer low to high: each image's gradient equals its gradient
    computed alone, up to float rounding (kernels may sum in another order for another batch size)."""
    from atlas.render.engine import Ascent, compiled

    images = np.random.default_rng(size).normal(128, 20, (3, size, size, 3)).astype(np.float32)
    for layer in small_model.layers[::4]:
        gradient = compiled(small_model, layer.name, "channel", "float32", Ascent(4)).gradient
        channels = np.array([0, 1, 2], np.int32) % layer.channels
        together = gradient(tf.constant(images), tf.constant(channels)).numpy()
        for i in range(3):
            alone = gradient(tf.constant(images[i:i + 1]), tf.constant(channels[i:i + 1])).numpy()
            scale = np.abs(alone).max() + 1e-30
            assert np.abs(together[i] - alone[0]).max() <= 1e-4 * scale, layer.name


@pytest.mark.parametrize("layer", ["conv2d2_pre_relu", "mixed3b_5x5_pre_relu", "mixed4e_3x3_pre_relu"])
def test_each_channels_facets_get_exactly_their_own_gradient(small_model, layer):
    """With facets the diversity term couples a channel's own images only: two channels' facets in one batch get
    the gradients of each channel's facets computed alone, up to float rounding."""
    from atlas.render.engine import Ascent, compiled
    from atlas.render.objectives import for_render

    images = np.random.default_rng(3).normal(128, 20, (6, 64, 64, 3)).astype(np.float32)
    gradient = compiled(small_model, layer, for_render("channel", 3, 0.3), "float32", Ascent(4)).gradient
    together = gradient(tf.constant(images), tf.constant([1, 1, 1, 4, 4, 4])).numpy()
    alone = gradient(tf.constant(images[3:]), tf.constant([4, 4, 4])).numpy()
    assert np.abs(together[3:] - alone).max() <= 1e-4 * np.abs(alone).max()


def test_same_seed_same_png_bytes(small_model):
    first = render_channels(small_model, "mixed4a_3x3_pre_relu", [5], settings=FAST, seed=7)[0]
    again = render_channels(small_model, "mixed4a_3x3_pre_relu", [5], settings=FAST, seed=7)[0]
    other = render_channels(small_model, "mixed4a_3x3_pre_relu", [5], settings=FAST, seed=8)[0]
    assert encode(first.image) == encode(again.image)
    assert encode(first.image) != encode(other.image)
    assert first.image.shape == (224, 224, 3) and first.image.dtype == np.uint8


def test_photo_dream_keeps_the_photo_size_and_tiles_without_seams(small_model):
    """Tiling costs little of the climb. Measured by benchmarks/test_bounds.py --only photo_tiling (seeds 0-9, AMD
    EPYC, AVX2): tiled over untiled lift 0.562-1.125 (median 0.776) at float32, 0.543-1.046 (0.814) at bfloat16;
    hence 0.35, not the 0.5 it was: a tiled pass that climbs nothing still fails it."""
    photo = load_photo("chelsea")  # 451 x 300: three tiles across at tile=160
    settings = replace(DEFAULT, photo_octaves=2, photo_steps=4, tile=160)
    results = render_channels(small_model, "mixed4c_pool_reduce_pre_relu", [0, 1], photo, settings)
    assert [r.image.shape for r in results] == [(300, 451, 3)] * 2
    assert all(r.end > r.start for r in results)
    untiled = render_channels(small_model, "mixed4c_pool_reduce_pre_relu", [0], photo,
                              replace(settings, tile=1024))[0]
    tiled_lift, untiled_lift = results[0].lift, untiled.lift
    assert tiled_lift > 0.35 * untiled_lift > 0


def test_whole_layer_objective_on_a_block_output(small_model):
    result = render_channels(small_model, "mixed3b", settings=replace(FAST, objective="layer"))[0]
    assert result.channel == -1 and result.rank is None and result.end > result.start


def test_negative_objective_lowers_the_channel(small_model):
    result = render_channels(small_model, "mixed4a_3x3_pre_relu", [3], settings=replace(FAST, objective="negative"))[0]
    assert result.end < result.start and result.lift < 0


def test_channel_out_of_range_names_the_layer_and_count(small_model):
    layer = small_model.layer("mixed4d_3x3_bottleneck_pre_relu")
    with pytest.raises(UserError, match=f"{layer.name}, which has {layer.channels} channels"):
        render_channels(small_model, layer.name, [layer.channels], settings=FAST)


def test_laplacian_normalisation_is_per_image_and_invertible():
    grads = tf.constant(np.random.default_rng(0).normal(size=(3, 57, 41, 3)).astype(np.float32))
    together = transforms.laplacian_normalize(grads)
    assert np.allclose(together[1:2].numpy(), transforms.laplacian_normalize(grads[1:2]).numpy(), atol=1e-5)
    low, high = transforms._split(grads)
    assert np.allclose(transforms._merge([low, high]).numpy(), grads.numpy(), atol=1e-5)


def test_tiles_cover_the_image_and_stay_bounded():
    for length, tile in [(451, 160), (300, 512), (1024, 512), (1100, 512)]:
        edges = tile_edges(length, tile)
        assert edges[0] == 0 and edges[-1] == length
        assert max(b - a for a, b in zip(edges, edges[1:])) <= tile


def test_precision_setting(monkeypatch):
    from atlas.render import settings as render

    assert RenderSettings(precision="float32").pixel_hash() != RenderSettings(precision="bfloat16").pixel_hash()
    for flags, expected in [({"avx512f", "avx512_bf16"}, "bfloat16"), ({"amx_bf16"}, "bfloat16"), ({"avx2"}, "float32")]:
        monkeypatch.setattr(render, "_cpu_flags", lambda flags=flags: flags)
        assert RenderSettings(precision="auto").resolved_precision() == expected
        assert RenderSettings(precision="auto").pixel_hash() == RenderSettings(precision=expected).pixel_hash()
    assert RenderSettings().resolved_precision() == "float32"  # the default: batches equal lone renders
    with pytest.raises(ValueError, match="precision"):
        RenderSettings(precision="float16")


@pytest.mark.parametrize("method", ["deepdream", "fourier"])
def test_progress_moves_with_every_gradient_step(small_model, method):
    """A long pass moves the bar step by step: fractions of its channels, summing to them, never beyond."""
    settings = RenderSettings(method=method, size=32, octaves=2, steps=3, batch_size=2, precision=PRECISION)
    told: list[float] = []
    render_channels(small_model, "mixed3a_1x1_pre_relu", [0, 1, 2], settings=settings, progress=told.append)
    steps = 6 if method == "deepdream" else 3  # per pass: octaves x steps, or Adam steps
    assert len(told) == 2 * steps and all(amount > 0 for amount in told)
    assert told[0] == pytest.approx(2 / steps)  # the first pass holds channels 0 and 1
    assert max(np.cumsum(told)) == pytest.approx(3) and sum(told) == pytest.approx(3)
