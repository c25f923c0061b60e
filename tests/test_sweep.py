"""The sweep: config validation, resume and idempotence, SIGKILL safety, the lock, shards, the dask backend."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

from atlas.cli import main
from atlas.errors import UserError
from atlas.run.config import load_config
from atlas.run.estimate import dry_run
from atlas.run.manifest import MANIFEST_FILE, read_run
from atlas.run.plan import WorkItem, shard_items
from atlas.run.sweep import LOCK_FILE, sweep

TINY = {"model": "synthetic:0.125", "layers": ["conv2d0_pre_relu", "mixed3a_1x1_pre_relu"], "channels": 2,
        "workers": 1,  # in this process: fast tests; worker processes have their own test
        "render": {"octaves": 1, "steps": 2, "size": 64}, "formats": {"web": {"size": 64},
                                                                      "thumb": {"size": 32}}}


def write_config(folder: Path, name: str = "tiny", **changes) -> Path:
    config = {**TINY, "output": str(folder / "output"), **changes}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def records(run_folder: Path) -> list[tuple]:
    with sqlite3.connect(run_folder / MANIFEST_FILE) as db:  # the whole sweep's manifest
        return db.execute("SELECT mode, layer, channel, settings_hash FROM renders ORDER BY 1, 2, 3").fetchall()


def assert_complete(run_folder: Path, expected: int) -> None:
    """Every record's three images exist and decode; nothing half-written is left."""
    run = read_run(run_folder)
    assert len(run.renders) == expected
    assert len({r.key for r in run.renders}) == expected
    for render in run.renders:
        for path in (render.image, render.web, render.thumb):
            with Image.open(run_folder / path) as image:
                image.load()
    assert not [p for p in run_folder.rglob("*.part*")]


@pytest.mark.parametrize("changes, message", [
    ({"chanels": 4}, "unknown key 'chanels' (did you mean 'channels'?)"),
    ({"render": {"step": 3}}, "unknown key 'render.step' (did you mean 'steps'?)"),
    ({"seed": "abc"}, "seed: Input should be a valid integer"),
    ({"channels": [0, 64]}, "channel 64 is out of range for conv2d0_pre_relu, which has 8 channels"),
    ({"modes": ["photo"], "photos": ["nowhere.jpg"]}, "nowhere.jpg: no such file"),
    ({"modes": ["photo"]}, "mode 'photo' needs at least one entry under photos"),
    ({"layers": ["mixed9*"]}, "pattern 'mixed9*' matches no layer"),
    ({"layers": ["mixed4d_3x3_botleneck_pre_relu"]}, "did you mean mixed4d_3x3_bottleneck_pre_relu"),
])
def test_config_errors_are_one_line_and_exit_2(tmp_path, capsys, changes, message):
    path = write_config(tmp_path, **changes)
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "output").exists()  # nothing was created


def test_missing_config_file(tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "none.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_a_relative_model_path_starts_at_the_configs_folder(tmp_path, monkeypatch, capsys):
    """`model: models/net.pb` (or `{path: ..., preprocess: ...}`) in a config file names a file beside the config,
    wherever atlas runs from; absolute paths, inception5h, synthetic and keras:NAME stay as written, and so does a
    shipped config's model; a missing file is one line naming the path as given and where it was looked for."""
    import yaml as pyyaml

    from atlas.model.graph import load_model
    from atlas.model.source import write_synthetic
    from atlas.shipped import shipped_configs

    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    net = write_synthetic(project / "models" / "net.pb", 0.125)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    plain = load_config(write_config(project, name="plain", model="models/net.pb"))
    mapping = load_config(write_config(project, name="mapping", model={"path": "models/net.pb",
                                                                       "preprocess": "mean=117"}))
    assert plain.config.model_spec == mapping.config.model_spec == str(net)
    assert mapping.config.model_preprocess == "mean=117"
    assert load_model(plain.config.model_spec).sha256 == load_model(str(net)).sha256
    assert load_config(write_config(project, name="absolute", model=str(net))).config.model_spec == str(net)
    for spec in ("inception5h", "synthetic:0.125", "keras:ResNet50"):
        assert load_config(write_config(project, name="named", model=spec)).config.model_spec == spec
    demo = pyyaml.safe_load(shipped_configs()["demo"].read_text()).get("model", "inception5h")
    assert load_config("demo").config.model_spec == demo
    missing = write_config(project, name="missing", model="models/gone.keras")
    with pytest.raises(UserError, match="models/gone.keras") as caught:
        load_config(missing)
    assert str(project / "models" / "gone.keras") in str(caught.value)
    assert main(["sweep", str(missing), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(project / "models" / "gone.keras") in err and "Traceback" not in err


def test_sweep_records_everything_then_skips_it_and_redoes_only_changed_settings(tmp_path):
    path = write_config(tmp_path, modes=["noise", "photo"], photos=["chelsea"], layer_dreams=True)
    loaded = load_config(path)
    first = sweep(loaded)
    expected = 2 * 2 + 2 * 2 + 2  # noise + photo channels, + one whole-layer dream per layer for the photo
    assert (first.done, first.skipped, first.failed) == (expected, 0, [])
    assert_complete(loaded.run_folder, expected)
    run = read_run(loaded.run_folder)
    assert {m.id for m in run.modes} == {"noise", "photo-chelsea"}
    assert {m.objective for m in run.modes} == {"channel"} and not run.centre_units  # no unit to outline
    assert "centre_units" not in json.loads((loaded.run_folder / "run.json").read_text())
    assert (loaded.run_folder / "photos" / "chelsea.jpg").is_file()
    assert all(r.versions and r.seconds > 0 and r.settings_hash for r in run.renders)
    assert {r.device.split()[-1] for r in run.renders} == {"cpu"}  # what rendered each, and in what pass:
    assert {r.batch for r in run.renders if r.channel >= 0} == {2} and all(r.batch for r in run.renders)

    again = sweep(loaded)
    assert (again.done, again.skipped) == (0, expected)

    (loaded.run_folder / run.renders[0].thumb).unlink()  # a lost file is redone
    assert sweep(loaded).done == 1
    changed = load_config(write_config(tmp_path, modes=["noise", "photo"], photos=["chelsea"],
                                       layer_dreams=True, seed=1))
    assert sweep(changed).done == expected  # new seed, new hash: everything again
    assert_complete(loaded.run_folder, expected)


def test_shards_are_disjoint_and_cover_everything(tmp_path):
    items = [WorkItem("noise", f"layer{i // 7}", i % 7) for i in range(50)]
    slices = [shard_items(items, (k, 3)) for k in (1, 2, 3)]
    assert sorted(map(repr, sum(slices, []))) == sorted(map(repr, items))
    assert sum(len(s) for s in slices) == len(items)

    loaded = load_config(write_config(tmp_path))
    done = [sweep(loaded, shard=f"{k}/2").done for k in (1, 2)]
    assert done == [2, 2]
    assert sorted(p.name for p in loaded.run_folder.glob("manifest*")) == [
        "manifest.shard-1-of-2.sqlite", "manifest.shard-2-of-2.sqlite"]  # one writer each
    assert_complete(loaded.run_folder, 4)  # readers see the union
    assert sweep(loaded).done == 0  # the merged shards are the whole sweep


def test_bad_shard_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="K/N"):
        sweep(load_config(write_config(tmp_path)), shard="3-8")


def test_a_second_sweep_on_the_same_output_is_refused(tmp_path, capsys):
    from filelock import FileLock

    loaded = load_config(write_config(tmp_path))
    loaded.run_folder.mkdir(parents=True)
    with FileLock(str(loaded.run_folder / LOCK_FILE)):
        assert main(["sweep", str(loaded.path)]) == 2
        assert main(["sweep", str(loaded.path), "--shard", "1/2"]) == 2
    assert "another atlas sweep is writing" in capsys.readouterr().err
    with FileLock(str(loaded.run_folder / f"{LOCK_FILE}.shard-1-of-2")):  # slice 1 running elsewhere
        assert main(["sweep", str(loaded.path)]) == 2  # the whole sweep waits
        assert main(["sweep", str(loaded.path), "--shard", "2/2"]) == 0  # another slice may run alongside
    assert "another atlas sweep is writing" in capsys.readouterr().err


def test_dry_run_estimates_and_writes_nothing(tmp_path):
    import io

    loaded = load_config(write_config(tmp_path))
    out = io.StringIO()
    assert dry_run(loaded, out=out) > 0
    assert "4 renders in this config" in out.getvalue() and "estimated" in out.getvalue()
    assert not loaded.run_folder.exists()


def test_sigkill_at_any_moment_then_rerun_completes(tmp_path):
    """Kill a real sweep process twice mid-flight; the third run finishes with every record and file whole."""
    layers = ["conv2d0_pre_relu", "conv2d1_pre_relu", "conv2d2_pre_relu", "mixed3a_1x1_pre_relu"]
    path = write_config(tmp_path, layers=layers, channels=4, batch_size=1)
    run_folder = tmp_path / "output" / "tiny"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    for wait_for in (1, 6):
        process = subprocess.Popen([sys.executable, "-m", "atlas.cli", "sweep", str(path)], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 180
        while time.time() < deadline and process.poll() is None:
            if (run_folder / MANIFEST_FILE).exists() and len(_safe_records(run_folder)) >= wait_for:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the sweep finished before it could be killed"
        time.sleep(0.3)  # land somewhere inside the next batch
        process.send_signal(signal.SIGKILL)
        process.wait()
    killed_with = len(_safe_records(run_folder))
    assert 0 < killed_with < 16
    assert main(["sweep", str(path)]) == 0
    assert_complete(run_folder, 16)


def _safe_records(run_folder: Path) -> list[tuple]:
    try:
        return records(run_folder)
    except sqlite3.Error:
        return []


def test_worker_processes_share_the_work(tmp_path):
    loaded = load_config(write_config(tmp_path, workers=2, batch_size=1))
    summary = sweep(loaded)
    assert (summary.done, summary.failed) == (4, [])
    assert all(f":{os.getpid()}" not in worker for worker in summary.workers)  # loky's processes, not this one
    assert_complete(loaded.run_folder, 4)


def test_dask_backend_on_a_local_cluster(tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    loaded = load_config(write_config(tmp_path))
    # two single-thread worker processes
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=":0") as cluster:
        summary = sweep(loaded, backend="dask", scheduler=cluster.scheduler_address)
    assert (summary.done, summary.failed) == (4, [])
    assert summary.workers and f":{os.getpid()}" not in next(iter(summary.workers))  # rendered by dask's worker
    assert_complete(loaded.run_folder, 4)


def test_both_methods_as_two_modes_with_facets_then_resume_and_change_one(tmp_path):
    """modes [noise, fourier] with diversity 2: both methods render into one run, each channel's two facets
    are recorded and written; a re-run skips everything; new fourier settings redo only the fourier mode."""
    both = {"modes": ["noise", "fourier"], "diversity": 2, "fourier": {"steps": 4}}
    loaded = load_config(write_config(tmp_path, **both))
    assert (sweep(loaded).done, sweep(loaded).done) == (2 * 2 * 2 * 2, 0)  # layers x channels x modes x facets
    run = read_run(loaded.run_folder)
    assert [(m.id, m.method, m.facets) for m in run.modes] == [("noise", "deepdream", 2), ("fourier", "fourier", 2)]
    assert len(run.renders) == 8 and len(run.facets) == 8  # facet 0 of every key, and each key's two facets
    facets = run.facets[("fourier", "conv2d0_pre_relu", 1)]
    assert [(r.facet, r.web) for r in facets] == [(0, "images/fourier/conv2d0_pre_relu/0001.web.jpg"),
                                                  (1, "images/fourier/conv2d0_pre_relu/0001-facet1.web.jpg")]
    assert all((loaded.run_folder / r.image).is_file() for found in run.facets.values() for r in found)
    info = json.loads((loaded.run_folder / "run.json").read_text())
    assert info["settings"]["mode_render"]["fourier"]["steps"] == 4
    assert info["settings"]["mode_render"]["fourier"]["method"] == "fourier"

    (loaded.run_folder / facets[1].thumb).unlink()  # a lost facet redoes its channel
    assert sweep(loaded).done == 2
    hashes = {r.mode: r.settings_hash for r in read_run(loaded.run_folder).renders}
    changed = load_config(write_config(tmp_path, **{**both, "fourier": {"steps": 5}}))
    assert sweep(changed).done == 2 * 2 * 2  # the fourier mode only
    after = {r.mode: r.settings_hash for r in read_run(loaded.run_folder).renders}
    assert after["noise"] == hashes["noise"] and after["fourier"] != hashes["fourier"]


def test_render_method_fourier_alone_is_the_fourier_mode(tmp_path):
    loaded = load_config(write_config(tmp_path, render={"method": "fourier", "steps": 3, "size": 48,
                                                        "objective": "neuron"}))
    assert [m.id for m in loaded.modes()] == ["fourier"]
    summary = sweep(loaded)
    assert (summary.done, summary.failed) == (4, [])
    run = read_run(loaded.run_folder)
    assert {r.mode for r in run.renders} == {"fourier"} and run.settings["render"]["steps"] == 3


def test_neuron_runs_record_each_noise_modes_centre_unit_box_per_layer(tmp_path, small_model):
    """A neuron sweep records the objective of every mode and, for modes from noise (both methods), the box of
    the centre unit's receptive field in every layer at the render size; a photo mode gets no box (its tiles
    are shifted at random every step, so no one unit is maximised)."""
    from atlas.model.catalogue import centre_unit_box

    loaded = load_config(write_config(tmp_path, modes=["noise", "fourier", "photo"], photos=["chelsea"],
                                      channels=1, render={**TINY["render"], "objective": "neuron", "size": 48,
                                                          "steps": 1, "photo_steps": 1, "photo_octaves": 1},
                                      fourier={"steps": 1}))
    assert sweep(loaded).failed == []
    run = read_run(loaded.run_folder)
    assert {m.id: m.objective for m in run.modes} == dict.fromkeys(["noise", "fourier", "photo-chelsea"], "neuron")
    assert set(run.centre_units) == {"noise", "fourier"}
    grids = small_model.grids(48, 48)
    for units in run.centre_units.values():
        assert (units.width, units.height) == (48, 48)
        # every layer and block output, for any shard
        assert set(units.boxes) == {layer.name for layer in small_model.all_layers}
        for layer in small_model.all_layers:
            assert units.boxes[layer.name] == centre_unit_box(grids[layer.name], layer.receptive_field, 48, 48)
    rendered = next(r for r in run.renders if r.mode == "noise")
    with Image.open(loaded.run_folder / rendered.image) as image:
        assert image.size == (48, 48)  # the box is in the rendered image's pixels


@pytest.mark.parametrize("changes, message", [
    ({"render": {"method": "fourier"}, "modes": ["noise", "fourier"]}, "put the fourier settings under fourier:"),
    ({"fourier": {"steps": 5}}, "add fourier to modes"),
    ({"render": {"method": "pixels"}}, "render.method: Input should be 'auto', 'deepdream', 'fourier' or 'maco'"),
    ({"diversity": 0}, "diversity: Input should be greater than or equal to 1"),
])
def test_method_config_errors(tmp_path, capsys, changes, message):
    assert main(["sweep", str(write_config(tmp_path, **changes))]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_dry_run_counts_each_methods_steps_and_facets(tmp_path):
    from atlas.render.settings import RenderSettings
    from atlas.render.cost import noise_cost

    fourier = RenderSettings(method="fourier")
    assert noise_cost(fourier) > 10 * noise_cost(RenderSettings())  # 512 full-size steps against 3 x 10 octaves
    assert noise_cost(replace_settings(fourier, steps=1024)) == pytest.approx(2 * noise_cost(fourier), rel=0.01)
    assert noise_cost(replace_settings(fourier, diversity=4)) == pytest.approx(4 * noise_cost(fourier))
    import io

    out = io.StringIO()
    assert dry_run(load_config(write_config(tmp_path, render={"method": "fourier", "steps": 4, "size": 64})),
                   out=out) > 0
    assert "4 renders in this config" in out.getvalue()


def replace_settings(settings, **changes):
    from dataclasses import replace

    return replace(settings, **changes)


def test_the_site_counts_missing_renders_among_those_the_config_asks_for(tmp_path):
    """run.json records each mode's asked-for channels (over every shard), so the gallery calls a render missing
    only if the config asks for it: not the rest of the catalogue, which a 2-layer run never meant to render."""
    from atlas.publish.site import build_site

    loaded = load_config(write_config(tmp_path))
    assert sweep(loaded, shard="1/2").done == 2
    info = json.loads((loaded.run_folder / "run.json").read_text())
    assert info["planned"] == {"noise": {"conv2d0_pre_relu": "0-1", "mixed3a_1x1_pre_relu": "0-1"}}
    assert build_site(loaded.run_folder).missing_renders == 2  # the other shard's half
    sweep(loaded, shard="2/2")
    report = build_site(loaded.run_folder)
    assert report.missing_renders == 0 and "renders missing" not in report.summary()
    assert "4 rendered of the 4 asked for" in (report.out / "index.html").read_text()
    gone = read_run(loaded.run_folder).renders[0]
    (loaded.run_folder / gone.thumb).unlink()
    assert build_site(loaded.run_folder).missing_renders == 1
    del info["planned"]  # a folder written before the selection was recorded: every catalogued channel counts
    (loaded.run_folder / "run.json").write_text(json.dumps(info))
    catalogue = sum(layer.channels for layer in read_run(loaded.run_folder).layers)
    assert build_site(loaded.run_folder).missing_renders == catalogue - 3


def test_each_worker_keeps_to_the_layers_it_started():
    """Every mode of a layer goes to one worker process (its functions are traced once, not in each process);
    plan order holds within a layer, and a worker with nothing of its own left helps with the longest layer."""
    from atlas.run.plan import Batch
    from atlas.run.workers import LayerQueue

    batches = [Batch(mode, f"layer{i}", (c,)) for i in range(4) for mode in ("noise", "photo") for c in (0, 1)]
    queue, taken = LayerQueue(batches), {0: [], 1: []}
    for slot in [0, 1] * 8:
        taken[slot].append(queue.take(slot))
    assert not queue and sorted(taken[0] + taken[1], key=batches.index) == batches
    assert {b.layer for b in taken[0]} == {"layer0", "layer2"} and {b.layer for b in taken[1]} == {"layer1", "layer3"}
    assert all(sorted(mine, key=batches.index) == mine for mine in taken.values())
    uneven = LayerQueue([Batch("noise", "a", (c,)) for c in range(3)] + [Batch("noise", "b", (0,))])
    got = [uneven.take(slot).layer for slot in (0, 1, 1, 1)]
    assert got == ["a", "b", "a", "a"]  # worker 1 finished its layer, so it helps with a
