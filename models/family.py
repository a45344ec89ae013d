"""The family contract: what the engine may call on a model family's module, and nothing else.

Every family module (models/wan.py, ltx.py, cogvideox.py, hunyuan.py) implements `FamilyModule` with these
exact signatures: the leading arguments positional, every option keyword-only and the same in every family,
so the engine never asks `hasattr`, `inspect.signature` or a family's name. What a family *can* do is a flag
on its registry entry (models/registry.py `Family`, torch-free, so the spec checks it without loading):

    guidance         "cfg" (cond and uncond passes) or "embedded" (a model input: one pass, no negative prompt)
    image_pipelines  the pipelines that take a first frame (image_condition works for them)
    preview_decoder  decode_preview runs a tiny latent decoder (else previews decode with the VAE)
    cpu_bf16_decode  the VAE decode may run under bf16 autocast on a CPU with native bf16
    cpu_bf16_preview preview denoising may run under bf16 autocast on such a CPU
    fused_kernels    kernels/wan_fused.py covers its transformer
    cpu_fast_paths   kernels/channel_norm.py and wan_cpu.py cover its VAE norms and self-attention rotary
    audio            the model makes a sound track with the picture (decode_audio; LTX-2)
    long_shots       "diffusion-forcing": shots longer than its window render in overlapping chunks (render_long;
                     SkyReels-V2 DF); "" refuses them. long_window / long_overlap are its frames per chunk / overlap

A function behind a flag that is off raises ValueError saying so. tests/models/test_family_contract.py
checks every registered family's module against this Protocol and its flags (vLLM's model interfaces).

    from reel.models.family import family_module
    family = family_module(model.family)       # the module, typed as FamilyModule
    comps = family.load(path, device, dtype)
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from reel.models.samplers import Sampler

Cond = Any  # text conditioning: a tensor (B, L, D), or a dict of tensors, each with a leading batch dim


@runtime_checkable
class Components(Protocol):
    """A loaded model: its parts on one device. Families add their own fields; the engine reads only these."""

    path: Path
    device: torch.device
    dtype: torch.dtype  # the transformer's and text encoder's; the VAE stays fp32
    transformer: torch.nn.Module
    text_encoder: torch.nn.Module
    vae: torch.nn.Module
    scheduler_config: dict

    @property
    def temporal_factor(self) -> int: ...  # pixel frames per latent frame

    @property
    def spatial_factor(self) -> int: ...  # pixels per latent pixel


@runtime_checkable
class FamilyModule(Protocol):
    """The functions of a family module. Shapes: latents (B, *latent_shape); pixel chunks (B, 3, f, H, W)."""

    def load(self, path: str | Path, device: torch.device, dtype: torch.dtype) -> Components:
        """Every component from a local folder (never a hub), frozen, on `device`."""

    def make_sampler(self, components: Components, name: str, shift: float, *, shape: tuple | None = None,
                     image: dict | None = None, seeds: list[int] | None = None) -> Sampler:
        """A sampler (models/samplers.py) for the scheduler name ("default", "unipc", "euler", or the family's
        own): `sampler(denoiser, noise, steps, callback) -> latents`."""

    def encode_prompts(self, components: Components, prompts: list[str], max_sequence_length: int) -> Cond:
        """Text conditioning for each prompt, batch first."""

    def embed_key(self, components: Components) -> str:
        """What else besides prompt and weights decides the embeddings (a cache key part; "" if nothing)."""

    def batch_conditioning(self, components: Components, cond: Cond, *, guidance: float, fps: int, batch: int) -> Cond:
        """`cond` plus what a batch adds (embedded guidance, the frame rate the positions are scaled for)."""

    def latent_shape(self, components: Components, frames: int, height: int, width: int) -> tuple[int, ...]:
        """One shot's latent shape, in the family's layout."""

    def initial_noise(self, shape: tuple[int, ...], seed: int, device: torch.device, *,
                      image: dict | None = None) -> torch.Tensor:
        """(1, *shape) starting latents drawn on the CPU from the shot's own generator."""

    def image_condition(self, components: Components, image, frames: int, height: int, width: int, *,
                        seed: int | None = None) -> dict:
        """What a first frame (H, W, 3) uint8 adds to a shot's conditioning, batch of one."""

    def velocity(self, components: Components, latents: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        """The denoiser: the model output the scheduler's step expects, fp32, latents' shape."""

    def decode_stream(self, components: Components, latents: torch.Tensor, *, seeds: list[int] | None = None,
                      frames: int | None = None) -> Iterator[torch.Tensor]:
        """Pixel chunks (B, 3, f, H, W) in [0, 1], in order."""

    def decode_preview(self, components: Components, decoder: torch.nn.Module,
                       latents: torch.Tensor) -> Iterator[torch.Tensor]:
        """Previews: pixel chunks from a tiny latent decoder instead of the VAE."""

    def experts(self, components: Components) -> dict[str, torch.nn.Module]:
        """The transformers LoRAs attach to: {"high": ...} (+ "low" for Wan 2.2 A14B's low-noise expert)."""

    def to_uint8_frames(self, chunk: torch.Tensor):
        """(B, 3, f, H, W) in [0, 1] -> (B, f, H, W, 3) uint8 numpy."""

    def lora_to_diffusers(self, state: dict) -> dict:
        """Any LoRA format the family supports -> diffusers `transformer.` keys."""

    def meta_inputs(self, config: dict, *, batch: int, latent: tuple[int, int, int], text_len: int,
                    expand_timesteps: bool = False) -> dict:
        """The transformer's forward kwargs on the meta device, for the estimator (engine/estimate_meta.py)."""

    def decode_audio(self, components: Components, latents: torch.Tensor, *,
                     seeds: list[int] | None = None) -> tuple[torch.Tensor, int]:
        """Each shot's sound from the latents the sampler returned (the same ones decode_stream reads the picture
        from): ((B, channels, samples) float32 in [-1, 1] on the CPU, sample rate). Only with the `audio` flag."""

    def render_long(self, components: Components, denoiser, *, frames: int, height: int, width: int, window: int,
                    overlap: int, steps: int, shift: float, seed: int, scheduler: str, image: dict | None = None,
                    on_step=None) -> Iterator[torch.Tensor]:
        """A shot of `frames` frames, more than the model's `window`: chunks of at most `window` frames, each one
        continuing from the last `overlap` frames of the one before (diffusion forcing). `denoiser(x, t, i)` is
        the engine's guided model call (CFG, LoRA schedules); t is (B,) or per latent frame (B, F). Yields the
        shot's pixel chunks (1, 3, f, H, W) in [0, 1] in order, `frames` in all, holding one window's latents and
        pixels at a time (memory flat in `frames`). `on_step(chunk, i, t, x)` after each step of each chunk, t a
        Python float. Only with the `long_shots` flag."""

    def pipeline_kwargs(self, components: Components, *, negative_prompt: str, fps: int) -> dict:
        """What the family's diffusers pipeline takes besides prompt, size, frames, steps, guidance, text length and
        generator to render what reel renders (`reel bench` and the parity tests call the pipeline with it)."""


def family_module(family) -> FamilyModule:
    """The module of a registry `Family` (imported on first use)."""
    return importlib.import_module(family.module)
