"""TensorFlow's own logging kept off the console in every process, unless verbose (`--verbose`, ATLAS_VERBOSE=1).

TensorFlow writes to the console from three places; each is silenced at its source:

- C++ logging once absl is initialised (`failed call to cuInit ... (303)`, `cpu_feature_guard`):
  TF_CPP_MIN_LOG_LEVEL=3 in the environment before TensorFlow loads. Worker processes inherit it.
- Lines its shared libraries write while they load, before absl::InitializeLog (`oneDNN custom operations are
  on`, `Could not find cuda drivers`): no setting reaches these (tensorflow/tensorflow#100442), so the import
  itself runs with file descriptor 2 on /dev/null; in the parent, and in each worker process at its start.
- Python logging (`tf.function` retracing warnings; one function per layer is by design): the `tensorflow`
  logger at ERROR.

Verbose is an environment variable rather than a flag passed around, so worker processes see it too.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

VERBOSE_ENV = "ATLAS_VERBOSE"
TF_LOG_ENV = "TF_CPP_MIN_LOG_LEVEL"


def verbose() -> bool:
    """True when TensorFlow's logging should reach the console."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def set_verbose(on: bool) -> None:
    """Turn verbose on for this process and every process it starts (`--verbose`)."""
    if on:
        os.environ[VERBOSE_ENV] = "1"


def quiet_environment() -> None:
    """Before TensorFlow loads: its C++ logging off, unless verbose (then the user's own setting stands)."""
    if not verbose():
        os.environ[TF_LOG_ENV] = "3"


@contextlib.contextmanager
def _stderr_discarded() -> Iterator[None]:
    """File descriptor 2 on /dev/null for the block: what native code writes there is dropped."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


# TensorFlow imports Keras's optimizers while it starts (tensorflow/__init__.py: "an eager load for Keras' code" so
# that they register for SavedModel loading), and Keras imports scikit-learn: about half of TensorFlow's start-up
# time (3.5 of 7 s on a 2-core EPYC). atlas uses no Keras, so its processes skip that load; TensorFlow catches the
# ImportError itself. The block is lifted once TensorFlow is in, so `import keras` still works afterwards.
KERAS_EAGER_LOAD = "keras.src.optimizers"


@contextlib.contextmanager
def import_skipped(module: str) -> Iterator[None]:
    """Within the block, importing `module` raises ImportError (for a library that catches it and goes on
    without); unless it is loaded already. Afterwards it imports as usual."""
    blocked = module not in sys.modules and module.split(".")[0] not in sys.modules
    if blocked:
        sys.modules[module] = None  # type: ignore[assignment]  # an import of a None entry raises ImportError
    try:
        yield
    finally:
        if blocked and sys.modules.get(module, 0) is None:
            del sys.modules[module]


def import_tensorflow() -> None:
    """Import TensorFlow in this process (without Keras's eager load), keeping its start-up lines off the console
    unless verbose. Also the initializer of every worker process, so it runs before a task's modules import
    TensorFlow there."""
    quiet_environment()
    if "tensorflow" not in sys.modules:
        with import_skipped(KERAS_EAGER_LOAD), (contextlib.nullcontext() if verbose() else _stderr_discarded()):
            import tensorflow  # noqa: F401
    if verbose():
        return
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
