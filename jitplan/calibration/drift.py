"""A plan against what its run measured: the quantities more than 15% off, as one line each.

``jitplan status`` and ``jitplan runs`` show them; the launcher records them as a "drift" event; the trainer
prints the same check in the run log (jitmodel.metrics.drift_lines).

    >>> from jitplan.calibration.measured import Measurement
    >>> m = Measurement(records=3, last_step=60, step_time_s=0.54, nvml_used_bytes=int(6.6 * 2**30))
    >>> compare(step_time_s=0.354, memory_bytes=int(6.69 * 2**30), measured=m)
    ['step time 0.540 s measured vs 0.354 s planned (+53%)']
"""

from __future__ import annotations

from pathlib import Path

from jitmodel.records import DRIFT
from jitplan.calibration.measured import Measurement, metrics_path, summarize
from jitplan.errors import UsageError
from jitplan.runspec import load_run_spec


def compare(*, step_time_s: float | None, memory_bytes: int | None, measured: Measurement,
            threshold: float = DRIFT) -> list[str]:
    out = []
    pairs = [("step time", measured.step_time_s, step_time_s, 1.0, "s", 3)]
    pairs.append(("GPU memory", measured.memory_used_bytes, memory_bytes, 2**30, "GiB", 2))
    for name, got, want, unit, label, nd in pairs:
        if got is None or not want:
            continue
        rel = got / want - 1
        if abs(rel) > threshold:
            out.append(f"{name} {got / unit:.{nd}f} {label} measured vs {want / unit:.{nd}f} {label} planned "
                       f"({rel:+.0%})")
    return out


def run_drift(plan_path: str | None, run_dir: str | None) -> tuple[Measurement | None, list[str]]:
    """(what the run measured, its drift lines) for a registry run; (None, []) when either side is missing."""
    if not plan_path or not run_dir or not Path(plan_path).is_file():
        return None, []

    try:
        spec = load_run_spec(plan_path)
    except UsageError:
        return None, []
    measured = summarize(metrics_path(run_dir, spec.train.output_dir))
    if measured is None or spec.plan is None:
        return measured, []
    est = spec.plan.estimates
    return measured, compare(step_time_s=est.step_time_s, memory_bytes=est.memory_per_gpu_bytes, measured=measured)
