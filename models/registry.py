"""Model families by name: lazy module paths, frame and size rules, defaults. Imports no torch.

`resolve_model("shapes")` or `resolve_model("/path/to/diffusers/folder")` returns a `ModelInfo` read
from the folder's JSON files only, so a spec is validated in milliseconds before any weights load.

The family contract (what each family module provides) is models/family.py; the capability flags are
`Family` fields below.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from reel.models.resources import package_folder

SHAPES_DIR = package_folder("reel.models.shapes")  # the built-in model's package: weights/, adapters/, upscalers/
BUILTIN_MODELS = {"shapes": SHAPES_DIR / "weights"}


class ModelError(ValueError):
    """A model reference that cannot be used; the message says why and what to do."""


def _wan_factors(vae: dict, tr: dict) -> tuple[int, int]:
    patch = tr.get("patch_size") or [1, 2, 2]
    return int(vae.get("scale_factor_temporal") or 4), int(vae.get("scale_factor_spatial") or 8) * int(patch[1])


def _ltx_factors(vae: dict, tr: dict) -> tuple[int, int]:
    """LTX 0.9.5+ state the ratios; 0.9.0/0.9.1 imply them from patch sizes and scaling blocks."""
    scaling = 2 ** sum(bool(x) for x in vae.get("spatio_temporal_scaling", [1, 1, 1, 0]))
    spatial = int(vae.get("spatial_compression_ratio") or int(vae.get("patch_size", 4)) * scaling)
    temporal = int(vae.get("temporal_compression_ratio") or int(vae.get("patch_size_t", 1)) * scaling)
    return temporal, spatial * int(tr.get("patch_size", 1))


def _cog_factors(vae: dict, tr: dict) -> tuple[int, int]:
    """The Cog VAE turns an even number of latent frames into 4x frames: shots need 8k+1 frames."""
    temporal = 2 * int(vae.get("temporal_compression_ratio", 4))
    spatial = 2 ** (len(vae.get("block_out_channels", [128, 256, 256, 512])) - 1)
    return temporal, spatial * int(tr.get("patch_size", 2))


def _wan_latent(vae: dict) -> tuple[int, int, int]:
    return (int(vae.get("scale_factor_temporal", 4)), int(vae.get("scale_factor_spatial", 8)),
            int(vae.get("z_dim", 16)))


def _ltx_latent(vae: dict) -> tuple[int, int, int]:
    ups = sum(bool(s) for s in vae.get("spatio_temporal_scaling", (True, True, True, False)))
    return (int(vae.get("patch_size_t", 1)) * 2**ups, int(vae.get("patch_size", 4)) * 2**ups,
            int(vae.get("latent_channels", 128)))


def _cog_latent(vae: dict) -> tuple[int, int, int]:
    levels = len(vae.get("block_out_channels", [0] * 4)) - 1  # one 2x upsampling per level
    return int(vae.get("temporal_compression_ratio", 4)), 2**levels, int(vae.get("latent_channels", 16))


def _hunyuan_latent(vae: dict) -> tuple[int, int, int]:
    return (int(vae.get("temporal_compression_ratio", 4)), int(vae.get("spatial_compression_ratio", 8)),
            int(vae.get("latent_channels", 16)))


def _hunyuan_factors(vae: dict, tr: dict) -> tuple[int, int]:
    temporal = int(vae.get("temporal_compression_ratio", 4))
    spatial = int(vae.get("spatial_compression_ratio", 8))
    return temporal, spatial * int(tr.get("patch_size", 2))


def _latent_frames(info: "ModelInfo", frames: int) -> int:
    """Latent frames of a causal video VAE: the first frame alone, then one per `temporal` frames."""
    latent = info.family.vae_latent
    vae_t = latent(info.vae_config)[0] if latent is not None else info.temporal_factor
    return (frames - 1) // vae_t + 1


def _wan_limits(info: "ModelInfo", width: int, height: int, frames: int, text_len: int) -> list[tuple[str, str]]:
    """WanRotaryPosEmbed precomputes `rope_max_seq_len` positions per axis (frames, height, width after the VAE
    and the patch); a longer axis fails inside the transformer. I2V transformers (image cross-attention) split
    the text from the image tokens at a hard-coded 512 text tokens."""
    tr = info.transformer_config
    rope = int(tr.get("rope_max_seq_len") or 1024)
    p_t = int((tr.get("patch_size") or [1, 2, 2])[0])
    out = []
    for key, pixels in (("width", width), ("height", height)):
        if pixels // info.size_multiple > rope:
            out.append((key, f"{pixels} px is {pixels // info.size_multiple} positions after the VAE and the patch "
                             f"(1 per {info.size_multiple} px), more than the {rope} of this transformer's rotary "
                             f"position table (rope_max_seq_len) — the largest {key} is {rope * info.size_multiple}"))
    latent = _latent_frames(info, frames)
    if latent // p_t > rope:
        most = (rope * p_t + p_t - 2) * (info.temporal_factor) + 1
        out.append(("frames", f"{frames} frames are {latent} latent frames, more than the {rope} of this transformer's "
                              f"rotary position table (rope_max_seq_len) — use at most {most} frames"))
    if tr.get("added_kv_proj_dim") and text_len != 512:
        out.append(("max_sequence_length", f"max_sequence_length = {text_len}: this image-to-video transformer "
                                           "separates text from image tokens at 512 text tokens — set it to 512"))
    return out


def _ltx_limits(info: "ModelInfo", width: int, height: int, frames: int, text_len: int) -> list[tuple[str, str]]:
    """LTX's rotary positions are computed for any size; its latent frames must fill whole temporal patches."""
    p_t = int(info.transformer_config.get("patch_size_t") or 1)
    latent = _latent_frames(info, frames)
    if latent % p_t:
        return [("frames", f"{frames} frames are {latent} latent frames, which do not divide into this "
                           f"transformer's temporal patches of {p_t}")]
    return []


def _cog_limits(info: "ModelInfo", width: int, height: int, frames: int, text_len: int) -> list[tuple[str, str]]:
    """CogVideoXPatchEmbed: learned positional embeddings (5B-I2V) cover the sample size and frames only; any
    positional embedding added to the tokens (sin-cos without rotary, or learned) is laid out for exactly
    max_text_seq_length text tokens; CogVideoX 1.5's rotary table ("slice") covers sample_height x sample_width
    latents after the patch."""
    tr = info.transformer_config
    p = int(tr.get("patch_size") or 2)
    vae_s = info.size_multiple // p
    sample_w, sample_h = int(tr.get("sample_width") or 90), int(tr.get("sample_height") or 60)
    out = []
    rotary = bool(tr.get("use_rotary_positional_embeddings"))
    learned = bool(tr.get("use_learned_positional_embeddings"))
    if learned:
        want = (sample_w * vae_s, sample_h * vae_s, int(tr.get("sample_frames") or 49))
        if (width, height, frames) != want:
            key = "frames" if (width, height) == want[:2] else ("width" if width != want[0] else "height")
            out.append((key, f"{frames} frames at {width}x{height}: this model's learned positional embeddings cover "
                             f"{want[2]} frames at {want[0]}x{want[1]} only (CogVideoX-5b-I2V) — use width = "
                             f"{want[0]}, height = {want[1]}, frames = {want[2]}"))
    if (learned or not rotary) and text_len != int(tr.get("max_text_seq_length") or 226):
        fixed = int(tr.get("max_text_seq_length") or 226)
        out.append(("max_sequence_length", f"max_sequence_length = {text_len}: this transformer's positional "
                                           f"embeddings are laid out for exactly {fixed} text tokens — set it to "
                                           f"{fixed}"))
    if rotary and tr.get("patch_size_t") is not None:
        for key, pixels, sample in (("width", width, sample_w), ("height", height, sample_h)):
            if pixels // info.size_multiple > sample // p:
                out.append((key, f"{pixels} px: CogVideoX 1.5's rotary table covers {sample // p} positions "
                                 f"(sample_{key} {sample} / patch {p}) — the largest {key} is "
                                 f"{sample // p * info.size_multiple}"))
    return out


def _no_limits(info: "ModelInfo", width: int, height: int, frames: int, text_len: int) -> list[tuple[str, str]]:
    """HunyuanVideo computes its rotary positions for any size; the CLIP and Llama encoders truncate text."""
    return []


def _hunyuan15_latent(vae: dict) -> tuple[int, int, int]:
    """AutoencoderKLHunyuanVideo15: 4x temporal, 16x spatial, 32 latent channels by default."""
    return (int(vae.get("temporal_compression_ratio", 4)), int(vae.get("spatial_compression_ratio", 16)),
            int(vae.get("latent_channels", 32)))


def _hunyuan15_factors(vae: dict, tr: dict) -> tuple[int, int]:
    """HunyuanVideo 1.5 patches 1x1 (patch_size 1): sizes are multiples of the VAE's 16."""
    temporal, spatial, _ = _hunyuan15_latent(vae)
    return temporal, spatial * int(tr.get("patch_size", 1))


def _ltx2_latent(vae: dict) -> tuple[int, int, int]:
    """AutoencoderKLLTX2Video: the real config states its ratios (32x / 8x, diffusers' convert_ltx2_to_diffusers.py);
    without them, patch sizes x 2 ** (scaling blocks), its defaults (4 blocks, patch 4) as the class computes them."""
    ups = sum(bool(s) for s in vae.get("spatio_temporal_scaling", (True, True, True, True)))
    spatial = vae.get("spatial_compression_ratio") or int(vae.get("patch_size", 4)) * 2**ups
    temporal = vae.get("temporal_compression_ratio") or int(vae.get("patch_size_t", 1)) * 2**ups
    return int(temporal), int(spatial), int(vae.get("latent_channels", 128))


def _ltx2_factors(vae: dict, tr: dict) -> tuple[int, int]:
    temporal, spatial, _ = _ltx2_latent(vae)
    return temporal, spatial * int(tr.get("patch_size", 1))


def _hunyuan15_folder_defaults(path: Path) -> dict:
    """HunyuanVideo 1.5 folders state their guidance (guider/guider_config.json: 6.0, 1.0 in the cfg-distilled
    ones) and shift (scheduler/scheduler_config.json: 5 for 480p, 7 or 9 for 720p), as its pipeline reads them."""
    out = {}
    for key, file, field_ in (("guidance", "guider/guider_config.json", "guidance_scale"),
                              ("shift", "scheduler/scheduler_config.json", "shift")):
        try:
            value = json.loads((path / file).read_text()).get(field_)
        except (OSError, ValueError, AttributeError, RecursionError):
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)
    return out


@dataclass(frozen=True)
class Family:
    """One model family: how to recognise it, how to load it, what it accepts, what it can do.

    The capability flags say which parts of the family contract (models/family.py) work; the engine, the
    spec and the estimator ask these, never a family's name."""

    name: str
    pipeline_classes: tuple[str, ...]  # model_index.json `_class_name` values (text-to-video first)
    module: str  # lazy import path of the reel module that loads and runs it (models/family.py contract)
    transformer_class: str  # the diffusers transformer class (the estimator builds it from a config on meta)
    vae_class: str  # the diffusers video VAE class
    factors: Callable[[dict, dict], tuple[int, int]]  # (vae cfg, transformer cfg) -> (temporal, size multiple)
    default_fps: int
    default_steps: int
    default_guidance: float
    default_shift: float
    default_width: int
    default_height: int
    default_frames: int
    default_max_sequence_length: int
    image_pipelines: tuple[str, ...] = ()  # pipelines of this family that take an input image
    default_scheduler: str = "default"  # "default": the folder's own scheduler config
    flow_matching: bool = True  # False: v-prediction (CogVideoX); no consistency (lcm) previews
    layout: str = "diffusers folder (model_index.json, transformer/, vae/, text_encoder/, tokenizer/, scheduler/)"
    hub_example: str = ""
    # capabilities
    guidance: str = "cfg"  # "cfg": cond + uncond passes; "embedded": a transformer input, one pass, no negative
    preview_decoder: bool = False  # previews may decode with a tiny latent decoder (decode_preview)
    cpu_bf16_decode: bool = False  # [speed] weights = "bf16" on a CPU decodes under bf16 autocast (measured)
    cpu_bf16_preview: bool = False  # previews denoise under bf16 autocast on a CPU with native bf16 (measured)
    fused_kernels: bool = False  # kernels/wan_fused.py covers the transformer
    cpu_fast_paths: bool = False  # kernels/channel_norm.py and wan_cpu.py cover its VAE and transformer
    vae_defaults: Callable[[dict], dict] = lambda transformer_config: {}  # VAE config when only a transformer's
    #                                                                       is given
    vae_latent: Callable[[dict], tuple[int, int, int]] | None = None  # VAE config -> (temporal, spatial, channels)
    single_file_keys: tuple[str, ...] = ()  # tensor names of its original / ComfyUI checkpoints (prefix stripped)
    single_file_loader: bool = True  # diffusers can load its transformer from a single file
    # (info, width, height, frames, text tokens) -> [(key, message)]: what the transformer's config cannot take
    # beyond the frame rule and size multiple (rotary tables, fixed positional embeddings); key is width, height,
    # frames or max_sequence_length. Torch-free: read from the configs, checked by the spec.
    limits: Callable[..., list[tuple[str, str]]] = _no_limits
    schedulers: tuple[str, ...] = ("default", "unipc", "euler")  # the spec's `scheduler` values it runs
    audio: bool = False  # generates a sound track with the picture (decode_audio)
    long_shots: str = ""  # "diffusion-forcing": shots over long_window frames render in chunks (render_long)
    long_window: int = 0  # frames per chunk of a long shot (a folder's reel.json "window_frames" overrides)
    long_overlap: int = 0  # frames each chunk repeats of the one before ("overlap_frames" in reel.json)
    long_pipelines: tuple[str, ...] = ()  # the pipelines whose folders can (all of the family's when empty)
    long_opt_in: bool = False  # a folder's reel.json "long_shots" may turn its scheme on (per-frame timesteps)
    step_cache: bool = True  # [speed] step_cache works (diffusers' First-Block-Cache knows its transformer blocks)
    folder_defaults: Callable[[Path], dict] = lambda path: {}  # defaults the folder's own configs state (reel.json
    #                                                             still overrides them)
    default_scheduler_classes: tuple[str, ...] = ()  # "default" needs the folder's scheduler to be one of these


def _wan_vae_defaults(transformer_config: dict) -> dict:
    """Wan 2.2 TI2V (48 input channels) pairs with the 16x-compressing VAE; every other Wan with the 8x one."""
    return {"scale_factor_spatial": 16, "z_dim": 48} if transformer_config.get("in_channels") == 48 else {}


FAMILIES: dict[str, Family] = {
    "wan": Family(
        "wan", ("WanPipeline", "WanImageToVideoPipeline"), "reel.models.wan", "WanTransformer3DModel",
        "AutoencoderKLWan", _wan_factors, default_fps=16, default_steps=50, default_guidance=5.0, default_shift=3.0,
        default_width=832, default_height=480, default_frames=81, default_max_sequence_length=512,
        image_pipelines=("WanImageToVideoPipeline",), default_scheduler="unipc",
        hub_example="Wan-AI/Wan2.1-T2V-1.3B-Diffusers", preview_decoder=True, cpu_bf16_decode=True,
        cpu_bf16_preview=True, fused_kernels=True, vae_latent=_wan_latent, cpu_fast_paths=True,
        vae_defaults=_wan_vae_defaults, limits=_wan_limits, long_opt_in=True,
        single_file_keys=("head.modulation", "patch_embedding.weight")),
    "ltx": Family(
        "ltx", ("LTXPipeline", "LTXImageToVideoPipeline"), "reel.models.ltx", "LTXVideoTransformer3DModel",
        "AutoencoderKLLTXVideo", _ltx_factors, default_fps=24, default_steps=50, default_guidance=3.0,
        default_shift=1.0, default_width=704, default_height=480, default_frames=161, default_max_sequence_length=128,
        image_pipelines=("LTXImageToVideoPipeline",), hub_example="Lightricks/LTX-Video", vae_latent=_ltx_latent,
        limits=_ltx_limits,
        single_file_keys=("adaln_single.linear.weight", "caption_projection.linear_1.weight")),
    "cogvideox": Family(
        "cogvideox", ("CogVideoXPipeline", "CogVideoXImageToVideoPipeline"), "reel.models.cogvideox",
        "CogVideoXTransformer3DModel", "AutoencoderKLCogVideoX", _cog_factors, default_fps=8, default_steps=50,
        default_guidance=6.0, default_shift=1.0, default_width=720, default_height=480, default_frames=49,
        default_max_sequence_length=226, flow_matching=False, image_pipelines=("CogVideoXImageToVideoPipeline",),
        hub_example="THUDM/CogVideoX-5b", vae_latent=_cog_latent, limits=_cog_limits,
        schedulers=("default", "ddim", "dpm"),
        single_file_keys=("transformer.transformer_blocks.0.attn1.to_q.weight", "patch_embed.proj.weight"),
        single_file_loader=False),
    "hunyuan": Family(
        "hunyuan", ("HunyuanVideoPipeline",), "reel.models.hunyuan", "HunyuanVideoTransformer3DModel",
        "AutoencoderKLHunyuanVideo", _hunyuan_factors, default_fps=24, default_steps=50, default_guidance=6.0,
        default_shift=7.0, default_width=1280, default_height=720, default_frames=129, default_max_sequence_length=256,
        hub_example="hunyuanvideo-community/HunyuanVideo", guidance="embedded", vae_latent=_hunyuan_latent,
        default_scheduler_classes=("FlowMatchEulerDiscreteScheduler",),
        single_file_keys=("double_blocks.0.img_attn_qkv.weight",
                          "txt_in.individual_token_refiner.blocks.0.norm1.weight")),
    # SkyReels-V2: a Wan 2.1 transformer with per-frame timesteps. Defaults are SkyReelsV2DiffusionForcingPipeline's
    # (544x960, 97 frames, 50 steps, guidance 6, fps 24, 512 tokens; flow_shift 8 for T2V per its docstring); the
    # long-shot window/overlap are its base_num_frames 97 (540P) and the recommended overlap_history 17. Only DF
    # folders render long shots (render_long refuses a plain SkyReelsV2Pipeline folder).
    "skyreels": Family(
        "skyreels", ("SkyReelsV2DiffusionForcingPipeline", "SkyReelsV2Pipeline"), "reel.models.skyreels",
        "SkyReelsV2Transformer3DModel", "AutoencoderKLWan", _wan_factors, default_fps=24, default_steps=50,
        default_guidance=6.0, default_shift=8.0, default_width=960, default_height=544, default_frames=97,
        default_max_sequence_length=512, hub_example="Skywork/SkyReels-V2-DF-1.3B-540P-Diffusers",
        vae_latent=_wan_latent, limits=_wan_limits,
        single_file_keys=("head.modulation", "patch_embedding.weight", "fps_embedding.weight"),  # Wan's + its own
        long_shots="diffusion-forcing", long_window=97, long_overlap=17,
        long_pipelines=("SkyReelsV2DiffusionForcingPipeline",),
        step_cache=False),
    # HunyuanVideo 1.5: classifier-free guidance (the pipeline's ClassifierFreeGuidance guider, 6.0 in the converted
    # 480p/720p folders, 1.0 in the cfg-distilled ones), 121 frames and 480p 16:9 (848x480, target_size 640) as
    # HunyuanVideo15Pipeline.__call__ defaults them, shift 5 (480p scheduler), 1000 Qwen2.5-VL tokens
    # (tokenizer_max_length). Rotary positions are computed for any size: no limits. diffusers has no
    # from_single_file for its transformer; the keys are the original Tencent checkpoint's (ComfyUI's too).
    "hunyuan15": Family(
        "hunyuan15", ("HunyuanVideo15Pipeline", "HunyuanVideo15ImageToVideoPipeline"), "reel.models.hunyuan15",
        "HunyuanVideo15Transformer3DModel", "AutoencoderKLHunyuanVideo15", _hunyuan15_factors, default_fps=24,
        default_steps=50, default_guidance=6.0, default_shift=5.0, default_width=848, default_height=480,
        default_frames=121, default_max_sequence_length=1000,
        image_pipelines=("HunyuanVideo15ImageToVideoPipeline",),
        hub_example="hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v", vae_latent=_hunyuan15_latent,
        default_scheduler_classes=("FlowMatchEulerDiscreteScheduler",),
        single_file_keys=("double_blocks.0.img_attn_q.weight", "byt5_in.fc1.weight", "vision_in.proj.0.weight"),
        single_file_loader=False, folder_defaults=_hunyuan15_folder_defaults,
        step_cache=False),
    # LTX-2 (picture + sound): LTX2Pipeline.__call__'s defaults (768x512, 121 frames at 24 fps, 30 steps, guidance
    # 3.0, 1024 Gemma tokens); its schedule shifts dynamically (shift unused). Single files: the original Lightricks
    # checkpoint's names (diffusers' CHECKPOINT_KEY_NAMES["ltx2"] and its LoRA converter), prefix stripped.
    "ltx2": Family(
        "ltx2", ("LTX2Pipeline", "LTX2ImageToVideoPipeline"), "reel.models.ltx2", "LTX2VideoTransformer3DModel",
        "AutoencoderKLLTX2Video", _ltx2_factors, default_fps=24, default_steps=30, default_guidance=3.0,
        default_shift=1.0, default_width=768, default_height=512, default_frames=121,
        default_max_sequence_length=1024, image_pipelines=("LTX2ImageToVideoPipeline",),
        hub_example="Lightricks/LTX-2", vae_latent=_ltx2_latent, limits=_ltx_limits, audio=True,
        default_scheduler_classes=("FlowMatchEulerDiscreteScheduler",),
        single_file_keys=("av_ca_a2v_gate_adaln_single.emb.timestep_embedder.linear_1.weight",
                          "audio_patchify_proj.weight", "adaln_single.linear.weight"),  # + one of LTX-1's
        step_cache=False),
}


@dataclass(frozen=True)
class ModelInfo:
    """A resolved model folder and the rules its shots must follow."""

    name: str  # what the spec wrote: "shapes" or the path
    path: Path  # the diffusers folder (model_index.json inside)
    family: Family
    temporal_factor: int  # frames must be temporal_factor*k + 1
    size_multiple: int  # width and height must be multiples of this (VAE factor x patch)
    defaults: dict = field(default_factory=dict)  # width, height, frames, fps, steps, guidance, shift, ...
    builtin: bool = False
    pipeline: str = ""  # model_index.json `_class_name`
    experts: int = 1  # 2 for Wan 2.2 A14B (transformer + transformer_2)
    transformer_config: dict = field(default_factory=dict)  # transformer/config.json
    vae_config: dict = field(default_factory=dict)  # vae/config.json

    @property
    def takes_image(self) -> bool:
        return self.pipeline in self.family.image_pipelines or self.defaults.get("takes_image", False)

    def frames_ok(self, frames: int) -> bool:
        return frames >= 1 and (frames - 1) % self.temporal_factor == 0

    def limit_problems(self, width: int, height: int, frames: int, text_len: int) -> list[tuple[str, str]]:
        """[(key, message)] for what this transformer cannot take beyond the frame rule and the size multiple
        (rotary tables, fixed positional embeddings, text tokens); key: width, height, frames, max_sequence_length.
        A config it cannot read says so under "model"."""
        try:
            return self.family.limits(self, width, height, frames, text_len)
        except (TypeError, ValueError, KeyError, IndexError) as err:
            return [("model", f"{self.path}/transformer/config.json has values reel cannot read ({err!r}) — "
                              "re-download or re-export the model")]

    def scheduler_problem(self, name: str) -> str | None:
        """Why this model cannot sample with scheduler `name` (the spec's or the model's default), or None."""
        if name not in self.family.schedulers:
            return (f"{name!r} is not a scheduler for {self.family.name} models — use one of "
                    f"{', '.join(self.family.schedulers)}")
        if name == "default" and self.family.default_scheduler_classes:
            try:
                cls = json.loads((self.path / "scheduler" / "scheduler_config.json").read_text()).get(
                    "_class_name", self.family.default_scheduler_classes[0])
            except (OSError, ValueError, AttributeError, RecursionError):
                cls = None
            if cls not in self.family.default_scheduler_classes:
                return (f"\"default\" samples with the folder's own scheduler, and {self.path}/scheduler is a "
                        f"{cls or 'unreadable config'}, not {' or '.join(self.family.default_scheduler_classes)} — "
                        "set scheduler = \"euler\" or \"unipc\"")
        return None

    def nearest_frames(self, frames: int) -> list[int]:
        """The valid frame counts around `frames`, nearest first (one or two values)."""
        k = self.temporal_factor
        below = max(1, (frames - 1) // k * k + 1)
        above = below + k if below < frames else below
        return sorted({below, above}, key=lambda f: (abs(f - frames), f))


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path} is missing: the model folder is incomplete") from None
    except (OSError, ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ModelError(f"{path} cannot be read as JSON ({err}); re-download or re-export the model") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} cannot be read as JSON (it holds a {type(data).__name__}, not an object); "
                         "re-download or re-export the model")
    return data


def path_error(err: Exception) -> str:
    """Why a path cannot be stat-ed or opened, in words (OSError or the ValueError of a NUL character)."""
    if getattr(err, "errno", None) == errno.ENAMETOOLONG:
        return "a name in it is longer than the file system allows"
    if isinstance(err, ValueError):
        return "it holds a NUL character" if "null" in str(err) else f"not a valid path: {err}"
    return getattr(err, "strerror", None) or str(err)


def _stat_mode(path: Path) -> tuple[bool, bool]:
    """(exists, is a regular file), symlinks followed; OSError or ValueError when the path itself is unusable."""
    try:
        return True, stat.S_ISREG(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False, False


def _model_folder(ref: str, base_dir: Path | None) -> Path:
    """The folder a spec's `model` path names, checked to be a diffusers folder (ModelError otherwise)."""
    try:
        path = Path(ref).expanduser()
    except RuntimeError:  # ~user of no known user
        path = Path(ref)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        exists, is_file = _stat_mode(path)
        has_index = _stat_mode(path / "model_index.json")[1]
    except (OSError, ValueError) as err:  # a name longer than the file system allows, a NUL character, ...
        raise ModelError(f"{ref[:200]!r} cannot be used as a model path ({path_error(err)}) — name a built-in model "
                         f"({', '.join(sorted(BUILTIN_MODELS))}) or a diffusers folder") from None
    if not exists:
        known = ", ".join(sorted(BUILTIN_MODELS))
        raise ModelError(f"{ref!r} is neither a built-in model ({known}) nor an existing path "
                         f"({path} does not exist)")
    if is_file:
        raise ModelError(f"{path} is a single file: reel loads single-file checkpoints through a model folder "
                         f"— run `reel import-model {path} --base DIFFUSERS_FOLDER --out DIR`")
    if not has_index:
        raise ModelError(
            f"{path} is not a diffusers folder (no model_index.json inside); point `model` at the folder "
            "saved by save_pretrained / downloaded from the hub"
        )
    return path


def supported() -> str:
    return ", ".join(f"{f.name} ({'/'.join(f.pipeline_classes)})" for f in FAMILIES.values())


def family_of(model_index: dict, path: Path) -> Family:
    cls = model_index.get("_class_name", "")
    for fam in FAMILIES.values():
        if cls in fam.pipeline_classes:
            return fam
    raise ModelError(f"{path}/model_index.json names pipeline {cls!r}, which reel does not support; supported: "
                     f"{supported()}")


def resolve_model(ref: str, base_dir: Path | None = None) -> ModelInfo:
    """Resolve a spec's `model` value (a built-in name or a folder path) without loading weights."""
    builtin = ref in BUILTIN_MODELS
    if builtin:
        path = BUILTIN_MODELS[ref]
        if not (path / "model_index.json").is_file():
            raise ModelError(
                f"the built-in model {ref!r} has no weights at {path}; train them with "
                "`python scripts/train_shapes_model.py --stage all` or name a local diffusers folder"
            )
    else:
        path = _model_folder(ref, base_dir)
    index = _read_json(path / "model_index.json")
    fam = family_of(index, path)
    vae_cfg = _read_json(path / "vae" / "config.json")
    tr_cfg = _read_json(path / "transformer" / "config.json")
    try:
        temporal, size_multiple = fam.factors(vae_cfg, tr_cfg)
        experts = 2 if (index.get("transformer_2") or [None])[0] else 1
    except (TypeError, ValueError, KeyError, IndexError) as err:
        raise ModelError(f"{path}: its model_index.json, VAE or transformer config has values reel cannot read "
                         f"({err!r}) — re-download or re-export the model") from None
    if temporal < 1 or size_multiple < 1:
        raise ModelError(f"{path}: its VAE or transformer config gives a compression factor below 1 — re-download or "
                         "re-export the model")
    defaults = {
        "width": fam.default_width, "height": fam.default_height, "frames": fam.default_frames,
        "fps": fam.default_fps, "steps": fam.default_steps, "guidance": fam.default_guidance,
        "shift": fam.default_shift, "max_sequence_length": fam.default_max_sequence_length,
        "negative_prompt": "", "scheduler": fam.default_scheduler,
    }
    if index.get("expand_timesteps"):  # Wan 2.2 TI2V: text or text+image in one model
        defaults["takes_image"] = True
    defaults.update(fam.folder_defaults(path))
    reel_json = path / "reel.json"
    if reel_json.is_file():
        defaults.update(_read_json(reel_json))
    return ModelInfo(name=ref, path=path.resolve(), family=fam, temporal_factor=temporal, size_multiple=size_multiple,
                     defaults=defaults, builtin=builtin, pipeline=index.get("_class_name", ""), experts=experts,
                     transformer_config=tr_cfg, vae_config=vae_cfg)
