"""Train a character LoRA on a Wan-family transformer: peft adapters, flow-matching loss with shift and
logit-normal timesteps, AdamW, warmup then constant or cosine, gradient accumulation and checkpointing
(default: on a GPU only), bf16 autocast (default: on CUDA and on CPUs with native bf16), exact resume.
Uncond preservation (default 0.25 of the samples): empty caption, target = the base's own prediction with the
LoRA off, so classifier-free guidance amplifies the character instead of cancelling it.

    result = train_lora(build_config({"dataset": "data/hero", "trigger": "sks", "out": "hero.safetensors"}))

Every random draw is a function of (seed, step), so a run stopped and resumed from a checkpoint ends
with the same LoRA as an uninterrupted one. Outputs: OUT (diffusers/peft format), OUT.comfyui.safetensors,
and in WORK_DIR: loss.csv, loss.png, validation/step-N.png, checkpoints/step-N/.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from reel.engine.embed_cache import EmbedCache, encoder_hash
from reel.engine.hashing import weights_hash
from reel.engine.devices import pick_device
from reel.engine.train.stream import sample_index, step_generator
from reel.engine.sampling import consistency, guided, sample
from reel.models.samplers import shift_sigmas
from reel.engine.store import atomic_write_json, read_json
from reel.engine.train.cache import LatentCache
from reel.engine.train.config import TrainConfig
from reel.engine.train.data import DatasetError, dataset_hash, load_sample, scan_dataset
from reel.engine.train.export import folded, save_comfyui, save_diffusers
from reel.engine.train.plot import loss_plot
from reel.models import wan
from reel.models.registry import ModelError, resolve_model


class TrainError(ValueError):
    """A training run that cannot start or resume; the message says why and what to do."""


@dataclass(frozen=True)
class TrainResult:
    lora: Path
    comfyui: Path | None
    work_dir: Path
    steps_done: int
    final_loss: float | None
    cache_hits: int
    cache_misses: int


def lr_lambda(cfg: TrainConfig):
    def factor(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "cosine":
            span = max(1, cfg.steps - cfg.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - cfg.warmup_steps) / span)))
        return 1.0
    return factor


class Trainer:
    def __init__(self, cfg: TrainConfig, progress=None, skip_bad: bool = False):
        self.cfg = cfg
        self.say = progress or (lambda msg: None)
        self.out = Path(cfg.out)
        self.work = Path(cfg.work_dir) if cfg.work_dir else self.out.with_suffix(".train")
        # 1. model and data, checked before anything is written
        try:
            self.model = resolve_model(cfg.base)
        except ModelError as err:
            raise TrainError(f"--base: {err}") from None
        d = self.model.defaults
        self.width, self.height = cfg.width or int(d["width"]), cfg.height or int(d["height"])
        self.frames = cfg.frames or int(d["frames"])
        self.shift = cfg.shift or float(d["shift"])
        self.text_len = int(d.get("max_sequence_length", 512))
        m = self.model.size_multiple
        if self.width % m or self.height % m:
            raise TrainError(f"width/height {self.width}x{self.height}: must be multiples of {m} for this model")
        if not self.model.frames_ok(self.frames):
            raise TrainError(f"frames = {self.frames}: this model needs {self.model.temporal_factor}k+1 frames — "
                             f"try {' or '.join(map(str, self.model.nearest_frames(self.frames)))}")
        if cfg.kind == "character" and not cfg.trigger.strip():
            raise TrainError("--trigger is required — give the word your captions use for the character (e.g. sks)")
        items, problems = scan_dataset(Path(cfg.dataset), self.frames)
        if problems and not skip_bad:
            raise DatasetError(f"{cfg.dataset}: {len(problems)} bad file(s) — fix them or pass --skip-bad:\n  "
                               + "\n  ".join(problems))
        for p in problems:
            self.say(f"skipping {p}")
        if not items:
            raise DatasetError(f"{cfg.dataset}: no usable clips or images with captions")
        if cfg.kind == "character" and not any(cfg.trigger.lower() in it.caption.lower() for it in items):
            self.say(f"warning: no caption mentions the trigger {cfg.trigger!r}; the LoRA will not be tied to it")
        self.items = items
        self.device = pick_device(cfg.device)
        mp = cfg.mixed_precision
        self.bf16 = mp == "bf16" or (mp == "auto" and (self.device.type == "cuda" or wan.cpu_bf16_fast(self.device)))
        # base weights: bf16 on a GPU with mixed precision (memory); fp32 on the CPU (autocast casts per op)
        self.dtype = torch.bfloat16 if self.device.type == "cuda" and self.bf16 else torch.float32

    # -- preprocessing -------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Load the model, cache latents and caption embeddings, add the LoRA adapter."""
        cfg = self.cfg
        self.comps = wan.load(self.model.path, self.device, self.dtype)
        if self.device.type == "cpu":  # as a CPU render runs (engine/accel.py, cpu_fast_paths = auto)
            from reel.engine.accel import apply_cpu_fast_paths

            apply_cpu_fast_paths(self.comps, self.model.family)
        self.base_hash = weights_hash(self.model.path)
        vae_hash = weights_hash(self.model.path / "vae")
        self.latent_cache = LatentCache()
        self.latents = []  # per item: (C, F', H', W') fp32 on CPU
        for it in self.items:
            key = self.latent_cache.key(it.content_hash, vae_hash, (self.width, self.height, self.frames, cfg.extract))
            lat = self.latent_cache.get(key)
            if lat is None:
                frames = load_sample(it, self.width, self.height, self.frames, cfg.extract)  # (F, H, W, 3)
                lat = wan.encode_video(self.comps, frames).cpu()  # (C, F', H', W')
                self.latent_cache.put(key, lat)
            self.latents.append(lat)
        enc = encoder_hash(self.model.path)
        embeds = EmbedCache()
        self.text = {}
        for caption in {it.caption for it in self.items} | {""}:
            key = embeds.key(enc, caption, self.text_len, self.dtype)
            e = embeds.get(key)
            if e is None:
                e = wan.encode_prompts(self.comps, [caption], self.text_len)[0]  # (L, D)
                embeds.put(key, e)
            self.text[caption] = e.to(self.device, self.dtype)
        self.dataset_hash = dataset_hash(self.items)
        # the adapter: only LoRA parameters train
        from peft import LoraConfig

        tr = self.comps.transformer
        tr.requires_grad_(False)
        with torch.random.fork_rng(devices=[]):  # the LoRA's initial weights depend on the seed only
            torch.manual_seed(cfg.seed)
            tr.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, target_modules=list(cfg.targets),
                                      init_lora_weights=True), adapter_name="default")
        self.params = [p for p in tr.parameters() if p.requires_grad]
        for p in self.params:
            p.data = p.data.float()  # LoRA weights in fp32 even when the base is bf16
        if cfg.gradient_checkpointing or (cfg.gradient_checkpointing is None and self.device.type == "cuda"):
            tr.enable_gradient_checkpointing()
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg))

    # -- one optimisation step ---------------------------------------------------------------------------
    def loss_at(self, step: int) -> float:
        if self.cfg.kind == "preview":
            from reel.engine.train.distill import consistency_loss_at

            return consistency_loss_at(self, step)
        cfg, tr = self.cfg, self.comps.transformer
        n = len(self.items) * cfg.repeats
        total = 0.0
        per_step = cfg.batch_size * cfg.grad_accum
        for chunk in range(cfg.grad_accum):  # one transformer batch of batch_size samples per chunk
            xts, sigmas, texts, targets, preserve = [], [], [], [], []
            for micro in range(chunk * cfg.batch_size, (chunk + 1) * cfg.batch_size):
                g = step_generator(cfg.seed, step, micro)  # each sample's own draws: same data in any batching
                idx = sample_index(cfg.seed, step * per_step + micro, n) % len(self.items)
                x0 = self.latents[idx][None]  # (1, C, F', H', W')
                caption = self.items[idx].caption
                if cfg.caption_dropout and float(torch.rand((), generator=g)) < cfg.caption_dropout:
                    caption = ""
                noise = torch.randn(x0.shape, generator=g)  # (1, C, F', H', W')
                u = torch.sigmoid(torch.randn((), generator=g) * cfg.logit_std + cfg.logit_mean)
                sigma = float(shift_sigmas(u, self.shift))
                keep_uncond = (bool(cfg.uncond_preservation)
                               and float(torch.rand((), generator=g)) < cfg.uncond_preservation)
                xts.append((1 - sigma) * x0 + sigma * noise)
                targets.append(noise - x0)  # flow velocity (replaced by the base's own prediction when keep_uncond)
                sigmas.append(sigma * 1000.0)
                texts.append(self.text["" if keep_uncond else caption])
                preserve.append(keep_uncond)
            groups: dict[tuple, list[int]] = {}  # stills have fewer latent frames than clips: batch by shape
            for i, x in enumerate(xts):
                groups.setdefault(tuple(x.shape), []).append(i)
            for members in groups.values():
                xt = torch.cat([xts[i] for i in members]).to(self.device, self.dtype)  # (B, C, F', H', W')
                target = torch.cat([targets[i] for i in members]).to(self.device)  # (B, C, F', H', W')
                timestep = torch.tensor([sigmas[i] for i in members], device=self.device)  # (B,)
                context = torch.stack([texts[i] for i in members])  # (B, L, D)
                kept = [k for k, i in enumerate(members) if preserve[i]]
                if kept:  # the base model's unconditional prediction on the same noisy input, LoRA off
                    target[kept] = self.base_prediction(xt[kept], timestep[kept], context[kept])
                with self.autocast():
                    pred = tr(hidden_states=xt, timestep=timestep, encoder_hidden_states=context,
                              return_dict=False)[0]  # (B, C, F', H', W')
                # the mean over samples of each sample's MSE, over the whole step
                loss = torch.nn.functional.mse_loss(pred.float(), target) * len(members) / per_step
                loss.backward()
                total += float(loss.detach())
        self.optimizer_step()
        return total

    @torch.no_grad()
    def base_prediction(self, xt: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The base model's velocity (B, C, F', H', W') in fp32, with the LoRA switched off for the call."""
        tr = self.comps.transformer
        tr.disable_lora()  # as the distillation's teacher does
        try:
            with self.autocast():
                return tr(hidden_states=xt, timestep=timestep, encoder_hidden_states=context,
                          return_dict=False)[0].float()
        finally:
            tr.enable_lora()

    def autocast(self):
        """bf16 autocast when mixed precision is on (auto: CUDA, or a CPU with native bf16), else a no-op."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def optimizer_step(self) -> None:
        """Clip, step the optimizer and the LR schedule, clear the gradients (after all micro-steps)."""
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    # -- checkpoints ----------------------------------------------------------------------------------
    def identity(self) -> dict:
        c = self.cfg
        return {"base": self.base_hash, "dataset": self.dataset_hash, "rank": c.rank, "alpha": c.alpha,
                "targets": list(c.targets), "seed": c.seed, "steps": c.steps, "lr": c.lr, "batch": c.batch_size,
                "grad_accum": c.grad_accum, "schedule": c.schedule, "warmup": c.warmup_steps,
                "size": [self.width, self.height, self.frames], "repeats": c.repeats, "shift": self.shift,
                "uncond_preservation": c.uncond_preservation if c.kind == "character" else 0.0, "kind": c.kind,
                "teacher": [c.teacher_steps, c.skip, c.teacher_guidance, c.preview_steps], "bf16": self.bf16}

    def save_checkpoint(self, step: int) -> Path:
        from peft.utils import get_peft_model_state_dict
        from safetensors.torch import save_file

        ckpts = self.work / "checkpoints"
        final = ckpts / f"step-{step:07d}"
        tmp = ckpts / f".step-{step:07d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        state = {k: v.detach().float().cpu().contiguous()
                 for k, v in get_peft_model_state_dict(self.comps.transformer).items()}
        save_file(state, str(tmp / "lora.safetensors"))
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
                   tmp / "optim.pt")
        atomic_write_json(tmp / "state.json", {"step": step, "identity": self.identity()})
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in sorted(ckpts.glob("step-*"))[:-self.cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def load_checkpoint(self) -> int:
        """Resume from the newest checkpoint; returns the step it holds (0 if none)."""
        from peft.utils import set_peft_model_state_dict
        from safetensors.torch import load_file

        found = sorted((self.work / "checkpoints").glob("step-*"))
        if not found:
            return 0
        ckpt = found[-1]
        state = read_json(ckpt / "state.json")
        if state is None:
            raise TrainError(f"{ckpt}: checkpoint is unreadable — delete it to resume from the one before")
        diff = {k: (v, self.identity().get(k)) for k, v in state["identity"].items() if self.identity().get(k) != v}
        if diff:
            details = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items())
            raise TrainError(f"{ckpt}: made with other settings ({details}) — resume with the same settings, or "
                             f"start over without --resume (or another --work-dir)")
        set_peft_model_state_dict(self.comps.transformer, load_file(str(ckpt / "lora.safetensors")))
        optim = torch.load(ckpt / "optim.pt", map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(optim["optimizer"])
        self.scheduler.load_state_dict(optim["scheduler"])
        return int(state["step"])

    # -- validation --------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, step: int) -> Path:
        from reel.engine.post.contact import contact_sheet
        from reel.engine.post.encode import VideoWriter

        cfg, comps = self.cfg, self.comps
        prompts = [p.replace("{trigger}", cfg.trigger) for p in cfg.validation_prompts] or [self.items[0].caption]
        steps = cfg.validation_steps or int(self.model.defaults["steps"])
        guidance = float(self.model.defaults["guidance"])
        comps.transformer.eval()
        clips = []
        out_dir = self.work / "validation"
        for i, prompt in enumerate(prompts):
            cond = wan.encode_prompts(comps, [prompt], self.text_len)
            uncond = wan.encode_prompts(comps, [""], self.text_len)
            noise = wan.initial_noise(wan.latent_shape(comps, self.frames, self.height, self.width),
                                      cfg.validation_seed + i, comps.device)
            if cfg.kind == "preview":  # what the preview will render: few steps, no CFG
                sampler, steps, guidance = consistency(self.shift, [cfg.validation_seed + i]), cfg.preview_steps, 1.0
            else:
                sampler = wan.make_sampler(comps, "unipc", self.shift)
            denoiser = guided(lambda x, t, e: wan.velocity(comps, x, t, e), cond, uncond, guidance)
            lat = sample(sampler, denoiser, noise, steps)
            path = out_dir / f"step-{step:07d}-{i}.mp4"
            with VideoWriter(path, self.width, self.height, int(self.model.defaults["fps"])) as w:
                for chunk in wan.decode_stream(comps, lat):
                    w.write(wan.to_uint8_frames(chunk)[0])
            clips.append((f"{i}", path))
        sheet = contact_sheet(clips, out_dir / f"step-{step:07d}.png")
        for _, p in clips:
            p.unlink()
        comps.transformer.train()
        return sheet

    # -- the run -------------------------------------------------------------------------------------
    def export(self, step: int) -> tuple[Path, Path]:
        from peft.utils import get_peft_model_state_dict

        lora = folded(get_peft_model_state_dict(self.comps.transformer), self.cfg.rank, self.cfg.alpha)
        meta = {"reel_base_model": self.model.name, "reel_base_model_hash": self.base_hash,
                "reel_trigger": self.cfg.trigger, "reel_rank": str(self.cfg.rank), "reel_alpha": str(self.cfg.alpha),
                "reel_steps": str(step), "reel_dataset_hash": self.dataset_hash,
                "reel_config": json.dumps(self.identity())}
        if self.cfg.kind == "preview":
            meta.update({"reel_kind": "preview", "reel_preview_steps": str(self.cfg.preview_steps),
                         "reel_preview_scheduler": "lcm", "reel_preview_shift": str(self.shift)})
        main = save_diffusers(lora, self.out, meta)
        comfy = save_comfyui(lora, self.out.with_suffix(".comfyui.safetensors"), meta)
        return main, comfy


def train_lora(cfg: TrainConfig, say=None, on_step=None, skip_bad: bool = False, resume: bool = False,
               stop_after: int | None = None) -> TrainResult:
    """Run (or resume) a LoRA training. `on_step(step, total, loss)` drives a progress bar;
    `stop_after`: leave (with a checkpoint) after this many steps in this run."""
    trainer = Trainer(cfg, progress=say, skip_bad=skip_bad)
    if trainer.work.exists() and not resume and any((trainer.work / "checkpoints").glob("step-*")):
        raise TrainError(f"{trainer.work} holds checkpoints of an earlier run — pass --resume to continue it, or "
                         "remove the folder to start over")
    trainer.prepare()
    start = trainer.load_checkpoint() if resume else 0
    trainer.work.mkdir(parents=True, exist_ok=True)
    log_path = trainer.work / "loss.csv"
    rows = []
    if start and log_path.is_file():
        with open(log_path, newline="") as fh:
            rows = [r for r in csv.reader(fh)][1:]
        rows = [r for r in rows if int(r[0]) <= start]
    trainer.comps.transformer.train()
    loss = None
    step = start
    t0 = time.perf_counter()
    with open(log_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["step", "loss", "lr", "seconds"])
        writer.writerows(rows)
        for step in range(start + 1, cfg.steps + 1):
            loss = trainer.loss_at(step - 1)
            writer.writerow([step, f"{loss:.6f}", f"{trainer.scheduler.get_last_lr()[0]:.3e}",
                             f"{time.perf_counter() - t0:.2f}"])
            fh.flush()
            if on_step:
                on_step(step, cfg.steps, loss)
            last = step == cfg.steps or (stop_after is not None and step - start >= stop_after)
            if step % cfg.checkpoint_every == 0 or last:
                trainer.save_checkpoint(step)
            if cfg.validate_every and (step % cfg.validate_every == 0 or step == cfg.steps):
                trainer.validate(step)
            if last:
                break
    with open(log_path, newline="") as fh:
        points = [(int(r[0]), float(r[1])) for r in list(csv.reader(fh))[1:]]
    loss_plot(points, trainer.work / "loss.png")
    main = comfy = None
    if step == cfg.steps:
        main, comfy = trainer.export(step)
    return TrainResult(main or trainer.out, comfy, trainer.work, step, loss, trainer.latent_cache.hits,
                       trainer.latent_cache.misses)
