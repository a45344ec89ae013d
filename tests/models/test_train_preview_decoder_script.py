"""scripts/train_preview_decoder.py refuses bad settings before loading anything (exit 2, the flag named)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_preview_decoder.py"


@pytest.mark.parametrize("args, message", [
    (["--width", "4"], "--width 4: give at least 8 channels"),
    (["--width", "96", "--on-previews", "16"], "--width applies to a fresh training"),
    (["--sharpen", "-1"], "--sharpen -1.0: give a weight >= 0"),
    (["--width", "96", "--restore", "16"], "--width applies to a fresh training; --restore fine-tunes"),
    (["--restore", "16", "--on-previews", "16"], "two different fine-tunes: give one"),
    (["--restore", "-1"], "take a number of clips >= 1"),
])
def test_bad_settings_are_refused_with_the_flag_named(tmp_path, args, message):
    out = tmp_path / "decoder.safetensors"
    run = subprocess.run([sys.executable, str(SCRIPT), *args, "--out", str(out)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2 and message in run.stderr, run.stderr
    assert not out.exists()
