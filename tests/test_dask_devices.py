"""A dask sweep plans from its cluster's devices: each worker process reports what it renders on (a fake discovery
function shipped to real worker processes stands in for GPUs), and precision, batch size and the printed line
follow from those, not from the machine running `atlas sweep`."""

import io
import os

import pytest
from test_devices import CPU, gpu
from test_sweep import assert_complete, write_config

from atlas.cli import main
from atlas.render import devices
from atlas.render.settings import auto_batch_size
from atlas.run import workers
from atlas.run.config import load_config
from atlas.run.layout import resolve_cluster_layout
from atlas.run.plan import resolve_plan
from atlas.run.sweep import sweep
from atlas.run.workers import cluster_devices

distributed = pytest.importorskip("dask.distributed")

AUTO = {"octaves": 1, "steps": 2, "size": 64, "precision": "auto"}


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes of one thread each, as the other dask tests start them."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=":0") as local, distributed.Client(local) as client:
        yield local, client


def one_gpu_each(client, first, second):
    """A discovery function that, run in the cluster's worker processes, finds `first` in one of them and
    `second` in the other (each then the CPU), told apart by their process ids."""
    pids = sorted(client.run(os.getpid).values())

    def discover():
        return [first if os.getpid() == pids[0] else second, CPU]

    return discover


def test_each_worker_process_reports_the_device_it_renders_on(cluster):
    _, client = cluster
    found = cluster_devices(client, one_gpu_each(client, gpu(0, 16), gpu(0, 40)))
    by_pid = client.run(os.getpid)
    assert sorted(found, key=lambda d: d.memory) == [gpu(0, 16), gpu(0, 40)]
    assert [by_pid[a] == min(by_pid.values()) for a in sorted(by_pid)] == [d == gpu(0, 16) for d in found]
    assert cluster_devices(client) == [devices.discover_devices()[0]] * 2  # really asked: this machine's own CPU


def test_auto_precision_and_batches_come_from_the_workers_gpus(cluster, tmp_path, small_model):
    _, client = cluster
    loaded = load_config(write_config(tmp_path, render=AUTO))
    ampere = resolve_plan(loaded, small_model, cluster=cluster_devices(client, one_gpu_each(
        client, gpu(0, 16), gpu(0, 40))))
    assert ampere.settings.precision == "bfloat16"
    smallest = auto_batch_size(224 * 224, gpu(0, 16), small_model.work)  # divided by the model's work, as locally
    assert smallest < auto_batch_size(224 * 224, gpu(0, 40), small_model.work)  # one batching: the smaller card's
    assert ampere.layout.batch_size(224 * 224) == smallest
    assert ampere.layout.batch_size(112 * 112) == 4 * smallest  # scaled by image area, as locally
    assert ampere.layout.describe() == (
        f"dask cluster: 2 workers, 2 GPUs (A100 16 GB, capability 8.0, A100 40 GB, capability 8.0): bfloat16 "
        f"(compute capability >= 8.0), batches of {smallest} images of 224 px")
    turing = resolve_plan(loaded, small_model, cluster=cluster_devices(client, one_gpu_each(
        client, gpu(0, 16), gpu(0, 16, capability=(7, 5), name="T4"))))
    assert turing.settings.precision == "float32" and turing.hashes != ampere.hashes
    assert "float32 (a GPU below compute capability 8.0)" in turing.layout.describe()
    explicit = load_config(write_config(tmp_path, name="explicit", render=AUTO, batch_size=3))
    three = resolve_plan(explicit, small_model, cluster=cluster_devices(client, one_gpu_each(
        client, gpu(0, 16), gpu(0, 40))))
    assert three.layout.batch_size(224 * 224) == three.layout.batch_size(64 * 64) == 3  # the config's wins
    assert three.layout.describe().endswith(", batches of 3 images")


def test_a_worker_on_a_cpu_keeps_auto_at_float32():
    layout = resolve_cluster_layout([gpu(0, 40), CPU], None, "auto")
    assert (layout.precision, layout.batch_size(224 * 224)) == ("float32", auto_batch_size(224 * 224, CPU))
    assert layout.describe().startswith("dask cluster: 2 workers, 1 GPU, 1 CPU (A100 40 GB, capability 8.0, "
                                        "8 CPU cores): float32 (a worker renders on a CPU)")


def test_a_dask_sweep_and_dry_run_plan_from_the_cluster_and_render(cluster, tmp_path, monkeypatch, capsys):
    """The sweep connects first, asks the workers (here the fake discovery, shipped to them), then renders on
    them; this machine's own devices do not enter the plan."""
    local, client = cluster
    monkeypatch.setattr(devices, "discover_devices", one_gpu_each(
        client, gpu(0, 16), gpu(0, 16, capability=(7, 5), name="T4")))
    path = write_config(tmp_path, render=AUTO)
    assert main(["sweep", str(path), "--backend", "dask", "--scheduler", local.scheduler_address, "--dry-run"]) == 0
    shown = capsys.readouterr().out
    assert "atlas: dask cluster: 2 workers, 2 GPUs (A100 16 GB, capability 8.0, T4 16 GB, capability 7.5): " \
           "float32 (a GPU below compute capability 8.0)" in shown
    assert "the dask cluster's 2 workers were not timed" in shown
    out = io.StringIO()
    loaded = load_config(path)
    summary = sweep(loaded, backend="dask", scheduler=local.scheduler_address, out=out)
    assert (summary.done, summary.failed) == (4, [])
    assert out.getvalue().startswith("atlas: dask cluster: 2 workers, 2 GPUs (A100 16 GB")
    assert all(f":{os.getpid()}" not in w for w in summary.workers)  # rendered by the cluster's workers
    assert_complete(loaded.run_folder, 4)
    assert len(client.run(os.getpid)) == 2  # the sweep closed its own client only, not the cluster


def test_gpus_on_the_command_line_is_refused_with_dask(tmp_path, capsys):
    assert main(["sweep", str(write_config(tmp_path)), "--backend", "dask", "--gpus", "0"]) == 2
    assert "on a dask cluster each worker renders on its first visible GPU" in capsys.readouterr().err


def test_a_scheduler_without_workers_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(workers, "WORKERS_TIMEOUT", 1)
    with distributed.LocalCluster(n_workers=0, processes=True, host="127.0.0.1", dashboard_address=":0") as empty:
        code = main(["sweep", str(write_config(tmp_path)), "--backend", "dask", "--scheduler",
                     empty.scheduler_address, "--dry-run"])
    assert code == 2
    assert f"no dask worker joined the scheduler {empty.scheduler_address} in 1 s" in capsys.readouterr().err
