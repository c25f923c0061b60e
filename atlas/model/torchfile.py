"""A PyTorch state_dict file read without PyTorch, and without letting its pickle run code.

`torch.save` writes a pickle that names the functions to call to rebuild it; plain `pickle.load` would call any
function a file names. The unpickler here resolves exactly the globals a state_dict of tensors needs (an ordered
dict, the tensor rebuild functions, the typed storage classes) to harmless stand-ins, and refuses every other one
in one line. Both of torch's formats are read:

- the legacy format (torch < 1.6, or `_use_new_zipfile_serialization=False`): five pickles in a row (magic number,
  protocol version, system info, the object, the storage keys), then each storage's raw bytes behind an 8-byte
  element count, in the order of the keys;
- the zip format (torch >= 1.6): `<archive>/data.pkl` and each storage's raw bytes in `<archive>/data/<key>`.

Tensors come back as numpy arrays (little-endian, contiguous copies), keyed as in the state_dict.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from atlas.errors import UserError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

STORAGE_DTYPES = {  # torch's typed storage classes, as a pickle names them, and their element types
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_, "BFloat16Storage": None,  # bfloat16: read as uint16, widened
}
REBUILD_FUNCTIONS = {"_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter"}


@dataclass
class _Storage:
    """A storage the pickle refers to; its bytes arrive after the pickle (legacy) or from the archive (zip)."""

    name: str  # the typed storage class, e.g. FloatStorage
    numel: int
    data: np.ndarray | None = None


@dataclass
class _Tensor:
    """A tensor to build once its storage has bytes."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


@dataclass
class _Reading:
    """What one file's pickle referred to."""

    storages: dict[str, _Storage] = field(default_factory=dict)


class _StorageClass:
    """Stands in for torch.FloatStorage and its kin: the pickle only passes them around as names."""

    def __init__(self, name: str) -> None:
        self.name = name


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                    *_ignored: Any) -> _Tensor:
    return _Tensor(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(tensor: _Tensor, *_ignored: Any) -> _Tensor:
    return tensor


class _SafeUnpickler(pickle.Unpickler):
    """Resolves only the globals of a state_dict of tensors; anything else stops the reading."""

    def __init__(self, stream: BinaryIO, reading: _Reading, path: Path) -> None:
        super().__init__(stream)
        self.reading, self.path = reading, path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            import collections

            return collections.OrderedDict
        if module == "torch._utils" and name in REBUILD_FUNCTIONS:
            return _rebuild_parameter if name == "_rebuild_parameter" else _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageClass(name)
        raise UserError(f"refusing to read {self.path}: its pickle asks for {module}.{name}, which a PyTorch "
                        "state_dict of tensors never needs (a pickle can run code); load only weights files "
                        "you trust, saved with torch.save(model.state_dict(), path)")

    def persistent_load(self, saved_id: Any) -> _Storage:
        if not isinstance(saved_id, tuple) or not saved_id or saved_id[0] != "storage":
            raise UserError(f"refusing to read {self.path}: it refers to a {saved_id!r:.40}, not a tensor storage; "
                            "save the weights with torch.save(model.state_dict(), path)")
        # zip: ('storage', class, key, location, numel); legacy: the same and a view's metadata
        storage_class, key, _location, numel = saved_id[1:5]
        if not isinstance(storage_class, _StorageClass):
            raise UserError(f"refusing to read {self.path}: a storage of unknown type {storage_class!r:.40}")
        storage = self.reading.storages.get(str(key))
        if storage is None:
            storage = self.reading.storages[str(key)] = _Storage(storage_class.name, int(numel))
        return storage


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a PyTorch state_dict file (legacy or zip format) as numpy arrays, keyed as saved."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path)
        with open(path, "rb") as stream:
            return _read_legacy(stream, path)
    except OSError as exc:
        raise UserError(f"cannot read weights file {path}: {exc.strerror or exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, IndexError, TypeError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path} is not a readable PyTorch state_dict ({type(exc).__name__}: {str(exc)[:80]}); "
                        "check the file is whole, or save it again with torch.save(model.state_dict(), path)") from None


def _read_legacy(stream: BinaryIO, path: Path) -> dict[str, np.ndarray]:
    header = _SafeUnpickler(stream, _Reading(), path)
    if header.load() != LEGACY_MAGIC:
        raise ValueError("no PyTorch magic number at its start")
    if header.load() != LEGACY_PROTOCOL:
        raise ValueError("an unknown PyTorch protocol version")
    header.load()  # system info: byte order and type sizes (little-endian on every platform torch ships for)
    reading = _Reading()
    result = _SafeUnpickler(stream, reading, path).load()
    keys = _SafeUnpickler(stream, _Reading(), path).load()
    for key in keys:
        storage = reading.storages[str(key)]
        count = int(np.frombuffer(_read_exactly(stream, 8), "<i8")[0])
        if count != storage.numel:
            raise ValueError(f"storage {key} holds {count} elements where its tensors expect {storage.numel}")
        storage.data = _storage_array(storage, _read_exactly(stream, count * _item_size(storage.name)))
    return _arrays(result, path)


def _read_zip(path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("/data.pkl") or name == "data.pkl"]
        if not pickles:
            raise ValueError("a zip without data.pkl")
        prefix = pickles[0][: -len("data.pkl")]
        reading = _Reading()
        with archive.open(pickles[0]) as stream:
            result = _SafeUnpickler(io.BytesIO(stream.read()), reading, path).load()
        for key, storage in reading.storages.items():
            storage.data = _storage_array(storage, archive.read(f"{prefix}data/{key}"))
    return _arrays(result, path)


def _read_exactly(stream: BinaryIO, count: int) -> bytes:
    data = stream.read(count)
    if len(data) != count:
        raise EOFError(f"the file ends {count - len(data)} bytes early")
    return data


def _item_size(name: str) -> int:
    dtype = STORAGE_DTYPES[name]
    return 2 if dtype is None else np.dtype(dtype).itemsize


def _storage_array(storage: _Storage, data: bytes) -> np.ndarray:
    """A storage's bytes as a flat array of its element type (bfloat16 widened to float32)."""
    dtype = STORAGE_DTYPES[storage.name]
    if dtype is None:
        return (np.frombuffer(data, "<u2").astype(np.uint32) << 16).view(np.float32)
    return np.frombuffer(data, np.dtype(dtype).newbyteorder("<"))


def _arrays(result: Any, path: Path) -> dict[str, np.ndarray]:
    if not isinstance(result, dict):
        raise UserError(f"{path} holds a {type(result).__name__}, not a state_dict; save the weights with "
                        "torch.save(model.state_dict(), path)")
    return {str(name): _tensor_array(value, path, str(name)) for name, value in result.items()}


def _tensor_array(tensor: Any, path: Path, name: str) -> np.ndarray:
    if not isinstance(tensor, _Tensor):
        raise UserError(f"{path}: entry {name} is a {type(tensor).__name__}, not a tensor; atlas reads state_dicts "
                        "of tensors only")
    flat = tensor.storage.data
    if flat is None:
        raise ValueError(f"no bytes for the storage of {name}")
    if not all(tensor.size):
        return np.zeros(tensor.size, flat.dtype.newbyteorder("="))
    itemsize = flat.itemsize
    last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.size, tensor.stride))
    if tensor.offset < 0 or min(tensor.stride, default=0) < 0 or last >= len(flat):
        raise ValueError(f"{name} reaches past its storage")
    view = np.lib.stride_tricks.as_strided(flat[tensor.offset:], shape=tensor.size,
                                           strides=[s * itemsize for s in tensor.stride], writeable=False)
    return np.ascontiguousarray(view).astype(view.dtype.newbyteorder("="), copy=False)
