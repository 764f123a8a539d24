"""jitmodel.replan: a run's own measured steps -> epoch time and cost to the end, budget verdict (pure)."""

from __future__ import annotations

import pytest

from jitmodel.replan import read_replan, replan, write_replan


def windows(step_s, n=6, first=5.0):
    return [{"step": 20 * i, "step_s": first if i == 1 else step_s, "data_wait_s": 0.0, "compute_s": step_s * 0.8,
             "optimizer_s": step_s * 0.2} for i in range(1, n + 1)]


def test_warm_up_and_evaluation_windows_are_left_out():
    recs = windows(0.5) + [{"step": 200, "step_s": 90.0, "eval": True}]
    r = replan(recs, steps_per_epoch=100, epochs=3, done_steps=120)
    assert r.step_s == 0.5 and r.windows == 5 and r.epoch_s == pytest.approx(50)
    assert r.remaining_s == pytest.approx((300 - 120) * 0.5)
    assert replan(windows(0.5, n=1), steps_per_epoch=100, epochs=3, done_steps=20) is None  # warm-up only


def test_a_plan_for_the_wrong_machine_is_replanned_and_a_small_budget_stops_it(tmp_path):
    """A 1 x H100 plan (0.17 s/step) running at 2.5 s/step: the re-plan is within 10% of what the run then
    measures (here, the same windows continued), and a budget below the re-planned cost says stop."""
    recs = windows(2.5, n=4)
    r = replan(recs, steps_per_epoch=400, epochs=1, done_steps=80, planned_step_s=0.17, price_per_hour=2.0,
               budget_usd=0.3, spent_s=10.0)
    later = replan(windows(2.5, n=20), steps_per_epoch=400, epochs=1, done_steps=400, planned_step_s=0.17)
    assert abs(r.epoch_s / later.epoch_s - 1) < 0.10
    assert r.over_budget and "OVER the $0.30 budget" in r.line and "+1371%" in r.line
    ok = replan(recs, steps_per_epoch=400, epochs=1, done_steps=80, price_per_hour=2.0, budget_usd=10)
    assert not ok.over_budget and "within the $10.00 budget" in ok.line
    write_replan(tmp_path, r)
    assert read_replan(tmp_path)["over_budget"] is True and read_replan(tmp_path / "nope") is None
