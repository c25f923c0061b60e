"""The worker side of a sweep: what runs in a worker process (local or on a dask cluster), and the local pool.

A worker gets plain data: a `Task` (the settings, seed, hashes, formats and the base photos' bytes), a `Batch`,
and once per process the model's GraphDef bytes. It renders and returns an `Outcome`: the records and the
encoded image files (PNG master, web, thumbnail) as bytes. It never writes a file and is never told where the
run folder is: the sweep's parent process writes every file and the manifest. So workers need atlas installed
and nothing else: no shared disk, no model download.

This module imports neither TensorFlow nor anything that does at import time, so a spawned worker process is
pinned to its GPU (`init_worker` sets CUDA_VISIBLE_DEVICES) before TensorFlow starts in it.
"""

from __future__ import annotations

import os
import platform
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

from atlas.model.selection import WHOLE_LAYER
from atlas.run.manifest import CLASS_LAYER, Render, extra_paths, image_paths

if TYPE_CHECKING:
    from atlas.render.devices import Device
    from atlas.render.settings import BatchFit, RenderSettings
    from atlas.run.layout import Worker
    from atlas.run.plan import Batch

IN_FLIGHT = 2  # batches queued per worker, so none waits while the parent writes
WORKERS_TIMEOUT = 30  # seconds a sweep waits for the first dask worker to join the scheduler


@dataclass(frozen=True)
class Task:
    """What every worker needs besides its batch and the graph: plain, picklable data, no paths."""

    model_sha256: str  # the graph bytes a worker gets must hash to this
    preprocess: dict[str, Any]  # how pixels become the model's input (atlas.model.preprocess, as to_dict gives it)
    settings: RenderSettings
    seed: int
    photos: dict[str, bytes]  # mode id -> the base photo file's bytes
    hashes: dict[str, str]  # mode id -> settings hash
    formats: dict[str, dict[str, Any]]
    versions: str
    mode_settings: dict[str, RenderSettings] = field(default_factory=dict)  # mode id -> settings, where not
    # `settings` (another method, facets)
    work: float = 1.0  # the model's work per image over GoogLeNet's (`Model.work`): automatic batches divide by it
    logits: str | None = None  # the node of the classifier's logits (class visualisations: batches of CLASS_LAYER)
    class_hashes: dict[str, str] = field(default_factory=dict)  # mode id -> settings hash of its class renders

    def hash_of(self, mode: str, layer: str) -> str:
        """The settings hash of a render of `layer` in `mode` (as `RunPlan.hash_of`)."""
        from atlas.run.plan import class_or_mode_hash

        return class_or_mode_hash(self.hashes, self.class_hashes, mode, layer)


@dataclass
class Outcome:
    """A finished batch: its records and files (path relative to the run folder -> bytes), or its error."""

    batch: Batch
    renders: list[Render] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    error: str | None = None
    worker: str = field(default_factory=lambda: worker_name())  # who rendered it


def worker_name() -> str:
    """`host:pid`, with the GPU the process is pinned to: `host:pid gpu 2`."""
    gpu = _pinned_gpu()
    return f"{platform.node()}:{os.getpid()}" + (f" gpu {gpu}" if gpu else "")


def device_name() -> str:
    """What this process renders on, as the manifest records it: `host gpu 2`, or `host cpu` (a dask worker that
    is not pinned renders on the device `_fit` found for it)."""
    found = _STATE.get("device")
    gpu = str(found.index) if found is not None and found.is_gpu else _pinned_gpu()
    return f"{platform.node()} " + (f"gpu {gpu}" if gpu else "cpu")


def _pinned_gpu() -> str:
    """The GPU id(s) CUDA_VISIBLE_DEVICES pins this process to, or '' (none, or hidden with -1)."""
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return "" if gpu == "-1" else gpu


# ----------------------------------------------------------------------------------------------- in a worker

_STATE: dict[str, Any] = {}  # this process's graph bytes, model, decoded photos, batch fit, TensorFlow set-up


def init_worker(environment: dict[str, str], threads: int | None, graph: bytes | None,
                fit: tuple[int, int | None, int | None], parent: int | None = None, deathsig: bool = False) -> None:
    """A local worker process's start: tie its life to its `parent` process (see atlas/run/lifeline.py), pin it
    (e.g. CUDA_VISIBLE_DEVICES) before TensorFlow starts, then import TensorFlow quietly; keep the graph bytes and
    its batch sizes (`BatchFit`'s images, area, memory: plain values, so that unpickling these arguments imports no
    TensorFlow). `deathsig`: the parent's main thread started this process (so Linux may kill it with that
    thread)."""
    from atlas.console import import_tensorflow
    from atlas.run.lifeline import exit_with_parent

    if parent is not None:
        exit_with_parent(parent, deathsig)
    os.environ.update(environment)
    import_tensorflow()
    _STATE.update(threads=threads, graph=graph, fit_args=fit)


def adopt_model(model: Any, fit: BatchFit) -> None:
    """Render in this very process with a model it already has (a sweep of one CPU worker)."""
    _STATE.update(model=model, sha=_model_key(model.sha256, model.preprocess.to_dict()), fit=fit, configured=True)


def _model_key(sha256: str, preprocess: dict[str, Any]) -> tuple[str, str]:
    """Which model a process holds: its graph's sha256 and its preprocessing."""
    return sha256, repr(sorted(preprocess.items()))


def run_batch(task: Task, batch: Batch, graph: bytes | None = None) -> Outcome:
    """Render one batch into encoded files and records; errors come back as data. `graph`: the model's
    GraphDef bytes (a dask worker gets them with every call, held once in its memory; a local worker got them
    when it started)."""
    try:
        renders, files = render_batch(task, batch, _model(task, graph))
        return Outcome(batch, renders, files)
    except Exception as exc:  # reported in the summary; the sweep goes on with other batches
        return Outcome(batch, error=f"{type(exc).__name__}: {exc}")


def render_batch(task: Task, batch: Batch, model: Any) -> tuple[list[Render], dict[str, bytes]]:
    """Render a batch's channels (or classes: CLASS_LAYER, on the logits with the class objective) and encode each
    result's three images, with its mask and raw pixels beside when it has them."""
    from atlas.images import encode
    from atlas.render.classes import render_classes
    from atlas.render.loop import render_channels
    from atlas.render.settings import with_overrides

    photo = _photo(task, batch.mode) if batch.mode in task.photos else None
    settings = task.mode_settings.get(batch.mode, task.settings)
    if batch.channels == (WHOLE_LAYER,):
        settings = with_overrides(settings, objective="layer")
    if batch.layer == CLASS_LAYER:  # the model's logits are the ones the plan resolved (`_model`: task.logits)
        results = render_classes(model, list(batch.channels), photo, settings, task.seed, fit=_fit(task))
    else:
        results = render_channels(model, batch.layer, list(batch.channels), photo, settings, task.seed,
                                  fit=_fit(task))
    web, thumb = task.formats["web"], task.formats["thumb"]
    renders, files = [], {}
    for result in results:
        paths = image_paths(batch.mode, batch.layer, result.channel, web["format"], thumb["format"], result.facet)
        files[paths[0]] = encode(result.image, "png")
        files[paths[1]] = encode(result.image, web["format"], web["size"], web["quality"])
        files[paths[2]] = encode(result.image, thumb["format"], thumb["size"], thumb["quality"])
        kept = dict(zip(("mask", "raw"), extra_paths(batch.mode, batch.layer, result.channel, result.facet)))
        for name, pixels in (("mask", result.mask), ("raw", result.raw)):
            if pixels is None:
                kept[name] = ""
            else:
                files[kept[name]] = encode(pixels, "png")
        renders.append(Render(layer=batch.layer, channel=result.channel, mode=batch.mode, seed=task.seed,
                              settings_hash=task.hash_of(batch.mode, batch.layer), start=result.start,
                              end=result.end, lift=result.lift, rank=result.rank, specific=result.specific,
                              seconds=result.seconds, image=paths[0], web=paths[1], thumb=paths[2],
                              versions=task.versions, created=time.time(), facet=result.facet,
                              batch=result.batch, device=device_name(), **kept))
    return renders, files


def _model(task: Task, graph: bytes | None) -> Any:
    """The model, built once per process from the graph bytes the parent sent, TensorFlow set up first."""
    key = _model_key(task.model_sha256, task.preprocess)
    if _STATE.get("sha") != key:
        from atlas.model.graph import load_model_bytes
        from atlas.render.devices import configure_tensorflow

        if not _STATE.get("configured"):
            configure_tensorflow(_STATE.get("threads"))
            _STATE["configured"] = True
        data = graph if graph is not None else _STATE.get("graph")
        if data is None:
            raise RuntimeError("a worker got no model graph from the sweep")
        from atlas.model.preprocess import parse_preprocess

        preprocess = parse_preprocess(task.preprocess) if task.preprocess else None
        from atlas.model.source import ModelSource

        # the logits node the plan resolved (a config's `logits:` included): class renders climb it
        source = ModelSource(spec=f"graph sha256:{task.model_sha256[:12]}", pb_path=None, logits=task.logits)
        model = load_model_bytes(data, source, preprocess)
        if model.sha256 != task.model_sha256:
            raise RuntimeError(f"a worker got graph bytes of sha256 {model.sha256}, not the sweep's model")
        _STATE.update(model=model, sha=key)
    return _STATE["model"]


def _photo(task: Task, mode: str) -> Any:
    """A base photo, decoded once per process (every batch of its mode starts from it)."""
    from atlas.images import decode_photo

    photos = _STATE.setdefault("photos", {})
    key = (mode, task.hashes[mode])  # the settings hash covers the photo's bytes
    if key not in photos:
        photos[key] = decode_photo(task.photos[mode], mode)
    return photos[key]


def _fit(task: Task) -> BatchFit:
    """This process's batch sizes: given by the sweep (local workers), else from its own first device."""
    if _STATE.get("fit") is None:
        from atlas.render.devices import discover_devices
        from atlas.render.settings import BatchFit, auto_batch_size

        if _STATE.get("fit_args"):
            _STATE["fit"] = BatchFit(*_STATE["fit_args"])
            return _STATE["fit"]
        device = _STATE["device"] = rendering_device(discover_devices)
        size = task.settings.batch_size
        _STATE["fit"] = BatchFit(size, None) if size else \
            BatchFit(auto_batch_size(224 * 224, device, task.work), memory=device.memory if device.is_gpu else None)
    return _STATE["fit"]


def rendering_device(discover: Callable[[], list[Device]]) -> Device:
    """What a worker process that is not pinned by the sweep (a dask worker) renders on: the first device
    `discover` lists, i.e. its first visible GPU, else its CPU (TensorFlow's default device)."""
    return discover()[0]


# ----------------------------------------------------------------------------------------------- the local pool


class LayerQueue:
    """Batches in plan order, handed out so that each worker keeps to the layers it started: a layer's functions
    are traced and compiled once per process that renders it (on a narrow network that costs as much as the
    rendering), so every mode of a layer goes to one process. A worker whose layers are done starts the next
    untouched layer, and when none is left helps with the layer that has the most batches left."""

    def __init__(self, batches: list[Batch]) -> None:
        self.layers: dict[str, deque[Batch]] = {}  # in plan order
        for batch in batches:
            self.layers.setdefault(batch.layer, deque()).append(batch)
        self.owner: dict[str, int] = {}

    def __bool__(self) -> bool:
        return any(self.layers.values())

    def take(self, slot: int) -> Batch:
        """The next batch for the worker in `slot` (the queue must not be empty)."""
        left = [layer for layer, queue in self.layers.items() if queue]
        layer = next((name for name in left if self.owner.get(name) == slot), None) \
            or next((name for name in left if name not in self.owner), None) \
            or max(left, key=lambda name: len(self.layers[name]))
        self.owner.setdefault(layer, slot)
        return self.layers[layer].popleft()


class LocalPool:
    """One spawned single-process executor per worker of the layout, each started pinned to its device
    (loky cannot give each process its own environment), and ending by itself within about a second when this
    process dies, however it is killed (atlas/run/lifeline.py). `stop()` cancels queued work and ends the
    processes."""

    def __init__(self, workers: list[Worker], graph: bytes) -> None:
        self.workers, self.graph = workers, graph
        self.executors = [self._start(w) for w in workers]

    def _start(self, worker: Worker) -> ProcessPoolExecutor:
        """A worker's executor, its process started now, by this thread (so whether Linux's parent-death signal
        is safe is known: only when this is the main thread, which lives as long as the process)."""
        import multiprocessing
        import threading

        main = threading.current_thread() is threading.main_thread()
        executor = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=init_worker,
                                       initargs=(worker.environment, worker.threads, self.graph,
                                                 (worker.images, worker.area, worker.fit().memory), os.getpid(),
                                                 main))
        executor.submit(os.getpid)  # starts the process in this thread (Python 3.9+ spawns on submit)
        return executor

    def _submit(self, slot: int, task: Task, batch: Batch) -> Future:
        try:
            return self.executors[slot].submit(run_batch, task, batch)
        except BrokenProcessPool:  # its process died (e.g. killed for memory): start a fresh one
            self.executors[slot] = self._start(self.workers[slot])
            return self.executors[slot].submit(run_batch, task, batch)

    def run(self, batches: list[Batch], task: Task) -> Iterator[Outcome]:
        """Outcomes as batches finish; each worker is kept IN_FLIGHT batches ahead, on layers of its own."""
        queue, running = LayerQueue(batches), {}
        for _ in range(IN_FLIGHT):
            for slot in range(len(self.executors)):
                if queue:
                    batch = queue.take(slot)
                    running[self._submit(slot, task, batch)] = (slot, batch)
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                slot, batch = running.pop(future)
                if queue:
                    nxt = queue.take(slot)
                    running[self._submit(slot, task, nxt)] = (slot, nxt)
                try:
                    yield future.result()
                except BrokenProcessPool as exc:
                    yield Outcome(batch, error=f"the worker process died ({exc})")

    def stop(self) -> None:
        """Cancel queued batches and end the worker processes now (a batch being rendered is dropped)."""
        for executor in self.executors:
            processes = list(getattr(executor, "_processes", {}).values())  # no public way before Python 3.14
            executor.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.terminate()
            for process in processes:
                process.join(timeout=10)

    def close(self) -> None:
        for executor in self.executors:
            executor.shutdown(wait=True)

    def __enter__(self) -> LocalPool:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        self.stop() if kind is not None else self.close()


def cluster_devices(client: Any, discover: Callable[[], list[Device]] | None = None) -> list[Device]:
    """The device each worker process of a dask cluster renders on, in the order of the workers' addresses, asked
    of the workers themselves (`discover`, default: `atlas.render.devices.discover_devices` as it is at the call,
    runs in every worker process). Waits up to WORKERS_TIMEOUT seconds for a first worker to join."""
    from atlas.errors import UserError
    from atlas.render import devices

    try:
        client.wait_for_workers(1, timeout=WORKERS_TIMEOUT)
    except TimeoutError:
        raise UserError(f"no dask worker joined the scheduler {client.scheduler.address} in {WORKERS_TIMEOUT} s; "
                        "start workers (`dask worker ADDRESS`) and run again") from None
    found = client.run(rendering_device, discover or devices.discover_devices)
    return [found[address] for address in sorted(found)]


def run_on_dask(client: Any, batches: list[Batch], task: Task, graph: bytes) -> Iterator[Outcome]:
    """Outcomes of batches run on a dask cluster: the graph bytes and the task go to every worker once
    (scattered), then each batch is a small call; at most IN_FLIGHT batches per worker thread are queued, and
    leaving early (an error in the parent) cancels the rest."""
    from dask.distributed import as_completed

    graph_ref = client.scatter(graph, broadcast=True)
    task_ref = client.scatter(task, broadcast=True)
    window = IN_FLIGHT * max(1, sum(client.nthreads().values()))
    queue = deque(batches)
    running = as_completed([client.submit(run_batch, task_ref, queue.popleft(), graph_ref, pure=False)
                            for _ in range(min(window, len(queue)))])
    try:
        for future in running:
            if queue:
                running.add(client.submit(run_batch, task_ref, queue.popleft(), graph_ref, pure=False))
            yield future.result()
    finally:
        client.cancel(list(running.futures))
