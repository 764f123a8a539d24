"""One run as the registry knows it: its status view, its log (followed), and stopping its training.

The core of ``jitplan status | logs`` and the training half of ``jitplan stop`` (the commands only parse and
render). The cloud half (live instances, orphans, destroy) is ``jitplan.cloud.runs``.

    view = run_status(Registry(), "8f3c")      # RunStatusView: the row, its instances with cost, events, drift
    follow(log_path(view.run), sys.stdout, still_running=lambda: True)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from pydantic import BaseModel, ConfigDict

from jitplan.calibration.drift import run_drift
from jitplan.calibration.measured import Measurement
from jitplan.calibration.replan_view import ReplanView, run_replan
from jitplan.errors import CheckFailed
from jitplan.launch import local
from jitplan.launch.remote_job import is_remote, ssh_launch
from jitplan.runs.schema import EventRow, InstanceRow, RunRow

if TYPE_CHECKING:  # pragma: no cover
    from jitplan.runs.registry import Registry

class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InstanceView(_M):
    row: InstanceRow
    hours: float
    cost_so_far: float


class RunStatusView(_M):
    run: RunRow
    instances: list[InstanceView]
    events: list[EventRow]
    measured: Measurement | None = None  # what its metrics.jsonl says (jitplan.calibration.measured)
    drift: list[str] = []  # measured vs the plan, more than 15% off (jitplan.calibration.drift)
    replan: ReplanView | None = None  # plan -> measured -> re-planned (jitplan.calibration.replan_view)


def instance_view(i: InstanceRow, now: float) -> InstanceView:
    end = i.ended_at if i.ended_at is not None else now
    return InstanceView(row=i, hours=max(end - i.created_at, 0) / 3600, cost_so_far=i.cost_so_far(now))


def run_status(reg: Registry, run_id: str, now: float | None = None) -> RunStatusView:
    now = time.time() if now is None else now
    run = reg.get_run(run_id)
    measured, drift = run_drift(run.plan_path, run.run_dir)
    rows = reg.cloud.instances(active_only=False, run_id=run.id)
    return RunStatusView(run=run, instances=[instance_view(i, now) for i in rows],
                         events=reg.events(run.id), measured=measured, drift=drift,
                         replan=run_replan(run.plan_path, run.run_dir, run.meta.local_run_dir))


def log_path(run: RunRow) -> Path | None:
    """The run's local log file: ``log_path``, else ``run_dir/train.log``."""
    if run.log_path:
        return Path(run.log_path)
    if run.run_dir:
        return Path(run.run_dir) / "train.log"
    return None


def follow(path: Path, out: TextIO, *, still_running: Callable[[], bool], poll_s: float = 0.2, idle_s: float = 1.0,
           tail: int | None = None) -> None:
    """Print ``path`` (its last ``tail`` lines), then what is appended, until ``still_running()`` is False
    and nothing new came for ``idle_s``. Survives truncation (a restarted run) and a file that appears late."""
    pos, idle_since = 0, None
    if tail is not None and path.exists():
        lines = path.read_bytes().splitlines(keepends=True)
        out.write(b"".join(lines[-tail:]).decode(errors="replace"))
        pos = path.stat().st_size
    while True:
        size = path.stat().st_size if path.exists() else 0
        if size < pos:
            pos = 0  # truncated: read again from the top
        if size > pos:
            with path.open("rb") as f:
                f.seek(pos)
                chunk = f.read(size - pos)
            pos = size
            out.write(chunk.decode(errors="replace"))
            out.flush()
            idle_since = None
            continue
        if not still_running():
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since >= idle_s:
                return
        time.sleep(poll_s)


def stop_training(run: RunRow, registry_dir: Path | None = None) -> str:
    """Stop the run's training: over SSH for remote runs, the local process group otherwise. What happened."""

    if is_remote(run):
        launch = ssh_launch(run, registry_dir)
        if launch is None:
            return "no SSH endpoint recorded: nothing to stop"
        code = launch.exit_code()
        if code is not None:
            return f"training had already ended (exit code {code})"
        try:
            code = launch.stop()
        except CheckFailed:
            code = launch.exit_code()  # it ended between the two calls: nothing was left to stop
            if code is None:
                raise
            return f"training had already ended (exit code {code})"
        return f"stopped (exit code {code})" if code is not None else "stop sent; the trainer has not exited yet"
    if not run.run_dir:
        return "no run folder recorded: nothing to stop"
    return "stopped" if local.stop_run(run.run_dir) else "nothing was running"
