"""The sweep: every selected layer x channel x mode, rendered in batches by joblib workers, resumable.

The parent process plans the work, holds the run folder's lock, and is the only writer of the manifest.
Workers get plain data (a `Task` and a `Batch`), render, write their images atomically and return
`Render` records; the parent records each batch in one transaction as it arrives. A render is skipped
when its record has the same settings hash and its three image files exist, so a re-run after a crash or
a SIGKILL finishes exactly the missing work.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from atlas.atomic import atomic_path, remove_stale_parts
from atlas.console import import_tensorflow
from atlas.errors import UserError
from atlas.model.selection import WHOLE_LAYER
from atlas.render.loop import RenderSettings
from atlas.run.config import LoadedConfig
from atlas.run.manifest import Manifest, Render, image_paths, manifest_name, write_run_info
from atlas.run.plan import Batch, RunPlan, WorkItem, make_batches, parse_shard, pending, resolve_plan

LOCK_FILE = ".sweep.lock"


@dataclass(frozen=True)
class Task:
    """What every worker needs besides its batch: plain, picklable data."""

    model: str
    run_folder: str
    settings: RenderSettings
    seed: int
    photos: dict[str, str]  # mode id -> photo file
    hashes: dict[str, str]  # mode id -> settings hash
    formats: dict[str, dict[str, Any]]
    versions: str
    threads: int | None  # TensorFlow threads per worker process; None: leave TensorFlow's default


@dataclass
class Outcome:
    """A finished batch: its records, or the error that stopped it."""

    batch: Batch
    renders: list[Render] = field(default_factory=list)
    error: str | None = None
    worker: str = field(default_factory=lambda: f"{platform.node()}:{os.getpid()}")  # who rendered it


# ----------------------------------------------------------------------------------------------- workers

_WORKER: dict[str, Any] = {}


def run_batch(task: Task, batch: Batch) -> Outcome:
    """Render one batch and write its images (in a worker process); errors come back as data."""
    try:
        return Outcome(batch, _render_and_write(task, batch))
    except Exception as exc:  # reported in the summary; the sweep goes on with other batches
        return Outcome(batch, error=f"{type(exc).__name__}: {exc}")


def _render_and_write(task: Task, batch: Batch) -> list[Render]:
    from atlas.images import save_image
    from atlas.render.loop import render_channels, with_overrides

    model = _worker_model(task)
    photo = _worker_photo(task.photos[batch.mode]) if batch.mode in task.photos else None
    settings = task.settings
    if batch.channels == (WHOLE_LAYER,):
        settings = with_overrides(settings, objective="layer")
    results = render_channels(model, batch.layer, list(batch.channels), photo, settings, task.seed)
    folder, web, thumb = Path(task.run_folder), task.formats["web"], task.formats["thumb"]
    renders = []
    for result in results:
        master_path, web_path, thumb_path = image_paths(batch.mode, batch.layer, result.channel, web["format"],
                                                        thumb["format"])
        save_image(folder / master_path, result.image)
        save_image(folder / web_path, result.image, web["size"], web["quality"])
        save_image(folder / thumb_path, result.image, thumb["size"], thumb["quality"])
        renders.append(Render(layer=batch.layer, channel=result.channel, mode=batch.mode, seed=task.seed,
                              settings_hash=task.hashes[batch.mode], start=result.start, end=result.end,
                              lift=result.lift, rank=result.rank, specific=result.specific,
                              seconds=result.seconds, image=master_path, web=web_path, thumb=thumb_path,
                              versions=task.versions, created=time.time()))
    return renders


def _worker_model(task: Task) -> Any:
    """The model, loaded once per worker process, with TensorFlow's threads set before first use."""
    if _WORKER.get("spec") != task.model:
        _keep_worker_alive()
        if task.threads and "threads" not in _WORKER:
            import tensorflow as tf

            try:
                tf.config.threading.set_intra_op_parallelism_threads(task.threads)
                tf.config.threading.set_inter_op_parallelism_threads(task.threads)
            except RuntimeError:  # TensorFlow already running in this process: keep its settings
                pass
            _WORKER["threads"] = task.threads
        from atlas.model.graph import load_model

        _WORKER.update(spec=task.model, model=load_model(task.model))
    return _WORKER["model"]


def _worker_photo(path: str) -> Any:
    """A base photo, decoded once per worker process (every batch of its mode starts from it)."""
    from atlas.images import load_photo

    photos = _WORKER.setdefault("photos", {})
    if path not in photos:
        photos[path] = load_photo(path)
    return photos[path]


def _keep_worker_alive() -> None:
    """loky restarts a worker whose memory grew by 300 MB since its first task, taking it for a leak; a
    worker's memory grows by design here (one compiled function per layer, about 1.2 GB for all 59 at full
    width, see benchmarks/layer_memory.py), and a restart would reload TensorFlow and the model. Raise the
    threshold in this worker process only."""
    try:
        from joblib.externals.loky import process_executor
    except ImportError:
        return
    process_executor._MAX_MEMORY_LEAK_SIZE = max(process_executor._MAX_MEMORY_LEAK_SIZE, 8 * 10 ** 9)


# ----------------------------------------------------------------------------------------------- the sweep


def versions() -> str:
    """Software versions recorded with every render."""
    import numpy
    import PIL
    import tensorflow as tf

    from atlas import __version__

    return json.dumps({"atlas": __version__, "tensorflow": tf.__version__, "numpy": numpy.__version__,
                       "pillow": PIL.__version__, "python": platform.python_version()}, sort_keys=True)


def choose_workers(requested: int | str) -> tuple[int, int | None]:
    """(worker processes, TensorFlow threads each). On a GPU: one process, large batches. On a CPU, `auto`
    splits the cores into processes of up to two threads each (on 2 cores, 2 processes of 1 thread rendered
    1.13x as fast as 1 process of 2: benchmarks/sweep_workers.py); an explicit N splits them N ways."""
    import tensorflow as tf

    cores = os.cpu_count() or 1
    if tf.config.list_physical_devices("GPU"):
        return 1, None
    workers = (cores if cores < 4 else cores // 2) if requested == "auto" else int(requested)
    workers = max(1, min(workers, cores))
    return workers, (None if workers == 1 else max(1, cores // workers))


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
    write_run_info(folder, plan.name, {"spec": plan.model_spec, "sha256": plan.model_sha256}, plan.catalogue,
                   plan.modes, plan.run_settings(), versions=json.loads(versions_json))


@dataclass
class Summary:
    """What a sweep did."""

    done: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    per_layer: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    workers: set[str] = field(default_factory=set)  # host:pid of every process that rendered

    def lines(self) -> list[str]:
        rows = [f"{layer:<40} {len(times):>6} {sum(times):>9.1f} {sum(times) / len(times):>8.2f}"
                for layer, times in self.per_layer.items()]
        head = [f"{'layer':<40} {'renders':>6} {'seconds':>9} {'s/image':>8}"] if rows else []
        tail = [f"renders done {self.done}, skipped {self.skipped} (already done), failed {len(self.failed)}; "
                f"{self.seconds:.1f} s on {len(self.workers)} worker process(es)"]
        return head + rows + tail + [f"failed: {f}" for f in self.failed]


def execute(batches: list[Batch], task: Task, workers: int, backend: str | None = None) -> Iterator[Outcome]:
    """Run batches with joblib and yield outcomes as they finish."""
    import joblib

    if not batches:
        return
    n_jobs = workers if backend is None else -1
    backend = backend or ("sequential" if workers == 1 else "loky")
    # each loky worker imports TensorFlow (quietly, unless verbose) before it unpickles a task
    start = {"initializer": import_tensorflow} if backend == "loky" else {}
    with joblib.parallel_config(backend=backend, n_jobs=n_jobs, **start):
        parallel = joblib.Parallel(return_as="generator_unordered", batch_size=1, pre_dispatch="2*n_jobs")
        yield from parallel(joblib.delayed(run_batch)(task, batch) for batch in batches)


def sweep(loaded: LoadedConfig, shard: str | None = None, backend: str | None = None,
          scheduler: str | None = None, out: Any = sys.stderr) -> Summary:
    """Run (or resume) the sweep a config describes; returns what happened."""
    from atlas.model.graph import load_model
    from atlas.render.loop import auto_batch_size

    model = load_model(loaded.config.model)
    plan = resolve_plan(loaded, model, parse_shard(shard))  # config errors before anything is created
    folder = plan.folder
    folder.mkdir(parents=True, exist_ok=True)
    lock = take_lock(folder, plan.shard)
    client = None
    try:
        began = time.perf_counter()
        todo = pending(plan)
        batches = make_batches(todo, plan.batch_size or auto_batch_size(plan.settings.size ** 2))
        stamp = versions()
        prepare_run_folder(plan, stamp, sweep_stale=plan.shard is None)
        summary = Summary(skipped=len(plan.items) - len(todo))
        workers, threads = choose_workers(plan.workers)
        client = _dask_client(scheduler) if backend == "dask" else None
        task = Task(model=plan.model_spec, run_folder=str(folder), settings=plan.settings, seed=plan.seed,
                    photos={mode: str(path) for mode, path in plan.photos.items()}, hashes=plan.hashes,
                    formats=plan.formats, versions=stamp, threads=threads)
        with Manifest(folder / manifest_name(plan.shard), create=True) as manifest, Progress(todo, out) as bars:
            for outcome in execute(batches, task, workers, backend):
                _record(outcome, manifest, summary)
                bars.advance(outcome.batch.layer, len(outcome.batch.channels))
        summary.seconds = time.perf_counter() - began
        return summary
    finally:
        if client is not None:
            client.close()
        lock.release()


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


def _record(outcome: Outcome, manifest: Manifest, summary: Summary) -> None:
    """Record a finished batch in one transaction, or note its failure."""
    layer = outcome.batch.layer
    summary.workers.add(outcome.worker)
    if outcome.error:
        summary.failed.append(f"{outcome.batch.mode} {layer} channels {list(outcome.batch.channels)}: "
                              f"{outcome.error}")
        return
    manifest.add(outcome.renders)
    summary.done += len(outcome.renders)
    summary.per_layer[layer].extend(r.seconds for r in outcome.renders)


def _dask_client(scheduler: str | None) -> Any:
    """Connect joblib's dask backend to a dask.distributed scheduler (or start a local cluster)."""
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
