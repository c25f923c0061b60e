"""Dataset examples: top lists against brute force, boxes, receptive-field geometry, bad files, resume, CLI."""

import errno
import json
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from atlas.analysis.examples import TopLists, run_examples
from atlas.analysis.photos import list_photos
from atlas.cli import main
from atlas.images import PHOTOS_DIR
from atlas.model.catalogue import centre_unit_box, layer_grids
from atlas.probes import probe_makers
from atlas.render.objectives import neuron
from atlas.run.manifest import Manifest, read_run
from atlas.run.plans import ExamplesPlan

LAYERS = ("conv2d0_pre_relu", "mixed3a_3x3_pre_relu", "mixed4d_3x3_bottleneck_pre_relu", "head0_bottleneck_pre_relu")


def _photo(path, seed, size=(300, 200), exif_rotate=False):
    """A smooth random colour image (distinct per seed), saved as JPEG or PNG by suffix."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (size[1] // 20 + 2, size[0] // 20 + 2, 3)).astype(np.uint8)
    image = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
    path.parent.mkdir(parents=True, exist_ok=True)
    if exif_rotate:
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees clockwise to display
        image.save(path, exif=exif)
    else:
        image.save(path)
    return path


@pytest.fixture()
def folder(tmp_path):
    """Six photos of several shapes (one EXIF-rotated) plus a shipped one, in two folders."""
    root = tmp_path / "photos"
    for i, size in enumerate([(300, 200), (200, 300), (224, 224), (400, 260), (250, 250)]):
        _photo(root / f"p{i}.png", i, size)
    _photo(root / "sub" / "rot.jpg", 9, (320, 240), exif_rotate=True)
    shutil.copy(PHOTOS_DIR / "chelsea.jpg", root / "sub" / "chelsea.jpg")
    return root


def _plan(folder, top=3, fit="crop", batch_size=4, layers=LAYERS):
    return ExamplesPlan(folder=str(folder), top=top, size=224, fit=fit, layers=tuple(layers), batch_size=batch_size)


def _fitted(path, fit):
    """An independent fit: upright, shorter side 224 by bicubic, then the centred square for crop."""
    from PIL import ImageOps

    with Image.open(path) as raw:
        image = ImageOps.exif_transpose(raw).convert("RGB")
    w, h = image.size
    scaled = (224, max(224, round(h * 224 / w))) if w <= h else (max(224, round(w * 224 / h)), 224)
    image = image.resize(scaled, Image.Resampling.BICUBIC)
    left = top = 0
    if fit == "crop":
        left, top = (scaled[0] - 224) // 2, (scaled[1] - 224) // 2
        image = image.crop((left, top, left + 224, top + 224))
    return np.asarray(image, np.float32), (w, h), scaled, (left, top)


def _lists(run_folder):
    with Manifest(run_folder / "manifest.sqlite") as manifest:
        top = manifest.example_meta()["top"]
        return [(e.layer, e.channel, e.rank, e.photo, round(e.value, 3), e.row, e.col, e.box)
                for e in manifest.examples(max_rank=top)]


@pytest.mark.parametrize("fit", ["crop", "whole"])
def test_top_lists_equal_brute_force_and_boxes_contain_the_peak(small_model, folder, tmp_path, fit):
    run = tmp_path / "run"
    summary = run_examples(_plan(folder, fit=fit), run, small_model, progress=False)
    assert summary.processed == 7 and not summary.bad
    examples = read_run(run).examples
    for name in LAYERS:
        layer = small_model.layer(name)
        fn = small_model.layer_fn(name)
        maps = {}
        for path in sorted(folder.rglob("*.*")):
            pixels, original, scaled, offset = _fitted(path, fit)
            maps[path.relative_to(folder).as_posix()] = (fn(pixels[None]).numpy()[0], original, scaled, offset)
        for channel in range(layer.channels):
            expected = sorted(((m[..., channel].max(), photo) for photo, (m, *_rest) in maps.items()),
                              key=lambda t: -t[0])[:3]
            got = examples[(name, channel)]
            assert [e.rank for e in got] == [1, 2, 3]
            np.testing.assert_allclose([e.value for e in got], [v for v, _ in expected], rtol=1e-4, atol=1e-4)
            for e in got:
                act, (w, h), scaled, (left, top) = maps[e.photo]
                assert act[..., channel].max() == pytest.approx(e.value, rel=1e-4, abs=1e-4)
                x0, y0, x1, y1 = e.box
                assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
                r, c = np.unravel_index(np.argmax(act[..., channel]), act.shape[:2])
                grid = small_model.grids(*((224, 224) if fit == "crop" else (scaled[1], scaled[0])))[name]
                cy = (grid.offset[0] + r * grid.jump[0] + top + 0.5) * h / scaled[1]
                cx = (grid.offset[1] + c * grid.jump[1] + left + 0.5) * w / scaled[0]
                assert x0 <= cx <= x1 and y0 <= cy <= y1
                assert (run / e.crop).is_file()
                assert (run / read_run(run).example_photos[e.photo].thumb).is_file()


@pytest.mark.parametrize("size", [224, 225, 97])
def test_receptive_field_offsets_match_the_gradient_support(small_model, size):
    """The input pixels an output unit depends on (union of its gradient over random images) are exactly its
    receptive field centred on offset + position x jump, wherever the field lies inside the image."""
    grids = layer_grids(small_model.graph_def, size, size)
    for name in ["conv2d0_pre_relu", "conv2d1_pre_relu", "conv2d2_pre_relu", "mixed3a_1x1_pre_relu",
                 "mixed3b_5x5_pre_relu"]:
        layer, grid = small_model.layer(name), grids[name]
        row = col = grid.size[0] // 2
        rows, cols = _gradient_support(small_model, name, size, lambda act, r=row, c=col: act[:, r, c, :])
        half = (layer.receptive_field - 1) / 2
        centre = (grid.offset[0] + row * grid.jump[0], grid.offset[1] + col * grid.jump[1])
        assert (rows[0], rows[-1]) == (max(0, centre[0] - half), min(size - 1, centre[0] + half)), name
        assert (cols[0], cols[-1]) == (max(0, centre[1] - half), min(size - 1, centre[1] + half)), name


def _gradient_support(model, name, size, unit):
    """Rows and columns of the input pixels where the gradient of `unit(activations)` [B, C] (squared, summed
    over 4 random size x size images) is nonzero, ascending."""
    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (4, size, size, 3)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(images)
        act = model.layer_fn(name)(images)
        assert tuple(act.shape[1:3]) == model.grids(size, size)[name].size
        value = tf.reduce_sum(unit(act) ** 2)
    support = np.abs(tape.gradient(value, images).numpy()).sum(axis=(0, 3)) > 0
    return np.flatnonzero(support.any(axis=1)), np.flatnonzero(support.any(axis=0))


@pytest.mark.parametrize("size", [48, 49, 97])
def test_centre_unit_box_is_the_gradient_support_of_the_neuron_objective(small_model, size):
    """The box recorded for `neuron` renders bounds exactly the pixels the objective's unit depends on (the
    unit the objective itself reads, whatever the parity of the map), clipped to the image."""
    grids = layer_grids(small_model.graph_def, size, size)
    for name in ["conv2d0_pre_relu", "conv2d2_pre_relu", "mixed3a_3x3_pre_relu", "mixed3b_5x5_pre_relu",
                 "mixed4a_1x1_pre_relu"]:
        box = centre_unit_box(grids[name], small_model.layer(name).receptive_field, size, size)
        rows, cols = _gradient_support(small_model, name, size,
                                       lambda act: tf.stack([neuron(act, tf.fill([4], c)) for c in range(2)], 1))
        assert box == (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1), (name, box)


def test_top_lists_merge_keeps_one_entry_per_photo_and_exact_after_removal():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(40, 5)).astype(np.float32)  # 40 photos, 5 channels
    lists = TopLists(5, 6)
    for start in range(0, 40, 7):
        chunk = values[start:start + 7]
        zero = np.zeros_like(chunk, dtype=np.int32)
        lists.merge(chunk, np.arange(start, start + len(chunk)), zero, zero, seen=start)
    for c in range(5):
        assert list(lists.photo[c]) == list(np.argsort(-values[:, c], kind="stable")[:6])
    lists.remove(np.array([int(lists.photo[0, 0]), int(lists.photo[1, 2])]))
    keep = np.ones(40, bool)
    for c in range(5):  # whatever remains is the exact top of the remaining photos
        filled = lists.photo[c][lists.photo[c] >= 0]
        gone = set(np.setdiff1d(np.argsort(-values[:, c])[:6], filled))
        mask = keep.copy()
        mask[list(gone)] = False
        order = [p for p in np.argsort(-values[:, c], kind="stable") if mask[p]]
        assert list(filled) == order[:len(filled)]
    zero = np.zeros((3, 5), np.int32)  # new photos merge into short lists without claiming unknown ranks
    lists.merge(np.full((3, 5), -9.0, np.float32), np.arange(40, 43), zero, zero, seen=38)
    assert not np.isin(lists.photo, np.arange(40, 43)).any()


def _make_bad_files(root):
    (root / "notes.txt").write_text("not an image")
    (root / "empty.jpg").write_bytes(b"")
    good = _photo(root / "whole.jpg", 5, (200, 200)).read_bytes()
    (root / "whole.jpg").unlink()
    (root / "truncated.jpg").write_bytes(good[: len(good) // 2])
    Image.new("RGB", (400, 400)).save(root / "huge.png")
    os.symlink("loop.jpg", root / "loop.jpg")
    os.symlink("..", root / "sub" / "up")  # a folder loop: walked once
    os.symlink("missing.jpg", root / "dangling.jpg")


def test_bad_files_are_skipped_counted_and_listed(small_model, folder, tmp_path, monkeypatch, capsys):
    _make_bad_files(folder)
    monkeypatch.setattr("atlas.analysis.photos.MAX_PIXELS", 300 * 300)
    run = tmp_path / "run"
    summary = run_examples(_plan(folder, layers=LAYERS[:1]), run, small_model, progress=False)
    reasons = dict(summary.bad)
    assert set(reasons) == {"notes.txt", "empty.jpg", "truncated.jpg", "huge.png", "loop.jpg", "dangling.jpg",
                            "p3.png", "sub/chelsea.jpg"}  # also over the lowered limit
    assert reasons["loop.jpg"] == "symlink loop" and "0 bytes" in reasons["empty.jpg"]
    assert "not an image" in reasons["notes.txt"] and "over the limit" in reasons["huge.png"]
    assert "truncated" in reasons["truncated.jpg"]
    assert summary.processed == 5
    listed = (run / "examples" / "skipped.txt").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in listed) == sorted(reasons)
    assert "skipped 8 unreadable files" in summary.lines()[1]


def test_empty_or_unreadable_folder_is_one_line_exit_2(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["examples", str(empty), "--model", "synthetic:0.125", "-o", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "has no photos" in err
    (empty / "a.txt").write_text("x")
    assert main(["examples", str(empty), "--model", "synthetic:0.125", "-o", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no readable photo" in err and "a.txt" in err


def test_resume_adding_and_changing_photos_equals_one_uninterrupted_run(small_model, folder, tmp_path):
    fresh = tmp_path / "fresh"
    run_examples(_plan(folder, top=2, batch_size=1), fresh, small_model, progress=False)
    resumed = tmp_path / "resumed"
    first = run_examples(_plan(folder, top=2, batch_size=1), resumed, small_model, progress=False, stop_after=3)
    assert first.processed == 3
    second = run_examples(_plan(folder, top=2, batch_size=1), resumed, small_model, progress=False)
    assert (second.unchanged, second.processed) == (3, 4)
    assert _lists(resumed) == _lists(fresh)
    again = run_examples(_plan(folder, top=2, batch_size=1), resumed, small_model, progress=False)
    assert again.processed == 0 and "up to date" in again.lines()[0]

    os.utime(folder / "p1.png", ns=(5, 5))  # touched, same bytes: recorded again, not processed
    _photo(folder / "new" / "n1.png", 21, (260, 300))  # adding photos processes only them
    _photo(folder / "p2.png", 22, (224, 224))  # a changed photo is processed again, its old entries gone
    os.utime(folder / "p2.png", ns=(1, 1))
    (folder / "p4.png").unlink()  # a removed photo leaves the lists
    added = run_examples(_plan(folder, top=2, batch_size=1), resumed, small_model, progress=False)
    assert (added.unchanged, added.changed, added.removed) == (5, 1, 1)
    with Manifest(resumed / "manifest.sqlite") as manifest:
        keys = {p.photo: p.key for p in manifest.example_photos()}
    assert keys["p1.png"].endswith(":5")
    assert added.processed in (2, 7)  # 7 if the removals emptied a list's reserve and the pass started over
    fresh2 = tmp_path / "fresh2"
    run_examples(_plan(folder, top=2, batch_size=1), fresh2, small_model, progress=False)
    assert _lists(resumed) == _lists(fresh2)
    used = {e[3] for e in _lists(resumed)}
    assert "p4.png" not in used
    crops = {p.relative_to(resumed).as_posix() for p in (resumed / "examples").rglob("*.jpg")}
    with Manifest(resumed / "manifest.sqlite") as manifest:
        assert crops >= {e.crop for e in manifest.examples() if e.crop}


def test_changed_settings_start_over(small_model, folder, tmp_path):
    run = tmp_path / "run"
    run_examples(_plan(folder, top=2, layers=LAYERS[:1]), run, small_model, progress=False)
    again = run_examples(_plan(folder, top=3, layers=LAYERS[:1]), run, small_model, progress=False)
    assert again.processed == 7 and again.restarted
    assert max(e[2] for e in _lists(run)) == 3
    assert len([p for p in (run / "examples").iterdir() if p.is_dir()]) == 1  # the old settings' files went


def test_cli_json_and_csv_contract(folder, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["examples", str(folder), "--model", "synthetic:0.125", "-o", str(run), "--top", "4"]
    assert main(args) == 0
    assert "7 photos processed" in capsys.readouterr().out
    assert main(args) == 0
    assert "up to date" in capsys.readouterr().out
    layer = "mixed4d_3x3_bottleneck_pre_relu"
    assert main(["examples", str(folder), "-o", str(run), "--layer", layer, "--channel", "5", "--format",
                 "json"]) == 0
    items = json.loads(capsys.readouterr().out)
    assert len(items) == 4 and [sorted(i) for i in items] == [["box", "photo", "position", "value"]] * 4
    assert [i["value"] for i in items] == sorted((i["value"] for i in items), reverse=True)
    assert {i["photo"] for i in items} <= {p.relative_to(folder).as_posix() for p in folder.rglob("*.*")}
    assert all(len(i["box"]) == 4 and len(i["position"]) == 2 for i in items)
    assert main(["examples", str(folder), "-o", str(run), "--layer", layer, "--channel", "5", "--format",
                 "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "rank,photo,value,x0,y0,x1,y1,row,col" and len(lines) == 5
    assert lines[1].split(",")[1] == items[0]["photo"]
    assert main(["examples", str(folder), "-o", str(run), "--layer", layer, "--channel", "999"]) == 2


def test_probes_are_deterministic_and_varied():
    makers = probe_makers()
    assert 200 <= len(makers) <= 400 and len({name for name, _ in makers}) == len(makers)
    first = [make() for _, make in makers[:40]]
    again = [make() for _, make in makers[:40]]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert all(a.shape == (224, 224, 3) and a.dtype == np.uint8 for a in first)
    assert len({a.tobytes() for a in first}) == len(first)
    entries, bad = list_photos("probes")
    assert len(entries) == len(makers) and not bad


def test_manifest_without_example_tables_reads_as_no_examples(tmp_path):
    path = tmp_path / "manifest.sqlite"
    Manifest(path, create=True).close()
    with Manifest(path) as manifest:
        assert manifest.examples() == [] and manifest.example_meta() == {} and manifest.example_photos() == []
    tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
    assert "examples" not in tables


def test_run_config_with_examples_sweeps_finds_examples_and_builds_the_gallery(folder, tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(f"model: synthetic:0.125\nlayers: [conv2d0_pre_relu, mixed3a_1x1_pre_relu]\nchannels: 1\n"
                      f"render: {{size: 32, octaves: 1, steps: 1}}\noutput: {tmp_path / 'out'}\n"
                      f"examples: {{folder: {folder}, top: 2}}\n")
    assert main(["run", str(config)]) == 0
    run = read_run(tmp_path / "out" / "tiny")
    assert run.example_meta["top"] == 2 and run.example_meta["layers"] == ["conv2d0_pre_relu",
                                                                          "mixed3a_1x1_pre_relu"]
    assert len(run.examples[("conv2d0_pre_relu", 0)]) == 2
    page = (tmp_path / "out" / "tiny" / "site" / "channels" / "conv2d0_pre_relu" / "0000.html").read_text()
    assert "Dataset examples" in page
    other = tmp_path / "other"
    _photo(other / "x.png", 30)
    assert main(["run", str(config), "--examples", str(other)]) == 0  # the command line replaces the folder
    assert "1 photos processed" in capsys.readouterr().out
    assert {e.photo for e in read_run(tmp_path / "out" / "tiny").examples[("conv2d0_pre_relu", 0)]} == {"x.png"}
    config.write_text(config.read_text().replace(str(folder), str(tmp_path / "nowhere")))
    assert main(["run", str(config)]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_sigkill_mid_pass_loses_nothing_recorded(small_model, folder, tmp_path):
    """A real pass, checkpointing after every photo, killed once two photos are recorded; the next pass
    completes it to the same lists as an uninterrupted one, and every recorded crop exists."""
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "killed"
    code = ("import atlas.analysis.examples as e; e.CHECKPOINT_SECONDS = 0; from atlas.cli import main; "
            f"main(['examples', {str(folder)!r}, '--model', 'synthetic:0.125', '-o', {str(run)!r}, '--top', '2', "
            "'--batch-size', '1'])")
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    recorded, deadline = 0, time.monotonic() + 120
    while recorded < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        try:
            with sqlite3.connect(run / "manifest.sqlite") as db:
                recorded = db.execute("SELECT count(*) FROM example_photos").fetchone()[0]
        except sqlite3.Error:
            pass
    process.send_signal(signal.SIGKILL)
    process.wait()
    with Manifest(run / "manifest.sqlite") as manifest:
        kept = manifest.example_photos()
        complete = manifest.example_meta()["complete"]
        assert not complete or all((run / e.crop).is_file() for e in manifest.examples() if e.crop)
    assert len(kept) >= 2
    assert bool(read_run(run).examples) == complete  # readers ignore a pass's lists until its crops exist
    everything = [layer.name for layer in small_model.layers]  # as the command line asks
    resumed = run_examples(_plan(folder, top=2, batch_size=1, layers=everything), run, small_model, progress=False)
    assert not resumed.restarted and resumed.unchanged == len(kept) and resumed.processed == 7 - len(kept)
    fresh = tmp_path / "fresh"
    run_examples(_plan(folder, top=2, batch_size=1, layers=everything), fresh, small_model, progress=False)
    assert _lists(run) == _lists(fresh)
    assert all((run / e.crop).is_file() for entries in read_run(run).examples.values() for e in entries)


@pytest.mark.parametrize("code, cause", [(errno.EROFS, "read-only file system"),
                                         (errno.ENOSPC, "no space left on the disk")])
def test_a_run_folder_that_cannot_be_written_is_one_line_exit_2(folder, tmp_path, monkeypatch, capsys, code,
                                                                 cause):
    run = tmp_path / "run"
    real = Path.mkdir

    def failing(self, *args, **kwargs):
        if self == run or run.is_relative_to(self) or self.is_relative_to(run):
            raise OSError(code, os.strerror(code), str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", failing)
    assert main(["examples", str(folder), "--model", "synthetic:0.125", "-o", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot write to {run}: {cause}" in err


@pytest.mark.parametrize("where", ["file", "file/sub"])
def test_an_output_that_a_file_is_in_the_way_of_is_one_line_exit_2(folder, tmp_path, capsys, where):
    (tmp_path / "file").write_text("not a folder")
    assert main(["examples", str(folder), "--model", "synthetic:0.125", "-o", str(tmp_path / where)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "a file is in the way" in err and str(tmp_path / where) in err
    assert (tmp_path / "file").read_text() == "not a folder"


def test_an_examples_sheet_of_a_run_without_renders_refuses_a_mode(folder, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["examples", str(folder), "--model", "synthetic:0.125", "-o", str(run), "--top", "2"]) == 0
    sheet = ["figure", str(run), "--sheet", "conv2d0_pre_relu", "--channels", "0-1", "--examples", "--dpi", "20"]
    assert main(sheet) == 0  # no renders: each row is the channel's patches
    capsys.readouterr()
    assert main([*sheet, "--mode", "noise"]) == 2  # not silently a sheet without the asked-for dreams
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown mode or photo 'noise'" in err
