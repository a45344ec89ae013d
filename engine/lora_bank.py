"""The LoRA adapter bank: character and preview LoRAs read, converted, checked, loaded once as named peft
adapters and switched per batch (the characters themselves live in engine/cast.py).

    adapters = AdapterBank(transformer, convert=reel.models.wan.lora_to_diffusers)
    adapters.load("hero", Path("hero.safetensors"))          # once per run; raises LoraError if it won't fit
    adapters.activate([("hero", 0.8)])                        # per batch: set_adapters, no reload
    adapters.activate([])                                     # no characters: every adapter disabled

Formats: diffusers/peft (`transformer.` keys, lora_A/lora_B), ComfyUI and lightx2v (`diffusion_model.`
keys, lora_down/lora_up + `.alpha`), kohya / musubi-tuner (`lora_unet_` keys) — converted with diffusers'
own converters. A file made for another model or size is rejected before anything is loaded, naming
the first key that does not fit.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from reel.engine.cast import weight_at
from reel.engine.spec_inputs import lora_format


class LoraError(ValueError):
    """A LoRA file that cannot be used with this model; the message names the file and the cause."""


def read_lora(path: Path) -> dict[str, torch.Tensor]:
    """The raw tensors of a .safetensors LoRA file, with a clear error for missing or corrupt files."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise LoraError(f"{path}: LoRA file not found — check the character's `lora` path")
    try:
        state = load_file(str(path), device="cpu")
    except Exception as err:  # safetensors raises several types for truncated or foreign files
        raise LoraError(f"{path}: not a readable .safetensors file ({err}) — re-download or re-export it") from None
    if not state:
        raise LoraError(f"{path}: holds no tensors — it is not a LoRA")
    return state


def check_fits(transformer: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Every lora_A/lora_B tensor must target a Linear of the transformer with matching sizes."""
    modules = dict(transformer.named_modules())
    n_blocks = len(getattr(transformer, "blocks", []))
    for key, tensor in state.items():
        if not key.startswith("transformer."):
            raise LoraError(f"{path}: key {key!r} is not a transformer LoRA key after conversion — the file is for "
                            "another model family or a text-encoder LoRA")
        for tag in (".lora_A.weight", ".lora_B.weight", ".lora_B.bias"):
            if key.endswith(tag):
                target = key[len("transformer."):-len(tag)]
                break
        else:
            raise LoraError(f"{path}: key {key!r} is not a LoRA weight (expected lora_A/lora_B) — is this a full "
                            "checkpoint rather than a LoRA?")
        module = modules.get(target)
        if module is None:
            cause = "the file is for another model family"
            if target.startswith("blocks.") and int(target.split(".")[1]) >= n_blocks:
                cause = f"the file is for a deeper model (this one has {n_blocks} blocks)"
            raise LoraError(f"{path}: key {key!r} targets {target!r}, which this model does not have — {cause}")
        base = getattr(module, "base_layer", module)
        if not isinstance(base, torch.nn.Linear):
            raise LoraError(f"{path}: key {key!r} targets {target!r}, which is not a Linear layer")
        if tag == ".lora_A.weight" and tensor.shape[1] != base.in_features:
            raise LoraError(f"{path}: key {key!r} has input size {tensor.shape[1]} but {target} takes "
                            f"{base.in_features} — the LoRA was trained for another model size")
        if tag != ".lora_A.weight" and tensor.shape[0] != base.out_features:
            raise LoraError(f"{path}: key {key!r} has output size {tensor.shape[0]} but {target} gives "
                            f"{base.out_features} — the LoRA was trained for another model size")


FUSE_LIMIT_BYTES = 2 * 2**30  # base weights kept aside while adapters are fused


class AdapterBank:
    """The LoRA adapters loaded into one transformer, by name."""

    def __init__(self, transformer: torch.nn.Module, convert: Callable[[dict], dict]):
        self.transformer = transformer
        self.convert = convert  # family-specific: raw state dict -> diffusers keys (`transformer.` prefix)
        self.loaded: dict[str, Path] = {}
        self.formats: dict[str, str] = {}
        self._active: tuple | None = None
        self._saved: list | None = None  # (peft layer, base weight copy) while the active adapters are fused
        self.switches = 0

    def load(self, name: str, path: Path) -> None:
        """Load `path` as adapter `name` (once); check it fits before touching the model."""
        self.unfuse()
        if name in self.loaded:
            if self.loaded[name] != path:
                raise LoraError(f"adapter name {name!r} is used for both {self.loaded[name]} and {path}")
            return
        raw = read_lora(path)
        fmt = lora_format(list(raw))
        if fmt == "unknown":
            raise LoraError(f"{path}: keys look like none of the LoRA formats reel reads (diffusers `transformer.`, "
                            f"ComfyUI `diffusion_model.`, kohya/musubi `lora_unet_`); first key: {next(iter(raw))!r}")
        try:
            state = self.convert(dict(raw))
        except Exception as err:
            raise LoraError(f"{path}: cannot convert this {fmt} LoRA ({type(err).__name__}: {err}) — it is incomplete "
                            "or made for another model") from None
        if not state:
            raise LoraError(f"{path}: no LoRA weights left after conversion — it is not a LoRA for this model")
        check_fits(self.transformer, state, path)
        with warnings.catch_warnings():  # peft warns on every adapter after the first: expected here
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            self.transformer.load_lora_adapter(state, adapter_name=name, prefix="transformer")
        self.loaded[name] = path
        self.formats[name] = fmt
        self._active = None

    def activate(self, adapters: list[tuple[str, float]]) -> None:
        """Make exactly these adapters active with these weights; none: every adapter disabled."""
        key = tuple(adapters)
        if key == self._active:
            return
        self.unfuse()
        if not self.loaded:
            if adapters:
                raise LoraError(f"adapters {[a for a, _ in adapters]} were never loaded")
            return
        if not adapters:
            self.transformer.disable_lora()
        else:
            self.transformer.enable_lora()
            self.transformer.set_adapters([a for a, _ in adapters], weights=[float(w) for _, w in adapters])
        self._active = key
        self.switches += 1

    def fuse(self) -> bool:
        """Merge the active adapters into the base weights: no LoRA matmuls in the steps that follow.

        The base weights of the touched layers are copied aside first and copied back by unfuse() (called by
        the next activate or load), so the base model stays bit-exact however often adapters are fused.
        (diffusers' fuse_lora/unfuse_lora subtract the delta back, which drifts by rounding on every switch.)
        Returns False, leaving the adapters unfused, when a touched weight is not fp16/bf16/fp32 (fp8 storage),
        sits on the meta device (offloaded), or the copies would exceed FUSE_LIMIT_BYTES.
        """
        from peft.tuners.tuners_utils import BaseTunerLayer

        if self._saved is not None:
            return True
        names = [a for a, _ in self._active or ()]
        if not names:
            return False
        layers = [m for m in self.transformer.modules()
                  if isinstance(m, BaseTunerLayer) and any(n in getattr(m, "lora_A", {}) for n in names)]
        weights = [m.get_base_layer().weight for m in layers]
        if not weights or any(w.dtype not in (torch.float32, torch.bfloat16, torch.float16) or w.device.type == "meta"
                              for w in weights):
            return False
        if sum(w.numel() * w.element_size() for w in weights) > FUSE_LIMIT_BYTES:
            return False
        # copies kept in CPU memory (a CUDA model's VRAM is not doubled); copied back by unfuse()
        self._saved = [(m, m.get_base_layer().weight.detach().to("cpu", copy=True)) for m in layers]
        with torch.no_grad():
            for m in layers:
                m.merge(adapter_names=[n for n in names if n in m.lora_A])
        return True

    def unfuse(self) -> None:
        """Undo fuse(): peft's bookkeeping, then the saved base weights copied back exactly."""
        if self._saved is None:
            return
        with torch.no_grad():
            for m, weight in self._saved:
                m.unmerge()
                m.get_base_layer().weight.copy_(weight)
        self._saved = None

    def schedule(self, adapters: tuple, total_steps: int, fuse: bool = True) -> Callable[[int], None] | None:
        """Make `adapters` active for a batch: constant weights are activated and fused into the weights for
        speed (unless `fuse` is False or fuse() declines) and None is returned; weight schedules return the
        per-step hook that sets each step's weights."""
        if all(isinstance(w, (int, float)) for _, w in adapters):
            self.activate([(a, float(w)) for a, w in adapters])
            if fuse:
                self.fuse()
            return None

        def before_step(step: int) -> None:
            self.activate([(a, weight_at(w, step, total_steps)) for a, w in adapters])

        return before_step
