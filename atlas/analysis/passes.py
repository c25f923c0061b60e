"""What every pass over a folder's photos shares: claiming and locking the run folder, and one loop over the
photos in fitted batches with a checkpoint every so many seconds or bytes held, so that a killed pass loses only
the photos since its last checkpoint, which the next run processes again.

A pass is a `PhotoPass`: it says what it does with a batch (`take`), how many bytes it holds since its last
checkpoint (`held`), how it records them (`commit`) and, optionally, which photos it still wants (`wanted`, by
their record: e.g. their sha256) and when it has seen enough (`enough`). `process_photos` drives it. What is done
already is the pass's own question, asked of the run folder: before the pass, by the photo's name and key
(`todo`: the examples pass, the map's sampling), or per photo once it is read, by its sha256 (`wanted`). A pass
writing one file per photo, e.g. `explain/<sha256>/<layer>.npz`, is then a `take` that writes them, a `wanted`
that looks for them, and a `commit` that syncs their folders.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from atlas.analysis.photos import Entry, Fitted, InputFit, fitted_batches
from atlas.atomic import SWEEP_OUTPUT, stop_on_write_errors
from atlas.errors import UserError
from atlas.run.manifest import (
    BLOCKS,
    MANIFEST_FILE,
    RUN_FILE,
    Manifest,
    PhotoRecord,
    read_run_info,
    rewrite_run_info,
    write_run_info,
)


def prepare_folder(run_folder: Path, model: Any) -> None:
    """Make `run_folder` a run folder of `model` if it is not one yet (one written before block outputs were
    recorded gets them); refuse one of another model. The model's class labels and named logits are recorded (as
    last given), so that the passes after it name the classes and find the classifier alike."""
    given = {"labels": model.source.labels, "logits": model.source.logits}
    if (run_folder / RUN_FILE).is_file():
        info = read_run_info(run_folder)
        recorded = info.get("model", {})
        if recorded.get("sha256") and recorded["sha256"] != model.sha256:
            raise UserError(f"{run_folder} was made with another model ({recorded.get('spec')}); "
                            "leave out --model to use the run's own, or pass another -o folder")
        if BLOCKS not in info or any(recorded.get(key) != value for key, value in given.items()):
            info[BLOCKS] = info.get(BLOCKS, [block.to_dict() for block in model.blocks])
            rewrite_run_info(run_folder, {**info, "model": {**recorded, **given}})
        return
    write_run_info(run_folder, run_folder.name, {"spec": model.spec, "sha256": model.sha256,
                                                 "preprocess": model.preprocess.to_dict(), **given},
                   model.layers, [], {}, blocks=model.blocks)
    Manifest(run_folder / MANIFEST_FILE, create=True).close()


@contextmanager
def claimed_folder(run_folder: Path, model: Any, what: str, lock_file: str,
                   elsewhere: str | None = SWEEP_OUTPUT) -> Iterator[Path]:
    """Hold a run folder of `model` for a pass of `what` (its lock: `lock_file` in it) while write errors a user
    can fix stop the pass with one line (telling how to write elsewhere with `elsewhere`); a second pass of `what`
    on the folder at once, or a folder that cannot be written, is one line too."""
    from filelock import FileLock, Timeout

    with stop_on_write_errors(run_folder, elsewhere):
        prepare_folder(run_folder, model)
        lock = FileLock(str(run_folder / lock_file))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise UserError(f"another {what} pass is writing to {run_folder}; wait for it to finish") from None
    try:
        with stop_on_write_errors(run_folder, elsewhere):
            yield run_folder
    finally:
        lock.release()


@dataclass
class Checkpoint:
    """When a pass records its work: `seconds` after its last checkpoint, or once it holds `bytes`."""

    seconds: float
    bytes: int
    last: float = field(default_factory=time.monotonic)

    def due(self, held: int) -> bool:
        return time.monotonic() - self.last > self.seconds or held >= self.bytes

    def done(self) -> None:
        self.last = time.monotonic()


class PhotoPass:
    """One pass over photos in fitted batches (subclasses: the examples pass, the map's sampling pass)."""

    what = "photos"  # names the pass on its progress bar
    checkpoint: Checkpoint

    def take(self, batch: list[Fitted]) -> None:
        """Run one batch through the network and keep what the pass needs of it."""
        raise NotImplementedError

    def held(self) -> int:
        """Bytes held since the last checkpoint."""
        raise NotImplementedError

    def commit(self, final: bool) -> None:
        """Record everything since the last checkpoint (`final`: the pass has seen every photo it needs)."""
        raise NotImplementedError

    def wanted(self, record: PhotoRecord) -> bool:
        """Whether a photo read from the folder still needs this pass (False: done in an earlier run)."""
        return True

    def enough(self) -> bool:
        """True once the pass needs no more photos."""
        return False


@dataclass
class Progress:
    """What `process_photos` did."""

    processed: int = 0  # photos through the network
    skipped: int = 0  # photos read but not wanted (done before)
    stopped: bool = False  # ended by `stop_after`, before every photo was seen
    network_seconds: float = 0.0  # in `take`


def process_photos(run: PhotoPass, todo: list[Entry], fit: InputFit, bad: list[tuple[str, str]],
                   progress: bool = True, stop_after: int | None = None) -> Progress:
    """Fit, batch and hand every photo of `todo` to the pass, with a checkpoint whenever one is due; unreadable
    files go to `bad`. It does not commit at the end: the pass's last commit is its own (`final` or not).
    `stop_after` (tests) ends the loop after that many photos, as a kill would."""
    from tqdm import tqdm

    done = Progress()
    with tqdm(total=len(todo), unit="photo", desc=run.what, disable=None if progress else True,
              file=sys.stderr) as bar:
        for fitted in fitted_batches(todo, fit, bad, bar):
            batch = [f for f in fitted if run.wanted(f.record)]
            done.skipped += len(fitted) - len(batch)
            bar.update(len(fitted) - len(batch))
            if not batch:
                continue
            began = time.perf_counter()
            run.take(batch)
            done.network_seconds += time.perf_counter() - began
            done.processed += len(batch)
            bar.update(len(batch))
            if run.enough():
                break
            if stop_after is not None and done.processed >= stop_after:
                done.stopped = True
                break
            if run.checkpoint.due(run.held()):
                run.commit(final=False)
                run.checkpoint.done()
    return done
