"""The paths `reel bench` times: each a set of `[speed]` settings on top of the default, named as the table rows name
them. A path that cannot run on this machine is reported with every reason (the speed-up's own validate()), not
run. Lossy paths change pixels on purpose; their loss against diffusers is reported beside their speed, and `auto`
never turns them on.

    BENCH_PATHS["fp8-matmul"].speed      # {"fp8_matmul": True}
    paths_from_option("default,compile-regional")   # -> [BenchPath, ...]; "all" for every path
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class BenchPath:
    name: str
    speed: dict = field(default_factory=dict)  # [speed] settings on top of the defaults
    lossy: bool = False  # changes pixels beyond rounding (reported with its PSNR; never chosen by auto)
    setting: str | None = None  # the measured table's setting this path stands for (auto reads those rows)
    value: object = None  # the setting's value on this path
    about: str = ""


# The plain path: every CUDA speed-up that `auto` may turn on is off. Each setting's path differs from it in that
# setting alone, so a recorded row compares exactly one change (its other_settings are these).
PLAIN = {"attention": "sdpa", "fused_kernels": "off", "compile": "off"}


def _path(name: str, change: dict, about: str, setting: str | None = None, lossy: bool = False) -> BenchPath:
    value = change[setting] if setting else None
    return BenchPath(name, PLAIN | change, lossy, setting, value, about)


_ALL = (
    BenchPath("default", {}, about="reel's defaults (auto settings)"),
    BenchPath("plain", dict(PLAIN), about="SDPA, no fused kernels, no compile: the baseline of the measured rows"),
    _path("cudnn", {"attention": "cudnn"}, "SDPA's cuDNN attention", "attention"),
    _path("flash3", {"attention": "flash3"}, "FlashAttention-3", "attention"),
    _path("flash-attn", {"attention": "flash-attn"}, "FlashAttention-2", "attention"),
    _path("sageattention", {"attention": "sageattention"}, "SageAttention (8-bit QK)", "attention", lossy=True),
    _path("fused-kernels", {"fused_kernels": "on"}, "reel's Triton RMSNorm, rotary and adaLN kernels",
          "fused_kernels"),
    _path("compile-regional", {"compile": "regional"}, "torch.compile of each repeated block, compiled once",
          "compile"),
    _path("compile-full", {"compile": "full"}, "torch.compile of the whole transformer", "compile"),
    _path("cuda-graphs", {"compile": "cuda-graphs"}, "torch.compile mode reduce-overhead (CUDA graphs)", "compile"),
    _path("fp8-matmul", {"fp8_matmul": True}, "fp8 matmuls (torch._scaled_mm, row-wise scales)", "fp8_matmul",
          lossy=True),
    _path("fp8-weights", {"weights": "fp8"}, "fp8 weight storage, bf16 compute (layerwise casting)", "weights",
          lossy=True),
    _path("step-cache", {"step_cache": 0.05}, "First-Block-Cache, threshold 0.05", lossy=True),
    _path("lossy", {"attention": "sageattention", "fp8_matmul": True, "compile": "regional"},
          "every lossy speed-up together: SageAttention, fp8 matmuls, regional compile", lossy=True),
)
BENCH_PATHS: dict[str, BenchPath] = {p.name: p for p in _ALL}
DEFAULT_PATHS = ("default", "plain", "cudnn", "flash3", "sageattention", "fused-kernels", "compile-regional",
                 "cuda-graphs", "fp8-matmul", "lossy")


def paths_from_option(value: str) -> list[BenchPath]:
    """`--paths`: comma-separated names, or "all"; unknown names fail with the list of known ones."""
    names = list(BENCH_PATHS) if value.strip() == "all" else [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCH_PATHS]
    if unknown or not names:
        raise ValueError(f"--paths {value!r}: unknown path(s) {', '.join(unknown) or '(none given)'} — use all or "
                         f"some of {', '.join(BENCH_PATHS)}")
    return [BENCH_PATHS[n] for n in dict.fromkeys(names)]
