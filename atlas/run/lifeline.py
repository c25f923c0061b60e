"""Worker processes that end with their parent: a sweep killed by anything (SIGKILL, the OOM killer, a
closed terminal) leaves no worker rendering on, holding memory or a GPU.

A local worker calls `exit_with_parent` first thing (the pool's initializer). Two mechanisms, because
neither alone covers every case:

- a watchdog thread (every OS): it waits on the pipe that `multiprocessing`'s spawn start method keeps open
  from the parent to each child (`multiprocessing.parent_process().sentinel`: it reads EOF the moment the
  parent dies, whoever killed it) and checks `os.getppid()` against the parent's pid every `POLL` seconds (for
  a child that has no such pipe); when either says the parent is gone it ends the process with `os._exit`.
  It needs the GIL, which a long call into C may hold for a while;
- on Linux, `prctl(PR_SET_PDEATHSIG, SIGKILL)`: the kernel kills the worker at once, GIL or not. The kernel
  ties it to the *thread* that created the process, not to the process, so it is set only when the parent says
  the main thread created this worker (`deathsig=True`); a worker created by another thread (e.g. a pool's own
  management thread) would otherwise be killed when that thread ends, with its parent alive.

Then the parent's pid is compared once more, for a parent that died before the watchdog started.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
import threading
from multiprocessing.connection import wait

POLL = 1.0  # seconds between two looks at the parent's pid
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
ORPHAN_EXIT = 70  # the exit code of a worker that ended because its parent died (EX_SOFTWARE)


def exit_with_parent(parent_pid: int, deathsig: bool = True) -> None:
    """Make this process end within about a second of the death of `parent_pid` (see the module's text)."""
    if deathsig:
        set_deathsig(signal.SIGKILL)
    threading.Thread(target=_watch, args=(parent_pid, _parent_sentinel()), name="atlas-parent-watch",
                     daemon=True).start()
    if os.getppid() != parent_pid:  # it died before the watch began
        os._exit(ORPHAN_EXIT)


def set_deathsig(signum: int) -> bool:
    """Ask Linux to send `signum` to this process when the thread that created it ends; False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def parent_gone(parent_pid: int, sentinel: int | None, timeout: float) -> bool:
    """Whether the parent has died, waiting up to `timeout` seconds on its pipe (if any) for the news."""
    if sentinel is not None and wait([sentinel], timeout):
        return True  # EOF: the parent's end closed, which happens only when it exits
    if sentinel is None and timeout:
        threading.Event().wait(timeout)
    return os.getppid() != parent_pid


def _watch(parent_pid: int, sentinel: int | None) -> None:
    while not parent_gone(parent_pid, sentinel, POLL):
        pass
    os._exit(ORPHAN_EXIT)


def _parent_sentinel() -> int | None:
    """The read end of the pipe from the parent, for a child `multiprocessing` spawned (else None)."""
    parent = multiprocessing.parent_process()
    return getattr(parent, "sentinel", None) if parent is not None else None
