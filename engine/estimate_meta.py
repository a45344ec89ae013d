"""Measure a diffusers model's cost on the meta device: FLOPs and peak live activation bytes, no weights.

    cost = measure_transformer(entry, "wan", latent=(21, 60, 104), batch=2, text_len=512)  # (F', H', W')
    cost.flops, cost.peak_bytes, cost.params

The model is built from its config under `torch.device("meta")` (shapes only, no memory, no data), then
one forward runs under torch's FlopCounterMode (matmuls, convolutions, attention) and `LiveBytes`, a
dispatch mode that adds each new tensor storage's bytes and subtracts them when the storage dies
(weakref.finalize). Attention is routed to the fused SDPA kernels (flash / memory-efficient) as on a
GPU, so the N x N score matrix of the math fallback is neither stored nor counted. Used by engine.estimate.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from reel.models.common import meta_tensor



@dataclass(frozen=True)
class MetaCost:
    """What one meta-device run cost: FLOPs, peak bytes of live tensors, parameters of the module."""

    flops: float  # floating point operations (a multiply-add counts 2)
    peak_bytes: int  # peak bytes of live activations (weights not included)
    params: int  # parameters of the module


class LiveBytes(TorchDispatchMode):
    """Track live tensor bytes: +nbytes when an op creates a storage, -nbytes when that storage dies.

    Storages of `ignore` (the weights) and views of them are never counted."""

    def __init__(self, ignore=()):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()
        self._keep = [t.untyped_storage() for t in ignore]  # held, so their ids stay theirs
        self._ignore = {id(s) for s in self._keep}

    def _free(self, key: int, nbytes: int) -> None:
        self._seen.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t._is_view():
                continue
            storage = t.untyped_storage()  # in-place results and aliases share their base's storage
            key = id(storage)
            if key in self._seen or key in self._ignore:
                continue
            nbytes = storage.nbytes()
            self._seen.add(key)
            self.live += nbytes
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._free, key, nbytes)
        return out


class FusedAttention(TorchFunctionMode):
    """Run F.scaled_dot_product_attention as the fused kernels a GPU uses (O(N) memory, same FLOPs)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
        opts = dict(zip(names, args)) | kwargs
        q, k, v = opts["query"], opts["key"], opts["value"]  # (B, H, Lq, D), (B, Hk, Lk, D), (B, Hk, Lk, Dv)
        if k.shape[-3] != q.shape[-3]:  # grouped-query attention: repeat the key/value heads
            rep = q.shape[-3] // k.shape[-3]
            k, v = k.repeat_interleave(rep, dim=-3), v.repeat_interleave(rep, dim=-3)
        mask, causal, scale = opts.get("attn_mask"), bool(opts.get("is_causal", False)), opts.get("scale")
        if mask is None and q.dtype in (torch.float16, torch.bfloat16):
            return torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, causal, False, scale=scale)[0]
        if mask is not None and mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, float("-inf"))
        if mask is not None:
            mask = mask.expand(*q.shape[:-1], k.shape[-2])  # (B, H, Lq, Lk) view
        return torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, mask, False, 0.0, causal,
                                                                      scale=scale)[0]


class AllTrueMasks(TorchDispatchMode):
    """Boolean-mask indexing on the meta device, as if every mask were all true (no padding tokens).

    Meta tensors hold no data, so `x[mask]` cannot know its length (diffusers' HunyuanVideo 1.5 gathers its valid
    text and image tokens this way). Here `x[mask]` keeps every row and `x[~mask]` none: the sequence the
    attention sees has the same length either way (valid tokens first, then the rest), so FLOPs and memory do
    not depend on the masks' contents. A boolean read for a branch (`if torch.all(...)`) is True, for the same
    reason: in HunyuanVideo 1.5 both sides of its text-or-image branch keep the same tokens."""

    def __init__(self):
        super().__init__()
        self._inverted: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.ops.aten.bitwise_not.default, torch.ops.aten.logical_not.default) \
                and args[0].device.type == "meta" and args[0].dtype == torch.bool:
            out = func(*args, **kwargs)
            if id(args[0]) not in self._inverted:
                self._inverted.add(id(out))
                weakref.finalize(out, self._inverted.discard, id(out))
            return out
        if func is torch.ops.aten._local_scalar_dense.default and args[0].device.type == "meta" \
                and args[0].dtype == torch.bool:
            return True  # a data-dependent branch (`if torch.all(image_embeds == 0)`): either side costs the same
        if func is torch.ops.aten.index.Tensor and args[0].device.type == "meta":
            x, indices = args[0], args[1]
            if len(indices) == 1 and indices[0] is not None and indices[0].dtype == torch.bool:
                mask = indices[0]
                rows = 0 if id(mask) in self._inverted else mask.numel()
                return torch.empty((rows, *x.shape[mask.ndim:]), dtype=x.dtype, device="meta")
        return func(*args, **kwargs)


def run_on_meta(fn, module: torch.nn.Module) -> tuple[float, int]:
    """(flops, peak live bytes) of `fn()` with fused attention, under no_grad; the module's weights are not
    counted as activations. Make the inputs inside fn so that they are counted."""
    weights = [*module.parameters(), *module.buffers()]
    flops, live = FlopCounterMode(display=False), LiveBytes(ignore=weights)
    with torch.no_grad(), flops, live, AllTrueMasks(), FusedAttention():
        result = fn()
        del result
    return float(flops.get_total_flops()), int(live.peak)


def build(class_name: str, config: dict, dtype: torch.dtype) -> torch.nn.Module:
    """A diffusers model from its config on the meta device (no memory, no weights)."""
    import diffusers

    cls = getattr(diffusers, class_name, None)
    if cls is None:
        raise ValueError(f"diffusers {diffusers.__version__} has no class {class_name!r}; update diffusers or fix "
                         "the config's _class_name")
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    with torch.device("meta"):
        model = cls.from_config(config)
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or ())  # as from_pretrained(torch_dtype=...) does
    for name, module in model.named_modules():
        fp32 = bool(keep & set(name.split(".")))
        for p in module.parameters(recurse=False):
            p.data = p.data.to(torch.float32 if fp32 else dtype)
    return model.eval()


def param_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def vae_factors(class_name: str, config: dict) -> tuple[int, int, int]:
    """(temporal factor, spatial factor, latent channels) of a video VAE config (the family's registry entry)."""
    from reel.models.registry import FAMILIES

    for family in FAMILIES.values():
        if family.vae_class == class_name and family.vae_latent is not None:
            return family.vae_latent(config)
    raise ValueError(f"unknown video VAE class {class_name!r}; known: "
                     f"{', '.join(f.vae_class for f in FAMILIES.values())}")


def transformer_inputs(family: str, cfg: dict, batch: int, latent: tuple[int, int, int], text_len: int,
                       expand_timesteps: bool = False) -> dict:
    """Forward kwargs of the family's transformer for `batch` sequences of latent (F', H', W'), on meta
    (the family module's meta_inputs)."""
    from reel.models.family import family_module
    from reel.models.registry import FAMILIES

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    return family_module(FAMILIES[family]).meta_inputs(cfg, batch=batch, latent=latent, text_len=text_len,
                                                       expand_timesteps=expand_timesteps)


def measure_transformer(entry: dict, family: str, latent: tuple[int, int, int], batch: int, text_len: int,
                        expand_timesteps: bool = False, dtype: torch.dtype = torch.bfloat16) -> MetaCost:
    """One forward of the transformer described by entry {"_class_name", "config"} at `batch` x latent (F', H', W')."""
    model = build(entry["_class_name"], entry["config"], dtype)
    cfg = dict(model.config)

    def forward():
        kw = transformer_inputs(family, cfg, batch, latent, text_len, expand_timesteps)
        return model(**kw, return_dict=False)[0]

    flops, peak = run_on_meta(forward, model)
    return MetaCost(flops, peak, param_count(model))


def measure_vae_decode(entry: dict, latent: tuple[int, int, int], batch: int = 1, tiled: bool = False,
                       dtype: torch.dtype = torch.float32) -> MetaCost:
    """One `vae.decode` of latents (batch, C, F', H', W') as diffusers runs it (frame-wise / tiled where it does).

    A tiled decode's peak is one tile's work plus the decoded tiles and their blended copy, so it is measured
    on a few latent frames and at most 2 x 2 tiles, and the bytes of the output left out (twice) are added;
    its FLOPs are scaled by the latent volume (overlap makes the real count a little higher)."""
    model = build(entry["_class_name"], entry["config"], dtype)
    t, s, channels = vae_factors(entry["_class_name"], entry["config"])
    f, h, w = latent
    run = latent
    if tiled:
        model.enable_tiling()
        stride = int(getattr(model, "tile_sample_stride_height", 192)) // s  # latent pixels between tiles
        run = (min(f, 2 if entry["_class_name"] == "AutoencoderKLWan" else 5), min(h, 2 * stride), min(w, 2 * stride))

    def decode():
        z = meta_tensor(batch, channels, *run, dtype=dtype)  # (B, C, F', H', W')
        if entry["config"].get("timestep_conditioning"):  # LTX 0.9.1+: the decoder takes the decode timestep
            return model.decode(z, temb=meta_tensor(batch, dtype=dtype), return_dict=False)[0]  # (B, 3, F, H, W)
        return model.decode(z, return_dict=False)[0]  # (B, 3, F, H, W)

    flops, peak = run_on_meta(decode, model)
    if run != latent:
        def out_bytes(lf: int, lh: int, lw: int) -> int:  # the decoded pixels of a latent (F', H', W')
            return batch * 3 * ((lf - 1) * t + 1) * lh * s * lw * s * (torch.finfo(dtype).bits // 8)

        peak += 2 * (out_bytes(*latent) - out_bytes(*run))
        flops *= (f * h * w) / (run[0] * run[1] * run[2])
    return MetaCost(flops, peak, param_count(model))
