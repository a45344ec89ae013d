"""Diffusion forcing: a shot longer than a model's window rendered chunk by chunk, for any Wan-architecture
transformer that takes a timestep per latent frame (SkyReels-V2 DF, trained for it; a Wan folder whose reel.json
opts in, untrained for it: see benchmarks/RESULTS.md "seams").

The loop is diffusers' SkyReelsV2DiffusionForcingPipeline's for num_frames > base_num_frames with its defaults
(ar_step 0, addnoise_condition 0):

    chunk 0      `window` frames from noise
    chunk k > 0  the last `overlap` frames' latents of the shot so far, held at timestep 0 (clean), then fresh
                 noise; only the fresh frames are stepped

Each chunk's new latent frames are decoded at once through one causal Wan VAE cache kept across chunks, so the
pixels equal one whole-shot `vae.decode`, while only one window of latents and pixels is ever held.

    for pixels in render_chunks(comps, denoiser, make_sampler=family.make_sampler, latent_shape=family.latent_shape,
                                block=1, frames=289, height=480, width=832, window=97, overlap=17, steps=30,
                                shift=8.0, seed=7, scheduler="default"):
        writer.write(pixels)      # (1, 3, f, H, W) in [0, 1]
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from reel.models.common import channel_stats, cpu_generator


@dataclass(frozen=True)
class ChunkPlan:
    """One chunk of a long shot, in latent frames: `size` in all, the first `prefix` copied from the shot so far
    (held clean), `keep` new ones at its end that join the shot."""

    size: int
    prefix: int
    keep: int


def long_chunks(latent_frames: int, window: int, overlap: int, block: int = 1) -> list[ChunkPlan]:
    """The pipeline's chunks for a shot of `latent_frames` with base_latent_num_frames `window` and
    overlap_history_latent_frames `overlap` (all latent frames): n_iter, each chunk's num_latent_frames and its
    prefix (the last `overlap` frames so far, cut down to whole causal blocks of `block`)."""
    if latent_frames <= window:
        return [ChunkPlan(latent_frames, 0, latent_frames)]
    n_iter = 1 + (latent_frames - window - 1) // (window - overlap) + 1
    chunks = [ChunkPlan(window, 0, window)]
    prefix = overlap - overlap % block
    for k in range(1, n_iter):
        size = min(latent_frames - k * (window - overlap), window)
        chunks.append(ChunkPlan(size, prefix, size - overlap))
    return chunks


class CausalDecoder:
    """The Wan VAE's frame-by-frame decode with its causal cache held here across calls (not on the VAE, so other
    decodes in between cannot disturb it): latent frames decoded in several calls equal one whole `vae.decode`."""

    def __init__(self, vae):
        self.vae = vae
        self.cache = [None] * vae._cached_conv_counts["decoder"]
        self.first = True

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, C, f', H', W') -> pixels (B, 3, f, H, W) in [0, 1], continuing the shot."""
        from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

        vae = self.vae
        z = latents.float()
        z = z * channel_stats(vae.config.latents_std, z) + channel_stats(vae.config.latents_mean, z)
        x = vae.post_quant_conv(z)  # a 1x1x1 convolution: per frame
        outs = []
        for i in range(x.shape[2]):
            out = vae.decoder(x[:, :, i:i + 1], feat_cache=self.cache, feat_idx=[0], first_chunk=self.first)
            self.first = False
            if vae.config.patch_size is not None:
                out = unpatchify(out, patch_size=vae.config.patch_size)
            outs.append(out.float().clamp(-1.0, 1.0))
        return (torch.cat(outs, dim=2) / 2 + 0.5).clamp(0.0, 1.0)  # (B, 3, f, H, W)


def chunk_denoiser(denoiser, prefix: torch.Tensor):
    """The engine's denoiser over a chunk's fresh frames: the clean prefix (B, C, p, H', W') goes in front at
    timestep 0, the fresh frames at the sampler's t (the pipeline's step_matrix row: 0 for pre-ready frames)."""
    p = prefix.shape[2]

    def run(x: torch.Tensor, t: torch.Tensor, i: int) -> torch.Tensor:
        if p == 0:
            return denoiser(x, t.reshape(1, 1).expand(1, x.shape[2]), i)  # (1, f)
        t_row = torch.cat([t.new_zeros(p), t.reshape(1).expand(x.shape[2])])[None]  # (1, p + f)
        out = denoiser(torch.cat([prefix, x], dim=2), t_row, i)  # (B, C, p + f, H', W')
        return out[:, :, p:]
    return run


def chunk_seed(seed: int, chunk: int) -> int:
    """A seed of its own for chunk k of a shot (the consistency sampler's re-noising): a hash, so chunk 1 of seed s
    never repeats chunk 0 of seed s + 1."""
    if chunk == 0:
        return seed
    return int.from_bytes(hashlib.sha256(f"{seed}:chunk-{chunk}".encode()).digest()[:8], "big") >> 1


@torch.no_grad()
def render_chunks(components, denoiser, *, make_sampler: Callable, latent_shape: Callable, block: int, frames: int,
                  height: int, width: int, window: int, overlap: int, steps: int, shift: float, seed: int,
                  scheduler: str, on_step=None) -> Iterator[torch.Tensor]:
    """Pixel chunks (1, 3, f, H, W) in [0, 1] of a `frames`-frame shot, `frames` in all, one per diffusion chunk
    (the family module's make_sampler and latent_shape; `block`: the transformer's causal frames per block).

    Noise: one CPU generator seeded with `seed` draws each chunk's full (1, C, size, H', W') noise in chunk order,
    prefix frames included (then overwritten) — the pipeline's own draws from one generator, so a seed locks the
    whole shot and matches the pipeline's frames. Each chunk runs `make_sampler(scheduler, shift)` over its fresh
    frames (lcm's re-noising seeded by chunk_seed); `denoiser(x, t, i)` gets the whole chunk with t per latent
    frame (1, F'). `on_step(chunk, i, t, x)`:
    0-based chunk and step, t a float, x the chunk's latents (1, C, size, H', W')."""
    t_f = components.temporal_factor
    chunks = long_chunks((frames - 1) // t_f + 1, (window - 1) // t_f + 1, (overlap - 1) // t_f + 1, block)
    t_f = components.temporal_factor
    chunks = long_chunks((frames - 1) // t_f + 1, (window - 1) // t_f + 1, (overlap - 1) // t_f + 1, block)
    if any(c.size % block for c in chunks):
        raise ValueError(f"frames = {frames}: a chunk's latent frames must fill the transformer's causal blocks of "
                         f"{block} (num_frame_per_block) — choose frames so every chunk is a multiple of {block}")
    channels, _, lat_h, lat_w = latent_shape(components, 1, height, width)  # (C, 1, H', W')
    generator = cpu_generator(seed)
    decode = CausalDecoder(components.vae)
    tail = None  # (1, C, <= overlap, H', W'): the shot's last latent frames so far
    overlap_latent = (overlap - 1) // t_f + 1
    for k, chunk in enumerate(chunks):
        noise = torch.randn((1, channels, chunk.size, lat_h, lat_w), generator=generator, dtype=torch.float32)
        noise = noise.to(components.device)  # (1, C, size, H', W')
        prefix = tail[:, :, :chunk.prefix] if chunk.prefix else noise[:, :, :0]  # (1, C, p, H', W')
        sampler = make_sampler(components, scheduler, shift, seeds=[chunk_seed(seed, k)])  # lcm's re-noising
        callback = None
        if on_step is not None:
            def callback(i, t, x, k=k, prefix=prefix):
                on_step(k, i, t, torch.cat([prefix, x], dim=2))
        fresh = sampler(chunk_denoiser(denoiser, prefix), noise[:, :, chunk.prefix:], steps, callback)
        latents = torch.cat([prefix, fresh], dim=2)  # (1, C, size, H', W')
        new = latents[:, :, chunk.size - chunk.keep:]  # the frames that join the shot
        tail = new[:, :, -overlap_latent:] if tail is None else torch.cat([tail, new], dim=2)[:, :, -overlap_latent:]
        yield decode(new)
        del noise, latents, fresh
