"""The pipeline of `atlas run`, called from Python: sweep, examples, circuits and the gallery in one call."""

import numpy as np
import yaml
from PIL import Image

from atlas.model.graph import load_model
from atlas.pipeline import run_pipeline
from atlas.run.config import load_config
from atlas.run.manifest import read_run

TINY = {"model": "synthetic:0.125", "layers": ["conv2d0_pre_relu", "mixed3a_1x1_pre_relu"], "channels": 1,
        "workers": 1, "render": {"octaves": 1, "steps": 1, "size": 32},
        "formats": {"web": {"size": 32}, "thumb": {"size": 16}}}


def _loaded(tmp_path):
    """The tiny config, with dataset examples from three small photos."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 48, 3), np.uint8)).save(photos / f"{i}.png")
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, "output": str(tmp_path / "out"),
                                    "examples": {"folder": str(photos), "top": 2, "size": 32}}))
    return load_config(path)


def test_the_pipeline_runs_from_python_and_reports_each_step(tmp_path):
    loaded = _loaded(tmp_path)
    model = load_model(loaded.config.model)
    lines: list[str] = []
    summary = run_pipeline(loaded, model, out=lines.append)
    run = read_run(loaded.run_folder)
    assert summary.plan.folder == loaded.run_folder
    assert len(run.renders) == len(summary.plan.items) == 2 and not summary.sweep.failed
    assert summary.examples.processed > 0 and len(run.examples[("conv2d0_pre_relu", 0)]) == 2
    assert set(summary.circuits.computed) >= {"conv2d0_pre_relu", "mixed3a_1x1_pre_relu"}
    assert (loaded.run_folder / "site" / "index.html").is_file() and summary.site is not None
    assert summary.map is None  # the config asks for no map
    text = "\n".join(lines)
    assert f"output: {loaded.run_folder}" in lines and "examples: " in text and "circuits: " in text
    again = run_pipeline(loaded, model, build_site=False, out=lines.append)  # resumes: nothing to do
    assert again.site is None and "is up to date" in "\n".join(again.examples.lines())
    assert again.circuits.computed == [] and len(read_run(loaded.run_folder).renders) == 2


def test_the_dry_run_estimates_and_writes_nothing(tmp_path):
    loaded = _loaded(tmp_path)
    lines: list[str] = []
    summary = run_pipeline(loaded, load_model(loaded.config.model), dry_run=True, out=lines.append)
    assert summary.estimate_seconds > 0 and summary.sweep is None
    assert any("2 renders in this config" in line for line in lines)
    assert not loaded.run_folder.exists()
