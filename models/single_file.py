"""Single-file transformers (original or ComfyUI .safetensors, GGUF) inside a diffusers model folder.

A ComfyUI-style download is usually just the transformer. `reel import-model FILE --base DIR --out OUT`
makes OUT a model folder: DIR's text encoder, tokenizer, VAE and scheduler (linked, not copied), the
transformer's config from DIR (or from a config shipped in models/configs/), and `reel.json` naming FILE.
Families load their transformer through `load_transformer`, which reads FILE with diffusers'
`from_single_file` (config given locally, so nothing is fetched); GGUF files load quantized with
`GGUFQuantizationConfig` (pip install gguf).

    family = detect_family(Path("wan2.1_t2v_1.3B_fp16.safetensors"))     # from tensor names: "wan"
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.")


class SingleFileError(ValueError):
    pass


def tensor_names(path: Path) -> list[str]:
    """Tensor names of a .safetensors or .gguf file, without loading the tensors."""
    if path.suffix == ".gguf":
        try:
            import gguf
        except ImportError:
            raise SingleFileError(f"{path}: reading GGUF needs the gguf package — pip install gguf") from None
        return [t.name for t in gguf.GGUFReader(str(path)).tensors]
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return list(f.keys())
    except Exception as err:
        raise SingleFileError(f"{path}: not a readable .safetensors file ({err})") from None


def detect_family(path: Path, prefer: str | None = None) -> str:
    """The family whose original / ComfyUI tensor names (registry `single_file_keys`) the file holds; on a tie,
    `prefer` (the --base folder's family: SkyReels-V2 14B files hold exactly Wan's names)."""
    from reel.models.registry import FAMILIES

    names = set(tensor_names(path))
    stripped = {n[len(p):] if n.startswith(p) else n for n in names for p in PREFIXES if n.startswith(p)} | names
    # the family with the most of its names present: HunyuanVideo 1.5 files also hold a name of 1.0's, and
    # SkyReels-V2 DF files every name of Wan's (their keys list those too, plus their own)
    hits = {family.name: sum(k in stripped for k in family.single_file_keys) for family in FAMILIES.values()}
    best = max(hits, key=lambda name: hits[name])  # the first of equals, in registry order
    if prefer is not None and hits[best] and hits.get(prefer) == hits[best]:
        return prefer
    if hits[best]:
        return best
    first = sorted(names)[:3]
    raise SingleFileError(f"{path}: tensor names match no family reel knows ({', '.join(FAMILIES)}); "
                          f"first names: {first}")


def import_single_file(file: Path, base: Path, out: Path) -> Path:
    """Make `out` a model folder: `base`'s other components linked, `file` as its transformer."""
    from reel.models.registry import FAMILIES, resolve_model

    file, base = file.resolve(), base.resolve()
    if not file.is_file():
        raise SingleFileError(f"{file}: file not found")
    info = resolve_model(str(base))
    family = detect_family(file, prefer=info.family.name)
    if not FAMILIES[family].single_file_loader:
        raise SingleFileError(f"{file}: diffusers has no single-file loader for {family} transformers — use the "
                              f"model's diffusers folder (e.g. {FAMILIES[family].hub_example}) instead")
    if info.family.name != family:
        raise SingleFileError(f"{file} is a {family} transformer but --base {base} is a {info.family.name} folder — "
                              f"give a {family} diffusers folder for the text encoder and VAE")
    if out.exists() and any(out.iterdir()):
        raise SingleFileError(f"{out} exists and is not empty — choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    for item in base.iterdir():
        if item.name in ("transformer", "reel.json"):
            continue
        (out / item.name).symlink_to(item, target_is_directory=item.is_dir())
    (out / "transformer").mkdir()
    shutil.copy(base / "transformer" / "config.json", out / "transformer" / "config.json")
    reel = json.loads((base / "reel.json").read_text()) if (base / "reel.json").is_file() else {}
    reel["transformer_file"] = str(file)
    (out / "reel.json").write_text(json.dumps(reel, indent=2) + "\n")
    return out


def load_transformer(cls, folder: Path, dtype, subfolder: str = "transformer"):
    """The folder's transformer: from its own weights, or from the single file its reel.json names."""
    import torch

    folder = Path(folder)
    reel = folder / "reel.json"
    single = json.loads(reel.read_text()).get(f"{subfolder}_file") if reel.is_file() else None
    if not single:
        return cls.from_pretrained(folder / subfolder, local_files_only=True, dtype=dtype)
    kwargs = {}
    if single.endswith(".gguf"):
        from diffusers import GGUFQuantizationConfig

        compute = dtype if dtype != torch.float32 else torch.float32
        kwargs["quantization_config"] = GGUFQuantizationConfig(compute_dtype=compute)
    return cls.from_single_file(single, config=str(folder / subfolder), local_files_only=True, torch_dtype=dtype,
                                **kwargs)
