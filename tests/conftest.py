import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# umap-learn's numba functions compiled once per machine, not once per test session (atlas.analysis.maps.import_umap);
# the per-test ATLAS_CACHE_DIR below would otherwise hide the cache
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "atlas", "numba"))

import pytest  # noqa: E402

from atlas.console import import_tensorflow  # noqa: E402

import_tensorflow()  # as atlas's own processes do: without Keras's eager load (atlas/console.py)

from atlas.model.graph import load_model  # noqa: E402
from tests.precision import PRECISION  # noqa: E402 (ATLAS_TEST_PRECISION, checked before any test runs)

SMALL = "synthetic:0.125"


def pytest_report_header() -> str:
    return f"render tests at {PRECISION} precision (ATLAS_TEST_PRECISION)"


@pytest.fixture(scope="session")
def small_model():
    return load_model(SMALL)


@pytest.fixture(scope="session")
def full_model():
    return load_model("synthetic")


LITE0 = "efficientnet-lite0"


@pytest.fixture(scope="session")
def lite0_frozen(tmp_path_factory) -> "os.PathLike[str]":
    """The frozen graph of the trained EfficientNet-Lite0 (the zoo), built once per test process (about 10 s)."""
    from atlas.model.source import resolve

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ATLAS_CACHE_DIR", str(tmp_path_factory.mktemp("zoo")))
        return resolve(LITE0).pb_path


@pytest.fixture(scope="session")
def lite0_model(lite0_frozen):
    """The trained EfficientNet-Lite0 as a loaded model, shared by a test process."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ATLAS_CACHE_DIR", str(lite0_frozen.parent.parent))
        return load_model(LITE0)


@pytest.fixture
def lite0(lite0_frozen, isolated_cache) -> str:
    """`--model efficientnet-lite0` usable in this test (its own cache) without building it again."""
    target = isolated_cache / "frozen" / lite0_frozen.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(lite0_frozen, target)
    return LITE0


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own empty model cache and no model default from the environment."""
    monkeypatch.setenv("ATLAS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ATLAS_MODEL", raising=False)
    monkeypatch.delenv("ATLAS_MODEL_URL", raising=False)
    monkeypatch.delenv("ATLAS_MODEL_SHA256", raising=False)
    return tmp_path / "cache"


# The files that take longest, longest first: pytest-xdist hands whole files to its workers in this order, so that
# no long file starts last while the other workers idle (pyproject.toml's addopts). Order only: nothing is skipped.
LONGEST_FIRST = ("test_wheel.py", "test_render.py", "test_fourier.py", "test_memory_and_atomic.py", "test_console.py",
                 "test_examples.py", "test_sweep.py", "test_lifeline.py", "test_sweep_io.py", "test_maps.py",
                 "test_keras_load.py", "test_any_model.py", "test_explain.py", "test_attribution.py",
                 "test_keras_circuits.py", "test_keras_graphs.py", "test_explain_site.py", "test_explain_figure.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
