"""A recorded run -> a calibration record: its plan says what ran where, its metrics what it measured.

    rec = record_from_run(Registry().get_run("8f3c"))      # then records.add_record(rec)
"""

from __future__ import annotations

import datetime
from pathlib import Path

from jitplan.calibration.measured import Measurement, metrics_path, summarize
from jitplan.calibration.records import CalibrationRecord
from jitplan.errors import UsageError
from jitplan.runspec import load_run_spec
from jitplan.schemas import Plan


def record_from_run(plan_path: str | None, run_dir: str | None, *, name: str,
                    today: datetime.date | None = None) -> CalibrationRecord:
    """UsageError (one line) when the run has no plan with a GPU, no metrics, or ran without a GPU."""

    if not plan_path or not Path(plan_path).is_file():
        raise UsageError(f"run {name}: its plan file is gone ({plan_path}); nothing says what hardware it ran on")
    spec = load_run_spec(plan_path)
    if spec.plan is None or spec.plan.hardware.gpu is None:
        raise UsageError(f"run {name} ran a bare TrainConfig: no GPU model to key a record by",
                         hint="enter it by hand: jitplan calibrate --gpu ... --step-time ... --memory ...")
    m = summarize(metrics_path(run_dir or ".", spec.train.output_dir))
    if m is None:
        raise UsageError(f"run {name}: no training records in its metrics.jsonl yet")
    if m.peak_reserved_bytes is None:
        raise UsageError(f"run {name} measured no GPU memory (it ran on the CPU): it cannot calibrate "
                         f"{spec.plan.hardware.gpu.name}")
    return to_record(spec.plan, m, source=f"run {name} ({m.records} records to step {m.last_step})", today=today)


def to_record(plan: Plan, m: Measurement, *, source: str, today: datetime.date | None = None) -> CalibrationRecord:
    t, hw = plan.train, plan.hardware
    if hw.gpu is None:
        raise UsageError("a plan without a GPU has nothing to calibrate (its time is not a GPU's)")
    return CalibrationRecord(
        gpu=hw.gpu.name, variant=t.model.variant, img_size=t.model.img_size, compile=t.compile,
        attention=t.model.attention, batch_per_gpu=t.batch_per_gpu, accum_steps=t.accum_steps,
        world_size=hw.world_size, nodes=hw.nodes, workers_per_rank=t.data.num_workers,
        step_time_s=m.step_time_s, memory_used_bytes=m.memory_used_bytes,
        peak_allocated_bytes=m.peak_allocated_bytes, peak_reserved_bytes=m.peak_reserved_bytes,
        data_wait_s=m.data_wait_s, compute_s=m.compute_s, optimizer_s=m.optimizer_s,
        date=(today or datetime.date.today()).isoformat(), source=source)
