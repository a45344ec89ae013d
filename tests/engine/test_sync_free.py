"""The denoising loop never waits on the device after its first step (issue #23): real tiny models rendered by
the real Engine, with every op that would make the host wait for a GPU counted in steps 2..N.

How the counting works on the CPU: a TorchDispatchMode sees the aten ops that read a tensor's value on the host
(`_local_scalar_dense` = item/float/int/bool/`if t:`/indexing with a tensor, nonzero and the other ops whose output
size depends on the data, equal, is_nonzero, linalg_solve's error check) and copies between devices (real on a
GPU; on the CPU there is only one device), plus random draws from a CPU generator and tensors made from host data
(`torch.tensor(list)`), which become host-to-device copies on a GPU. A TorchFunctionMode adds the calls that never
reach dispatch for a CPU tensor (tolist, numpy, cpu, __array__, __repr__, __format__). The counter is armed by the
first step's progress callback (step 1 may set up: schedulers, generators) and disarmed when the sampler returns
(RenderProgress.denoised). What the CPU cannot show: a `.to(device)` of a host tensor is a no-op here, so such copies
are kept out of the loop by construction (schedules, coefficients and noise are moved before it) and read in review.
"""

from __future__ import annotations

import textwrap
import traceback
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from reel.engine.plan import build_plan
from reel.engine.progress import RenderProgress
from reel.engine.runtime import Engine
from reel.engine.sampling import guided, sample
from reel.engine.spec import load_film

READS = {"aten._local_scalar_dense", "aten.nonzero", "aten.equal", "aten.is_nonzero", "aten._linalg_check_errors",
         "aten.linalg_solve", "aten.linalg_solve_ex", "aten._linalg_solve_ex", "aten.masked_select", "aten.unique_dim",
         "aten._unique", "aten._unique2", "aten.unique_consecutive", "aten.bincount"}
# torch.tensor / as_tensor of a Python list or an array (a 0-d one is how `x[i] = True` passes its scalar: no copy)
HOST_DATA = {"aten.lift_fresh", "aten.lift_fresh_copy"}
HOST_CALLS = {"tolist", "numpy", "cpu", "__array__", "__repr__", "__format__"}


def _where() -> str:
    """The innermost frame outside torch and the counter: where the syncing call was made."""
    for frame in reversed(traceback.extract_stack()):
        if "/torch/" not in frame.filename and frame.name not in ("_where", "hit", "__torch_dispatch__",
                                                                  "__torch_function__"):
            return f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno}: {frame.line}"
    return "?"


def _devices(args, kwargs) -> set[str]:
    found = set()
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor):
            found.add(a.device.type)
    return found


class SyncCounter:
    """Counts host-device synchronisations while `armed`; `hits` holds (what, where) for each."""

    def __init__(self):
        self.armed = False
        self.hits: list[tuple[str, str]] = []
        self.ops_seen = 0  # every aten op while armed: proof the window covered real work

    def hit(self, what: str) -> None:
        self.hits.append((what, _where()))

    def __enter__(self):
        self._modes = [_Dispatch(self), _Function(self)]
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc):
        for mode in reversed(self._modes):
            mode.__exit__(*exc)


class _Dispatch(TorchDispatchMode):
    def __init__(self, counter: SyncCounter):
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        c = self.counter
        if c.armed:
            c.ops_seen += 1
            name = str(func.overloadpacket)
            if name in READS or (name == "aten.repeat_interleave" and kwargs.get("output_size") is None):
                c.hit(name)
            elif name in HOST_DATA and args[0].dim() > 0:
                c.hit(f"{name} (host data made into a tensor)")
            elif isinstance(kwargs.get("generator"), torch.Generator) and kwargs["generator"].device.type == "cpu":
                c.hit(f"{name} with a CPU generator (host noise that must travel to the device)")
            elif name == "aten._to_copy" and "device" in kwargs and {torch.device(kwargs["device"]).type} != \
                    _devices(args[:1], {}):
                c.hit(f"{name} across devices")
            elif name == "aten.copy_" and len(_devices(args[:2], {})) > 1:
                c.hit(f"{name} across devices")
        return func(*args, **kwargs)


class _Function(TorchFunctionMode):
    def __init__(self, counter: SyncCounter):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.counter.armed and getattr(func, "__name__", "") in HOST_CALLS:
            self.counter.hit(f"Tensor.{func.__name__}")
        return func(*args, **(kwargs or {}))


class ArmingProgress(RenderProgress):
    """Arms the counter after each batch's first step and disarms it when the batch's sampler returns."""

    def __init__(self, counter: SyncCounter):
        super().__init__(quiet=True)
        self.counter = counter
        self.steps_counted = 0

    def step(self, state) -> None:
        super().step(state)
        if self.counter.armed:
            self.steps_counted += 1
        if state.step == 1:
            self.counter.armed = True

    def denoised(self, shot_ids) -> None:
        self.counter.armed = False


def render_counting(spec: Path, out: Path, preview: bool = False) -> tuple[list, ArmingProgress]:
    counter = SyncCounter()
    progress = ArmingProgress(counter)
    with counter:
        Engine("cpu", progress=progress).render(build_plan(load_film(spec), preview=preview), out)
    assert not counter.armed and progress.steps_counted >= 2 and counter.ops_seen > 100  # the window saw the steps
    return counter.hits, progress


def film(model, steps: int = 4, extra: str = "", shot: str = "") -> str:
    return textwrap.dedent(f"""
        [film]
        model = "{model}"
        seed = 3
        steps = {steps}
        {extra}

        [[shots]]
        id = "a"
        prompt = "a red circle moving left on a black background"
        {shot}
        """)


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "film.toml"
    path.write_text(body, encoding="utf-8")
    return path


# -- Wan 2.1 T2V: CFG batch and a character LoRA whose weight changes per step (AdapterBank's per-step hook) --
@pytest.fixture(scope="module")
def hero_lora(tmp_path_factory, tiny_model):
    from reel.models import wan
    from tests.lora_files import random_lora, write_lora

    comps = wan.load(tiny_model, torch.device("cpu"), torch.float32)
    return write_lora(random_lora(comps.transformer, seed=1), tmp_path_factory.mktemp("lora") / "hero.safetensors",
                      "diffusers")


@pytest.mark.parametrize("scheduler,weight", [("unipc", "[1.0, 0.3]"), ("euler", "0.8"), ("unipc", "0.8")])
def test_wan_t2v_with_guidance_and_a_character_never_syncs(tiny_model, hero_lora, tmp_path, scheduler, weight):
    extra = f'scheduler = "{scheduler}"\nguidance = 4.0\n\n[characters.hero]\nlora = "{hero_lora}"\n' \
            f'trigger = "sks"\nweight = {weight}'
    body = film(tiny_model, extra=extra).replace("a red circle", "a {hero}")
    hits, _ = render_counting(write(tmp_path, body), tmp_path / "out")
    assert hits == []


def test_wan_22_a14b_two_experts_never_sync(tmp_path):
    from reel.models.tiny import build_tiny_wan

    folder = build_tiny_wan(tmp_path / "a14b", variant="a14b")
    for scheduler in ("unipc", "euler"):
        body = film(folder, steps=6, extra=f'scheduler = "{scheduler}"\nguidance = 3.0')
        hits, _ = render_counting(write(tmp_path, body), tmp_path / f"out-{scheduler}")
        assert hits == [], scheduler


def test_wan_22_a14b_preview_with_the_consistency_sampler_never_syncs(tmp_path):
    """A preview ("lcm") of Wan 2.2 A14B: the family's make_sampler routes the consistency sampler's steps to the
    experts from a CPU copy of its schedule (steps 1-2 above the boundary, 3-4 below), so nothing is read back."""
    from reel.models import wan
    from reel.models.tiny import build_tiny_wan
    from tests.lora_files import random_lora, write_lora

    folder = build_tiny_wan(tmp_path / "a14b", variant="a14b")
    comps = wan.load(folder, torch.device("cpu"), torch.float32)
    lora = write_lora(random_lora(comps.transformer, seed=2), tmp_path / "preview.safetensors", "diffusers")
    body = film(folder, extra=f'preview_lora = "{lora}"\npreview_steps = 4\npreview_shift = 5.0')
    hits, progress = render_counting(write(tmp_path, body), tmp_path / "out", preview=True)
    assert hits == [] and progress.steps_counted >= 3


def test_ltx_never_syncs(tmp_path):
    from tests.models.test_ltx import build_tiny_ltx

    folder = build_tiny_ltx(tmp_path / "ltx")
    for scheduler in ("unipc", "default"):
        hits, _ = render_counting(write(tmp_path, film(folder, steps=3, extra=f'scheduler = "{scheduler}"')),
                                  tmp_path / f"out-{scheduler}")
        assert hits == [], scheduler


def test_hunyuan_never_syncs(tmp_path):
    from tests.models.test_hunyuan import build_tiny_hunyuan

    folder = build_tiny_hunyuan(tmp_path / "hunyuan")
    for scheduler in ("unipc", "default"):
        hits, _ = render_counting(write(tmp_path, film(folder, steps=3, extra=f'scheduler = "{scheduler}"')),
                                  tmp_path / f"out-{scheduler}")
        assert hits == [], scheduler


def test_cogvideox_ddim_and_dpm_never_sync(tmp_path):
    from tests.models.test_cogvideox import build_tiny_cogvideox

    folders = {"ddim": build_tiny_cogvideox(tmp_path / "cog"),
               "dpm": build_tiny_cogvideox(tmp_path / "cog15", version="1.5", scheduler="dpm", seed=1)}
    for scheduler, folder in folders.items():
        hits, _ = render_counting(write(tmp_path, film(folder, steps=3)), tmp_path / f"out-{scheduler}")
        assert hits == [], scheduler


def test_builtin_preview_with_the_consistency_sampler_never_syncs(tmp_path):
    hits, progress = render_counting(write(tmp_path, film("shapes")), tmp_path / "out", preview=True)
    assert hits == [] and progress.steps_counted >= 3  # the built-in preview: 4 consistency steps


# -- the counter itself catches syncs -------------------------------------------------------------------------
def _count(sampler, steps: int = 4) -> list:
    counter = SyncCounter()
    velocity = guided(lambda x, t, c: x * 0.5 + c.mean(), torch.zeros(1, 1, 1), None, 1.0)

    def on_step(state) -> None:
        if state.step == 1:
            counter.armed = True

    with counter:
        sample(sampler, velocity, torch.randn(1, 4, 3, 4, 4, generator=torch.Generator().manual_seed(0)), steps,
               on_step=on_step)
    return counter.hits


def test_the_counter_catches_a_read_in_step_two():
    from reel.models.common import flow_unipc
    from reel.models.samplers import unipc

    inner = unipc(lambda: flow_unipc(3.0))

    def syncing(denoiser, x, steps, callback=None):
        def reads(x, t, i):
            if i == 1:
                x.sum().item()  # a deliberate sync in step 2
            return denoiser(x, t, i)
        return inner(reads, x, steps, callback)

    assert _count(inner) == []
    hits = _count(syncing)
    assert len(hits) == 1 and hits[0][0] == "aten._local_scalar_dense" and "x.sum().item()" in hits[0][1]


def test_the_counter_catches_host_calls_and_diffusers_own_unipc_step():
    from diffusers import FlowMatchEulerDiscreteScheduler

    from reel.models.common import flow_unipc
    from reel.models.samplers import diffusers_schedule, diffusers_steps, euler

    inner = euler(diffusers_schedule(lambda: FlowMatchEulerDiscreteScheduler(shift=3.0)))

    def listing(denoiser, x, steps, callback=None):
        def reads(x, t, i):
            x.tolist()  # never reaches dispatch on a CPU tensor: the function mode sees it
            return denoiser(x, t, i)
        return inner(reads, x, steps, callback)

    assert _count(inner) == []
    assert [what for what, _ in _count(listing)] == ["Tensor.tolist"] * 3  # steps 2, 3 and 4
    solves = [what for what, _ in _count(diffusers_steps(lambda: flow_unipc(3.0)), steps=6)]
    assert "aten._linalg_check_errors" in solves  # diffusers' corrector solves its 2x2 system on the device
