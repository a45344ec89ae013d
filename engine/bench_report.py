"""`reel bench`'s outputs: OUT/bench.json (everything), OUT/bench.md (a Markdown table, one row per side), OUT/bench.png
(a bar chart of seconds per step), and with --record the same table added to benchmarks/RESULTS.md and, for a CUDA
run, the measured rows `auto` reads (engine/measured.py).

    write_outputs(results, out)                      # bench.json, bench.md, bench.png, each written atomically
    record(results, Path("benchmarks/RESULTS.md"))   # --record
"""

from __future__ import annotations

import io
from pathlib import Path

from reel.engine.store import atomic_path, atomic_write_json, atomic_write_text

RESULTS_HEADING = "## reel bench (recorded runs)"


def _num(value, fmt: str, missing: str = "—") -> str:
    return missing if value is None else format(value, fmt)


def _flop(flops: float) -> str:
    return f"{flops / 1e12:.3g} TFLOP" if flops >= 1e11 else f"{flops / 1e9:.3g} GFLOP"


def _memory(side: dict, device_type: str) -> str:
    gib = side["peak_bytes"] / 2**30
    return f"{gib:.2f} GiB" + ("" if device_type == "cuda" else " RSS")


def markdown(results: dict) -> str:
    """The run as a Markdown block: what was measured where, then one row per side (diffusers first)."""
    s, v = results["shot"], results["versions"]
    random = results["random"]
    model = results["model"] + (f" (RANDOM weights{', scaled down' if random['shrink'] else ''}, stand-in text "
                                "encoder)" if random else "")
    lines = [f"### {results['date']} · {results['device']} · {model}", "",
             f"`reel bench {results['model']}` — {s['width']}x{s['height']}, {s['frames']} frames, {s['steps']} "
             f"steps, guidance {s['guidance']:g}, {s['scheduler']}, {s['dtype']}; torch {v['torch']}, diffusers "
             f"{v['diffusers']}, reel {v['reel']}; {results['rounds']} interleaved round(s), medians. One step: "
             f"{_flop(results['step_flops'])}; this device's measured {results['matmul_peak_dtype']} "
             f"matmul peak {results['matmul_peak_tflops']:.3g} TFLOP/s. "
             + ("CPU figures: they say nothing about a GPU." if results["device_type"] != "cuda" else ""), "",
             "| run | s/step | vs diffusers | denoise s | decode+encode s | peak memory | TFLOP/s (share of peak) | "
             "PSNR vs diffusers | first shot s | notes |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, side in results["sides"].items():
        lines.append(_row(name, side, results["device_type"]))
    for name, why in results["skipped"].items():
        why = " ".join(why.split()).replace("|", "/")[:300]  # one table cell
        lines.append(f"| {name} | — | — | — | — | — | — | — | — | cannot run here: {why} |")
    return "\n".join(lines) + "\n"


def _row(name: str, side: dict, device_type: str) -> str:
    share = f" ({100 * side['share_of_peak']:.0f} %)" if side.get("share_of_peak") else ""
    if name == "diffusers":
        decode = f"{side['decode_s']:.2f} (decode to numpy; {side['decode_export_s']:.2f} with export_to_video)"
        vs, quality, notes = "1.00x", "reference", "the family's diffusers pipeline"
    else:
        decode, vs = f"{side['decode_s']:.2f}", _num(side["vs_diffusers"], ".2f") + "x" * bool(side["vs_diffusers"])
        quality = _num(side["psnr_db"], ".1f") + " dB" * (side["psnr_db"] is not None)
        notes = ("lossy; " if side["lossy"] else "") + ", ".join(f"{k}={v}" for k, v in side["speed"].items())
    return (f"| {name} | {side['s_per_step']:.4f} | {vs} | {side['denoise_s']:.2f} | {decode} | "
            f"{_memory(side, device_type)} | {_num(side['tflops'], '.3g')}{share} | {quality} | "
            f"{side['first_shot_s']:.2f} | {notes} |")


def chart_png(results: dict) -> bytes:
    """A horizontal bar chart of seconds per step per side (PIL; no plotting library)."""
    from PIL import Image, ImageDraw

    sides = results["sides"]
    bar_h, left, width = 22, 150, 640
    img = Image.new("RGB", (width, 50 + bar_h * len(sides)), "white")
    draw = ImageDraw.Draw(img)
    draw.text((8, 8), f"s/step, {results['device']}, {results['model']} (lower is better)", fill="black")
    top = max(side["s_per_step"] for side in sides.values()) or 1.0
    for i, (name, side) in enumerate(sides.items()):
        y = 36 + i * bar_h
        length = int((width - left - 90) * side["s_per_step"] / top)
        colour = "gray" if name == "diffusers" else ("darkorange" if side.get("lossy") else "steelblue")
        draw.text((8, y + 4), name[:22], fill="black")
        draw.rectangle([left, y + 2, left + max(1, length), y + bar_h - 4], fill=colour)
        draw.text((left + length + 6, y + 4), f"{side['s_per_step']:.3f}", fill="black")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_outputs(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "bench.json", results)
    atomic_write_text(out / "bench.md", markdown(results))
    with atomic_path(out / "bench.png") as tmp:
        tmp.write_bytes(chart_png(results))


def record(results: dict, results_md: Path) -> list[dict]:
    """--record: add the run's table to `results_md` under RESULTS_HEADING; on CUDA also add each path's row to the
    measured table that `auto` reads (engine/measured.py), baseline the "plain" path. Returns those rows."""
    if not results_md.is_file():
        raise FileNotFoundError(f"--record: {results_md} does not exist — run from a reel checkout or pass "
                                "--results PATH")
    text = results_md.read_text(encoding="utf-8")
    block = markdown(results)
    if RESULTS_HEADING in text:
        head, _, tail = text.partition(RESULTS_HEADING)
        nxt = tail.find("\n## ")
        section, rest = (tail, "") if nxt < 0 else (tail[:nxt + 1], tail[nxt + 1:])
        text = head + RESULTS_HEADING + section.rstrip("\n") + "\n\n" + block + ("\n" + rest if rest else "")
    else:
        text = text.rstrip("\n") + f"\n\n{RESULTS_HEADING}\n\nRows added by `reel bench --record`.\n\n{block}"
    atomic_write_text(results_md, text)
    return _record_measured(results) if results["device_type"] == "cuda" else []


def table_rows(results: dict) -> list[dict]:
    """The measured-table rows of a CUDA run: one per path that stands for a setting, against the plain path."""
    from reel.engine.bench_paths import PLAIN

    sides = results["sides"]
    base = sides.get("plain")
    if base is None:
        return []
    s, v = results["shot"], results["versions"]
    rows = []
    for name, side in sides.items():
        if name in ("diffusers", "plain") or side.get("setting") is None:
            continue
        rows.append({"gpu": results["device"], "setting": side["setting"], "value": side["value"],
                     "model": results["model"], "size": f"{s['width']}x{s['height']}x{s['frames']}, {s['steps']} steps",
                     "s_per_step": float(f"{side['s_per_step']:.5g}"),
                     "baseline_s_per_step": float(f"{base['s_per_step']:.5g}"),
                     "speedup": round(float(f"{base['s_per_step']:.5g}") / float(f"{side['s_per_step']:.5g}"), 4),
                     "lossy": side["lossy"],
                     "psnr_db": None if side["psnr_db"] is None else round(side["psnr_db"], 2),
                     "date": results["date"],
                     "versions": f"torch {v['torch']}, diffusers {v['diffusers']}",
                     "source": f"reel bench {results['model']} --record (benchmarks/RESULTS.md, reel bench)",
                     "baseline": "reel bench's plain path: " + ", ".join(f"{k} = {v}" for k, v in PLAIN.items()),
                     "other_settings": {k: str(v) for k, v in PLAIN.items() if k != side["setting"]}})
    return rows


def _record_measured(results: dict) -> list[dict]:
    from reel.engine.measured import record_row

    rows = table_rows(results)
    for row in rows:
        record_row(row)
    return rows
