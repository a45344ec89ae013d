"""The render farm: batches of shots as Ray work, one actor per GPU (or per CPU slot), the film
assembled by the driver.

    reel render film.toml --cluster local --workers 2          # a Ray instance on this machine
    reel render film.toml --cluster auto                        # join a running cluster (ray start ...)
    reel render film.toml --cluster ray://head:10001            # Ray client to a remote head

Each actor loads the model once and renders many batches into its own scratch folder; the clips and
manifests come back to the driver as bytes and are written into the render store atomically, so no
shared storage is needed (model folders and LoRA files must exist at the same paths on every node).
A worker that dies mid-batch is replaced and its batch rendered again; batches with the same adapter set
go to the worker that last used that set, to spare LoRA switches.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from reel.engine.plan import RenderPlan, ShotJob
from reel.engine.runtime import Engine, FilmResult, ShotResult
from reel.engine.store import RenderStore, atomic_path

MAX_TRIES = 3


class ClusterError(RuntimeError):
    """The cluster cannot be used or a batch failed on every try; the message says what to do."""


class WorkerInputError(ValueError):
    """A worker rejected an input (a LoRA, an upscaler, ...) before rendering; nothing was written."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise ClusterError("--cluster needs Ray, an optional extra: pip install 'reel[cluster]' (or pip install ray)") \
            from None
    return ray


def connect(address: str, workers: int | None) -> tuple[object, bool]:
    """Start or join Ray; returns (ray, whether we started it and must shut it down)."""
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    if address == "local":
        ray.init(num_cpus=max(1, workers or os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
        return ray, True
    try:
        ray.init(address=address, log_to_driver=False)
    except Exception as err:  # connection errors come in many types
        raise ClusterError(f"--cluster {address}: cannot connect to Ray ({err}); start it with `ray start --head` "
                           "on the head node and `ray start --address HEAD:6379` on the others") from None
    return ray, True


class ShotWorker:
    """One Ray actor: an Engine on its GPU (or CPU slot) that renders batches and returns the files."""

    def __init__(self, threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.engine = Engine("cuda" if torch.cuda.is_available() else "cpu")
        self.scratch = Path(tempfile.mkdtemp(prefix="reel-worker-"))

    def pid(self) -> int:
        return os.getpid()

    def render(self, plan: RenderPlan, jobs: tuple[ShotJob, ...], sources: dict[str, bytes]) -> list[dict]:
        """Render one batch; `sources` are the clips that continue_from shots start from (sent by the driver)."""
        engine = self.engine
        batch_plan = replace(plan, jobs=jobs, batches=(jobs,))
        engine.prepare(batch_plan)
        store = RenderStore(self.scratch / "store", ext=_ext(plan))
        store.prepare()
        for shot_id, data in sources.items():
            store.shot_video(shot_id).write_bytes(data)
        whash = engine.weights_hash(plan.film.model)
        lhash = {p: engine.file_hash(p) for j in jobs for _, p, _ in j.adapters}
        results = engine.render_resilient(batch_plan, jobs, store, whash, lhash)
        for shot_id in sources:
            store.shot_video(shot_id).unlink(missing_ok=True)
        files = []
        for r in results:
            sound = store.shot_audio(r.shot_id)  # the model's own sound (LTX-2), beside the clip
            files.append({"shot_id": r.shot_id, "video": r.video.read_bytes(), "manifest": r.manifest.read_bytes(),
                          "audio": sound.read_bytes() if sound.is_file() else None,
                          "timings": r.timings, "device": str(engine.device)})
            r.video.unlink()
            r.manifest.unlink()
            sound.unlink(missing_ok=True)
        return files


def _ext(plan: RenderPlan) -> str:
    from reel.engine.post.encode import get_codec

    return get_codec(plan.film.codec).ext


@dataclass
class Event:
    kind: str  # "started" | "finished" | "replaced" | "reused"
    batch: tuple[str, ...]
    worker: int  # actor index
    pid: int | None = None
    detail: str = ""


def render_on_cluster(plan: RenderPlan, out_dir: Path, address: str = "local", workers: int | None = None,
                      force: bool = False, progress=None,
                      on_event: Callable[[Event], None] | None = None) -> FilmResult:
    """Render the plan's batches on Ray actors, write results into the store, assemble the film."""
    ray, started = connect(address, workers)
    out_dir = Path(out_dir)
    root = out_dir / "preview" if plan.preview else out_dir
    created = not root.exists()
    store = RenderStore(root, ext=_ext(plan))
    try:
        with store.locked():
            store.prepare()
            return _render(ray, plan, store, workers, force, progress, on_event or (lambda e: None))
    except WorkerInputError:
        if created and not any(p.name != ".reel.lock" for p in root.rglob("*") if p.is_file()):
            shutil.rmtree(root, ignore_errors=True)  # bad input: leave nothing behind
        raise
    finally:
        if started:
            ray.shutdown()


def _render(ray, plan, store: RenderStore, workers, force, progress, emit) -> FilmResult:
    from reel.engine.progress import RenderProgress

    progress = progress or RenderProgress(quiet=True)
    driver = Engine("cpu", progress=progress)  # bookkeeping only: fingerprints, audio checks, assembly
    driver.check_inputs(plan)
    results, queue = driver.reusable(plan, store, force)  # the runtime's own resume rule
    for shot_id in results:
        emit(Event("reused", (shot_id,), -1))
    progress.film(len(plan.jobs))
    for _ in results:
        progress.shot_done("")
    # 1. actors: one per GPU, else one per CPU slot
    actors, new_actor = _actors(ray, workers, len(queue))
    last_set: dict[int, tuple] = {}
    tries: dict[tuple[str, ...], int] = {}
    running: dict[object, tuple[int, tuple[ShotJob, ...]]] = {}

    idle: set[int] = set()

    def ready(batch) -> bool:  # a continue_from shot waits until its source clip is in the store
        return all(j.continue_from is None or j.continue_from in results for j in batch)

    def dispatch(idx: int) -> None:
        waiting = [b for b in queue if ready(b)]
        if not waiting:
            idle.add(idx)
            return
        # adapter affinity: the batch with this worker's last adapter set, else the first in order
        pick = next((b for b in waiting if b[0].batch_key.adapters == last_set.get(idx)), waiting[0])
        queue.remove(pick)
        idle.discard(idx)
        last_set[idx] = pick[0].batch_key.adapters
        ids = tuple(j.shot_id for j in pick)
        tries[ids] = tries.get(ids, 0) + 1
        sources = {j.continue_from: store.shot_video(j.continue_from).read_bytes() for j in pick if j.continue_from}
        pid = ray.get(actors[idx].pid.remote())
        running[actors[idx].render.remote(plan, pick, sources)] = (idx, pick)
        emit(Event("started", ids, idx, pid))

    for idx in range(len(actors)):
        dispatch(idx)
    # 2. collect, replace dead workers, keep every worker busy
    while running:
        done, _ = ray.wait(list(running), num_returns=1)
        ref = done[0]
        idx, batch = running.pop(ref)
        ids = tuple(j.shot_id for j in batch)
        try:
            files = ray.get(ref)
        except ray.exceptions.RayActorError as err:
            if tries[ids] >= MAX_TRIES:
                raise ClusterError(f"shots {', '.join(ids)} failed on {MAX_TRIES} workers; last: {err}") from None
            actors[idx] = new_actor()
            last_set.pop(idx, None)
            queue.insert(0, batch)
            emit(Event("replaced", ids, idx, detail=type(err).__name__))
            dispatch(idx)
            continue
        except ray.exceptions.RayTaskError as err:
            cause = getattr(err, "cause", None)
            if isinstance(cause, ValueError):  # an input a worker refused (LoRA, upscaler, ...): exit 2
                raise WorkerInputError(str(cause)) from None
            raise ClusterError(f"shots {', '.join(ids)} failed: {cause or err}") from None
        for f in files:
            results[f["shot_id"]] = _store_shot(store, f)
            progress.shot_done(f"shot {f['shot_id']}: rendered on worker {idx} ({f['device']}), "
                               f"{f['timings']['total_s']:.2f} s")
        emit(Event("finished", ids, idx))
        dispatch(idx)
        for other in sorted(idle):  # a finished source may have made waiting batches ready
            dispatch(other)
    for actor in actors:
        ray.kill(actor)
    ordered = tuple(results[j.shot_id] for j in plan.jobs)
    return driver.assemble(plan, store, ordered, force)


def _store_shot(store: RenderStore, f: dict) -> ShotResult:
    """A worker's clip and manifest into the store: old manifest out, clip in, then its manifest (a clip never
    sits beside a stale manifest)."""
    store.shot_manifest(f["shot_id"]).unlink(missing_ok=True)
    files = [(store.shot_video(f["shot_id"]), f["video"])]
    if f.get("audio") is not None:  # the shot's own sound goes in before the manifest that names it
        files.append((store.shot_audio(f["shot_id"]), f["audio"]))
    for name, data in (*files, (store.shot_manifest(f["shot_id"]), f["manifest"])):
        with atomic_path(name) as tmp:
            tmp.write_bytes(data)
    return ShotResult(f["shot_id"], store.shot_video(f["shot_id"]), store.shot_manifest(f["shot_id"]), "rendered",
                      f["timings"])


def _actors(ray, workers: int | None, batches: int):
    """(the actors, a function that starts one more): one per GPU, else one per CPU slot."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    count = workers or max(1, gpus or int(ray.cluster_resources().get("CPU", 1)))
    count = max(1, min(count, batches or 1))
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)) // count)
    actor_cls = ray.remote(num_gpus=1)(ShotWorker) if gpus else ray.remote(num_cpus=cpus)(ShotWorker)

    def new_actor():
        return actor_cls.remote(None if gpus else cpus)

    return [new_actor() for _ in range(count)], new_actor

