"""A quiet console: only atlas's own lines on stderr, from the parent and every worker, unless --verbose."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PROGRESS = re.compile(r"^\s*[^:]*:?\s*\d+%\|")  # a tqdm bar (shown only on a terminal, so none here)


def _env() -> dict[str, str]:
    """The environment of a user's shell: no TensorFlow log level, no ATLAS_VERBOSE."""
    return {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "ATLAS_VERBOSE")}


def _atlas(folder: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "-m", "atlas", *args], cwd=folder, env={**_env(), **(env or {})},
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    return run


def foreign_lines(stderr: str) -> list[str]:
    """stderr lines that are neither atlas's own nor a progress bar."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("atlas:")
            and not PROGRESS.match(line)]


def _sweep_config(folder: Path) -> Path:
    path = folder / "two.yaml"
    path.write_text(yaml.safe_dump({
        "model": "synthetic:0.125", "layers": ["conv2d0_pre_relu", "mixed3a_1x1_pre_relu"], "channels": 2,
        "render": {"size": 32, "octaves": 1, "steps": 2}, "batch_size": 1, "workers": 2}))
    return path


def test_dream_and_a_two_worker_sweep_print_only_atlas_lines(tmp_path):
    dream = _atlas(tmp_path, "dream", "--model", "synthetic:0.125", "--layer", "conv2d0_pre_relu", "--channel", "0",
                   "--size", "32", "--octaves", "1", "--steps", "2", "-o", "one.png")
    assert (tmp_path / "one.png").is_file() and foreign_lines(dream.stderr) == []
    sweep = _atlas(tmp_path, "sweep", str(_sweep_config(tmp_path)))
    assert "on 2 worker process(es)" in sweep.stdout  # the workers really ran (and imported TensorFlow)
    assert foreign_lines(sweep.stderr) == []


def test_verbose_brings_tensorflows_own_lines_back_from_every_process(tmp_path):
    plain = foreign_lines(subprocess.run([sys.executable, "-c", "import tensorflow"], env=_env(), capture_output=True,
                                    text=True).stderr)
    if not plain:
        pytest.skip("TensorFlow prints nothing when it starts on this machine: nothing to bring back")
    sweep = _atlas(tmp_path, "sweep", str(_sweep_config(tmp_path)), "--verbose")
    # what a bare import prints, again from the parent and from each of the 2 workers (and more on first use)
    assert len(foreign_lines(sweep.stderr)) >= 3 * len(plain)
    dream = _atlas(tmp_path, "dream", "--model", "synthetic:0.125", "--layer", "conv2d0_pre_relu", "--channel", "0",
                   "--size", "32", "--octaves", "1", "--steps", "1", "-o", "one.png", env={"ATLAS_VERBOSE": "1"})
    assert len(foreign_lines(dream.stderr)) >= len(plain)


def test_atlas_imports_tensorflow_without_keras_and_keras_still_imports_afterwards():
    """TensorFlow's eager load of Keras (half its start-up) is skipped in atlas's processes, and lifted after."""
    code = ("import sys; from atlas.console import import_tensorflow; import_tensorflow(); "
            "import tensorflow as tf; print('keras' in sys.modules, 'sklearn' in sys.modules); "
            "print(float(tf.reduce_sum(tf.ones(3)))); print('keras.src.optimizers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, check=True)
    # no Keras loaded, TensorFlow works, and the block is gone (a later `import keras` imports it as usual)
    assert out.stdout.split() == ["False", "False", "3.0", "False"], out.stderr
