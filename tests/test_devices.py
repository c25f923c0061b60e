"""Devices and workers: discovery parsing, the layout fake GPU lists give (workers, pinning, batch sizes,
precision), batches that shrink to fit, and real worker processes pinned to two fake GPUs."""

import io

import numpy as np
import pytest
import tensorflow as tf
from test_sweep import assert_complete, write_config

from atlas.cli import main
from atlas.errors import UserError
from atlas.render import devices, loop
from atlas.render.devices import GIB, Device, parse_gpu_csv, visible
from atlas.render.loop import render_channels
from atlas.render.settings import BatchFit, RenderSettings
from atlas.run.config import load_config
from atlas.run.estimate import dry_run
from atlas.run.layout import parse_gpus, resolve_layout
from atlas.run.plan import resolve_plan
from atlas.run.sweep import sweep

CPU = Device("cpu", 0, "CPU", 24 * GIB, cores=8)


def gpu(index: int, gib: float = 16, capability=(8, 0), name: str = "A100") -> Device:
    return Device("gpu", index, name, int(gib * GIB), capability)


def fake_machine(monkeypatch, *found: Device) -> None:
    """Replace the one discovery function: this machine has these devices."""
    monkeypatch.setattr(devices, "discover_devices", lambda: list(found))


def test_nvidia_smi_rows_and_cuda_visible_devices():
    text = "0, NVIDIA A100-SXM4-80GB, 81920, 8.0\n1, Tesla T4, 15360, 7.5\n2, Tesla K80, 11441, [N/A]\n"
    found = parse_gpu_csv(text)
    assert [(g.index, g.name, g.memory // 2 ** 20, g.capability) for g in found] == [
        (0, "NVIDIA A100-SXM4-80GB", 81920, (8, 0)), (1, "Tesla T4", 15360, (7, 5)), (2, "Tesla K80", 11441, None)]
    assert [g.index for g in visible(found, "2,0")] == [2, 0]
    assert visible(found, "") == [] and visible(found, None) == found


def test_without_gpus_the_cpu_cores_are_split_as_before(monkeypatch):
    fake_machine(monkeypatch, CPU)
    layout = resolve_layout(devices.discover_devices(), "auto", None, None, "float32")
    assert [(w.device.kind, w.threads, w.environment) for w in layout.workers] == [
        ("cpu", 2, {"CUDA_VISIBLE_DEVICES": "-1"})] * 4
    assert not layout.in_process and layout.batch_size(224 * 224) == 8
    assert layout.describe() == ("no GPU found: rendering on 8 CPU cores in 4 processes of 2 threads each, float32 "
                                 "(set in the config)")
    assert resolve_layout([CPU], 1, None, None, "float32").in_process


def test_one_worker_per_gpu_pinned_with_batches_from_memory_and_precision_from_capability(monkeypatch):
    fake_machine(monkeypatch, gpu(0), gpu(1), gpu(2), gpu(3), CPU)
    layout = resolve_layout(devices.discover_devices(), "auto", None, None, "auto")
    assert [w.environment for w in layout.workers] == [
        {"CUDA_VISIBLE_DEVICES": str(i), "TF_FORCE_GPU_ALLOW_GROWTH": "true"} for i in range(4)]
    assert all(w.threads is None and w.device.is_gpu for w in layout.workers)
    assert layout.batch_size(224 * 224) >= 64  # a 16 GB card: at least 64 images of 224 px
    assert layout.batch_size(448 * 448) == layout.batch_size(224 * 224) // 4  # scaled by image area
    assert (layout.precision, layout.why) == ("bfloat16", "compute capability >= 8.0")
    assert layout.describe().startswith("4 GPUs (4x A100 16 GB, capability 8.0): 4 workers")

    t4 = Device("gpu", 0, "Tesla T4", 15 * GIB, (7, 5))  # nvidia-smi's 15360 MiB
    old = resolve_layout([t4, CPU], "auto", None, None, "auto")
    assert old.batch_size(224 * 224) >= 64 and (old.precision, old.why) == ("float32", "a GPU below compute "
                                                                             "capability 8.0")
    big = resolve_layout([gpu(0, 80), CPU], "auto", None, None, "auto")
    assert big.batch_size(224 * 224) == int(80 * 64 / 15)  # 64 images of 224 px per 15 GiB
    mixed = resolve_layout([gpu(0), Device("gpu", 1, "Tesla T4", 15 * GIB, (7, 5)), CPU], "auto", None, None, "auto")
    assert mixed.precision == "float32"  # one precision for every worker: the settings hash is one
    two_on_one = resolve_layout([gpu(0), CPU], 2, None, None, "auto")
    assert [w.environment["CUDA_VISIBLE_DEVICES"] for w in two_on_one.workers] == ["0", "0"]
    assert two_on_one.workers[0].images == resolve_layout([gpu(0), CPU], 1, None, None, "auto").workers[0].images // 2
    assert resolve_layout([gpu(0), CPU], "auto", None, 12, "float32").batch_size(64 * 64) == 12  # config: exact


def test_gpus_picks_a_subset_and_bad_ids_are_one_line_errors(monkeypatch, tmp_path, capsys, small_model):
    fake_machine(monkeypatch, gpu(0), gpu(1), gpu(2), CPU)
    loaded = load_config(write_config(tmp_path, workers="auto", gpus=[0, 2]))
    plan = resolve_plan(loaded, small_model)
    assert [w.environment["CUDA_VISIBLE_DEVICES"] for w in plan.layout.workers] == ["0", "2"]
    assert plan.settings.precision == "float32"  # as the config says
    override = resolve_plan(loaded, small_model, gpus=[1])
    assert [w.device.index for w in override.layout.workers] == [1]
    assert not resolve_plan(loaded, small_model, gpus=[]).layout.gpus  # --gpus none: the CPU
    assert parse_gpus("0,2") == [0, 2] and parse_gpus("none") == [] and parse_gpus(None) is None
    for flag, message in [("5", "no GPU 5 (this machine's GPUs are 0, 1, 2"), ("a,b", "--gpus a,b: write GPU ids")]:
        assert main(["sweep", str(loaded.path), "--gpus", flag]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    fake_machine(monkeypatch, CPU)
    with pytest.raises(UserError, match="no GPU was found here"):
        resolve_plan(loaded, small_model, gpus=[0])


def test_auto_precision_in_the_plan_is_decided_once_and_hashed(monkeypatch, tmp_path, small_model):
    render = {"octaves": 1, "steps": 2, "size": 64, "precision": "auto"}
    loaded = load_config(write_config(tmp_path, render=render))
    fake_machine(monkeypatch, gpu(0, capability=(7, 0)), CPU)
    volta = resolve_plan(loaded, small_model)
    fake_machine(monkeypatch, gpu(0, capability=(9, 0)), CPU)
    hopper = resolve_plan(loaded, small_model)
    assert (volta.settings.precision, hopper.settings.precision) == ("float32", "bfloat16")
    assert volta.hashes != hopper.hashes
    assert "bfloat16 (compute capability >= 8.0)" in hopper.layout.describe()


def test_dry_run_estimates_for_the_gpu_workers_that_would_run(monkeypatch, tmp_path):
    fake_machine(monkeypatch, gpu(0), gpu(1), CPU)
    out = io.StringIO()
    dry_run(load_config(write_config(tmp_path, workers="auto")), out=out)
    text = out.getvalue()
    assert "2 GPUs (2x A100 16 GB, capability 8.0): 2 workers" in text and "on 2 GPU workers" in text


def test_batch_fit_lowers_to_the_measured_peak_and_halves_on_out_of_memory():
    fit = BatchFit(64, memory=16 * GIB)
    assert fit.size("a", 224 * 224) == 64
    fit.observe("a", 224 * 224, 64, peak=32 * GIB)  # a pass of 64 was measured at 32 GiB: 0.5 GiB an image
    assert fit.size("a", 224 * 224) == int(0.8 * 16 / 0.5)
    assert fit.size("b", 224 * 224) == 64  # other layers keep their own
    assert fit.halve("b", 224 * 224, 64) == 32 and fit.size("b", 224 * 224) == 32
    with pytest.raises(MemoryError):
        fit.halve("b", 224 * 224, 1)


def test_out_of_memory_halves_the_pass_and_pixels_do_not_change(monkeypatch, small_model):
    settings = RenderSettings(octaves=1, steps=2, size=64)
    layer, channels = "mixed3a_1x1_pre_relu", [0, 1, 2, 3]
    expected = render_channels(small_model, layer, channels, settings=RenderSettings(**{**settings.__dict__,
                                                                                       "batch_size": 2}))
    real, passes = loop._render_batch, []

    def small_device(model, layer, chunk, *args):
        passes.append(len(chunk))
        if len(chunk) > 2:
            args[-1]()  # a step reported before the device ran out
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")
        return real(model, layer, chunk, *args)

    monkeypatch.setattr(loop, "_render_batch", small_device)
    fit, told = BatchFit(4, area=None), []
    results = render_channels(small_model, layer, channels, settings=settings, fit=fit, progress=told.append)
    assert passes == [4, 2, 2] and fit.size(layer, 64 * 64) == 2
    assert told[:2] == [2.0, -2.0] and sum(told) == pytest.approx(len(channels))  # the failed pass taken back
    assert [r.channel for r in results] == channels
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got.image, want.image)


def test_two_worker_processes_each_see_only_their_own_gpu(monkeypatch, tmp_path):
    """A real sweep with two fake GPUs: two spawned processes, pinned before TensorFlow started in them."""
    fake_machine(monkeypatch, gpu(0), gpu(1), Device("cpu", 0, "CPU", 24 * GIB, cores=2))
    loaded = load_config(write_config(tmp_path, workers="auto"))
    summary = sweep(loaded)
    assert (summary.done, summary.failed) == (4, [])
    assert sorted(w.split(" ", 1)[1] for w in summary.workers) == ["gpu 0", "gpu 1"]  # CUDA_VISIBLE_DEVICES
    assert len({w.split(" ")[0] for w in summary.workers}) == 2  # two processes
    assert any(line.startswith("2 GPUs (2x A100 16 GB") for line in summary.lines())
    assert_complete(loaded.run_folder, 4)
