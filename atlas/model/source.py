"""Where the model's GraphDef bytes come from: the user cache, the official download, a local .pb or .zip, the
synthetic stand-in, a Keras model (a .keras or .h5 file, a SavedModel folder, or `keras:NAME` of
keras.applications) or a trained network of atlas's zoo (`efficientnet-lite0`, built from a package's weights),
frozen once into a GraphDef, or an ONNX file converted once into one (atlas.model.onnx_graph), each cached under its
source's sha256; and how atlas's pixels become the model's input (its `Preprocess`)."""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from atlas.atomic import atomic_path, atomic_write_bytes, stop_on_write_errors
from atlas.errors import UserError
from atlas.model.preprocess import GOOGLENET, KERAS_APPLICATIONS, SCHEMES, Preprocess, keras_application_preprocess
from atlas.model.zoo import ZOO

DEFAULT_MODEL = "inception5h"
MODEL_URL = "https://storage.googleapis.com/download.tensorflow.org/models/inception5h.zip"
MODEL_SHA256 = "d13569f6a98159de37e92e9c8ec4dae8f674fbf475f69fe6199b514f756d4364"
ZIP_NAME = "inception5h.zip"
PB_NAME = "tensorflow_inception_graph.pb"
LABELS_NAME = "imagenet_comp_graph_label_strings.txt"
SYNTHETIC = "synthetic"
KERAS_PREFIX = "keras:"
KERAS_SUFFIXES = {".keras", ".h5", ".hdf5"}
ONNX_SUFFIX = ".onnx"
FROZEN_DIR = "frozen"  # in the cache folder: <source sha256>-f<FREEZE_FORMAT>.pb (ONNX: -onnx<ONNX_FORMAT>.pb)
FREEZE_FORMAT = 1  # bump when freezing changes the graph it writes
DOWNLOAD_TIMEOUT = 20.0  # seconds without an answer before a Keras weights download counts as offline
KERAS_WEIGHTS_HOST = "storage.googleapis.com"  # where keras.applications downloads every model's weights (https)
ROUTE_TIMEOUT = 3.0  # seconds for its DNS look-up and a connection before keras:NAME counts as offline at once

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
    preprocess: Preprocess = GOOGLENET  # how RGB pixels 0..255 become the model's input
    source_sha256: str | None = None  # of the Keras file, folder or weights a frozen graph was made from
    labels: str | None = None  # the class names: "imagenet" (the shipped 1000) or a file with one name a line
    logits: str | None = None  # the node (or ONNX tensor) holding the classifier's logits, if named (--logits)
    # whether the weights were trained (everything a user loads is taken to be; the stand-in's are random): what
    # `auto` render settings mean for it (atlas.render.settings.for_network)
    trained: bool = True


def default_spec() -> str:
    return os.environ.get(ENV_MODEL) or DEFAULT_MODEL


def cache_dir() -> Path:
    """The folder holding the downloaded model (XDG user cache unless ATLAS_CACHE_DIR is set)."""
    override = os.environ.get(ENV_CACHE)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("atlas"))


MODEL_HELP = ("inception5h, efficientnet-lite0 (or -lite1, -lite2; NAME:FILE.pth for other weights), "
              "synthetic[:SCALE] (e.g. synthetic:0.125), keras:NAME (e.g. keras:ResNet50), or a path to a .keras, "
              ".h5, .onnx, .pb or .zip file or a SavedModel folder")


def names_a_path(spec: str) -> bool:
    """Whether a --model value is a file or folder path (not inception5h, a zoo name, synthetic[:SCALE] or
    keras:NAME)."""
    spec = spec.strip()
    return not (spec in (DEFAULT_MODEL, SYNTHETIC) or spec.partition(":")[0] in ZOO
                or spec.startswith((SYNTHETIC + ":", KERAS_PREFIX)))


def resolve(spec: str | None, preprocess: Preprocess | None = None) -> ModelSource:
    """Turn a --model value into a ModelSource, downloading inception5h if it is not cached yet and freezing a
    Keras model (converting an ONNX one) if its frozen graph is not cached yet; `preprocess` overrides the model's
    own (a Keras or ONNX file has none and needs it). Labels and logits given by the user are set by
    `atlas.model.graph.load_model`."""
    from dataclasses import replace

    spec = (spec or default_spec()).strip()
    if spec == DEFAULT_MODEL:
        source = _inception5h()
    elif spec == SYNTHETIC or spec.startswith(SYNTHETIC + ":"):
        scale = _synthetic_scale(spec)
        source = ModelSource(spec=f"{SYNTHETIC}:{scale:g}", pb_path=None, synthetic_scale=scale, trained=False)
    elif spec.startswith(KERAS_PREFIX):
        return _keras_application(spec[len(KERAS_PREFIX):].strip(), preprocess)
    elif spec.partition(":")[0] in ZOO:
        name, _, weights = spec.partition(":")
        source = _zoo(name, Path(weights).expanduser() if weights else None)
    else:
        path = Path(spec).expanduser()
        suffix = path.suffix.lower()
        if path.is_dir() or suffix in KERAS_SUFFIXES:
            return _keras_file(path, preprocess)
        if suffix == ONNX_SUFFIX:
            return _onnx_file(path, preprocess)
        if suffix not in {".pb", ".zip"}:
            raise UserError(f"unknown --model value '{spec}': use {MODEL_HELP}")
        if not path.is_file():
            raise UserError(f"model file not found: {path}; check the path given to --model")
        if suffix == ".zip":
            source = _from_zip(path.resolve(), None)
        else:
            source = ModelSource(spec=str(path.resolve()), pb_path=path.resolve())
    return source if preprocess is None else replace(source, preprocess=preprocess)


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


# ------------------------------------------------------------------------------------------- Keras models


def frozen_path(source_sha256: str, form: str = f"f{FREEZE_FORMAT}") -> Path:
    """Where the frozen graph of the model whose source hashes to `source_sha256` is cached; `form` names the way
    it was made (Keras's freezing, by default, or ONNX's conversion) and its version."""
    return cache_dir() / FROZEN_DIR / f"{source_sha256}-{form}.pb"


def file_sha256(path: Path) -> str:
    """The sha256 of a file, or of a folder: of each file's relative path and bytes, in sorted order."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            name = file.relative_to(path).as_posix().encode()
            digest.update(len(name).to_bytes(8, "little") + name + file.stat().st_size.to_bytes(8, "little"))
        with open(file, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def _keras_file(path: Path, preprocess: Preprocess | None) -> ModelSource:
    """A .keras or .h5 file or a SavedModel folder: its frozen graph, frozen now unless cached."""
    if not path.exists():
        raise UserError(f"model file not found: {path}; check the path given to --model")
    if path.is_dir() and not (path / "saved_model.pb").is_file():
        raise UserError(f"{path} is a folder but not a SavedModel (no saved_model.pb inside); pass a SavedModel "
                        "folder, or a .keras, .h5, .pb or .zip file")
    _require_preprocess(path, preprocess, "caffe, tf, torch, none")
    path = path.resolve()
    sha = _readable_sha256(path)
    target = frozen_path(sha)
    if not target.is_file():
        _write_frozen(target, lambda: _freeze_keras_file(path), str(path))
    return ModelSource(spec=str(path), pb_path=target, preprocess=preprocess, source_sha256=sha)


def _require_preprocess(path: Path, preprocess: Preprocess | None, schemes: str) -> None:
    if preprocess is None:
        raise UserError(f"--model {path} needs --preprocess: how RGB pixels 0..255 become its input ({schemes}, "
                        "or mean=... std=...; see docs/own-model.md); a wrong range spoils every image")


def _readable_sha256(path: Path) -> str:
    try:
        return file_sha256(path)
    except OSError as exc:
        raise UserError(f"cannot read model {path}: {exc.strerror}") from None


def _onnx_file(path: Path, preprocess: Preprocess | None) -> ModelSource:
    """An ONNX file (torch.onnx.export's): its converted graph, converted now unless cached."""
    if not path.is_file():
        raise UserError(f"model file not found: {path}; check the path given to --model")
    _require_preprocess(path, preprocess, "torch for most PyTorch models, caffe, tf, none")
    from atlas.model.onnx_graph import ONNX_FORMAT, convert_file, import_onnx

    path = path.resolve()
    sha = _readable_sha256(path)
    target = frozen_path(sha, f"onnx{ONNX_FORMAT}")
    if not target.is_file():
        import_onnx()  # one line naming the extra before anything else
        _write_frozen(target, lambda: convert_file(path), str(path))
    return ModelSource(spec=str(path), pb_path=target, preprocess=preprocess, source_sha256=sha)


def _freeze_keras_file(path: Path) -> object:
    """The frozen GraphDef of a Keras file or SavedModel folder; a UserError if it cannot be read."""
    from atlas.console import import_tensorflow

    import_tensorflow()
    from atlas.model.freeze import freeze_keras_model, freeze_saved_model

    kind = "SavedModel" if path.is_dir() else "Keras model"
    try:
        if path.is_dir():
            import tensorflow as tf

            model = tf.saved_model.load(str(path))
        else:
            import keras

            model = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001  (Keras, h5py and TensorFlow raise many kinds for a damaged file)
        raise UserError(f"cannot load {path} as a {kind} ({_first_line(exc)}); check the file, or save the "
                        "model again with model.save('model.keras')") from None
    try:
        return freeze_saved_model(model) if path.is_dir() else freeze_keras_model(model)
    except ValueError as exc:  # a model atlas cannot take: several inputs, not NHWC, no signature
        raise UserError(f"cannot use {path} as a {kind}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 160 else line[:157] + "..."


def _zoo(name: str, weights: Path | None) -> ModelSource:
    """A network of the zoo (`atlas.model.zoo`): built from its package's state_dict, or from `weights` (a .pth
    file of the same architecture: `efficientnet-lite0:FILE`), frozen once and cached under a key of the weights'
    sha256."""
    from atlas.model import zoo

    model = ZOO[name]
    if weights is None:
        weights, spec = zoo.weights_path(model), name
    else:
        weights = weights.resolve()
        spec = f"{name}:{weights}"
        if not weights.is_file():
            raise UserError(f"weights file not found: {weights}; give --model {name}:PATH with a PyTorch state_dict "
                            f"of {name}, or --model {name} for its ImageNet weights")
    try:
        sha = zoo.source_key(model, file_sha256(weights))
    except OSError as exc:
        raise UserError(f"cannot read weights file {weights}: {exc.strerror}") from None
    target = frozen_path(sha)
    if not target.is_file():
        _write_frozen(target, lambda: _freeze_zoo(model, weights), spec)
    return ModelSource(spec=spec, pb_path=target, preprocess=SCHEMES["tf"], source_sha256=sha, labels="imagenet")


def _freeze_zoo(model: object, weights: Path) -> object:
    from atlas.console import import_tensorflow

    import_tensorflow()
    from atlas.model.freeze import freeze_keras_model
    from atlas.model.torchfile import read_state_dict
    from atlas.model.zoo import build_keras

    return freeze_keras_model(build_keras(model, read_state_dict(weights)))  # type: ignore[arg-type]


def _keras_application(name: str, preprocess: Preprocess | None) -> ModelSource:
    """`keras:NAME`: a keras.applications model with its ImageNet weights (downloaded once by Keras)."""
    known = keras_application_preprocess(name)
    sha = application_sha256(name)
    target = frozen_path(sha)
    if known is not None and not target.is_file():
        _require_weights_route(name)  # a name atlas knows: offline, stop before Keras is even imported
    if known is None or not target.is_file():
        builder = _keras_builder(name)
        if known is None and preprocess is None:
            raise UserError(f"atlas does not know how keras:{name} preprocesses its input; pass --preprocess "
                            "(caffe, tf, torch or none: see keras.applications' preprocess_input of its family)")
        if not target.is_file():
            if known is None:
                _require_weights_route(name)  # after Keras said the name exists
            _write_frozen(target, lambda: _freeze_application(name, builder), f"keras:{name}")
    return ModelSource(spec=f"{KERAS_PREFIX}{name}", pb_path=target, preprocess=preprocess or known or GOOGLENET,
                       source_sha256=sha)


def application_sha256(name: str) -> str:
    """What identifies keras:NAME's weights without loading Keras: the name and the Keras version, hashed."""
    import importlib.metadata

    key = f"keras.applications/{name}/imagenet/keras-{importlib.metadata.version('keras')}"
    return hashlib.sha256(key.encode()).hexdigest()


def _keras_builder(name: str) -> object:
    """The keras.applications function `name`, or a UserError suggesting close names."""
    from atlas.console import import_tensorflow

    import_tensorflow()
    import keras

    builder = getattr(keras.applications, name, None) if name.isidentifier() else None
    if builder is None or not callable(builder) or not name[:1].isupper():
        import difflib

        names = sorted(set(KERAS_APPLICATIONS) | {n for n in dir(keras.applications) if n[:1].isupper()})
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join('keras:' + c for c in close)}?" if close else \
            "see keras.applications for the names (e.g. keras:ResNet50)"
        raise UserError(f"unknown Keras application '{name}': {hint}")
    return builder


def _freeze_application(name: str, builder: object) -> object:
    """Build keras.applications `name` with ImageNet weights (Keras downloads them once) and freeze it."""
    import socket

    import keras

    from atlas.model.freeze import freeze_keras_model

    previous = socket.getdefaulttimeout()
    interactive = keras.config.is_interactive_logging_enabled()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)
    keras.config.disable_interactive_logging()  # no "Downloading data from ..." line before an offline error
    try:
        model = builder(weights="imagenet")  # type: ignore[operator]
    except Exception as exc:  # noqa: BLE001  (Keras's get_file raises a bare Exception("URL fetch failure ..."))
        if "fetch failure" in str(exc) or isinstance(exc, (OSError, urllib.error.URLError)):
            reason = _first_line(Exception(str(exc).rpartition(" -- ")[2]))  # Keras: "... URL: errno -- reason"
            raise UserError(_offline(name, reason)) from None
        raise
    finally:
        socket.setdefaulttimeout(previous)
        if interactive:
            keras.config.enable_interactive_logging()
    return freeze_keras_model(model)


def _require_weights_route(name: str) -> None:
    """Stop at once, in one line, when keras:NAME's weights clearly cannot come: no route to their host and nothing
    in Keras's download cache (building the model first and letting Keras fail takes 10-20 s)."""
    problem = None if keras_downloads_cached() else weights_route_problem()
    if problem is not None:
        raise UserError(_offline(name, problem))


def _offline(name: str, reason: str) -> str:
    return (f"cannot download the ImageNet weights of keras:{name} ({reason}); connect to the internet once (Keras "
            "caches them), or pass --model with the path of a saved .keras, .h5 or SavedModel")


def weights_route_problem(host: str = KERAS_WEIGHTS_HOST, port: int = 443,
                          timeout: float = ROUTE_TIMEOUT) -> str | None:
    """Why this machine cannot reach `host` now (through the https proxy urllib would use, if one is set): its
    DNS look-up or connection failed, or gave no answer within `timeout` seconds; None when a connection opened.
    The attempt runs in a daemon thread, so a look-up that hangs costs `timeout` at most."""
    import socket
    import threading
    import urllib.parse

    target: tuple[str, int] = (host, port)
    proxy = urllib.request.getproxies().get("https")
    if proxy and not urllib.request.proxy_bypass(host):
        parts = urllib.parse.urlsplit(proxy if "//" in proxy else f"//{proxy}")
        target = (parts.hostname or host, parts.port or (443 if parts.scheme == "https" else 80))
    found: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection(target, timeout=timeout).close()
            found.append(None)
        except OSError as exc:
            found.append(_first_line(exc))

    attempt = threading.Thread(target=connect, daemon=True)
    attempt.start()
    attempt.join(timeout)
    return found[0] if found else f"no answer from {target[0]} within {timeout:g} s"


def keras_downloads_cached() -> bool:
    """Whether Keras's download cache (`models/` in its home, ~/.keras or $KERAS_HOME; /tmp/.keras where that
    is not writable, as Keras's get_file decides) holds any file: weights Keras may find there without network."""
    imported = sys.modules.get("keras.src.backend.config")  # Keras's own answer if it is loaded; else as it would
    if imported is not None and hasattr(imported, "keras_home"):
        home = Path(imported.keras_home())
    elif os.environ.get("KERAS_HOME"):
        home = Path(os.environ["KERAS_HOME"])
    else:
        user = Path.home()
        home = (user if os.access(user, os.W_OK) else Path("/tmp")) / ".keras"
    home = home.expanduser()
    folder = (home if os.access(home, os.W_OK) else Path("/tmp/.keras")) / "models"
    return folder.is_dir() and any(entry.is_file() for entry in folder.iterdir())


def _write_frozen(target: Path, freeze: object, origin: str) -> None:
    """Freeze (calling `freeze`), check the graph is convolutional, and cache it atomically at `target`."""
    graph = freeze()  # type: ignore[operator]
    convs = [n for n in graph.node if n.op in ("Conv2D", "DepthwiseConv2dNative")]
    if not convs:
        raise UserError(f"{origin} has no convolution (Conv2D or DepthwiseConv2D); atlas visualises "
                        "convolutional image networks")
    with stop_on_write_errors(target.parent.parent, f"set {ENV_CACHE} to", resumable=False):
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, graph.SerializeToString(deterministic=True))
