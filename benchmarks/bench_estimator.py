"""Compare reel's GPU estimator with published timings; write the `estimator` section of RESULTS.md.

    .venv/bin/python -m benchmarks.bench_estimator

Every prediction uses the estimator as shipped (MFU 0.40 chosen a priori, nothing fitted to these numbers):
the shipped model config, FLOPs counted on the meta device at the published size, the GPU's dense peak.
Published numbers are copied with their source; error = (predicted - published) / published.
"""

from __future__ import annotations

import time

from benchmarks.results import write_section
from reel.engine.estimate import MFU, estimate_shot, gpu_spec, load_model_config

LIGHTX2V_README = ("ModelTC/LightX2V README.md, 'Cross-Framework Performance Comparison (H100)' "
                   "(Wan2.1-I2V-14B-480P, 40 steps, 81 frames)")
LIGHTX2V_BENCH = ("ModelTC/LightX2V docs/EN/source/getting_started/benchmark_source.md, H200 tables (Wan2.1-I2V-14B, "
                  "infer_steps=40, enable_cfg=True, 5 s video = 81 frames; 'Inference Time')")
COGVIDEO_README = ("THUDM/CogVideo README.md, CogVideoX-5B 'Inference Speed (Step = 50, BF16)' (720x480, 49 frames; "
                   "diffusers with its memory savers on, ~10 % slower than without)")

# what was run: (case, shipped model config, width, height, frames, steps, guidance)
WAN_480 = ("Wan2.1-I2V-14B 480p", "wan2.1-i2v-14b", 832, 480, 81, 40, 5.0)
WAN_720 = ("Wan2.1-I2V-14B 720p", "wan2.1-i2v-14b", 1280, 720, 81, 40, 5.0)
COG = ("CogVideoX-5B", "cogvideox-5b", 720, 480, 49, 50, 6.0)
# (setup, gpu, metric, published value, implementation, kind, source). metric "s/step": denoising seconds per
# step; "total": text encode + denoise + decode. kind "baseline": plain bf16 PyTorch (what the MFU is about).
CASES = [
    (WAN_480, "h100", "s/step", 9.77, "diffusers", "baseline", LIGHTX2V_README),
    (WAN_480, "h100", "s/step", 8.93, "xDiT", "optimised", LIGHTX2V_README),
    (WAN_480, "h100", "s/step", 7.35, "FastVideo", "optimised", LIGHTX2V_README),
    (WAN_480, "h100", "s/step", 6.13, "SGL-Diffusion", "optimised", LIGHTX2V_README),
    (WAN_480, "h100", "s/step", 5.18, "LightX2V", "optimised", LIGHTX2V_README),
    (WAN_480, "h200", "total", 366.0, "Wan2.1 official", "baseline", LIGHTX2V_BENCH),
    (WAN_480, "h200", "total", 216.0, "LightX2V_2 (bf16 + SageAttention2)", "optimised", LIGHTX2V_BENCH),
    (WAN_720, "h200", "total", 974.0, "Wan2.1 official", "baseline", LIGHTX2V_BENCH),
    (WAN_720, "h200", "total", 751.0, "LightX2V_2 (bf16 + SageAttention2)", "optimised", LIGHTX2V_BENCH),
    (COG, "h100", "total", 90.0, "diffusers", "baseline", COGVIDEO_README),
    (COG, "a100", "total", 180.0, "diffusers", "baseline", COGVIDEO_README),
]


def run() -> tuple[list[dict], float]:
    rows, start = [], time.perf_counter()
    for (case, name, w, h, f, steps, guidance), gpu, metric, published, impl, kind, source in CASES:
        shot = estimate_shot(load_model_config(name), gpu, w, h, f, steps, guidance)
        predicted = shot.seconds_denoise / steps if metric == "s/step" else shot.seconds
        spec = gpu_spec(gpu)
        # the utilisation the published time implies for the same FLOPs (transformer steps only)
        denoise_published = (published if metric == "s/step"
                             else (published - shot.seconds_text - shot.seconds_decode) / steps)
        implied = shot.step.flops / (denoise_published * spec.bf16_tflops * 1e12)
        rows.append({"case": case, "model_config": name, "gpu": gpu, "size": f"{w}x{h}", "frames": f, "steps": steps,
                     "metric": metric, "implementation": impl, "kind": kind, "published": published,
                     "predicted": round(predicted, 3), "error_pct": round(100 * (predicted - published) / published, 1),
                     "tflop_per_step": round(shot.step.flops / 1e12, 1), "tokens": shot.step.tokens,
                     "implied_mfu": round(implied, 3), "peak_vram_gb": round(shot.memory["peak"] / 1e9, 1),
                     "source": source})
    return rows, time.perf_counter() - start


def _mape(rows: list[dict], kind: str) -> float:
    errs = [abs(r["error_pct"]) for r in rows if r["kind"] == kind]
    return sum(errs) / len(errs)


def markdown(rows: list[dict], seconds: float) -> str:
    pick = {(r["gpu"], r["implementation"], r["case"]): r for r in rows}
    head = pick[("h100", "diffusers", "Wan2.1-I2V-14B 480p")]
    light = pick[("h100", "LightX2V", "Wan2.1-I2V-14B 480p")]
    h200 = pick[("h200", "Wan2.1 official", "Wan2.1-I2V-14B 480p")]
    base = [r["implied_mfu"] for r in rows if r["kind"] == "baseline"]
    lines = ["## GPU cost estimator against published timings", "",
             "`.venv/bin/python -m benchmarks.bench_estimator`", "",
             f"Predictions use MFU = {MFU:.2f} of the dense bf16 peak, chosen before looking at these numbers "
             "(PyTorch DiT inference with fused attention commonly reaches 35-50 %); FLOPs are counted on the meta "
             "device from the shipped configs (models/configs). *s/step* compares the denoising step alone; "
             "*total* adds text/image encoding and the VAE decode (the published totals may also hold model "
             "movement or the I2V VAE encode, which the estimator does not count). *Implied MFU* is the "
             "utilisation the published time means for the counted FLOPs.", "",
             "| case | GPU | metric | implementation | published | predicted | error | TFLOP/step | implied MFU |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        unit = "s/step" if r["metric"] == "s/step" else "s"
        lines.append(f"| {r['case']}, {r['frames']} frames, {r['steps']} steps, CFG | {r['gpu'].upper()} | "
                     f"{r['metric']} | {r['implementation']} | {r['published']:g} {unit} | "
                     f"{r['predicted']:.2f} {unit} | {r['error_pct']:+.1f} % | {r['tflop_per_step']:,.0f} | "
                     f"{r['implied_mfu']:.2f} |")
    lines += ["", f"Mean absolute error: {_mape(rows, 'baseline'):.0f} % against plain bf16 PyTorch implementations "
              f"(diffusers, Wan2.1 official); {_mape(rows, 'optimised'):.0f} % against optimised frameworks "
              "(SageAttention's 8-bit attention, fused kernels, compilation), which the fixed MFU does not model: "
              "it predicts plain bf16 PyTorch and over-predicts the time of a tuned framework.", "",
              f"The headline case ({head['case']}, 832x480, 81 frames, 40 steps, CFG, one H100): "
              f"{head['tflop_per_step']:,.0f} TFLOP per step ({head['tokens']:,} tokens), predicted "
              f"{head['predicted']:.2f} s/step vs {head['published']:g} s/step with diffusers "
              f"({head['error_pct']:+.1f} %) and {light['published']:g} s/step with LightX2V "
              f"({light['error_pct']:+.1f} %).", "",
              f"What the errors say: the utilisation the baselines imply runs from {min(base):.2f} to {max(base):.2f} "
              "instead of one number. It rises with sequence length (Wan 480p, 32,760 tokens: 0.35-0.37; 720p, "
              "75,600 tokens: 0.55 — attention, which fused kernels run nearer peak than the linear layers, grows "
              "from 53 % to 72 % of the FLOPs), and it is higher on the A100 than on Hopper for the same model "
              "(CogVideoX-5B: 0.61 vs 0.38; plain PyTorch kernels reach less of the H100's larger peak). So one "
              "a-priori MFU is good to about +-15 % for 480p-class Wan/CogVideoX work on an H100/H200 and "
              "over-predicts long sequences and Ampere cards by up to ~50 %. The CogVideoX numbers are rounded "
              "(~90 s, ~180 s) and were taken with CPU offload on.", "",
              f"VRAM, for context only (not scored): reel's estimated peak for the 480p shot without offload is "
              f"{h200['peak_vram_gb']:g} GB (bf16 transformer and encoders, fp32 VAE, cond+uncond batched); LightX2V "
              "reports 71 GB for the official Wan2.1 code and 50 GB for LightX2V_2 on the H200 — different "
              "precision and residency choices.", "",
              "Sources:"]
    lines += [f"- {s}" for s in dict.fromkeys(r["source"] for r in rows)]
    lines += ["- GPU peaks: models/configs/gpus.json (each entry cites its source)",
              "", f"Estimator CPU time for all {len(rows)} cases (meta-device runs of the 14B / 5B models): "
              f"{seconds:.0f} s."]
    return "\n".join(lines)


def main() -> None:
    rows, seconds = run()
    text = markdown(rows, seconds)
    write_section("estimator", text, {"mfu": MFU, "rows": rows, "seconds": round(seconds, 1)})
    print(text)


if __name__ == "__main__":
    main()
