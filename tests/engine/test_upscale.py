"""Upscaling: the built-in x2 and foreign spandrel models from real files, tiling, Lanczos, streamed video,
bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from reel.engine.post.contact import read_video
from reel.engine.post.encode import VideoWriter
from reel.engine.post.upscale import (BUILTIN_UPSCALERS, LanczosUpscaler, UpscaleError, import_spandrel, load_upscaler,
                                 upscale_video)
from reel.models.shapes.world import HELD_OUT_PAIRS, render_clip, sample_spec


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def heldout_clip(size: int = 128, seed: int = 7) -> np.ndarray:
    spec = sample_spec(np.random.default_rng(seed), only_pairs=sorted(HELD_OUT_PAIRS))
    return render_clip(spec, width=size, height=size, frames=9)  # (9, size, size, 3)


def area_down2(hr: np.ndarray) -> np.ndarray:
    n, h, w, c = hr.shape
    return np.rint(hr.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean()
    return float(10 * np.log10(255.0**2 / mse))


def bicubic(frames: np.ndarray, s: int) -> np.ndarray:
    h, w = frames.shape[1:3]
    return np.stack([np.asarray(Image.fromarray(f).resize((w * s, h * s), Image.BICUBIC)) for f in frames])


def arch(name: str):
    """A spandrel architecture class by module name (Compact, ESRGAN, SwinIR)."""
    import_spandrel()
    import importlib

    return getattr(importlib.import_module(f"spandrel.architectures.{name}"), name)


def random_frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


# ---- the built-in x2 ----------------------------------------------------------------------------
def test_builtin_x2_is_a_spandrel_compact_and_beats_bicubic_on_heldout():
    spandrel = import_spandrel()
    descriptor = spandrel.ModelLoader().load_from_file(BUILTIN_UPSCALERS["x2"])
    assert descriptor.architecture.id == "Compact" and descriptor.scale == 2 and descriptor.purpose == "SR"
    assert BUILTIN_UPSCALERS["x2"].stat().st_size <= 2_000_000

    up = load_upscaler("x2")
    hr = heldout_clip()  # (9, 128, 128, 3)
    lr = area_down2(hr)  # (9, 64, 64, 3)
    out = up.upscale(lr)
    assert up.scale == 2 and up.name == "x2" and out.shape == hr.shape and out.dtype == np.uint8
    assert psnr(out, hr) > psnr(bicubic(lr, 2), hr) + 1.0


# ---- foreign architectures by path --------------------------------------------------------------
def test_foreign_esrgan_x4_pth_loads_by_path(tmp_path):
    torch.manual_seed(0)
    model = arch("ESRGAN")(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4)
    path = tmp_path / "tiny-esrgan-x4.pth"
    torch.save(model.state_dict(), path)
    up = load_upscaler(str(path))
    assert up.scale == 4 and up.describe()["architecture"] == "ESRGAN"
    assert up.upscale(random_frames(2, 12, 20)).shape == (2, 48, 80, 3)


def test_foreign_compact_x4_safetensors_loads_by_path(tmp_path):
    torch.manual_seed(0)
    model = arch("Compact")(num_feat=8, num_conv=2, upscale=4)
    path = tmp_path / "tiny-compact-x4.safetensors"
    save_file(model.state_dict(), str(path))
    up = load_upscaler(str(path))
    assert up.scale == 4 and up.name == str(path)
    assert up.upscale(random_frames(1, 10, 14)).shape == (1, 40, 56, 3)


# ---- tiling and size requirements ---------------------------------------------------------------
def test_tiled_equals_untiled_for_conv_model_within_overlap():
    # Built-in x2: 10 3x3 convs, receptive radius 10 LR px <= overlap 16; tile 40 -> cores of 8 px.
    frames = area_down2(heldout_clip(size=160))[:2]  # (2, 80, 80, 3)
    whole = load_upscaler("x2", tile=4096).upscale(frames)
    tiled_up = load_upscaler("x2", tile=40, overlap=16)
    tiled = tiled_up.upscale(frames)
    assert tiled_up.describe()["tile"] == 40
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1


def test_size_requirements_are_met_and_cropped_back(tmp_path):
    # Real-ESRGAN x2plus layout: pixel-unshuffle by 2, then x4 -> x2 overall, sides must be multiples of 4.
    torch.manual_seed(0)
    model = arch("ESRGAN")(in_nc=12, out_nc=3, num_filters=8, num_blocks=1, scale=4, shuffle_factor=2)
    path = tmp_path / "tiny-x2plus.pth"
    torch.save(model.state_dict(), path)
    up = load_upscaler(str(path), tile=24, overlap=4)
    assert up.scale == 2 and up.descriptor.size_requirements.multiple_of == 4
    assert up.upscale(random_frames(1, 30, 22)).shape == (1, 60, 44, 3)  # whole frame, padded
    assert up.upscale(random_frames(1, 50, 37)).shape == (1, 100, 74, 3)  # tiled, ragged tiles padded


@pytest.mark.filterwarnings("ignore:torch.meshgrid")
def test_tiling_discouraged_runs_whole_frame(tmp_path):
    model = arch("SwinIR")(img_size=16, embed_dim=12, depths=[1], num_heads=[2], window_size=4, upscale=2,
                           upsampler="pixelshuffledirect", mlp_ratio=2.0)
    path = tmp_path / "tiny-swinir.pth"
    torch.save(model.state_dict(), path)
    up = load_upscaler(str(path), tile=16, overlap=4)
    assert up.describe()["tile"] is None  # spandrel says ModelTiling.DISCOURAGED
    assert up.upscale(random_frames(1, 20, 28)).shape == (1, 40, 56, 3)  # min 16, any size


# ---- Lanczos ------------------------------------------------------------------------------------
def test_lanczos_fallback():
    lr = area_down2(heldout_clip(size=64))  # (9, 32, 32, 3)
    up2, up4 = load_upscaler("lanczos2"), load_upscaler("lanczos4")
    assert (up2.scale, up4.scale, up2.name) == (2, 4, "lanczos2")
    out = up2.upscale(lr)
    assert out.shape == (9, 64, 64, 3) and up4.upscale(lr[:1]).shape == (1, 128, 128, 3)
    assert psnr(out, heldout_clip(size=64)) > 25


# ---- video --------------------------------------------------------------------------------------
def test_upscale_video_streams_real_h264(tmp_path):
    src, dst = tmp_path / "in.mp4", tmp_path / "out" / "up.mp4"
    frames = area_down2(heldout_clip(size=128))  # (9, 64, 64, 3)
    with VideoWriter(src, width=64, height=64, fps=12) as writer:
        writer.write(frames)
    seen = []
    out = upscale_video(src, dst, load_upscaler("x2"), chunk_frames=4, metadata={"title": "up"},
                        on_progress=lambda done, total: seen.append(done))
    decoded, fps = read_video(out)
    assert out == dst and decoded.shape == (9, 128, 128, 3) and fps == 12
    assert seen == [4, 8, 9]
    assert sorted(p.name for p in dst.parent.iterdir()) == ["up.mp4"]


def test_upscale_video_keeps_the_audio(tmp_path):
    """A clip with sound (the assembled film) keeps its sound: ffmpeg muxes the source's audio back in."""
    import subprocess

    from reel.engine.post.encode import ffmpeg_exe
    from reel.engine.post.probe import decode_audio, probe

    silent, src, dst = tmp_path / "silent.mp4", tmp_path / "film.mp4", tmp_path / "up.mp4"
    with VideoWriter(silent, width=32, height=32, fps=8) as writer:
        writer.write(random_frames(16, 32, 32))  # 2 s
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(silent), "-f", "lavfi", "-i",
                    "sine=frequency=440:sample_rate=48000:duration=2", "-c:v", "copy", "-c:a", "aac", str(src)],
                   check=True)
    upscale_video(src, dst, load_upscaler("lanczos2"))
    info = probe(dst)
    assert info.video and info.audio and info.audio_codec == "aac" and (info.width, info.height) == (64, 64)
    pcm = decode_audio(dst)
    assert len(pcm) > 8000 * 1.8 and float(np.sqrt((pcm**2).mean())) > 0.05  # the tone, not silence
    upscale_video(silent, tmp_path / "up_silent.mp4", load_upscaler("lanczos2"))
    assert not probe(tmp_path / "up_silent.mp4").audio


def test_failure_mid_stream_leaves_no_file(tmp_path):
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    with VideoWriter(src, width=32, height=32, fps=8) as writer:
        writer.write(random_frames(9, 32, 32))

    class FailsOnSecondChunk(LanczosUpscaler):
        calls = 0

        def upscale(self, frames):
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("out of memory")
            return super().upscale(frames)

    with pytest.raises(RuntimeError, match="out of memory"):
        upscale_video(src, dst, FailsOnSecondChunk(2), chunk_frames=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_unreadable_video_writes_nothing(tmp_path):
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    src.write_bytes(b"not a video at all" * 100)
    with pytest.raises(UpscaleError, match="in.mp4: not a readable video"):
        upscale_video(src, dst, load_upscaler("lanczos2"))
    with pytest.raises(UpscaleError, match="missing.mp4: no such video file"):
        upscale_video(tmp_path / "missing.mp4", dst, load_upscaler("lanczos2"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


# ---- bad model files ----------------------------------------------------------------------------
def test_missing_file_names_it(tmp_path):
    with pytest.raises(UpscaleError, match=r"nope\.pth: no such upscaler model file .* 'lanczos2'"):
        load_upscaler(str(tmp_path / "nope.pth"))
    with pytest.raises(UpscaleError, match="x3: no such built-in upscaler — use 'x2'"):
        load_upscaler("x3")


def test_garbage_bytes_are_a_corrupt_file(tmp_path):
    for name in ("junk.pth", "junk.safetensors"):
        path = tmp_path / name
        path.write_bytes(b"\x00garbage" * 64)
        with pytest.raises(UpscaleError, match=rf"{name}: could not be read as a model file .* corrupt"):
            load_upscaler(str(path))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(UpscaleError, match=r"notes\.txt: '\.txt' is not a model file type"):
        load_upscaler(str(text))


def test_unknown_and_non_sr_models_are_rejected(tmp_path):
    unknown = tmp_path / "unknown.safetensors"
    save_file({"encoder.layer.0.weight": torch.zeros(4, 4)}, str(unknown))
    with pytest.raises(UpscaleError, match=r"unknown\.safetensors: not a model architecture spandrel .* knows"):
        load_upscaler(str(unknown))
    denoiser = tmp_path / "restore-1x.safetensors"
    save_file(arch("Compact")(num_feat=8, num_conv=2, upscale=1).state_dict(), str(denoiser))
    with pytest.raises(UpscaleError,
                       match=r"restore-1x\.safetensors: a RealESRGAN Compact Restoration model, not super-resolution"):
        load_upscaler(str(denoiser))
