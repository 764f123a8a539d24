"""The watchdog that runs on the instance next to training: stop it cleanly when it is done, stuck or over budget.

``jitplan launch --ssh/--vast`` uploads ``watchdog-config.json`` into the remote run folder and starts
``python -m jitplan.launch.watchdog RUN_DIR`` there (detached, next to ``run_remote.sh``). Every
``poll_s`` it reads ``exit_code``, ``pid`` and the last step of ``out/metrics.jsonl`` and decides
(:func:`decide`, pure):

- **finished**: the trainer exited (``exit_code`` exists) -> record it and end; exit 3 is the trainer's own
  re-plan stopping it over its budget (``jitmodel.replan``): recorded as **budget**, not failed;
- **stalled**: no new step within ``stall_factor`` x the planned time of one logging interval
  (``step_time_s`` x ``log_every``, at least ``min_stall_s``; ``startup_grace_s`` more before the first
  one) -> SIGUSR1 to the ranks
  first (the trainer registers ``faulthandler`` on it: every thread's stack lands in ``train.log``), then stop;
- **max-hours** / **budget**: the wall clock passed ``stop_at`` (:func:`stop_at` turns ``--max-hours`` and
  ``--budget`` at the planner's $/h into a time, counted from the instance's creation and keeping
  ``reserve_s`` for checkpoint, pull and destroy) -> stop.

To stop, it writes ``stop`` (the reason), sends SIGTERM to the ranks (each finishes its step, writes its
checkpoint and exits 0), escalates to the process group after ``grace_s`` and SIGKILL 30 s later. It never
destroys anything (it holds no cloud key): it writes ``watchdog-state.json`` = ``{"state": "done",
"reason": ...}``, which the local supervisor (``jitplan.cloud.watch``) reads, pulls the checkpoint home,
verifies it, and only then destroys the instance. So no checkpoint is lost to a teardown.

Without a local watcher (``--detach``), a cap would leave the instance billing after training stopped. So a
cloud launch gives the watchdog its provider's ``self_stop`` (:class:`jitplan.providers.SelfStop`: one HTTP
request with the instance's own key, e.g. Vast's stop, which keeps the disk): at a ``max-hours`` or
``budget`` stop, once the trainer has exited (its checkpoint written), the watchdog waits ``self_stop_grace_s``
for a watcher to claim the teardown (``teardown-claimed``, written by ``jitplan watch`` before it pulls), and
otherwise stops the instance itself. The state file says ``self_stop`` = requested | failed: ...

    >>> cfg = WatchdogConfig(step_time_s=2.0, log_every=10, stall_factor=5, startup_grace_s=60, min_stall_s=0)
    >>> decide(cfg, Observation(now=0, elapsed_s=100.0, last_step=None, progress_at_s=None, exit_code=None))
    >>> decide(cfg, Observation(now=0, elapsed_s=161.0, last_step=None, progress_at_s=None, exit_code=None)).reason
    'stalled'
    >>> stop_at(max_hours=None, budget_usd=3.0, dph=1.5, reserve_s=600, since=1000.0)
    (7600.0, 'budget')
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from jitmodel.atomic import atomic_write_text
from jitmodel.records import last_step
from jitmodel.replan import BUDGET_EXIT
from jitplan.errors import UsageError
from jitplan.launch.self_stop import stop_self
from jitplan.providers import SelfStop

CONFIG = "watchdog-config.json"
STATE = "watchdog-state.json"
LOG = "watchdog.log"
CAP_REASONS = frozenset({"max-hours", "budget"})
DEFAULT_RESERVE_S = 600.0  # checkpoint + pull + destroy before a time or money cap


class WatchdogConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    step_time_s: Annotated[float, Field(gt=0)] | None = None  # the plan's one optimizer step; None: no stall check
    log_every: Annotated[int, Field(ge=1)] = 1  # steps between metrics records (what we can see land)
    stall_factor: Annotated[float, Field(gt=1)] = 10.0  # k
    startup_grace_s: Annotated[float, Field(ge=0)] = 900.0  # imports, data, compile before the first record
    min_stall_s: Annotated[float, Field(ge=0)] = 600.0  # never "stalled" sooner: an estimate can be far off
    stop_at: float | None = None  # unix time, from --max-hours / --budget
    stop_reason: str | None = None  # "max-hours" | "budget"
    grace_s: Annotated[float, Field(gt=0)] = 120.0  # SIGTERM -> checkpoint -> exit, before escalating
    poll_s: Annotated[float, Field(gt=0)] = 5.0
    self_stop: SelfStop | None = None  # at a cap with nobody watching: the instance stops itself
    self_stop_grace_s: Annotated[float, Field(ge=0)] = 300.0  # wait this long for a watcher to claim teardown


class Observation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    now: float  # unix time
    elapsed_s: float  # since the watchdog started
    last_step: int | None  # the newest step in metrics.jsonl
    progress_at_s: float | None  # elapsed_s when last_step was first seen
    exit_code: int | None


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: str  # finished | failed | stalled | max-hours | budget
    stop: bool  # the trainer must be stopped (it still runs)
    dump_stacks: bool = False
    message: str


def stop_at(*, max_hours: float | None, budget_usd: float | None, dph: float | None, reserve_s: float,
            since: float) -> tuple[float | None, str | None]:
    """The unix time at which training must stop so that checkpoint, pull and destroy (``reserve_s``) end
    before ``max_hours`` of instance time and before ``budget_usd`` at ``dph`` $/h, both counted from
    ``since`` (the instance's creation). (None, None) without a cap. Pure.

        >>> stop_at(max_hours=2, budget_usd=None, dph=None, reserve_s=600, since=0.0)
        (6600.0, 'max-hours')
    """
    caps: list[tuple[float, str]] = []
    if max_hours is not None:
        if max_hours <= 0:
            raise ValueError(f"--max-hours must be > 0, got {max_hours}")
        caps.append((max_hours * 3600.0, "max-hours"))
    if budget_usd is not None:
        if budget_usd <= 0:
            raise ValueError(f"--budget must be > 0 dollars, got {budget_usd}")
        if not dph or dph <= 0:
            raise ValueError("--budget needs the instance's price per hour (a --vast run)")
        caps.append((budget_usd / dph * 3600.0, "budget"))
    if not caps:
        return None, None
    total, reason = min(caps)
    return since + max(total - reserve_s, 0.0), reason


def config_for(plan, *, max_hours: float | None = None, budget_usd: float | None = None, dph: float | None = None,
               since: float | None = None, reserve_s: float = DEFAULT_RESERVE_S,
               self_stop: SelfStop | None = None) -> WatchdogConfig:
    """The watchdog settings of a run: the plan's step time and logging interval, the caps as ``stop_at``, and
    how the instance stops itself at a cap (``self_stop``; the grace from ``JITPLAN_SELF_STOP_GRACE_S``).
    ``plan`` is a Plan or a bare TrainConfig (no step-time estimate: no stall check). UsageError on bad caps."""

    raw = os.environ.get("JITPLAN_SELF_STOP_GRACE_S")
    try:
        grace = float(raw) if raw else WatchdogConfig.model_fields["self_stop_grace_s"].default
    except ValueError:
        raise UsageError(f"JITPLAN_SELF_STOP_GRACE_S must be a number of seconds, got {raw!r}") from None

    est = getattr(plan, "estimates", None)
    train = getattr(plan, "train", plan)
    try:
        when, reason = stop_at(max_hours=max_hours, budget_usd=budget_usd, dph=dph, reserve_s=reserve_s,
                               since=time.time() if since is None else since)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return WatchdogConfig(step_time_s=getattr(est, "step_time_s", None) or None,
                          log_every=max(int(getattr(train, "log_every", 1) or 1), 1), stop_at=when, stop_reason=reason,
                          self_stop=self_stop if when is not None else None, self_stop_grace_s=max(grace, 0.0))


def decide(cfg: WatchdogConfig, obs: Observation) -> Decision | None:
    """What to do now; None: keep watching. Pure (see the module doc)."""
    if obs.exit_code == BUDGET_EXIT:  # the trainer's own re-plan: the run to its end costs more than its budget
        return Decision(reason="budget", stop=False,
                        message=f"the trainer stopped over budget at step {obs.last_step} (its re-plan: the run to "
                        f"its end costs more than the budget), its checkpoint written")
    if obs.exit_code is not None:
        ok = obs.exit_code == 0
        return Decision(reason="finished" if ok else "failed", stop=False,
                        message=f"the trainer exited with code {obs.exit_code} at step {obs.last_step}")
    if cfg.stop_at is not None and obs.now >= cfg.stop_at:
        return Decision(reason=cfg.stop_reason or "max-hours", stop=True,
                        message=f"{cfg.stop_reason or 'time'} cap: stopping at step {obs.last_step} after "
                        f"{obs.elapsed_s / 3600:.2f} h so that checkpoint, pull and destroy fit before it")
    if cfg.step_time_s is not None:
        window = max(cfg.stall_factor * cfg.step_time_s * cfg.log_every, cfg.min_stall_s)
        since = obs.progress_at_s if obs.progress_at_s is not None else 0.0
        allowed = window + (cfg.startup_grace_s if obs.progress_at_s is None else 0.0)
        if obs.elapsed_s - since > allowed:
            where = f"after step {obs.last_step}" if obs.last_step is not None else "since the start"
            return Decision(reason="stalled", stop=True, dump_stacks=True,
                            message=f"no step landed {where} for {obs.elapsed_s - since:.0f} s (allowed "
                            f"{allowed:.0f} s: {cfg.stall_factor:g} x {cfg.step_time_s:g} s x {cfg.log_every} steps, "
                            f"at least {cfg.min_stall_s:g} s"
                            f"{' + start-up grace' if obs.progress_at_s is None else ''})")
    return None


# ------------------------------------------------------------------------------- on the instance
def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


def ranks(leader: int) -> list[int]:
    """The training ranks: run_remote.sh (``leader``) -> torchrun -> ranks."""
    return [r for t in _children(leader) for r in _children(t)]


def _kill(pids: list[int], sig: int) -> None:
    for p in pids:
        try:
            os.kill(p, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _killpg(leader: int, sig: int) -> None:
    try:
        os.killpg(os.getpgid(leader), sig)
    except (ProcessLookupError, PermissionError):
        pass


class Watchdog:
    """The loop on the instance. ``clock``/``sleep`` are replaceable for tests."""

    def __init__(self, run_dir: str | Path, cfg: WatchdogConfig, *, clock=time.monotonic, sleep=time.sleep) -> None:
        self.dir, self.cfg, self.clock, self.sleep = Path(run_dir), cfg, clock, sleep

    def log(self, msg: str) -> None:
        with open(self.dir / LOG, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} watchdog: {msg}\n")

    def state(self, **data) -> None:

        atomic_write_text(self.dir / STATE, json.dumps({**data, "at": time.time()}) + "\n")

    def run(self) -> Decision:
        t0 = self.clock()
        step, seen_at = None, None
        self.state(state="watching", pid=os.getpid())
        self.log(f"watching {self.dir} ({self.cfg.model_dump_json()})")
        while True:
            elapsed = self.clock() - t0
            now_step = last_step(self.dir / "out" / "metrics.jsonl")
            if now_step is not None and now_step != step:
                step, seen_at = now_step, elapsed
            obs = Observation(now=time.time(), elapsed_s=elapsed, last_step=step, progress_at_s=seen_at,
                              exit_code=_read_int(self.dir / "exit_code"))
            d = decide(self.cfg, obs)
            if d is not None:
                self.log(f"{d.reason}: {d.message}")
                code = self.stop(d) if d.stop else obs.exit_code
                self.state(state="done", reason=d.reason, message=d.message, step=step, exit_code=code)
                self.log(f"done ({d.reason}); exit code {code}; the local side pulls, then tears down")
                if d.reason in CAP_REASONS and self.cfg.self_stop is not None:
                    outcome = stop_self(self.dir, self.cfg.self_stop, grace_s=self.cfg.self_stop_grace_s,
                                        log=self.log, clock=self.clock, sleep=self.sleep)
                    self.state(state="done", reason=d.reason, message=d.message, step=step, exit_code=code,
                               self_stop=outcome)
                return d
            self.sleep(self.cfg.poll_s)

    def stop(self, d: Decision) -> int | None:
        """Stacks (when asked), SIGTERM to the ranks, then the group, then SIGKILL; the trainer's exit code."""

        leader = _read_int(self.dir / "pid")
        if leader is None:
            return None
        atomic_write_text(self.dir / "stop", d.reason + "\n")
        if d.dump_stacks:
            _kill(ranks(leader), signal.SIGUSR1)
            self.log("sent SIGUSR1 to the ranks: their stacks are in train.log")
            self.sleep(2.0)
        rs = ranks(leader)  # the ranks alone first: see jitplan.launch.local.term_ranks for why
        _kill(rs, signal.SIGTERM) if rs else _killpg(leader, signal.SIGTERM)
        for wait_s, then in ((self.cfg.grace_s, signal.SIGTERM), (30.0, signal.SIGKILL), (10.0, None)):
            deadline = self.clock() + wait_s
            while self.clock() < deadline:
                code = _read_int(self.dir / "exit_code")
                if code is not None:
                    return code
                self.sleep(min(1.0, self.cfg.poll_s))
            if then is not None:
                self.log(f"no exit after {wait_s:.0f} s: {signal.Signals(then).name} to the process group")
                _killpg(leader, then)
        return _read_int(self.dir / "exit_code")


def main(argv: list[str] | None = None) -> int:
    """``python -m jitplan.launch.watchdog RUN_DIR``: waits up to 60 s for ``pid``, then watches."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m jitplan.launch.watchdog RUN_DIR", file=sys.stderr)
        return 2
    run_dir = Path(args[0])
    cfg = WatchdogConfig.model_validate_json((run_dir / CONFIG).read_text())
    for _ in range(600):
        if (run_dir / "pid").exists():
            break
        time.sleep(0.1)
    Watchdog(run_dir, cfg).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
