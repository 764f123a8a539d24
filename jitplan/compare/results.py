"""What a comparison produces: per-arm results, the metrics read back from a run, the markdown summary."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from jitmodel.records import read_records
from jitplan.compare.settings import Budget, _Strict

SCHEMA_VERSION: Literal[1] = 1


class ArmResult(_Strict):
    arm: str
    prediction: str
    loss_space: str
    model: str | None = None  # the network's name (JiT variant or factory); one for all arms of an objectives study
    model_spec: str | None = None  # the factory (FILE.py:factory, package.module:factory) or the JiT variant
    params: int | None = None  # trainable parameters of the network
    status: str  # finished | stopped (minutes budget) | failed
    message: str = ""
    run_dir: str
    steps: int | None = None
    images: int | None = None
    wall_s: float  # the whole run, start-up included
    images_per_s: float | None = None  # training throughput (median over the logged windows)
    peak_mem_mib: float | None = None
    mem_kind: str | None = None  # gpu_allocated | rss
    loss_curve: list[tuple[int, float]] = Field(default_factory=list)  # (step, loss in its own space)
    final_loss: float | None = None
    v_loss_common: float | None = None  # v-space loss on the fixed batch / t grid (comparable)
    v_loss_by_t: list[tuple[float, float]] = Field(default_factory=list)
    accuracy: float | None = None  # digits classifier on class-conditional samples
    fd_digits: float | None = None  # Fréchet distance in the digits classifier's feature space
    fid: float | None = None  # Inception FID against --ref-stats
    samples: int = 0
    grid: str | None = None


class CompareResult(_Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    variant: str
    img_size: int
    patch_dim: int  # values per patch: patch^2 * channels
    hidden: int
    data: str
    budget: Budget
    seed: int
    effective_batch: int
    backend: str
    weights: str  # ema1 | ema2 | raw: what was sampled and scored
    sample_steps: int
    arms: list[ArmResult]
    notes: list[str] = Field(default_factory=list)
    files: dict[str, str] = Field(default_factory=dict)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl (a torn last line from a killed run is skipped; jitmodel.records)."""
    return read_records(path)


def summarize_metrics(recs: list[dict[str, Any]]) -> dict[str, Any]:
    """Loss curve, median images/s (the first window, which holds start-up, only when it is the only one)
    and peak memory from training records. Pure.

        >>> summarize_metrics([{"step": 10, "loss": 2.0, "img_per_s": 5.0, "peak_mem_mib": 9.0, "mem_kind": "rss"},
        ...                    {"step": 20, "loss": 1.0, "img_per_s": 8.0, "peak_mem_mib": 10.0, "mem_kind": "rss"}])
        ... # doctest: +NORMALIZE_WHITESPACE
        {'loss_curve': [(10, 2.0), (20, 1.0)], 'final_loss': 1.0, 'images_per_s': 8.0, 'peak_mem_mib': 10.0,
         'mem_kind': 'rss'}
    """
    train = [r for r in recs if isinstance(r.get("loss"), (int, float)) and "step" in r]
    curve = [(int(r["step"]), float(r["loss"])) for r in train]
    speeds = [float(r["img_per_s"]) for r in train if isinstance(r.get("img_per_s"), (int, float))]
    steady = speeds[1:] or speeds
    mems = [float(r["peak_mem_mib"]) for r in train if isinstance(r.get("peak_mem_mib"), (int, float))]
    return {"loss_curve": curve, "final_loss": curve[-1][1] if curve else None,
            "images_per_s": sorted(steady)[len(steady) // 2] if steady else None,
            "peak_mem_mib": max(mems) if mems else None,
            "mem_kind": next((r["mem_kind"] for r in reversed(train) if r.get("mem_kind")), None)}


def _f(v: float | None, fmt: str = ".4g") -> str:
    return "n/a" if v is None or not math.isfinite(v) else format(v, fmt)


def models_vary(r: CompareResult) -> bool:
    return len({a.model_spec for a in r.arms}) > 1


def summary_markdown(r: CompareResult) -> str:
    """The side-by-side table (markdown) with the notes and pictures. Pure.

    >>> res = CompareResult(variant="JiT-Tiny/8", img_size=32, patch_dim=192, hidden=96, data="digits",
    ...     budget=Budget(steps=10), seed=0, effective_batch=64, backend="local", weights="ema1", sample_steps=5,
    ...     arms=[ArmResult(arm="x:v", prediction="x", loss_space="v", status="finished", run_dir="r", wall_s=1.0,
    ...                     params=752864, steps=10, final_loss=0.5, v_loss_common=0.4, accuracy=0.9)])
    >>> [line for line in summary_markdown(res).splitlines() if line.startswith("| x:v")]
    ['| x:v | 752,864 | finished | 10 | n/a | n/a | 0.5 | 0.4 | 0.900 | n/a | n/a |']
    """
    mem_kind = next((a.mem_kind for a in r.arms if a.mem_kind), None)
    mem_col = {"rss": "peak RSS (MiB)", "gpu_allocated": "peak GPU mem (MiB)"}.get(mem_kind or "", "peak mem (MiB)")
    objs = len({(a.prediction, a.loss_space) for a in r.arms}) > 1
    if models_vary(r):
        what = "Models and objectives" if objs else "Models"
        head = "model objective" if objs else "model"
        net = (f"data {r.data} at {r.img_size} px" if objs else
               f"objective {r.arms[0].prediction}:{r.arms[0].loss_space}, data {r.data} at {r.img_size} px")
    else:
        what, head = "Objectives", "objective (pred:loss)"
        net = f"{r.variant} at {r.img_size} px (patches of {r.patch_dim} values, width {r.hidden}), data {r.data}"
        if r.arms and r.arms[0].model_spec and r.arms[0].model_spec != r.variant:  # the config's own factory
            net = f"{r.arms[0].model} at {r.img_size} px, data {r.data}"
    lines = [
        f"# {what} compared: {', '.join(a.arm for a in r.arms)}",
        "",
        f"{net}, budget {r.budget.describe()} per arm, seed {r.seed}, effective batch {r.effective_batch}, "
        f"backend {r.backend}; scored with {r.weights} weights and a {r.sample_steps}-step sampler.",
        "",
        f"| {head} | params | status | steps | images/s | {mem_col} | final train loss (own space) "
        "| common v-loss | digits acc | FD-digits | FID |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for a in r.arms:
        lines.append(f"| {a.arm} | {f'{a.params:,}' if a.params is not None else 'n/a'} | {a.status} | "
                     f"{a.steps if a.steps is not None else 'n/a'} | "
                     f"{_f(a.images_per_s, '.1f')} | {_f(a.peak_mem_mib, '.0f')} | {_f(a.final_loss)} | "
                     f"{_f(a.v_loss_common)} | {_f(a.accuracy, '.3f')} | {_f(a.fd_digits, '.3g')} | "
                     f"{_f(a.fid, '.4g')} |")
    lines += ["", *[f"- {n}" for n in r.notes], "", "![loss curves](loss.png)", ""]
    for a in r.arms:
        if a.grid:
            lines.append(f"**{a.arm}** samples (one class per column):\n\n![{a.arm}](grids/{Path(a.grid).name})\n")
    return "\n".join(lines) + "\n"
