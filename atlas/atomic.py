"""Atomic file writes: write a hidden temp file beside the target, fsync, then rename over it."""

from __future__ import annotations

import errno
import os
import sqlite3
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from atlas.errors import UserError

PART_MARK = ".part"


@contextmanager
def atomic_path(target: str | os.PathLike[str], sync_folder: bool = True) -> Iterator[Path]:
    """Yield a temp path beside `target`; on success it is fsynced and renamed to `target`, else removed.

    The temp name keeps the target's suffix so that libraries which infer a format from it still work.
    `sync_folder=False` leaves syncing the rename to the caller (`sync_folders`, once for many files).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=PART_MARK + target.suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a published file should be readable like any other
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        if sync_folder:
            _fsync_dir(target.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes, sync_folder: bool = True) -> None:
    """Write `data` to `target` atomically."""
    with atomic_path(target, sync_folder) as tmp:
        tmp.write_bytes(data)


def sync_folders(folders: Iterable[str | os.PathLike[str]]) -> None:
    """Make the renames into these folders durable (after writes with `sync_folder=False`)."""
    for folder in set(map(Path, folders)):
        _fsync_dir(folder)


def atomic_write_text(target: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 `text` to `target` atomically."""
    atomic_write_bytes(target, text.encode("utf-8"))


def remove_stale_parts(folder: str | os.PathLike[str]) -> int:
    """Delete temp files a killed process left under `folder`; return how many were removed."""
    removed = 0
    for path in Path(folder).rglob(f".*{PART_MARK}*"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable by syncing its directory (a no-op where the OS does not allow it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# errno -> (the cause, the fix, where else to write) of a write that cannot succeed until the user acts
WRITE_PROBLEMS = {
    errno.EACCES: ("permission denied", "give your user write access to it", "a writable folder"),
    errno.EPERM: ("operation not permitted", "give your user write access to it", "a writable folder"),
    errno.EROFS: ("read-only file system", "mount that disk writable", "a folder on a writable disk"),
    errno.ENOSPC: ("no space left on the disk", "free some space", "a folder on another disk"),
    errno.EDQUOT: ("disk quota exceeded", "free some space within your quota", "a folder on another disk"),
    errno.ENOTDIR: ("a file is in the way of a folder on that path", "move the file", "another folder"),
    errno.EEXIST: ("a file is in the way of a folder on that path", "move the file", "another folder"),
}
# making the output folder itself (or one above it) failed with "no such file": the file system refuses folders
# there (e.g. /proc); only told when the error names the folder or one above it, never a file inside it
NO_FOLDER_THERE = ("this file system does not allow a folder there", "choose a path on a disk", "another folder")
SWEEP_OUTPUT = "set output: to"  # how a user points a config's sweep elsewhere
OUTPUT_FLAG = "give -o"  # how a user points a command with -o elsewhere


def write_problem(exc: BaseException, folder: str | os.PathLike[str], elsewhere: str | None = SWEEP_OUTPUT,
                  resumable: bool = True) -> str | None:
    """One line naming `folder`, the cause and the fix when `exc` is a write the user must make possible
    (not writable, read-only, disk full, quota, a file in the way); None for any other error. `elsewhere`: how to
    write to another folder instead (None: the command cannot); `resumable`: a re-run keeps finished work."""
    code = getattr(exc, "errno", None) if isinstance(exc, OSError) else _sqlite_errno(exc)
    if code == errno.ENOENT and _making(exc, Path(folder)):
        cause, fix, other = NO_FOLDER_THERE
    elif code in WRITE_PROBLEMS:
        cause, fix, other = WRITE_PROBLEMS[code]
    else:
        return None
    fix += f", or {elsewhere} {other}" if elsewhere else ""
    again = "run the same command again" + (" (finished work is kept)" if resumable else "")
    return f"cannot write to {folder}: {cause}; {fix}, then {again}"


@contextmanager
def stop_on_write_errors(folder: str | os.PathLike[str], elsewhere: str | None = SWEEP_OUTPUT,
                         resumable: bool = True) -> Iterator[None]:
    """Turn a write under `folder` that the user must make possible (permissions, read-only, full disk, quota, a
    file in the way) into one line (`write_problem`); other errors, and errors on other paths, pass."""
    folder = Path(folder)
    try:
        yield
    except (OSError, sqlite3.OperationalError) as exc:
        problem = write_problem(exc, folder, elsewhere, resumable)
        where = getattr(exc, "filename", None)
        if problem is None or (where and not _related(Path(where).absolute(), folder.absolute())):
            raise
        raise UserError(problem) from None


def _making(exc: BaseException, folder: Path) -> bool:
    """`exc` names `folder` or a folder above it: making the output folder failed, not reading a file in it."""
    where = getattr(exc, "filename", None)
    if not where:
        return False
    path, folder = Path(where).absolute(), folder.absolute()
    return path == folder or path in folder.parents


def _related(path: Path, folder: Path) -> bool:
    """`path` is the folder, inside it, or one of the folders above it (created on the way)."""
    return path == folder or folder in path.parents or path in folder.parents


def _sqlite_errno(exc: BaseException) -> int | None:
    """The errno an SQLite write error stands for (a full disk, a read-only database or folder)."""
    if not isinstance(exc, sqlite3.OperationalError):
        return None
    text = str(exc).lower()
    if "disk is full" in text:
        return errno.ENOSPC
    if "readonly" in text or "read-only" in text:
        return errno.EROFS
    if "unable to open database" in text:
        return errno.EACCES
    return None
