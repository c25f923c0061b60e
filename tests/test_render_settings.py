"""The render stage's plain settings, and the run stage's config and plan, import no TensorFlow."""

import subprocess
import sys

import pytest

TF_FREE = ["atlas.render.settings", "atlas.render.chain", "atlas.render.cost", "atlas.run.config", "atlas.run.plan"]


@pytest.mark.parametrize("module", TF_FREE)
def test_settings_modules_import_no_tensorflow(module):
    code = f"import sys, {module}; print('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() \
        == "False"
