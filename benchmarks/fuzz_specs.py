"""Property-based fuzzing of film specs. Two properties, each over hypothesis-generated specs:

1. `reel validate` answers every spec with exit 0 or exit 2 and a message — never a traceback — whatever the
   spec holds: wrong types, unknown keys, huge numbers, broken TOML, arrays nested thousands deep, path names
   longer than the file system allows, NUL characters, directories and wrong kinds of files for file fields.
2. Whatever validate accepts renders: `reel render` then succeeds, or fails with exit 1 and a one-line message
   (never exit 2, never a traceback), and writes nothing outside --out (the spec's folder, the inputs beside
   it and the built-in model's package are compared before and after; reel's cache folder is its own).

    .venv/bin/python -m benchmarks.fuzz_specs --examples 10000 --renders 500   # writes the `fuzz` section
    .venv/bin/python -m benchmarks.fuzz_specs --examples 300 --renders 20 --no-write   # a quick look

Renders use the built-in model at tiny sizes (16-32 px, 1-9 frames, 1-2 steps, 1-2 shots), a few seconds each.
tests/reliability/test_fuzz_spec.py runs both properties with a few dozen examples.
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import tempfile
import time
import wave
from pathlib import Path

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from reel.engine.cli import app
from reel.models.registry import SHAPES_DIR

FILM_KEYS = ["title", "model", "width", "height", "fps", "frames", "steps", "guidance", "shift", "seed",
             "negative_prompt", "scheduler", "codec", "upscale", "watermark", "characters", "preview_lora",
             "preview_decoder", "preview_steps", "preview_scheduler"]
SHOT_KEYS = ["id", "prompt", "frames", "seed", "steps", "guidance", "negative_prompt", "characters", "transition",
             "transition_seconds", "image", "continue_from"]
TRACEBACK = "Traceback (most recent call last)"  # what Python prints for an exception nobody caught
LONG = "x" * 300  # one path component longer than any file system allows (255 bytes)
nasty_text = st.one_of(st.text(max_size=40), st.sampled_from(
    ["", " ", "../escape", "/etc/passwd", "con", "a/b", "shot-1", "x" * 200, "{hero}", "ünïcødé", "..", "~/x",
     "C:\\\\win", "a\x00b", "shapes", LONG, f"{LONG}/a.safetensors", f"dir/{LONG}.wav", "~nosuchuser/x", "/dev/zero",
     "/proc/self/mem", "."]))
numbers = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, 1, 5, 9, 16, 17, 32, 64, -1, 2**63, 520, 576, 1024, 257]))
values = st.one_of(numbers, nasty_text, st.booleans(), st.lists(st.one_of(st.integers(), st.text(max_size=5)),
                                                                max_size=3))
WORDS = "a red green blue orange circle square triangle star moving left right up down on black gray navy".split()


# ---- the inputs a spec may name ---------------------------------------------------------------------
def make_inputs(folder: Path) -> dict[str, list[str]]:
    """Real files of every kind beside the specs: good ones (LoRAs of the built-in model, its x2 upscaler and
    preview decoder, a WAV) and wrong ones (garbage, truncated, a folder, text, another kind of model)."""
    folder.mkdir(parents=True, exist_ok=True)
    adapters = SHAPES_DIR / "adapters"
    for name, src in (("hero.safetensors", adapters / "preview.safetensors"),
                      ("hero.comfyui.safetensors", adapters / "preview.comfyui.safetensors"),
                      ("up.safetensors", SHAPES_DIR / "upscalers" / "x2.safetensors"),
                      ("dec.safetensors", adapters / "preview_decoder.safetensors")):
        shutil.copyfile(src, folder / name)
    data = (folder / "hero.safetensors").read_bytes()
    (folder / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (folder / "garbage.safetensors").write_bytes(b"\x00garbage" * 64)
    (folder / "header.safetensors").write_bytes(struct.pack("<Q", 2) + b"{}")
    (folder / "dir.safetensors").mkdir(exist_ok=True)
    (folder / "notes.wav").write_text("not audio at all\n" * 20)
    with wave.open(str(folder / "music.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(range(256)) * 125)  # 2 s of a buzz
    return {"lora": ["hero.safetensors", "hero.comfyui.safetensors", "up.safetensors", "garbage.safetensors",
                     "truncated.safetensors", "header.safetensors", "dir.safetensors", "missing.safetensors",
                     f"{LONG}.safetensors", "music.wav"],
            "upscale": ["x2", "lanczos2", "lanczos4", "up.safetensors", "hero.safetensors", "garbage.safetensors",
                        "dir.safetensors", f"{LONG}.pth", "x3"],
            "decoder": ["vae", "dec.safetensors", "hero.safetensors", "truncated.safetensors", "dir.safetensors"],
            "audio": ["music.wav", "notes.wav", "hero.safetensors", "dir.safetensors", f"{LONG}.wav", "none.wav"]}


# ---- the broad generator: mostly wrong specs ---------------------------------------------------------
def table(keys, model_path: str):
    fixed = st.one_of(st.just(model_path), nasty_text)
    return st.dictionaries(st.one_of(st.sampled_from(keys), st.text(min_size=1, max_size=12)),
                           st.one_of(values, fixed), max_size=8)


def deep_text():
    """TOML nested hundreds or thousands deep (arrays, inline tables), at the top level or inside a field."""
    def nest(depth: int, kind: str, where: str) -> str:
        inner = "[" * depth + "1" + "]" * depth if kind == "array" else "{a=" * depth + "1" + "}" * depth
        return {"top": f"x = {inner}\n", "film": f"[film]\ntitle = {inner}\n",
                "shot": f'[[shots]]\nid = "a"\nprompt = "p"\nframes = {inner}\n'}[where]
    return st.builds(nest, st.sampled_from([40, 300, 900, 5000]), st.sampled_from(["array", "table"]),
                     st.sampled_from(["top", "film", "shot"]))


def spec_text(model_path: str, inputs: dict | None = None):
    """Structured specs (any keys, any values, file fields naming real inputs of the wrong kind) and raw text."""
    files = st.sampled_from(sum((inputs or {}).values(), [])) if inputs else nasty_text
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
                                                     "seed": numbers, "width": numbers, "upscale": files,
                                                     "preview_lora": files, "preview_decoder": files,
                                                     "characters": files}))
    character = st.fixed_dictionaries({"lora": st.one_of(files, st.lists(files, max_size=2)), "trigger": nasty_text},
                                      optional={"weight": values, "lora_low": files, "expert": nasty_text})
    audio = st.fixed_dictionaries({"file": files}, optional={"at": numbers, "trim_start": numbers})
    doc = st.fixed_dictionaries({}, optional={
        "film": film, "shots": st.lists(shot, max_size=4), "audio": st.lists(audio, max_size=2),
        "speed": st.dictionaries(st.text(max_size=10), values, max_size=3),
        "characters": st.dictionaries(st.sampled_from(["hero", "x", "bad name", ""]),
                                      st.one_of(character, st.dictionaries(st.text(max_size=8), values, max_size=3)),
                                      max_size=2)})
    return st.one_of(doc.map(dump), st.text(max_size=200), deep_text())


def dump(d: dict) -> str:
    try:
        return tomli_w.dumps(d)
    except (TypeError, ValueError):
        return "[film\nbroken = "


# ---- the render generator: mostly specs validate accepts, at tiny sizes ---------------------------------
def mistakes(inputs: dict) -> list[tuple[str, str, object]]:
    """(section, key, value) edits that make a good render spec one validate must refuse (or, for codecs a build
    of ffmpeg may lack and sizes at the edge of the rotary table, one it may accept)."""
    bad_files = [f for f in inputs["lora"] if f not in inputs["lora"][:2]]
    return ([("character", "lora", f) for f in bad_files] + [("film", "preview_lora", f) for f in bad_files[:4]]
            + [("film", "upscale", f) for f in inputs["upscale"][4:]]
            + [("film", "preview_decoder", f) for f in inputs["decoder"][2:]]
            + [("audio", "file", f) for f in inputs["audio"][1:]]
            + [("audio", "at", 30.0), ("audio", "trim_start", 5.0), ("film", "scheduler", "dpm"),
               ("film", "width", 520), ("film", "height", 512), ("film", "frames", 253), ("film", "frames", 257),
               ("film", "codec", "av1"), ("film", "codec", "prores"), ("speed", "attention", "nope"),
               ("shot", "transition", "crossfade"), ("shot", "frames", 4), ("shot", "prompt", "{villain} runs")])


def render_spec(inputs: dict):
    """Specs for the built-in model at tiny sizes that exercise what a render does (characters with their LoRAs
    and weight schedules, crossfades, audio, upscalers, codecs, watermarks, [speed] settings); about one in
    three carries one mistake from mistakes(), which validate must refuse unless the render can take it."""
    prompt = st.lists(st.sampled_from(WORDS + ["{hero}"]), min_size=1, max_size=8).map(" ".join)
    shot = st.fixed_dictionaries({"prompt": prompt}, optional={
        "frames": st.sampled_from([1, 5, 9]), "seed": st.integers(0, 2**63 - 1), "steps": st.integers(1, 2),
        "guidance": st.sampled_from([0.0, 1.0, 4.5]), "negative_prompt": st.text(max_size=20),
        "crossfade": st.integers(1, 2)})
    film = st.fixed_dictionaries({"model": st.just("shapes"), "steps": st.integers(1, 2),
                                  "width": st.sampled_from([16, 24, 32]), "height": st.sampled_from([16, 24, 32]),
                                  "frames": st.sampled_from([1, 5, 5, 9])}, optional={
        "title": st.text(max_size=30), "fps": st.sampled_from([4, 8, 12]),
        "seed": st.integers(0, 2**63 - 1), "guidance": st.sampled_from([0.0, 1.0, 4.0]),
        "shift": st.sampled_from([1.0, 3.0, 7.5]), "scheduler": st.sampled_from(["default", "unipc", "euler"]),
        "codec": st.sampled_from(["h264", "h264", "h265"]), "upscale": st.sampled_from(inputs["upscale"][:4]),
        "watermark": st.text(max_size=20), "negative_prompt": st.text(max_size=20),
        "preview_lora": st.sampled_from(inputs["lora"][:2]), "preview_decoder": st.sampled_from(inputs["decoder"][:2]),
        "preview_steps": st.integers(1, 4)})
    hero = st.fixed_dictionaries({"lora": st.sampled_from(inputs["lora"][:2]),
                                  "trigger": st.sampled_from(["sks", "orange star"])}, optional={
        "weight": st.one_of(st.sampled_from([0.5, 1.0]), st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=1,
                                                                  max_size=3)),
        "seed": st.integers(0, 99), "description": st.text(max_size=10)})
    audio = st.fixed_dictionaries({"file": st.just(inputs["audio"][0])}, optional={
        "at": st.sampled_from([0.0, 0.0, 0.1]), "volume": st.sampled_from([0.0, 0.5, 2.0]),
        "trim_start": st.sampled_from([0.0, 0.5]), "duration": st.sampled_from([0.5, 1.0]),
        "fade_in": st.sampled_from([0.0, 0.25]), "fade_out": st.sampled_from([0.0, 0.25])})
    speed = st.fixed_dictionaries({}, optional={
        "threads": st.integers(1, 2), "step_cache": st.sampled_from([0.05, 0.5]),
        "cfg_skip_last": st.sampled_from([0.0, 0.5]), "attention": st.sampled_from(["auto", "sdpa"]),
        "compile": st.sampled_from(["off", "auto"]), "vae_tiling": st.booleans(), "fp8_matmul": st.booleans(),
        "offload": st.sampled_from(["auto", "none", "model", "group"]),
        "weights": st.sampled_from(["auto", "bf16", "fp16", "fp8"]), "fused_kernels": st.sampled_from(["auto", "off"]),
        "cpu_fast_paths": st.sampled_from(["auto", "on", "off"])})
    mistake = st.tuples(st.integers(0, 3), st.sampled_from(mistakes(inputs))).map(  # one in four, or so
        lambda t: t[1] if t[0] == 3 else None)
    return st.builds(_render_doc, film, st.lists(shot, min_size=1, max_size=2), often(hero),
                     often(audio).map(lambda a: [a] if a else []), speed, mistake)


def often(strategy):
    """`strategy`'s value two times in three, else None (hypothesis draws the first branch of one_of most)."""
    return st.tuples(st.integers(0, 2), strategy).map(lambda t: t[1] if t[0] < 2 else None)


def _render_doc(film: dict, shots: list, hero: dict | None, audio: list, speed: dict, mistake) -> str:
    """A coherent spec from the drawn parts (crossfades in whole frames after the first shot, {hero} only with a
    hero), then the one mistake, if any."""
    fps = film.get("fps", 8)
    out = []
    for i, s in enumerate(shots):
        s = {"id": f"s{i}", **s}
        fade = s.pop("crossfade", 0)
        if i and fade:
            s.update(transition="crossfade", transition_seconds=fade / fps)
        if hero is None:
            s["prompt"] = s["prompt"].replace("{hero}", "orange")
        elif i == 0 and "{hero}" not in s["prompt"]:  # the first shot casts the hero
            s["prompt"] += " {hero}"
        out.append(s)
    doc = {"film": film, "shots": out, "characters": {"hero": hero} if hero else {}, "audio": audio, "speed": speed}
    if mistake is not None:
        section, key, value = mistake
        if section == "character":
            doc["characters"] = {"hero": {"trigger": "sks", **(hero or {}), key: value}}
        elif section == "shot":
            doc["shots"][0][key] = value
        elif section == "audio":
            doc["audio"] = [{**(audio[0] if audio else {"file": "music.wav"}), key: value}]
        else:
            doc[section][key] = value
    return dump({k: v for k, v in doc.items() if v})


# ---- the properties ------------------------------------------------------------------------------------
def snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """{path: (size, mtime)} of everything under `root` but `skip`."""
    out = {}
    for p in root.rglob("*"):
        if p != skip and skip not in p.parents:
            st_ = p.lstat()
            out[str(p)] = (st_.st_size, st_.st_mtime_ns)
    return out


def check_validate(text: str, work: Path, runner: CliRunner) -> int:
    """Property 1 for one spec; returns validate's exit code (0 or 2)."""
    spec = work / "film.toml"
    spec.write_bytes(text.encode("utf-8", errors="replace"))
    result = runner.invoke(app, ["validate", str(spec)])
    assert result.exit_code in (0, 2), (result.exit_code, result.output, text)
    assert result.exception is None or isinstance(result.exception, SystemExit), (result.exception, text)
    assert result.output.strip() and TRACEBACK not in result.output, (result.output, text)
    return result.exit_code


def check_render(text: str, work: Path, runner: CliRunner) -> int:
    """Property 2 for one spec validate accepted; returns render's exit code (0 or 1)."""
    out = work / "out"
    before = snapshot(work, out)
    result = runner.invoke(app, ["render", str(work / "film.toml"), "--out", str(out), "-q", "--device", "cpu"])
    assert result.exception is None or isinstance(result.exception, SystemExit), (result.exception, text)
    assert TRACEBACK not in result.output, (result.output, text)
    assert result.exit_code in (0, 1), ("validate accepted a spec render refused", result.output, text)
    if result.exit_code == 1:  # a failure while rendering: one line that says what happened
        assert len(result.output.strip().splitlines()) == 1, (result.output, text)
    assert snapshot(work, out) == before, ("files written outside --out", text)
    shutil.rmtree(out, ignore_errors=True)
    return result.exit_code


def fuzz(model_path: str, examples: int, work: Path, inputs: dict | None = None, render_small: bool = True) -> dict:
    """Property 1 over `examples` broad specs (render too, when `render_small` and validate accepts one)."""
    runner = CliRunner()
    codes = {0: 0, 2: 0}

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
              database=None)
    @given(spec_text(model_path, inputs))
    def prop(text):
        code = check_validate(text, work, runner)
        codes[code] += 1
        if code == 0 and render_small:
            check_render(text, work, runner)

    prop()
    return codes


def fuzz_renders(renders: int, work: Path, inputs: dict, attempts: int | None = None,
                 seconds: float | None = None) -> dict:
    """Property 2: specs from render_spec until `renders` of them were accepted and rendered, `attempts` specs
    were drawn, or `seconds` passed (the spec being rendered then finishes)."""
    runner = CliRunner()
    counts = {"specs": 0, "refused": 0, "rendered": 0, "failed": 0}
    stop = time.monotonic() + seconds if seconds else None

    @settings(max_examples=attempts or 3 * renders, deadline=None, suppress_health_check=list(HealthCheck),
              derandomize=True, database=None)
    @given(render_spec(inputs))
    def prop(text):
        if counts["rendered"] + counts["failed"] >= renders or (stop is not None and time.monotonic() > stop):
            return
        counts["specs"] += 1
        if check_validate(text, work, runner) == 2:
            counts["refused"] += 1
            return
        counts["rendered" if check_render(text, work, runner) == 0 else "failed"] += 1

    prop()
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=10_000, help="specs through validate (property 1)")
    parser.add_argument("--renders", type=int, default=500, help="accepted specs through render (property 2)")
    parser.add_argument("--render-minutes", type=float, default=None, help="stop rendering after this long")
    parser.add_argument("--no-write", action="store_true", help="print the section, leave RESULTS.md alone")
    args = parser.parse_args()
    from reel.models.tiny import build_tiny_wan

    work = Path(tempfile.mkdtemp(prefix="reel-fuzz-"))
    os.environ.setdefault("REEL_CACHE_DIR", str(work / "cache"))
    model = build_tiny_wan(work / "model")
    inputs = make_inputs(work / "w")
    package = snapshot(SHAPES_DIR, SHAPES_DIR / "__pycache__")
    t = time.perf_counter()
    codes = fuzz(str(model), args.examples, work / "w", inputs, render_small=False)
    t_validate = time.perf_counter() - t
    t = time.perf_counter()
    counts = fuzz_renders(args.renders, work / "w", inputs,
                          seconds=args.render_minutes * 60 if args.render_minutes else None)
    t_render = time.perf_counter() - t
    assert snapshot(SHAPES_DIR, SHAPES_DIR / "__pycache__") == package, "the built-in model's package changed"
    md = section(args, codes, counts, t_validate, t_render)
    if not args.no_write:
        from benchmarks.results import write_section

        write_section("fuzz", md, {"validate": codes, "render": counts, "validate_seconds": t_validate,
                                   "render_seconds": t_render})
    print(md)
    shutil.rmtree(work, ignore_errors=True)


def section(args, codes: dict, counts: dict, t_validate: float, t_render: float) -> str:
    done = counts["rendered"] + counts["failed"]
    short = "" if done >= args.renders else (f" (asked for {args.renders}; the time limit of "
                                             f"{args.render_minutes:g} min came first)" if args.render_minutes else
                                             f" (asked for {args.renders}; the generator's attempts ran out first)")
    limit = f" --render-minutes {args.render_minutes:g}" if args.render_minutes else ""
    return f"""## Spec fuzzing

`.venv/bin/python -m benchmarks.fuzz_specs --examples {args.examples} --renders {args.renders}{limit}`

Hypothesis-generated film specs. **Validate**: wrong types, missing and unknown keys, huge and negative numbers,
unicode and path-like ids, broken TOML, arrays and inline tables nested 40-5,000 deep, path names longer than
the file system allows, NUL characters, and file fields naming a folder, garbage, truncated files or the wrong
kind of model. **Render**: specs for the built-in model at 16-32 px (characters with LoRAs, crossfades, audio,
upscalers, codecs, watermarks, [speed] settings, plus wrong files and values validate must refuse); each one
validate accepts is rendered, with the spec's folder, its inputs and the built-in model's package compared
before and after.

| measure | value |
|---|---|
| validate: specs | {sum(codes.values())} |
| validate: exit 0 (valid) / exit 2 (rejected with a message) | {codes[0]} / {codes[2]} |
| validate: tracebacks or other exit codes | 0 (the property held for every spec) |
| render: specs generated / refused by validate | {counts['specs']} / {counts['refused']} |
| render: accepted specs rendered | {done}{short} |
| render: succeeded / exit 1 with a one-line message | {counts['rendered']} / {counts['failed']} |
| render: exit 2 after validate accepted, tracebacks, files written outside --out | 0 |
| time: validate / render | {t_validate:.0f} s / {t_render:.0f} s |
"""


if __name__ == "__main__":
    main()
