"""A render's start images are evaluated once, and one function turns that evaluation into both the lift's
denominator and, with facets, the unit each facet's objective counts in; run.json names a shipped config."""

from dataclasses import replace

import numpy as np
import pytest

from atlas.render import fourier, loop
from atlas.render.loop import render_channels
from atlas.render.settings import RenderSettings
from atlas.render.objectives import facet_units, spread

LAYER = "mixed3a_3x3_pre_relu"
SMALL = RenderSettings(octaves=1, steps=2, size=48, diversity=2)


@pytest.fixture
def spies(monkeypatch):
    """Every `readings` call of the render loop (how many images each evaluated), and every `units` the two
    methods climbed with."""
    seen = {"readings": [], "units": []}
    real_readings, real_noise, real_fourier = loop.readings, loop.dream_from_noise, loop.dream_fourier

    def readings(model, layer, images, *args):
        seen["readings"].append(len(images))
        return real_readings(model, layer, images, *args)

    def noise(*args, **kwargs):
        seen["units"].append(np.array(kwargs.get("units", args[-1] if len(args) > 7 else None)))
        return real_noise(*args, **kwargs)

    def fourier_dream(*args, **kwargs):
        units_of = kwargs["units_of"]

        def spy(starts):
            seen["units"].append(units_of(starts))
            return seen["units"][-1]

        return real_fourier(*args, **{**kwargs, "units_of": spy})

    monkeypatch.setattr(loop, "readings", readings)
    monkeypatch.setattr(loop, "dream_from_noise", noise)
    monkeypatch.setattr(loop, "dream_fourier", fourier_dream)
    monkeypatch.setattr(fourier, "start_units", lambda *a: pytest.fail("start images evaluated a second time"))
    return seen


@pytest.mark.parametrize("settings", [SMALL, replace(SMALL, method="fourier", steps=3)], ids=["deepdream", "fourier"])
def test_facets_start_images_are_evaluated_once_for_units_and_lift(small_model, spies, settings):
    results = render_channels(small_model, LAYER, [1, 4], settings=settings, seed=0)
    assert spies["readings"] == [4, 4]  # the 4 start images once, then the 4 results
    (units,) = spies["units"]
    # the lift's denominator of each result, from its own metrics: (end - start) / lift
    denominators = np.array([(r.end - r.start) / r.lift for r in results])
    per_channel = denominators.reshape(2, 2).mean(axis=1)
    assert units == pytest.approx(np.repeat(per_channel, 2), rel=1e-4)  # units are the facets' mean spread


def test_a_single_render_evaluates_its_start_images_once_too(small_model, spies):
    render_channels(small_model, LAYER, [1, 4], settings=replace(SMALL, diversity=1), seed=0)
    assert spies["readings"] == [2, 2]
    assert np.all(spies["units"][0] == 1)  # no unit without facets


def test_spread_and_facet_units_are_one_formula():
    values = np.random.default_rng(0).normal(3.0, 2.0, (6, 10)).astype(np.float32)
    spreads = spread(values, "channel")
    assert spreads == pytest.approx(values.astype(np.float64).std(axis=1), rel=1e-9)
    assert spreads.dtype == np.float64  # float32 readings, float64 arithmetic: the same rounding everywhere
    units = facet_units(values, "neuron", 3)
    assert units == pytest.approx(np.repeat(spreads.reshape(2, 3).mean(axis=1), 3), rel=1e-6)
    assert facet_units(values, "channel", 1).tolist() == [1.0] * 6
    whole = np.array([2.0, -0.5])
    assert spread(whole, "layer") == pytest.approx(np.abs(whole))  # the layer objective's own size


def test_run_json_names_a_shipped_config_and_gives_a_user_files_path(tmp_path, lite0_model):
    from atlas.run.config import load_config
    from atlas.run.plan import resolve_plan
    from atlas.shipped import shipped_configs

    shipped = load_config("demo")
    assert resolve_plan(shipped, lite0_model, None, None).run_settings()["config"] == "demo"
    mine = tmp_path / "mine.yaml"
    mine.write_text(shipped_configs()["demo"].read_text())  # the same text, the user's own file
    assert resolve_plan(load_config(mine), lite0_model, None, None).run_settings()["config"] == str(mine)
