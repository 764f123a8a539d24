"""The cloud side of ``jitplan runs`` and ``jitplan stop``: live instances, orphans, adoption by label, teardown.

The orphan sweep asks the provider, not our memory: every live instance whose label jitplan minted
(``jitplan-<run id>-<n>``, :func:`jitplan.cloud.lifecycle.is_minted`) and that the registry does not list as
live is either adopted (its label was written down as an intent before its create: a launcher killed between
create and record) or shown as an orphan with its cost so far. A label jitplan did not mint (a user's own
``jitplan-dev-box``) is never touched. ``stop --destroy`` asks the provider about the run's open intents by
label before it says there is nothing live.

    data = overview(Registry(), providers=[make_provider("vast", print)])
    data.orphans          # [Orphan(provider="vast", instance_id=31337002, label="jitplan-8f3c2a-1", ...)]
    destroy_orphans(provider, registry, data.orphans, say=print)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from jitplan.calibration.drift import run_drift
from jitplan.cloud.lifecycle import Lifecycle, is_minted, past_its_cap
from jitplan.errors import CheckFailed, JitplanError
from jitplan.launch.pull import pull_before_destroy
from jitplan.launch.runs import InstanceView, instance_view, stop_training
from jitplan.providers import AuthError, Instance, ProviderError
from jitplan.runs.schema import InstanceStatus, IntentRow, RunRow

if TYPE_CHECKING:  # pragma: no cover
    from jitplan.providers import Provider
    from jitplan.runs.registry import Registry

STALE_INTENT_S = 600.0  # an intent this old whose label no live instance carries: its create made nothing


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Orphan(_M):
    """A live instance with a label jitplan minted that the registry does not know: it bills, nobody watches it."""

    provider: str
    instance_id: int
    label: str
    status: str
    gpus: str
    dph: float | None
    hours: float | None
    cost_so_far: float | None


class RunsOverview(_M):
    runs: list[RunRow]
    instances: list[InstanceView]
    orphans: list[Orphan] = []
    open_intents: list[IntentRow] = []  # creates whose outcome is unknown: `jitplan runs` with a key settles them
    checked: list[str] = []  # providers asked for live instances
    warnings: list[str] = []  # a provider that could not be asked: never read as "nothing there"
    total_dph: float
    total_cost_so_far: float


def sweep(provider: Provider, registry: Registry, now: float | None = None) -> list[Orphan]:
    """Ask ``provider`` for live instances; adopt those an intent names, return the other unknown minted ones."""
    now = time.time() if now is None else now
    live = [i for i in provider.list() if i.state != "gone"]  # ProviderError / AuthError: the caller says so
    known = {r.instance_id for r in registry.cloud.instances(active_only=True, provider=provider.name)}
    orphans: list[Orphan] = []
    for inst in live:
        label = inst.label or ""
        if str(inst.id) in known and inst.state == "stopped":
            _sync_stopped(registry, provider, inst)
        if not is_minted(label) or str(inst.id) in known:
            continue
        intent = registry.cloud.intent(label)
        if intent is not None and intent.run_id is not None:
            adopt(registry, provider, inst, intent)
            continue
        orphans.append(Orphan(
            provider=provider.name, instance_id=inst.id, label=label, status=inst.actual_status or inst.state,
            gpus=f"{inst.num_gpus or '?'}x {inst.gpu_name or '?'}", dph=inst.dph,
            hours=max(now - inst.started_at, 0) / 3600 if inst.started_at else None,
            cost_so_far=inst.cost_so_far(now),
        ))
    labels = {i.label for i in live}
    for it in registry.cloud.intents():
        if it.provider == provider.name and it.label not in labels and now - it.created_at > STALE_INTENT_S:
            registry.cloud.resolve_intent(it.label, None)
    return orphans


def _sync_stopped(registry: Registry, provider: Provider, inst: Instance) -> None:
    """The provider says a recorded instance is stopped: at its cap (it stopped itself; its disk is kept) or
    outbid. The registry says which, and what still bills."""
    rows = [r for r in registry.cloud.instances(active_only=True, provider=provider.name)
            if r.instance_id == str(inst.id)]
    if not rows or rows[0].status in ("stopped", "outbid", "destroying"):
        return
    run_id = rows[0].run_id
    lc = Lifecycle(registry, provider, run_id)
    if past_its_cap(registry, run_id):
        why = (f"instance {inst.id} stopped itself at its cap after training stopped with a checkpoint; its disk is "
               "kept and storage bills until it is destroyed")
        lc.mark(inst.id, "stopped", why)
        if run_id is not None and registry.get_run(run_id).active:
            registry.set_status(run_id, "stopped", why)
    else:
        lc.mark(inst.id, "outbid", f"instance {inst.id} was stopped by {provider.title} (outbid, or out of credit)")


def adopt(registry: Registry, provider: Provider, inst: Instance, intent: IntentRow) -> None:
    """Record an instance whose create reached the provider but whose launcher never recorded it (kill -9, or a
    label lookup that was never answered)."""
    seen: dict[str, InstanceStatus] = {"running": "running", "pending": "loading", "failed": "exited",
                                       "stopped": "outbid"}
    status = seen[inst.state]
    registry.cloud.add_instance(intent.run_id, provider.name, inst.id, inst.label or intent.label,
                                inst.dph if inst.dph is not None else intent.dph or 0.0, gpu_name=inst.gpu_name,
                                num_gpus=inst.num_gpus, status=status, started_at=inst.started_at)
    registry.cloud.resolve_intent(intent.label, inst.id)
    if intent.run_id is None:  # an intent always names its run; a foreign row is left alone
        return
    registry.add_event(intent.run_id, "adopted",
                       f"found live {provider.name} instance {inst.id} by its label {intent.label}; recorded it")


def overview(reg: Registry, *, providers: Sequence[Provider] = (), warnings: Sequence[str] = (),
             active_only: bool = False, limit: int = 20, now: float | None = None) -> RunsOverview:
    """Recent runs, every live instance with dph x hours since creation, and what the providers say is orphaned.
    A provider that cannot be asked (no answer, a refused key) is a warning; the registry's rows still show."""
    now = time.time() if now is None else now
    orphans: list[Orphan] = []
    notes, checked = list(warnings), []
    for p in providers:
        try:
            orphans += sweep(p, reg, now)
            checked.append(p.name)
        except (ProviderError, AuthError) as e:
            notes.append(f"could not list {p.title} instances ({e.message}): orphans unknown, not none; the "
                         "instances below are what the registry recorded")
    inst = [instance_view(i, now) for i in reg.cloud.instances(active_only=True)]
    runs = reg.list_runs(active_only=active_only, limit=limit)
    for r in runs:  # a run far from its plan: the plan was made for other hardware or its priors are off
        drift = run_drift(r.plan_path, r.run_dir)[1]
        if drift:
            notes.append(f"run {r.id} drifts from its plan: {'; '.join(drift)} (jitplan calibrate {r.id})")
    return RunsOverview(
        runs=runs, instances=inst, orphans=orphans,
        open_intents=reg.cloud.intents(), checked=checked, warnings=notes,
        total_dph=sum(v.row.dph for v in inst) + sum(o.dph or 0 for o in orphans),
        total_cost_so_far=sum(v.cost_so_far for v in inst) + sum(o.cost_so_far or 0 for o in orphans),
    )


def destroy_orphans(provider: Provider, registry: Registry, orphans: list[Orphan],
                    say: Callable[[str], None]) -> list[int]:
    """Destroy the given orphans (minted by jitplan, by their label) through the lifecycle; the ids destroyed.
    Raises on the first that survives."""
    done = []
    lc = Lifecycle(registry, provider, None, say=lambda m: None)
    for o in orphans:
        if o.provider != provider.name or not is_minted(o.label):
            continue
        lc.destroy(o.instance_id, f"orphan {o.label}: no run records it", label=o.label, dph=o.dph)
        say(f"destroyed orphan {provider.title} instance {o.instance_id} ({o.label}, "
            f"{o.cost_so_far or 0:.2f} $ so far)")
        done.append(o.instance_id)
    return done


def adopt_by_label(reg: Registry, run: RunRow, provider: Callable[[str], Provider],
                   say: Callable[[str], None]) -> list[str]:
    """Ask the provider about the run's open intents (creates whose outcome was never learnt) and record what
    exists. Returns the labels it still cannot tell about (the lookup went unanswered)."""
    unknown: list[str] = []
    for it in reg.cloud.intents(run_id=run.id):
        p = provider(it.provider)
        try:
            found = p.find_label(it.label)
        except ProviderError as e:
            unknown.append(f"{it.label} ({e.message})")
            continue
        for inst in found:
            adopt(reg, p, inst, it)
            say(f"found instance {inst.id} of run {run.id} by its label {it.label}")
        if not found:
            reg.cloud.resolve_intent(it.label, None)
    return unknown


def stop(reg: Registry, run: RunRow, *, destroy: bool, provider: Callable[[str], Provider],
         say: Callable[[str], None], discard: bool = False) -> list[int]:
    """Stop training (the trainer checkpoints on SIGTERM); with ``destroy`` pull the checkpoint home (verified,
    launch/pull.py), then release the run's instances; a failed pull refuses (PullFailed) unless ``discard``.

    ``provider(name)`` builds a provider only when there is something to destroy or to look up. Returns the
    destroyed ids. A failed stop is raised after the destroy (so billing stops either way).
    """
    stop_error: JitplanError | None = None
    if run.active:
        reg.set_status(run.id, "stopping")
        try:
            what = stop_training(run, reg.path.parent)
        except JitplanError as e:
            stop_error, what = e, f"could not stop training: {e.message}"
        reg.add_event(run.id, "stop", what)
        say(f"run {run.id}: {what}")
        if stop_error is None:
            reg.set_status(run.id, "stopped")
    else:
        say(f"run {run.id} is already {run.status}")
    done: list[int] = []
    live = reg.cloud.instances(active_only=True, run_id=run.id)
    if destroy and not live:
        unknown = adopt_by_label(reg, run, provider, say)
        live = reg.cloud.instances(active_only=True, run_id=run.id)
        if unknown and not live:
            raise CheckFailed(f"run {run.id}: could not tell whether its create made an instance "
                              f"({'; '.join(unknown)}); one may be billing", hint="try again in a minute, or "
                              "`jitplan runs` (it asks the provider by label too)")
        if not live:
            say(f"run {run.id} has no live cloud instance (asked the provider about its labels too)")
    if destroy and live:
        pulled = pull_before_destroy(reg, run.id, discard=discard, say=say)  # refuses: nothing destroyed
        if pulled is not None:
            say(pulled.message)
        for name in dict.fromkeys(i.provider for i in live):
            done += Lifecycle(reg, provider(name), run.id, say=say).destroy_all("jitplan stop --destroy")
        if done:
            reg.add_event(run.id, "destroy", f"destroyed instance(s) {', '.join(map(str, done))}")
        if done and stop_error is not None and reg.get_run(run.id).status == "stopping":
            reg.set_status(run.id, "stopped", "training ended with its instance")
    if stop_error is not None:
        raise stop_error
    return done
