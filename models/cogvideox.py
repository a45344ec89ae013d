"""CogVideoX (1.0 and 1.5, text- and image-to-video): load a local diffusers folder, encode, denoise, decode.

The pieces reel's own denoising loop needs, with CogVideoXPipeline's and CogVideoXImageToVideoPipeline's
exact numerics: unmasked T5 embeddings, latents in CogVideoX's (B, F', C, H', W') layout, the 1.5 front
padding of an odd latent-frame count (patch_size_t = 2), 3D RoPE / ofs embeddings, the folder's v-prediction
DDIM or DPM scheduler (the DPM one keeps its extra state and draws its noise from each shot's generator),
and a frame-batch by frame-batch VAE decode.

Randomness follows the pipeline called with generator=torch.Generator("cpu").manual_seed(seed): for
image-to-video the generator first draws the VAE posterior sample of the image, then the starting noise,
then (DPM only) two noise tensors per step. Pass the shot's seed to `image_condition`, `initial_noise`
(image=True) and `make_sampler` (seeds=[...]) to get the pipeline's frames for the same seed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from reel.models.common import cpu_generator, freeze, meta_tensor, quiet_loading, scheduler_config
from reel.models.cogvideox_samplers import ddim, dpm
from reel.models.samplers import Sampler
from reel.models.single_file import load_transformer
from reel.models.common import to_uint8_frames as to_uint8_frames  # the family contract's, shared
from reel.models.common import decode_audio as decode_audio  # no sound (registry audio off)
from reel.models.common import render_long as render_long  # no long-shot scheme (registry long_shots "")

SCHEDULERS = ("default", "ddim", "dpm")  # "default": the folder's own (CogVideoXDDIMScheduler or ...DPMScheduler)
OFS = 2.0  # CogVideoX 1.5 I2V's ofs embedding input, as the pipeline sets it


@dataclass
class CogVideoXComponents:
    """The loaded parts of a CogVideoX folder, placed on one device."""

    path: Path
    pipeline: str  # model_index.json `_class_name`
    tokenizer: object
    text_encoder: torch.nn.Module
    transformer: torch.nn.Module
    vae: torch.nn.Module
    scheduler_config: dict
    device: torch.device
    dtype: torch.dtype  # transformer and text encoder dtype; the VAE stays fp32
    _rope: dict = field(default_factory=dict)  # (F', H', W') -> (cos, sin)

    @property
    def takes_image(self) -> bool:
        return self.pipeline == "CogVideoXImageToVideoPipeline"

    @property
    def temporal_factor(self) -> int:
        return int(self.vae.config.temporal_compression_ratio)

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        """Channels of the denoised latents (the I2V transformer takes twice that: noise + image latents)."""
        c = int(self.transformer.config.in_channels)
        return c // 2 if self.takes_image else c


def load(path: str | Path, device: torch.device, dtype: torch.dtype) -> CogVideoXComponents:
    """Load tokenizer, T5 encoder, transformer, VAE and scheduler config from a local folder.

    Never contacts a hub (local_files_only). The tokenizer class is the one model_index.json names (as the
    pipeline loads it). Transformer and text encoder in `dtype` (bf16 on CUDA), the VAE in fp32 everywhere.
    """
    import transformers
    from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel
    from transformers import T5EncoderModel

    quiet_loading()
    path = Path(path)
    index = json.loads((path / "model_index.json").read_text())
    tok_cls = getattr(transformers, (index.get("tokenizer") or [None, "AutoTokenizer"])[1], transformers.AutoTokenizer)
    tokenizer = tok_cls.from_pretrained(path / "tokenizer", local_files_only=True)
    text_encoder = T5EncoderModel.from_pretrained(path / "text_encoder", local_files_only=True, dtype=dtype)
    transformer = load_transformer(CogVideoXTransformer3DModel, path, dtype)  # folder or single file
    vae = AutoencoderKLCogVideoX.from_pretrained(path / "vae", local_files_only=True, dtype=torch.float32)
    freeze((text_encoder, transformer, vae), device)
    return CogVideoXComponents(path, index.get("_class_name", ""), tokenizer, text_encoder, transformer, vae,
                               scheduler_config(path), device, dtype)


# -- sampling ----------------------------------------------------------------------------------------
def _step_generators(seeds: list[int] | None, x: torch.Tensor, image: bool) -> list[torch.Generator]:
    """Per-shot generators in the state the pipeline's generator has when its loop begins (DPM step noise)."""
    if seeds is not None:
        if len(seeds) != x.shape[0]:
            raise ValueError(f"{len(seeds)} seeds for a batch of {x.shape[0]} shots")
        gens = [cpu_generator(int(s)) for s in seeds]
        for g in gens:
            if image:  # the I2V pipeline draws the image's VAE posterior sample first
                torch.randn(_image_sample_shape(x.shape[1:]), generator=g)
            torch.randn((1, *x.shape[1:]), generator=g)  # then the starting noise
        return gens
    # No seeds given: a generator per shot keyed by its own starting noise (deterministic, batch-independent,
    # but not the pipeline's noise stream).
    out = []
    for shot in x:
        digest = hashlib.sha256(shot.detach().float().cpu().numpy().tobytes()).digest()
        out.append(cpu_generator(int.from_bytes(digest[:8], "little") % (2**63)))
    return out


def make_sampler(components: CogVideoXComponents, name: str, shift: float, *, shape: tuple | None = None,
                 image: dict | bool | None = None, seeds: list[int] | None = None) -> Sampler:
    """A sampler: "default" (the folder's own scheduler class), "ddim" or "dpm" (CogVideoX's DDIM / DPM
    schedulers built from the folder's config). `shift` is unused (CogVideoX is not a flow model; the
    folder's snr_shift_scale applies). `seeds`: one per shot, for the DPM scheduler's step noise to equal
    the pipeline's; `image`: truthy for image-to-video shots (their generators drew the image sample first).
    Both plan their steps on the CPU before the loop (models/cogvideox_samplers.py): nothing read from the device."""
    from diffusers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler

    if name not in SCHEDULERS:
        raise ValueError(f"scheduler {name!r} is not available for CogVideoX (a v-prediction DDPM model, not flow "
                         f"matching); use one of {', '.join(SCHEDULERS)} — \"default\" is the folder's own")
    cfg = dict(components.scheduler_config)
    if name == "default":
        name = "dpm" if cfg.get("_class_name") == "CogVideoXDPMScheduler" else "ddim"
    cls = CogVideoXDPMScheduler if name == "dpm" else CogVideoXDDIMScheduler
    sigma = float(cls.from_config(cfg).init_noise_sigma)
    if sigma != 1.0:  # initial_noise relies on it (the pipeline multiplies by it)
        raise ValueError(f"{cls.__name__} with init_noise_sigma={sigma} is not supported")
    if name == "ddim":
        return ddim(cfg)
    shot_seeds = None if seeds is None else [int(s) for s in seeds]
    takes_image = image is not None and image is not False
    return dpm(cfg, lambda x: _step_generators(shot_seeds, x, takes_image))


# -- text ----------------------------------------------------------------------------------------------
@torch.no_grad()
def encode_prompts(components: CogVideoXComponents, prompts: list[str], max_sequence_length: int) -> torch.Tensor:
    """T5 embeddings exactly as CogVideoXPipeline computes them: (N, L, D), no attention mask, padding kept."""
    patch_embed = components.transformer.patch_embed
    fixed = int(components.transformer.config.max_text_seq_length)
    if (patch_embed.use_positional_embeddings or patch_embed.use_learned_positional_embeddings) \
            and max_sequence_length != fixed:
        raise ValueError(f"max_sequence_length={max_sequence_length}: this CogVideoX transformer adds positional "
                         f"embeddings for exactly {fixed} text tokens — set max_sequence_length = {fixed}")
    tok = components.tokenizer(prompts, padding="max_length", max_length=max_sequence_length, truncation=True,
                               add_special_tokens=True, return_tensors="pt")
    hidden = components.text_encoder(tok.input_ids.to(components.device))[0]  # (N, L, D)
    return hidden.to(components.dtype)


def embed_key(components: CogVideoXComponents) -> str:
    """Nothing but the prompt and the weights decides CogVideoX's embeddings."""
    return ""


def batch_conditioning(components: CogVideoXComponents, cond, *, guidance: float, fps: int, batch: int):
    """CogVideoX's conditioning is the same for any batch: guidance runs as two passes."""
    return cond


def experts(components: CogVideoXComponents) -> dict[str, torch.nn.Module]:
    """One transformer."""
    return {"high": components.transformer}


# -- latents -------------------------------------------------------------------------------------------
def _latent_frames(components: CogVideoXComponents, frames: int) -> tuple[int, int]:
    """(latent frames F', front padding) — CogVideoX 1.5 (patch_size_t) pads F' to a multiple of patch_size_t."""
    f = (frames - 1) // components.temporal_factor + 1
    p_t = components.transformer.config.patch_size_t
    return f, ((p_t - f % p_t) % p_t if p_t else 0)


def latent_shape(components: CogVideoXComponents, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
    """(F' + pad, C, H', W') of one shot's latents (CogVideoX's frames-first layout)."""
    t, s = components.temporal_factor, components.spatial_factor
    cfg = components.transformer.config
    multiple = s * int(cfg.patch_size)
    if frames < 1 or (frames - 1) % (2 * t):  # an even latent-frame count decodes to 4F' frames, not 4(F'-1)+1
        below = max(1, (frames - 1) // (2 * t) * 2 * t + 1)
        raise ValueError(f"frames={frames}: CogVideoX needs {2 * t}k+1 frames (its VAE turns an even number of latent "
                         f"frames into {t}k frames, so diffusers would return {t * ((frames - 1) // t + 1)}) — try "
                         f"{below} or {below + 2 * t}")
    if height % multiple or width % multiple:
        raise ValueError(f"{width}x{height}: CogVideoX needs width and height that are multiples of {multiple}")
    if cfg.use_learned_positional_embeddings:
        h, w, f = int(cfg.sample_height) * s, int(cfg.sample_width) * s, int(cfg.sample_frames)
        if (height, width, frames) != (h, w, f):
            raise ValueError(f"{frames} frames at {width}x{height}: this model's learned positional embeddings "
                             f"cover {f} frames at {w}x{h} only (CogVideoX-5b-I2V) — use width = {w}, "
                             f"height = {h}, frames = {f}")
    f, pad = _latent_frames(components, frames)
    return (f + pad, components.latent_channels, height // s, width // s)


def _image_sample_shape(shape) -> tuple[int, ...]:
    """The I2V pipeline's VAE posterior sample of the input image: (1, C, 1, H', W')."""
    return (1, shape[1], 1, shape[2], shape[3])


def initial_noise(shape: tuple[int, ...], seed: int, device: torch.device, *,
                  image: dict | bool | None = None) -> torch.Tensor:
    """Starting noise (1, F', C, H', W') drawn on the CPU from the shot's own generator, then moved.

    Equals the pipeline's latents for generator=torch.Generator("cpu").manual_seed(seed) (both CogVideoX
    schedulers have init_noise_sigma = 1). `image` (the shot's image_condition, or True) for image-to-video:
    the pipeline's generator draws the image's posterior sample first, so the same draw is skipped here.
    """
    generator = cpu_generator(seed)
    if image is not None and image is not False:
        torch.randn(_image_sample_shape(shape), generator=generator)
    return torch.randn((1, *shape), generator=generator, dtype=torch.float32).to(device)  # (1, F', C, H', W')


@torch.no_grad()
def image_condition(components: CogVideoXComponents, image, frames: int, height: int, width: int, *,
                    seed: int | None = None) -> dict:
    """The I2V pipeline's image latents for a first frame `image` (H, W, 3) uint8: {"image_latents":
    (1, F' + pad, C, H', W')}, the scaled image latent in frame 0 (1.5: the padding frame), zeros after.

    Resized like the pipeline (VideoProcessor, Lanczos) when its size differs. `seed`: the VAE posterior is
    sampled from the shot's generator as the pipeline does (pair with initial_noise(..., image=True));
    None: the posterior mean (deterministic, not the pipeline's draw).
    """
    import numpy as np
    from diffusers.video_processor import VideoProcessor
    from PIL import Image

    if not components.takes_image:
        raise ValueError(f"{components.path} is a {components.pipeline} folder: it takes no input image")
    vae = components.vae
    shape = latent_shape(components, frames, height, width)  # (N, C, H', W')
    processor = VideoProcessor(vae_scale_factor=components.spatial_factor)
    pixels = processor.preprocess(Image.fromarray(np.asarray(image, dtype=np.uint8)), height=height, width=width)
    pixels = pixels.to(components.device, torch.float32)[:, :, None]  # (1, 3, 1, H, W) in [-1, 1]
    posterior = vae.encode(pixels).latent_dist
    if seed is None:
        z = posterior.mode()
    else:
        z = posterior.sample(cpu_generator(seed))  # (1, C, 1, H', W')
    z = z.permute(0, 2, 1, 3, 4)  # (1, 1, C, H', W')
    sf = vae.config.scaling_factor
    z = (1 / sf) * z if vae.config.invert_scale_latents else sf * z
    p_t = components.transformer.config.patch_size_t
    z = torch.cat([z, z.new_zeros((1, shape[0] - 1, *z.shape[2:]))], dim=1)  # (1, N, C, H', W')
    if p_t is not None:  # the pipeline's "first frame" duplication (empty whenever N is a multiple of p_t)
        z = torch.cat([z[:, : z.shape[1] % p_t], z], dim=1)
    return {"image_latents": z}


# -- denoiser ------------------------------------------------------------------------------------------
def _rotary(components: CogVideoXComponents, frames: int, h: int, w: int):
    """The pipeline's 3D RoPE (cos, sin) for latents of F' frames and H' x W' (cached per size)."""
    from diffusers.models.embeddings import get_3d_rotary_pos_embed
    from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

    key = (frames, h, w)
    if key not in components._rope:
        cfg = components.transformer.config
        p, p_t = int(cfg.patch_size), cfg.patch_size_t
        gh, gw = h // p, w // p
        base_w, base_h = int(cfg.sample_width) // p, int(cfg.sample_height) // p
        if p_t is None:  # CogVideoX 1.0
            crops = get_resize_crop_region_for_grid((gh, gw), base_w, base_h)
            rope = get_3d_rotary_pos_embed(embed_dim=cfg.attention_head_dim, crops_coords=crops, grid_size=(gh, gw),
                                           temporal_size=frames, device=components.device)
        else:  # CogVideoX 1.5
            rope = get_3d_rotary_pos_embed(embed_dim=cfg.attention_head_dim, crops_coords=None, grid_size=(gh, gw),
                                           temporal_size=(frames + p_t - 1) // p_t, grid_type="slice",
                                           max_size=(base_h, base_w), device=components.device)
        components._rope[key] = rope
    return components._rope[key]


def velocity(components: CogVideoXComponents, latents: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor:
    """The denoiser: the transformer's v-prediction for latents (B, F', C, H', W') at DDPM timestep t.

    `cond`: text embeddings (B, L, D), or a dict {"embeds": (B, L, D), "image_latents": (B, F', C, H', W')} for
    image-to-video (the runtime merges `image_condition`'s dict in; the image latents are concatenated
    channel-wise, as the I2V pipeline does)."""
    tr = components.transformer
    if isinstance(cond, dict):
        embeds, image = cond["embeds"], cond.get("image_latents")
    else:
        embeds, image = cond, None
    x = latents.to(components.device, components.dtype)  # (B, F', C, H', W')
    if components.takes_image:
        if image is None:
            raise ValueError(f"{components.path} is an image-to-video model: velocity needs cond['image_latents']")
        x = torch.cat([x, image.to(x.device, x.dtype)], dim=2)  # (B, F', 2C, H', W')
    b, f, _, h, w = x.shape
    rope = _rotary(components, f, h, w) if tr.config.use_rotary_positional_embeddings else None
    ofs = x.new_full((1,), OFS) if tr.config.ofs_embed_dim is not None else None
    timestep = t.expand(b).to(components.device)  # (B,)
    out = tr(hidden_states=x, encoder_hidden_states=embeds.to(x.device, components.dtype), timestep=timestep, ofs=ofs,
             image_rotary_emb=rope, return_dict=False)[0]
    return out.float()  # (B, F', C, H', W')


# -- decode --------------------------------------------------------------------------------------------
@torch.no_grad()
def decode_stream(components: CogVideoXComponents, latents: torch.Tensor, *, seeds: list[int] | None = None,
                  frames: int | None = None) -> Iterator[torch.Tensor]:
    """Decode latents (B, N, C, H', W') frame batch by frame batch, yielding (B, 3, f, H, W) in [0, 1].

    Follows AutoencoderKLCogVideoX._decode (its conv cache carries across batches of
    `num_latent_frames_batch_size` latent frames), yielding each batch's pixels as they come; a tiled VAE
    (`vae_tiling`) decodes the whole clip at once and yields it as one chunk. CogVideoX 1.5's front padding
    frame is dropped first: its size comes from `frames`, the shot's frame count, which a 1.5 model needs
    (N latent frames can hide one padding frame or none). `seeds`: unused (the decode draws no noise).
    """
    vae = components.vae
    n = latents.shape[1]
    if frames is not None:
        f, pad = _latent_frames(components, frames)
        if f + pad != n:
            raise ValueError(f"latents hold {n} frames but {frames} frames need {f + pad}")
    elif components.transformer.config.patch_size_t:
        raise ValueError("CogVideoX 1.5 latents may begin with a padding frame: pass frames= (the shot's frame "
                         "count) to decode_stream")
    else:
        pad = 0
    z = latents[:, pad:].to(components.device, torch.float32).permute(0, 2, 1, 3, 4)  # (B, C, F', H', W')
    z = 1 / vae.config.scaling_factor * z
    b, _, nf, h, w = z.shape
    if vae.use_tiling and (w > vae.tile_latent_min_width or h > vae.tile_latent_min_height):
        yield (vae.decode(z).sample * 0.5 + 0.5).clamp(0, 1)
        return
    size = vae.num_latent_frames_batch_size
    cache = None
    for i in range(max(nf // size, 1)):
        rest = nf % size
        start, end = size * i + (0 if i == 0 else rest), size * (i + 1) + rest
        x = z[:, :, start:end]
        if vae.post_quant_conv is not None:
            x = vae.post_quant_conv(x)
        out, cache = vae.decoder(x, conv_cache=cache)  # (B, 3, f, H, W) in about [-1, 1]
        yield (out * 0.5 + 0.5).clamp(0, 1)


def lora_to_diffusers(state: dict) -> dict:
    """A CogVideoX LoRA state dict (diffusers/peft `transformer.` keys, as CogVideoX trainers save them)."""
    from diffusers.loaders.lora_pipeline import CogVideoXLoraLoaderMixin

    return CogVideoXLoraLoaderMixin.lora_state_dict(state)


def decode_preview(components: CogVideoXComponents, decoder: torch.nn.Module,
                   latents: torch.Tensor) -> Iterator[torch.Tensor]:
    """CogVideoX has no tiny preview decoder (registry preview_decoder is off): previews decode with the VAE."""
    raise ValueError("CogVideoX previews decode with the model's VAE: no tiny preview decoder reads CogVideoX latents")


def meta_inputs(config: dict, *, batch: int, latent: tuple[int, int, int], text_len: int,
                expand_timesteps: bool = False) -> dict:
    """The transformer's forward kwargs for `batch` sequences of latent (F', H', W'), on the meta device."""
    f, h, w = latent
    p = config["patch_size"]
    kw = {"hidden_states": meta_tensor(batch, f, config["in_channels"], h, w),  # (B, F', C, H', W')
          "encoder_hidden_states": meta_tensor(batch, text_len, config["text_embed_dim"]),  # (B, 226, 4096)
          "timestep": meta_tensor(batch, dtype=torch.float32)}
    if config.get("use_rotary_positional_embeddings"):
        n = f * (h // p) * (w // p)
        kw["image_rotary_emb"] = (meta_tensor(n, config["attention_head_dim"], dtype=torch.float32),
                                  meta_tensor(n, config["attention_head_dim"], dtype=torch.float32))  # (N, D) cos, sin
    return kw


def pipeline_kwargs(components: CogVideoXComponents, *, negative_prompt: str, fps: int) -> dict:
    """CogVideoXPipeline's extra argument: the negative prompt."""
    return {"negative_prompt": negative_prompt}
