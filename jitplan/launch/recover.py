"""Watch a rented run from here: pull while it trains, tear down when its watchdog says done, and recover an
instance that exits, goes offline or is outbid by resuming on a new offer from the last pulled checkpoint.

The loop (``supervise_remote``) runs in ``jitplan launch --vast`` (without ``--detach``) once training has
started. Every ``poll_s`` it asks the provider about the run's instance (``Provider.list``, provider-neutral)
and reads the on-instance watchdog's state over SSH:

- watchdog ``done`` (finished, stalled, max-hours, budget, failed) -> pull and verify (launch/pull.py) ->
  destroy; a failed pull keeps the instance and says so (no checkpoint is lost to a teardown);
- every ``pull_every_s`` -> a pull (a failure is an event, training goes on);
- the instance ``stopped`` (outbid), ``exited``, gone, or offline / unreachable ``offline_after`` polls in a
  row -> destroy it (it bills and holds nothing we can reach), then ``relaunch(n)``: rent a new offer and
  start again with the last pulled checkpoint at ``out/last.pt`` (``--resume auto``). At most
  ``max_recoveries`` times; never after a destroy that failed.

Each step is a registry event (``instance-lost``, ``recover``, ``recovered``, ``recover-failed``,
``gave-up``, ``teardown``), so ``jitplan status RUN`` shows one line per step.

    res = supervise_remote(reg, run_id, provider, relaunch, Watch(poll_s=30, max_recoveries=2), say=print)
    res.status, res.recoveries, res.step       # ('finished', 1, 5000)
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from jitplan.errors import CheckFailed, JitplanError
from jitplan.launch.pull import PullFailed, pull_before_destroy, pull_run, remote_job
from jitplan.transport.sshcmd import Step, remote_sh
from jitplan.launch.watchdog import STATE

if TYPE_CHECKING:  # pragma: no cover
    from jitplan.runs.registry import Registry
    from jitplan.launch.ssh import SSHLaunch
    from jitplan.providers import Instance, Provider

ENDED_OK = frozenset({"finished", "max-hours", "budget"})  # the run ends "finished"; stalled/failed end "failed"


@dataclass(frozen=True)
class Watch:
    poll_s: float = 30.0
    pull_every_s: float = 1800.0
    max_recoveries: int = 2
    offline_after: int = 3  # polls in a row offline or unreachable over SSH before the instance counts as lost


class WatchResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: str  # finished | failed | stopped
    recoveries: int
    step: int | None  # the last verified pulled step
    message: str


def remote_state(job: SSHLaunch) -> dict:
    """The watchdog's state on the remote; ``{"state": "done", "reason": finished|failed}`` from ``exit_code``
    when no watchdog runs there; ``{}`` while nothing is known. CheckFailed when SSH does not answer."""
    q = shlex.quote
    d = job.run_dir
    script = (f"cat {q(d + '/' + STATE)} 2>/dev/null; echo; echo ---; cat {q(d + '/exit_code')} 2>/dev/null; "
              f"echo; [ -s {q(d + '/watchdog-config.json')} ] && echo watchdog; true")
    text = job.run(Step(name="read watchdog state", argv=job.ssh(remote_sh(script))), timeout_s=120)
    state_text, _, rest = text.partition("---")
    try:
        state = json.loads(state_text.strip() or "{}")
    except ValueError:
        state = {}  # half-written is impossible (atomic), but a foreign file is not our business
    code = rest.split()[0] if rest.split() and rest.split()[0].lstrip("-").isdigit() else None
    if state.get("state") != "done" and code is not None and "watchdog" not in rest:
        return {"state": "done", "reason": "finished" if code == "0" else "failed", "exit_code": int(code)}
    return state


def _show(provider: Provider, iid: int) -> Instance | None:
    """The instance as the provider sees it; a ``gone`` one when it is not listed; None when it did not answer."""
    from jitplan.providers import Instance, ProviderError

    try:
        found = [i for i in provider.list() if i.id == iid]
    except ProviderError:
        return None
    return found[0] if found else Instance(id=iid, state="gone")


def _last_step(registry: Registry, run_id: str) -> tuple[int | None, str | None]:
    lp = registry.get_run(run_id).meta.last_pull
    return (lp.step, lp.checkpoint) if lp else (None, None)


def teardown(registry: Registry, run_id: str, provider: Provider, state: dict, say: Callable[[str], None],
             recoveries: int = 0) -> WatchResult:
    """Training ended on the instance: pull and verify, then destroy. A failed pull keeps the instance."""
    from jitplan.providers.provision import destroy_run

    reason = str(state.get("reason") or "finished")
    registry.add_event(run_id, "teardown", f"the watchdog ended the run ({reason}): pulling, then destroying",
                       reason=reason, detail=state.get("message"))
    say(f"run {run_id}: {reason}{': ' + state['message'] if state.get('message') else ''}; pulling, then destroying")
    try:
        pull_before_destroy(registry, run_id, say=say)
    except PullFailed as e:
        say(f"Error: {e.message}")
        registry.set_status(run_id, "failed", f"ended ({reason}); instance kept: {e.message}")
        return WatchResult(status="failed", recoveries=recoveries, step=_last_step(registry, run_id)[0],
                           message=f"{e.message}; the instance is kept: `jitplan pull {run_id}` then "
                           f"`jitplan stop {run_id} --destroy --yes`")
    destroy_run(provider, registry=registry, run_id=run_id, say=say)
    step, ckpt = _last_step(registry, run_id)
    status = "finished" if reason in ENDED_OK else "failed"
    msg = f"{reason} at step {step}; checkpoint {ckpt}; instance destroyed"
    registry.set_status(run_id, status, msg)  # type: ignore[arg-type]
    return WatchResult(status=status, recoveries=recoveries, step=step, message=msg)


def _lost_reason(inst: Instance | None) -> tuple[str | None, bool]:
    """(why the instance is lost, whether at once) from the provider's view; (None, False) when it is fine."""
    if inst is None:
        return None, False
    if inst.state == "gone":
        return "it no longer exists", True
    if inst.state == "stopped":
        return "it was stopped (outbid, or out of credit)", True
    if inst.state == "failed":
        why = f"{inst.actual_status or 'failed'}{' (' + inst.status_msg + ')' if inst.status_msg else ''}"
        return why, inst.actual_status == "exited"
    return None, False


def supervise_remote(registry: Registry, run_id: str, provider: Provider, relaunch: Callable[[int], None],
                     cfg: Watch = Watch(), *, say: Callable[[str], None] = lambda m: None,
                     sleep: Callable[[float], None] = time.sleep,
                     clock: Callable[[], float] = time.monotonic) -> WatchResult:
    """Watch ``run_id`` until it ends (see the module doc). ``relaunch(n)`` rents and starts recovery n."""
    from jitplan.providers.provision import destroy_run

    recoveries, misses, last_pull = 0, 0, clock()
    while True:
        run = registry.get_run(run_id)
        live = registry.cloud.instances(active_only=True, run_id=run_id)
        if not live:
            step = _last_step(registry, run_id)[0]
            return WatchResult(status=run.status, recoveries=recoveries, step=step,
                               message="the run has no live instance any more (destroyed elsewhere)")
        iid = int(live[-1].instance_id)
        inst = _show(provider, iid)
        lost, at_once = _lost_reason(inst)
        if lost is None and (inst is None or inst.state == "running"):  # the provider silent: ask the machine
            try:
                state = remote_state(remote_job(run, registry.path.parent))  # type: ignore[arg-type]
            except CheckFailed as e:
                lost, at_once = f"unreachable over SSH ({e.message})", False
            else:
                misses = 0
                if state.get("state") == "done":
                    return teardown(registry, run_id, provider, state, say, recoveries)
                if clock() - last_pull >= cfg.pull_every_s:
                    last_pull = clock()
                    try:
                        pull_run(registry, run_id)
                    except PullFailed as e:
                        say(f"pull failed (training goes on): {e.message}")
        if lost is not None and not at_once:
            misses += 1
            if misses < cfg.offline_after:
                registry.add_event(run_id, "instance-unhealthy", f"instance {iid}: {lost} ({misses}/{cfg.offline_after})")
                lost = None
        if lost is None:
            sleep(cfg.poll_s)
            continue
        step, ckpt = _last_step(registry, run_id)
        registry.add_event(run_id, "instance-lost", f"instance {iid} lost: {lost}; the last pulled checkpoint is "
                           f"step {step}", instance_id=iid, step=step)
        say(f"instance {iid} lost: {lost}")
        try:
            destroy_run(provider, registry=registry, instance_id=iid, say=say)
        except JitplanError as e:
            msg = f"could not destroy lost instance {iid} ({e.message}); not renting another"
            registry.add_event(run_id, "gave-up", msg)
            registry.set_status(run_id, "failed", msg)
            return WatchResult(status="failed", recoveries=recoveries, step=step, message=msg)
        if recoveries >= cfg.max_recoveries:
            msg = (f"gave up after {recoveries} recoveries (at most {cfg.max_recoveries}); the last pulled checkpoint "
                   f"is step {step} in {ckpt}")
            registry.add_event(run_id, "gave-up", msg)
            registry.set_status(run_id, "failed", msg)
            return WatchResult(status="failed", recoveries=recoveries, step=step, message=msg)
        recoveries += 1
        where = f"step {step} ({ckpt})" if step is not None else "the start (nothing was pulled yet)"
        registry.add_event(run_id, "recover", f"recovery {recoveries}/{cfg.max_recoveries}: renting a new offer, "
                           f"resuming from {where}", step=step)
        say(f"recovery {recoveries}/{cfg.max_recoveries}: renting a new offer, resuming from {where}")
        try:
            relaunch(recoveries)
        except JitplanError as e:
            msg = f"recovery {recoveries} failed: {e.message}"
            registry.add_event(run_id, "recover-failed", msg)
            registry.set_status(run_id, "failed", msg)
            return WatchResult(status="failed", recoveries=recoveries, step=step, message=msg)
        new = [i.instance_id for i in registry.cloud.instances(active_only=True, run_id=run_id)]
        registry.add_event(run_id, "recovered", f"training resumed from {where} on instance {', '.join(new)}",
                           step=step)
        misses, last_pull = 0, clock()


def watch_settings(max_recoveries: int, env: dict[str, str] | None = None) -> Watch:
    """``Watch`` with ``max_recoveries``; ``JITPLAN_WATCH_POLL_S`` and ``JITPLAN_PULL_EVERY_S`` override the
    poll and pull intervals (CLI > JITPLAN_* env > default)."""
    import os

    from jitplan.errors import UsageError

    env = dict(os.environ) if env is None else env
    out = {}
    for name, key in (("JITPLAN_WATCH_POLL_S", "poll_s"), ("JITPLAN_PULL_EVERY_S", "pull_every_s")):
        if env.get(name):
            try:
                out[key] = float(env[name])
            except ValueError:
                raise UsageError(f"{name} must be a number of seconds, got {env[name]!r}") from None
            if out[key] <= 0:
                raise UsageError(f"{name} must be > 0 seconds, got {out[key]}")
    return Watch(max_recoveries=max_recoveries, **out)


def checkpoint_to_resume(local_run_dir: str | Path) -> Path | None:
    """The last verified pull of a run (``out/last.pt`` in its local folder), if any."""
    p = Path(local_run_dir) / "out" / "last.pt"
    return p if p.is_file() else None
