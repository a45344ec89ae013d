"""DESIGN's layering: the spec and the plan import no torch (fast CLI start, validation without weights)."""

from __future__ import annotations

import subprocess
import sys


def test_spec_and_plan_import_no_torch():
    code = "import sys, engine.spec, engine.plan, engine.cast, engine.spec_post; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
