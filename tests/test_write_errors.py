"""Every command that writes reports an output it cannot write as the sweep does: one line, exit code 2."""

import errno
import os
from pathlib import Path

import pytest

from atlas import atomic
from atlas.cli import main
from tests.fakerun import make_fake_run, synthetic_layers

DREAM = ["dream", "--model", "synthetic:0.125", "--layer", "conv2d0_pre_relu", "--channel", "0", "--octaves", "1",
         "--steps", "1", "--size", "32"]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """A small fake run: three layers, half their channels."""
    return make_fake_run(tmp_path_factory.mktemp("runs") / "run", layers=synthetic_layers(0.125)[:3],
                         fraction=0.5, size=32, thumb=16)


def one_line(capsys, cause: str, folder: Path) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"atlas: error: cannot write to {folder}: {cause}"), err
    return err


@pytest.fixture
def in_the_way(tmp_path) -> Path:
    """A file where a command is asked to make a folder."""
    path = tmp_path / "notadir"
    path.write_text("a file")
    return path


@pytest.mark.parametrize("output, folder", [("notadir/out/", "notadir/out"), ("notadir/dream.png", "notadir")])
def test_dream_into_a_file_in_the_way_is_one_line_before_rendering(tmp_path, in_the_way, capsys, monkeypatch,
                                                                    output, folder):
    from atlas.render import loop

    monkeypatch.setattr(loop, "render_channels", lambda *a, **k: pytest.fail("rendered before the check"))
    assert main([*DREAM, "-o", str(tmp_path / output)]) == 2
    err = one_line(capsys, "a file is in the way of a folder on that path", tmp_path / folder)
    assert "give -o another folder" in err and "finished work" not in err  # nothing of a dream is kept
    assert in_the_way.read_text() == "a file"


@pytest.mark.parametrize("code, cause", [(errno.EROFS, "read-only file system"),
                                         (errno.ENOSPC, "no space left on the disk")])
def test_dream_that_cannot_save_is_one_line(tmp_path, capsys, monkeypatch, code, cause):
    """A disk that fills up (or turns read-only) while the dream renders: told when the image is saved."""
    from atlas import images

    def failing(path, pixels, *args, **kwargs):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(images, "save_image", failing)
    assert main([*DREAM, "-o", str(tmp_path / "out")]) == 2
    one_line(capsys, cause, tmp_path / "out")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes to read-only folders")
def test_dream_into_a_read_only_folder_is_one_line(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        assert main([*DREAM, "-o", str(locked / "out")]) == 2
    finally:
        locked.chmod(0o700)
    one_line(capsys, "permission denied", locked / "out")


@pytest.mark.parametrize("output, folder", [("notadir/figure.png", "notadir"), ("notadir/sub/figure.pdf",
                                                                                  "notadir/sub")])
def test_figure_into_a_file_in_the_way_is_one_line(run_folder, tmp_path, in_the_way, capsys, output, folder):
    assert main(["figure", str(run_folder), "--sheet", "conv2d0_pre_relu", "--dpi", "20", "-o",
                 str(tmp_path / output)]) == 2
    assert "give -o another folder" in one_line(capsys, "a file is in the way", tmp_path / folder)


def test_figure_whose_default_folder_is_a_file_is_one_line(run_folder, capsys):
    (run_folder / "figures").write_text("a file")
    try:
        assert main(["figure", str(run_folder), "--sheet", "conv2d0_pre_relu", "--dpi", "20"]) == 2
    finally:
        (run_folder / "figures").unlink()
    one_line(capsys, "a file is in the way", run_folder / "figures")


def test_build_with_a_file_in_the_way_inside_the_site_is_one_line(run_folder, capsys):
    site = run_folder / "site"
    site.mkdir(exist_ok=True)
    (site / "static").write_text("a file")
    try:
        assert main(["build", str(run_folder)]) == 2
        one_line(capsys, "a file is in the way", site)
    finally:
        (site / "static").unlink()
    assert main(["build", str(run_folder)]) == 0  # once moved, the same command builds it


@pytest.mark.parametrize("code, cause", [(errno.EACCES, "permission denied"), (errno.EROFS, "read-only file system"),
                                         (errno.ENOSPC, "no space left on the disk")])
def test_build_that_cannot_write_its_pages_is_one_line(run_folder, tmp_path, capsys, monkeypatch, code, cause):
    from atlas.publish import site

    def failing(target, data, sync_folder=True):
        raise OSError(code, os.strerror(code), str(target))

    monkeypatch.setattr(site, "atomic_write_bytes", failing)
    out = tmp_path / "site"
    with pytest.raises(atomic.UserError) as caught:
        site.build_site(run_folder, out)
    message = str(caught.value)
    assert message.startswith(f"cannot write to {out}: {cause}; ") and "\n" not in message


def test_write_errors_on_other_paths_still_raise(tmp_path):
    """Only the output's own folder (or one above it, made on the way) is the user's to fix here."""
    with pytest.raises(OSError), atomic.stop_on_write_errors(tmp_path / "out"):
        raise OSError(errno.EACCES, "denied", str(tmp_path / "elsewhere" / "file"))
    with pytest.raises(ValueError), atomic.stop_on_write_errors(tmp_path / "out"):
        raise ValueError("a bug")


def test_a_model_cache_that_cannot_be_written_is_one_line(isolated_cache, capsys, monkeypatch):
    """The real model's zip is in the cache, but extracting its graph there fails (a read-only cache)."""
    from atlas.model import source
    from tests.test_source import make_zip

    isolated_cache.mkdir(parents=True)
    (isolated_cache / source.ZIP_NAME).write_bytes(make_zip())

    def read_only(target, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(target))

    monkeypatch.setattr(source, "atomic_path", read_only)
    assert main(["layers", "--model", "inception5h"]) == 2
    assert "set ATLAS_CACHE_DIR to a folder on a writable disk" in one_line(capsys, "read-only file system",
                                                                             isolated_cache)


def test_a_folder_the_file_system_refuses_is_one_line_but_a_missing_file_inside_is_not(tmp_path):
    """mkdir under /proc fails with "no such file" naming the folder: a write problem. The same errno naming a file
    inside the output folder (a read of something missing) is a bug and passes."""
    folder = tmp_path / "out"
    with pytest.raises(atomic.UserError) as caught, atomic.stop_on_write_errors(folder, atomic.OUTPUT_FLAG):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(folder))
    assert str(caught.value).startswith(f"cannot write to {folder}: this file system does not allow a folder there")
    assert "give -o another folder" in str(caught.value)
    with pytest.raises(FileNotFoundError), atomic.stop_on_write_errors(folder):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(folder / "manifest.sqlite"))


PROC = Path("/proc/atlas-cannot-be-here")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="no /proc file system here")
@pytest.mark.parametrize("command", [
    [*DREAM, "-o", str(PROC)],
    [*DREAM, "-o", str(PROC / "one.png")],
    ["examples", "probes", "--model", "synthetic:0.125", "-o", str(PROC)],
    ["map", "probes", "--model", "synthetic:0.125", "--no-render", "-o", str(PROC)],
], ids=["dream", "dream-file", "examples", "map"])
def test_an_output_folder_under_proc_is_one_line(command, capsys):
    """Each command that makes an output folder: one line naming it and `-o`, where `atlas map -o /proc/...` once
    ended in a FileNotFoundError traceback."""
    assert main(command) == 2
    err = one_line(capsys, "this file system does not allow a folder there", PROC)
    assert "give -o another folder" in err


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="no /proc file system here")
def test_a_figure_under_proc_is_one_line(run_folder, capsys):
    assert main(["figure", str(run_folder), "--sheet", "conv2d0_pre_relu", "--dpi", "20", "-o",
                 str(PROC / "f.png")]) == 2
    one_line(capsys, "this file system does not allow a folder there", PROC)
