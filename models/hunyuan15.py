"""HunyuanVideo 1.5 text-to-video and image-to-video: load a local diffusers folder, encode, denoise, decode.

The pieces reel's own denoising loop needs, with HunyuanVideo15Pipeline's and HunyuanVideo15ImageToVideoPipeline's
exact numerics:

- text: Qwen2.5-VL's chat template (the pipeline's system message, the prompt as the user turn, " " for an empty
  one), padded to crop_start + L tokens, its third-from-last hidden state with the first crop_start (108) tokens
  cropped; plus the glyph encoder: ByT5 over the prompt's quoted texts (`Text "..."`), 256 tokens, zeros and an
  all-zero mask when the prompt quotes nothing;
- CLASSIFIER-FREE guidance (the pipeline's ClassifierFreeGuidance guider: uncond + g * (cond - uncond), a
  negative prompt; reel's `guided` runs cond and uncond in one batch);
- the transformer's input: noise latents, then the condition latents and a frame mask as extra channels (zeros
  for text-to-video; the first frame's VAE latents x scaling_factor and mask 1 on latent frame 0 for
  image-to-video) and SigLIP image tokens (729 zero tokens for text-to-video, which the transformer masks out);
- the pipeline's sigmas linspace(1, 0, steps + 1)[:-1], shifted by the scheduler; MeanFlow transformers
  (use_meanflow, step-distilled I2V) also get the next step's timestep (timestep_r), as the I2V pipeline passes it;
- the VAE decode of latents / scaling_factor, whole (its causal mid-block attention spans every frame: one chunk).

A folder's reel.json may carry `"prompt_template": {"system_message": "...", "crop_start": N}` for fine-tunes with
another system prompt or tokenizer; without it the pipeline's own are used.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import torch

from reel.models.common import cpu_noise, flow_unipc, fold_alpha, freeze, meta_tensor, quiet_loading, scheduler_config
from reel.models.samplers import Sampler, consistency, consistency_sigmas, diffusers_schedule, euler, unipc
from reel.models.single_file import load_transformer
from reel.models.common import VaeRatios
from reel.models.common import to_uint8_frames as to_uint8_frames  # the family contract's, shared
from reel.models.common import decode_audio as decode_audio  # no sound (registry audio off)
from reel.models.common import render_long as render_long  # no long-shot scheme (registry long_shots "")

I2V_PIPELINE = "HunyuanVideo15ImageToVideoPipeline"
HIDDEN_LAYERS_TO_SKIP = 2  # prompt embeddings are hidden_states[-(2 + 1)] of the Qwen2.5-VL text tower
BYT5_LENGTH = 256  # the pipeline's tokenizer_2_max_length
VISION_TOKENS = 729  # the pipeline's vision_num_semantic_tokens: zero image tokens of a text-to-video shot


def _pipeline_defaults() -> tuple[str, int]:
    """(system message, crop_start) exactly as HunyuanVideo15Pipeline sets them (its _get_mllm_prompt_embeds
    defaults; crop_start = prompt_template_encode_start_idx, 108 Qwen2.5 tokens of chat head)."""
    from diffusers.pipelines.hunyuan_video1_5.pipeline_hunyuan_video1_5 import HunyuanVideo15Pipeline

    defaults = HunyuanVideo15Pipeline._get_mllm_prompt_embeds.__defaults__  # (max_len, skip, system, crop)
    return str(defaults[2]), int(defaults[3])


@dataclass
class Hunyuan15Components(VaeRatios):
    """The loaded parts of a HunyuanVideo 1.5 folder, placed on one device."""

    path: Path
    pipeline: str  # model_index.json _class_name: HunyuanVideo15Pipeline or HunyuanVideo15ImageToVideoPipeline
    tokenizer: object  # Qwen2 tokenizer with Qwen2.5-VL's chat template
    text_encoder: torch.nn.Module  # Qwen2_5_VLTextModel
    tokenizer_2: object  # ByT5Tokenizer (glyph texts)
    text_encoder_2: torch.nn.Module  # T5EncoderModel (Glyph-ByT5)
    transformer: torch.nn.Module  # HunyuanVideo15Transformer3DModel
    vae: torch.nn.Module  # AutoencoderKLHunyuanVideo15, fp32
    scheduler_config: dict
    device: torch.device
    dtype: torch.dtype  # transformer and text encoders; the VAE stays fp32
    system_message: str = ""
    crop_start: int = 108
    image_encoder: torch.nn.Module | None = None  # SiglipVisionModel (image-to-video folders)
    feature_extractor: object | None = None  # SiglipImageProcessor


def _component_class(index: dict, name: str, fallback: str):
    """The transformers class model_index.json names for a component (what the pipeline itself loads)."""
    import transformers

    entry = index.get(name) or [None, None]
    cls = getattr(transformers, entry[1] or "", None) if entry[0] == "transformers" else None
    return cls or getattr(transformers, fallback)


def _prompt_template(path: Path) -> tuple[str, int]:
    """(system message, crop_start): the pipeline's, or reel.json's `prompt_template` override, checked."""
    system, crop = _pipeline_defaults()
    reel_json = path / "reel.json"
    custom = json.loads(reel_json.read_text()).get("prompt_template") or {} if reel_json.is_file() else {}
    system, crop = custom.get("system_message", system), custom.get("crop_start", crop)
    if not isinstance(system, str) or not isinstance(crop, int) or isinstance(crop, bool) or crop < 0:
        raise ValueError(f"{reel_json}: prompt_template needs a string `system_message` and an integer `crop_start` "
                         f"(tokens of chat head before the prompt, >= 0); got {custom!r}")
    return system, crop


def load(path: str | Path, device: torch.device, dtype: torch.dtype) -> Hunyuan15Components:
    """Load both tokenizers and text encoders, the transformer, the VAE, the scheduler config and, for
    image-to-video folders, the SigLIP image encoder and its processor.

    Never contacts a hub (local_files_only). Text/image encoders and transformer in `dtype`; the VAE in fp32."""
    from diffusers import AutoencoderKLHunyuanVideo15, HunyuanVideo15Transformer3DModel

    quiet_loading()
    path = Path(path)
    index = json.loads((path / "model_index.json").read_text())
    part = {name: _component_class(index, name, fallback) for name, fallback in (
        ("tokenizer", "AutoTokenizer"), ("text_encoder", "Qwen2_5_VLTextModel"), ("tokenizer_2", "ByT5Tokenizer"),
        ("text_encoder_2", "T5EncoderModel"), ("image_encoder", "SiglipVisionModel"),
        ("feature_extractor", "SiglipImageProcessor"))}
    tokenizer = part["tokenizer"].from_pretrained(path / "tokenizer", local_files_only=True)
    tokenizer_2 = part["tokenizer_2"].from_pretrained(path / "tokenizer_2", local_files_only=True)
    text_encoder = part["text_encoder"].from_pretrained(path / "text_encoder", local_files_only=True, dtype=dtype)
    text_encoder_2 = part["text_encoder_2"].from_pretrained(path / "text_encoder_2", local_files_only=True,
                                                            dtype=dtype)
    image_encoder = feature_extractor = None
    if (index.get("image_encoder") or [None])[0]:
        image_encoder = part["image_encoder"].from_pretrained(path / "image_encoder", local_files_only=True,
                                                              dtype=dtype)
        feature_extractor = part["feature_extractor"].from_pretrained(path / "feature_extractor",
                                                                      local_files_only=True)
    transformer = load_transformer(HunyuanVideo15Transformer3DModel, path, dtype)
    vae = AutoencoderKLHunyuanVideo15.from_pretrained(path / "vae", local_files_only=True, dtype=torch.float32)
    freeze((text_encoder, text_encoder_2, image_encoder, transformer, vae), device)
    system, crop = _prompt_template(path)
    return Hunyuan15Components(path, index.get("_class_name", ""), tokenizer, text_encoder, tokenizer_2,
                               text_encoder_2, transformer, vae, scheduler_config(path), device, dtype, system, crop,
                               image_encoder, feature_extractor)


def embed_key(components: Hunyuan15Components) -> str:
    """What decides the embeddings besides the prompt and the weights (for an embedding cache key)."""
    c = components
    return json.dumps({"system": c.system_message, "crop_start": c.crop_start, "layer": -(HIDDEN_LAYERS_TO_SKIP + 1),
                       "byt5": BYT5_LENGTH})


# -- sampling ----------------------------------------------------------------------------------------------
# the next step's timestep of the model call running now (MeanFlow transformers' timestep_r; set by _with_next)
_NEXT_T: ContextVar[float | None] = ContextVar("reel_hunyuan15_next_t", default=None)


def _pipeline_sigmas(scheduler, steps: int, device) -> None:
    """The pipelines' spacing: sigmas = linspace(1, 0, steps + 1)[:-1], then the scheduler's shift."""
    import numpy as np

    scheduler.set_timesteps(steps, device=device, sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1])


def _with_next(sampler: Sampler, host_timesteps: Callable[[int], list[float]]) -> Sampler:
    """Each step's model call knows the next step's timestep (0 after the last), as the I2V pipeline passes
    timestep_r to a MeanFlow transformer; computed on the host, before the loop."""
    def sample(denoiser, x: torch.Tensor, steps: int, callback=None) -> torch.Tensor:
        ts = host_timesteps(steps)
        nxt = ts[1:] + [0.0]

        def with_r(x: torch.Tensor, t: torch.Tensor, i: int) -> torch.Tensor:
            token = _NEXT_T.set(nxt[i])
            try:
                return denoiser(x, t, i)
            finally:
                _NEXT_T.reset(token)

        return sampler(with_r, x, steps, callback)
    return sample


def _base_sampler(components: Hunyuan15Components, name: str, shift: float,
                  seeds: list[int] | None) -> tuple[Sampler, Callable[[int], list[float]]]:
    """(the sampler, steps -> its timesteps as Python floats)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    cfg = {k: v for k, v in components.scheduler_config.items() if not k.startswith("_")}
    if name == "lcm":
        if seeds is None:
            raise ValueError("the consistency (lcm) sampler re-noises from each shot's seed: pass seeds=")
        return consistency(shift, list(seeds)), lambda steps: (consistency_sigmas(steps, shift)[:-1] * 1000).tolist()
    if name == "default":
        cls = components.scheduler_config.get("_class_name", "FlowMatchEulerDiscreteScheduler")
        if cls != "FlowMatchEulerDiscreteScheduler":
            raise ValueError(f"{components.path}/scheduler is a {cls}, not the FlowMatchEulerDiscreteScheduler "
                             "HunyuanVideo 1.5 uses — set scheduler = \"euler\" or \"unipc\"")
        schedule = diffusers_schedule(lambda: FlowMatchEulerDiscreteScheduler.from_config({**cfg, "shift": shift}),
                                      _pipeline_sigmas)
    elif name == "euler":
        schedule = diffusers_schedule(lambda: FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift),
                                      _pipeline_sigmas)
    elif name == "unipc":
        def unipc_timesteps(steps: int) -> list[float]:
            scheduler = flow_unipc(shift)
            scheduler.set_timesteps(steps, device="cpu")
            return scheduler.timesteps.tolist()

        return unipc(lambda: flow_unipc(shift)), unipc_timesteps
    else:
        raise ValueError(f"unknown scheduler {name!r}; use 'default', 'euler', 'unipc' or 'lcm'")
    return euler(schedule), lambda steps: schedule(steps, torch.device("cpu"))[1].tolist()


def make_sampler(components: Hunyuan15Components, name: str, shift: float, *, shape: tuple | None = None,
                 image: dict | None = None, seeds: list[int] | None = None) -> Sampler:
    """A flow-matching sampler with the given shift: "default" (the folder's FlowMatchEuler config, the pipeline's
    sigmas), "euler" (a plain FlowMatchEuler, the pipeline's sigmas), "unipc", or "lcm" (consistency sampling for a
    few-step preview LoRA, re-noising from each shot's `seeds`). An image-to-video folder whose transformer is a
    MeanFlow one also feeds each call the next timestep. `shape`, `image`: unused (the first frame is a model input,
    not a pinned latent)."""
    sampler, host_timesteps = _base_sampler(components, name, shift, seeds)
    if components.pipeline == I2V_PIPELINE and components.transformer.config.use_meanflow:
        return _with_next(sampler, host_timesteps)
    return sampler


# -- conditioning --------------------------------------------------------------------------------------------
def glyph_texts(prompt: str) -> str | None:
    """The pipeline's glyph text: every "quoted" or “quoted” span as `Text "..."`, joined; None if none."""
    from diffusers.pipelines.hunyuan_video1_5.pipeline_hunyuan_video1_5 import extract_glyph_texts

    return extract_glyph_texts(prompt)


@torch.no_grad()
def _qwen_embeds(c: Hunyuan15Components, prompts: list[str], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Qwen2.5-VL: the chat-templated prompt padded to crop_start + L, hidden_states[-3], the chat head cropped:
    ((N, L, D), (N, L))."""
    chats = [[{"role": "system", "content": c.system_message}, {"role": "user", "content": p if p else " "}]
             for p in prompts]
    tok = c.tokenizer.apply_chat_template(chats, add_generation_prompt=True, tokenize=True, return_dict=True,
                                          padding="max_length", max_length=length + c.crop_start, truncation=True,
                                          return_tensors="pt")
    ids, mask = tok["input_ids"].to(c.device), tok["attention_mask"].to(c.device)  # (N, crop + L)
    out = c.text_encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    embeds = out.hidden_states[-(HIDDEN_LAYERS_TO_SKIP + 1)]  # (N, crop + L, D)
    if c.crop_start > 0:
        embeds, mask = embeds[:, c.crop_start:], mask[:, c.crop_start:]  # (N, L, D), (N, L)
    return embeds, mask


@torch.no_grad()
def _byt5_embeds(c: Hunyuan15Components, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """ByT5 over each prompt's glyph text, 256 tokens; zeros and a zero mask without one: ((N, 256, D2), (N, 256))."""
    enc = c.text_encoder_2
    embeds, masks = [], []
    for prompt in prompts:
        glyph = glyph_texts(prompt)
        if glyph is None:
            embeds.append(torch.zeros((1, BYT5_LENGTH, enc.config.d_model), device=c.device, dtype=enc.dtype))
            masks.append(torch.zeros((1, BYT5_LENGTH), device=c.device, dtype=torch.int64))
            continue
        tok = c.tokenizer_2(glyph, padding="max_length", max_length=BYT5_LENGTH, truncation=True,
                            add_special_tokens=True, return_tensors="pt").to(c.device)
        embeds.append(enc(input_ids=tok.input_ids, attention_mask=tok.attention_mask.float())[0])  # (1, 256, D2)
        masks.append(tok.attention_mask)
    return torch.cat(embeds), torch.cat(masks)


def encode_prompts(components: Hunyuan15Components, prompts: list[str], max_sequence_length: int) -> dict:
    """Text conditioning exactly as HunyuanVideo15Pipeline.encode_prompt computes it (tokenizer_max_length = L).

    Returns {"embeds": (N, L, D) Qwen2.5-VL states, "mask": (N, L) int64, "embeds_2": (N, 256, D2) ByT5 states,
    "mask_2": (N, 256) int64}, embeddings in the model dtype."""
    embeds, mask = _qwen_embeds(components, prompts, max_sequence_length)
    embeds_2, mask_2 = _byt5_embeds(components, prompts)
    dt = components.dtype
    return {"embeds": embeds.to(dt), "mask": mask.long(), "embeds_2": embeds_2.to(dt), "mask_2": mask_2.long()}


def batch_conditioning(components: Hunyuan15Components, cond: dict, *, guidance: float, fps: int,
                       batch: int) -> dict:
    """Classifier-free guidance runs as two passes and positions ignore the fps: nothing to add."""
    return cond


def experts(components: Hunyuan15Components) -> dict[str, torch.nn.Module]:
    """One transformer."""
    return {"high": components.transformer}


def latent_shape(components: Hunyuan15Components, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
    """(C, F', H', W') of one shot's noise latents (the VAE's channels; the transformer reads 2C + 1)."""
    t, s = components.temporal_factor, components.spatial_factor
    return (int(components.vae.config.latent_channels), (frames - 1) // t + 1, height // s, width // s)


def initial_noise(shape: tuple[int, ...], seed: int, device: torch.device, *,
                  image: dict | None = None) -> torch.Tensor:
    """Starting noise (1, C, F', H', W') drawn on the CPU from the shot's own generator, then moved: same on any
    device. `image`: unused (an image-to-video shot's noise is the same draw; the image is a model input)."""
    return cpu_noise(shape, seed, device)


def _resized(components: Hunyuan15Components, image, height: int, width: int):
    """The first frame as a PIL image at the shot's size, resized and centre-cropped (resize_mode "crop") like the
    I2V pipeline does to its size bucket; reel renders at the shot's width and height instead of the bucket."""
    from diffusers.pipelines.hunyuan_video1_5.image_processor import HunyuanVideo15ImageProcessor
    from PIL import Image

    proc = HunyuanVideo15ImageProcessor(vae_scale_factor=components.spatial_factor, do_resize=False,
                                        do_convert_rgb=True)
    return proc, proc.resize(Image.fromarray(image), height=height, width=width, resize_mode="crop")


@torch.no_grad()
def image_condition(components: Hunyuan15Components, image, frames: int, height: int, width: int, *,
                    seed: int | None = None) -> dict:
    """What a first frame (H, W, 3) uint8 adds, as HunyuanVideo15ImageToVideoPipeline computes it, batch of one:
    {"condition": (1, C + 1, F', H', W') the image's VAE latents (posterior mode x scaling_factor) on latent frame 0,
    zeros after, then the frame mask (1 on frame 0); "image_embeds": (1, N, D) SigLIP's last hidden state}.
    `seed`: unused (the image latents are the posterior mode, as the pipeline takes them)."""
    c = components
    if c.image_encoder is None:
        raise ValueError(f"{c.path} is a text-to-video HunyuanVideo 1.5 folder ({c.pipeline}: no image encoder) — "
                         "use an image-to-video folder (HunyuanVideo15ImageToVideoPipeline) for shots with an image")
    proc, pil = _resized(c, image, height, width)
    pixels = c.feature_extractor.preprocess(images=pil, do_resize=True, return_tensors="pt", do_convert_rgb=True)
    pixels = pixels.to(device=c.device, dtype=c.image_encoder.dtype)
    embeds = c.image_encoder(**pixels).last_hidden_state.to(c.dtype)  # (1, N, D)
    vae = c.vae
    video = proc.preprocess(pil, height=height, width=width).to(c.device, vae.dtype).unsqueeze(2)  # (1, 3, 1, H, W)
    z = vae.encode(video).latent_dist.mode() * vae.config.scaling_factor  # (1, C, 1, H', W')
    _, lat_f, lat_h, lat_w = latent_shape(c, frames, height, width)
    cond = z.repeat(1, 1, lat_f, 1, 1)  # (1, C, F', H', W')
    cond[:, :, 1:] = 0
    mask = torch.zeros(1, 1, lat_f, lat_h, lat_w, device=c.device, dtype=cond.dtype)  # (1, 1, F', H', W')
    mask[:, :, 0] = 1.0
    return {"condition": torch.cat([cond, mask], dim=1).to(c.dtype), "image_embeds": embeds}


def velocity(components: Hunyuan15Components, latents: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
    """The denoiser contract: flow velocity for latents (B, C, F', H', W') at timestep t.

    `cond`: encode_prompts' dict, plus image_condition's "condition" and "image_embeds" for image-to-video shots
    (text-to-video: zero condition channels and 729 zero image tokens, as HunyuanVideo15Pipeline passes)."""
    c = components
    b, ch, f, h, w = latents.shape
    condition = cond.get("condition")
    if condition is None:
        condition = torch.zeros(b, ch + 1, f, h, w, device=latents.device, dtype=c.dtype)  # (B, C + 1, F', H', W')
    image_embeds = cond.get("image_embeds")
    if image_embeds is None:
        image_embeds = torch.zeros(b, VISION_TOKENS, c.transformer.config.image_embed_dim, device=c.device,
                                   dtype=c.dtype)  # (B, 729, D_img)
    x = torch.cat([latents.to(c.dtype), condition.to(c.dtype)], dim=1)  # (B, 2C + 1, F', H', W')
    timestep = t.expand(b).to(c.device, c.dtype)  # (B,) the model input's dtype, like the pipelines
    next_t = _NEXT_T.get()
    timestep_r = None if next_t is None else torch.tensor([next_t], device=c.device).expand(b).to(c.dtype)
    out = c.transformer(hidden_states=x, timestep=timestep, timestep_r=timestep_r,
                        encoder_hidden_states=cond["embeds"], encoder_attention_mask=cond["mask"].to(c.dtype),
                        encoder_hidden_states_2=cond["embeds_2"], encoder_attention_mask_2=cond["mask_2"].to(c.dtype),
                        image_embeds=image_embeds, return_dict=False)[0]
    return out.float()  # (B, C, F', H', W')


# -- decoding ------------------------------------------------------------------------------------------------
@torch.no_grad()
def decode_stream(components: Hunyuan15Components, latents: torch.Tensor, *, seeds: list[int] | None = None,
                  frames: int | None = None) -> Iterator[torch.Tensor]:
    """Decode latents (B, C, F', H', W') and yield one pixel chunk (B, 3, F, H, W) in [0, 1], float32.

    One chunk: AutoencoderKLHunyuanVideo15 has no temporal tiling or causal cache, and its mid-block attention
    spans every frame, so a frame's pixels need the whole clip. Shots decode one at a time (the VAE's causal
    attention mask does not broadcast over a batch in diffusers 0.42.1, and one shot's activations is the peak);
    its spatial tiling applies if enabled. Frames equal the pipelines' `vae.decode(latents / scaling_factor)`
    postprocessed. `seeds`, `frames`: unused."""
    vae = components.vae
    z = latents.to(components.device, vae.dtype) / vae.config.scaling_factor  # (B, C, F', H', W')
    video = torch.cat([vae.decode(row, return_dict=False)[0] for row in z.split(1)])  # (B, 3, F, H, W) in [-1, 1]
    yield (video.float() / 2 + 0.5).clamp(0.0, 1.0)


def decode_preview(components: Hunyuan15Components, decoder: torch.nn.Module,
                   latents: torch.Tensor) -> Iterator[torch.Tensor]:
    """No tiny preview decoder reads HunyuanVideo 1.5's 32-channel latents (registry preview_decoder off)."""
    raise ValueError("HunyuanVideo 1.5 previews decode with the model's VAE: no tiny preview decoder reads its latents")


# -- LoRA ------------------------------------------------------------------------------------------------------
# original HunyuanVideo 1.5 (Tencent, ComfyUI, musubi-tuner) module in a double block -> diffusers module(s);
# several targets: a fused projection whose lora_B splits evenly (lora_A shared)
DOUBLE_BLOCK = {
    "img_attn_q": ("attn.to_q",), "img_attn_k": ("attn.to_k",), "img_attn_v": ("attn.to_v",),
    "img_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"), "img_attn_proj": ("attn.to_out.0",),
    "txt_attn_q": ("attn.add_q_proj",), "txt_attn_k": ("attn.add_k_proj",), "txt_attn_v": ("attn.add_v_proj",),
    "txt_attn_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"), "txt_attn_proj": ("attn.to_add_out",),
    "img_mlp.fc1": ("ff.net.0.proj",), "img_mlp.fc2": ("ff.net.2",), "txt_mlp.fc1": ("ff_context.net.0.proj",),
    "txt_mlp.fc2": ("ff_context.net.2",), "img_mod.linear": ("norm1.linear",),
    "txt_mod.linear": ("norm1_context.linear",),
}
REFINER_BLOCK = {  # txt_in.individual_token_refiner.blocks.N (the conversion script's names)
    "self_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"), "self_attn_proj": ("attn.to_out.0",),
    "mlp.fc1": ("ff.net.0.proj",), "mlp.fc2": ("ff.net.2",), "adaLN_modulation.1": ("norm_out.linear",),
}
_ORIGINAL = re.compile(r"^(double_blocks|txt_in\.individual_token_refiner\.blocks)\.(\d+)\.(.+)$")
_KOHYA = re.compile(r"^lora_unet_(double_blocks|txt_in_individual_token_refiner_blocks)_(\d+)_(\w+)$")
_TAGS = {"lora_A.weight": "A", "lora_down.weight": "A", "lora_B.weight": "B", "lora_up.weight": "B",
         "alpha": "alpha"}


def _module_name(base: str) -> tuple[str, tuple[str, ...]] | None:
    """An original or kohya module name -> (the diffusers block prefix, the diffusers modules it becomes)."""
    m = _ORIGINAL.match(base)
    if m:
        group, index, module = m.groups()
    elif (k := _KOHYA.match(base)) is not None:
        group, index, module = k.group(1), k.group(2), k.group(3)
        group = "double_blocks" if group == "double_blocks" else "txt_in.individual_token_refiner.blocks"
        table = DOUBLE_BLOCK if group == "double_blocks" else REFINER_BLOCK
        module = next((name for name in table if name.replace(".", "_") == module), module)
    else:
        return None
    if group == "double_blocks":
        return f"transformer_blocks.{index}", DOUBLE_BLOCK.get(module, ())
    return f"context_embedder.token_refiner.refiner_blocks.{index}", REFINER_BLOCK.get(module, ())


def _split_key(key: str) -> tuple[str, str] | None:
    """'prefix.module.lora_down.weight' -> ('prefix.module', 'A'); None for a key that is no LoRA tensor."""
    for tag, kind in _TAGS.items():
        if key.endswith("." + tag):
            return key[: -len(tag) - 1], kind
    return None


def lora_to_diffusers(state: dict) -> dict:
    """Any supported HunyuanVideo 1.5 LoRA state dict -> diffusers `transformer.` keys (lora_A / lora_B).

    diffusers has no converter for this family, so the original names are mapped here: diffusers/peft files
    (`transformer.` keys) pass through; ComfyUI / Tencent original names (`diffusion_model.double_blocks.N.img_attn_q`,
    with or without the prefix; fused `img_attn_qkv` split in three) and kohya / musubi-tuner names
    (`lora_unet_double_blocks_N_img_attn_q`), with lora_A/B or lora_down/up (+ alpha, folded into B as alpha / rank)
    become the double blocks' (and token refiner's) diffusers modules. A key it cannot place raises ValueError."""
    if all(k.startswith("transformer.") for k in state):
        return dict(state)
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        split = _split_key(key.removeprefix("diffusion_model.").removeprefix("model.diffusion_model."))
        if split is None:
            raise ValueError(f"LoRA key {key!r} is not a lora_A/lora_B/lora_down/lora_up/alpha tensor")
        groups.setdefault(split[0], {})[split[1]] = value
    out = {}
    for base, parts in groups.items():
        named = _module_name(base)
        if named is None or not named[1] or "A" not in parts or "B" not in parts:
            raise ValueError(f"LoRA module {base!r} is no HunyuanVideo 1.5 double-block or token-refiner projection "
                             "reel can place (or lacks its down/up pair) — is the file for this model?")
        prefix, targets = named
        up = fold_alpha(parts["B"], parts["A"].shape[0], parts.get("alpha"))  # (out, r)
        for target, b in zip(targets, up.chunk(len(targets), dim=0)):
            out[f"transformer.{prefix}.{target}.lora_A.weight"] = parts["A"]
            out[f"transformer.{prefix}.{target}.lora_B.weight"] = b.contiguous()
    return out


# -- estimator and pipeline ------------------------------------------------------------------------------------
def meta_inputs(config: dict, *, batch: int, latent: tuple[int, int, int], text_len: int,
                expand_timesteps: bool = False) -> dict:
    """The transformer's forward kwargs for `batch` sequences of latent (F', H', W'), on the meta device: the
    pipelines' inputs (2C + 1 channels, L Qwen tokens, 256 ByT5 tokens, 729 image tokens)."""
    f, h, w = latent
    return {"hidden_states": meta_tensor(batch, config["in_channels"], f, h, w),  # (B, 2C + 1, F', H', W')
            "timestep": meta_tensor(batch),
            "encoder_hidden_states": meta_tensor(batch, text_len, config["text_embed_dim"]),  # (B, L, 3584)
            "encoder_attention_mask": meta_tensor(batch, text_len),
            "encoder_hidden_states_2": meta_tensor(batch, BYT5_LENGTH, config["text_embed_2_dim"]),  # (B, 256, 1472)
            "encoder_attention_mask_2": meta_tensor(batch, BYT5_LENGTH),
            "image_embeds": meta_tensor(batch, VISION_TOKENS, config["image_embed_dim"])}  # (B, 729, 1152)


def pipeline_kwargs(components: Hunyuan15Components, *, negative_prompt: str, fps: int) -> dict:
    """The pipelines' extra argument: the negative prompt. (They take no max_sequence_length or guidance_scale:
    those are the pipeline's tokenizer_max_length and its guider's guidance_scale, set on the pipeline object.)"""
    return {"negative_prompt": negative_prompt}
