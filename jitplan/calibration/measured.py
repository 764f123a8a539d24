"""A run's ``metrics.jsonl`` (written by jitmodel.metrics) -> what it measured, in one typed summary.

Steady state: the first logged window (start-up, compilation, allocator warm-up) is left out when there is
more than one; times are medians over the rest, memory is the peak.

    >>> import json, pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp(), "metrics.jsonl")
    >>> _ = p.write_text("\\n".join(json.dumps(r) for r in [
    ...     {"step": 20, "loss": 0.9, "step_s": 3.0, "img_per_s": 10.0},
    ...     {"step": 40, "loss": 0.8, "step_s": 0.5, "img_per_s": 64.0, "peak_reserved_mib": 6000.0},
    ...     {"step": 60, "loss": 0.7, "step_s": 0.6, "img_per_s": 53.3, "peak_reserved_mib": 6100.0}]))
    >>> m = summarize(p)
    >>> m.step_time_s, m.peak_reserved_bytes // 2**20, m.records
    (0.55, 6100, 3)
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from jitmodel.records import training_records

MIB = 2**20


class Measurement(BaseModel):
    model_config = ConfigDict(extra="forbid")
    records: int
    last_step: int
    step_time_s: float | None = None
    images_per_s: float | None = None  # all ranks
    data_wait_s: float | None = None
    compute_s: float | None = None
    optimizer_s: float | None = None
    peak_allocated_bytes: int | None = None
    peak_reserved_bytes: int | None = None
    nvml_used_bytes: int | None = None
    worker_rss_bytes: int | None = None
    host_ram_peak_bytes: int | None = None
    workers: int | None = None

    @property
    def memory_used_bytes(self) -> int | None:
        """What nvidia-smi shows: NVML when measured, else torch's reserved pool (context and NCCL missing)."""
        return self.nvml_used_bytes or self.peak_reserved_bytes


def read_records(path: Path) -> list[dict[str, Any]]:
    """The training records of a metrics.jsonl (evaluation and event lines left out; jitmodel.records)."""
    return training_records(path)


def summarize(path: str | Path) -> Measurement | None:
    recs = read_records(Path(path))
    if not recs:
        return None
    steady = recs[1:] if len(recs) > 1 else recs

    def med(key: str) -> float | None:
        vals = [r[key] for r in steady if isinstance(r.get(key), (int, float))]
        return round(statistics.median(vals), 6) if vals else None

    def peak(key: str) -> int | None:
        vals = [r[key] for r in recs if isinstance(r.get(key), (int, float))]
        return int(max(vals) * MIB) if vals else None

    workers = [r["workers"] for r in recs if isinstance(r.get("workers"), int)]
    return Measurement(
        records=len(recs), last_step=int(recs[-1].get("step", 0)), step_time_s=med("step_s"),
        images_per_s=med("img_per_s"), data_wait_s=med("data_wait_s"), compute_s=med("compute_s"),
        optimizer_s=med("optimizer_s"), peak_allocated_bytes=peak("peak_allocated_mib"),
        peak_reserved_bytes=peak("peak_reserved_mib"), nvml_used_bytes=peak("nvml_used_mib"),
        worker_rss_bytes=peak("worker_rss_mib"), host_ram_peak_bytes=peak("host_rss_peak_mib"),
        workers=max(workers) if workers else None,
    )


def metrics_path(run_dir: str | Path, output_dir: str) -> Path:
    """Where a run's trainer wrote metrics.jsonl (``output_dir`` relative to the run folder)."""
    out = Path(output_dir)
    return (out if out.is_absolute() else Path(run_dir) / out) / "metrics.jsonl"
