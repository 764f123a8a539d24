"""The planner's memory model for the chosen strategy of each issue plan against a traced step.

For ``jitplan plan --gpus 2xRTX3060 --recipe JiT-L/16``, ``--gpus 1xRTX4090 --recipe JiT-H/16`` and ``--gpus
2xT4`` (B/16): trace one training step of the real model at the plan's micro-batch under the plan's strategy
(jitplan.planner.strategy_trace: FakeTensorMode + MemTracker, FSDPMemTracker when sharded, FSDP2 gathering
in the plan's gather dtype; eager, one micro-step per step) and print it next to ``strategy.predict`` for the
same eager, one-micro-step inputs.

    PYTHONPATH=$PWD python benchmarks/bench_strategy_trace.py [2xRTX3060 ...]
"""

from __future__ import annotations

import sys
import time

CASES = {"2xRTX3060": "JiT-L/16", "1xRTX4090": "JiT-H/16", "2xT4": "JiT-B/16"}


def main(which: list[str]) -> int:
    from jitplan.hardware.spec import hardware_from_flags
    from jitplan.planner import strategy
    from jitplan.planner.plan import make_plan, memory_inputs
    from jitplan.planner.strategy_trace import trace_strategy
    from jitplan.schemas import PlanOptions, load_recipe

    worst = 0.0
    for gpus in which or list(CASES):
        plan = make_plan(hardware_from_flags(gpus), load_recipe(CASES[gpus]), PlanOptions())
        t, world = plan.train, plan.hardware.world_size
        eager = t.model_copy(update={"compile": False})
        t0 = time.perf_counter()
        traced = trace_strategy(eager, t.memory, t.batch_per_gpu, world=world)
        inp = memory_inputs(eager, world, accum=1)  # fused AdamW, as the trainer and the trace run it
        pred = strategy.predict(inp, t.memory, t.batch_per_gpu).tensor_peak
        err = pred / traced - 1
        worst = max(worst, abs(err))
        gather = "" if not t.memory.shard else f", {strategy.gather_bytes(t.memory)} B gathers"
        print(f"{gpus} {CASES[gpus]} strategy {strategy.name_of(t.memory)}{gather} micro {t.batch_per_gpu}: traced "
              f"{traced / 1e9:.3f} GB, predicted {pred / 1e9:.3f} GB ({err:+.1%}), {time.perf_counter() - t0:.0f} s",
              flush=True)
    return 0 if worst <= 0.05 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
