"""Upscale frames and videos: any super-resolution model spandrel loads, or Lanczos, in bounded memory.

    up = load_upscaler("x2")                          # built-in: models/shapes/upscalers/x2.safetensors
    up = load_upscaler("/models/4x-UltraSharp.pth", device="cuda")   # ESRGAN, Compact, SwinIR, ...
    up = load_upscaler("lanczos4")                    # no model: PIL Lanczos
    big = up.upscale(frames)                          # (N, H, W, 3) uint8 -> (N, H*s, W*s, 3) uint8
    upscale_video(Path("in.mp4"), Path("out.mp4"), up)   # streamed chunk by chunk, same fps

Models run one frame at a time, in tiles of `tile` LR pixels (overlap included) when the frame is
bigger than a tile and the model's `tiling` metadata allows it. Tiles are cut with `overlap` pixels of
context on each side and cropped back to their cores, so a convolutional model whose receptive field
fits in the overlap gives the same pixels tiled as untiled. Size requirements (minimum, multiple_of,
square) are met by padding each tile and cropping the result (spandrel's own descriptor call).
Precision: fp16 on CUDA if the architecture supports it (else bf16 if supported, else fp32); fp32 on CPU.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from reel.models.registry import SHAPES_DIR

BUILTIN_UPSCALERS: dict[str, Path] = {"x2": SHAPES_DIR / "upscalers" / "x2.safetensors"}
LANCZOS: dict[str, int] = {"lanczos2": 2, "lanczos4": 4}
MODEL_SUFFIXES = (".pth", ".safetensors", ".pt", ".ckpt")
TILE = 256  # LR pixels per tile side, overlap included
OVERLAP = 16  # LR pixels of context on each side of a tile's core
# swscale's default YUV -> RGB rounding darkens decoded frames by ~1.2 levels; accurate rounding does not.
from reel.engine.post.encode import DECODE_PARAMS  # noqa: E402  (re-exported: the decode settings reel uses)
CHOICES = "'x2' (built-in), 'lanczos2', 'lanczos4' or the path of a .pth/.safetensors model file spandrel loads"


class UpscaleError(ValueError):
    """An upscaler or input that cannot be used; the message names the file and the fix."""


# ---- spandrel -----------------------------------------------------------------------------------
def import_spandrel() -> types.ModuleType:
    """Import spandrel; if torchvision is absent, stand in for the two helpers only LaMa and RestoreFormer use.

    spandrel imports every architecture eagerly, and two non-SR ones (inpainting, face restoration)
    import torchvision, which has no CPU wheel matching our torch on PyPI. The stand-ins raise if
    called and are removed from sys.modules again, so nobody else mistakes them for torchvision.
    """
    if "spandrel" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        try:
            import spandrel
        except RuntimeError as exc:  # e.g. "operator torchvision::nms does not exist"
            raise ImportError(f"torchvision does not match torch {torch.__version__} ({exc}) — install the "
                              f"torchvision build made for this torch, or uninstall torchvision") from exc
        return spandrel

    def missing(*args, **kwargs):
        raise ImportError("this spandrel architecture needs torchvision — pip install torchvision matching your torch")

    functional = types.ModuleType("torchvision.transforms.functional")
    functional.InterpolationMode = types.SimpleNamespace(NEAREST=0, BILINEAR=2, BICUBIC=3)
    functional.rotate = functional.normalize = missing
    transforms = types.ModuleType("torchvision.transforms")
    transforms.functional = functional
    root = types.ModuleType("torchvision")
    root.transforms = transforms
    stubs = {"torchvision": root, "torchvision.transforms": transforms, "torchvision.transforms.functional": functional}
    sys.modules.update(stubs)
    try:
        import spandrel
    finally:
        for name in stubs:
            sys.modules.pop(name, None)
    return spandrel


# ---- upscalers ----------------------------------------------------------------------------------
class Upscaler:
    """Maps (N, H, W, 3) uint8 frames to (N, H*scale, W*scale, 3) uint8, one frame at a time."""

    scale: int
    name: str

    def upscale(self, frames: np.ndarray) -> np.ndarray:
        """Upscale `frames` (N, H, W, 3) uint8; returns (N, H*scale, W*scale, 3) uint8."""
        if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
            got = f"{frames.shape} {frames.dtype}" if isinstance(frames, np.ndarray) else type(frames).__name__
            raise ValueError(f"upscale expects (N, H, W, 3) uint8 frames, got {got}")
        n, h, w, _ = frames.shape
        out = np.empty((n, h * self.scale, w * self.scale, 3), dtype=np.uint8)  # (N, H*s, W*s, 3)
        for i in range(n):
            out[i] = self.upscale_frame(frames[i])
        return out

    def upscale_frame(self, frame: np.ndarray) -> np.ndarray:
        """One frame: (H, W, 3) uint8 -> (H*scale, W*scale, 3) uint8."""
        raise NotImplementedError

    def describe(self) -> dict:
        """What a manifest records about this upscaler."""
        return {"upscaler": self.name, "scale": self.scale}


class LanczosUpscaler(Upscaler):
    """PIL Lanczos resampling: the fallback that needs no model."""

    def __init__(self, scale: int):
        self.scale = scale
        self.name = f"lanczos{scale}"

    def upscale_frame(self, frame: np.ndarray) -> np.ndarray:
        from PIL import Image

        h, w = frame.shape[:2]
        img = Image.fromarray(frame).resize((w * self.scale, h * self.scale), Image.LANCZOS)
        return np.asarray(img)  # (H*s, W*s, 3)


class ModelUpscaler(Upscaler):
    """A spandrel ImageModelDescriptor (purpose "SR") run tile by tile on `device` in `dtype`."""

    def __init__(self, descriptor, name: str, device: torch.device, dtype: torch.dtype,
                 tile: int = TILE, overlap: int = OVERLAP):
        from spandrel import ModelTiling

        if overlap < 0 or tile < 1:
            raise ValueError(f"tile={tile}, overlap={overlap}: use a positive tile and an overlap >= 0")
        self.descriptor = descriptor.to(device).to(dtype).eval()
        self.name, self.device, self.dtype = name, device, dtype
        self.scale = int(descriptor.scale)
        req = descriptor.size_requirements
        self.whole_frame = descriptor.tiling in (ModelTiling.INTERNAL, ModelTiling.DISCOURAGED)
        self.tile = max(tile, req.minimum, 2 * overlap + req.multiple_of)
        self.overlap = overlap

    def describe(self) -> dict:
        d = self.descriptor
        return {"upscaler": self.name, "scale": self.scale, "architecture": d.architecture.name,
                "tags": list(d.tags), "dtype": str(self.dtype).removeprefix("torch."), "device": str(self.device),
                "tile": None if self.whole_frame else self.tile, "overlap": self.overlap}

    @torch.inference_mode()
    def upscale_frame(self, frame: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(frame)).to(self.device)  # (H, W, 3) uint8
        x = x.permute(2, 0, 1)[None].to(self.dtype) / 255  # (1, 3, H, W)
        y = self._tiled(x)  # (1, 3, H*s, W*s) in [0, 1]
        y = (y[0].float() * 255).round_().clamp_(0, 255).to(torch.uint8)  # (3, H*s, W*s)
        return y.permute(1, 2, 0).cpu().numpy()  # (H*s, W*s, 3)

    def _tiled(self, x: torch.Tensor) -> torch.Tensor:
        """Run the model over (1, 3, H, W) in overlapping tiles; returns (1, 3, H*s, W*s)."""
        _, _, h, w = x.shape
        if self.whole_frame or (h <= self.tile and w <= self.tile):
            return self.descriptor(x)  # (1, 3, H*s, W*s): pads to size requirements and crops back
        s, o, core = self.scale, self.overlap, self.tile - 2 * self.overlap
        out = x.new_empty((1, 3, h * s, w * s))  # (1, 3, H*s, W*s)
        for y0, y1 in _spans(h, core):
            for x0, x1 in _spans(w, core):
                iy0, iy1, ix0, ix1 = max(0, y0 - o), min(h, y1 + o), max(0, x0 - o), min(w, x1 + o)
                t = self.descriptor(x[:, :, iy0:iy1, ix0:ix1])  # (1, 3, th*s, tw*s)
                dy, dx = (y0 - iy0) * s, (x0 - ix0) * s
                out[:, :, y0 * s:y1 * s, x0 * s:x1 * s] = t[:, :, dy:dy + (y1 - y0) * s, dx:dx + (x1 - x0) * s]
        return out


def _spans(n: int, core: int) -> list[tuple[int, int]]:
    """Split [0, n) into ceil(n / core) nearly equal consecutive spans."""
    k = -(-n // core)
    edges = [round(i * n / k) for i in range(k + 1)]
    return list(zip(edges[:-1], edges[1:]))


# ---- loading ------------------------------------------------------------------------------------
def _model_path(ref: str) -> Path:
    """The model file `ref` names, checked to exist and to have a suffix spandrel reads."""
    if ref in BUILTIN_UPSCALERS:
        path = BUILTIN_UPSCALERS[ref]
        if not path.is_file():
            raise UpscaleError(f"{path}: the built-in {ref} upscaler weights are missing — "
                               f"train them with `.venv/bin/python -m scripts.train_upscaler`, or use 'lanczos2'")
        return path
    try:
        path = Path(ref).expanduser()
    except RuntimeError:  # `~user` of no known user
        raise UpscaleError(f"{ref}: names the home folder of an unknown user — use {CHOICES}") from None
    if not path.exists():
        if re.fullmatch(r"x\d+|lanczos\d+", ref):
            raise UpscaleError(f"{ref}: no such built-in upscaler — use {CHOICES}")
        raise UpscaleError(f"{path}: no such upscaler model file — use {CHOICES}")
    if not path.is_file():
        raise UpscaleError(f"{path}: is a folder, not a model file — use {CHOICES}")
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise UpscaleError(f"{path}: '{path.suffix}' is not a model file type spandrel reads — "
                           f"use one of {', '.join(MODEL_SUFFIXES)}")
    return path


def _pick_dtype(descriptor, device: torch.device) -> torch.dtype:
    """fp16 on CUDA where supported (else bf16 where supported), fp32 everywhere else."""
    if device.type == "cuda":
        if descriptor.supports_half:
            return torch.float16
        if descriptor.supports_bfloat16:
            return torch.bfloat16
    return torch.float32


def load_upscaler(ref: str, device: torch.device | str = "cpu", tile: int = TILE, overlap: int = OVERLAP) -> Upscaler:
    """An upscaler from "x2" (built-in), "lanczos2" / "lanczos4", or a path to a model file spandrel loads.

    Raises UpscaleError naming the file and the fix if the file is missing, unreadable, not an
    architecture spandrel knows, not a 3-channel super-resolution model, or of an unsupported scale.
    """
    # 1. the fallback needs no model
    if ref in LANCZOS:
        return LanczosUpscaler(LANCZOS[ref])
    path = _model_path(ref)
    device = torch.device(device)
    # 2. read the file and let spandrel detect the architecture
    spandrel = import_spandrel()
    try:
        descriptor = spandrel.ModelLoader(device="cpu").load_from_file(path)
    except spandrel.UnsupportedModelError:
        raise UpscaleError(f"{path}: not a model architecture spandrel {spandrel.__version__} knows — "
                           f"use an ESRGAN, Real-ESRGAN, SwinIR, ... super-resolution model file, "
                           f"or 'lanczos2'") from None
    except Exception as exc:  # pickle, safetensors, shape and key errors all mean the same to the user
        raise UpscaleError(f"{path}: could not be read as a model file ({type(exc).__name__}: {str(exc)[:200]}) — "
                           f"it may be truncated or corrupt: download or export it again") from None
    # 3. only 3-channel super-resolution models of an integer scale >= 2
    arch = descriptor.architecture.name
    if not isinstance(descriptor, spandrel.ImageModelDescriptor) or descriptor.purpose != "SR":
        raise UpscaleError(f"{path}: a {arch} {descriptor.purpose} model, not super-resolution — "
                           f"use an SR model (ESRGAN, Real-ESRGAN, SwinIR, ...)")
    if not 2 <= descriptor.scale <= 8:
        raise UpscaleError(f"{path}: {arch} with scale {descriptor.scale} is not supported — "
                           f"use a 2x, 3x, 4x or 8x model")
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise UpscaleError(f"{path}: {arch} maps {descriptor.input_channels} to {descriptor.output_channels} "
                           f"channels; video frames need an RGB (3 -> 3) model")
    # 4. device and precision
    name = ref if ref in BUILTIN_UPSCALERS else str(path)
    return ModelUpscaler(descriptor, name, device, _pick_dtype(descriptor, device), tile=tile, overlap=overlap)


# ---- video --------------------------------------------------------------------------------------
def upscale_video(src: Path, dst: Path, upscaler: Upscaler, chunk_frames: int = 8, metadata: dict | None = None,
                  on_progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Upscale the video at `src` into an H.264 .mp4 at `dst` with the same fps and audio; returns `dst`.

    Frames are decoded, upscaled and encoded `chunk_frames` at a time, so memory does not grow with
    the clip. `on_progress(frames_done, frames_total_or_None)` is called after each chunk. On any
    failure nothing appears at `dst` (VideoWriter renames into place only on success).
    """
    import imageio_ffmpeg

    from reel.engine.post.encode import VideoWriter

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise UpscaleError(f"{src}: no such video file — give the path of an existing video to upscale")
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames={chunk_frames}: use 1 or more")
    # 1. open the input and learn its size and fps
    reader = imageio_ffmpeg.read_frames(str(src), output_params=DECODE_PARAMS)
    try:
        try:
            meta = next(reader)
        except (OSError, RuntimeError, StopIteration, KeyError, ValueError) as exc:
            raise UpscaleError(f"{src}: not a readable video ({str(exc).strip()[:300]}) — "
                               f"give a video file ffmpeg can decode") from None
        w, h = meta["size"]
        fps = float(meta["fps"])
        fps = int(fps) if fps.is_integer() else fps
        total = meta.get("nframes")
        total = int(total) if isinstance(total, (int, float)) and np.isfinite(total) else None
        s = upscaler.scale
        if (w * s) % 2 or (h * s) % 2:
            raise UpscaleError(f"{src}: {w}x{h} upscaled {s}x is {w * s}x{h * s}, but H.264 needs even sizes — "
                               f"use a 2x or 4x upscaler")
        # 2. decode, upscale and encode chunk by chunk
        with VideoWriter(dst, width=w * s, height=h * s, fps=fps, metadata=metadata, audio_from=src) as writer:
            for chunk in _chunks(reader, src, h, w, chunk_frames):  # (n, H, W, 3)
                writer.write(upscaler.upscale(chunk))  # (n, H*s, W*s, 3)
                if on_progress:
                    on_progress(writer.frames_written, total)
            if writer.frames_written == 0:
                raise UpscaleError(f"{src}: the video has no frames — nothing to upscale")
    finally:
        reader.close()
    return dst


def _chunks(reader, src: Path, h: int, w: int, n: int):
    """Yield (<=n, h, w, 3) uint8 chunks from an imageio-ffmpeg frame generator; decode errors -> UpscaleError."""
    chunk: list[np.ndarray] = []
    while True:
        try:
            raw = next(reader, None)
        except (OSError, RuntimeError) as exc:
            raise UpscaleError(f"{src}: decoding failed ({str(exc).strip()[:300]}) — "
                               "the video may be truncated") from None
        if raw is not None:
            chunk.append(np.frombuffer(raw, dtype=np.uint8).reshape(h, w, 3))
        if chunk and (raw is None or len(chunk) == n):
            yield np.stack(chunk)
            chunk = []
        if raw is None:
            return
