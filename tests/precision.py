"""The precision the suite's render, map and Fourier tests render in.

`ATLAS_TEST_PRECISION=bfloat16 python -m pytest ...` runs them at bfloat16 (docs/install.md#test); unset, they
run at float32, the default of `RenderSettings`. For the test suite only: no user-facing default reads it."""

import os

from atlas.model.graph import PRECISIONS

PRECISION = os.environ.get("ATLAS_TEST_PRECISION") or "float32"
if PRECISION not in PRECISIONS:
    raise ValueError(f"ATLAS_TEST_PRECISION must be one of {', '.join(PRECISIONS)}, not {PRECISION!r}")
