"""Worker processes end with their parent, however it dies: a sweep killed with SIGKILL leaves no worker alive."""

import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable

import psutil
import pytest
import yaml

from atlas.run.lifeline import ORPHAN_EXIT, parent_gone
from atlas.run.manifest import MANIFEST_FILE

GRACE = 10  # seconds within which every worker must be gone after its parent's death


def living(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (a zombie has exited: it waits only for its new parent to reap it)."""
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


def wait_until_gone(processes: list[psutil.Process], seconds: float = GRACE) -> list[psutil.Process]:
    """The processes still alive after up to `seconds` (killed then, so a failing test leaves none behind)."""
    deadline = time.monotonic() + seconds
    while living(processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = living(processes)
    for process in survivors:
        process.kill()
    return survivors


def descendants(pid: int) -> list[psutil.Process]:
    """Every living process below `pid` (one that exits while they are listed is left out)."""
    children: dict[int, list[psutil.Process]] = {}
    for process in psutil.process_iter(["ppid", "cmdline"]):  # each one's command line kept for later
        children.setdefault(process.info["ppid"], []).append(process)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child.pid)
    return living(found)


def rendered(run_folder: Path) -> int:
    """Renders recorded so far (the manifest opened read-only: never created here)."""
    try:
        with sqlite3.connect(f"file:{run_folder / MANIFEST_FILE}?mode=ro", uri=True) as db:
            return db.execute("SELECT COUNT(*) FROM renders").fetchone()[0]
    except sqlite3.Error:
        return 0


def start_sweep(tmp_path: Path, *flags: str, **changes) -> tuple[subprocess.Popen, Path]:
    """A real `atlas sweep` process of a config with plenty of small batches (so it is killed mid-way)."""
    config = {"model": "synthetic:0.125", "layers": ["conv2d0_pre_relu", "conv2d1_pre_relu", "conv2d2_pre_relu",
                                                     "mixed3a_1x1_pre_relu", "mixed3a_3x3_pre_relu"],
              "channels": 8, "batch_size": 1, "render": {"octaves": 1, "steps": 10, "size": 64},
              "formats": {"web": {"size": 64}, "thumb": {"size": 32}}, "output": str(tmp_path / "output"),
              **changes}
    path = tmp_path / "orphans.yaml"
    path.write_text(yaml.safe_dump(config))
    process = subprocess.Popen([sys.executable, "-m", "atlas.cli", "sweep", str(path), *flags],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, tmp_path / "output" / "orphans"


def spawned(processes: list[psutil.Process]) -> list[psutil.Process]:
    """The worker processes among them (multiprocessing's spawned children, not its resource tracker)."""
    return [p for p in processes if "spawn_main" in " ".join(p.info["cmdline"] or [])]


def kill_when(process: subprocess.Popen, ready: Callable[[], bool], settle: float = 0.2) -> list[psutil.Process]:
    """Wait until `ready()` (then `settle` seconds more), SIGKILL the sweep's process and return every process it
    had started."""
    deadline = time.monotonic() + 240
    while process.poll() is None and time.monotonic() < deadline and not ready():
        time.sleep(0.05)
    time.sleep(settle)
    started = descendants(process.pid)
    assert process.poll() is None, "the sweep finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    return started


def test_sigkilled_sweep_leaves_no_worker_alive(tmp_path):
    process, run_folder = start_sweep(tmp_path, workers=2)
    try:
        # both workers have rendered a batch, so they are inside their next ones
        started = kill_when(process, lambda: rendered(run_folder) >= 2)
    finally:
        process.kill()
    assert len(spawned(started)) == 2
    assert not wait_until_gone(started), "worker processes outlived their killed sweep"


def test_sigkilled_sweep_on_a_local_dask_cluster_leaves_no_worker_alive(tmp_path):
    """dask's worker processes watch their parent the same way (a pipe whose end closes when the parent dies).
    Killed once they are up, not mid-batch, to keep the test short (measured mid-batch too: see the docs)."""
    pytest.importorskip("dask.distributed")
    process, _ = start_sweep(tmp_path, "--backend", "dask")
    try:
        started = kill_when(process, lambda: bool(spawned(descendants(process.pid))), settle=2.0)
    finally:
        process.kill()
    assert spawned(started)
    assert not wait_until_gone(started), "dask's worker processes outlived their killed sweep"


WATCHED = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import os, time; from atlas.run.lifeline import exit_with_parent; "
                          "exit_with_parent(os.getppid(), deathsig={deathsig}); print('watching', flush=True); "
                          "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
assert child.stdout.readline() == "watching\\n"
print(child.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("deathsig", [False, True])
def test_a_watched_process_exits_when_its_parent_is_killed(deathsig):
    """The watchdog alone (macOS, or a worker another thread started), and with Linux's parent-death signal."""
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(WATCHED.format(deathsig=deathsig))],
                              stdout=subprocess.PIPE, text=True)
    try:
        child = psutil.Process(int(parent.stdout.readline()))
    finally:
        parent.kill()
        parent.wait()
    assert not wait_until_gone([child])


def test_a_process_whose_parent_died_before_the_watch_began_exits_at_once():
    code = "from atlas.run.lifeline import exit_with_parent; exit_with_parent(1 << 30); import time; time.sleep(60)"
    run = subprocess.run([sys.executable, "-c", code], check=False, timeout=60)
    assert run.returncode == ORPHAN_EXIT


def test_parent_gone_reads_the_pipe_and_the_pid(tmp_path):
    import os

    read, write = os.pipe()
    try:
        assert not parent_gone(os.getppid(), read, 0)  # the pipe open, the parent ours
        assert parent_gone(os.getppid() + 1, read, 0)  # another parent: the one recorded is gone
        os.close(write)
        write = None
        assert parent_gone(os.getppid(), read, 0)  # EOF: the writer (the parent) is gone
    finally:
        os.close(read)
        if write is not None:
            os.close(write)
    assert not parent_gone(os.getppid(), None, 0)
