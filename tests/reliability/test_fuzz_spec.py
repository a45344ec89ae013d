"""A short run of the spec fuzzer: exit 0 or 2 with a message, never a traceback, nothing written
outside the output folder (the long run is benchmarks/fuzz_specs.py)."""

from __future__ import annotations

from benchmarks.fuzz_specs import fuzz


def test_spec_fuzzing_short(tiny_model, tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    codes = fuzz(str(tiny_model), examples=80, work=work)
    assert codes[2] > 0 and sum(codes.values()) >= 60
