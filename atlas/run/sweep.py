"""The sweep: every selected layer x channel x mode, rendered in batches by worker processes, resumable.

The parent process plans the work (devices and workers included, see atlas/run/layout.py), holds the run
folder's lock, and is the only writer of files and of the manifest. Workers (atlas/run/workers.py: local
processes pinned one per GPU or splitting the CPU, or a dask cluster) get plain data, render, and return the
encoded images with their records; the parent writes each batch's files atomically, then records the batch
in one transaction. A render is skipped when its record has the same settings hash and its three image files
exist, so a re-run after a crash or a SIGKILL finishes exactly the missing work. A write the user must make
possible (not writable, read-only, disk full, quota) stops the sweep at once with one line.
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
import time
from collections import defaultdict
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from atlas.atomic import atomic_path, atomic_write_bytes, remove_stale_parts, stop_on_write_errors, sync_folders
from atlas.console import import_tensorflow
from atlas.errors import UserError
from atlas.run.config import LoadedConfig
from atlas.run.manifest import CLASSES, Manifest, manifest_name, write_run_info
from atlas.run.plan import Batch, RunPlan, WorkItem, make_batches, parse_shard, pending, resolve_plan
from atlas.run.workers import LocalPool, Outcome, Task, adopt_model, cluster_devices, run_batch, run_on_dask

LOCK_FILE = ".sweep.lock"
WRITE_THREADS = 4  # files written at once: their fsyncs overlap (4.5x the rate of one at a time here)


def write_file(path: Path, data: bytes) -> None:
    """How the parent writes each image file (tests replace it to fill a disk); `_record` syncs the folders."""
    atomic_write_bytes(path, data, sync_folder=False)


def versions() -> str:
    """Software versions recorded with every render."""
    import numpy
    import PIL
    import tensorflow as tf

    from atlas import __version__

    return json.dumps({"atlas": __version__, "tensorflow": tf.__version__, "numpy": numpy.__version__,
                       "pillow": PIL.__version__, "python": platform.python_version()}, sort_keys=True)


def make_task(plan: RunPlan, versions_json: str) -> Task:
    """What every worker needs of the plan: no paths, the photos as their bytes."""
    return Task(model_sha256=plan.model_sha256, preprocess=plan.model_preprocess, settings=plan.settings,
                seed=plan.seed,
                photos={mode: path.read_bytes() for mode, path in plan.photos.items()}, hashes=plan.hashes,
                formats=plan.formats, versions=versions_json, mode_settings=plan.mode_settings, work=plan.layout.work,
                logits=plan.classes.logits if plan.classes else None,
                class_hashes=dict(plan.classes.hashes) if plan.classes else {})


def prepare_run_folder(plan: RunPlan, versions_json: str, sweep_stale: bool = True) -> None:
    """Write run.json and copy the base photos in (atomically); sweep away temp files a kill left behind
    (not while other slices may be writing theirs)."""
    folder = plan.folder
    folder.mkdir(parents=True, exist_ok=True)
    if sweep_stale:
        remove_stale_parts(folder)
    for mode in plan.modes:
        if mode.file:
            target = folder / mode.file
            if not target.exists():
                with atomic_path(target) as tmp:
                    shutil.copyfile(plan.photos[mode.id], tmp)
    write_run_info(folder, plan.name, {"spec": plan.model_spec, "sha256": plan.model_sha256,
                                       "preprocess": plan.model_preprocess, "labels": plan.model_labels,
                                       "logits": plan.model_logits},
                   plan.catalogue, plan.modes, plan.run_settings(), plan.centre_units,
                   versions=json.loads(versions_json), planned=plan.planned, blocks=plan.blocks,
                   **({CLASSES: plan.classes.to_dict()} if plan.classes else {}))


@dataclass
class Summary:
    """What a sweep did."""

    done: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    per_layer: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    workers: set[str] = field(default_factory=set)  # host:pid of every process that rendered
    layout: str = ""  # the devices and workers, in one line

    def lines(self) -> list[str]:
        rows = [f"{layer:<40} {len(times):>6} {sum(times):>9.1f} {sum(times) / len(times):>8.2f}"
                for layer, times in self.per_layer.items()]
        head = [f"{'layer':<40} {'renders':>6} {'seconds':>9} {'s/image':>8}"] if rows else []
        tail = [f"renders done {self.done}, skipped {self.skipped} (already done), failed {len(self.failed)}; "
                f"{self.seconds:.1f} s on {len(self.workers)} worker process(es)"]
        return head + rows + [self.layout] * bool(self.layout) + tail + [f"failed: {f}" for f in self.failed]


def sweep(loaded: LoadedConfig, shard: str | None = None, backend: str | None = None,
          scheduler: str | None = None, out: Any = None, gpus: list[int] | None = None) -> Summary:
    """Run (or resume) the sweep a config describes; returns what happened. `gpus` overrides the config's."""
    model = loaded.config.load_model()
    with plan_and_client(loaded, model, parse_shard(shard), gpus, backend, scheduler) as (plan, client):
        return run_sweep(plan, model, client, out)


@contextmanager
def plan_and_client(loaded: LoadedConfig, model: Any, shard: tuple[int, int] | None, gpus: list[int] | None,
            backend: str | None, scheduler: str | None,
            examples_folder: str | None = None, map_folder: str | None = None,
            explain_folder: str | None = None) -> Iterator[tuple[RunPlan, Any]]:
    """The run's plan, resolved once against the devices that will render, with the dask client to render on
    (None for the local backend). For `backend` dask the cluster is connected first (a local one started without
    `scheduler`), its workers' devices decide the plan, and the client is closed on leaving the block."""
    if backend != "dask":
        yield resolve_plan(loaded, model, shard, gpus, examples_folder=examples_folder, map_folder=map_folder,
                           explain_folder=explain_folder), None
        return
    if gpus is not None:
        raise UserError("--gpus picks this machine's GPUs; on a dask cluster each worker renders on its first "
                        "visible GPU: start one worker per GPU (CUDA_VISIBLE_DEVICES=N dask worker ADDRESS)")
    client = _dask_client(scheduler)
    try:
        yield resolve_plan(loaded, model, shard, gpus, cluster=cluster_devices(client),
                           examples_folder=examples_folder, map_folder=map_folder,
                           explain_folder=explain_folder), client
    finally:
        client.close()


def run_sweep(plan: RunPlan, model: Any, client: Any = None, out: Any = None) -> Summary:
    """Run (or resume) the sweep of a resolved plan, on the dask `client` when the plan is a cluster's (see
    `plan_and_client`); returns what happened. `out` (progress and the device line) is the stderr of the moment
    of the call unless given."""
    if plan.layout.remote != (client is not None):
        raise ValueError("a dask cluster's plan runs with its client, and only such a plan does")
    out = sys.stderr if out is None else out
    folder = plan.folder
    with stop_on_write_errors(folder):
        folder.mkdir(parents=True, exist_ok=True)
        lock = take_lock(folder, plan.shard)
    try:
        with stop_on_write_errors(folder):
            return _sweep(plan, model, client, out)
    finally:
        lock.release()


def _sweep(plan: RunPlan, model: Any, client: Any, out: Any) -> Summary:
    began = time.perf_counter()
    todo = pending(plan)
    batches = make_batches(todo, plan.layout.batch_size(plan.settings.size ** 2))
    stamp = versions()
    prepare_run_folder(plan, stamp, sweep_stale=plan.shard is None)
    summary = Summary(skipped=len(plan.items) - len(todo), layout=plan.layout.describe())
    print(f"atlas: {summary.layout}", file=out)
    task = make_task(plan, stamp)
    with Manifest(plan.folder / manifest_name(plan.shard), create=True) as manifest, Progress(todo, out) as bars, \
            ThreadPoolExecutor(WRITE_THREADS) as writers, \
            outcomes(plan, model, batches, task, client) as finished:
        for outcome in finished:
            _record(outcome, plan.folder, manifest, summary, writers)
            bars.advance(outcome.batch.layer, len(outcome.batch.channels))
    summary.seconds = time.perf_counter() - began
    return summary


@contextmanager
def outcomes(plan: RunPlan, model: Any, batches: list[Batch], task: Task,
             client: Any) -> Iterator[Iterator[Outcome]]:
    """The batches' outcomes as they finish, from the plan's workers (or the dask cluster of `client`); leaving
    the block with an error cancels what is queued and stops the workers."""
    if not batches:
        yield iter(())
    elif client is not None:
        from atlas.model.source import read_graph_bytes

        finished = run_on_dask(client, batches, task, read_graph_bytes(model.source))
        try:
            yield finished
        finally:
            finished.close()
    elif plan.layout.in_process:
        adopt_model(model, plan.layout.workers[0].fit())
        yield (run_batch(task, batch) for batch in batches)
    else:
        from atlas.model.source import read_graph_bytes

        with LocalPool(plan.layout.workers, read_graph_bytes(model.source)) as pool:
            yield pool.run(batches, task)


def take_lock(folder: Path, shard: tuple[int, int] | None) -> Any:
    """The run folder's lock for this sweep: one per slice, so slices of one sweep may run at once, while a
    whole sweep excludes every other sweep on the folder."""
    from filelock import FileLock, Timeout

    name = LOCK_FILE if shard is None else f"{LOCK_FILE}.shard-{shard[0]}-of-{shard[1]}"
    others = sorted(folder.glob(f"{LOCK_FILE}*")) if shard is None else [folder / LOCK_FILE]
    lock = FileLock(str(folder / name))
    try:
        lock.acquire(timeout=0)
        for path in others:
            if path.name != name:
                probe = FileLock(str(path))
                probe.acquire(timeout=0)
                probe.release()
    except Timeout:
        lock.release()
        raise UserError(f"another atlas sweep is writing {folder}; wait for it to finish, or give this config "
                        "another name or output") from None
    return lock


def progress_off(out: Any) -> bool | None:
    """tqdm's `disable`: None shows bars only on a terminal."""
    return None if out in (sys.stderr, sys.stdout) else True


class Progress:
    """Two bars: all layers, and the layer whose batch finished last (counts, rate, ETA)."""

    def __init__(self, todo: list[WorkItem], out: Any) -> None:
        from tqdm import tqdm

        self.totals: dict[str, int] = defaultdict(int)
        for item in todo:
            self.totals[item.layer] += 1
        off = progress_off(out)
        self.overall = tqdm(total=len(todo), desc="all layers", unit="img", disable=off, file=out, position=0)
        self.layer_bar = tqdm(total=0, unit="img", disable=off, file=out, position=1, leave=False)
        self.layer: str | None = None

    def advance(self, layer: str, count: int) -> None:
        if layer != self.layer:
            self.layer = layer
            self.layer_bar.reset(total=self.totals[layer])
            self.layer_bar.set_description_str(layer)
        self.layer_bar.update(count)
        self.overall.update(count)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.layer_bar.close()
        self.overall.close()


def _record(outcome: Outcome, folder: Path, manifest: Manifest, summary: Summary, writers: Executor) -> None:
    """Write a finished batch's files (several at once, each folder synced once), then record the batch in one
    transaction; or note its failure."""
    layer = outcome.batch.layer
    summary.workers.add(outcome.worker)
    if outcome.error:
        summary.failed.append(f"{outcome.batch.mode} {layer} channels {list(outcome.batch.channels)}: "
                              f"{outcome.error}")
        return
    paths = [folder / path for path in outcome.files]
    list(writers.map(write_file, paths, outcome.files.values()))  # raises the first error: nothing recorded
    sync_folders(path.parent for path in paths)
    manifest.add(outcome.renders)
    summary.done += len(outcome.renders)
    summary.per_layer[layer].extend(r.seconds for r in outcome.renders)


def _dask_client(scheduler: str | None) -> Any:
    """A client of a dask.distributed scheduler (or of a local cluster started here)."""
    try:
        from dask.distributed import Client
    except ImportError:
        raise UserError("the dask backend needs dask.distributed: pip install -e \".[dask]\"") from None
    try:
        client = Client(scheduler, timeout="10s") if scheduler else Client(processes=True, dashboard_address=None)
    except (OSError, TimeoutError) as exc:
        raise UserError(f"cannot reach the dask scheduler {scheduler} ({exc}); start one with `dask scheduler` "
                        "or check the address") from None
    client.run(import_tensorflow)  # before any task: workers import TensorFlow quietly (unless verbose)
    return client
