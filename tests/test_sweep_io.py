"""Who writes what: workers that cannot see the run folder (dask), and a sweep that cannot write stops at once."""

import errno
import itertools
import multiprocessing
import os
import pickle
import shutil
import sqlite3
from pathlib import Path

import pytest
from test_sweep import assert_complete, records, write_config

from atlas.cli import main
from atlas.images import PHOTOS_DIR
from atlas.model.source import write_synthetic
from atlas.run import sweep as sweep_module
from atlas.run.config import load_config
from atlas.run.manifest import Manifest
from atlas.run.plan import resolve_plan
from atlas.run.sweep import make_task, sweep

distributed = pytest.importorskip("dask.distributed")

# audit events whose path arguments a sealed worker may not touch (reads, writes, listings, renames, sqlite)
PATH_EVENTS = {"open", "os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "os.listdir",
               "os.scandir", "os.chmod", "os.chdir", "os.truncate", "shutil.copyfile", "sqlite3.connect"}


class Sealed(distributed.WorkerPlugin):
    """Run in every dask worker process: move it to an empty folder, and make every file access under
    `forbidden` (the test's whole folder: config, model file, photo, run folder) and every URL fetch fail and
    be noted (`os.stat` has no audit event, so a worker could still learn that a path exists, but it can
    neither list, read, write nor rename anything there). An audit hook cannot be removed; the worker
    processes end with the cluster."""

    name = "sealed"

    def __init__(self, forbidden: str) -> None:
        self.forbidden = forbidden
        self.attempts: list[str] = []

    def setup(self, worker) -> None:
        import sys
        import tempfile

        os.chdir(tempfile.mkdtemp(prefix="sealed-worker-"))
        forbidden, attempts = self.forbidden, self.attempts

        def hook(event: str, args: tuple) -> None:
            if event == "urllib.Request":
                attempts.append(f"{event} {args[0]}")
                raise PermissionError("this worker has no internet")
            if event not in PATH_EVENTS:
                return
            for arg in args:
                if isinstance(arg, (str, bytes, os.PathLike)):
                    path = os.path.abspath(os.fsdecode(arg))
                    if path == forbidden or path.startswith(forbidden + os.sep):
                        attempts.append(f"{event} {path}")
                        raise PermissionError(f"{path}: not visible to this worker")

        sys.addaudithook(hook)


def test_dask_workers_that_cannot_see_the_run_folder_or_the_model_file(tmp_path):
    model = write_synthetic(tmp_path / "model" / "graph.pb", scale=0.125)  # a file only the client can read
    photo = shutil.copyfile(PHOTOS_DIR / "chelsea.jpg", tmp_path / "mine.jpg")
    loaded = load_config(write_config(tmp_path, model=str(model), modes=["noise", "photo"],
                                      photos=[str(photo)], layer_dreams=True))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        client.register_plugin(Sealed(str(tmp_path)))
        assert client.run(_can_list, str(tmp_path)) == dict.fromkeys(client.nthreads(), False)  # the seal holds
        summary = sweep(loaded, backend="dask", scheduler=cluster.scheduler_address)
        attempts = client.run(lambda dask_worker: dask_worker.plugins["sealed"].attempts)
    assert (summary.done, summary.failed) == (2 * 2 + 2 * 2 + 2, [])
    assert len(attempts) == 2 and all(tried == [f"os.listdir {tmp_path}"] for tried in attempts.values())
    assert summary.workers and all(f":{os.getpid()}" not in w for w in summary.workers)
    assert_complete(loaded.run_folder, 10)
    task = pickle.dumps(make_task(resolve_plan(loaded, _model(str(model))), "{}"))
    assert str(tmp_path).encode() not in task  # what workers get names no path at all


def _can_list(folder: str) -> bool:
    try:
        os.listdir(folder)
    except PermissionError:
        return False
    return True


def _model(spec: str):
    from atlas.model.graph import load_model

    return load_model(spec)


# ------------------------------------------------------------------------------------ a sweep that cannot write

FAILURES = [(errno.ENOSPC, "no space left on the disk"), (errno.EDQUOT, "disk quota exceeded"),
            (errno.EACCES, "permission denied"), (errno.EROFS, "read-only file system")]


def failing_writes(after: int, code: int):
    """A write function that writes `after` files, then fails every time with `code` (the parent writes a
    batch's files from several threads: `next` on a counter is atomic)."""
    real, calls = sweep_module.write_file, itertools.count()

    def write(path: Path, data: bytes) -> None:
        if next(calls) >= after:
            raise OSError(code, os.strerror(code), str(path))
        real(path, data)

    return write


@pytest.mark.parametrize("code, cause", FAILURES)
def test_a_sweep_that_cannot_write_stops_at_once_and_a_rerun_completes(tmp_path, monkeypatch, capsys, code, cause):
    loaded = load_config(write_config(tmp_path, batch_size=1))  # 4 batches of one render, in this process
    rendered = []
    real_run = sweep_module.run_batch
    monkeypatch.setattr(sweep_module, "run_batch", lambda *a: rendered.append(a[1]) or real_run(*a))
    monkeypatch.setattr(sweep_module, "write_file", failing_writes(4, code))  # fails in the 2nd batch's files
    assert main(["sweep", str(loaded.path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"atlas: error: cannot write to {loaded.run_folder}: {cause}; "
                       + err[-1].split("; ", 1)[1]) and "run the same command again" in err[-1]
    assert not any("Traceback" in line for line in err)
    assert len(rendered) == 2  # stopped at the failing batch: no more batches started
    assert len(records(loaded.run_folder)) == 1  # the first batch; the manifest is whole
    assert_complete(loaded.run_folder, 1)
    monkeypatch.undo()
    assert main(["sweep", str(loaded.path)]) == 0  # after the fix
    assert_complete(loaded.run_folder, 4)


def test_a_full_disk_under_the_manifest_stops_the_sweep(tmp_path, monkeypatch, capsys):
    loaded = load_config(write_config(tmp_path))

    def full(self, renders):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Manifest, "add", full)
    assert main(["sweep", str(loaded.path)]) == 2
    assert f"cannot write to {loaded.run_folder}: no space left on the disk" in capsys.readouterr().err


def test_a_read_only_output_folder_is_one_line_at_mkdir(tmp_path, monkeypatch, capsys):
    loaded = load_config(write_config(tmp_path))
    real = Path.mkdir

    def read_only(self, *args, **kwargs):
        if self == loaded.run_folder or loaded.run_folder.is_relative_to(self):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    assert main(["sweep", str(loaded.path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot write to {loaded.run_folder}: read-only file system" in err


def test_worker_processes_are_stopped_when_the_parent_cannot_write(tmp_path, monkeypatch, capsys):
    loaded = load_config(write_config(tmp_path, workers=2, batch_size=1))
    monkeypatch.setattr(sweep_module, "write_file", failing_writes(0, errno.ENOSPC))
    assert main(["sweep", str(loaded.path)]) == 2
    assert "no space left on the disk" in capsys.readouterr().err
    assert records(loaded.run_folder) == []
    assert multiprocessing.active_children() == []  # queued batches cancelled, the workers ended


def test_an_output_folder_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "output").write_text("not a folder")
    loaded = load_config(write_config(tmp_path))
    assert main(["sweep", str(loaded.path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot write to {loaded.run_folder}: a file is in the way" in err
    assert (tmp_path / "output").read_text() == "not a folder"
