import re
import subprocess
import sys
from pathlib import Path

import pytest

from atlas.atomic import atomic_path, atomic_write_text, remove_stale_parts

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.fullsize
def test_all_59_layer_functions_fit_in_2_5_gb():
    """One process builds and differentiates every full-width layer; its peak RSS stays under 2.5 GB."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "layer_memory.py"), "--model", "synthetic"],
                         capture_output=True, text=True, check=True).stdout
    peak = float(re.search(r"after all 59 layer functions.*peak (\d+) MB", out).group(1))
    assert peak < 2500, out


def test_atomic_write_replaces_and_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "sub" / "b.png") as tmp:
            assert tmp.suffix == ".png" and tmp.name.startswith(".b.png.")
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["a.txt"]


def test_stale_temp_files_are_swept(tmp_path):
    (tmp_path / ".x.png.abc.part.png").write_bytes(b"half")
    (tmp_path / "keep.png").write_bytes(b"ok")
    assert remove_stale_parts(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]
