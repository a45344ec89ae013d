"""reel against each family's diffusers pipeline on tiny random configs of every supported family
(Wan, LTX-Video, CogVideoX, HunyuanVideo): same weights, seeds, steps, same process, interleaved.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_families
    .venv/bin/python -m benchmarks.bench_families --shots 8 --rounds 2 --batch-size 4 --families wan,ltx

Per family: a tiny random folder is written to a temp dir (models/tiny.py for Wan, the builders of
tests/models/test_{ltx,cogvideox,hunyuan}.py for the others), an N-shot film is made with that folder as its
model. Each round, in alternating order, the family's diffusers pipeline renders the film shot by shot
(pipe(...) then export_to_video; each shot's seed, steps, guidance, size, frames and max_sequence_length from
reel's plan; the folder's own scheduler, which is what reel's "default" uses) and reel renders it with
`Engine("cpu").render(build_plan(film, batch_size=B), out)` with a cold prompt cache. Reports shots per
minute for both, the ratio, PSNR of reel's frames tapped before encoding (`engine.on_frames`) against the
pipeline's float frames, peak RSS growth, and the share of reel's time inside the models. A family whose
pipeline cannot be run or matched is reported as such in the table. Writes the `families` section of
benchmarks/RESULTS.md and benchmarks/results/families.json. Tiny random models make noise, not pictures:
the numbers measure overheads (planning, batching, encoding), not real-model speed.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_vs_diffusers import ModelTimer, PeakRSS, diffusers_film, psnr
from benchmarks.results import write_section
from reel.engine.embed_cache import EmbedCache
from reel.engine.plan import build_plan
from reel.engine.runtime import Engine
from reel.engine.spec import film_from_dict

FAMILIES = ("wan", "ltx", "cogvideox", "hunyuan")
# words every tiny tokenizer knows (LTX's and Hunyuan's vocabularies are the smallest)
COLORS, SHAPES, MOVES, BACKS = ("red", "green", "blue"), ("circle", "square"), ("left", "right", "up", "down"), \
    ("black", "gray")


def prompts(n: int) -> list[str]:
    return [f"a {COLORS[i % 3]} {SHAPES[(i // 3) % 2]} moving {MOVES[i % 4]} on a {BACKS[(i // 2) % 2]} background"
            for i in range(n)]


def build(family: str, path: Path) -> Path:
    if family == "wan":
        from reel.models.tiny import build_tiny_wan

        return build_tiny_wan(path, variant="t2v")
    if family == "ltx":
        from tests.models.test_ltx import build_tiny_ltx

        return build_tiny_ltx(path)
    if family == "cogvideox":
        from tests.models.test_cogvideox import build_tiny_cogvideox

        return build_tiny_cogvideox(path)  # CogVideoX 1.0, DDIM; 9 frames (8k+1)
    if family == "hunyuan":
        from tests.models.test_hunyuan import build_tiny_hunyuan

        return build_tiny_hunyuan(path)
    raise ValueError(family)


def pipeline_film(family: str, pipe, comps, jobs, out: Path) -> dict[str, np.ndarray]:
    """The family's pipeline, shot by shot, then export_to_video. Returns float frames (F, H, W, 3) in [0, 1]."""
    if family == "wan":
        return diffusers_film(pipe, jobs, out)  # UniPC from the folder's config with the shot's shift
    from diffusers.utils import export_to_video

    frames = {}
    for job in jobs:
        kw = dict(prompt=job.prompt, height=job.height, width=job.width, num_frames=job.frames,
                  num_inference_steps=job.steps, guidance_scale=job.guidance,
                  max_sequence_length=job.max_sequence_length)
        if family == "ltx":
            kw.update(negative_prompt=job.negative_prompt, frame_rate=job.fps, decode_timestep=comps.decode_timestep,
                      decode_noise_scale=comps.decode_noise_scale)
        elif family == "cogvideox":
            kw.update(negative_prompt=job.negative_prompt)
        elif family == "hunyuan":  # embedded guidance: one pass per step, no negative prompt (true_cfg_scale 1)
            kw.update(prompt_template={"template": comps.prompt_template["template"],
                                       "crop_start": comps.prompt_template["crop_start"]})
        video = pipe(**kw, generator=torch.Generator("cpu").manual_seed(job.seed), output_type="np").frames[0]
        export_to_video(list(video), str(out / f"{job.shot_id}.mp4"), fps=job.fps)
        frames[job.shot_id] = video
    return frames


def model_timer(comps):
    """ModelTimer on the text encoder, transformer and VAE decoder (and post_quant_conv where the VAE has one;
    a never-called stand-in where it does not, e.g. LTX and CogVideoX)."""
    from types import SimpleNamespace

    vae = comps.vae
    pqc = getattr(vae, "post_quant_conv", None)
    return ModelTimer(SimpleNamespace(text_encoder=comps.text_encoder, transformer=comps.transformer,
                                      vae=SimpleNamespace(decoder=vae.decoder, post_quant_conv=pqc if isinstance(
                                          pqc, torch.nn.Module) else torch.nn.Identity())))


def bench_family(family: str, args, root: Path) -> dict:
    import diffusers

    work = root / family
    work.mkdir()
    folder = build(family, work / f"tiny-{family}")
    pipe_name = json.loads((folder / "model_index.json").read_text())["_class_name"]
    res = {"family": family, "pipeline": pipe_name}
    spec = {"film": {"model": str(folder), "seed": 7},
            "shots": [{"id": f"s{i}", "prompt": p} for i, p in enumerate(prompts(args.shots))]}
    film = film_from_dict(spec, work / "film.toml")
    jobs = build_plan(film).jobs
    j = jobs[0]
    res["config"] = {"width": j.width, "height": j.height, "frames": j.frames, "steps": j.steps,
                     "guidance": j.guidance, "scheduler": j.scheduler, "max_sequence_length": j.max_sequence_length}

    pipe = getattr(diffusers, pipe_name).from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    engine = Engine("cpu")
    engine.prepare(build_plan(film))
    _, comps = engine.load(film.model)
    # warm up both (first-call costs out of the measurement)
    (work / "warm-pipe").mkdir()
    pipeline_film(family, pipe, comps, jobs[:1], work / "warm-pipe")
    engine.render(build_plan(film, only=[j.shot_id]), work / "warm-reel")

    runs = {"diffusers": [], "reel": []}
    rss = {k: [] for k in runs}
    inside = []
    ref = raw = None
    for r in range(args.rounds):
        for name in (("diffusers", "reel") if r % 2 == 0 else ("reel", "diffusers")):
            out = work / f"r{r}-{name}"
            out.mkdir()
            tapped: dict[str, list] = {}
            if name == "reel":
                engine._embeds.clear()
                engine.embed_cache = EmbedCache(out / "embed-cache")  # cold prompt cache each round
                engine.on_frames = (lambda sid, f, tapped=tapped: tapped.setdefault(sid, []).append(f)) if r == 0 \
                    else None
            timer = model_timer(comps) if name == "reel" else None
            with PeakRSS() as mem:
                t = time.perf_counter()
                if name == "diffusers":
                    frames = pipeline_film(family, pipe, comps, jobs, out)
                else:
                    engine.render(build_plan(film, batch_size=args.batch_size), out)
                runs[name].append(time.perf_counter() - t)
            rss[name].append(mem.growth)
            if timer is not None:
                inside.append(timer.seconds / runs[name][-1])
                timer.remove()
            if r == 0 and name == "diffusers":
                ref = frames
            if r == 0 and name == "reel":
                raw = {sid: np.concatenate(chunks) for sid, chunks in tapped.items()}
    engine.on_frames = None

    per_shot, shape_problems = {}, []
    for job in jobs:
        ours, theirs = raw.get(job.shot_id), np.round(ref[job.shot_id] * 255)
        if ours is None or ours.shape != theirs.shape:
            shape_problems.append(f"{job.shot_id}: reel {None if ours is None else ours.shape} vs pipeline "
                                  f"{theirs.shape}")
            continue
        per_shot[job.shot_id] = {"psnr_db": psnr(ours, theirs),
                                 "max_abs_u8": float(np.abs(ours.astype(np.float64) - theirs).max())}
    res.update(seconds=runs, rss_growth_mib=rss, per_shot=per_shot, shape_problems=shape_problems,
               inside_models=inside or None, ref_std=float(np.mean([v.std() for v in ref.values()])))
    del pipe, engine, comps
    gc.collect()
    return res


def row(res: dict, shots: int) -> str:
    fam = f"{res['family']} ({res['pipeline']})"
    if "error" in res:
        return f"| {fam} | — | — | — | — | — | — | — | NOT RUN: {res['error']} |"
    c = res["config"]
    cfg = (f"{c['width']}x{c['height']}, {c['frames']} fr, {c['steps']} steps, g {c['guidance']:g}, "
           f"{c['scheduler']}")
    d, r = statistics.median(res["seconds"]["diffusers"]), statistics.median(res["seconds"]["reel"])
    ps = [v["psnr_db"] for v in res["per_shot"].values()]
    worst = max((v["max_abs_u8"] for v in res["per_shot"].values()), default=float("nan"))
    notes = []
    if res["shape_problems"]:
        notes.append("frame shapes differ: " + "; ".join(res["shape_problems"]))
    if ps and min(ps) < 40:
        notes.append(f"NOT matched: min PSNR {min(ps):.1f} dB")
    elif ps:
        notes.append(f"matched (min {min(ps):.1f} dB, max abs diff {worst:.0f}/255)")
    if res["inside_models"]:
        notes.append(f"reel {100 * statistics.median(res['inside_models']):.0f} % in models")
    psnr_txt = f"{statistics.mean(ps):.1f} dB" if ps else "n/a"
    rd, rr = (statistics.median(res["rss_growth_mib"][k]) for k in ("diffusers", "reel"))
    return (f"| {fam} | {cfg} | {shots / d * 60:.1f} | {shots / r * 60:.1f} | {d / r:.2f}x | {psnr_txt} | "
            f"{rd:.0f} MiB | {rr:.0f} MiB | {'; '.join(notes)} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--families", default=",".join(FAMILIES))
    args = parser.parse_args(argv)
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    root = Path(tempfile.mkdtemp(prefix="reel-bench-families-"))
    results = []
    for family in args.families.split(","):
        t = time.perf_counter()
        try:
            res = bench_family(family, args, root)
        except Exception as err:  # report, don't hide: the table says which family could not be run
            traceback.print_exc()
            res = {"family": family, "pipeline": "?", "error": f"{type(err).__name__}: {err}"[:200]}
        print(f"{family}: {time.perf_counter() - t:.0f} s", flush=True)
        results.append(res)

    cmd = ".venv/bin/python -m benchmarks.bench_families"
    if (args.shots, args.rounds, args.batch_size, args.families) != (8, 2, 4, ",".join(FAMILIES)):
        cmd += f" --shots {args.shots} --rounds {args.rounds} --batch-size {args.batch_size} --families {args.families}"
    md = f"""## reel vs each family's diffusers pipeline (tiny random models)

`{cmd}`

Per family a tiny RANDOM model (noise, not pictures), {args.shots} shots, same weights, seeds, steps, guidance,
size, frames and text length, the folder's own scheduler; CPU fp32, one process, {args.rounds} interleaved round(s)
(median). diffusers: the family's pipeline shot by shot, then export_to_video. reel: `Engine.render`, batch
{args.batch_size}, cold prompt cache. PSNR: reel's frames before encoding against the pipeline's frames (mean over
shots; 99 = identical). Peak RSS growth per phase. With models this small the timings measure everything around
the models (planning, batching, text encoding, decoding, encoding), not real-model speed.

| family (pipeline) | config | diffusers shots / min | reel shots / min | reel vs diffusers | PSNR | \
RSS growth diffusers | RSS growth reel | notes |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(row(r, args.shots) for r in results)}
"""
    write_section("families", md, {"families": results, "shots": args.shots, "rounds": args.rounds,
                                   "batch_size": args.batch_size})
    print(md)


if __name__ == "__main__":
    main()
