"""The Engine: renders a RenderPlan into a render store, batch by batch.

    engine = Engine(device="auto")
    result = engine.render(build_plan(load_film("film.toml")), out_dir="out/")

Per batch: 1. text embeddings (cached per unique prompt)  2. noise from each shot's own generator
3. our denoising loop  4. VAE decode latent frame by latent frame, streamed into ffmpeg  5. manifests.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
import wave
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from reel.engine.accel import SpeedConfig, apply_load_time, apply_offload, reset_step_cache, step_cache_session
from reel.engine.lora_bank import AdapterBank, LoraError
from reel.engine.devices import compute_dtype, pick_device
from reel.engine.embed_cache import EmbedCache, encoder_hash
from reel.engine.hashing import weights_hash
from reel.engine.load_errors import load_failure
from reel.engine.weights_check import check_weight_files
from reel.engine.plan import RenderPlan, ShotJob
from reel.engine.post.assemble import assemble
from reel.engine.post.export import export_timeline
from reel.engine.post.storyboard import preview_sheets
from reel.engine.post.probe import check_audio
from reel.engine.post.encode import VideoWriter, get_codec, pick_encoder
from reel.engine.post.timeline import AudioPlacement, Timeline, place_audio, place_clips
from reel.engine.post.watermark import Watermark
from reel.engine.progress import RenderProgress
from reel.engine.shot_audio import write_wav
from reel.engine.sampling import StepState, cat_cond, guided, sample, with_step_hook
from reel.engine.store import RenderStore, atomic_write_json, interrupts_deferred, read_json
from reel.models.common import cpu_bf16_fast
from reel.models.family import family_module
from reel.models.long_shots import chunks as long_chunks
from reel.models.registry import ModelInfo

MANIFEST_VERSION = 1


def _batched(cached, comps):
    """A cached per-prompt embedding (no batch dim) as a batch of one on the model's device and dtype."""
    def one(v: torch.Tensor) -> torch.Tensor:
        v = v[None].to(comps.device)
        return v.to(comps.dtype) if v.is_floating_point() else v  # masks and ids keep their integer dtype

    return {k: one(v) for k, v in cached.items()} if isinstance(cached, dict) else one(cached)


def _in_autocast(chunks, device_type: str, dtype: torch.dtype):
    """Run a decode generator's steps under autocast (each next() inside the context, not the consumer's
    work between them: the upscaler and encoder stay in fp32); chunks come out fp32."""
    while True:
        with torch.autocast(device_type, dtype=dtype):
            try:
                chunk = next(chunks)
            except StopIteration:
                return
        yield chunk.float()


def _preview_decoder_compute(device: torch.device) -> str:
    """What decode_preview runs the tiny decoder in on this device (for the manifest)."""
    return "bf16 autocast" if cpu_bf16_fast(device) else "fp32"


def _as_dict(cond) -> dict:
    return cond if isinstance(cond, dict) else {"embeds": cond}


def _unbatched(e):
    return {k: v[0] for k, v in e.items()} if isinstance(e, dict) else e[0]


def _load_key(speed: SpeedConfig, dtype: torch.dtype, device: torch.device, plan: RenderPlan | None) -> tuple:
    """What a loaded model depends on besides its folder: the dtype and the [speed] settings applied at load
    (step_cache and cfg_skip_last are per batch, threads per render); on CUDA with "auto" memory settings also
    the largest shot, which the memory plan was made for."""
    key = (str(dtype), *sorted((k, str(v)) for k, v in asdict(speed).items()
                               if k not in ("step_cache", "cfg_skip_last", "threads")))
    if device.type == "cuda" and plan is not None and "auto" in (speed.offload, speed.vae_tiling, speed.weights):
        key += (max((j.frames * j.width * j.height for j in plan.film_jobs), default=0),)
    if plan is not None:  # a folder's reel.json opting into long shots is read at load (models/wan.py)
        key += (str(plan.film.model.defaults.get("long_shots")),)
    return key


class OutOfMemory(RuntimeError):
    """A shot that does not fit in memory after every retry; the message says what to change."""


def provenance(title: str, model: str, seed: int | None) -> dict:
    """Metadata every encoded file carries: title, an AI-generated label, model and seed."""
    tags = {"title": title, "comment": f"AI-generated with reel (model {model}" + (f", seed {seed})" if seed is not None
                                                                                  else ")"),
            "ai_generated": "true", "reel_model": model}
    if seed is not None:
        tags["reel_seed"] = str(seed)
    return tags


def package_versions() -> dict:
    import diffusers
    import transformers

    try:
        from importlib.metadata import version

        reel_version = version("reel")
    except Exception:
        reel_version = "dev"
    return {"reel": reel_version, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


@dataclass(frozen=True)
class ShotResult:
    shot_id: str
    video: Path
    manifest: Path
    status: str  # "rendered" | "reused"
    timings: dict = field(default_factory=dict)  # seconds


@dataclass(frozen=True)
class FilmResult:
    shots: tuple[ShotResult, ...]
    film_video: Path | None  # None when not every shot of the film is rendered yet
    film_manifest: Path | None
    film_status: str  # "assembled" | "reused" | "skipped: <why>"


class Engine:
    """Holds loaded models and the prompt-embedding cache for one process."""

    def __init__(self, device: str = "auto", progress: RenderProgress | None = None):
        self.device = pick_device(device)
        self.dtype = compute_dtype(self.device)
        self.progress = progress or RenderProgress(quiet=True)
        self._models: dict[str, tuple[object, object]] = {}  # model path -> (family module, components)
        self._load_keys: dict[str, tuple] = {}  # model path -> the dtype and [speed] it was loaded with
        self._embeds: dict[tuple[str, str, int], torch.Tensor] = {}  # (model, prompt, length) -> (1, L, D)
        self._hashes: dict[str, str] = {}  # weights path -> "sha256:..."
        self._banks: dict[str, AdapterBank] = {}  # "model path|expert" -> that transformer's LoRA adapters
        self._encoder_hashes: dict[str, str] = {}
        self._audio_durations: dict[Path, float] = {}  # audio file -> seconds (decoded once)
        self._upscalers: dict[str, object] = {}  # spec value -> loaded Upscaler
        self._preview_decoders: dict[str, torch.nn.Module] = {}  # file -> loaded PreviewDecoder
        self.speed = SpeedConfig()  # the [speed] of the plan being rendered (its load-time part keys the models)
        self.on_frames = None  # optional callback(shot_id, (f, H, W, 3) uint8) for every decoded chunk
        self.fault_hook = None  # optional callback(jobs) at the start of every batch (failure injection in tests)
        self._memory_savers = False
        self.applied: dict[str, dict] = {}  # model path -> speed-ups applied at load
        self.embed_cache = EmbedCache()
        self._prepared: RenderPlan | None = None  # the plan prepare() readied for the next render() (once)
        self._threads = torch.get_num_threads()  # torch's own choice: a film without [speed] threads gets it

    # -- models ------------------------------------------------------------------------------------
    def load(self, model: ModelInfo, plan: RenderPlan | None = None):
        """The model's family module and components, loaded with the current [speed] settings and dtype. With
        `plan` (prepare's call), a model loaded for other settings, or changed by an out-of-memory retry, is
        loaded again: a server's jobs each keep their own [speed]. The plan's shot sizes plan CUDA memory
        when its [speed] asks for "auto"."""
        key = str(model.path)
        if plan is not None and key in self._models and \
                self._load_keys[key] != _load_key(self.speed, self.dtype, self.device, plan):
            self.progress.say(f"reloading {model.name}: this film's [speed] settings differ from the last one's")
            self._unload(key)
        if key not in self._models:
            family = family_module(model.family)
            self.progress.say(f"loading {model.name} ({model.family.name}) on {self.device} ...")
            single = model.defaults.get("transformer_file")
            check_weight_files(model.path, [Path(single)] if single else [])
            try:
                comps = family.load(model.path, self.device, self.dtype)
            except torch.OutOfMemoryError:
                raise
            except Exception as err:  # noqa: BLE001 - every cause is named: a package, a version or the weights
                raise load_failure(model.path, err) from err
            self.applied[key] = apply_load_time(comps, self.speed, plan.film if plan else None, family=model.family)
            self._models[key] = (family, comps)
            self._load_keys[key] = _load_key(self.speed, self.dtype, self.device, plan)
        return self._models[key]

    def _unload(self, key: str) -> None:
        """Forget a loaded model and everything built on its components (adapters, embeddings)."""
        del self._models[key], self._load_keys[key]
        self._banks = {k: v for k, v in self._banks.items() if not k.startswith(f"{key}|")}
        self._embeds = {k: v for k, v in self._embeds.items() if k[0] != key}
        self._memory_savers = False
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def weights_hash(self, model: ModelInfo) -> str:
        """The folder's weights, plus the single files its reel.json names (reel import-model)."""
        key = f"model:{model.path}"
        if key not in self._hashes:
            parts = [self.file_hash(model.path)] + [self.file_hash(v) for k, v in sorted(model.defaults.items())
                                                   if k.endswith("_file") and isinstance(v, str)]
            self._hashes[key] = parts[0] if len(parts) == 1 else "sha256:" + hashlib.sha256(
                "|".join(parts).encode()).hexdigest()
        return self._hashes[key]

    def file_hash(self, path: str | Path) -> str:
        key = str(path)
        if key not in self._hashes:
            self._hashes[key] = weights_hash(Path(path))
        return self._hashes[key]

    def lora_hashes(self, plan: RenderPlan) -> dict[str, str]:
        return {path: self.file_hash(path) for job in plan.jobs for _, path, _ in job.adapters}

    def bank(self, model: ModelInfo, expert: str = "high") -> AdapterBank:
        """The LoRA adapters of the model's transformer ("high"), or of Wan 2.2's low-noise expert ("low")."""
        key = f"{model.path}|{expert}"
        if key not in self._banks:
            family, comps = self.load(model)
            self._banks[key] = AdapterBank(family.experts(comps)[expert], family.lora_to_diffusers)
        return self._banks[key]

    def experts(self, model: ModelInfo) -> tuple[str, ...]:
        family, comps = self.load(model)
        return tuple(family.experts(comps))

    @staticmethod
    def targets(adapter: str, expert: str) -> bool:
        """Whether an adapter name (`NAME`, `NAME@high`, `NAME@low`) applies to this expert."""
        mark = adapter.split("@")[1] if "@" in adapter else "both"
        return mark in ("both", expert)

    def peft_name(self, adapter: str, path: str) -> str:
        """The adapter's name inside peft: its character name plus its file hash (unique per file)."""
        return f"{adapter.replace('@', '_')}_{self.file_hash(path).split(':')[1][:8]}"

    def check_inputs(self, plan: RenderPlan) -> None:
        """The checks that need no model: the codec can be encoded here, every audio file decodes and its
        placement fits the film."""
        film = plan.film
        pick_encoder(get_codec(film.codec))
        for track in film.audio:
            if track.path not in self._audio_durations:
                self._audio_durations[track.path] = check_audio(track.path)
        if film.audio:  # placements must fit the film (frames are known from the spec)
            clips = place_clips([(j.shot_id, Path(j.shot_id), j.frames, s.transition_frames)
                                 for j, s in zip(plan.film_jobs, film.shots)])
            place_audio(film.audio, clips, film.fps, self._audio_durations)

    def prepare(self, plan: RenderPlan) -> None:
        """Load and check everything the plan needs (model, LoRAs, upscaler, audio) before any output
        is written; raises LoraError, UpscaleError, MediaError or TimelineError naming the file."""
        film = plan.film
        if self._prepared is None or self._prepared.film != film:  # a new film (a cluster worker's next batch of
            self._hashes.clear()  # the same film keeps them): files may have changed since the last render of a
            self._audio_durations.clear()  # long-lived engine; the on-disk hash cache keeps this cheap
        self._prepared = None
        before = self.speed, self.dtype
        self.speed, self.dtype = film.speed, compute_dtype(self.device)  # this plan's [speed], not the first one's
        if self.device.type == "cuda" and film.speed.weights == "fp16":
            self.dtype = torch.float16
        elif self.device.type == "cpu" and film.speed.weights == "bf16":  # opt-in: bf16 matmuls on the CPU
            self.dtype = torch.bfloat16
        try:
            self._prepare(plan)
        except BaseException:
            self.speed, self.dtype = before  # a refused film leaves the engine as it was
            raise
        self._prepared = plan

    def _prepare(self, plan: RenderPlan) -> None:
        film = plan.film
        torch.set_num_threads(film.speed.threads or self._threads)
        self.check_inputs(plan)
        if film.upscale and film.upscale not in self._upscalers:
            from reel.engine.post.upscale import load_upscaler

            self._upscalers[film.upscale] = load_upscaler(film.upscale, self.device)
        _, comps = self.load(plan.film.model, plan)
        self.weights_hash(plan.film.model)
        for path in sorted({j.preview_decoder for j in plan.jobs if j.preview_decoder}):
            if path not in self._preview_decoders:
                from reel.models.preview_decoder import load_preview_decoder

                self._preview_decoders[path] = load_preview_decoder(
                    Path(path), comps.vae.config.z_dim, comps.device, (comps.temporal_factor, comps.spatial_factor))
        experts = self.experts(plan.film.model)
        for job in plan.jobs:
            for adapter, path, _ in job.adapters:
                if "@" in adapter and len(experts) == 1:
                    raise LoraError(f"{path}: character {adapter.split('@')[0]!r} targets a Wan 2.2 expert "
                                    f"({adapter.split('@')[1]}), but {plan.film.model.name} has one transformer — "
                                    "remove `expert`/`lora_low` or use a Wan 2.2 A14B model")
                for expert in experts:
                    if self.targets(adapter, expert):
                        self.bank(plan.film.model, expert).load(self.peft_name(adapter, path), Path(path))

    def embed(self, family, comps, model_key: str, prompts: list[str], length: int) -> torch.Tensor:
        """Text embeddings (N, L, D): from memory, else the disk cache, else the text encoder (once per prompt)."""
        missing = sorted({p for p in prompts if (model_key, p, length) not in self._embeds})
        if missing:
            if model_key not in self._encoder_hashes:
                self._encoder_hashes[model_key] = encoder_hash(Path(model_key), family.embed_key(comps))
            keys = {p: self.embed_cache.key(self._encoder_hashes[model_key], p, length, comps.dtype) for p in missing}
            for p in missing:
                cached = self.embed_cache.get(keys[p])
                if cached is not None:
                    self._embeds[(model_key, p, length)] = _batched(cached, comps)
            todo = [p for p in missing if (model_key, p, length) not in self._embeds]
            for p in todo:  # one prompt per call: an embedding never depends on which prompts it came with
                e = family.encode_prompts(comps, [p], length)  # (1, L, D), or a dict of (1, ...) tensors
                self._embeds[(model_key, p, length)] = e
                self.embed_cache.put(keys[p], _unbatched(e))
        return cat_cond([self._embeds[(model_key, p, length)] for p in prompts])  # (N, L, D) or dict

    # -- rendering ---------------------------------------------------------------------------------
    def render(self, plan: RenderPlan, out_dir: str | Path, force: bool = False) -> FilmResult:
        """Render every batch of the plan (skipping finished shots unless `force`) and assemble the film."""
        film = plan.film
        if self._prepared is not plan:  # the CLI prepares first, to report bad input before writing anything
            self.prepare(plan)
        self._prepared = None  # the next render prepares again: its files may have changed meanwhile
        root = Path(out_dir) / "preview" if plan.preview else Path(out_dir)
        store = RenderStore(root, ext=get_codec(film.codec).ext)
        with store.locked():
            return self._render_locked(plan, store, force)

    def _render_locked(self, plan: RenderPlan, store: RenderStore, force: bool) -> FilmResult:
        film = plan.film
        store.prepare()
        whash = self.weights_hash(film.model)
        lhash = self.lora_hashes(plan)
        self.progress.film(len(plan.jobs))
        results, todo = self.reusable(plan, store, force)
        for r in results.values():
            self.progress.shot_done(f"shot {r.shot_id}: unchanged, reused {r.video}")
        for batch in todo:
            for r in self.render_resilient(plan, batch, store, whash, lhash):
                results[r.shot_id] = r
        ordered = tuple(results[j.shot_id] for j in plan.jobs)
        return self.assemble(plan, store, ordered, force)

    def reusable(self, plan: RenderPlan, store: RenderStore,
                 force: bool) -> tuple[dict[str, ShotResult], list[tuple[ShotJob, ...]]]:
        """({shot: its finished clip, reused}, the batches still to render, each without its finished shots)."""
        results: dict[str, ShotResult] = {}
        todo = []
        for batch in plan.batches:
            left = []
            for job in batch:
                if not force and store.finished_shot(job.shot_id, self.fingerprint(job, plan)) is not None:
                    results[job.shot_id] = ShotResult(job.shot_id, store.shot_video(job.shot_id),
                                                      store.shot_manifest(job.shot_id), "reused")
                else:
                    left.append(job)
            if left:
                todo.append(tuple(left))
        return results, todo

    def render_resilient(self, plan: RenderPlan, jobs: tuple[ShotJob, ...], store: RenderStore, whash: str,
                         lhash: dict[str, str]) -> list[ShotResult]:
        """render_batch, and on out-of-memory: halve the batch; for a single shot turn on group offload and
        VAE tiling once; then give up with advice."""
        try:
            return self.render_batch(plan, jobs, store, whash, lhash)
        except torch.OutOfMemoryError:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(jobs) > 1:
                half = len(jobs) // 2
                self.progress.say(f"out of memory with {len(jobs)} shots in a batch: retrying as {half} + "
                                  f"{len(jobs) - half}")
                return (self.render_resilient(plan, jobs[:half], store, whash, lhash)
                        + self.render_resilient(plan, jobs[half:], store, whash, lhash))
            if not self._memory_savers:
                self.progress.say(f"out of memory on shot {jobs[0].shot_id}: retrying with group offload and "
                                  "VAE tiling")
                self.enable_memory_savers(plan.film.model)
                return self.render_resilient(plan, jobs, store, whash, lhash)
            raise OutOfMemory(f"shot {jobs[0].shot_id} ({jobs[0].width}x{jobs[0].height}, "
                              f"{jobs[0].frames} frames) does "
                              "not fit in memory even alone, with group offload and VAE tiling — lower the resolution "
                              "or frame count (`reel estimate film.toml --gpu NAME` shows the peak), or use a GPU "
                              "with more memory; finished shots are kept") from None

    def enable_memory_savers(self, model: ModelInfo) -> None:
        _, comps = self.load(model)
        self.applied.setdefault(str(model.path), {})["after_oom"] = apply_offload(comps, "group")
        self._load_keys[str(model.path)] = ("changed by an out-of-memory retry",)  # the next film loads it afresh
        comps.vae.enable_tiling()
        self._memory_savers = True

    def render_batch(self, plan: RenderPlan, jobs: tuple[ShotJob, ...], store: RenderStore,
                     whash: str, lhash: dict[str, str]) -> list[ShotResult]:
        """Render shots that share a BatchKey in one transformer batch; write clips and manifests."""
        if self.fault_hook is not None:  # tests inject failures (e.g. out-of-memory) here
            self.fault_hook(jobs)
        family, comps = self.load(plan.film.model)
        first = jobs[0]
        t0 = time.perf_counter()
        # 0. one encoder per shot, started now: ffmpeg loads while the model works instead of after it
        #    (its share of a preview shot: benchmarks/RESULTS.md, previews)
        upscaler = self._upscalers.get(first.upscale) if first.upscale else None
        scale = upscaler.scale if upscaler else 1
        for j in jobs:  # the old manifest goes first: a new clip never sits beside an old clip's manifest
            store.shot_manifest(j.shot_id).unlink(missing_ok=True)
        writers = []
        try:
            if not first.audio:  # a shot with its own sound starts its encoder once the sound is decoded
                self._start_writers(writers, jobs, store, scale)
            return self._render_batch_into(writers, upscaler, family, comps, plan, jobs, store, whash, lhash, t0)
        except BaseException:
            for writer in writers:
                writer.abort()
            raise

    @staticmethod
    def _start_writers(writers: list, jobs: tuple[ShotJob, ...], store: RenderStore, scale: int,
                       audio_rate: int | None = None) -> None:
        """One encoder per shot into `writers` (the caller aborts them all on failure); with `audio_rate`, each
        takes the shot's WAV (store.shot_audio, at that rate) as its sound."""
        with interrupts_deferred():  # every started encoder is in `writers`, so an interrupt stops them all
            for j in jobs:
                writers.append(VideoWriter(store.shot_video(j.shot_id), j.width * scale, j.height * scale,
                                           j.fps, codec=j.codec, metadata=provenance(j.shot_id, j.model_name, j.seed),
                                           audio_from=store.shot_audio(j.shot_id) if audio_rate else None,
                                           audio_rate=audio_rate))

    def _preview_bf16(self, model: ModelInfo, job: ShotJob) -> bool:
        """Previews are drafts: on a CPU with native bf16 the transformer runs under bf16 autocast for families
        that measured it (registry cpu_bf16_preview; benchmarks/RESULTS.md, previews), as the tiny decoder does."""
        return (job.preview and self.device.type == "cpu" and self.dtype == torch.float32
                and model.family.cpu_bf16_preview and cpu_bf16_fast(self.device))

    def _render_batch_into(self, writers, upscaler, family, comps, plan: RenderPlan, jobs: tuple[ShotJob, ...],
                           store: RenderStore, whash: str, lhash: dict[str, str], t0: float) -> list[ShotResult]:
        """render_batch's work once the encoders run: embed, denoise, decode into `writers`, write manifests."""
        model, first = plan.film.model, jobs[0]
        t_enc = time.perf_counter()
        # 1. text embeddings (cached per unique prompt)
        cond, uncond = self._text_conditioning(family, comps, model, jobs)
        t1 = time.perf_counter()
        if first.window:  # a long shot: the family renders and decodes it chunk by chunk, into its encoder
            self._render_long_into(family, comps, model, first, cond, uncond, store, writers, upscaler)
            t2 = t3 = time.perf_counter()  # denoising and decoding interleave
        else:
            # 2. noise from each shot's own CPU generator (+ the first frame of image-to-video shots)
            noise, shape, cond, uncond, image_cond = self._start_latents(family, comps, jobs, store, cond, uncond)
            # 3. denoise, with this batch's adapters (every adapter off for shots without characters)
            latents = self._denoise(family, comps, model, jobs, noise, shape, cond, uncond, image_cond)
            t2 = time.perf_counter()
            if first.audio:  # 3b. the model's own sound, beside each clip and into its encoder
                sound, rate = family.decode_audio(comps, latents, seeds=[j.seed for j in jobs])  # (B, C, S)
                for job, samples in zip(jobs, sound):
                    write_wav(store.shot_audio(job.shot_id), samples, rate)
                self._start_writers(writers, jobs, store, upscaler.scale if upscaler else 1, audio_rate=rate)
            # 4. decode latent frame by latent frame, streamed into the shots' encoders
            self._decode_into(family, comps, model, jobs, latents, writers, upscaler)
            t3 = time.perf_counter()
        # 5. manifests (after the clip: a clip without a matching manifest is rendered again)
        timings = {"encoder_start_s": round(t_enc - t0, 4), "text_encode_s": round(t1 - t_enc, 4),
                   "denoise_s": round(t2 - t1, 4), "decode_encode_s": round(t3 - t2, 4), "total_s": round(t3 - t0, 4),
                   "s_per_step": round((t2 - t1) / (first.steps * self._chunks(first, comps.temporal_factor)), 4),
                   "batch_size": len(jobs)}
        results = []
        for job in jobs:
            manifest = self._shot_manifest(job, plan, whash, lhash, timings, store)
            atomic_write_json(store.shot_manifest(job.shot_id), manifest)
            results.append(ShotResult(job.shot_id, store.shot_video(job.shot_id), store.shot_manifest(job.shot_id),
                                      "rendered", timings))
            self.progress.shot_done(
                f"shot {job.shot_id}: {job.frames} frames {job.width}x{job.height}, {job.steps} steps, "
                f"{timings['total_s']:.2f} s ({timings['s_per_step']:.3f} s/step), seed {job.seed} -> "
                f"{store.shot_video(job.shot_id)}")
        return results

    def _text_conditioning(self, family, comps, model: ModelInfo, jobs: tuple[ShotJob, ...]):
        """(cond, uncond) of a batch: cached prompt embeddings plus what the batch adds (guidance, fps)."""
        first = jobs[0]
        cond = self.embed(family, comps, str(model.path), [j.prompt for j in jobs], first.max_sequence_length)
        uncond = None
        if first.guidance > 1.0 and model.family.guidance == "cfg":  # "embedded": one pass, guidance an input
            uncond = self.embed(family, comps, str(model.path), [j.negative_prompt for j in jobs],
                                first.max_sequence_length)
        batch_extra = {"guidance": first.guidance, "fps": first.fps, "batch": len(jobs)}
        cond = family.batch_conditioning(comps, cond, **batch_extra)
        uncond = family.batch_conditioning(comps, uncond, **batch_extra) if uncond is not None else None
        return cond, uncond

    def _start_latents(self, family, comps, jobs: tuple[ShotJob, ...], store: RenderStore, cond, uncond):
        """(noise (B, *shape), shape, cond, uncond, image conditioning or None): each shot's noise from its own
        CPU generator; an image-to-video batch's first frames join cond and uncond."""
        first = jobs[0]
        shape = family.latent_shape(comps, first.frames, first.height, first.width)  # (C, F', H', W') for Wan
        images = [None] * len(jobs)
        if first.image or first.continue_from:  # image-to-video: the first frame joins the conditioning
            images = [family.image_condition(comps, self.shot_image(j, store), j.frames, j.height, j.width,
                                             seed=j.seed) for j in jobs]
        noise = torch.cat([family.initial_noise(shape, j.seed, comps.device, image=img)
                           for j, img in zip(jobs, images)])  # (B, *shape)
        image_cond = None
        if images[0] is not None:
            image_cond = cat_cond(images)
            cond = {**_as_dict(cond), **image_cond}
            uncond = {**_as_dict(uncond), **image_cond} if uncond is not None else None
        return noise, shape, cond, uncond, image_cond

    def _denoise(self, family, comps, model: ModelInfo, jobs: tuple[ShotJob, ...], noise: torch.Tensor, shape,
                 cond, uncond, image_cond) -> torch.Tensor:
        """The batch's sampler over the guided denoiser, with its adapters' per-step strengths and the step cache."""
        first = jobs[0]
        ids = tuple(j.shot_id for j in jobs)
        self.progress.batch(ids, first.steps)
        hooks = []
        for expert in self.experts(model):  # each transformer gets the adapters that target it
            chosen = tuple((self.peft_name(a, p), w) for a, p, w in first.adapters if self.targets(a, expert))
            hook = self.bank(model, expert).schedule(chosen, first.steps)
            if hook is not None:
                hooks.append(hook)
        sampler = family.make_sampler(comps, first.scheduler, first.shift, shape=shape, image=image_cond,
                                      seeds=[j.seed for j in jobs])  # every name, "lcm" too: the family wraps it
        cfg_steps = first.steps - int(round(first.steps * first.cfg_skip_last)) if first.cfg_skip_last else None
        draft_bf16 = self._preview_bf16(model, first)
        with step_cache_session(comps.transformer, SpeedConfig(step_cache=first.step_cache)) as context, \
                torch.autocast("cpu", dtype=torch.bfloat16, enabled=draft_bf16):
            denoiser = guided(lambda x, t, c: family.velocity(comps, x, t, c), cond, uncond, first.guidance,
                              cfg_steps=cfg_steps, context=lambda i, batched: context(i, first.steps, batched))
            if hooks:
                denoiser = with_step_hook(denoiser, lambda i: [h(i) for h in hooks])
            latents = sample(sampler, denoiser, noise, first.steps, on_step=self.progress.step, shot_ids=ids)
            self.progress.denoised(ids)
        from reel.engine.accel import compile_fallbacks

        if (fell_back := compile_fallbacks(comps, model.family)) is not None:  # the manifest's speed section
            self.applied.setdefault(str(model.path), {})["compile_fallback"] = fell_back
        return latents.float() if draft_bf16 else latents  # (B, C, F', H', W'); the decoders take fp32 latents

    def _decode_into(self, family, comps, model: ModelInfo, jobs: tuple[ShotJob, ...], latents: torch.Tensor,
                     writers, upscaler) -> None:
        """Decode chunk by chunk (the tiny preview decoder or the VAE), upscale, watermark, into each shot's encoder."""
        first = jobs[0]
        if first.preview_decoder:  # previews: the tiny decoder instead of the VAE
            chunks = family.decode_preview(comps, self._preview_decoders[first.preview_decoder], latents)
        else:
            chunks = family.decode_stream(comps, latents, seeds=[j.seed for j in jobs], frames=first.frames)
            if self.device.type == "cpu" and self.dtype == torch.bfloat16 and model.family.cpu_bf16_decode \
                    and cpu_bf16_fast(self.device):  # [speed] weights = "bf16", measured families only
                chunks = _in_autocast(chunks, self.device.type, torch.bfloat16)
        self._write_chunks(family, jobs, chunks, writers, upscaler)

    def _write_chunks(self, family, jobs: tuple[ShotJob, ...], chunks, writers, upscaler) -> None:
        """Pixel chunks (B, 3, f, H, W) in [0, 1] -> live frames, upscaler, watermark, each shot's encoder; closed."""
        mark = Watermark(jobs[0].watermark) if jobs[0].watermark else None
        for chunk in chunks:  # (B, 3, f, H, W)
            frames = family.to_uint8_frames(chunk)  # (B, f, H, W, 3)
            for job, writer, shot_frames in zip(jobs, writers, frames):
                if self.on_frames is not None:
                    self.on_frames(job.shot_id, shot_frames)
                if upscaler is not None:
                    shot_frames = upscaler.upscale(shot_frames)  # (f, H*s, W*s, 3)
                if mark is not None:
                    shot_frames = mark.apply(shot_frames)
                writer.write(shot_frames)
        for writer in writers:
            writer.close()

    @staticmethod
    def _chunks(job: ShotJob, temporal: int) -> int:
        """Trajectories a shot runs: 1, or a long shot's chunks (each `steps` steps)."""
        return len(long_chunks(job.frames, job.window, job.overlap, temporal)) if job.window else 1

    def _render_long_into(self, family, comps, model: ModelInfo, job: ShotJob, cond, uncond, store: RenderStore,
                          writers, upscaler) -> None:
        """A shot longer than the model's window (models/long_shots.py): the family renders it in overlapping
        chunks (render_long) through the engine's guided denoiser (CFG, LoRA schedules, step cache), and each
        chunk's frames reach the encoder as they decode, so memory stays one window's."""
        image = None
        if job.image or job.continue_from:  # image-to-video: the first frame conditions the first chunk
            image = family.image_condition(comps, self.shot_image(job, store), job.frames, job.height, job.width,
                                           seed=job.seed)
            cond = {**_as_dict(cond), **image}
            uncond = {**_as_dict(uncond), **image} if uncond is not None else None
        ids = (job.shot_id,)
        total = len(long_chunks(job.frames, job.window, job.overlap, comps.temporal_factor)) * job.steps
        self.progress.batch(ids, total)
        hooks = [h for expert in self.experts(model) if (h := self.bank(model, expert).schedule(
            tuple((self.peft_name(a, p), w) for a, p, w in job.adapters if self.targets(a, expert)), job.steps))]
        cfg_steps = job.steps - int(round(job.steps * job.cfg_skip_last)) if job.cfg_skip_last else None
        start = time.perf_counter()

        def on_step(chunk: int, i: int, t: float, x: torch.Tensor) -> None:
            self.progress.step(StepState(ids, chunk * job.steps + i + 1, total, t, tuple(x.shape),
                                         time.perf_counter() - start))

        with step_cache_session(comps.transformer, SpeedConfig(step_cache=job.step_cache)) as context:
            denoiser = guided(lambda x, t, c: family.velocity(comps, x, t, c), cond, uncond, job.guidance,
                              cfg_steps=cfg_steps, context=lambda i, batched: context(i, job.steps, batched))
            if hooks:
                denoiser = with_step_hook(denoiser, lambda i: [h(i) for h in hooks])
            if job.step_cache is not None:  # each chunk is a trajectory of its own (its length may differ)
                denoiser = with_step_hook(denoiser, lambda i: reset_step_cache(comps.transformer) if i == 0 else None)
            pieces = family.render_long(comps, denoiser, frames=job.frames, height=job.height, width=job.width,
                                        window=job.window, overlap=job.overlap, steps=job.steps, shift=job.shift,
                                        seed=job.seed, scheduler=job.scheduler, image=image, on_step=on_step)
            if self._preview_bf16(model, job):  # drafts: bf16 autocast, as one-pass previews (decoding too)
                pieces = _in_autocast(pieces, self.device.type, torch.bfloat16)
            self._write_chunks(family, (job,), pieces, writers, upscaler)
        self.progress.denoised(ids)

    def fingerprint(self, job: ShotJob, plan: RenderPlan) -> str:
        """The job's fingerprint with every input hashed: weights, LoRA files, first-frame image, and for a
        continued shot the fingerprint of its source (so editing the source re-renders the continuation)."""
        lhash = {p: self.file_hash(p) for _, p, _ in job.adapters}
        inputs = {}
        if job.image:
            inputs["image"] = self.file_hash(job.image)
        if job.preview_decoder:
            inputs["preview_decoder"] = self.file_hash(job.preview_decoder)
        if job.continue_from:
            inputs["continue_from"] = self.fingerprint(plan.job(job.continue_from, job.preview), plan)
        return job.fingerprint(self.weights_hash(plan.film.model), lhash, inputs)

    def shot_image(self, job: ShotJob, store: RenderStore) -> np.ndarray:
        """The first frame a shot starts from: its image file, or the last frame of the shot it continues."""
        from PIL import Image

        if job.image:
            with Image.open(job.image) as img:
                return np.asarray(img.convert("RGB"))  # (H, W, 3) uint8
        from reel.engine.post.contact import read_video

        frames, _ = read_video(store.shot_video(job.continue_from))
        return frames[-1]

    def _counterpart(self, job: ShotJob, plan: RenderPlan) -> dict | None:
        """Link a preview to its final render and back: same shot, same seed."""
        other = plan.job(job.shot_id, not job.preview)
        if other is None:  # a final render of a film without a preview adapter
            return None
        if job.preview:
            return {"kind": "final", "manifest": f"../../shots/{job.shot_id}.json", "seed": other.seed,
                    "fingerprint": self.fingerprint(other, plan)}
        return {"kind": "preview", "manifest": f"../preview/shots/{job.shot_id}.json", "seed": other.seed,
                "fingerprint": self.fingerprint(other, plan)}

    def _shot_manifest(self, job: ShotJob, plan: RenderPlan, whash: str, lhash: dict, timings: dict,
                       store: RenderStore) -> dict:
        model, film_chars = plan.film.model, plan.film.characters
        scale = self._upscalers[job.upscale].scale if job.upscale else 1
        out_w, out_h = job.width * scale, job.height * scale
        formats = {k: v for e in self.experts(model) for k, v in self.bank(model, e).formats.items()}
        adapters = [{"adapter": a, "character": a.split("__")[0].split("@")[0], "file": p, "sha256": lhash[p],
                     "expert": a.split("@")[1] if "@" in a else "all", "format": formats.get(self.peft_name(a, p)),
                     "weight": list(w) if isinstance(w, tuple) else w,
                     "trigger": film_chars[c].trigger if (c := a.split("__")[0].split("@")[0]) in film_chars else None}
                    for a, p, w in job.adapters]
        return {
            "reel_manifest": MANIFEST_VERSION, "kind": "shot", "shot_id": job.shot_id, "index": job.index,
            "video": store.shot_video(job.shot_id).name, "prompt": job.prompt,
            "negative_prompt": job.negative_prompt, "seed": job.seed, "seed_source": job.seed_source,
            "steps": job.steps, "guidance": job.guidance, "scheduler": job.scheduler, "shift": job.shift,
            "width": job.width, "height": job.height, "frames": job.frames, "fps": job.fps, "codec": job.codec,
            "upscale": job.upscale, "watermark": job.watermark, "out_width": out_w, "out_height": out_h,
            "max_sequence_length": job.max_sequence_length,
            "model": {"name": job.model_name, "path": job.model_path, "family": model.family.name,
                      "weights_hash": whash},
            "characters": list(job.characters), "adapters": adapters, "preview": job.preview,
            "audio": {"file": store.shot_audio(job.shot_id).name} if job.audio else None,  # volume: film.json
            "long_shot": ({"window": job.window, "overlap": job.overlap,
                           "chunks": long_chunks(job.frames, job.window, job.overlap, model.temporal_factor)}
                          if job.window else None),
            "preview_transformer": ("bf16 autocast" if self._preview_bf16(model, job)
                                    else str(self.dtype).replace("torch.", "")) if job.preview else None,
            "preview_decoder": ({"file": job.preview_decoder, "sha256": self.file_hash(job.preview_decoder),
                                 "compute": _preview_decoder_compute(self.device)}
                                if job.preview_decoder else None),
            "speed": {"step_cache": job.step_cache, "cfg_skip_last": job.cfg_skip_last,
                      **self.applied.get(str(model.path), {})},
            "counterpart": self._counterpart(job, plan),
            "device": str(self.device), "dtype": str(self.dtype).replace("torch.", ""),
            "versions": package_versions(), "timings": timings, "fingerprint": self.fingerprint(job, plan),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    def _shot_sounds(self, jobs: tuple[ShotJob, ...], clips, store: RenderStore, fps: int) -> tuple:
        """The model's own sound of each shot that kept it (LTX-2 finals, audio not false), under its clip at the
        shot's audio_volume, mixed with the film's [[audio]] tracks; across a crossfade one sound fades into the
        next as the pictures do."""
        out = []
        for k, (job, clip) in enumerate(zip(jobs, clips)):
            path = store.shot_audio(job.shot_id)
            if not job.audio or not path.is_file():
                continue
            with wave.open(str(path), "rb") as w:
                self._audio_durations[path] = w.getnframes() / w.getframerate()
            length = min(self._audio_durations[path], clip.frames / fps)
            fade_out = clips[k + 1].fade_in / fps if k + 1 < len(clips) else 0.0  # a crossfade out of this shot
            out.append(AudioPlacement(f"shot-{job.shot_id}", path, clip.start / fps, 0.0, length, job.audio_volume,
                                      min(clip.fade_in / fps, length), min(fade_out, length)))
        return tuple(out)

    def assemble(self, plan: RenderPlan, store: RenderStore, shots: tuple[ShotResult, ...],
                 force: bool) -> FilmResult:
        """Join the film's clips (cuts, crossfades, audio) when every shot has a current clip; export
        the timeline for editors."""
        film, whash = plan.film, self.weights_hash(plan.film.model)
        all_jobs = plan.film_jobs
        prints = [self.fingerprint(j, plan) for j in all_jobs]
        missing = [j.shot_id for j, fp in zip(all_jobs, prints) if store.finished_shot(j.shot_id, fp) is None]
        if missing:
            status = f"skipped: shots {', '.join(missing)} not rendered yet"
            self.progress.say(f"{store.film_video.name} not assembled: {status[9:]}")
            return FilmResult(shots, None, None, status)
        # 1. the timeline (one source for the encoded film and the editor export)
        manifests = [read_json(store.shot_manifest(j.shot_id)) or {} for j in all_jobs]
        clips = place_clips([(j.shot_id, store.shot_video(j.shot_id), j.frames, s.transition_frames)
                             for j, s in zip(all_jobs, film.shots)])
        timeline = Timeline(film.fps, clips, place_audio(film.audio, clips, film.fps, self._audio_durations)
                            + self._shot_sounds(all_jobs, clips, store, film.fps))
        key = hashlib.sha256(json.dumps({
            "shots": prints, "fades": [c.fade_in for c in clips], "title": film.title, "codec": film.codec,
            "audio": [[self.file_hash(t.path), t.start, t.trim_start, t.length, t.volume, t.fade_in, t.fade_out]
                      for t in timeline.audio]}, sort_keys=True).encode()).hexdigest()
        previous = read_json(store.film_manifest)
        exports_there = all((store.root / name).is_file() for name in (previous or {}).get("exports", {}).values()
                            if not str(name).startswith("unavailable"))
        if (not force and previous is not None and store.film_video.is_file() and previous.get("assembly_key") == key
                and exports_there):
            self.progress.say(f"film unchanged, reused {store.film_video}")
            return FilmResult(shots, store.film_video, store.film_manifest, "reused")
        # 2. encode the film, 3. export the timeline, 4. the manifest
        same = len({(m.get("out_width"), m.get("out_height"), m.get("fps")) for m in manifests}) == 1
        store.film_manifest.unlink(missing_ok=True)  # no old manifest beside a new film
        how = assemble(timeline, store.film_video, get_codec(film.codec), same_params=same,
                       metadata=provenance(film.title, film.model.name, None))
        if plan.preview:  # previews: a contact sheet and an animated storyboard instead of editor exports
            exports = preview_sheets([(c.shot_id, c.path) for c in clips], store.film_video, store.root,
                                     counts=[c.frames for c in clips])
        else:
            exports = export_timeline(timeline, film.title, store.root / "film", self._audio_durations)
        manifest = {
            "reel_manifest": MANIFEST_VERSION, "kind": "film", "title": film.title, "spec": str(film.source),
            "preview": plan.preview,
            "video": store.film_video.name, "codec": film.codec, "width": manifests[0].get("out_width"),
            "height": manifests[0].get("out_height"), "fps": film.fps, "frames": timeline.frames,
            "duration_s": round(timeline.duration, 4), "seed": film.seed,
            "model": {"name": film.model.name, "path": str(film.model.path), "weights_hash": whash},
            "assembly": how, "assembly_key": key, "exports": exports,
            "shots": [{"id": j.shot_id, "manifest": f"shots/{j.shot_id}.json", "video": f"shots/{c.path.name}",
                       "start_frame": c.start, "crossfade_in_frames": c.fade_in, "fingerprint": fp, "seed": j.seed,
                       "status": next((s.status for s in shots if s.shot_id == j.shot_id), "reused")}
                      for j, c, fp in zip(all_jobs, clips, prints)],
            "audio": [{"file": str(t.path), "sha256": self.file_hash(t.path), "start_s": t.start,
                       "trim_start_s": t.trim_start, "length_s": t.length, "volume": t.volume,
                       "fade_in_s": t.fade_in, "fade_out_s": t.fade_out} for t in timeline.audio],
            "versions": package_versions(), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        atomic_write_json(store.film_manifest, manifest)
        self.progress.say(f"film: {len(clips)} shots -> {store.film_video}")
        return FilmResult(shots, store.film_video, store.film_manifest, "assembled")
