"""HunyuanVideo text-to-video: load a local diffusers folder, encode prompts, run the transformer, decode.

The pieces reel's own denoising loop needs, with HunyuanVideoPipeline's exact numerics: the Llama
prompt template cropped at `crop_start`, the third-from-last Llama hidden state, CLIP's pooled output,
EMBEDDED guidance (guidance_scale x 1000 is an input of the transformer: one forward per step, no
negative prompt), the pipeline's own sigmas (linspace(1, 0, steps + 1)[:-1], then shifted), latents
divided by the VAE's scaling factor and decoded with the VAE's temporal tiling. Text-to-video only
(diffusers' HunyuanVideoPipeline); the spec rejects `image` / `continue_from` for this family.

A folder's reel.json may carry `"prompt_template": {"template": "...{}...", "crop_start": N}` for
fine-tunes with another template or tokenizer; without it the pipeline's DEFAULT_PROMPT_TEMPLATE is used.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from reel.models.common import (
    cpu_noise,
    fold_alpha,
    flow_unipc,
    freeze,
    meta_tensor,
    quiet_loading,
    scheduler_config,
)
from reel.models.samplers import Sampler, consistency, diffusers_schedule, euler, unipc
from reel.models.single_file import load_transformer
from reel.models.common import VaeRatios
from reel.models.common import to_uint8_frames as to_uint8_frames  # the family contract's, shared
from reel.models.common import decode_audio as decode_audio  # no sound (registry audio off)
from reel.models.common import render_long as render_long  # no long-shot scheme (registry long_shots "")

CLIP_LENGTH = 77  # the pipeline always pads CLIP prompts to 77 tokens
HIDDEN_LAYERS_TO_SKIP = 2  # prompt embeddings are hidden_states[-(2 + 1)] of the Llama encoder


def default_prompt_template() -> dict:
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE

    return dict(DEFAULT_PROMPT_TEMPLATE)


@dataclass
class HunyuanComponents(VaeRatios):
    """The loaded parts of a HunyuanVideo folder, placed on one device."""

    path: Path
    tokenizer: object  # Llama tokenizer (the prompt template goes through it)
    text_encoder: torch.nn.Module  # LlamaModel
    tokenizer_2: object  # CLIP tokenizer
    text_encoder_2: torch.nn.Module  # CLIPTextModel (pooled output only)
    transformer: torch.nn.Module  # HunyuanVideoTransformer3DModel
    vae: torch.nn.Module  # AutoencoderKLHunyuanVideo, fp32
    scheduler_config: dict
    device: torch.device
    dtype: torch.dtype  # transformer and text encoders; the VAE stays fp32
    prompt_template: dict = field(default_factory=default_prompt_template)  # {"template", "crop_start"}


def _class_from_index(index: dict, name: str, fallback: str):
    """The transformers class model_index.json names for a component (what the pipeline itself loads)."""
    import transformers

    entry = index.get(name) or [None, None]
    cls = getattr(transformers, entry[1] or "", None) if entry[0] == "transformers" else None
    return cls or getattr(transformers, fallback)


def _prompt_template(path: Path) -> dict:
    template = default_prompt_template()
    reel_json = path / "reel.json"
    if reel_json.is_file():
        custom = json.loads(reel_json.read_text()).get("prompt_template") or {}
        template.update({k: custom[k] for k in ("template", "crop_start") if k in custom})
    if "{}" not in template["template"] or not isinstance(template.get("crop_start"), int):
        raise ValueError(f"{reel_json}: prompt_template needs a `template` with one '{{}}' for the prompt and an "
                         f"integer `crop_start` (tokens before the prompt); got {template!r}")
    return template


def load(path: str | Path, device: torch.device, dtype: torch.dtype) -> HunyuanComponents:
    """Load both tokenizers and text encoders, the transformer, the VAE and the scheduler config.

    Never contacts a hub (local_files_only). Text encoders and transformer in `dtype` (bf16 on CUDA,
    fp32 on the CPU); the VAE in fp32 on every device.
    """
    from diffusers import AutoencoderKLHunyuanVideo, HunyuanVideoTransformer3DModel

    quiet_loading()
    path = Path(path)
    index = json.loads((path / "model_index.json").read_text())
    tok_cls = _class_from_index(index, "tokenizer", "AutoTokenizer")
    tok2_cls = _class_from_index(index, "tokenizer_2", "AutoTokenizer")
    te_cls = _class_from_index(index, "text_encoder", "LlamaModel")
    te2_cls = _class_from_index(index, "text_encoder_2", "CLIPTextModel")
    tokenizer = tok_cls.from_pretrained(path / "tokenizer", local_files_only=True)
    tokenizer_2 = tok2_cls.from_pretrained(path / "tokenizer_2", local_files_only=True)
    text_encoder = te_cls.from_pretrained(path / "text_encoder", local_files_only=True, dtype=dtype)
    text_encoder_2 = te2_cls.from_pretrained(path / "text_encoder_2", local_files_only=True, dtype=dtype)
    transformer = load_transformer(HunyuanVideoTransformer3DModel, path, dtype)  # folder or single file
    vae = AutoencoderKLHunyuanVideo.from_pretrained(path / "vae", local_files_only=True, dtype=torch.float32)
    freeze((text_encoder, text_encoder_2, transformer, vae), device)
    return HunyuanComponents(path, tokenizer, text_encoder, tokenizer_2, text_encoder_2, transformer, vae,
                             scheduler_config(path), device, dtype, _prompt_template(path))


def embed_key(components: HunyuanComponents) -> str:
    """What else decides the embeddings besides the prompt and the weights (for an embedding cache key)."""
    t = components.prompt_template
    return json.dumps({"template": t["template"], "crop_start": t["crop_start"], "layer": -(HIDDEN_LAYERS_TO_SKIP + 1)})


def _pipeline_sigmas(scheduler, steps: int, device) -> None:
    """HunyuanVideoPipeline's spacing: sigmas = linspace(1, 0, steps + 1)[:-1], then the scheduler's shift."""
    import numpy as np

    scheduler.set_timesteps(steps, device=device, sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1])


def make_sampler(components: HunyuanComponents, name: str, shift: float, *, shape: tuple | None = None,
                 image: dict | None = None, seeds: list[int] | None = None) -> Sampler:
    """A flow-matching sampler with the given shift: "default" (the folder's FlowMatchEuler config, with the
    pipeline's sigmas), "euler" (a plain FlowMatchEuler, the pipeline's sigmas), "unipc", or "lcm" (consistency
    sampling for a few-step preview LoRA, re-noising from each shot's `seeds`). `shape`: unused."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    if image is not None:
        raise ValueError("HunyuanVideo (HunyuanVideoPipeline) is text-to-video only: it takes no input image")
    cfg = {k: v for k, v in components.scheduler_config.items() if not k.startswith("_")}
    if name == "lcm":  # consistency sampling for a few-step preview LoRA, re-noising from each shot's seed
        if seeds is None:
            raise ValueError("the consistency (lcm) sampler re-noises from each shot's seed: pass seeds=")
        return consistency(shift, list(seeds))
    if name == "default":
        if components.scheduler_config.get("_class_name", "FlowMatchEulerDiscreteScheduler") != \
                "FlowMatchEulerDiscreteScheduler":
            raise ValueError(f"{components.path}/scheduler is a {components.scheduler_config.get('_class_name')}, "
                             "not the FlowMatchEulerDiscreteScheduler HunyuanVideo uses — set scheduler = "
                             "\"euler\" or \"unipc\"")
        return euler(diffusers_schedule(lambda: FlowMatchEulerDiscreteScheduler.from_config({**cfg, "shift": shift}),
                                        _pipeline_sigmas))
    if name == "euler":
        return euler(diffusers_schedule(lambda: FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift),
                                        _pipeline_sigmas))
    if name == "unipc":
        return unipc(lambda: flow_unipc(shift))
    raise ValueError(f"unknown scheduler {name!r}; use 'default', 'euler' or 'unipc'")


@torch.no_grad()
def encode_prompts(components: HunyuanComponents, prompts: list[str], max_sequence_length: int) -> dict:
    """Text conditioning exactly as HunyuanVideoPipeline.encode_prompt computes it.

    Returns {"embeds": (N, L, D) Llama hidden states after the template's crop, "mask": (N, L) int64,
    "pooled": (N, D2) CLIP pooled output}, L = max_sequence_length.
    """
    c = components
    template, crop = c.prompt_template["template"], int(c.prompt_template["crop_start"])
    # 1. Llama: the templated prompt, padded to crop_start + L, hidden_states[-3], template tokens cropped
    tok = c.tokenizer([template.format(p) for p in prompts], max_length=max_sequence_length + crop,
                      padding="max_length", truncation=True, return_tensors="pt", return_attention_mask=True)
    ids, mask = tok.input_ids.to(c.device), tok.attention_mask.to(c.device)  # (N, crop + L)
    out = c.text_encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    embeds = out.hidden_states[-(HIDDEN_LAYERS_TO_SKIP + 1)].to(c.text_encoder.dtype)  # (N, crop + L, D)
    if crop > 0:
        embeds, mask = embeds[:, crop:], mask[:, crop:]  # (N, L, D), (N, L)
    # 2. CLIP: the bare prompt, padded to 77, pooled output
    tok2 = c.tokenizer_2(prompts, padding="max_length", max_length=CLIP_LENGTH, truncation=True, return_tensors="pt")
    pooled = c.text_encoder_2(tok2.input_ids.to(c.device), output_hidden_states=False).pooler_output  # (N, D2)
    return {"embeds": embeds.to(c.dtype), "mask": mask.long(), "pooled": pooled.to(c.dtype)}


def batch_conditioning(components: HunyuanComponents, cond: dict, *, guidance: float, fps: int, batch: int) -> dict:
    """Embedded guidance: the scale is a transformer input (one pass per step, no negative prompt)."""
    return with_guidance(cond, guidance, batch)


def experts(components: HunyuanComponents) -> dict[str, torch.nn.Module]:
    """One transformer."""
    return {"high": components.transformer}


def with_guidance(cond: dict, guidance: float, batch: int) -> dict:
    """Add the embedded guidance input, built like the pipeline: tensor([g] * B, model dtype) * 1000."""
    ref = cond["embeds"]
    g = torch.tensor([float(guidance)] * batch, dtype=ref.dtype, device=ref.device) * 1000.0  # (B,)
    return {**cond, "guidance": g}


def latent_shape(components: HunyuanComponents, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
    """(C, F', H', W') of one shot's latents."""
    t, s = components.temporal_factor, components.spatial_factor
    channels = int(components.transformer.config.in_channels)
    return (channels, (frames - 1) // t + 1, height // s, width // s)


def initial_noise(shape: tuple[int, ...], seed: int, device: torch.device, *,
                  image: dict | None = None) -> torch.Tensor:
    """Starting noise (1, C, F', H', W') drawn on the CPU from the shot's own generator, then moved: same on any
    device. `image`: unused (text-to-video only)."""
    return cpu_noise(shape, seed, device)


def image_condition(components: HunyuanComponents, image, frames: int, height: int, width: int, *,
                    seed: int | None = None) -> dict:
    """HunyuanVideo (HunyuanVideoPipeline) is text-to-video only; the spec refuses images before this."""
    raise ValueError("HunyuanVideo (HunyuanVideoPipeline) is text-to-video only: it takes no input image")


def velocity(components: HunyuanComponents, latents: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
    """The denoiser contract: flow velocity for latents (B, C, F', H', W') at timestep t.

    `cond` is encode_prompts' dict plus with_guidance's "guidance" (B,)."""
    if "guidance" not in cond:
        raise ValueError("HunyuanVideo conditioning has no 'guidance': pass it through with_guidance first")
    c = components
    b = latents.shape[0]
    timestep = t.expand(b).to(c.device, torch.float32)  # (B,) like the pipeline: the latents' dtype
    out = c.transformer(hidden_states=latents.to(c.dtype), timestep=timestep,
                        encoder_hidden_states=cond["embeds"],  # (B, L, D)
                        encoder_attention_mask=cond["mask"].to(c.dtype),  # (B, L): the pipeline casts it too
                        pooled_projections=cond["pooled"],  # (B, D2)
                        guidance=cond["guidance"], return_dict=False)[0]
    return out.float()  # (B, C, F', H', W')


def _decode_tile(vae, z: torch.Tensor) -> torch.Tensor:
    """One temporal tile of latents -> pixels, exactly as the VAE's own temporal tiling does it."""
    s = vae.spatial_compression_ratio
    too_big = z.shape[-1] > vae.tile_sample_min_width // s or z.shape[-2] > vae.tile_sample_min_height // s
    if vae.use_tiling and too_big:
        return vae.tiled_decode(z, return_dict=True).sample
    return vae.decoder(vae.post_quant_conv(z))


@torch.no_grad()
def decode_stream(components: HunyuanComponents, latents: torch.Tensor, *, seeds: list[int] | None = None,
                  frames: int | None = None) -> Iterator[torch.Tensor]:
    """Decode latents (B, C, F', H', W') and yield pixel chunks (B, 3, f, H, W) in [0, 1], float32.

    Truly streamed for long clips: the VAE's own frame batching (`_temporal_tiled_decode`: tiles of
    tile_sample_min_num_frames / r + 1 latent frames every tile_sample_stride_num_frames / r, overlaps
    blended linearly) is unrolled here, so each tile's finished frames are yielded as soon as it is
    decoded (13 frames for the first tile, 12 after, with the VAE's defaults) and only two tiles of
    pixels are held. Clips short enough that the VAE decodes them whole (<= 16 pixel frames after the
    first, i.e. F' <= 4) come as one chunk. Frames equal `vae.decode(latents / scaling_factor)`.
    `seeds`, `frames`: unused.
    """
    vae = components.vae
    z = latents.to(components.device, vae.dtype) / vae.config.scaling_factor  # (B, C, F', H', W')
    r = vae.temporal_compression_ratio
    frames = z.shape[2]
    min_t = vae.tile_sample_min_num_frames // r  # latent frames per tile, minus the overlap frame
    if not (vae.use_framewise_decoding and frames > min_t):
        yield (vae.decode(z, return_dict=False)[0] / 2 + 0.5).clamp(0.0, 1.0)
        return
    stride_t = vae.tile_sample_stride_num_frames // r
    stride_px = vae.tile_sample_stride_num_frames
    blend = vae.tile_sample_min_num_frames - vae.tile_sample_stride_num_frames
    total, emitted, prev = (frames - 1) * r + 1, 0, None
    for i in range(0, frames, stride_t):
        tile = _decode_tile(vae, z[:, :, i:i + min_t + 1])  # (B, 3, f, H, W)
        if prev is None:
            part = tile[:, :, :stride_px + 1]
        else:
            tile = vae.blend_t(prev, tile[:, :, 1:], blend)  # in place on the tile, as in the VAE
            part = tile[:, :, :stride_px]
        prev = tile
        part = part[:, :, :total - emitted]
        if part.shape[2] == 0:
            break
        emitted += part.shape[2]
        yield (part / 2 + 0.5).clamp(0.0, 1.0)


# musubi-tuner / kohya module names (underscored) inside a block -> the original HunyuanVideo (dotted) names
_KOHYA_KEY = re.compile(r"^lora_unet_(double_blocks|single_blocks)_(\d+)_(\w+)$")
_KOHYA_DOTS = (("img_mlp_fc", "img_mlp.fc"), ("txt_mlp_fc", "txt_mlp.fc"), ("img_mod_linear", "img_mod.linear"),
               ("txt_mod_linear", "txt_mod.linear"), ("modulation_linear", "modulation.linear"))


def _lora_ab(state: dict) -> dict:
    """lora_down/lora_up (+ .alpha) files -> lora_A/lora_B with alpha / rank folded into B; musubi-tuner's
    `lora_unet_double_blocks_0_img_attn_qkv` names -> the original `diffusion_model.double_blocks.0.img_attn_qkv`."""
    out = {}
    for key, value in state.items():
        base, dot, tag = key.partition(".")
        if tag not in ("lora_down.weight", "lora_up.weight", "alpha"):
            out[key] = value
            continue
        m = _KOHYA_KEY.match(base)
        name = base
        if m:
            module = m.group(3)
            for old, new in _KOHYA_DOTS:
                module = module.replace(old, new)
            name = f"diffusion_model.{m.group(1)}.{m.group(2)}.{module}"
        if tag == "lora_down.weight":
            out[f"{name}.lora_A.weight"] = value
        elif tag == "lora_up.weight":
            rank = state[f"{base}.lora_down.weight"].shape[0]
            out[f"{name}.lora_B.weight"] = fold_alpha(value, rank, state.get(f"{base}.alpha"))
    return out


def lora_to_diffusers(state: dict) -> dict:
    """Any supported HunyuanVideo LoRA state dict -> diffusers `transformer.` keys.

    diffusers/peft files pass through; original-layout files (`img_attn_qkv`, `single_blocks.N.linear1`,
    with or without the ComfyUI `diffusion_model.` prefix) are split by diffusers'
    HunyuanVideoLoraLoaderMixin.lora_state_dict; lora_down/lora_up + alpha files (ComfyUI, kohya,
    musubi-tuner `lora_unet_...`) are renamed to that layout first. Note: diffusers splits an original
    `single_blocks.N.linear1` LoRA assuming the full model's width (3072).
    """
    from diffusers.loaders.lora_pipeline import HunyuanVideoLoraLoaderMixin

    return HunyuanVideoLoraLoaderMixin.lora_state_dict(_lora_ab(dict(state)))


def decode_preview(components: HunyuanComponents, decoder: torch.nn.Module,
                   latents: torch.Tensor) -> Iterator[torch.Tensor]:
    """HunyuanVideo has no tiny preview decoder (registry preview_decoder is off): previews decode with the VAE."""
    raise ValueError("HunyuanVideo previews decode with the model's VAE: no tiny preview decoder reads its latents")


def meta_inputs(config: dict, *, batch: int, latent: tuple[int, int, int], text_len: int,
                expand_timesteps: bool = False) -> dict:
    """The transformer's forward kwargs for `batch` sequences of latent (F', H', W'), on the meta device."""
    f, h, w = latent
    return {"hidden_states": meta_tensor(batch, config["in_channels"], f, h, w),  # (B, C, F', H', W')
            "timestep": meta_tensor(batch, dtype=torch.float32),
            "encoder_hidden_states": meta_tensor(batch, text_len, config["text_embed_dim"]),  # (B, L, 4096)
            "encoder_attention_mask": meta_tensor(batch, text_len),
            "pooled_projections": meta_tensor(batch, config["pooled_projection_dim"]),  # (B, 768) CLIP pooled
            "guidance": meta_tensor(batch, dtype=torch.float32)}


def pipeline_kwargs(components: HunyuanComponents, *, negative_prompt: str, fps: int) -> dict:
    """HunyuanVideoPipeline's extra argument: the folder's prompt template. Guidance is embedded (one pass, no
    negative prompt: true_cfg_scale stays 1)."""
    return {"prompt_template": {"template": components.prompt_template["template"],
                                "crop_start": components.prompt_template["crop_start"]}}
