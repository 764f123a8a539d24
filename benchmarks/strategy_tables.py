"""The memory-strategy tables of docs/planning.md ("When it does not fit"), printed from the planner itself.

    python benchmarks/strategy_tables.py      # paste over the three tables; the numbers are the CLI's
"""

from __future__ import annotations

from jitplan.hardware.spec import hardware_from_flags
from jitplan.planner.plan import make_plan
from jitplan.planner.rows import fmt_bytes, fmt_duration
from jitplan.schemas import PlanOptions, load_recipe

CASES = [("2xRTX3060", "JiT-L/16"), ("1xRTX4090", "JiT-H/16"), ("2xT4", "JiT-B/16")]


def table(gpus: str, recipe: str) -> str:
    plan = make_plan(hardware_from_flags(gpus), load_recipe(recipe), PlanOptions())
    t, est = plan.train, plan.estimates
    strat = next(r for r in plan.rows if r.quantity == "memory strategy")
    out = [f"#### {recipe} on {gpus} (`jitplan plan --gpus {gpus} --recipe {recipe}`)", "",
           f"Chosen: **{strat.target}**, precision {t.precision}, micro-batch {t.batch_per_gpu} x accum "
           f"{t.accum_steps} x {plan.hardware.world_size} GPU(s); predicted peak {fmt_bytes(est.memory_per_gpu_bytes)}"
           f" of a {fmt_bytes(est.memory_target_bytes)} target; step {est.step_time_s:.2f} s, epoch "
           f"{fmt_duration(est.epoch_time_s)} ({est.time_source}).", "",
           "| candidate | memory per GPU, epoch | why |", "|---|---|---|"]
    start = plan.rows.index(strat)
    for r in plan.rows[start - (1 if plan.rows[start - 1].quantity == "precision" else 0):]:
        if r.quantity in ("precision", "memory strategy") or r.quantity.startswith("  "):
            q = r.quantity.strip()
            target = f"**{r.target}**" if not r.quantity.startswith("  ") else r.target
            out.append(f"| {q} | {target} | {r.why} |")
    return "\n".join(out)


if __name__ == "__main__":
    print("\n\n".join(table(g, r) for g, r in CASES))
