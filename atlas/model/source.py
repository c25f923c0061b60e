"""Where the model's GraphDef bytes come from: the user cache, the official download, a local
.pb or .zip, or the synthetic stand-in."""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from atlas.atomic import atomic_path, atomic_write_bytes, stop_on_write_errors
from atlas.errors import UserError

DEFAULT_MODEL = "inception5h"
MODEL_URL = "https://storage.googleapis.com/download.tensorflow.org/models/inception5h.zip"
MODEL_SHA256 = "d13569f6a98159de37e92e9c8ec4dae8f674fbf475f69fe6199b514f756d4364"
ZIP_NAME = "inception5h.zip"
PB_NAME = "tensorflow_inception_graph.pb"
LABELS_NAME = "imagenet_comp_graph_label_strings.txt"
SYNTHETIC = "synthetic"

ENV_MODEL = "ATLAS_MODEL"  # default for --model
ENV_CACHE = "ATLAS_CACHE_DIR"  # overrides the XDG cache folder
ENV_URL = "ATLAS_MODEL_URL"  # a mirror of inception5h.zip
ENV_SHA256 = "ATLAS_MODEL_SHA256"  # the mirror's checksum, when it serves another build
CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelSource:
    """Resolved model: the GraphDef bytes' origin and a short description for manifests."""

    spec: str  # what the user asked for, normalised: inception5h, synthetic:0.125, or an absolute path
    pb_path: Path | None  # None for the synthetic stand-in, which is built in memory
    synthetic_scale: float | None = None
    labels_path: Path | None = None
    member: str | None = None  # when pb_path is a zip: the .pb inside it


def default_spec() -> str:
    return os.environ.get(ENV_MODEL) or DEFAULT_MODEL


def cache_dir() -> Path:
    """The folder holding the downloaded model (XDG user cache unless ATLAS_CACHE_DIR is set)."""
    override = os.environ.get(ENV_CACHE)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("atlas"))


def resolve(spec: str | None) -> ModelSource:
    """Turn a --model value into a ModelSource, downloading inception5h if it is not cached yet."""
    spec = (spec or default_spec()).strip()
    if spec == DEFAULT_MODEL:
        return _inception5h()
    if spec == SYNTHETIC or spec.startswith(SYNTHETIC + ":"):
        scale = _synthetic_scale(spec)
        return ModelSource(spec=f"{SYNTHETIC}:{scale:g}", pb_path=None, synthetic_scale=scale)
    path = Path(spec).expanduser()
    if path.suffix.lower() in {".pb", ".zip"}:
        if not path.is_file():
            raise UserError(f"model file not found: {path}; check the path given to --model")
        if path.suffix.lower() == ".zip":
            return _from_zip(path.resolve(), None)
        return ModelSource(spec=str(path.resolve()), pb_path=path.resolve())
    raise UserError(f"unknown --model value '{spec}': use inception5h, synthetic[:SCALE] "
                    "(e.g. synthetic:0.125), or a path to a .pb or .zip file")


def _synthetic_scale(spec: str) -> float:
    text = spec.partition(":")[2] or "1"
    try:
        scale = float(text)
    except ValueError:
        scale = -1.0
    if not 0 < scale <= 1:
        raise UserError(f"bad synthetic scale '{text}' in --model {spec}: use a number in (0, 1], "
                        "e.g. synthetic:0.125")
    return scale


def _inception5h() -> ModelSource:
    folder = cache_dir()
    pb = folder / PB_NAME
    if pb.is_file():
        labels = folder / LABELS_NAME
        return ModelSource(spec=DEFAULT_MODEL, pb_path=pb, labels_path=labels if labels.is_file() else None)
    archive = folder / ZIP_NAME
    if not archive.is_file():
        download(model_url(), archive, expected_sha256())
    with stop_on_write_errors(folder, f"set {ENV_CACHE} to", resumable=False):  # extracting into the cache
        source = _from_zip(archive, folder)
    return ModelSource(spec=DEFAULT_MODEL, pb_path=source.pb_path, labels_path=source.labels_path)


def model_url() -> str:
    return os.environ.get(ENV_URL) or MODEL_URL


def expected_sha256() -> str:
    return (os.environ.get(ENV_SHA256) or MODEL_SHA256).lower()


def _manual_fix(url: str, target: Path) -> str:
    return (f"download {url} by hand and save it as {target}, "
            f"or pass --model with the path of a .pb or .zip you already have")


def download(url: str, target: Path, sha256: str, timeout: float = 60.0) -> None:
    """Fetch `url` into `target` with a progress bar, verifying its sha256; nothing is left on failure."""
    from tqdm import tqdm

    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with atomic_path(target) as tmp, open(tmp, "wb") as out, tqdm(
                total=total, unit="B", unit_scale=True, desc=f"downloading {target.name}", leave=False,
                disable=None
            ) as bar:
                received = 0
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                if total is not None and received != total:
                    raise _DownloadProblem(f"the download stopped after {received} of {total} bytes")
                if digest.hexdigest() != sha256:
                    raise _DownloadProblem(f"checksum mismatch (sha256 {digest.hexdigest()}, "
                                           f"expected {sha256})")
    except _DownloadProblem as problem:
        raise UserError(f"could not download the model from {url}: {problem}; {_manual_fix(url, target)}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        if isinstance(exc, urllib.error.HTTPError):
            reason = f"HTTP {exc.code} {exc.reason}"
        raise UserError(f"could not download the model from {url} ({reason}); {_manual_fix(url, target)}") from None


class _DownloadProblem(Exception):
    """A download that arrived but is not what we expected (truncated, wrong checksum)."""


def _from_zip(archive: Path, dest: Path | None) -> ModelSource:
    """Find the .pb in `archive`; with `dest`, extract it (and the labels) there atomically."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.namelist()
            pbs = [m for m in members if m.endswith(".pb")]
            if not pbs:
                raise UserError(f"{archive} holds no .pb file; expected {PB_NAME} inside inception5h.zip")
            pb_member = next((m for m in pbs if Path(m).name == PB_NAME), pbs[0])
            if dest is None:
                return ModelSource(spec=str(archive), pb_path=archive, member=pb_member)
            pb_target = dest / Path(pb_member).name
            _extract(zf, pb_member, pb_target)
            labels_target = None
            label_members = [m for m in members if Path(m).name == LABELS_NAME]
            if label_members:
                labels_target = dest / LABELS_NAME
                _extract(zf, label_members[0], labels_target)
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as exc:
        raise UserError(f"{archive} is not a readable zip ({exc}); delete it and download "
                        f"{model_url()} again") from None
    return ModelSource(spec=str(archive.resolve()), pb_path=pb_target, labels_path=labels_target)


def _extract(zf: zipfile.ZipFile, member: str, target: Path) -> None:
    if target.is_file() and target.stat().st_size == zf.getinfo(member).file_size:
        return
    with atomic_path(target) as tmp, zf.open(member) as src, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK)


def read_graph_bytes(source: ModelSource) -> bytes:
    """The serialized GraphDef of `source`."""
    if source.pb_path is None:
        from atlas.model.synthetic import build_graph_def

        return build_graph_def(scale=source.synthetic_scale or 1.0).SerializeToString(deterministic=True)
    try:
        if source.member is not None:
            with zipfile.ZipFile(source.pb_path) as zf:
                return zf.read(source.member)
        return source.pb_path.read_bytes()
    except (zipfile.BadZipFile, EOFError) as exc:
        raise UserError(f"cannot read {source.member} from {source.pb_path} ({exc}); the zip is damaged") from None
    except OSError as exc:
        raise UserError(f"cannot read model file {source.pb_path}: {exc.strerror}") from None


def write_synthetic(path: Path, scale: float = 1.0, seed: int = 0) -> Path:
    """Save the stand-in as a .pb file (for tests and for trying the file-loading path)."""
    from atlas.model.synthetic import build_graph_def

    atomic_write_bytes(path, build_graph_def(scale=scale, seed=seed).SerializeToString(deterministic=True))
    return path
