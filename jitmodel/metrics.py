"""Rank-0 training telemetry: ``metrics.jsonl``, TensorBoard when installed, a rich progress bar with ETA.

Every record is one JSON object per line, appended and flushed, so a crashed run keeps its history:

    {"step": 200, "epoch": 0.16, "loss": 0.5123, "lr": 1.6e-05, "img_per_s": 812.4, "peak_mem_mib": 10240.0,
     "mem_kind": "gpu_allocated", "step_s": 0.54, "data_wait_s": 0.01, "compute_s": 0.41, "optimizer_s": 0.12,
     "peak_allocated_mib": 5400.0, "peak_reserved_mib": 6100.0, "nvml_used_mib": 6750.0, "workers": 9,
     "worker_rss_mib": 690.0, "host_rss_mib": 9300.0, "host_rss_peak_mib": 9400.0}

What a run measured (``StepTimer.window``) is what ``jitplan calibrate`` folds into its store: the step split
(data wait on the host; compute = forward + backward and optimizer = loss all-reduce + AdamW + EMAs, timed
with CUDA events on a GPU and by the host clock on the CPU; gradient communication is inside compute),
torch's peak allocated/reserved, NVML's used memory, DataLoader worker RSS and the host total. When the
config is a jitplan plan, the first record whose step time or memory differs from the plan by more than
15% prints one "drift:" line (``plan_expectations``, ``drift_lines``).

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

from jitmodel.config import file_kind, read_yaml_mapping
from jitmodel.plan_view import PlanExpectations
from jitmodel.records import DRIFT

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
                 progress: bool | None = None, echo: bool = True, tensorboard: bool = True,
                 expect: PlanExpectations | None = None):
        self.expect, self._drift_said, self._logs = expect, False, 0
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
        self._bar: Any = None  # a rich Progress on a terminal
        self._task: Any = None
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
        self._logs += 1  # the first window holds start-up (compile, allocator warm-up): compare from the second
        if self.expect and not self._drift_said and self._logs >= 2:
            lines = drift_lines(self.expect, rec)
            for d in lines:  # once per run, whatever echo says: the run log must show it
                self._f.write(json.dumps({"step": rec.get("step"), "event": "drift", "message": d}) + "\n")
                print(d, flush=True) if self._bar is None else self.note(d)
            self._drift_said = bool(lines)

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


# ---- measurements for calibration ------------------------------------------------------------------------



def _rss_kib(pid: int | str) -> int | None:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _children() -> list[int]:
    """This process's child processes (the DataLoader workers), Linux only."""
    out: list[int] = []
    try:
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/children") as f:
                out += [int(p) for p in f.read().split()]
    except OSError:
        return []
    return out


class StepTimer:
    """The split of optimizer steps over a logging window; ``window()`` returns it with memory and host RAM.

    Call ``batch()`` when the loader yields, ``micro_done()`` after each micro-step, ``step_end()`` after
    the optimizer step.

        >>> t = StepTimer("cpu")
        >>> t.batch(); t.micro_done(); t.step_end()
        >>> rec = t.window()
        >>> sorted(k for k in rec if k.endswith("_s"))
        ['compute_s', 'data_wait_s', 'optimizer_s', 'step_s']
    """

    def __init__(self, device: Any):
        import time

        self._clock = time.perf_counter
        self.cuda = getattr(device, "type", str(device)) == "cuda"
        self.device = device
        self._host_peak_kib = 0
        self._reset()

    def _reset(self) -> None:
        self._t0 = self._last = self._clock()
        self.steps, self.data, self.compute, self.opt = 0, 0.0, 0.0, 0.0
        self._events: list[tuple[Any, Any, Any]] = []
        self._e0 = self._e1 = None

    def _event(self) -> Any:
        import torch

        e = torch.cuda.Event(enable_timing=True)
        e.record()
        return e

    def batch(self) -> None:
        now = self._clock()
        self.data += now - self._last
        self._last = now
        if self.cuda and self._e0 is None:
            self._e0 = self._event()

    def micro_done(self) -> None:
        now = self._clock()
        self.compute += now - self._last
        self._last = now

    def step_end(self) -> None:
        now = self._clock()
        if self.cuda:
            self._events.append((self._e0, self._event(), None))
        self.opt += now - self._last
        self._last = now
        self.steps += 1
        if self.cuda:  # the optimizer's end closes this step; the next batch() opens the next
            e0, e1, _ = self._events[-1]
            self._events[-1] = (e0, e1, self._event())
            self._e0 = None

    def window(self) -> dict[str, Any]:
        """The window's averages per optimizer step, memory peaks and host RAM; starts a new window."""
        n = max(self.steps, 1)
        rec: dict[str, Any] = {"step_s": round((self._clock() - self._t0) / n, 5),
                               "data_wait_s": round(self.data / n, 5)}
        compute, opt = self.compute / n, self.opt / n
        if self.cuda and self._events:
            import torch

            torch.cuda.synchronize(self.device)
            # e0 -> e1 spans the micro-steps + the loss sync's kernels; e1 -> e2 the AdamW + EMA kernels
            compute = sum(e0.elapsed_time(e1) for e0, e1, _ in self._events) / 1e3 / len(self._events)
            opt = sum(e1.elapsed_time(e2) for _, e1, e2 in self._events) / 1e3 / len(self._events)
        rec.update(compute_s=round(compute, 5), optimizer_s=round(opt, 5))
        rec.update(self.memory())
        self._reset()
        return rec

    def memory(self) -> dict[str, Any]:
        rec: dict[str, Any] = {}
        if self.cuda:
            import torch

            rec["peak_allocated_mib"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
            rec["peak_reserved_mib"] = round(torch.cuda.max_memory_reserved(self.device) / 2**20, 1)
            used = _nvml_used(self.device)
            if used is not None:
                rec["nvml_used_mib"] = round(used / 2**20, 1)
        main = _rss_kib("self")
        kids = [k for k in (_rss_kib(p) for p in _children()) if k is not None]
        if main is not None:
            total = main + sum(kids)
            self._host_peak_kib = max(self._host_peak_kib, total)
            rec.update(workers=len(kids), worker_rss_mib=round(max(kids) / 1024, 1) if kids else 0.0,
                       host_rss_mib=round(total / 1024, 1), host_rss_peak_mib=round(self._host_peak_kib / 1024, 1))
        return rec


def _nvml_used(device: Any) -> int | None:
    """Bytes in use on the device as NVML (nvidia-smi) sees them: context, NCCL and the allocator's pool."""
    import torch

    fn = getattr(torch.cuda, "device_memory_used", None)  # NVML through torch (2.6+)
    try:
        return int(fn(device)) if fn is not None else None
    except Exception:  # no NVML library on this machine: the other numbers still stand
        return None


def plan_expectations(config_path: str | Path) -> PlanExpectations | None:
    """What a jitplan plan predicted (step time, images/s, memory per GPU, evaluation, epoch, $/h), read from its
    ``estimates`` as the typed ``PlanExpectations``; None for a bare TrainConfig or an unreadable file. No
    jitplan import: the plan file is YAML."""
    try:
        raw = read_yaml_mapping(config_path)
        est = raw.get("estimates") if file_kind(raw) == "plan" else None
        return PlanExpectations.model_validate(est) if isinstance(est, dict) else None
    except (ValueError, OSError):  # pydantic's ValidationError is a ValueError: a garbled estimate is no estimate
        return None


def drift_lines(expect: PlanExpectations, rec: dict[str, Any]) -> list[str]:
    """One line per measured quantity that differs from the plan by more than DRIFT.

        >>> print(drift_lines(PlanExpectations(step_time_s=0.35), {"step_s": 0.54})[0].split(": the plan")[0])
        drift: step time 0.540 s measured vs 0.350 s planned (+54%, beyond 15%)
    """
    out = []
    pairs = [("step time", rec.get("step_s"), expect.step_time_s, "s")]
    used = rec.get("nvml_used_mib") or rec.get("peak_reserved_mib")
    if used is not None and expect.memory_per_gpu_bytes:
        pairs.append(("GPU memory", used / 1024, expect.memory_per_gpu_bytes / 2**30, "GiB"))
    for name, got, want, unit in pairs:
        if got is None or not want:
            continue
        rel = got / want - 1
        if abs(rel) > DRIFT:
            out.append(f"drift: {name} {got:.3f} {unit} measured vs {want:.3f} {unit} planned ({rel:+.0%}, beyond "
                       f"{DRIFT:.0%}): the plan was made for other hardware or its priors are off; "
                       "jitplan calibrate RUN folds this run in")
    return out
