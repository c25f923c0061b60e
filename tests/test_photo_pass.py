"""The shared photo pass of atlas.analysis: batches, bad files, checkpoints, photos skipped by sha256, the lock."""

import hashlib

import numpy as np
import pytest
from PIL import Image

from atlas.analysis.passes import Checkpoint, PhotoPass, claimed_folder, process_photos
from atlas.analysis.photos import InputFit, list_photos
from atlas.errors import UserError


class Recorder(PhotoPass):
    """A pass that keeps the sha256 of each photo it takes, and counts its commits."""

    def __init__(self, done: set[str], every_batch: bool) -> None:
        self.done, self.batches, self.commits, self.window = done, [], [], []
        self.checkpoint = Checkpoint(1e9, 1 if every_batch else 1 << 40)

    def take(self, batch):
        assert all(f.pixels.shape == (8, 8, 3) for f in batch)
        self.batches.append([f.record.sha256 for f in batch])
        self.window += self.batches[-1]

    def held(self):
        return len(self.window)

    def commit(self, final):
        self.commits.append((final, list(self.window)))
        self.window = []

    def wanted(self, record):
        return record.sha256 not in self.done


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(np.full((12 + i, 10, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    (folder / "bad.jpg").write_bytes(b"not a photo")
    return folder


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_readable_photo_is_taken_in_batches_with_a_checkpoint_when_due(photos):
    entries, bad = list_photos(str(photos))
    run = Recorder(set(), every_batch=True)
    done = process_photos(run, entries, InputFit(8, "crop", 2), bad, progress=False)
    assert [len(b) for b in run.batches] == [2, 2, 1] and done.processed == 5
    assert sorted(sha for b in run.batches for sha in b) == sorted(_sha(photos / f"{i}.png") for i in range(5))
    assert [name for name, _ in bad] == ["bad.jpg"]
    assert [final for final, _ in run.commits] == [False] * 3  # when due; the final commit is the pass's own


def test_photos_done_before_are_skipped_by_sha256_and_stop_after_ends_the_loop(photos):
    entries, bad = list_photos(str(photos))
    run = Recorder({_sha(photos / "0.png"), _sha(photos / "3.png")}, every_batch=False)
    done = process_photos(run, entries, InputFit(8, "crop", 1), bad, progress=False)
    assert done.processed == 3 and done.skipped == 2 and not run.commits
    again = process_photos(Recorder(set(), False), entries, InputFit(8, "crop", 1), [], progress=False,
                           stop_after=2)
    assert again.processed == 2 and again.stopped


def test_a_second_pass_on_a_claimed_folder_is_one_line(small_model, tmp_path):
    with claimed_folder(tmp_path / "run", small_model, "test", ".test.lock"):
        with pytest.raises(UserError, match="another test pass is writing to"):
            with claimed_folder(tmp_path / "run", small_model, "test", ".test.lock"):
                pass
    with claimed_folder(tmp_path / "run", small_model, "test", ".test.lock"):  # released
        pass
