"""Gather a run's report: its plan, what it measured (metrics.jsonl), registry events, sample images.

    rep = build_report(Registry().get_run("8f3c"), events=Registry().events("8f3c"))
    rep = build_report_from_dir("runs/jit-b16")     # a run folder without a registry row
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from jitplan.calibration.drift import DRIFT
from jitplan.calibration.measured import Measurement, metrics_path, read_records, summarize
from jitplan.calibration.replan_view import replan_view
from jitplan.errors import UsageError
from jitplan.runspec import load_run_spec

MAX_IMAGES = 8
MAX_IMAGE_BYTES = 2 * 2**20


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Compared(_M):
    quantity: str
    planned: float | None
    measured: float | None
    unit: str
    drift: float | None = None  # measured / planned - 1
    flagged: bool = False  # |drift| > 15%


class Event(_M):
    ts: float
    kind: str
    message: str


class Image(_M):
    name: str
    data_uri: str


class Report(_M):
    run_id: str | None
    name: str
    status: str | None
    plan_path: str | None
    gpu: str | None
    time_source: str | None
    compared: list[Compared]
    series: dict[str, list[tuple[float, float]]]  # name -> [(step, value)]
    measured: Measurement | None
    events: list[Event]
    images: list[Image]
    trajectory_pages: list[str]
    planned_lines: dict[str, float] = {}  # chart label -> the plan's value (a dashed line on that chart)
    images_skipped: list[str] = []  # PNGs too large (or too many) to inline, with their sizes
    has_plan: bool = False
    on_gpu: bool = False  # the run measured GPU memory (a CPU run cannot calibrate a GPU plan)
    replan: list[str] = []  # plan -> measured -> re-planned (jitplan.calibration.replan_view), when re-planned


def _cmp(quantity: str, planned: float | None, measured: float | None, unit: str) -> Compared:
    drift = None if not planned or measured is None else measured / planned - 1
    return Compared(quantity=quantity, planned=planned, measured=measured, unit=unit, drift=drift,
                    flagged=drift is not None and abs(drift) > DRIFT)


def _series(recs: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    keys = {"loss": "loss", "img_per_s": "images/s", "peak_reserved_mib": "GPU reserved (MiB)",
            "nvml_used_mib": "GPU used, NVML (MiB)", "peak_mem_mib": "peak memory (MiB)",
            "host_rss_mib": "host RAM (MiB)", "step_s": "step time (s)"}
    out: dict[str, list[tuple[float, float]]] = {}
    for k, label in keys.items():
        pts = [(float(r["step"]), float(r[k])) for r in recs if isinstance(r.get(k), (int, float)) and "step" in r]
        if pts:
            out[label] = pts
    return out


def _images(out_dir: Path) -> tuple[list[Image], list[str], list[str]]:
    """(inlined PNGs, trajectory pages, PNGs not inlined with why): a big samples.png is named, not hidden."""
    imgs: list[Image] = []
    skipped: list[str] = []
    for p in sorted(out_dir.rglob("*.png")):
        rel, size = str(p.relative_to(out_dir)), p.stat().st_size
        if size > MAX_IMAGE_BYTES or len(imgs) >= MAX_IMAGES:
            skipped.append(f"{rel} ({size / 1e6:.1f} MB)")
            continue
        imgs.append(Image(name=rel, data_uri="data:image/png;base64," + base64.b64encode(p.read_bytes()).decode()))
    pages = [str(p) for p in sorted(out_dir.rglob("*.html")) if p.name != "report.html"][:MAX_IMAGES]
    return imgs, pages, skipped


def planned_split(est: Any) -> tuple[float | None, float | None, float | None]:
    """(data wait, compute, optimizer) per step from the plan's time terms, as the trainer splits its step:
    compute = forward + backward with the gradient all-reduce; optimizer = AdamW + EMAs + the host syncs."""
    if est is None or not est.step_breakdown:
        return None, None, None
    by: dict[str, float] = {}
    for t in est.step_breakdown:
        by[t.name] = by.get(t.name, 0.0) + t.seconds
    data = by.pop("data wait", 0.0) + by.pop("data (in process)", 0.0)
    opt = by.pop("optimizer + EMA", 0.0) + by.pop("host syncs", 0.0)
    by.pop("calibration", None)
    by.pop("measured", None)
    return data, sum(by.values()), opt


def build_report(*, run_id: str | None, name: str, status: str | None, plan_path: str | None, run_dir: str | Path,
                 events: Sequence[Any] = ()) -> Report:

    spec = None
    if plan_path and Path(plan_path).is_file():
        try:
            spec = load_run_spec(plan_path)
        except UsageError:
            spec = None
    out_dir = Path(metrics_path(run_dir, spec.train.output_dir if spec else ".")).parent
    if not (out_dir / "metrics.jsonl").is_file():  # a run folder laid out otherwise: the first metrics found
        found = sorted(Path(run_dir).rglob("metrics.jsonl"))
        out_dir = found[0].parent if found else out_dir
    recs = read_records(out_dir / "metrics.jsonl")
    m = summarize(out_dir / "metrics.jsonl")
    plan = spec.plan if spec else None
    est = plan.estimates if plan else None
    g = (lambda attr: getattr(m, attr) if m else None)  # noqa: E731
    split = planned_split(est)
    compared = [
        _cmp("step time", est.step_time_s if est else None, g("step_time_s"), "s"),
        _cmp("images/s (all GPUs)", est.images_per_s if est else None, g("images_per_s"), "img/s"),
        _cmp("GPU memory per GPU", est.memory_per_gpu_bytes / 2**30 if est else None,
             m.memory_used_bytes / 2**30 if m and m.memory_used_bytes else None, "GiB"),
        _cmp("host RAM per node", est.host_ram_needed_bytes / 2**30 if est else None,
             m.host_ram_peak_bytes / 2**30 if m and m.host_ram_peak_bytes else None, "GiB"),
        _cmp("data wait per step", split[0], g("data_wait_s"), "s"),
        _cmp("compute per step", split[1], g("compute_s"), "s"),
        _cmp("optimizer per step", split[2], g("optimizer_s"), "s"),
    ]
    lines = {} if est is None else {
        "step time (s)": est.step_time_s,
        "GPU used, NVML (MiB)": est.memory_per_gpu_bytes / 2**20,
        "GPU reserved (MiB)": est.memory_per_gpu_bytes / 2**20, "host RAM (MiB)": est.host_ram_needed_bytes / 2**20}
    imgs, pages, skipped = _images(out_dir) if out_dir.is_dir() else ([], [], [])
    return Report(
        run_id=run_id, name=name, status=status, plan_path=plan_path,
        gpu=(f"{plan.hardware.world_size} x {plan.hardware.gpu.name}" if plan and plan.hardware.gpu else None),
        time_source=est.time_source if est else None, compared=compared, series=_series(recs), measured=m,
        events=[Event(ts=e.ts, kind=e.kind, message=e.message) for e in events], images=imgs,
        trajectory_pages=pages, planned_lines=lines, images_skipped=skipped, has_plan=plan is not None,
        on_gpu=bool(m and m.peak_reserved_bytes is not None),
        replan=view.lines() if (view := replan_view(out_dir)) is not None else [])
