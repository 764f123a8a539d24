"""Watch a local run and recover it: a worker OOM-kill -> fewer workers + resume; a SIGTERM -> resume.

Every try runs the same torchrun command with ``--resume auto``, so at most the steps since the last
checkpoint are lost. Restarts are bounded (``max_restarts``); a plain crash (a bug) is not retried.
Each event goes to ``events(kind, message, data)`` (the CLI points it at the run registry).

    from jitplan.launch.supervisor import supervise
    result = supervise(run_dir, spec, max_restarts=3, events=lambda k, m, d: print(k, m, d))
    result.status, result.final_step, result.num_workers   # ('finished', 40, 1)

Pure parts (``classify``, ``fewer_workers``, ``checkpoint_step``) are tested on their own.
"""

from __future__ import annotations

import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import TextIO

from pydantic import BaseModel, ConfigDict

from jitmodel.atomic import atomic_write_text
from jitmodel.replan import BUDGET_EXIT
from jitplan.calibration.drift import run_drift
from jitplan.calibration.replan_view import budget_message
from jitplan.launch import local
from jitplan.launch.torchrun import TorchrunSpec, node_command
from jitplan.runs.registry import Registry
from jitplan.runs.schema import RunMeta
from jitplan.runspec import load_run_spec, save_run_spec

EventFn = Callable[[str, str, dict], None]

# torch/utils/data/_utils/signal_handling.py and dataloader.py (torch 2.x): a dead worker surfaces as
# "DataLoader worker (pid 123) is killed by signal: Killed." or "... exited unexpectedly".
_WORKER_OOM = re.compile(
    r"DataLoader worker \(pid\(?s?\)? ?[\d, ]+\)? (is killed by signal: Killed|exited unexpectedly)"
    r"|killed by signal: Killed"
)
# torchrun's agent on SIGTERM/SIGINT: "SignalException: Process 123 got signal: 15".
_SIGTERM = re.compile(r"got signal: (15|2|1)\b|Signals\.SIGTERM|received SIGTERM", re.IGNORECASE)
_CKPT = re.compile(r"^(\d{7})\.pt$")


class Outcome(str, Enum):
    finished = "finished"
    worker_oom = "worker_oom"  # a DataLoader worker was killed (OOM killer): fewer workers, resume
    terminated = "terminated"  # SIGTERM (preemption, someone's kill): resume as is
    killed = "killed"  # the trainer itself got SIGKILL (host OOM): resume with fewer workers
    stopped = "stopped"  # the user asked for the stop: do not restart
    over_budget = "over_budget"  # the run's re-plan costs more than its budget: stopped with a checkpoint (exit 3)
    failed = "failed"  # an error that a restart would only repeat


class SupervisionResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: str  # finished | stopped | failed
    attempts: int
    restarts: int
    final_step: int | None
    num_workers: int
    outcomes: list[Outcome]
    message: str


def classify(rc: int, log_text: str, *, step_before: int | None, step_after: int | None,
             max_steps: int | None, stop_requested: bool) -> Outcome:
    """Why one try ended, from its exit code, its log and the checkpoint steps. Pure.

        >>> classify(1, "RuntimeError: DataLoader worker (pid 77) is killed by signal: Killed.",
        ...          step_before=None, step_after=20, max_steps=50, stop_requested=False).value
        'worker_oom'
        >>> classify(0, "", step_before=20, step_after=30, max_steps=50, stop_requested=False).value
        'terminated'
        >>> classify(0, "", step_before=20, step_after=50, max_steps=50, stop_requested=False).value
        'finished'
    """
    if stop_requested:
        return Outcome.stopped
    if rc == BUDGET_EXIT:
        return Outcome.over_budget
    if rc == 0:
        if max_steps is None or (step_after is not None and step_after >= max_steps):
            return Outcome.finished
        if step_after is not None and step_after == step_before:
            return Outcome.finished  # no progress and a clean exit: the epochs ran out before max_steps
        return Outcome.terminated  # checkpointed on SIGTERM and exited 0 before max_steps
    if _WORKER_OOM.search(log_text):
        return Outcome.worker_oom
    if rc in (-9, 137) or "Signals.SIGKILL" in log_text or "got signal: 9" in log_text:
        return Outcome.killed
    if rc in (-15, 143) or _SIGTERM.search(log_text):
        return Outcome.terminated
    return Outcome.failed


def fewer_workers(n: int) -> int:
    """The worker count for the next try after an OOM-kill: half, down to 0 (load in the main process).

        >>> [fewer_workers(n) for n in (12, 3, 1, 0)]
        [6, 1, 0, 0]
    """
    if n < 0:
        raise ValueError(f"num_workers must be >= 0, got {n}")
    return n // 2


def checkpoint_step(output_dir: str | Path) -> int | None:
    """The step of the newest checkpoint under ``output_dir`` (``ckpt/{step:07d}.pt`` names), else None.

    Falls back to reading ``step`` from ``last.pt`` (torch, lazily) when no step-named file exists.
    """
    out = Path(output_dir)
    steps = [int(m.group(1)) for p in out.rglob("*.pt") if (m := _CKPT.match(p.name))]
    if steps:
        return max(steps)
    last = out / "last.pt"
    if not last.is_file():
        return None
    import torch  # lazy: only when a checkpoint exists without a step in its name

    ckpt = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
    step = ckpt.get("step") if isinstance(ckpt, dict) else None
    return int(step) if step is not None else None


def _log_since(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def supervise(run_dir: str | Path, spec: TorchrunSpec, *, max_restarts: int = 3, events: EventFn | None = None,
              echo: TextIO | None = None, env: dict[str, str] | None = None, grace_s: float = 60.0,
              poll_s: float = 0.5, time_budget_s: float | None = None,
              signals: LauncherSignals | None = None) -> SupervisionResult:
    """Run ``spec`` (all its nodes, here) in ``run_dir`` until it finishes, is stopped, fails or runs out of
    restarts.

    ``spec.config`` is the run's plan or TrainConfig YAML; between tries it is rewritten (atomically) with
    the new ``data.num_workers``. ``spec.resume`` must be on.
    ``time_budget_s`` stops the run gracefully (SIGTERM: the ranks checkpoint) once that much time has
    passed; a run stopped so counts as finished. A SIGTERM, SIGHUP or SIGINT to this process is forwarded
    to the ranks (they checkpoint), waited for, and ends the run ``stopped`` (``LauncherSignals``).
    """
    own = signals is None
    signals = LauncherSignals().install() if signals is None else signals
    try:
        return _supervise(run_dir, spec, max_restarts=max_restarts, events=events, echo=echo, env=env,
                          grace_s=grace_s, poll_s=poll_s, time_budget_s=time_budget_s, signals=signals)
    finally:
        if own:
            signals.restore()


def _supervise(run_dir: str | Path, spec: TorchrunSpec, *, max_restarts: int, events: EventFn | None,
               echo: TextIO | None, env: dict[str, str] | None, grace_s: float, poll_s: float,
               time_budget_s: float | None, signals: LauncherSignals) -> SupervisionResult:
    if max_restarts < 0:
        raise ValueError(f"max_restarts must be >= 0, got {max_restarts}")
    if not spec.resume:
        raise ValueError("supervision needs --resume auto (spec.resume=True) to continue from checkpoints")
    run_dir = Path(run_dir)
    cfg_path = Path(spec.config)
    run = load_run_spec(cfg_path)
    cfg = run.train
    out_dir = Path(cfg.output_dir)
    if not out_dir.is_absolute():
        out_dir = run_dir / out_dir
    emit = events or (lambda kind, message, data: None)
    stop_file = run_dir / local.STOP_NAME
    stop_file.unlink(missing_ok=True)
    log_path = run_dir / local.LOG_NAME
    outcomes: list[Outcome] = []
    restarts = 0
    step = checkpoint_step(out_dir)
    deadline = None if time_budget_s is None else time.monotonic() + time_budget_s
    while True:
        logs = [log_path, *(run_dir / f"train.node{r}.log" for r in range(1, spec.nnodes))]
        offsets = [_size(p) for p in logs]
        workers = cfg.data.num_workers
        emit("started", f"try {len(outcomes) + 1}: torchrun with {workers} data workers per rank",
             {"attempt": len(outcomes) + 1, "num_workers": workers, "resume_step": step})
        if signals.caught is not None:  # between tries: nothing runs, nothing to forward
            atomic_write_text(stop_file, f"{signal.Signals(signals.caught).name}\n")
            rc = 0
        else:
            rc = _run_nodes(spec, run_dir, echo=echo, env=env, grace_s=grace_s, poll_s=poll_s,
                            stop_file=stop_file, signals=signals, deadline=deadline)
        new_step = checkpoint_step(out_dir)
        log_text = "\n".join(_log_since(p, o) for p, o in zip(logs, offsets, strict=True))
        outcome = classify(rc, log_text, step_before=step, step_after=new_step,
                           max_steps=cfg.max_steps, stop_requested=stop_file.exists())
        outcomes.append(outcome)
        step = new_step
        data = {"exit_code": rc, "step": step, "num_workers": workers}
        if outcome in (Outcome.finished, Outcome.stopped, Outcome.failed, Outcome.over_budget):
            status = {"finished": "finished", "stopped": "stopped"}.get(outcome.value, "failed")
            msg = {"finished": f"finished at step {step}", "stopped": f"stopped at step {step}",
                   "failed": f"trainer failed (exit code {rc}); see {log_path}"}.get(outcome.value, "")
            why = stop_file.read_text().strip() if outcome is Outcome.stopped else ""
            if outcome is Outcome.over_budget:
                status, msg = "stopped", budget_message(out_dir, step)
            elif why == "time budget":
                status, msg = "finished", f"time budget of {time_budget_s:.0f} s reached at step {step}"
            elif why.startswith("SIG"):
                msg = f"stopped by {why} to the launcher at step {step} (the ranks checkpointed; resume with " \
                      "--resume auto)" if step is not None else f"stopped by {why} to the launcher before a checkpoint"
            emit("over_budget" if outcome is Outcome.over_budget else status, msg, data)
            return SupervisionResult(status=status, attempts=len(outcomes), restarts=restarts, final_step=step,
                                     num_workers=workers, outcomes=outcomes, message=msg)
        emit({"worker_oom": "oom_detected", "killed": "killed", "terminated": "terminated"}[outcome.value],
             {"worker_oom": "a DataLoader worker was killed by signal (out of memory)",
              "killed": "the trainer was killed (SIGKILL; likely out of host memory)",
              "terminated": "the trainer was terminated (SIGTERM)"}[outcome.value], data)
        if restarts >= max_restarts:
            msg = f"gave up after {restarts} restart(s) (--max-restarts {max_restarts}); last: {outcome.value}"
            emit("gave_up", msg, data)
            return SupervisionResult(status="failed", attempts=len(outcomes), restarts=restarts, final_step=step,
                                     num_workers=workers, outcomes=outcomes, message=msg)
        restarts += 1
        if outcome in (Outcome.worker_oom, Outcome.killed):
            fewer = fewer_workers(workers)
            run = run.with_workers(fewer)  # a plan's worker decision and reasons follow
            save_run_spec(run, cfg_path)
            cfg = run.train
            emit("replanned_workers", f"replanned data workers per rank {workers} -> {fewer}",
                 {"from": workers, "to": fewer})
        where = f"step {step}" if step is not None else "the start (no checkpoint yet)"
        emit("resumed", f"resuming from {where}", {"step": step, "restart": restarts})


def _run_nodes(spec: TorchrunSpec, run_dir: Path, *, echo: TextIO | None, env: dict[str, str] | None,
               grace_s: float, poll_s: float, stop_file: Path, signals: LauncherSignals,
               deadline: float | None = None) -> int:
    """Start every node of ``spec`` on this machine (node k > 0 logs to train.node{k}.log), wait for all.

    Several "nodes" on one machine meet at 127.0.0.1 on a port that is free now (a new one per try).
    Returns node 0's exit code, or the first non-zero one.
    """
    if spec.nnodes > 1:
        spec = spec.model_copy(update={"rdzv_endpoint": f"127.0.0.1:{free_port()}"})
    env = local.pythonpath_env() if env is None else env
    procs = [local.start(node_command(spec, r), run_dir, echo=echo if r == 0 else None, cwd=run_dir, env=env,
                         log_name=local.LOG_NAME if r == 0 else f"train.node{r}.log") for r in range(spec.nnodes)]
    while any(p.poll() is None for p in procs):
        if deadline is not None and time.monotonic() > deadline:
            atomic_write_text(stop_file, "time budget\n")
            codes = [p.terminate(grace_s) for p in procs]
            return next((c for c in codes if c != 0), 0)
        if signals.caught is not None:  # the launcher's own SIGTERM/SIGHUP/SIGINT: the ranks checkpoint, we wait
            atomic_write_text(stop_file, f"{signal.Signals(signals.caught).name}\n")
            codes = [p.terminate(grace_s) for p in procs]
            return next((c for c in codes if c != 0), 0)
        time.sleep(poll_s)
    codes = [p.wait() for p in procs]
    return next((c for c in codes if c != 0), 0)


class LauncherSignals:
    """SIGTERM, SIGHUP and SIGINT to the launcher (a closed terminal, a scheduler, Ctrl-C) are noted, not
    fatal: the supervisor forwards a stop to the ranks (each checkpoints and exits 0), waits for them, and
    the run ends ``stopped``. Installed only in the main thread; ``restore`` puts the old handlers back."""

    SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP", "SIGINT") if hasattr(signal, n))

    def __init__(self) -> None:
        self.caught: int | None = None
        self._old: dict[int, object] = {}

    def install(self) -> LauncherSignals:
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._note) for s in self.SIGNALS}
        return self

    def _note(self, signum: int, frame: object) -> None:
        if self.caught is None:
            self.caught = signum

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)  # type: ignore[arg-type]  # what signal.signal gave back
        self._old = {}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_local(run_dir: str | Path, spec: TorchrunSpec, *, registry: Registry, name: str, plan_path: str | None = None,
              max_restarts: int = 3, echo: TextIO | None = None,
              time_budget_s: float | None = None) -> tuple[str, SupervisionResult]:
    """Record a local run in the registry, supervise it, record how it ended. Returns (run id, result)."""
    run_dir = Path(run_dir).resolve()
    signals = LauncherSignals().install()  # from before the registry row: a stop is always recorded
    try:
        return _run_local(run_dir, spec, registry=registry, name=name, plan_path=plan_path,
                          max_restarts=max_restarts, echo=echo, time_budget_s=time_budget_s, signals=signals)
    finally:
        signals.restore()


def _run_local(run_dir: Path, spec: TorchrunSpec, *, registry: Registry, name: str,
               plan_path: str | None, max_restarts: int, echo: TextIO | None, time_budget_s: float | None,
               signals: LauncherSignals) -> tuple[str, SupervisionResult]:
    run_id = registry.create_run(name, "local", plan_path=plan_path, run_dir=run_dir,
                                 log_path=run_dir / local.LOG_NAME, host="localhost", status="starting",
                                 meta=RunMeta(nnodes=spec.nnodes, nproc_per_node=spec.nproc_per_node))
    registry.set_status(run_id, "running")

    def events(kind: str, message: str, data: dict) -> None:
        registry.add_event(run_id, kind, message, **data)

    try:  # `jitplan stop RUN` reaches the ranks through run_dir/pid (local.stop_run)
        result = supervise(run_dir, spec, max_restarts=max_restarts, events=events, echo=echo,
                           time_budget_s=time_budget_s, signals=signals)
    except BaseException:
        registry.set_status(run_id, "interrupted", "the launcher stopped unexpectedly")
        raise
    registry.set_status(run_id, result.status, result.message)  # type: ignore[arg-type]  # str, not the Literal
    record_measurement(registry, run_id, plan_path or spec.config, run_dir)
    return run_id, result


def record_measurement(registry: Registry, run_id: str, plan_path: str | None, run_dir: Path) -> None:
    """What the run measured (a "measured" event) and how far from its plan (a "drift" event, > 15%)."""

    measured, drift = run_drift(str(plan_path) if plan_path else None, str(run_dir))
    if measured is not None:
        registry.add_event(run_id, "measured", f"step {measured.step_time_s} s, {measured.images_per_s} img/s",
                           **measured.model_dump(exclude_none=True))
    for d in drift:
        registry.add_event(run_id, "drift", f"{d} (beyond 15% of the plan; jitplan calibrate {run_id})")
