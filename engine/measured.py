"""What `[speed]` "auto" may turn on, from measurements only: the checked-in table engine/measured_speedups.json.

    value, why = measured_choice("attention", ["cudnn", "flash3"], "NVIDIA H200")   # None: keep the baseline
    value, why = measured_choice("compile", ["regional", "full"], gpu, context={"fused_kernels": "off"})
    record_row({"gpu": "NVIDIA H200", "setting": "compile", "value": "regional", ...})   # `reel bench --record`

A value is chosen only if the table has a row for that setting and value on a GPU of exactly that name
(torch.cuda.get_device_name), whose other_settings match the render's (`context`), and every such row shows a
speedup above MIN_SPEEDUP; among those, the largest measured speedup wins. Lossy values (LOSSY: 8-bit attention,
fp8 matmuls) are never chosen, whatever a row says. `why` says which row decided, or that none did, for the
manifest. No torch here: the table is plain JSON.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from reel.engine.store import atomic_write_json

# reel.engine is a namespace package (no __init__.py), which importlib.resources cannot anchor; the table sits
# beside this module in a checkout and in a wheel (pyproject.toml package-data "reel.engine" = ["*.json"]).
TABLE = Path(__file__).with_name("measured_speedups.json")
MIN_SPEEDUP = 1.02  # below this a measured difference is noise, not a reason to change a default
LOSSY = {"attention": {"sageattention"}, "fp8_matmul": {"on", "true"}, "weights": {"fp8"}}
ABOUT = ("Speed-ups measured on real GPUs, the only source of what [speed] \"auto\" turns on there "
         "(engine/measured.py).")


class MeasuredTableError(ValueError):
    """The table or a row is not valid; the message names the file, the row and the field."""


class MeasuredRow(BaseModel):
    """One measurement: `setting` = `value` ran at `s_per_step` where the baseline run (the same but for that
    setting, described in `baseline`) ran at `baseline_s_per_step`, on one GPU, one model size."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    gpu: str = Field(min_length=1)  # torch.cuda.get_device_name(), e.g. "NVIDIA H200"
    setting: str = Field(min_length=1)  # a [speed] key: attention, compile, fused_kernels, fp8_matmul, ...
    value: str = Field(min_length=1)  # the value measured, as written in [speed]
    model: str = Field(min_length=1)  # e.g. "wan2.1-t2v-1.3b"
    size: str = Field(min_length=1)  # e.g. "832x480x81, 6 steps"
    s_per_step: float = Field(gt=0)  # seconds per denoising step with the value, after warm-up
    baseline_s_per_step: float = Field(gt=0)  # seconds per step of the baseline run
    speedup: float = Field(gt=0)  # baseline_s_per_step / s_per_step (to 1 %: the figures are rounded)
    psnr_db: float | None = None  # output against diffusers' frames (reel bench) or the baseline's; None: not measured
    date: str  # YYYY-MM-DD of the measurement
    versions: str = Field(min_length=1)  # e.g. "torch 2.11+cu130, diffusers 0.42.1"
    source: str = Field(min_length=1)  # where the raw numbers are (issue, RESULTS.md section, command)
    baseline: str = ""  # what the baseline run was
    other_settings: dict[str, str] = {}  # what the measured run also had; the row applies only to renders with it
    lossy: bool = False  # the value changes the output beyond rounding: auto never chooses it (nor LOSSY values)

    @field_validator("value", mode="before")
    @classmethod
    def _toml_bool(cls, value):
        return str(value).lower() if isinstance(value, bool) else value  # fp8_matmul = true -> "true"

    @field_validator("date")
    @classmethod
    def _iso_date(cls, value: str) -> str:
        try:
            dt.date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"date {value!r} must be YYYY-MM-DD, e.g. 2026-12-04") from None
        return value

    @model_validator(mode="after")
    def _speedup_matches(self) -> MeasuredRow:
        ratio = self.baseline_s_per_step / self.s_per_step
        if abs(self.speedup - ratio) > max(0.0015, 0.01 * ratio):  # rounding of the three figures, not more
            raise ValueError(f"speedup {self.speedup} is not baseline_s_per_step / s_per_step = {ratio:.3f}: "
                             f"write {round(ratio, 3)}")
        return self


def load_table(table: str | Path | None = None) -> list[MeasuredRow]:
    """The rows of `table` (default: the checked-in engine/measured_speedups.json); a missing file has none."""
    path = Path(table) if table is not None else TABLE
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise MeasuredTableError(f"{path}: cannot be read as JSON ({err}) — fix or delete the file") from None
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise MeasuredTableError(f'{path}: expected {{"rows": [...]}} at the top level — fix the file')
    return [_row(r, f"{path}: rows[{i}]") for i, r in enumerate(rows)]


def _row(row, where: str) -> MeasuredRow:
    if isinstance(row, MeasuredRow):
        return row
    try:
        return MeasuredRow.model_validate(row)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'row'}: {e['msg']}" for e in err.errors())
        raise MeasuredTableError(f"{where}: {problems} (fields: {', '.join(MeasuredRow.model_fields)})") from None


def _applies(row: MeasuredRow, context: dict | None) -> bool:
    """The row's other settings agree with the render's, where the render's are known (not absent or "auto")."""
    context = context or {}
    return all(context.get(k) in (None, "auto", v) for k, v in row.other_settings.items())


def _describe(row: MeasuredRow) -> str:
    return f"{row.speedup:.2f}x on {row.gpu} ({row.model}, {row.size}; {row.date})"


def measured_choice(setting: str, candidates, gpu_name: str, table: str | Path | None = None, *,
                    context: dict | None = None) -> tuple[str | None, str]:
    """(value, why): the candidate a recorded measurement shows fastest on `gpu_name`, or (None, why not).

    `candidates`: the values that can run here (the caller validated them); `context`: the render's other
    [speed] settings, matched against each row's other_settings. See the module docstring for the rule."""
    rows = [r for r in load_table(table) if r.gpu == gpu_name and r.setting == setting]
    lossy = LOSSY.get(setting, set())
    winners, notes = [], []
    for value in candidates:
        mine = [r for r in rows if r.value == value]
        fitting = [r for r in mine if _applies(r, context)]
        if value in lossy or any(r.lossy for r in mine):
            notes += [f"{value}: lossy, never chosen by auto"] if mine else []
        elif fitting and all(r.speedup > MIN_SPEEDUP for r in fitting):
            winners.append(min(fitting, key=lambda r: r.speedup))
        elif fitting:
            notes.append(f"{value}: measured {_describe(min(fitting, key=lambda r: r.speedup))}")
        elif mine:
            other = ", ".join(f"{k}={v}" for k, v in mine[0].other_settings.items())
            notes.append(f"{value}: measured {_describe(mine[0])} only with {other}")
    if winners:
        best = max(winners, key=lambda r: r.speedup)
        return best.value, f"{best.value}: measured {_describe(best)}"
    if notes:
        return None, "; ".join(notes)
    return None, f"no recorded measurement of {setting} on {gpu_name}"


def record_row(row: dict | MeasuredRow, table: str | Path | None = None) -> MeasuredRow:
    """Validate `row` (the fields of MeasuredRow; speedup must equal baseline_s_per_step / s_per_step within
    rounding) and append it to `table` (default: the checked-in engine/measured_speedups.json), written
    atomically. Returns the validated row; raises MeasuredTableError naming the bad field and the fix."""
    path = Path(table) if table is not None else TABLE
    checked = _row(row, "row")
    rows = load_table(path)
    about = ABOUT
    if path.exists():
        about = json.loads(path.read_text(encoding="utf-8")).get("about", ABOUT)
    atomic_write_json(path, {"about": about, "rows": [r.model_dump() for r in (*rows, checked)]})
    return checked
