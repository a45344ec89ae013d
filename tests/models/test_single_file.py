"""Single-file transformers (original/ComfyUI .safetensors and GGUF) imported next to a diffusers
folder render exactly like the folder's own transformer."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from reel.engine.cli import app
from reel.engine.post.contact import read_video
from reel.models.single_file import SingleFileError, detect_family

runner = CliRunner()

# diffusers name -> original Wan name (the inverse of diffusers' convert_wan_transformer_to_diffusers)
INVERSE = [("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
           ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
           ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
           ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
           ("condition_embedder.time_proj", "time_projection.1"), ("attn2", "cross_attn"), ("attn1", "self_attn"),
           (".to_out.0.", ".o."), (".to_q.", ".q."), (".to_k.", ".k."), (".to_v.", ".v."),
           ("ffn.net.0.proj", "ffn.0"), ("ffn.net.2", "ffn.2"), ("proj_out", "head.head")]


def original_state(tiny_model, prefix=""):
    from diffusers import WanTransformer3DModel

    out = {}
    for k, v in WanTransformer3DModel.from_pretrained(tiny_model / "transformer").state_dict().items():
        n = k
        for a, b in INVERSE:
            n = n.replace(a, b)
        n = "head.modulation" if n == "scale_shift_table" else n.replace(".scale_shift_table", ".modulation")
        n = re.sub(r"\.norm2\.", ".normX.", n).replace(".norm3.", ".norm2.").replace(".normX.", ".norm3.")
        out[prefix + n] = v.contiguous()
    return out


SPEC = '[film]\nmodel = "{m}"\nseed = 4\n[[shots]]\nid = "a"\nprompt = "a red circle moving left"\n'


def render(tmp_path, model, name):
    spec = tmp_path / f"{name}.toml"
    spec.write_text(SPEC.replace("{m}", str(model)))
    result = runner.invoke(app, ["render", str(spec), "--out", str(tmp_path / name), "-q"])
    assert result.exit_code == 0, result.output
    return read_video(tmp_path / name / "shots" / "a.mp4")[0]


@pytest.mark.parametrize("kind", ["original", "comfyui", "gguf"])
def test_single_file_renders_like_the_folder(tiny_model, tmp_path, kind):
    state = original_state(tiny_model, "model.diffusion_model." if kind == "comfyui" else "")
    if kind == "gguf":
        import gguf

        file = tmp_path / "wan.gguf"
        writer = gguf.GGUFWriter(str(file), "wan")
        for k, v in state.items():
            writer.add_tensor(k, v.float().numpy())
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    else:
        file = tmp_path / "wan.safetensors"
        save_file(state, str(file))
    assert detect_family(file) == "wan"
    result = runner.invoke(app, ["import-model", str(file), "--base", str(tiny_model), "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert ((tmp_path / "m" / "vae").is_symlink()
            and not (tmp_path / "m" / "transformer" / "diffusion_pytorch_model.safetensors").exists())
    assert np.array_equal(render(tmp_path, tmp_path / "m", "single"), render(tmp_path, tiny_model, "folder"))


def test_bad_single_files(tiny_model, tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 10)
    with pytest.raises(SingleFileError, match="not a readable"):
        detect_family(junk)
    other = tmp_path / "other.safetensors"
    save_file({"unet.conv_in.weight": torch.zeros(2)}, str(other))
    result = runner.invoke(app, ["import-model", str(other), "--base", str(tiny_model), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "match no family" in result.output and not (tmp_path / "o").exists()
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC.replace("{m}", str(other)))
    result = runner.invoke(app, ["validate", str(spec)])
    assert result.exit_code == 2 and "reel import-model" in result.output


def test_ltx_single_file_renders_like_its_folder(tmp_path):
    from diffusers import LTXVideoTransformer3DModel

    from tests.models.test_ltx import build_tiny_ltx

    folder = build_tiny_ltx(tmp_path / "ltx")
    inverse = [("proj_in", "patchify_proj"), ("time_embed", "adaln_single"), ("norm_q", "q_norm"), ("norm_k", "k_norm")]
    state = {}
    for k, v in LTXVideoTransformer3DModel.from_pretrained(folder / "transformer").state_dict().items():
        for a, b in inverse:
            k = k.replace(a, b)
        state["model.diffusion_model." + k] = v.contiguous()
    file = tmp_path / "ltx-video-comfy.safetensors"
    save_file(state, str(file))
    assert detect_family(file) == "ltx"
    result = runner.invoke(app, ["import-model", str(file), "--base", str(folder), "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert np.array_equal(render(tmp_path, tmp_path / "m", "single"), render(tmp_path, folder, "folder"))


def test_detection_picks_the_family_with_the_most_matching_names(tmp_path):
    """Newer families' files also hold older ones' names: HunyuanVideo 1.5 one of 1.0's refiner names, LTX-2 one of
    LTX-1's, SkyReels-V2 all of Wan's (and, for its 14B models, nothing else: --base's family breaks that tie)."""
    import torch
    from safetensors.torch import save_file

    from reel.models.single_file import detect_family

    def file(name: str, keys: list[str]):
        path = tmp_path / f"{name}.safetensors"
        save_file({k: torch.zeros(1) for k in keys}, str(path))
        return path

    h15 = file("h15", ["double_blocks.0.img_attn_q.weight", "byt5_in.fc1.weight",
                       "txt_in.individual_token_refiner.blocks.0.norm1.weight"])
    assert detect_family(h15) == "hunyuan15"
    ltx2 = file("ltx2", ["model.diffusion_model.adaln_single.linear.weight",
                         "model.diffusion_model.audio_patchify_proj.weight"])
    assert detect_family(ltx2) == "ltx2"
    df13 = file("df13", ["head.modulation", "patch_embedding.weight", "fps_embedding.weight"])
    assert detect_family(df13) == "skyreels"
    sky14 = file("sky14", ["head.modulation", "patch_embedding.weight"])
    assert detect_family(sky14) == "wan" and detect_family(sky14, prefer="skyreels") == "skyreels"
    assert detect_family(sky14, prefer="ltx") == "wan"  # a preference never beats a better match
