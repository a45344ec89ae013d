"""The tiny preview decoder: shapes, files (good and bad), and previews that use it in place of the VAE."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from reel.engine.cli import app
from reel.engine.post.contact import read_video
from reel.models.preview_decoder import PreviewDecoder, PreviewDecoderError, load_preview_decoder, save_preview_decoder
from tests.engine.test_preview import FILM, preview_lora  # noqa: F401  (module fixture reused)

runner = CliRunner()


def test_layout_follows_the_causal_vae():
    dec = PreviewDecoder(z_dim=8)
    z = torch.randn(2, 8, 5, 16, 16)  # (B, z, F', h, w)
    assert dec(z).shape == (2, 3, 17, 64, 64)  # first latent frame -> 1 frame, then 4 each
    assert dec(z[:, :, :1]).shape == (2, 3, 1, 64, 64)


def test_round_trip_and_bad_files(tmp_path):
    dec = PreviewDecoder(z_dim=4, width=8, fine=4)
    path = tmp_path / "dec.safetensors"
    save_preview_decoder(dec, path, {"note": "test"})
    back = load_preview_decoder(path, z_dim=4)
    z = torch.randn(1, 4, 3, 4, 4)
    assert torch.allclose(back(z), dec.half().float()(z), atol=1e-5)  # stored as fp16
    with pytest.raises(PreviewDecoderError, match="made for 4-channel latents, the model has 16"):
        load_preview_decoder(path, z_dim=16)
    with pytest.raises(PreviewDecoderError, match="compressing 4x in time and 4x in space, "
                                                  "the model's compresses 4x and 8x"):
        load_preview_decoder(path, z_dim=4, factors=(4, 8))
    with pytest.raises(PreviewDecoderError, match="missing.safetensors: preview decoder not found"):
        load_preview_decoder(tmp_path / "missing.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:200])
    with pytest.raises(PreviewDecoderError, match="cut.safetensors: not a readable safetensors file"):
        load_preview_decoder(cut)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "lora.safetensors"))
    with pytest.raises(PreviewDecoderError, match="lora.safetensors: not a reel preview decoder"):
        load_preview_decoder(tmp_path / "lora.safetensors")


def test_preview_renders_through_the_decoder(write_spec, tmp_path, preview_lora, tiny_model):  # noqa: F811
    vae_cfg = json.loads((tiny_model / "vae" / "config.json").read_text())
    dec_path = tmp_path / "dec.safetensors"
    save_preview_decoder(PreviewDecoder(z_dim=vae_cfg["z_dim"], width=8, fine=4, s=vae_cfg["scale_factor_spatial"]),
                         dec_path)
    extra = f'preview_lora = "{preview_lora}"\npreview_decoder = "{dec_path}"'
    spec, out = write_spec(FILM.replace("{extra}", extra)), tmp_path / "out"
    result = runner.invoke(app, ["preview", str(spec), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    m = json.loads((out / "preview" / "shots" / "a.json").read_text())
    assert m["preview_decoder"]["file"] == str(dec_path) and m["preview_decoder"]["sha256"].startswith("sha256:")
    import torch

    native_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert m["preview_decoder"]["compute"] == ("bf16 autocast" if native_bf16 else "fp32")
    assert m["preview_transformer"] == ("bf16 autocast" if native_bf16 else "float32")  # a draft, like the decoder
    frames, _ = read_video(out / "preview" / "shots" / "a.mp4")
    assert frames.shape[1:] == (m["height"], m["width"], 3) and frames.shape[0] == m["frames"]
    vae_out = tmp_path / "vae"
    spec_vae = write_spec(FILM.replace("{extra}", f'preview_lora = "{preview_lora}"\npreview_decoder = "vae"'),
                          "v.toml")
    assert runner.invoke(app, ["preview", str(spec_vae), "--out", str(vae_out), "-q"]).exit_code == 0
    mv = json.loads((vae_out / "preview" / "shots" / "a.json").read_text())
    assert mv["preview_decoder"] is None and mv["fingerprint"] != m["fingerprint"]
    # a new decoder file re-renders the previews
    save_preview_decoder(PreviewDecoder(z_dim=vae_cfg["z_dim"], width=8, fine=4, s=vae_cfg["scale_factor_spatial"]),
                         dec_path)
    result = runner.invoke(app, ["preview", str(spec), "--out", str(out)])
    assert "2 rendered, 0 reused" in result.output


def test_bad_preview_decoder_is_a_clear_error(write_spec, tmp_path, preview_lora):  # noqa: F811
    out = tmp_path / "out"
    extra = f'preview_lora = "{preview_lora}"\npreview_decoder = "nope.safetensors"'
    result = runner.invoke(app, ["preview", str(write_spec(FILM.replace("{extra}", extra))), "--out", str(out)])
    assert result.exit_code == 2 and "film.preview_decoder" in result.output and not out.exists()
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    extra = f'preview_lora = "{preview_lora}"\npreview_decoder = "{junk}"'
    result = runner.invoke(app, ["preview", str(write_spec(FILM.replace("{extra}", extra), "j.toml")),
                                 "--out", str(out)])
    assert result.exit_code == 2 and "junk.safetensors: not a readable .safetensors file" in result.output
    assert not (out / "preview" / "shots").exists()
