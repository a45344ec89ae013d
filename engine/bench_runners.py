"""The two sides `reel bench` times on the same weights: reel (one Engine per path, each path's `[speed]` on top of
the defaults) and the family's own diffusers pipeline, called as its documentation shows (transformer in the run's
dtype, VAE in fp32, output_type="np", then export_to_video).

    reel = ReelRunner(path, folder, shot, device, work)      # reel.prepare() raises when the path cannot run here
    run = reel.run(out_dir)                                   # Run: s/step, denoise, decode+encode, peak memory, frames
    ref = DiffusersRunner(folder, reel.job, reel.components, device, dtype)
    run = ref.run(out_dir)

Each side synchronises the device where its denoising loop ends (the bench does, through its progress hook and the
pipeline's step callback), so a region's time is the device's, not the host's queueing.
"""

from __future__ import annotations

import inspect
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from reel.engine.bench_measure import PeakMemory, module_bytes, sync
from reel.engine.bench_paths import BenchPath
from reel.engine.progress import RenderProgress
from reel.engine.sampling import StepState


# Every side holds its whole model on the device, as a user with room to spare would run it: no offloading or tiling
# chosen from the free memory left by the sides loaded before it (and, on CUDA, bf16 weights unless a path says fp8).
PINNED_MEMORY = {"offload": "none", "vae_tiling": False}


def _modules(parts) -> list[torch.nn.Module]:
    """The torch modules among a components object's fields or a pipeline's components dict."""
    values = parts.values() if isinstance(parts, dict) else vars(parts).values()
    return [v for v in values if isinstance(v, torch.nn.Module)]


@dataclass
class Run:
    """One timed shot."""

    s_per_step: float
    denoise_s: float  # the denoising loop, device work included
    decode_s: float  # reel: decode + encode (streamed together); diffusers: decode to numpy
    total_s: float
    peak_bytes: int  # PeakMemory: CUDA peak allocated, or CPU RSS growth
    frames: np.ndarray | None = None  # (F, H, W, 3) uint8
    extra: dict = field(default_factory=dict)  # diffusers: decode + export_to_video seconds


class _LoopClock(RenderProgress):
    """Quiet progress that times the denoising loop on the device: it waits for the device when the loop starts
    (text encoding and noise done) and after its last step, as the diffusers side does at its first transformer call
    and its last step."""

    def __init__(self, device: torch.device):
        super().__init__(quiet=True)
        self.device = device
        self.start = self.end = 0.0

    def batch(self, shot_ids: tuple[str, ...], steps: int) -> None:
        sync(self.device)
        self.start = time.perf_counter()

    def step(self, state: StepState) -> None:
        if state.step == state.total:
            sync(self.device)
            self.end = time.perf_counter()


class ReelRunner:
    """reel's side for one path: an Engine with the path's [speed] over a one-shot film of the bench's setting."""

    def __init__(self, path: BenchPath, folder: Path, shot: dict, film: dict, device: torch.device, work: Path):
        from reel.engine.plan import build_plan
        from reel.engine.runtime import Engine
        from reel.engine.spec import film_from_dict

        self.path, self.device = path, device
        speed = PINNED_MEMORY | ({"weights": "bf16"} if device.type == "cuda" else {}) | path.speed
        spec = {"film": {"model": str(folder), **film}, "speed": speed, "shots": [shot]}
        self.film = film_from_dict(spec, work / f"{path.name}.toml")
        self.plan = build_plan(self.film)
        self.job = self.plan.jobs[0]
        self.clock = _LoopClock(device)
        self.engine = Engine(str(device), progress=self.clock)

    def prepare(self) -> None:
        """Load the model with this path's settings; raises (BackendError, ...) with every reason it cannot run."""
        self.engine.prepare(self.plan)

    @property
    def components(self):
        return self.engine.load(self.film.model)[1]

    @property
    def applied(self) -> dict:
        return self.engine.applied.get(str(self.film.model.path), {})

    def run(self, out: Path) -> Run:
        chunks: list[np.ndarray] = []
        self.engine.on_frames = lambda shot_id, frames: chunks.append(frames)  # (f, H, W, 3) uint8, before encoding
        sync(self.device)
        with PeakMemory(self.device, module_bytes(_modules(self.components))) as mem:
            start = time.perf_counter()
            result = self.engine.render(self.plan, out, force=True)
            total = time.perf_counter() - start
        self.engine.on_frames = None
        denoise = self.clock.end - self.clock.start
        decode = result.shots[0].timings["decode_encode_s"]  # from the loop's end (synced) to the encoder's close
        return Run(denoise / self.job.steps, denoise, decode, total, mem.bytes, np.concatenate(chunks))

    def close(self) -> None:
        self.engine = None


class DiffusersRunner:
    """The family's diffusers pipeline from the same folder: the class model_index.json names, the transformer and
    text encoder in `dtype`, the VAE in fp32; the shot's seed, size, frames, steps, guidance, text length and shift."""

    def __init__(self, folder: Path, job, components, family, device: torch.device, dtype: torch.dtype):
        import diffusers

        index = json.loads((folder / "model_index.json").read_text())
        vae_cls = getattr(diffusers, index["vae"][1])
        vae = vae_cls.from_pretrained(folder / "vae", local_files_only=True, dtype=torch.float32)
        pipe = getattr(diffusers, index["_class_name"]).from_pretrained(folder, vae=vae, local_files_only=True,
                                                                        dtype=dtype)
        pipe.set_progress_bar_config(disable=True)
        if "flow_shift" in pipe.scheduler.config:  # the shot's shift, as reel's sampler uses it
            pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, flow_shift=job.shift)
        if "shift" in pipe.scheduler.config and "flow_shift" not in pipe.scheduler.config:  # FlowMatchEuler
            pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, shift=job.shift)
        if getattr(pipe, "guider", None) is not None:  # modular guiders (HunyuanVideo 1.5): guidance lives there
            pipe.guider = pipe.guider.new(guidance_scale=job.guidance)
        if hasattr(pipe, "tokenizer_max_length"):  # ... and the text length on the pipeline
            pipe.tokenizer_max_length = job.max_sequence_length
        self.pipe = pipe.to(device)
        self.job, self.device = job, device
        kwargs = dict(prompt=job.prompt, height=job.height, width=job.width, num_frames=job.frames,
                      num_inference_steps=job.steps, guidance_scale=job.guidance,
                      max_sequence_length=job.max_sequence_length, output_type="np",
                      **family.pipeline_kwargs(components, negative_prompt=job.negative_prompt, fps=job.fps))
        takes = inspect.signature(pipe.__call__).parameters  # a pipeline without a standard argument gets none
        self.kwargs = {k: v for k, v in kwargs.items() if k in takes or "kwargs" in takes}
        if job.image:  # image-to-video: the same first frame reel starts from
            from PIL import Image

            self.kwargs["image"] = Image.open(job.image).convert("RGB")
        self._loop_start = self._loop_end = 0.0
        self.pipe.transformer.register_forward_pre_hook(self._first_forward)
        self._callback = "callback_on_step_end" in takes
        if not self._callback:  # (HunyuanVideo 1.5's pipeline has none): the loop ends where the decode begins
            self.pipe.vae.decoder.register_forward_pre_hook(self._decode_starts)

    def _first_forward(self, module, args) -> None:
        if self._loop_start == 0.0:
            sync(self.device)
            self._loop_start = time.perf_counter()

    def _decode_starts(self, module, args) -> None:
        if self._loop_end < self._loop_start:  # the first decoder call of this run (a tiled decode calls it again)
            sync(self.device)
            self._loop_end = time.perf_counter()

    def _step_end(self, pipe, i: int, t, kwargs: dict) -> dict:
        if i == self.job.steps - 1:
            sync(self.device)
            self._loop_end = time.perf_counter()
        return {}

    def run(self, out: Path) -> Run:
        from diffusers.utils import export_to_video

        self._loop_start = 0.0
        gen = torch.Generator("cpu").manual_seed(self.job.seed)
        sync(self.device)
        with PeakMemory(self.device, module_bytes(_modules(self.pipe.components))) as mem:
            start = time.perf_counter()
            callback = {"callback_on_step_end": self._step_end} if self._callback else {}
            video = self.pipe(**self.kwargs, generator=gen, **callback).frames[0]
            decoded = time.perf_counter()
            out.mkdir(parents=True, exist_ok=True)
            export_to_video(list(video), str(out / "diffusers.mp4"), fps=self.job.fps)
            exported = time.perf_counter()
        denoise = self._loop_end - self._loop_start
        frames = np.round(np.asarray(video) * 255).astype(np.uint8)  # (F, H, W, 3)
        return Run(denoise / self.job.steps, denoise, decoded - self._loop_end, exported - start, mem.bytes, frames,
                   {"decode_export_s": exported - self._loop_end})

    def close(self) -> None:
        self.pipe = None
