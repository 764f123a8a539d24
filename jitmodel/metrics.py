"""Rank-0 training telemetry: ``metrics.jsonl``, TensorBoard when installed, a rich progress bar with ETA.

Every record is one JSON object per line, appended and flushed, so a crashed run keeps its history:

    {"step": 200, "epoch": 0.16, "loss": 0.5123, "lr": 1.6e-05, "img_per_s": 812.4, "peak_mem_mib": 10240.0,
     "mem_kind": "gpu_allocated"}

The bar is drawn on stderr only when it is a terminal and JITMODEL_NO_PROGRESS is unset; otherwise each
record is also printed as one plain line on stdout.

    >>> import tempfile, json, pathlib
    >>> d = tempfile.mkdtemp()
    >>> with MetricsLogger(d, total_steps=10, progress=False, echo=False) as m:
    ...     m.log({"step": 1, "loss": 0.5})
    >>> json.loads(pathlib.Path(d, "metrics.jsonl").read_text())["loss"]
    0.5
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

NO_PROGRESS_ENV = "JITMODEL_NO_PROGRESS"


def peak_memory_mib(device: Any) -> tuple[float, str]:
    """Peak allocated GPU memory on CUDA; peak resident set size of this process otherwise."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "gpu_allocated"
    try:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return (kib / 2**20 if sys.platform == "darwin" else kib / 1024), "rss"
    except ImportError:  # Windows
        return float("nan"), "rss"


def progress_wanted() -> bool:
    return sys.stderr.isatty() and os.environ.get(NO_PROGRESS_ENV, "") in ("", "0")


class MetricsLogger:
    """Appends records to metrics.jsonl; mirrors them to TensorBoard and a progress bar when present."""

    def __init__(self, out_dir: str | Path, total_steps: int, start_step: int = 0,
                 progress: bool | None = None, echo: bool = True, tensorboard: bool = True):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._f = open(self.dir / "metrics.jsonl", "a", buffering=1)
        self.echo, self.total = echo, total_steps
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

                self._tb = SummaryWriter(log_dir=str(self.dir / "tb"))
            except ImportError:
                self._tb = None
        self._bar = self._task = None
        if progress if progress is not None else progress_wanted():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                 TextColumn("{task.fields[info]}"), console=Console(stderr=True))
            self._task = self._bar.add_task("train", total=total_steps, completed=start_step, info="")
            self._bar.start()

    def note(self, msg: str) -> None:
        """A human line (start-up facts, records): stdout, or stderr above the bar when there is one."""
        if self._bar is not None:
            self._bar.console.print(msg, markup=False, highlight=False)
        elif self.echo:
            print(msg, flush=True)

    def advance(self, step: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=step)

    def log(self, rec: dict[str, Any]) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in rec.items()}
        self._f.write(json.dumps(clean) + "\n")
        if self._tb is not None and "step" in rec:
            for k, v in rec.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(f"train/{k}", v, rec["step"])
        line = "  ".join(_fmt(k, v) for k, v in rec.items())
        if self._bar is not None:
            self._bar.update(self._task, completed=rec.get("step", 0),
                             info=f"loss {rec.get('loss', float('nan')):.4f}" if "loss" in rec else "")
        if self.echo:
            self.note(line)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        self._f.close()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fmt(k: str, v: Any) -> str:
    if isinstance(v, float):
        return f"{k} {v:.4g}" if k != "epoch" else f"{k} {v:.3f}"
    return f"{k} {v}"
