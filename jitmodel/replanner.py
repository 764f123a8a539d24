"""Rank 0's re-plan during a run: after each log window, the epoch time and cost to the end on this machine.

The trainer hands every training log window to :meth:`Replanner.window`; warm-up windows (the first of each
process: compilation, allocator growth; and with short windows, every one that ends in its first ``WARMUP_S``
seconds: first checkpoint, caches, seen on the CPU as 30% slower steps) and windows that held an online
evaluation are left out by ``jitmodel.replan.replan``. Each re-plan is written to ``replan.json`` beside
``metrics.jsonl`` (atomically); its line is printed the first time and again only when the epoch time moves by
more than ``DRIFT`` (15%) from the last line printed, or when the run goes over its budget. ``replan.json``
also keeps the run's first re-plan made from ``FIRST_WINDOWS`` steady windows spanning ``FIRST_S`` seconds
(``first``), so ``jitplan status`` can show what the run said in its first minutes beside what it measured
later. Pure apart from the clock and the file; no torch.

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> rp = Replanner(d, steps_per_epoch=100, total_steps=200, planned_step_s=0.1, price_per_hour=3.6,
    ...                budget_usd=0.1, clock=iter(range(0, 1000, 10)).__next__)
    >>> rp.window({"step": 10, "step_s": 5.0}, done_steps=10) is None   # warm-up
    True
    >>> r = rp.window({"step": 20, "step_s": 1.0}, done_steps=20)
    >>> r.over_budget, round(r.cost_usd, 2), rp.said[0].endswith("OVER the $0.10 budget, stopping with a checkpoint")
    (True, 0.2, True)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jitmodel.records import DRIFT
from jitmodel.replan import WARMUP_WINDOWS, Replan, read_replan, replan, write_replan

FIRST_WINDOWS = 5  # the run's first re-plan kept for `jitplan status` rests on this many steady windows
FIRST_S = 15.0  # and on at least this many seconds of them: short CPU windows scatter +-25% one to the next
WARMUP_S = 10.0  # and windows that end within this many seconds of the process's first step are warm-up too


class Replanner:
    """One run's re-plans (rank 0). ``said`` holds the lines to print, in order; the trainer prints new ones."""

    def __init__(self, out_dir: str | Path, *, steps_per_epoch: int, total_steps: int,
                 planned_step_s: float | None = None, planned_eval_s: float | None = None,
                 price_per_hour: float | None = None, budget_usd: float | None = None, resumed: bool = False,
                 clock: Callable[[], float] = time.monotonic):
        self.out = Path(out_dir)
        self.steps_per_epoch, self.total_steps = steps_per_epoch, total_steps
        self.planned_step_s, self.planned_eval_s = planned_step_s, planned_eval_s
        self.price_per_hour, self.budget_usd = price_per_hour, budget_usd
        self.clock = clock
        self.t0 = clock()
        self.records: list[dict[str, Any]] = []
        self.said: list[str] = []
        self._said_epoch_s: float | None = None
        self._said_over = False
        self.eval_s: float | None = None  # the last online evaluation's measured seconds
        self._eval_in_window = False
        old = read_replan(self.out) if resumed else None  # a resumed run keeps its time spent and first re-plan
        self.spent0 = float(old.get("spent_s", 0.0)) if old else 0.0
        self.first: dict[str, Any] | None = old.get("first") if old and isinstance(old.get("first"), dict) else None

    def _steady_s(self, warm: int) -> float:
        """Seconds the measured windows span: those after the ``warm`` warm-up ones, evaluation windows left out."""
        total, t_prev, seen = 0.0, 0.0, 0
        for r in self.records:
            if not r["eval"]:
                seen += 1
                if seen > warm:
                    total += r["_t"] - t_prev
            t_prev = r["_t"]
        return total

    def evaluated(self, seconds: float) -> None:
        """An online evaluation took ``seconds``: the next window holds it (left out); later ones cost as much."""
        self.eval_s = seconds
        self._eval_in_window = True

    def window(self, rec: dict[str, Any], *, done_steps: int, evals_left: int = 0) -> Replan | None:
        """Fold one training log window in; write ``replan.json``; the re-plan, or None during warm-up."""
        now_t = self.clock()
        self.records.append({**rec, "eval": self._eval_in_window, "_t": now_t - self.t0})
        self._eval_in_window = False
        spent = self.spent0 + now_t - self.t0
        warm = max(WARMUP_WINDOWS, sum(1 for r in self.records if r["_t"] < WARMUP_S and not r["eval"]))
        kw: dict[str, Any] = dict(steps_per_epoch=self.steps_per_epoch, epochs=self.total_steps / self.steps_per_epoch,
                                  done_steps=done_steps, planned_step_s=self.planned_step_s,
                                  price_per_hour=self.price_per_hour, budget_usd=self.budget_usd, spent_s=spent,
                                  evals_left=evals_left, warmup=warm)
        r = replan(self.records, eval_s=self.eval_s, **kw)
        if r is None:
            return None
        if self.eval_s is None and self.planned_eval_s and self.planned_step_s and evals_left:
            # no evaluation measured yet: the plan's, scaled as this machine's steps are to the plan's
            r = replan(self.records, eval_s=self.planned_eval_s * r.step_s / self.planned_step_s, **kw) or r
        now = {"epoch_s": r.epoch_s, "step": done_steps, "elapsed_s": round(spent, 3), "line": r.line}
        if self.first is None and r.windows >= FIRST_WINDOWS and self._steady_s(warm) >= FIRST_S:
            self.first = now
        write_replan(self.out, r, {"step": done_steps, "spent_s": round(spent, 3), "steps_per_epoch":
                                   self.steps_per_epoch, "total_steps": self.total_steps,
                                   "price_per_hour": self.price_per_hour, "first": self.first})
        moved = self._said_epoch_s is None or abs(r.epoch_s / self._said_epoch_s - 1) > DRIFT
        if moved or (r.over_budget and not self._said_over):
            self.said.append(r.line)
            self._said_epoch_s, self._said_over = r.epoch_s, r.over_budget
        return r
