"""The circuits pass: what it stores equals what the model gives, it resumes, and the config turns it on."""

import numpy as np
import pytest

from atlas.errors import UserError
from atlas.model.circuits import unit_circuit
from atlas.analysis.circuits import run_circuits
from atlas.run.circuits import circuits_folder, read_circuits
from atlas.run.plans import CircuitsPlan
from atlas.run.config import load_config
from atlas.run.plan import resolve_plan
from tests.test_sweep import write_config

LAYERS = ("conv2d0_pre_relu", "conv2d1_pre_relu", "mixed3b_5x5_pre_relu")


@pytest.fixture(scope="module")
def stored(small_model, tmp_path_factory):
    run = tmp_path_factory.mktemp("circuits-run")
    summary = run_circuits(CircuitsPlan(top=3, layers=LAYERS), run, small_model, progress=False)
    assert summary.computed == list(LAYERS)
    return run


def _same(a, b):
    assert [(e.layer, e.channel) for e in a] == [(e.layer, e.channel) for e in b]
    for x, y in zip(a, b):
        assert np.allclose(x.kernel, y.kernel, atol=1e-6) and np.isclose(x.norm, y.norm, rtol=1e-5)


def test_stored_inputs_and_outputs_equal_the_models(small_model, stored):
    circuits = read_circuits(stored, small_model.sha256)
    assert circuits.top == 3 and read_circuits(stored, "f" * 64) is None
    live = unit_circuit(small_model, "mixed3b_5x5_pre_relu", 2, top=3)
    _same(circuits.inputs("mixed3b_5x5_pre_relu", 2), live.inputs)
    live = unit_circuit(small_model, "conv2d0_pre_relu", 4, top=3)  # read by conv2d1 alone
    _same(circuits.outputs("conv2d0_pre_relu", 4), live.outputs)
    _same(circuits.inputs("conv2d0_pre_relu", 4), live.inputs)
    norms, _ = circuits.matrix("mixed3b_5x5_pre_relu")
    assert norms.shape == (small_model.layer("mixed3b_5x5_pre_relu").channels, 32) and (norms >= 0).all()
    full = circuits.full("conv2d0_pre_relu")  # small enough to keep every kernel: the RGB filters
    assert full.shape == (small_model.layer("conv2d0_pre_relu").channels, 3, 7, 7)


def test_the_pass_resumes_layer_by_layer(small_model, stored):
    folder = circuits_folder(stored, small_model.sha256)
    again = run_circuits(CircuitsPlan(top=3, layers=LAYERS), stored, small_model, progress=False)
    assert again.computed == [] and again.kept == list(LAYERS)
    (folder / "conv2d1_pre_relu.npz").unlink()  # as if killed before that layer's file was renamed into place
    (folder / ".conv2d1_pre_relu.npz.abc.part.npz").write_bytes(b"half")
    again = run_circuits(CircuitsPlan(top=3, layers=LAYERS), stored, small_model, progress=False)
    assert again.computed == ["conv2d1_pre_relu"]
    assert read_circuits(stored, small_model.sha256).inputs("conv2d1_pre_relu", 0)


def test_config_key_turns_the_pass_on_and_off(small_model, tmp_path):
    plan = resolve_plan(load_config(write_config(tmp_path)), small_model)
    assert plan.circuits.top == 10  # on by default, for the selected layers and the layers reading them
    assert {"conv2d0_pre_relu", "conv2d1_pre_relu", "mixed3a_1x1_pre_relu", "mixed3b_1x1_pre_relu",
            "mixed3b_pool_reduce_pre_relu"} <= set(plan.circuits.layers)
    assert "mixed4a_1x1_pre_relu" not in plan.circuits.layers
    off = resolve_plan(load_config(write_config(tmp_path, circuits=False)), small_model)
    assert off.circuits is None
    five = resolve_plan(load_config(write_config(tmp_path, circuits={"top": 5})), small_model)
    assert five.circuits.top == 5
    with pytest.raises(UserError, match="circuits"):
        load_config(write_config(tmp_path, circuits={"tops": 5}))
