"""The `[speed]` section of a film spec: what it may say, validated, and the frozen settings a render uses.
Torch-free (the spec and the plan import it); engine/accel.py applies the settings.

    speed = SpeedConfig(step_cache=0.05, cfg_skip_last=0.25, attention="auto", threads=2)

From the spec's `[speed]` table or the CLI (flags win):
    step_cache      First-Block-Cache threshold (diffusers' hook): reuse the blocks' residual when the first
                    block's output barely changed since the last computed step (0.05-0.1 typical; off by default)
                    — that comparison is read on the host every step: the one device sync left in the loop
    cfg_skip_last   fraction of the final steps that skip the unconditional pass (guidance off there)
    attention       auto | sdpa | cudnn | flash-attn | flash3 | xformers | sageattention (kernels/attention.py).
                    auto: sdpa, unless a GPU measurement in engine/measured_speedups.json shows another
                    backend faster on this GPU (engine/measured.py); sageattention (8-bit QK) only by name
    compile         auto | off | regional | full | cuda-graphs (kernels/regional_compile.py, removable hooks):
                    regional compiles each repeated block once (one graph shared by a model's blocks; not with
                    weights = "fp8", refused together on CUDA), full the whole
                    transformer, cuda-graphs the whole transformer with CUDA graphs (CUDA only; small,
                    launch-bound models). The first call compiles (slow; compile_seconds() reports it). auto: off on
                    the CPU; on CUDA the mode a GPU measurement shows faster, else off. true = regional,
                    false = off (older specs)
    fp8_matmul      false | true: the linear layers of the transformer's blocks as fp8 matmuls (per-row weight
                    and per-token activation scales; kernels/fp8_linear.py). Lossy (about 1 % relative error
                    on a tiny Wan model), so auto never turns it on; CUDA with compute capability >= 8.9, or
                    the CPU (slow: for checking the numbers only)
    threads         CPU threads for torch (default: torch's own choice)
    offload         auto | none | model | group: keep weights on the CPU and move them in per model or per block
    vae_tiling      auto | true | false: decode in spatial tiles (bounded VRAM, whole clip at once)
    weights         auto | bf16 | fp16 | fp8: transformer weight storage on CUDA (fp8: layerwise casting,
                    computed in bf16). On the CPU, "bf16" runs the transformer and text encoder in bf16 and
                    the VAE decode under bf16 autocast (fast on CPUs with AVX512-BF16/AMX; changes pixels
                    slightly: ~50 dB against fp32 on the built-in model); the scheduler math stays fp32. "auto"
                    (CUDA only) asks the estimator (engine/estimate.py) for the
                    film's peak VRAM and turns on the first of tiling, fp8, model offload, group offload that
                    fits in the free memory; on the CPU nothing changes.
    fused_kernels   auto | on | off: Triton RMSNorm, rotary and adaLN kernels (CUDA with triton). auto leaves them
                    off until a GPU measurement in engine/measured_speedups.json shows them faster than
                    diffusers' ops on this GPU (the one on record, an H200, shows them slower); on uses them, or
                    fails with every reason they cannot run
    cpu_fast_paths  auto | on | off: the same math vectorised where diffusers' is not (Wan: the VAE's channel norms
                    as hooks, kernels/channel_norm.py; the self-attention's rotary as a processor, kernels/wan_cpu.py).
                    auto uses them for CPU renders (measured faster there; no GPU has measured them), on on any
                    device (or fails for a family they do not cover), off renders with diffusers' own modules
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

COMPILE_MODES = ("auto", "off", "regional", "full", "cuda-graphs")


def compile_mode(value) -> str:
    """A `compile` setting as one of COMPILE_MODES; true/false from older specs mean regional/off."""
    if isinstance(value, bool):
        return "regional" if value else "off"
    if isinstance(value, str) and value in COMPILE_MODES:
        return value
    raise ValueError(f"compile must be one of {', '.join(COMPILE_MODES)} (or true = regional, false = off)")


class SpeedSection(BaseModel):
    """The `[speed]` table of a film spec (validated, strict)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    step_cache: float | None = Field(None, gt=0.0, le=1.0)
    cfg_skip_last: float = Field(0.0, ge=0.0, le=1.0)
    attention: str = "auto"
    compile: str = "auto"
    fp8_matmul: bool = False
    threads: int | None = Field(None, ge=1, le=512)
    offload: Literal["auto", "none", "model", "group"] = "auto"
    vae_tiling: bool | Literal["auto"] = "auto"
    weights: Literal["auto", "bf16", "fp16", "fp8"] = "auto"
    fused_kernels: Literal["auto", "on", "off"] = "auto"
    cpu_fast_paths: Literal["auto", "on", "off"] = "auto"

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_mode(cls, value):
        return compile_mode(value)


@dataclass(frozen=True)
class SpeedConfig:
    step_cache: float | None = None
    cfg_skip_last: float = 0.0
    attention: str = "auto"
    compile: str = "auto"  # auto | off | regional | full | cuda-graphs (true/false: regional/off)
    fp8_matmul: bool = False  # lossy fp8 matmuls in the transformer's blocks: only when asked for
    threads: int | None = None
    offload: str = "auto"
    vae_tiling: bool | str = "auto"
    weights: str = "auto"
    fused_kernels: str = "auto"  # Triton RMSNorm/rotary/adaLN (kernels/): auto = off until measured faster
    cpu_fast_paths: str = "auto"  # vectorised VAE norms and rotary (kernels/): auto = on for CPU renders

    def __post_init__(self):
        try:
            object.__setattr__(self, "compile", compile_mode(self.compile))  # old callers pass True/False
        except ValueError as err:
            raise ValueError(f"{err}, got {self.compile!r}") from None
