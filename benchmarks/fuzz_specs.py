"""Property-based fuzzing of film specs: whatever the spec, reel answers with exit 0 or exit 2 and a
message — never a traceback — and writes nothing outside the output folder.

    .venv/bin/python -m benchmarks.fuzz_specs --examples 10000      # the long run; writes the `fuzz` section

tests/reliability/test_fuzz_spec.py runs the same property with a few dozen examples.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from reel.engine.cli import app

FILM_KEYS = ["title", "model", "width", "height", "fps", "frames", "steps", "guidance", "shift", "seed",
             "negative_prompt", "scheduler", "codec", "upscale", "watermark", "characters", "preview_lora"]
SHOT_KEYS = ["id", "prompt", "frames", "seed", "steps", "guidance", "negative_prompt", "characters", "transition",
             "transition_seconds", "image", "continue_from"]
nasty_text = st.one_of(st.text(max_size=40), st.sampled_from(
    ["", " ", "../escape", "/etc/passwd", "con", "a/b", "shot-1", "x" * 200, "{hero}", "ünïcødé", "..", "~/x",
     "C:\\\\win", "a\x00b", "shapes"]))
numbers = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, 1, 5, 9, 16, 17, 32, 64, -1, 2**63]))
values = st.one_of(numbers, nasty_text, st.booleans(), st.lists(st.one_of(st.integers(), st.text(max_size=5)),
                                                                max_size=3))


def table(keys, model_path: str):
    fixed = {"model": st.one_of(st.just(model_path), nasty_text)}
    entries = st.dictionaries(st.one_of(st.sampled_from(keys), st.text(min_size=1, max_size=12)),
                              st.one_of(values, *(fixed.values())), max_size=8)
    return entries


def spec_text(model_path: str):
    good_id = st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True)
    shot = st.one_of(table(SHOT_KEYS, model_path),
                     st.fixed_dictionaries({"id": st.one_of(good_id, nasty_text), "prompt": nasty_text},
                                           optional={"frames": numbers, "steps": st.integers(1, 4)}),
                     st.fixed_dictionaries({"id": good_id, "prompt": st.text(min_size=1, max_size=30)},
                                           optional={"frames": st.sampled_from([1, 5, 9]), "seed": st.integers(0, 9),
                                                     "steps": st.integers(1, 3)}))
    film = st.one_of(table(FILM_KEYS, model_path),
                     st.fixed_dictionaries({"model": st.just(model_path)},
                                           optional={"steps": st.integers(1, 3), "frames": st.sampled_from([5, 9, 10]),
                                                     "seed": numbers}))
    doc = st.fixed_dictionaries({}, optional={"film": film, "shots": st.lists(shot, max_size=4),
                                              "speed": st.dictionaries(st.text(max_size=10), values, max_size=3),
                                              "characters": st.dictionaries(st.text(max_size=8),
                                                                            st.dictionaries(st.text(max_size=8), values,
                                                                                            max_size=3), max_size=2)})

    def dump(d):
        try:
            return tomli_w.dumps(d)
        except (TypeError, ValueError):
            return "[film\nbroken = "
    return st.one_of(doc.map(dump), st.text(max_size=200))  # structured specs and raw (mostly broken) TOML


def snapshot(root: Path, skip: Path) -> set[str]:
    return {str(p) for p in root.rglob("*") if skip not in p.parents and p != skip}


def check_one(text: str, work: Path, runner: CliRunner, render_small: bool = True) -> int:
    spec = work / "film.toml"
    spec.write_bytes(text.encode("utf-8", errors="replace"))
    out = work / "out"
    before = snapshot(work, out)
    result = runner.invoke(app, ["validate", str(spec)])
    assert result.exit_code in (0, 2), (result.exit_code, result.output, text)
    assert result.exception is None or isinstance(result.exception, SystemExit), (result.exception, text)
    assert result.output.strip(), text
    if result.exit_code == 0 and render_small and "frames = 100" not in text:
        result = runner.invoke(app, ["render", str(spec), "--out", str(out), "-q"])
        assert result.exit_code in (0, 2), (result.exit_code, result.output, text)
        assert result.exception is None or isinstance(result.exception, SystemExit), (result.exception, text)
    assert snapshot(work, out) - before <= {str(spec)}, text  # nothing written outside the output folder
    return result.exit_code


def fuzz(model_path: str, examples: int, work: Path) -> dict:
    runner = CliRunner()
    codes = {0: 0, 2: 0}

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(spec_text(model_path))
    def prop(text):
        codes[check_one(text, work, runner)] += 1

    prop()
    return codes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=10_000)
    args = parser.parse_args()
    from benchmarks.results import write_section
    from reel.models.tiny import build_tiny_wan

    work = Path(tempfile.mkdtemp(prefix="reel-fuzz-"))
    os.environ.setdefault("REEL_CACHE_DIR", str(work / "cache"))
    model = build_tiny_wan(work / "model")
    (work / "w").mkdir()
    t = time.perf_counter()
    codes = fuzz(str(model), args.examples, work / "w")
    seconds = time.perf_counter() - t
    md = f"""## Spec fuzzing

`.venv/bin/python -m benchmarks.fuzz_specs --examples {args.examples}`

Hypothesis-generated film specs (wrong types, missing and unknown keys, huge and negative numbers, unicode
and path-like ids, broken TOML) through `reel validate` (and `reel render` on a tiny model when valid and small).

| measure | value |
|---|---|
| examples | {sum(codes.values())} |
| exit 0 (valid) / exit 2 (rejected with a message) | {codes[0]} / {codes[2]} |
| tracebacks, other exit codes, files outside the output folder | 0 (the property held for every example) |
| time | {seconds:.0f} s |
"""
    write_section("fuzz", md, {"codes": codes, "seconds": seconds})
    print(md)


if __name__ == "__main__":
    main()
