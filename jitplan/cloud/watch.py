"""Watch a rented run from here: pull while it trains, tear down when its watchdog says done, and recover an
instance that exits, goes offline or is outbid by resuming on a new offer from the last pulled checkpoint.

The loop (``supervise_remote``) runs in a cloud launch (without ``--detach``) once training has started, and
in ``jitplan watch RUN`` for a detached one. Every ``poll_s`` it asks the provider about the run's instance
(``Provider.list``, provider-neutral) and reads the on-instance watchdog's state over SSH:

- watchdog ``done`` (finished, stalled, max-hours, budget, failed) -> pull and verify (launch/pull.py) ->
  destroy (cloud/lifecycle.py); a failed pull keeps the instance and says so (no checkpoint is lost);
- every ``pull_every_s`` -> a pull (a failure is an event, training goes on); the instance is ``pulled``;
- the instance outbid, exited, gone, or offline / unreachable ``offline_after`` polls in a row -> its state is
  written, its disk is read (a last pull while it answers), it is destroyed, then ``relaunch(n)`` rents a new
  offer and starts again from the last pulled checkpoint at ``out/last.pt``. At most ``max_recoveries`` times;
  never after a destroy that failed;
- the provider refuses the API key (revoked, changed) -> the watcher keeps going (SSH needs no key) with a
  growing poll, says once what bills and how to fix the key, and tears down once the key works again.

Each step is a registry event (``instance-lost``, ``recover``, ``recovered``, ``recover-failed``, ``gave-up``,
``teardown``, ``auth-failed``), so ``jitplan status RUN`` shows one line per step.

    res = supervise_remote(reg, run_id, provider, relaunch, Watch(poll_s=30, max_recoveries=2), say=print)
    res.status, res.recoveries, res.step       # ('finished', 1, 5000)
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from jitplan.cloud.keywatch import KeyWatch
from jitplan.cloud.lifecycle import Lifecycle, past_its_cap, stop_hint
from jitplan.cloud.recover import relauncher
from jitplan.errors import CheckFailed, JitplanError, UsageError
from jitplan.launch.pull import PullFailed, pull_before_destroy, pull_run, remote_job
from jitplan.launch.remote import RemoteHooks, RemoteRequest, sigterm_as_interrupt
from jitplan.launch.remote_job import remote_state
from jitplan.launch.self_stop import CLAIMED
from jitplan.providers import AuthError, CleanupFailed, Instance, ProviderError
from jitplan.providers.registry import entry, make_provider
from jitplan.runspec import load_run_spec
from jitplan.transport.sshcmd import Step, remote_sh

if TYPE_CHECKING:  # pragma: no cover
    from jitplan.providers import Provider
    from jitplan.runs.registry import Registry
    from jitplan.runs.schema import RunStatus

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


def _show(provider: Provider, iid: int) -> Instance | None:
    """The instance as the provider sees it; a ``gone`` one when it is not listed; None when it did not answer.
    AuthError goes to the caller (a refused key is not a silent provider)."""
    try:
        found = [i for i in provider.list() if i.id == iid]
    except ProviderError:
        return None
    return found[0] if found else Instance(id=iid, state="gone")


def _last_step(registry: Registry, run_id: str) -> tuple[int | None, str | None]:
    lp = registry.get_run(run_id).meta.last_pull
    return (lp.step, lp.checkpoint) if lp else (None, None)


def _billing(registry: Registry, run_id: str) -> str:
    live = registry.cloud.instances(active_only=True, run_id=run_id)
    if not live:
        return "nothing of this run is left billing"
    return "still billing: " + ", ".join(f"instance {i.instance_id} ({i.dph:.3f} $/h, {i.status})" for i in live)


def teardown(registry: Registry, run_id: str, provider: Provider, state: dict, say: Callable[[str], None],
             recoveries: int = 0, lc: Lifecycle | None = None) -> WatchResult:
    """Training ended on the instance: pull and verify, then destroy. A failed pull keeps the instance; a
    destroy that fails (after its deadline) leaves the run's true state and the command that finishes it."""
    lc = lc or Lifecycle(registry, provider, run_id, say=say)
    reason = str(state.get("reason") or "finished")
    registry.add_event(run_id, "teardown", f"the watchdog ended the run ({reason}): pulling, then destroying",
                       reason=reason, detail=state.get("message"))
    say(f"run {run_id}: {reason}{': ' + state['message'] if state.get('message') else ''}; pulling, then destroying")
    stop = stop_hint(run_id)
    _claim(registry, run_id)
    try:
        pull_before_destroy(registry, run_id, say=say)
    except PullFailed as e:
        say(f"Error: {e.message}")
        registry.set_status(run_id, "failed", f"ended ({reason}); instance kept: {e.message}")
        return WatchResult(status="failed", recoveries=recoveries, step=_last_step(registry, run_id)[0],
                           message=f"{e.message}; the instance is kept: `jitplan pull {run_id}` then `{stop}`")
    step, ckpt = _last_step(registry, run_id)
    status: RunStatus = "finished" if reason in ENDED_OK else "failed"
    try:
        lc.destroy_all(f"training ended ({reason}) and its checkpoint is home")
    except CleanupFailed as e:
        msg = f"{reason} at step {step}; checkpoint {ckpt}; but {e.message}"
        registry.set_status(run_id, status, msg)
        return WatchResult(status="failed", recoveries=recoveries, step=step, message=f"{msg}: run `{stop}`")
    msg = f"{reason} at step {step}; checkpoint {ckpt}; instance destroyed, nothing left billing"
    registry.set_status(run_id, status, msg)
    return WatchResult(status=status, recoveries=recoveries, step=step, message=msg)


def _claim(registry: Registry, run_id: str) -> None:
    """Tell the instance's watchdog that this watcher tears it down (so it does not stop itself at a cap)."""
    job = remote_job(registry.get_run(run_id), registry.path.parent)
    if job is None:
        return
    try:
        job.run(Step(name="claim the teardown", argv=job.ssh(remote_sh(f"touch {shlex.quote(job.run_dir)}/{CLAIMED}"))),
                timeout_s=60)
    except CheckFailed:
        pass  # unreachable: the pull that follows says so


def _lost_reason(inst: Instance | None) -> tuple[str | None, bool, str]:
    """(why the instance is lost, whether at once, its lifecycle state); (None, False, "") when it is fine."""
    if inst is None:
        return None, False, ""
    if inst.state == "gone":
        return "it no longer exists", True, "exited"
    if inst.state == "stopped":
        return "it was stopped (outbid, or out of credit)", True, "outbid"
    if inst.state == "failed":
        why = f"{inst.actual_status or 'failed'}{' (' + inst.status_msg + ')' if inst.status_msg else ''}"
        return why, inst.actual_status == "exited", "exited" if inst.actual_status == "exited" else "offline"
    return None, False, ""


def _read_disk(registry: Registry, run_id: str, iid: int, say: Callable[[str], None]) -> None:
    """A lost instance's disk, read while it still answers: one last pull before the destroy."""
    try:
        res = pull_run(registry, run_id)
    except JitplanError as e:
        registry.add_event(run_id, "last-pull-failed", f"instance {iid}: its disk could not be read before the "
                           f"destroy ({e.message}); resuming from the last verified pull", instance_id=str(iid))
        return
    say(f"read instance {iid} before destroying it: {res.message}")


def supervise_remote(registry: Registry, run_id: str, provider: Provider, relaunch: Callable[[int], None],
                     cfg: Watch = Watch(), *, say: Callable[[str], None] = lambda m: None,
                     sleep: Callable[[float], None] = time.sleep,
                     clock: Callable[[], float] = time.monotonic) -> WatchResult:
    """Watch ``run_id`` until it ends (see the module doc). ``relaunch(n)`` rents and starts recovery n."""
    lc = Lifecycle(registry, provider, run_id, say=say)
    key = KeyWatch(registry, run_id, provider, say)
    recoveries, misses, last_pull = 0, 0, clock()
    while True:
        run = registry.get_run(run_id)
        live = registry.cloud.instances(active_only=True, run_id=run_id)
        if not live:
            return WatchResult(status=run.status, recoveries=recoveries, step=_last_step(registry, run_id)[0],
                               message="the run has no live instance any more (destroyed elsewhere)")
        iid = int(live[-1].instance_id)
        try:
            inst = _show(provider, iid)
            key.good()
        except AuthError as e:
            key.bad(e, cfg.poll_s)
            inst = None  # the provider cannot be asked: the machine can
        if inst is not None and inst.state == "stopped" and past_its_cap(registry, run_id):
            msg = (f"instance {iid} stopped itself at its cap (training stopped with a checkpoint first); its disk "
                   f"is kept and bills storage: start it again to pull, or `{stop_hint(run_id)} --discard`")
            lc.mark(iid, "stopped", msg)
            registry.set_status(run_id, "stopped", msg)
            return WatchResult(status="stopped", recoveries=recoveries, step=_last_step(registry, run_id)[0],
                               message=msg)
        lost, at_once, phase = _lost_reason(inst)
        if lost is None and (inst is None or inst.state == "running"):  # the provider silent: ask the machine
            try:
                job = remote_job(run, registry.path.parent)
                if job is None:  # no SSH details recorded: the machine cannot be asked
                    raise CheckFailed("no SSH details recorded for this run")
                state = remote_state(job)
            except CheckFailed as e:
                lost, at_once, phase = f"unreachable over SSH ({e.message})", False, "offline"
            else:
                misses = 0
                if state.get("state") == "done" and key.refused is None:
                    try:
                        return teardown(registry, run_id, provider, state, say, recoveries, lc)
                    except AuthError as e:  # pulled; the destroy waits for a key that works
                        key.bad(e, cfg.poll_s)
                if clock() - last_pull >= cfg.pull_every_s:
                    last_pull = clock()
                    try:
                        pull_run(registry, run_id)
                        lc.mark(iid, "pulled")
                    except PullFailed as e:
                        say(f"pull failed (training goes on): {e.message}")
        if lost is not None and not at_once:
            misses += 1
            if misses < cfg.offline_after:
                registry.add_event(run_id, "instance-unhealthy",
                                   f"instance {iid}: {lost} ({misses}/{cfg.offline_after})")
                lost = None
        if lost is None:
            sleep(key.poll(cfg.poll_s))
            continue
        step, ckpt = _last_step(registry, run_id)
        registry.add_event(run_id, "instance-lost", f"instance {iid} lost: {lost}; the last pulled checkpoint is "
                           f"step {step}", instance_id=iid, step=step)
        lc.mark(iid, phase)  # type: ignore[arg-type] # outbid | exited | offline, written before the destroy
        say(f"instance {iid} lost: {lost}")
        _read_disk(registry, run_id, iid, say)
        step, ckpt = _last_step(registry, run_id)
        try:
            lc.destroy(iid, f"lost: {lost}")
        except CleanupFailed as e:
            msg = f"instance {iid} was lost ({lost}) and {e.message}; not renting another: run `{stop_hint(run_id)}`"
            registry.add_event(run_id, "gave-up", msg)
            registry.set_status(run_id, "failed", msg)
            return WatchResult(status="failed", recoveries=recoveries, step=step, message=msg)
        where = f"step {step} ({ckpt})" if step is not None else "the start (nothing was pulled yet)"
        if recoveries >= cfg.max_recoveries:
            msg = (f"gave up after {recoveries} recoveries (at most {cfg.max_recoveries}, --max-restarts): instance "
                   f"{iid} was lost ({lost}); the last pulled checkpoint is {where}; {_billing(registry, run_id)}")
            registry.add_event(run_id, "gave-up", msg)
            registry.set_status(run_id, "failed", msg)
            return WatchResult(status="failed", recoveries=recoveries, step=step, message=msg)
        recoveries += 1
        registry.add_event(run_id, "recover", f"recovery {recoveries}/{cfg.max_recoveries}: renting a new offer, "
                           f"resuming from {where}", step=step)
        say(f"recovery {recoveries}/{cfg.max_recoveries}: renting a new offer, resuming from {where}")
        try:
            relaunch(recoveries)
        except JitplanError as e:
            msg = f"recovery {recoveries} failed: {e.message}; {_billing(registry, run_id)}"
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
    env = dict(os.environ) if env is None else env
    out: dict[str, float] = {}
    for name, key in (("JITPLAN_WATCH_POLL_S", "poll_s"), ("JITPLAN_PULL_EVERY_S", "pull_every_s")):
        if env.get(name):
            try:
                out[key] = float(env[name])
            except ValueError:
                raise UsageError(f"{name} must be a number of seconds, got {env[name]!r}") from None
            if out[key] <= 0:
                raise UsageError(f"{name} must be > 0 seconds, got {out[key]}")
    return Watch(max_recoveries=max_recoveries, poll_s=out.get("poll_s", Watch.poll_s),
                 pull_every_s=out.get("pull_every_s", Watch.pull_every_s))


def watch_cloud_run(registry: Registry, run_id: str, hooks: RemoteHooks, *, provider: Provider | None = None,
                    max_recoveries: int | None = None) -> WatchResult:
    """``jitplan watch RUN``: what a cloud launch does after training started, for a run launched with
    ``--detach`` (or whose launcher was stopped): pull while it trains, tear down when its watchdog says done,
    recover a lost instance on a new offer from the last pull (with the launch's own request)."""
    row = registry.get_run(run_id)
    live = registry.cloud.instances(active_only=True, run_id=row.id)
    if row.meta.provider is None and not live:
        raise UsageError(f"run {row.id} was not launched on a cloud instance; nothing to watch",
                         hint=f"jitplan logs {row.id} --follow")
    if not live:
        raise UsageError(f"run {row.id} has no live instance ({row.status}); nothing to watch",
                         hint=f"jitplan status {row.id}")
    if row.meta.attached:
        raise UsageError(f"run {row.id} runs on an instance it attached to (--instance): jitplan does not tear it "
                         "down", hint=f"jitplan logs {row.id} --follow")
    name = row.meta.provider or live[-1].provider
    entry(name)  # a name this jitplan knows (UsageError otherwise)
    provider = provider or make_provider(name, hooks.say)
    req = RemoteRequest.model_validate(row.meta.launch) if row.meta.launch else None
    if req is not None and max_recoveries is not None:
        req = req.model_copy(update={"max_recoveries": max_recoveries})
    relaunch: Callable[[int], None]
    if req is None:  # launched before requests were recorded: no recovery, but pulls and teardown
        def unrecorded(n: int) -> None:
            raise CheckFailed("this run's launch settings were not recorded (an older jitplan); relaunch it by hand")
        relaunch, tries = unrecorded, 0
    else:
        plan = load_run_spec(req.plan_file).plan
        if plan is None:
            raise UsageError(f"{req.plan_file} is no longer a plan; cannot recover from it")
        relaunch, tries = relauncher(plan, req, hooks, registry, row.id, provider, row.created_at), req.max_recoveries
    with sigterm_as_interrupt():
        return supervise_remote(registry, row.id, provider, relaunch, watch_settings(tries), say=hooks.say)
