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
    (["--restore", "-1"], "--restore -1: give a number of clips >= 1"),
    (["--on-previews", "-1"], "--on-previews -1: give a number of clips >= 1"),
    (["--steps", "0"], "--steps 0: give at least 1"),
    (["--clips", "0"], "--clips 0: give at least 1"),
    (["--threads", "0"], "--threads 0: give at least 1"),
    (["--restore", "16", "--batch", "1"], "--batch 1: --restore mixes clean and preview pairs"),
    (["--register-only", "--restore", "16"], "--register-only names the decoder already at"),
])
def test_bad_settings_are_refused_with_the_flag_named(tmp_path, args, message):
    out = tmp_path / "decoder.safetensors"
    run = subprocess.run([sys.executable, str(SCRIPT), *args, "--out", str(out)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2 and message in run.stderr, run.stderr
    assert not out.exists()


def test_a_fine_tuned_decoder_is_not_fine_tuned_again(tmp_path):
    """The shipped decoder is already fine-tuned (--restore): a second fine-tune would stack on it."""
    out = tmp_path / "decoder.safetensors"
    run = subprocess.run([sys.executable, str(SCRIPT), "--restore", "16", "--out", str(out)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode != 0 and "is already fine-tuned (--restore 1024" in run.stderr, run.stderr
    assert "train a fresh decoder first" in run.stderr and not out.exists()
