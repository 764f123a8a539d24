"""A run re-plans itself in its first minutes: from its own measured steps, the epoch time and cost to the
requested end on *this* machine, and whether the budget covers it. Pure (no torch, no jitplan import).

The trainer calls :func:`replan` after each log window once warm-up is over (the first ``warmup`` windows hold
compilation and allocator growth; windows that contain an online evaluation are left out), writes the result
next to ``metrics.jsonl`` with :func:`write_replan` (``replan.json``, what ``jitplan status``/``runs``/``report``
show as plan -> measured -> re-planned) and, when ``over_budget``, saves its checkpoint and stops.

    >>> recs = [{"step": 20 * i, "step_s": 2.0 if i == 1 else 0.5, "data_wait_s": 0.01, "compute_s": 0.4,
    ...          "optimizer_s": 0.09} for i in range(1, 7)]
    >>> r = replan(recs, steps_per_epoch=1000, epochs=2, done_steps=120, planned_step_s=0.25,
    ...            eval_s=60.0, evals_left=1, price_per_hour=1.0, budget_usd=0.25, spent_s=100.0)
    >>> r.step_s, round(r.epoch_s), round(r.remaining_s), r.over_budget
    (0.5, 500, 1000, True)
    >>> r.line.startswith("replan: 0.500 s/step measured (planned 0.250 s, +100%)")
    True
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jitmodel.atomic import atomic_write_text

REPLAN_NAME = "replan.json"
BUDGET_EXIT = 3  # the trainer's exit code when it stopped because the re-planned cost exceeds the budget
WARMUP_WINDOWS = 1  # log windows left out at the start: compilation, cudnn autotune, allocator growth


@dataclass(frozen=True)
class Replan:
    windows: int  # log windows the measurement uses
    step_s: float  # median measured seconds per optimizer step
    data_wait_s: float | None
    compute_s: float | None  # forward + backward + the gradient all-reduce
    optimizer_s: float | None
    planned_step_s: float | None
    epoch_s: float  # this machine's epoch
    remaining_s: float  # to the requested end: the steps left + the evaluations left
    total_s: float  # spent + remaining
    cost_usd: float | None  # total at the price per hour, None without a price
    budget_usd: float | None
    over_budget: bool
    line: str  # one line for the run log and `jitplan status`


def _median(recs: list[dict[str, Any]], key: str) -> float | None:
    vals = [float(r[key]) for r in recs if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
    return statistics.median(vals) if vals else None


def duration(seconds: float) -> str:
    """Seconds for people: ``duration(42.0)`` is '42 s', 150 s '2.5 min', 5400 s '1.50 h', 3 days '72.0 h'."""
    if seconds < 100:
        return f"{seconds:.0f} s"
    if seconds < 6000:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.{2 if seconds < 36_000 else 1}f} h"


def replan(records: list[dict[str, Any]], *, steps_per_epoch: int, epochs: float, done_steps: int,
           planned_step_s: float | None = None, eval_s: float | None = None, evals_left: int = 0,
           price_per_hour: float | None = None, budget_usd: float | None = None, spent_s: float = 0.0,
           warmup: int = WARMUP_WINDOWS) -> Replan | None:
    """The re-plan from the training log windows so far, or None until one window after warm-up exists."""
    steady = [r for r in records if "step_s" in r and not r.get("eval")][warmup:]
    step = _median(steady, "step_s")
    if step is None or step <= 0 or steps_per_epoch < 1:
        return None
    total_steps = int(round(steps_per_epoch * epochs))
    remaining = max(0, total_steps - done_steps) * step + evals_left * (eval_s or 0.0)
    total = spent_s + remaining
    cost = None if price_per_hour is None else total / 3600 * price_per_hour
    over = cost is not None and budget_usd is not None and cost > budget_usd
    vs = ""
    if planned_step_s:
        vs = f" (planned {planned_step_s:.3f} s, {step / planned_step_s - 1:+.0%})"
    money = "" if cost is None else f", ${cost:,.2f} at ${price_per_hour:.2f}/h"
    budget = "" if budget_usd is None else (f": OVER the ${budget_usd:,.2f} budget, stopping with a checkpoint"
                                            if over else f" within the ${budget_usd:,.2f} budget")
    line = (f"replan: {step:.3f} s/step measured{vs}; epoch {duration(steps_per_epoch * step)}; to the end "
            f"{duration(remaining)} more ({duration(total)} in all){money}{budget}")
    return Replan(windows=len(steady), step_s=step, data_wait_s=_median(steady, "data_wait_s"),
                  compute_s=_median(steady, "compute_s"), optimizer_s=_median(steady, "optimizer_s"),
                  planned_step_s=planned_step_s, epoch_s=steps_per_epoch * step, remaining_s=remaining,
                  total_s=total, cost_usd=cost, budget_usd=budget_usd, over_budget=over, line=line)


def write_replan(out_dir: str | Path, r: Replan, extra: dict[str, Any] | None = None) -> Path:
    """``replan.json`` in the run's output folder, atomically (status readers never see half a file);
    ``extra`` adds the trainer's context (the step it was made at, the first re-plan of the run)."""
    return atomic_write_text(Path(out_dir) / REPLAN_NAME, json.dumps({**asdict(r), **(extra or {})}, indent=1) + "\n")


def read_replan(out_dir: str | Path) -> dict[str, Any] | None:
    """The last re-plan of a run, or None (no file yet, or unreadable)."""
    try:
        raw = json.loads((Path(out_dir) / REPLAN_NAME).read_text())
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None
