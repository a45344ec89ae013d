"""Opt-in speed-ups: attention backend selection, step cache, skipping the unconditional pass,
torch.compile parity, thread settings."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from reel.engine.accel import SpeedConfig
from reel.engine.cli import app
from reel.engine.plan import build_plan
from reel.engine.runtime import Engine
from reel.engine.sampling import guided, sample
from reel.engine.spec import SpecError, load_film
from reel.kernels.attention import BACKENDS, BackendError, select_backend

runner = CliRunner()

FILM = """
[film]
model = "{model}"
seed = 2
steps = 6
guidance = 4.0

[speed]
{speed}

[[shots]]
id = "a"
prompt = "a red circle moving left on a black background"
"""


def test_auto_attention_on_cpu_is_sdpa_and_says_why_others_passed():
    name, passed = select_backend("auto", torch.device("cpu"), torch.float32, 64)
    assert name == "sdpa"
    assert any("needs a CUDA device" in r for r in passed["flash-attn"])
    assert any("needs fp16 or bf16" in r for r in passed["xformers"])


def test_forced_backend_lists_every_reason():
    with pytest.raises(BackendError) as info:
        select_backend("flash-attn", torch.device("cpu"), torch.float32, 300)
    text = str(info.value)
    for needle in ("needs a CUDA device", "needs fp16 or bf16", "head size 300 unsupported"):
        assert needle in text
    with pytest.raises(BackendError, match="unknown backend"):
        select_backend("magic", torch.device("cpu"), torch.float32, 64)
    assert BACKENDS["sdpa"].validate(torch.device("cpu"), torch.float32, 64) == []
    assert BACKENDS["sageattention"].validate(torch.device("cpu"), torch.bfloat16, 80)[-1].startswith("head size 80")


def test_cli_attention_errors_exit_2(write_spec, tmp_path):
    spec = write_spec(FILM.replace("{speed}", ""))
    result = runner.invoke(app, ["render", str(spec), "--out", str(tmp_path / "o"), "--attention", "xformers"])
    assert result.exit_code == 2 and "needs a CUDA device" in result.output and not (tmp_path / "o").exists()
    result = runner.invoke(app, ["render", str(spec), "--out", str(tmp_path / "o"), "--attention", "fast"])
    assert result.exit_code == 2 and "unknown backend" in result.output
    with pytest.raises(SpecError, match="speed.stepcache"):
        load_film(write_spec(FILM.replace("{speed}", "stepcache = 0.1")))


def trajectory(spec_path, engine=None, calls=None):
    """Latents of shot a through the runtime's loop; `calls` gets the batch size of each block-1 FFN call
    (inside the block: a step-cache skip never reaches it)."""
    engine = engine or Engine("cpu")
    plan = build_plan(load_film(spec_path))
    engine.prepare(plan)
    family, comps = engine.load(plan.film.model)
    job = plan.jobs[0]
    hook = None
    if calls is not None:
        hook = comps.transformer.blocks[1].ffn.register_forward_hook(
            lambda m, args, out: calls.append(args[0].shape[0]))
    from reel.engine.accel import step_cache_session

    key = str(plan.film.model.path)
    cond = engine.embed(family, comps, key, [job.prompt], job.max_sequence_length)
    uncond = engine.embed(family, comps, key, [job.negative_prompt], job.max_sequence_length)
    noise = family.initial_noise(family.latent_shape(comps, job.frames, job.height, job.width), job.seed, comps.device)
    cfg_steps = job.steps - int(round(job.steps * job.cfg_skip_last)) if job.cfg_skip_last else None
    with step_cache_session(comps.transformer, SpeedConfig(step_cache=job.step_cache)) as ctx:
        denoiser = guided(lambda x, t, e: family.velocity(comps, x, t, e), cond, uncond, job.guidance,
                          cfg_steps=cfg_steps, context=lambda i, batched: ctx(i, job.steps, batched))
        out = sample(family.make_sampler(comps, job.scheduler, job.shift), denoiser, noise, job.steps)
    if hook:
        hook.remove()
    return out


def test_cfg_skip_last_drops_the_unconditional_pass(write_spec):
    calls, base_calls = [], []
    base = trajectory(write_spec(FILM.replace("{speed}", ""), "base.toml"), calls=base_calls)
    zero = trajectory(write_spec(FILM.replace("{speed}", "cfg_skip_last = 0.0"), "zero.toml"))
    skipped = trajectory(write_spec(FILM.replace("{speed}", "cfg_skip_last = 0.5")), calls=calls)
    assert base_calls == [2] * 6 and calls == [2, 2, 2, 1, 1, 1]
    assert torch.equal(base, zero)
    assert (skipped - base).abs().max() > 0


def test_step_cache_skips_blocks_and_stays_close(write_spec):
    base_calls, cached_calls = [], []
    base = trajectory(write_spec(FILM.replace("{speed}", ""), "base.toml"), calls=base_calls)
    cached = trajectory(write_spec(FILM.replace("{speed}", "step_cache = 0.6")), calls=cached_calls)
    assert len(cached_calls) < len(base_calls)  # later blocks were skipped on some steps
    assert float((cached - base).abs().mean()) < float(base.abs().mean())  # same trajectory, approximately
    again = trajectory(write_spec(FILM.replace("{speed}", "step_cache = 0.6"), "again.toml"))
    assert torch.equal(cached, again)  # state resets between trajectories: deterministic
    engine = Engine("cpu")  # one engine (as in `reel serve`): cached, then uncached, then cached again
    first = trajectory(write_spec(FILM.replace("{speed}", "step_cache = 0.6"), "e1.toml"), engine=engine)
    plain = trajectory(write_spec(FILM.replace("{speed}", ""), "e2.toml"), engine=engine)
    assert torch.equal(first, cached) and torch.equal(plain, base)
    assert torch.equal(trajectory(write_spec(FILM.replace("{speed}", "step_cache = 0.6"), "e3.toml"), engine=engine),
                       cached)


def test_render_with_speed_flags_records_them(write_spec, tmp_path):
    import json

    out = tmp_path / "out"
    result = runner.invoke(app, ["render", str(write_spec(FILM.replace("{speed}", ""))), "--out", str(out),
                                 "--step-cache", "0.05", "--cfg-skip-last", "0.25", "--threads", "1", "-q"])
    assert result.exit_code == 0, result.output
    speed = json.loads((out / "shots" / "a.json").read_text())["speed"]
    assert speed["step_cache"] == 0.05 and speed["cfg_skip_last"] == 0.25 and speed["attention"] == "sdpa"


def test_compiled_transformer_matches_eager(write_spec):
    """compile = "full": the whole transformer behind one removable compile hook (kernels/regional_compile.py; the
    regional mode has its own tests in tests/kernels/test_regional_compile.py)."""
    from reel.kernels.regional_compile import compile_seconds, remove_compile

    eager = trajectory(write_spec(FILM.replace("{speed}", "").replace("steps = 6", "steps = 2"), "eager.toml"))
    spec = write_spec(FILM.replace("{speed}", 'compile = "full"').replace("steps = 6", "steps = 2"))
    engine = Engine("cpu")
    plan = build_plan(load_film(spec))
    compiled = trajectory(spec, engine=engine)
    assert engine.applied[str(plan.film.model.path)]["compile"].startswith("full (1 compiled region(s)")
    assert float((compiled - eager).abs().max()) < 1e-4
    transformer = engine.load(plan.film.model)[1].transformer
    assert compile_seconds(transformer) > 0 and remove_compile(transformer) == 1
    assert "forward" not in vars(transformer)


def test_memory_plan_picks_the_first_that_fits():
    from reel.engine.accel import choose_memory

    gb = 2**30
    mem = {"peak": 40 * gb, "peak, tiled VAE": 30 * gb, "peak, offload model": 20 * gb,
           "peak, offload model, tiled VAE": 18 * gb, "peak, offload group": 6 * gb,
           "peak, offload group, tiled VAE": 3 * gb,
           "transformer weights": 16 * gb}
    fits = choose_memory(mem, 48 * gb, 8 * gb)
    assert (fits["offload"], fits["vae_tiling"], fits["weights"]) == ("none", False, "bf16")
    tiled = choose_memory(mem, 32 * gb, 8 * gb)
    assert (tiled["offload"], tiled["vae_tiling"], tiled["weights"]) == ("none", True, "bf16")
    fp8 = choose_memory(mem, 24 * gb, 8 * gb)
    assert (fp8["offload"], fp8["vae_tiling"], fp8["weights"]) == ("none", True, "fp8")
    model = choose_memory(mem, 19 * gb, 8 * gb)
    assert (model["offload"], model["vae_tiling"]) == ("model", True)
    group = choose_memory(mem, 8 * gb, 8 * gb)
    assert group["offload"] == "group" and "fits" in group["why"]
    assert "expect out-of-memory" in choose_memory(mem, 1 * gb, 8 * gb)["why"]


def test_explicit_memory_settings_on_cpu_are_recorded(write_spec, tmp_path):
    import json

    out = tmp_path / "out"
    result = runner.invoke(app, ["render", str(write_spec(FILM.replace("{speed}", "weights = \"fp8\""))),
                                 "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    speed = json.loads((out / "shots" / "a.json").read_text())["speed"]
    assert "CUDA only" in speed["weights"]


def test_cpu_bf16_compute_is_opt_in_and_close(write_spec):
    """`weights = "bf16"` on the CPU runs the transformer and text encoder in bf16 (the VAE's weights stay fp32;
    its decode runs under bf16 autocast on CPUs with native bf16)."""
    base = trajectory(write_spec(FILM.replace("{speed}", ""), "base.toml"))
    engine = Engine("cpu")
    fast = trajectory(write_spec(FILM.replace("{speed}", 'weights = "bf16"'), "bf16.toml"), engine=engine)
    film_model = next(iter(engine._models.values()))[1]
    assert film_model.transformer.dtype == torch.bfloat16 and film_model.vae.dtype == torch.float32
    assert fast.dtype == torch.float32  # the sampler state stays fp32
    rel = float((fast - base).abs().mean() / base.abs().mean())
    assert 0 < rel < 0.1, rel
    applied = next(iter(engine.applied.values()))
    assert applied["weights"].startswith("bf16")


def test_decode_under_autocast_yields_fp32_and_leaves_the_consumer_alone():
    """engine/runtime.py `_in_autocast`: each decode step runs under bf16 autocast, what the consumer does with
    a chunk (upscaler, encoder) does not, and chunks come out fp32."""
    from reel.engine.runtime import _in_autocast

    def decode():
        for _ in range(3):
            assert torch.is_autocast_enabled("cpu")
            yield torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3))  # bf16 under autocast

    chunks = list(_in_autocast(decode(), "cpu", torch.bfloat16))
    assert len(chunks) == 3
    for chunk in _in_autocast(decode(), "cpu", torch.bfloat16):
        assert chunk.dtype == torch.float32 and float(chunk[0, 0]) == 3.0
        assert not torch.is_autocast_enabled("cpu")


def test_fused_kernels_auto_stays_off_on_cuda_until_measured_faster(tiny_model):
    """`auto` leaves the Triton kernels off unless engine/measured_speedups.json has a row on this GPU showing
    them faster (on the one H200 measured they made a step 1.39x slower); `on` asks for them.

    The components claim a CUDA device: apply_load_time decides from the device type, and with the kernels
    off nothing touches the GPU, so this runs on the CPU."""
    from types import SimpleNamespace

    from diffusers import WanTransformer3DModel

    from reel.engine.accel import apply_load_time
    from reel.models.registry import FAMILIES

    transformer = WanTransformer3DModel.from_pretrained(tiny_model / "transformer").eval()
    processors = {name: type(p) for name, p in transformer.attn_processors.items()}
    comps = SimpleNamespace(device=torch.device("cuda"), dtype=torch.bfloat16, transformer=transformer,
                            transformer_2=None, vae=None)  # the family's experts(): Wan 2.1, one transformer
    wan = FAMILIES["wan"]
    applied = apply_load_time(comps, SpeedConfig(), family=wan)
    assert applied["fused_kernels"].startswith("off (auto: no recorded measurement of fused_kernels on unknown GPU")
    assert applied["fused_kernels"].endswith('fused_kernels = "on" to try)')
    h200 = apply_load_time(comps, SpeedConfig(), family=wan, gpu_name="NVIDIA H200")
    assert h200["fused_kernels"].startswith("off (auto: on: measured 0.72x on NVIDIA H200")
    assert {name: type(p) for name, p in transformer.attn_processors.items()} == processors
    assert all("forward" not in vars(block) for block in transformer.blocks)  # the blocks keep diffusers' forward
    assert "fused_kernels" not in apply_load_time(comps, SpeedConfig(fused_kernels="off"), family=wan)
    cpu = SimpleNamespace(device=torch.device("cpu"), dtype=torch.float32, transformer=transformer, vae=None)
    with pytest.raises(BackendError, match="fused_kernels = on cannot run here: .*needs a CUDA device"):
        apply_load_time(cpu, SpeedConfig(fused_kernels="on"), family=wan)


def test_step_cache_state_resets_between_trajectories_on_one_engine(write_spec):
    """Two cached trajectories in a row on one engine (the cache stays enabled: its state is reset between them,
    engine/accel.py `reset_step_cache`), then a new threshold, each match a fresh engine's."""
    fresh = trajectory(write_spec(FILM.replace("{speed}", "step_cache = 0.6"), "fresh.toml"))
    fresh_low = trajectory(write_spec(FILM.replace("{speed}", "step_cache = 0.3"), "fresh_low.toml"))
    engine = Engine("cpu")
    runs = [trajectory(write_spec(FILM.replace("{speed}", f"step_cache = {v}"), f"{i}.toml"), engine=engine)
            for i, v in enumerate((0.6, 0.6, 0.3))]
    assert torch.equal(runs[0], fresh) and torch.equal(runs[1], fresh) and torch.equal(runs[2], fresh_low)
    transformer = next(iter(engine._models.values()))[1].transformer
    assert transformer.is_cache_enabled  # left on for the next cached trajectory


def test_cpu_fast_paths_are_recorded_on_the_cpu_and_off_renders_with_diffusers_modules(write_spec, tmp_path):
    """`cpu_fast_paths` auto: on for CPU renders, in the manifest; "off": diffusers' own processors and VAE norms,
    the same trajectory up to rounding."""
    import json

    from diffusers.models.transformers.transformer_wan import WanAttnProcessor

    from reel.kernels.wan_cpu import WanSelfAttnProcessorCPU

    auto_engine, off_engine = Engine("cpu"), Engine("cpu")
    auto = trajectory(write_spec(FILM.replace("{speed}", ""), "auto.toml"), engine=auto_engine)
    off = trajectory(write_spec(FILM.replace("{speed}", 'cpu_fast_paths = "off"'), "off.toml"), engine=off_engine)
    counts = next(iter(auto_engine.applied.values()))["cpu_fast_paths"]
    assert counts["self_attention"] == 2 and counts["vae_norms"] > 0
    auto_comps = next(iter(auto_engine._models.values()))[1]
    assert all(isinstance(b.attn1.processor, WanSelfAttnProcessorCPU) for b in auto_comps.transformer.blocks)
    assert "cpu_fast_paths" not in next(iter(off_engine.applied.values()))
    comps = next(iter(off_engine._models.values()))[1]
    assert all(type(p) is WanAttnProcessor for p in comps.transformer.attn_processors.values())
    assert all("forward" not in vars(m) for m in (*comps.vae.modules(), *comps.transformer.modules()))
    torch.testing.assert_close(off, auto, rtol=1e-4, atol=1e-4)
    out = tmp_path / "out"
    spec = write_spec(FILM.replace("{speed}", 'cpu_fast_paths = "off"'), "render.toml")
    result = runner.invoke(app, ["render", str(spec), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert "cpu_fast_paths" not in json.loads((out / "shots" / "a.json").read_text())["speed"]


def test_cpu_fast_paths_on_fails_for_families_they_do_not_cover(tiny_model, write_spec):
    from types import SimpleNamespace

    from diffusers import WanTransformer3DModel

    from reel.engine.accel import apply_load_time
    from reel.models.registry import FAMILIES

    transformer = WanTransformer3DModel.from_pretrained(tiny_model / "transformer").eval()
    processors = dict(transformer.attn_processors)
    comps = SimpleNamespace(device=torch.device("cpu"), dtype=torch.float32, transformer=transformer, vae=None)
    with pytest.raises(BackendError, match="cpu_fast_paths = on cannot run here: they cover Wan models, not ltx"):
        apply_load_time(comps, SpeedConfig(cpu_fast_paths="on"), family=FAMILIES["ltx"])
    assert dict(transformer.attn_processors) == processors  # failed before changing anything
    assert "cpu_fast_paths" not in apply_load_time(comps, SpeedConfig(), family=FAMILIES["ltx"])  # auto: quietly off
    with pytest.raises(SpecError, match="speed.cpu_fast_paths"):
        load_film(write_spec(FILM.replace("{speed}", 'cpu_fast_paths = "fast"')))


def test_each_films_speed_applies_on_one_long_lived_engine(write_spec, tmp_path):
    """A server's Engine renders film after film: each one's [speed] holds for its own render (the model is
    loaded again when a load-time setting differs), not the first film's for the Engine's lifetime."""
    import json

    engine = Engine("cpu")
    plain = build_plan(load_film(write_spec(FILM.format(model="{model}", speed=""), "plain.toml")))
    bf16 = build_plan(load_film(write_spec(FILM.format(model="{model}", speed='weights = "bf16"'), "bf16.toml")))
    dtypes = []
    for i, plan in enumerate((plain, bf16, plain)):
        result = engine.render(plan, tmp_path / f"out{i}")
        manifest = json.loads(result.shots[0].manifest.read_text())
        dtypes.append((manifest["dtype"], manifest["speed"].get("weights")))
        _, comps = engine.load(plan.film.model)
        assert comps.transformer.dtype == getattr(torch, manifest["dtype"])
    assert [d for d, _ in dtypes] == ["float32", "bfloat16", "float32"]
    assert dtypes[1][1].startswith("bf16")


def test_cli_compile_and_fp8_flags(write_spec, tmp_path):
    """--compile MODE / --no-compile / --fp8-matmul on render and preview: bad values exit 2 before anything is
    written; the chosen values reach the film's [speed] (the manifest records what was applied)."""
    import json

    spec = write_spec(FILM.replace("{speed}", "compile = true"))
    result = runner.invoke(app, ["render", str(spec), "--out", str(tmp_path / "o"), "--compile", "fast"])
    assert result.exit_code == 2 and "--compile fast: unknown mode — use one of auto, off, regional" in result.output
    result = runner.invoke(app, ["render", str(spec), "--out", str(tmp_path / "o"), "--compile", "full",
                                 "--no-compile"])
    assert result.exit_code == 2 and "contradict" in result.output and not (tmp_path / "o").exists()
    result = runner.invoke(app, ["preview", str(spec), "--out", str(tmp_path / "p"), "--compile", "fast"])
    assert result.exit_code == 2 and "--compile fast: unknown mode" in result.output
    result = runner.invoke(app, ["render", str(spec), "--out", str(tmp_path / "o"), "--compile", "cuda-graphs"])
    assert result.exit_code == 2 and "compile = cuda-graphs cannot run here: cuda-graphs needs a CUDA device" in \
        result.output and not (tmp_path / "o").exists()
    out = tmp_path / "out"
    result = runner.invoke(app, ["render", str(spec), "--out", str(out), "--no-compile", "--fp8-matmul", "-q"])
    assert result.exit_code == 0, result.output
    speed = json.loads((out / "shots" / "a.json").read_text())["speed"]
    assert "compile" not in speed  # the spec's true (regional) was overridden by --no-compile
    assert speed["fp8_matmul"].endswith("for checking the numbers, not for speed")  # tiny model: all skipped
    help_text = runner.invoke(app, ["render", "--help"]).output
    assert "cuda-graphs" in help_text and "--fp8-matmul" in help_text


def test_the_attention_backend_goes_on_and_off_every_expert(tmp_path):
    """Wan 2.2 A14B has two transformers: the backend routes both (apply_attention, which apply_load_time uses) and
    remove_load_time puts both back on diffusers' default. cudnn cannot run on the CPU, but routing is only the
    processors' setting, which is what is checked."""
    from diffusers.models.attention_dispatch import AttentionBackendName

    from reel.engine.accel import apply_attention, remove_load_time
    from reel.models import wan
    from reel.models.registry import FAMILIES
    from reel.models.tiny import build_tiny_wan

    comps = wan.load(build_tiny_wan(tmp_path / "a14b", variant="a14b"), torch.device("cpu"), torch.float32)

    def backends() -> dict[str, set]:
        return {name: {m.processor._attention_backend for m in expert.modules()
                       if getattr(getattr(m, "processor", None), "_attention_backend", "none") != "none"}
                for name, expert in wan.experts(comps).items()}

    assert backends() == {"high": {None}, "low": {None}}
    assert apply_attention(comps, "cudnn", FAMILIES["wan"]) == 2
    assert backends() == {"high": {AttentionBackendName._NATIVE_CUDNN}, "low": {AttentionBackendName._NATIVE_CUDNN}}
    remove_load_time(comps, FAMILIES["wan"])
    assert backends() == {"high": {None}, "low": {None}}


def _claimed_cuda(tiny_model):
    """Components that claim a CUDA device on the CPU: apply_load_time decides from the device type, and what the
    cases below apply (sdpa, layerwise casting) runs on CPU tensors."""
    from types import SimpleNamespace

    from diffusers import WanTransformer3DModel

    transformer = WanTransformer3DModel.from_pretrained(tiny_model / "transformer").eval()
    return SimpleNamespace(device=torch.device("cuda"), dtype=torch.bfloat16, transformer=transformer, vae=None)


def test_regional_compile_never_runs_with_fp8_weight_storage(tiny_model, tmp_path):
    """diffusers' layerwise casting hooks every Linear: regional compile would need a graph per block. Both asked
    for by name: an error that says why and what to choose; one of them by auto: compile off, and why."""
    from reel.engine.accel import apply_load_time
    from reel.engine.measured import record_row
    from reel.kernels.hooks import has_hook
    from reel.kernels.regional_compile import COMPILE_HOOK

    comps = _claimed_cuda(tiny_model)
    with pytest.raises(BackendError, match='compile = "regional" with weights = "fp8" cannot run as asked: '
                                           "diffusers' layerwise casting .* Use weights = \"bf16\""):
        apply_load_time(comps, SpeedConfig(compile="regional", weights="fp8", offload="none", vae_tiling=False))
    assert not hasattr(comps.transformer.blocks[0], "_diffusers_hook")  # nothing changed
    table = tmp_path / "measured.json"
    record_row({"gpu": "Test GPU", "setting": "compile", "value": "regional", "model": "wan2.1-t2v-1.3b",
                "size": "832x480x81, 6 steps", "s_per_step": 1.0, "baseline_s_per_step": 1.3, "speedup": 1.3,
                "psnr_db": None, "date": "2026-12-05", "versions": "torch 2.11+cu130", "source": "test"}, table)
    speed = SpeedConfig(weights="fp8", offload="none", vae_tiling=False, fused_kernels="off")
    applied = apply_load_time(comps, speed, gpu_name="Test GPU", table=table)  # auto compile: regional measured
    assert applied["weights"] == "fp8 (layerwise casting)"
    assert applied["compile"].startswith('off (weights = "fp8", and regional compile does not combine with them')
    assert not any(has_hook(block, COMPILE_HOOK) for block in comps.transformer.blocks)
    assert "compile_auto" not in applied
