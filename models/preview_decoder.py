"""A tiny latent-to-pixels decoder for previews (the role TAEHV plays for Wan in ComfyUI and Wan2GP).

The full Wan VAE decoder costs as much as several denoising steps of a small model; a preview needs the
composition, colours and motion, not the last dB. This decoder maps the latents of a causal video VAE
with 4x temporal and 4x spatial compression (Wan 2.1's layout: the first latent frame is one frame, every
later one four) straight to frames with two 3-D convolutions, a pixel shuffle and a 2-D refinement.

    decoder = load_preview_decoder(Path("models/shapes/adapters/preview_decoder.safetensors"))
    frames = decoder(latents)   # (B, z, F', h, w) VAE-space latents -> (B, 3, 4(F'-1)+1, 4h, 4w) in [-1, 1]

Trained for the built-in model by scripts/train_preview_decoder.py; the file carries its own config in the
safetensors metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

FORMAT = "reel-preview-decoder/1"


class PreviewDecoderError(ValueError):
    """A preview decoder file that is missing, corrupt or made for other latents; the message names it."""


class PreviewDecoder(nn.Module):
    """Latents (B, z, F', h, w) -> frames (B, 3, t(F'-1)+1, s*h, s*w) in [-1, 1]."""

    def __init__(self, z_dim: int = 8, width: int = 64, fine: int = 8, t: int = 4, s: int = 4):
        super().__init__()
        self.config = {"z_dim": z_dim, "width": width, "fine": fine, "t": t, "s": s}
        self.t, self.s, self.fine = t, s, fine
        self.body = nn.Sequential(
            nn.Conv3d(z_dim, width, 3, padding=1), nn.SiLU(),
            nn.Conv3d(width, width, 3, padding=1), nn.SiLU(),
            nn.Conv3d(width, t * s * s * fine, 1),
        )
        self.refine = nn.Sequential(nn.Conv2d(fine, 2 * fine, 3, padding=1), nn.SiLU(),
                                    nn.Conv2d(2 * fine, 3, 3, padding=1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b, _, f, h, w = z.shape
        t, s, c = self.t, self.s, self.fine
        y = self.body(z)  # (B, t*s*s*c, F', h, w)
        y = y.view(b, t, c, s, s, f, h, w).permute(0, 5, 1, 2, 6, 3, 7, 4)  # (B, F', t, c, h, s, w, s)
        y = y.reshape(b, f * t, c, h * s, w * s)[:, t - 1:]  # (B, F, c, H, W): the first latent frame is 1 frame
        frames = y.shape[1]
        out = self.refine(y.flatten(0, 1))  # (B*F, 3, H, W)
        return out.view(b, frames, 3, h * s, w * s).permute(0, 2, 1, 3, 4)  # (B, 3, F, H, W)


def save_preview_decoder(decoder: PreviewDecoder, path: Path, extra: dict | None = None) -> None:
    """fp16 safetensors with the config (and `extra` provenance) in the metadata; written atomically."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    meta = {"format": FORMAT, "config": json.dumps(decoder.config), **{k: str(v) for k, v in (extra or {}).items()}}
    save_file({k: v.detach().half().contiguous() for k, v in decoder.state_dict().items()}, str(tmp), metadata=meta)
    tmp.replace(path)


def load_preview_decoder(path: Path, z_dim: int | None = None, device: torch.device | str = "cpu",
                         factors: tuple[int, int] | None = None) -> PreviewDecoder:
    """Load a decoder saved by save_preview_decoder (fp32 on `device`); PreviewDecoderError names what is wrong.
    `z_dim` and `factors` (the VAE's temporal, spatial compression) must match when given."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise PreviewDecoderError(f"{path}: preview decoder not found — point preview_decoder at a file made by "
                                  "scripts/train_preview_decoder.py, or set preview_decoder = \"vae\"")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except Exception as err:  # safetensors raises several types for truncated or foreign files
        raise PreviewDecoderError(f"{path}: not a readable safetensors file ({err}) — re-create it") from None
    if meta.get("format") != FORMAT:
        raise PreviewDecoderError(f"{path}: not a reel preview decoder (format {meta.get('format')!r}, "
                                  f"expected {FORMAT!r})")
    decoder = PreviewDecoder(**json.loads(meta["config"]))
    if z_dim is not None and decoder.config["z_dim"] != z_dim:
        raise PreviewDecoderError(f"{path}: made for {decoder.config['z_dim']}-channel latents, the model has {z_dim}")
    if factors is not None and (decoder.config["t"], decoder.config["s"]) != tuple(factors):
        raise PreviewDecoderError(f"{path}: made for a VAE compressing {decoder.config['t']}x in time and "
                                  f"{decoder.config['s']}x in space, the model's compresses "
                                  f"{factors[0]}x and {factors[1]}x")
    try:
        decoder.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as err:
        raise PreviewDecoderError(f"{path}: weights do not match its config ({str(err)[:200]})") from None
    return decoder.to(device).eval().requires_grad_(False)
