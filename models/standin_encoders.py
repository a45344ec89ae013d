"""Small random stand-ins for the text and image encoders of reel's shipped model configs.

`reel bench` times the denoising transformer and the VAE at real size; the text encoders (a 4.7B T5, an 8B
Llama) run once per prompt, so a random folder carries stand-ins instead: the right class with the REAL
hidden size the transformer reads (so every projection into the transformer has its real shape), but one
layer, a small feed-forward, few heads and a word vocabulary (reel.models.wordtok). They make noise, not
meaning.

    parts = standin_parts(config, shrink=False, device="cuda", dtype=torch.bfloat16, seed=10)
    parts["text_encoder"].save_pretrained(folder / "text_encoder")   # + "tokenizer", "image_encoder", ...

models/random_model.py is the user (build_random_folder).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from reel.models.tiny import TINY_WORDS
from reel.models.wordtok import build_word_tokenizer

TEXT_DIM_KEYS = ("text_dim", "caption_channels", "text_embed_dim")  # Wan, LTX, CogVideoX / HunyuanVideo
LLAMA_SPECIALS = ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
# Llama 3's pre-tokenizer pattern: with every piece of the prompt template in the vocabulary, the template
# head becomes exactly as many tokens as the real Llama 3 tokenizer makes of it (crop_start 95).
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")


@dataclass(frozen=True)
class StandInSize:
    """Width of a stand-in's layers (its hidden size is the model's own)."""

    heads: int
    head_dim: int
    ffn: int


REAL = StandInSize(heads=2, head_dim=64, ffn=256)
SHRUNK = StandInSize(heads=2, head_dim=8, ffn=64)


def text_dim(transformer_config: dict) -> int:
    """The width of the text embeddings the transformer reads."""
    for key in TEXT_DIM_KEYS:
        if transformer_config.get(key):
            return int(transformer_config[key])
    raise ValueError(f"transformer config has none of {', '.join(TEXT_DIM_KEYS)}: cannot size the text encoder "
                     "stand-in; add the text width to the config")


def standin_parts(config: dict, *, shrink: bool, device: str | torch.device, dtype: torch.dtype,
                  seed: int) -> dict[str, object]:
    """Tokenizers and random encoders for a (possibly shrunk) reel model config, keyed by pipeline component name:
    tokenizer, text_encoder, and where the config has them tokenizer_2/text_encoder_2 (HunyuanVideo's CLIP) and
    image_encoder/image_processor (Wan 2.1 I2V). Encoders are built on `device` in `dtype`, seeded."""
    if config["text_encoder"]["_class_name"] == "Qwen2_5_VLTextModel":  # HunyuanVideo 1.5
        return hunyuan15_parts(config, shrink=shrink, device=device, dtype=dtype, seed=seed)
    if config["text_encoder"]["_class_name"] == "Gemma3ForConditionalGeneration":  # LTX-2
        return ltx2_parts(config, shrink=shrink, device=device, dtype=dtype, seed=seed)
    size = SHRUNK if shrink else REAL
    tr = config["transformer"]["config"]
    max_len = int(config["pipeline"].get("max_sequence_length") or config["text_encoder"]["max_sequence_length"])
    torch.manual_seed(seed)
    parts: dict[str, object] = {}
    with torch.device(device):
        cls = config["text_encoder"]["_class_name"]
        if cls in ("UMT5EncoderModel", "T5EncoderModel"):
            parts["tokenizer"] = build_word_tokenizer(TINY_WORDS, model_max_length=max_len)
            parts["text_encoder"] = _t5(cls, len(parts["tokenizer"]), text_dim(tr), size)
        elif cls == "LlamaModel":
            parts["tokenizer"] = llama_like_tokenizer(max_len)
            parts["text_encoder"] = _llama(parts["tokenizer"], text_dim(tr), size, max_len)
        else:
            raise ValueError(f"text_encoder._class_name {cls!r}: no stand-in for it; known: UMT5EncoderModel, "
                             "T5EncoderModel, LlamaModel")
        if "text_encoder_2" in config:
            clip_len = int(config["text_encoder_2"].get("max_sequence_length", 77))
            parts["tokenizer_2"] = build_word_tokenizer(TINY_WORDS, model_max_length=clip_len)
            parts["text_encoder_2"] = _clip_text(len(parts["tokenizer_2"]), int(tr["pooled_projection_dim"]), size,
                                                 clip_len)
        if tr.get("image_dim"):
            parts["image_encoder"], parts["image_processor"] = _clip_vision(config, int(tr["image_dim"]), size, shrink)
    for part in parts.values():
        if isinstance(part, torch.nn.Module):
            part.to(dtype).eval()
    return parts


def describe(parts: dict[str, object]) -> str:
    """One line saying what the stand-ins are (random.json's "text_encoder")."""
    out = []
    for name, part in parts.items():
        if isinstance(part, torch.nn.Module) and hasattr(part.config, "to_json_string"):  # transformers models
            c = part.config.get_text_config()  # (Gemma 3's text tower: the width the transformer reads)
            hidden = getattr(c, "d_model", None) or c.hidden_size
            layers = getattr(c, "num_layers", None) or c.num_hidden_layers
            out.append(f"{name}: {type(part).__name__} hidden {hidden}, {layers} layer(s), "
                       f"{sum(p.numel() for p in part.parameters()):,} params")
    return "stand-in (random, word vocabulary of %d): " % len(parts["tokenizer"]) + "; ".join(out)


def _t5(cls_name: str, vocab: int, hidden: int, size: StandInSize) -> torch.nn.Module:
    import transformers

    config_cls = transformers.UMT5Config if cls_name == "UMT5EncoderModel" else transformers.T5Config
    config = config_cls(vocab_size=vocab, d_model=hidden, d_kv=size.head_dim, d_ff=size.ffn, num_layers=1,
                        num_heads=size.heads, feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
                        relative_attention_max_distance=128, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return getattr(transformers, cls_name)(config)


def _llama(tokenizer, hidden: int, size: StandInSize, max_len: int) -> torch.nn.Module:
    """Two layers: HunyuanVideoPipeline reads the third-from-last hidden state (hidden_states[-3])."""
    from transformers import LlamaConfig, LlamaModel

    ids = tokenizer.convert_tokens_to_ids
    return LlamaModel(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=size.ffn, num_hidden_layers=2,
        num_attention_heads=size.heads, num_key_value_heads=size.heads, head_dim=size.head_dim,
        max_position_embeddings=max(1024, 2 * max_len), pad_token_id=0, bos_token_id=ids("<|begin_of_text|>"),
        eos_token_id=ids("<|eot_id|>")))


def _heads(hidden: int, size: StandInSize) -> int:
    if hidden % size.head_dim:
        raise ValueError(f"CLIP stand-in: hidden size {hidden} is not a multiple of head_dim {size.head_dim}")
    return hidden // size.head_dim


def _clip_text(vocab: int, hidden: int, size: StandInSize, max_len: int) -> torch.nn.Module:
    """HunyuanVideo's second text encoder: only its pooled output (hidden = pooled_projection_dim) is read."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=size.ffn, num_attention_heads=_heads(hidden, size),
        num_hidden_layers=1, max_position_embeddings=max_len, pad_token_id=0, bos_token_id=2, eos_token_id=1,
        projection_dim=hidden))


def _clip_vision(config: dict, hidden: int, size: StandInSize, shrink: bool):
    """Wan 2.1 I2V's image encoder (its second-to-last hidden state is read) and image processor."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    arch = (config.get("image_encoder") or {}).get("architecture", {})
    image_size, patch = (32, 8) if shrink else (int(arch.get("image_size", 224)), int(arch.get("patch_size", 14)))
    # CLIPVisionModel, the type WanImageToVideoPipeline declares and reel loads (the config names the conversion
    # script's CLIPVisionModelWithProjection, whose projection head nothing reads)
    model = CLIPVisionModel(CLIPVisionConfig(hidden_size=hidden, intermediate_size=size.ffn, num_hidden_layers=1,
                                             num_attention_heads=_heads(hidden, size), image_size=image_size,
                                             patch_size=patch))
    processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                   crop_size={"height": image_size, "width": image_size})
    return model, processor


def llama_like_tokenizer(max_len: int):
    """A word-level tokenizer that reads HunyuanVideo's prompt template as Llama 3 does: header and end-of-turn
    markers are single special tokens, a begin-of-text token starts every text, words are Llama 3's pieces
    (byte-level, leading space attached), so the template head is 95 tokens like the real one's."""
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE
    from tokenizers import Regex, Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated"),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    plain = re.sub(r"<\|\w+\|>", "\0", DEFAULT_PROMPT_TEMPLATE["template"].replace("{}", "\0")).split("\0")
    texts = plain + list(TINY_WORDS) + [" " + w for w in TINY_WORDS]
    pieces = [p for text in texts for p, _ in pre.pre_tokenize_str(text)]
    vocab: dict[str, int] = {}
    for token in ("<pad>", "<unk>", *LLAMA_SPECIALS, *pieces):
        vocab.setdefault(token, len(vocab))
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B",
        special_tokens=[("<|begin_of_text|>", vocab["<|begin_of_text|>"])])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                  bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", model_max_length=max_len)
    tok.add_special_tokens({"additional_special_tokens": list(LLAMA_SPECIALS[1:])})
    return tok


def reel_json_extras(config: dict, parts: dict[str, object]) -> dict:
    """What reel.json must add for these stand-ins: HunyuanVideo's crop_start if the Llama stand-in tokenizes the
    template head to another length than diffusers' default (it does not: {} then)."""
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE

    if config["text_encoder"]["_class_name"] != "LlamaModel":
        return {}
    crop = template_crop_start(parts["tokenizer"])
    return {} if crop == DEFAULT_PROMPT_TEMPLATE["crop_start"] else {"prompt_template": {"crop_start": crop}}


def template_crop_start(tokenizer) -> int:
    """How many tokens come before the prompt in HunyuanVideo's default template, with this tokenizer."""
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE

    return len(tokenizer(DEFAULT_PROMPT_TEMPLATE["template"].split("{}")[0]).input_ids)


# -- HunyuanVideo 1.5 (models/hunyuan15.py): Qwen2.5-VL text tower, Glyph-ByT5, SigLIP -------------------------
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# Qwen2.5-VL's chat template, for messages whose content is a string (all HunyuanVideo15Pipeline sends)
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% endif %}")


def qwen_like_tokenizer(max_len: int, words=TINY_WORDS):
    """A word-level tokenizer that reads HunyuanVideo15Pipeline's chat prompt as Qwen2.5-VL's does: the chat markers
    are single special tokens, pieces are Qwen2's pre-tokenizer's (byte-level, leading space attached), no BOS, pads
    on the right, with Qwen2.5-VL's chat template; every piece of the pipeline's system message is in the vocabulary,
    so the chat head before the prompt is 108 tokens like the real one's (the pipeline's crop_start)."""
    from diffusers.pipelines.hunyuan_video1_5.pipeline_hunyuan_video1_5 import HunyuanVideo15Pipeline
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    system = HunyuanVideo15Pipeline._get_mllm_prompt_embeds.__defaults__[2]  # the pipeline's system message
    pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated"),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    texts = ["system\n" + system, "\n", "user\n", "assistant\n", " ", *words, *(" " + w for w in words)]
    vocab: dict[str, int] = {}
    for token in ("<unk>", *QWEN_SPECIALS, *(p for text in texts for p, _ in pre.pre_tokenize_str(text))):
        vocab.setdefault(token, len(vocab))
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre
    backend.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<|endoftext|>", unk_token="<unk>",
                                  eos_token="<|im_end|>", model_max_length=max_len, padding_side="right")
    tok.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIALS[1:])})
    tok.chat_template = QWEN_CHAT_TEMPLATE
    return tok


def _qwen_text(tokenizer, hidden: int, size: StandInSize) -> torch.nn.Module:
    """Two layers: HunyuanVideo15Pipeline reads the third-from-last hidden state (hidden_states[-3]); Qwen2.5-VL's
    multimodal rotary sections scaled to the stand-in's head size (Qwen2.5-VL-7B: [16, 24, 24] of 64)."""
    from transformers import Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel

    heads, half = hidden // size.head_dim, size.head_dim // 2
    section = [half // 4, (half - half // 4) // 2, half - half // 4 - (half - half // 4) // 2]
    return Qwen2_5_VLTextModel(Qwen2_5_VLTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=size.ffn, num_hidden_layers=2,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
        rope_scaling={"type": "mrope", "rope_type": "default", "mrope_section": section}))


def _byt5(hidden: int, size: StandInSize):
    """The glyph encoder: a real ByT5 tokenizer (bytes, no vocabulary file) and a one-layer T5 encoder stand-in."""
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    tokenizer = ByT5Tokenizer()
    model = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=hidden, d_kv=size.head_dim, d_ff=size.ffn,
                                    num_layers=1, num_heads=size.heads, feed_forward_proj="gated-gelu",
                                    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    return tokenizer, model


def _siglip(hidden: int, size: StandInSize, shrink: bool):
    """The I2V image encoder: SigLIP at 384 px, patch 14 (729 tokens, what the real so400m gives); 28 px shrunk."""
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    image_size = 28 if shrink else 384
    model = SiglipVisionModel(SiglipVisionConfig(hidden_size=hidden, intermediate_size=size.ffn, num_hidden_layers=1,
                                                 num_attention_heads=_heads(hidden, size), image_size=image_size,
                                                 patch_size=14))
    return model, SiglipImageProcessor(size={"height": image_size, "width": image_size})


def hunyuan15_parts(config: dict, *, shrink: bool, device, dtype: torch.dtype, seed: int) -> dict[str, object]:
    """HunyuanVideo 1.5's pipeline components besides the transformer, VAE and scheduler: the Qwen2.5-VL stand-in
    (width text_embed_dim), the ByT5 stand-in (text_embed_2_dim), the SigLIP stand-in for image-to-video configs
    (image_embed_dim), and the classifier-free guider the pipeline takes (the config's guidance)."""
    from diffusers import ClassifierFreeGuidance

    size = SHRUNK if shrink else REAL
    tr = config["transformer"]["config"]
    max_len = int(config["pipeline"].get("max_sequence_length") or config["text_encoder"]["max_sequence_length"])
    torch.manual_seed(seed)
    parts: dict[str, object] = {"tokenizer": qwen_like_tokenizer(max_len)}
    with torch.device(device):
        parts["text_encoder"] = _qwen_text(parts["tokenizer"], int(tr["text_embed_dim"]), size)
        parts["tokenizer_2"], parts["text_encoder_2"] = _byt5(int(tr["text_embed_2_dim"]), size)
        if "image_encoder" in config:
            parts["image_encoder"], parts["feature_extractor"] = _siglip(int(tr["image_embed_dim"]), size, shrink)
    for part in parts.values():
        if isinstance(part, torch.nn.Module):
            part.to(dtype).eval()
    parts["guider"] = ClassifierFreeGuidance(guidance_scale=float(config["pipeline"].get("guidance", 6.0)))
    return parts


# -- LTX-2 (models/ltx2.py): Gemma 3, its text connectors, the audio VAE and vocoder ---------------------------
def ltx2_parts(config: dict, *, shrink: bool, device, dtype: torch.dtype, seed: int) -> dict[str, object]:
    """LTX-2's pipeline components besides the transformer, VAE and scheduler: a 2-layer Gemma 3 stand-in with the
    real width (caption_channels), the connectors sized for it (text_proj_in_factor = its layers + 1; real widths
    unless shrunk), and the config's audio VAE and vocoder (real size; a shrunk vocoder when shrinking)."""
    import diffusers
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2 import vocoder as vocoders
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    size = SHRUNK if shrink else REAL
    hidden = int(config["transformer"]["config"]["caption_channels"])
    max_len = int(config["pipeline"].get("max_sequence_length") or config["text_encoder"]["max_sequence_length"])
    torch.manual_seed(seed)
    tok = build_word_tokenizer(TINY_WORDS, model_max_length=max_len)
    last = len(tok) - 1  # image tokens are never used
    parts: dict[str, object] = {"tokenizer": tok}
    connectors = dict(config["connectors"]["config"], caption_channels=hidden, text_proj_in_factor=3)
    if shrink:
        connectors.update(video_connector_num_attention_heads=hidden // 8, video_connector_attention_head_dim=8,
                          audio_connector_num_attention_heads=hidden // 8, audio_connector_attention_head_dim=8,
                          video_connector_num_learnable_registers=8, audio_connector_num_learnable_registers=8,
                          video_connector_num_layers=1, audio_connector_num_layers=1)
    vocoder = dict(config["vocoder"]["config"])
    if shrink:
        vocoder.update(hidden_channels=32, resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]])
    with torch.device(device):
        parts["text_encoder"] = Gemma3ForConditionalGeneration(Gemma3Config(
            text_config=dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=size.ffn, num_hidden_layers=2,
                             num_attention_heads=size.heads, num_key_value_heads=1, head_dim=size.head_dim,
                             max_position_embeddings=max(1024, max_len), pad_token_id=0, eos_token_id=1,
                             bos_token_id=1),
            vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                               image_size=28, patch_size=14),
            mm_tokens_per_image=4, image_token_index=last, boi_token_index=last, eoi_token_index=last))
        parts["connectors"] = LTX2TextConnectors(**connectors)
        parts["audio_vae"] = getattr(diffusers, config["audio_vae"]["_class_name"])(**config["audio_vae"]["config"])
        parts["vocoder"] = getattr(vocoders, config["vocoder"]["_class_name"])(**vocoder)
    for part in parts.values():
        if isinstance(part, torch.nn.Module):
            part.to(dtype).eval()
    parts["audio_vae"].to(torch.float32)
    parts["vocoder"].to(torch.float32)
    return parts
