"""Whatever `reel validate` accepts renders: for generated specs of the built-in model at tiny sizes (characters
with LoRAs, crossfades, audio, upscalers, codecs, [speed] settings, and wrong files or values validate must
refuse), a spec validate accepts renders with exit 0, or fails with exit 1 and a one-line message — never
exit 2, never a traceback — and writes nothing outside --out. The long run is benchmarks/fuzz_specs.py."""

from __future__ import annotations

from benchmarks.fuzz_specs import fuzz_renders, make_inputs


def test_what_validate_accepts_renders(tmp_path):
    inputs = make_inputs(tmp_path / "w")
    counts = fuzz_renders(15, tmp_path / "w", inputs, attempts=25)
    assert counts["rendered"] + counts["failed"] >= 10, counts  # most generated specs are valid and were rendered
