"""Train reel's built-in `shapes` model (Wan architecture) on the procedural shapes world, on the CPU.

Stages, each resumable from the single checkpoint models/shapes/checkpoints/state.pt (≤ 30 MB,
overwritten atomically):
  vae          AutoencoderKLWan on rendered clips (~25 min)
  cache        encode a fixed training set to latents under models/shapes/runs/ (git-ignored, ~15 min;
               rebuilt automatically on a fresh machine from the checkpoint's VAE)
  transformer  WanTransformer3DModel + UMT5 text encoder, flow matching (~2 h)
  export       diffusers WanPipeline folder models/shapes/weights/ (+ reel.json)
  all          whatever is left, in order

Run (from the repo root), in the background, one thread:
    nohup .venv/bin/python scripts/train_shapes_model.py --stage all --resume \
        > models/shapes/runs/train.log 2>&1 &
Progress: models/shapes/runs/train_progress.log (step, loss, steps/s, ETA, quick judge evals).
Train a finished model further (its checkpoint deleted): a new checkpoint from the exported weights,
the lr schedule restarted at the model's step (here 8500 -> 16500), then export as usual:
    .venv/bin/python scripts/train_shapes_model.py --stage all --from-weights models/shapes/weights \
        --set tr_steps=16500 tr_lr=0.0002 tr_warmup=200 --threads 2
Smoke test (tiny step counts, separate checkpoint/output dirs):
    .venv/bin/python scripts/train_shapes_model.py --stage all --smoke
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, replace
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--stage", choices=["vae", "cache", "transformer", "export", "all"], default="all",
                   help="which stage to run; a stage whose prerequisites are missing fails with what to run first")
    p.add_argument("--resume", action="store_true",
                   help="continue from models/shapes/checkpoints/state.pt "
                        "(without it an existing checkpoint is an error)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: leave a core for the team)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop this run after N more steps of the current stage (checkpoint saved); "
                        "for short sessions")
    p.add_argument("--smoke", action="store_true",
                   help="tiny run in models/shapes/runs/smoke/ (checkpoint, latent cache, export) "
                        "to check the plumbing")
    p.add_argument("--smoke-dir", type=Path, default=None,
                   help="where --smoke writes (default models/shapes/runs/smoke)")
    p.add_argument("--from-weights", type=Path, default=None, metavar="DIR",
                   help="start a new checkpoint at the transformer stage from an exported model (e.g. "
                        "models/shapes/weights) to train it further; needs --set tr_steps=TOTAL; the lr schedule "
                        "restarts (warmup, cosine) at the model's step")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override TrainConfig fields (also on --resume, e.g. to extend a run: --set tr_steps=14000); "
                        "changing model sizes on resume fails to load the checkpoint")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    ckpt, weights, log, default = _where_to_write(args)
    overrides = _overrides(args.set, default)
    default = replace(default, **overrides)
    state, cfg = _state(args, ckpt, default, overrides, log)
    state = _run_stages(args, cfg, state, log, weights, ckpt)
    log("stop", at=state["stage"])
    return 0


def _where_to_write(args: argparse.Namespace):
    """1. Where to write: (checkpoint path, weights folder, Logger, default TrainConfig); --smoke moves all three
    (and the latent cache) into its own folder with tiny step counts. Sets common.CKPT_PATH."""
    from train_shapes import common
    from train_shapes.common import Logger, TrainConfig

    ckpt, weights, log = common.CKPT_PATH, common.WEIGHTS_DIR, Logger()
    default = TrainConfig()
    if args.smoke_dir is not None and not args.smoke:
        raise SystemExit("--smoke-dir: only with --smoke")
    if args.smoke:
        smoke = args.smoke_dir or common.RUNS_DIR / "smoke"
        common.RUNS_DIR = smoke  # its latent cache too
        ckpt, weights, log = smoke / "state.pt", smoke / "weights", Logger(smoke / "progress.log")
        default = replace(default, vae_steps=4, vae_batch=2, vae_min_psnr=0.0, cache_clips=40, tr_steps=6,
                          tr_batch=4, eval_every=6, eval_prompts=4, eval_steps=2, save_every=3)
    common.CKPT_PATH = ckpt  # save_checkpoint/load_checkpoint default to this
    return ckpt, weights, log, default


def _overrides(pairs: list[str], default) -> dict:
    """The --set KEY=VALUE pairs as TrainConfig fields, each value cast to the field's type."""
    overrides = {}
    for kv in pairs:
        key, _, value = kv.partition("=")
        if key not in asdict(default):
            raise SystemExit(f"--set {kv}: unknown field {key!r}; fields: {', '.join(asdict(default))}")
        kind = type(getattr(default, key))
        overrides[key] = (value.lower() in ("1", "true", "yes")) if kind is bool else kind(value)
    return overrides


def _state(args: argparse.Namespace, ckpt: Path, default, overrides: dict, log) -> tuple[dict | None, object]:
    """2. State: (checkpoint state, TrainConfig), fresh, resumed or --from-weights (explicit --set values win over
    the stored config, e.g. more steps). The state is None for a fresh run."""
    from train_shapes.common import config_from_state, load_checkpoint, save_checkpoint

    state = load_checkpoint(ckpt)
    if state is not None and not args.resume:
        raise SystemExit(f"{ckpt} exists: pass --resume to continue it, or delete it to start over")
    cfg = replace(config_from_state(state, default), **overrides)
    if args.from_weights is not None:
        if state is not None:
            raise SystemExit(f"--from-weights: {ckpt} exists; drop --from-weights and pass --resume to continue "
                             f"it, or delete it to start from the weights")
        from train_shapes.continue_from import state_from_weights

        state = state_from_weights(cfg, args.from_weights)
        cfg = replace(cfg, tr_restart=state["tr_step"])
        state["config"] = asdict(cfg)
        save_checkpoint(state)  # saved at once: a run stopped before its first save resumes from here
        log("from weights", path=str(args.from_weights), step=state["tr_step"],
            latent_cache=state.get("cache_name", "none found: rebuilt from this VAE"))
    return state, cfg


def _run_stages(args: argparse.Namespace, cfg, state: dict | None, log, weights: Path, ckpt: Path) -> dict:
    """3. Stages: the ones --stage asks for, from where the checkpoint is; returns the final state."""
    from train_shapes.common import save_checkpoint

    if state is None:
        state = {"stage": "vae"}
    state["config"] = asdict(cfg)
    log("start", stage=args.stage, at=state["stage"], threads=args.threads, ckpt=str(ckpt))
    order = ["vae", "cache", "transformer", "export", "done"]
    wanted = order[:-1] if args.stage == "all" else [args.stage]

    def ready(stage: str) -> bool:
        if order.index(state["stage"]) < order.index(stage):
            if args.stage != "all":
                raise SystemExit(f"--stage {stage}: the checkpoint is at stage {state['stage']!r}; run that first")
            return False
        return True

    from train_shapes.export import export
    from train_shapes.transformer import build_cache, train_transformer
    from train_shapes.vae import train_vae

    for stage in wanted:
        if not ready(stage):
            break
        if stage == "vae" and state["stage"] == "vae":
            state = train_vae(cfg, state, log, args.max_steps)
        elif stage == "cache" and (state["stage"] == "cache" or args.stage == "cache"):
            state = build_cache(cfg, state, log)
        elif stage == "transformer" and state["stage"] == "transformer":
            if not _cache_ok(cfg, state):  # fresh machine: rebuild the git-ignored cache from the VAE
                state = build_cache(cfg, state, log)
            state = train_transformer(cfg, state, log, args.max_steps)
        elif stage == "export" and state["stage"] in ("export", "done"):
            export(cfg, state, log, weights)
            state["stage"] = "done"
            save_checkpoint(state)
    return state


def _cache_ok(cfg, state) -> bool:
    from train_shapes.transformer import load_cache

    try:
        load_cache(cfg, state)
        return True
    except FileNotFoundError:
        return False


if __name__ == "__main__":
    raise SystemExit(main())
