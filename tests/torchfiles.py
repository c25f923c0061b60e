"""PyTorch state_dict files written without PyTorch, byte for byte as `torch.save` lays them out (the legacy and the
zip format), for the tests of atlas.model.torchfile; and a pickle that runs code when loaded plainly."""

from __future__ import annotations

import collections
import io
import pickle
import sys
import types
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
                 np.dtype(np.float16): "HalfStorage", np.dtype(np.int64): "LongStorage",
                 np.dtype(np.int32): "IntStorage", np.dtype(np.uint8): "ByteStorage"}


@contextmanager
def _fake_torch() -> Iterator[types.ModuleType]:
    """`torch` and `torch._utils` as pickle sees them: modules holding the globals torch.save names."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # never called here: pickled by name only
        raise AssertionError

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    for name in STORAGE_NAMES.values():
        cls = type(name, (), {"__module__": "torch"})
        setattr(torch, name, cls)
    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    sys.modules.update({"torch": torch, "torch._utils": utils})
    try:
        yield torch
    finally:
        for key, module in saved.items():
            if module is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = module


class _TensorRef:
    def __init__(self, key: str, array: np.ndarray, torch: types.ModuleType) -> None:
        self.key, self.array, self.torch = key, array, torch

    def __reduce__(self):
        storage = _StorageRef(self.key, self.array, self.torch)
        stride = tuple(s // self.array.itemsize for s in self.array.strides)
        return (self.torch._utils._rebuild_tensor_v2,
                (storage, 0, self.array.shape, stride, False, collections.OrderedDict()))


class _StorageRef:
    def __init__(self, key: str, array: np.ndarray, torch: types.ModuleType) -> None:
        self.key, self.array = key, array
        self.cls = getattr(torch, STORAGE_NAMES[array.dtype])


class _Pickler(pickle.Pickler):
    def __init__(self, stream: io.BytesIO, legacy: bool) -> None:
        super().__init__(stream, protocol=2)
        self.legacy = legacy

    def persistent_id(self, obj: object):
        if isinstance(obj, _StorageRef):
            ident = ("storage", obj.cls, obj.key, "cpu", obj.array.size)
            return ident + (None,) if self.legacy else ident
        return None


def write_state_dict(path: Path, tensors: dict[str, np.ndarray], legacy: bool = True) -> Path:
    """Write `tensors` as torch.save writes a state_dict: the legacy format, or the zip format."""
    arrays = {name: np.ascontiguousarray(value) for name, value in tensors.items()}
    keys = [str(i) for i in range(len(arrays))]
    with _fake_torch() as torch:
        state = collections.OrderedDict(
            (name, _TensorRef(key, array, torch)) for key, (name, array) in zip(keys, arrays.items()))
        body = io.BytesIO()
        _Pickler(body, legacy).dump(state)
    if legacy:
        out = io.BytesIO()
        for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True,
                                                      "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            pickle.dump(header, out, protocol=2)
        out.write(body.getvalue())
        pickle.dump(keys, out, protocol=2)
        for array in arrays.values():
            out.write(np.int64(array.size).tobytes() + array.astype(array.dtype.newbyteorder("<")).tobytes())
        path.write_bytes(out.getvalue())
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", body.getvalue())
            archive.writestr("archive/version", "3\n")
            for key, array in zip(keys, arrays.values()):
                archive.writestr(f"archive/data/{key}", array.tobytes())
    return path


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def write_malicious(path: Path, marker: Path, legacy: bool = True) -> Path:
    """A state_dict-looking file whose pickle runs `touch marker` when loaded with plain pickle.load."""
    body = pickle.dumps(collections.OrderedDict(weight=_Payload(marker)), protocol=2)
    if legacy:
        head = b"".join(pickle.dumps(h, protocol=2) for h in (0x1950A86A20F9469CFC6C, 1001, {}))
        path.write_bytes(head + body + pickle.dumps([], protocol=2))
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", body)
    return path
