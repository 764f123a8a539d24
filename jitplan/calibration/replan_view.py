"""A run's re-plan for people: plan -> measured -> re-planned, from ``replan.json`` beside its metrics.jsonl.

The trainer writes ``replan.json`` after each log window once warm-up is over (jitmodel.replanner): the
latest re-plan (epoch time, time and cost to the end on the machine it runs on, the budget verdict) and the
run's *first* re-plan. ``jitplan status`` and ``jitplan report`` show it with the plan's step time and what the
run measured after its first re-plan (the median step of the later windows), so a re-plan made in the first
minutes can be checked against the run that followed. Local runs: ``<run folder>/<output_dir>/replan.json``;
cloud runs: the pulled copy, when there is one.

    >>> v = ReplanView(steps_per_epoch=100, planned_step_s=0.2, step_s=1.0, epoch_s=100.0, remaining_s=3600.0,
    ...                total_s=3700.0, cost_usd=2.06, budget_usd=1.0, over_budget=True, step=40,
    ...                first_epoch_s=98.0, first_step=20, first_elapsed_s=31.0, measured_step_s=1.01,
    ...                measured_windows=3)
    >>> for line in v.lines(): print(line)
    plan:        0.200 s/step, epoch 20 s (100 steps)
    measured:    1.010 s/step over 3 windows after step 20, epoch 1.7 min (+405% vs the plan)
    re-planned:  epoch 98 s at step 20 (after 31 s); now epoch 1.7 min, 60.0 min to the end (61.7 min in all), $2.06
    budget:      $1.00: OVER, the run stops with its checkpoint
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from jitmodel.records import training_records
from jitmodel.replan import duration, read_replan
from jitplan.errors import UsageError
from jitplan.runspec import load_run_spec


class ReplanView(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps_per_epoch: int
    planned_step_s: float | None = None
    step_s: float  # the latest re-plan's measured step
    epoch_s: float  # the latest re-planned epoch
    remaining_s: float
    total_s: float
    cost_usd: float | None = None
    budget_usd: float | None = None
    over_budget: bool = False
    step: int | None = None  # the step the latest re-plan was made at
    first_epoch_s: float | None = None  # the run's first re-plan (its first minutes)
    first_step: int | None = None
    first_elapsed_s: float | None = None
    measured_step_s: float | None = None  # median step of the windows after the first re-plan
    measured_windows: int = 0
    line: str | None = None

    @property
    def measured_epoch_s(self) -> float | None:
        return None if self.measured_step_s is None else self.measured_step_s * self.steps_per_epoch

    def lines(self) -> list[str]:
        out = []
        if self.planned_step_s:
            out.append(f"plan:        {self.planned_step_s:.3f} s/step, epoch "
                       f"{duration(self.planned_step_s * self.steps_per_epoch)} ({self.steps_per_epoch} steps)")
        if self.measured_step_s is not None and self.measured_epoch_s is not None:
            vs = (f" ({self.measured_step_s / self.planned_step_s - 1:+.0%} vs the plan)"
                  if self.planned_step_s else "")
            out.append(f"measured:    {self.measured_step_s:.3f} s/step over {self.measured_windows} windows after "
                       f"step {self.first_step}, epoch {duration(self.measured_epoch_s)}{vs}")
        first = (f"epoch {duration(self.first_epoch_s)} at step {self.first_step} (after "
                 f"{self.first_elapsed_s:.0f} s); now " if self.first_epoch_s is not None
                 and self.first_elapsed_s is not None else "")
        money = "" if self.cost_usd is None else f", ${self.cost_usd:,.2f}"
        out.append(f"re-planned:  {first}epoch {duration(self.epoch_s)}, {duration(self.remaining_s)} to the end "
                   f"({duration(self.total_s)} in all){money}")
        if self.budget_usd is not None:
            verdict = "OVER, the run stops with its checkpoint" if self.over_budget else "within"
            out.append(f"budget:      ${self.budget_usd:,.2f}: {verdict}")
        return out


def _num(raw: dict[str, Any], key: str) -> float | None:
    v = raw.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def replan_view(out_dir: str | Path) -> ReplanView | None:
    """The re-plan of the run whose trainer writes into ``out_dir``; None before its first re-plan."""
    raw = read_replan(out_dir)
    if raw is None or not isinstance(raw.get("steps_per_epoch"), int):
        return None
    got = raw.get("first")
    first: dict[str, Any] = got if isinstance(got, dict) else {}
    first_step = first.get("step") if isinstance(first.get("step"), int) else None
    later = [r for r in training_records(Path(out_dir) / "metrics.jsonl")
             if first_step is not None and isinstance(r.get("step"), int) and r["step"] > first_step
             and isinstance(r.get("step_s"), (int, float))]
    try:
        return ReplanView(
            steps_per_epoch=raw["steps_per_epoch"], planned_step_s=_num(raw, "planned_step_s"),
            step_s=raw["step_s"], epoch_s=raw["epoch_s"], remaining_s=raw["remaining_s"], total_s=raw["total_s"],
            cost_usd=_num(raw, "cost_usd"), budget_usd=_num(raw, "budget_usd"),
            over_budget=raw.get("over_budget") is True, step=raw.get("step"),
            first_epoch_s=_num(first, "epoch_s"), first_step=first_step, first_elapsed_s=_num(first, "elapsed_s"),
            measured_step_s=statistics.median(float(r["step_s"]) for r in later) if later else None,
            measured_windows=len(later), line=raw.get("line") if isinstance(raw.get("line"), str) else None)
    except (KeyError, ValueError, TypeError):  # a file from another version: no view rather than an error
        return None


def budget_message(out_dir: Path, step: int | None) -> str:
    """The registry's line for a run that stopped over budget, with the re-plan's numbers."""
    r = read_replan(out_dir) or {}
    cost, budget = _num(r, "cost_usd"), _num(r, "budget_usd")
    why = f": the re-planned run costs ${cost:,.2f} > the ${budget:,.2f} budget" if cost is not None and budget else ""
    return (f"stopped over budget at step {step}{why}; checkpoint {out_dir / 'last.pt'} (raise --budget and "
            "launch again with the same --run-dir to continue)")


def run_replan(plan_path: str | None, *run_dirs: str | None) -> ReplanView | None:
    """The re-plan of a registry run: its trainer's output folder under the first of ``run_dirs`` that has one
    (a local run's folder; a cloud run's pulled copy), or the folder itself; None when there is none."""
    output_dir = "."
    if plan_path and Path(plan_path).is_file():

        try:
            output_dir = load_run_spec(plan_path).train.output_dir
        except UsageError:
            pass
    for d in filter(None, run_dirs):
        for out in (Path(output_dir) if Path(output_dir).is_absolute() else Path(d) / output_dir, Path(d)):
            view = replan_view(out)
            if view is not None:
                return view
    return None
