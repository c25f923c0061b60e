"""Which worker processes a sweep starts, on which devices, with which batch size and precision.

`resolve_layout` turns the discovered devices (`atlas.render.devices.discover_devices`) and the config's
`workers`, `gpus`, `batch_size` and `precision` into a `Layout`, once, as part of the run's plan. With GPUs:
one worker per GPU (`workers: auto`), each pinned to its card, batches from the card's memory. Without: the
CPU's cores split into processes of up to two threads (on 2 cores, 2 processes of 1 thread rendered 1.13x
as fast as 1 process of 2: benchmarks/sweep_workers.py). On a dask cluster, `resolve_cluster_layout` does the same
from what each worker process reported it renders on (`atlas.run.workers.cluster_devices`).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from atlas.errors import UserError
from atlas.render.devices import Device, gpu_environment
from atlas.render.settings import BatchFit, auto_batch_size, choose_precision


@dataclass(frozen=True)
class Worker:
    """One worker process: its device, TensorFlow threads and first guess of images per pass."""

    device: Device
    threads: int | None  # None: TensorFlow's default
    images: int  # images per pass ...
    area: int | None  # ... of this many pixels each (scaled to other sizes); None: at every size (config)

    @property
    def environment(self) -> dict[str, str]:
        """Set in the worker process before TensorFlow starts: its one GPU, or none."""
        return gpu_environment(self.device)

    def fit(self) -> BatchFit:
        """The worker's batch sizes, measured against its GPU's memory as it renders."""
        return BatchFit(self.images, self.area, self.device.memory if self.device.is_gpu else None)


@dataclass(frozen=True)
class Layout:
    """The workers a sweep runs and the precision they render in, with the reason for it."""

    devices: list[Device]  # every device found
    workers: list[Worker]  # the processes to start; one `in_process` worker renders in the sweep's own process
    in_process: bool
    precision: str
    why: str  # why this precision
    remote: bool = False  # a dask cluster renders: `workers` are its worker processes, one device each
    work: float = 1.0  # the model's work per image over GoogLeNet's (`Model.work`), which the batch sizes divide by

    def batch_size(self, pixels: int) -> int:
        """Images per batch handed to a worker: the largest first guess of any worker."""
        return max(w.fit().size("", pixels) for w in self.workers)

    @property
    def gpus(self) -> list[Device]:
        return [w.device for w in self.workers if w.device.is_gpu]

    def describe(self) -> str:
        """One line in atlas's words, e.g. `no GPU found: rendering on 2 CPU cores in 2 processes of 1
        thread, bfloat16 (the CPU has AVX512_BF16)`."""
        precision = f"{self.precision} ({self.why})"
        if self.remote:
            return self._describe_cluster(precision)
        used = sorted({w.device for w in self.workers}, key=lambda d: d.index)
        if used and used[0].is_gpu:
            return (f"{_count(len(used), 'GPU')} ({_kinds(used)}): {_count(len(self.workers), 'worker')} "
                    f"(ids {', '.join(str(d.index) for d in used)}), {precision}")
        found = "no GPU found" if not any(d.is_gpu for d in self.devices) else "GPUs not used"
        cores = next(d.cores for d in self.devices if not d.is_gpu)
        where = "this process" if self.in_process else \
            f"{len(self.workers)} processes of {_count(self.workers[0].threads or 1, 'thread')} each"
        return f"{found}: rendering on {cores} CPU cores in {where}, {precision}"

    def _describe_cluster(self, precision: str) -> str:
        """`dask cluster: 4 workers, 4 GPUs (4x A100 40 GB, capability 8.0): bfloat16 (compute capability >= 8.0),
        batches of 170 images of 224 px`."""
        found = sorted((w.device for w in self.workers), key=lambda d: (not d.is_gpu, d.name, d.memory))
        gpus = sum(d.is_gpu for d in found)
        what = ", ".join(_count(n, noun) for n, noun in ((gpus, "GPU"), (len(found) - gpus, "CPU")) if n)
        first = self.workers[0]
        batches = f"batches of {first.images} images" + (f" of {math.isqrt(first.area)} px" if first.area else "")
        return f"dask cluster: {_count(len(found), 'worker')}, {what} ({_kinds(found)}): {precision}, {batches}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _kinds(found: list[Device]) -> str:
    """`2x A100 40 GB, capability 8.0, 2 CPU cores`: each kind of device with how many there are."""
    return ", ".join(f"{n}x {name}" if n > 1 else name for name, n in Counter(d.short() for d in found).items())


def resolve_layout(devices: list[Device], workers: int | str, gpus: list[int] | None, batch_size: int | None,
                   precision: str, work: float = 1.0) -> Layout:
    """The workers for these devices and settings; `gpus` picks GPUs by id (None: all, []: none); automatic batch
    sizes are divided by the model's `work` per image (`auto_batch_size`)."""
    chosen = pick_gpus(devices, gpus)
    cpu = next(d for d in devices if not d.is_gpu)
    if precision == "auto":
        precision, why = choose_precision(chosen + [cpu])
    else:
        why = "set in the config"
    area = None if batch_size else 224 * 224
    if chosen:
        count = len(chosen) if workers == "auto" else int(workers)
        slots = [chosen[i % len(chosen)] for i in range(count)]
        per_gpu = Counter(d.index for d in slots)
        made = [Worker(d, None, batch_size or max(1, auto_batch_size(224 * 224, d, work) // per_gpu[d.index]), area)
                for d in slots]
        return Layout(devices, made, False, precision, why, work=work)
    count, threads = cpu_workers(workers, cpu.cores)
    first = batch_size or auto_batch_size(224 * 224, cpu, work)
    made = [Worker(cpu, threads, first, area) for _ in range(count)]
    return Layout(devices, made, count == 1, precision, why, work=work)


def resolve_cluster_layout(found: list[Device], batch_size: int | None, precision: str,
                           work: float = 1.0) -> Layout:
    """The layout of a dask cluster whose worker processes render on `found` (one device each, as they
    reported): `auto` precision is bfloat16 only when every worker renders on a GPU of compute capability 8.0 or
    more; one batching serves every worker, so batches are the smallest worker device's automatic size (an
    explicit `batch_size` wins), divided by the model's `work` per image as locally."""
    if precision != "auto":
        why = "set in the config"
    elif all(d.is_gpu for d in found):
        precision, why = choose_precision(found)
    else:
        precision, why = "float32", "a worker renders on a CPU"
    images = batch_size or min(auto_batch_size(224 * 224, d, work) for d in found)
    made = [Worker(d, None, images, None if batch_size else 224 * 224) for d in found]
    return Layout(found, made, False, precision, why, remote=True, work=work)


def cpu_workers(requested: int | str, cores: int) -> tuple[int, int | None]:
    """(processes, TensorFlow threads each) on a CPU: `auto` splits the cores into processes of up to two
    threads; an explicit N splits them N ways; one process keeps TensorFlow's default."""
    count = (cores if cores < 4 else cores // 2) if requested == "auto" else int(requested)
    count = max(1, min(count, cores))
    return count, (None if count == 1 else max(1, cores // count))


def pick_gpus(devices: list[Device], ids: list[int] | None) -> list[Device]:
    """The GPUs `ids` names (all when None); an id that is not a visible GPU is a one-line error."""
    gpus = [d for d in devices if d.is_gpu]
    if ids is None:
        return gpus
    by_index = {g.index: g for g in gpus}
    unknown = [i for i in ids if i not in by_index]
    if unknown:
        have = f"this machine's GPUs are {', '.join(map(str, by_index))}" if gpus else "no GPU was found here"
        raise UserError(f"gpus: no GPU {', '.join(map(str, unknown))} ({have}; see nvidia-smi); "
                        "pick from those, or none")
    return [by_index[i] for i in dict.fromkeys(ids)]


def parse_gpus(text: str | None) -> list[int] | None:
    """`--gpus 0,2` or `--gpus none` (CPU only); None when not given."""
    if text is None:
        return None
    if text.strip().lower() == "none":
        return []
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise UserError(f"--gpus {text}: write GPU ids as nvidia-smi numbers them, e.g. 0,2, or none") from None
