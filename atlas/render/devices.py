"""What this machine renders on: one device-discovery function, and the TensorFlow set-up of a worker on a device.

`discover_devices()` is the only place atlas asks what hardware there is; tests replace it with fake lists.
It asks `nvidia-smi --query-gpu`, not TensorFlow: that reads the driver without creating a CUDA context, so
discovery in the sweep's parent process neither takes GPU memory nor initialises CUDA, and every worker
process can still be pinned to its own GPU (CUDA_VISIBLE_DEVICES) before TensorFlow starts in it. No
nvidia-smi, or one that fails, means no GPU: the same machines TensorFlow's CUDA wheels cannot use either.
The CPU is always listed last.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass

GIB = 1024 ** 3
GPU_QUERY = "index,name,memory.total,compute_cap"


@dataclass(frozen=True)
class Device:
    """One device atlas can render on."""

    kind: str  # "gpu" or "cpu"
    index: int  # the GPU's id as nvidia-smi and CUDA_VISIBLE_DEVICES number it; 0 for the CPU
    name: str
    memory: int  # bytes: the GPU's memory, or the machine's RAM for the CPU
    capability: tuple[int, int] | None = None  # CUDA compute capability (GPU)
    cores: int = 0  # logical cores (CPU)

    @property
    def is_gpu(self) -> bool:
        return self.kind == "gpu"

    def short(self) -> str:
        """`A100-SXM4-80GB 80 GB, capability 8.0` or `2 CPU cores`."""
        if not self.is_gpu:
            return f"{self.cores} CPU cores"
        cap = f", capability {self.capability[0]}.{self.capability[1]}" if self.capability else ""
        return f"{self.name} {self.memory / GIB:.0f} GB{cap}"


def discover_devices() -> list[Device]:
    """The visible GPUs (per nvidia-smi and CUDA_VISIBLE_DEVICES), then the CPU."""
    return gpus_from_nvidia_smi() + [cpu_device()]


def cpu_device() -> Device:
    """This machine's CPU: its logical cores and RAM."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 0
    return Device(kind="cpu", index=0, name="CPU", memory=memory, cores=os.cpu_count() or 1)


def gpus_from_nvidia_smi() -> list[Device]:
    """GPUs as `nvidia-smi --query-gpu` lists them, limited to CUDA_VISIBLE_DEVICES when that lists ids."""
    return visible(parse_gpu_csv(_nvidia_smi()), os.environ.get("CUDA_VISIBLE_DEVICES"))


@functools.lru_cache(maxsize=1)
def _nvidia_smi() -> str:
    """nvidia-smi's CSV of every GPU (asked once per process); empty without nvidia-smi or a driver."""
    exe = shutil.which("nvidia-smi")
    for fields in (GPU_QUERY, GPU_QUERY.rsplit(",", 1)[0]) if exe else ():  # old drivers lack compute_cap
        try:
            return subprocess.run([exe, f"--query-gpu={fields}", "--format=csv,noheader,nounits"], check=True,
                                  capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            continue
    return ""


def parse_gpu_csv(text: str) -> list[Device]:
    """Rows of `index, name, memory.total [MiB], compute_cap` (the last optional) as GPU devices."""
    gpus = []
    for line in text.strip().splitlines():
        cells = [c.strip() for c in line.split(",")]
        try:
            index, name, mib = int(cells[0]), cells[1], float(cells[2])
        except (IndexError, ValueError):
            continue
        capability = None
        if len(cells) > 3 and "." in cells[3]:
            major, minor = cells[3].split(".", 1)
            capability = (int(major), int(minor)) if major.isdigit() and minor.isdigit() else None
        gpus.append(Device(kind="gpu", index=index, name=name, memory=int(mib * 1024 ** 2), capability=capability))
    return gpus


def visible(gpus: list[Device], cuda_visible: str | None) -> list[Device]:
    """The GPUs a CUDA_VISIBLE_DEVICES of numeric ids lets through (all when unset; none when empty)."""
    if cuda_visible is None:
        return gpus
    ids = [c.strip() for c in cuda_visible.split(",") if c.strip()]
    if not all(c.isdigit() for c in ids):  # UUIDs or MIG names: leave the choice to CUDA, keep the list
        return gpus
    by_index = {g.index: g for g in gpus}
    return [by_index[int(c)] for c in ids if int(c) in by_index]


def gpu_environment(device: Device | None) -> dict[str, str]:
    """Environment variables that pin a worker process to one GPU, with memory growth on from TensorFlow's
    start (`configure_tensorflow` does it again), or to none, for a CPU worker."""
    if device is None or not device.is_gpu:
        return {"CUDA_VISIBLE_DEVICES": "-1"}
    return {"CUDA_VISIBLE_DEVICES": str(device.index), "TF_FORCE_GPU_ALLOW_GROWTH": "true"}


def configure_tensorflow(threads: int | None) -> None:
    """In a worker, before its first op: TensorFlow's thread counts, and memory growth on every visible GPU
    (so the process takes the memory it uses, not the whole card). Already-running TensorFlow keeps its settings."""
    import tensorflow as tf

    try:
        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)
        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already initialised in this process
        pass


def reset_peak_memory() -> None:
    """Start measuring the peak memory of the first visible GPU (nothing on a CPU)."""
    import tensorflow as tf

    if tf.config.list_logical_devices("GPU"):
        tf.config.experimental.reset_memory_stats("GPU:0")


def peak_memory() -> int | None:
    """Peak bytes in use on the first visible GPU since `reset_peak_memory`; None on a CPU."""
    import tensorflow as tf

    if not tf.config.list_logical_devices("GPU"):
        return None
    return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
