"""A complete wheel: built from the project, installed without the checkout on the path, it runs the demo."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from test_console import foreign_lines

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["pyproject.toml", "README.md", "atlas", "templates", "configs"]  # what a build reads
PACKAGED = {"atlas": "atlas", "templates": "atlas/templates", "configs": "atlas/configs"}  # checkout -> wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built (offline, with the test environment's setuptools) from a copy of the checkout, so the
    build leaves nothing in it."""
    tmp = tmp_path_factory.mktemp("wheel")
    (tmp / "src").mkdir()
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp / "src" / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, tmp / "src" / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "--wheel-dir", str(tmp / "dist"), str(tmp / "src")], check=True, capture_output=True)
    (built,) = (tmp / "dist").glob("atlas-*.whl")
    return built


def test_the_wheel_holds_every_module_template_config_and_photo(wheel):
    expected = {f"{inside}/{path.relative_to(ROOT / folder).as_posix()}"
                for folder, inside in PACKAGED.items() for path in (ROOT / folder).rglob("*")
                if path.is_file() and "__pycache__" not in path.parts and not path.name.startswith(".")}
    names = set(zipfile.ZipFile(wheel).namelist())
    assert expected - names == set()
    assert {"atlas/templates/static/style.css", "atlas/configs/figures/lecture3.yaml", "atlas/__main__.py",
            "atlas/data/photos/chelsea.jpg"} <= names


@pytest.mark.timeout(1800)  # the demo takes about 2 minutes on 2 idle cores
def test_the_installed_wheel_runs_the_demo_from_an_empty_folder(wheel, tmp_path):
    target, empty = tmp_path / "installed", tmp_path / "empty"
    empty.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target),
                    str(wheel)], check=True, capture_output=True)
    # the installed copy comes first on the path: neither the checkout nor an editable install is imported
    env = {key: value for key, value in os.environ.items() if key not in ("TF_CPP_MIN_LOG_LEVEL", "ATLAS_VERBOSE")}
    env["PYTHONPATH"] = str(target)
    where = subprocess.run([sys.executable, "-c", "import atlas, atlas.shipped as s; print(atlas.__file__); "
                            "print(s.templates_dir()); print(s.shipped_configs()['demo'])"],
                           cwd=empty, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert all(Path(path).is_relative_to(target) for path in where), where

    run = subprocess.run([str(target / "bin" / "atlas"), "run", "demo"], cwd=empty, env=env, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr
    site = empty / "output" / "demo" / "site"
    assert (site / "index.html").is_file() and (site / "static" / "style.css").is_file()
    assert foreign_lines(run.stderr) == []
