"""The runs a user has: overview with live instances and orphans, one run's status, follow its log, stop it.

The core of ``jitplan runs | status | logs | stop`` (the commands only parse and render). The orphan sweep
asks the provider, not our memory: every live instance whose label starts with ``jitplan-`` and that the
registry does not list as live is either adopted (its label was written down as an intent before its create:
a launcher killed between create and record) or shown as an orphan with its cost so far.

    data = overview(Registry(), providers=[make_provider("vast", print)])
    data.orphans          # [Orphan(provider="vast", instance_id=31337002, label="jitplan-8f3c2a-1", ...)]
    destroy_orphans(provider, data.orphans, say=print)
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
from jitplan.providers import LABEL_PREFIX, Instance, ProviderError
from jitplan.runs.schema import KNOWN_HOSTS, EventRow, InstanceRow, IntentRow, RunRow

if TYPE_CHECKING:  # pragma: no cover
    from jitplan.launch.ssh import SSHLaunch
    from jitplan.providers import Provider
    from jitplan.runs.registry import Registry

STALE_INTENT_S = 600.0  # an intent this old whose label no live instance carries: its create made nothing


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InstanceView(_M):
    row: InstanceRow
    hours: float
    cost_so_far: float


class Orphan(_M):
    """A live instance with a jitplan label that the registry does not know: it bills and nobody watches it."""

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


class RunStatusView(_M):
    run: RunRow
    instances: list[InstanceView]
    events: list[EventRow]
    measured: Measurement | None = None  # what its metrics.jsonl says (jitplan.calibration.measured)
    drift: list[str] = []  # measured vs the plan, more than 15% off (jitplan.calibration.drift)
    replan: ReplanView | None = None  # plan -> measured -> re-planned (jitplan.calibration.replan_view)


def _view(i: InstanceRow, now: float) -> InstanceView:
    end = i.ended_at if i.ended_at is not None else now
    return InstanceView(row=i, hours=max(end - i.created_at, 0) / 3600, cost_so_far=i.cost_so_far(now))


def sweep(provider: Provider, registry: Registry, now: float | None = None) -> list[Orphan]:
    """Ask ``provider`` for live instances; adopt those an intent names, return the other unknown ones."""
    now = time.time() if now is None else now
    live = [i for i in provider.list() if i.state != "gone"]  # ProviderError: the caller says so
    known = {r.instance_id for r in registry.instances(active_only=True, provider=provider.name)}
    orphans: list[Orphan] = []
    for inst in live:
        label = inst.label or ""
        if not label.startswith(LABEL_PREFIX) or str(inst.id) in known:
            continue
        intent = registry.intent(label)
        if intent is not None and intent.run_id is not None:
            _adopt(registry, provider, inst, intent)
            continue
        orphans.append(Orphan(
            provider=provider.name, instance_id=inst.id, label=label, status=inst.actual_status or inst.state,
            gpus=f"{inst.num_gpus or '?'}x {inst.gpu_name or '?'}", dph=inst.dph,
            hours=max(now - inst.started_at, 0) / 3600 if inst.started_at else None,
            cost_so_far=inst.cost_so_far(now),
        ))
    labels = {i.label for i in live}
    for it in registry.intents():
        if it.provider == provider.name and it.label not in labels and now - it.created_at > STALE_INTENT_S:
            registry.resolve_intent(it.label, None)
    return orphans


def _adopt(registry: Registry, provider: Provider, inst: Instance, intent: IntentRow) -> None:
    """Record an instance whose create reached the provider but whose launcher never recorded it (kill -9)."""
    status = {"running": "running", "pending": "loading", "failed": "failed", "stopped": "stopped"}[inst.state]
    registry.add_instance(intent.run_id, provider.name, inst.id, inst.label or intent.label,
                          inst.dph if inst.dph is not None else intent.dph or 0.0, gpu_name=inst.gpu_name,
                          num_gpus=inst.num_gpus, status=status, started_at=inst.started_at)  # type: ignore[arg-type]
    registry.resolve_intent(intent.label, inst.id)
    registry.add_event(intent.run_id, "adopted",  # type: ignore[arg-type]
                       f"found live {provider.name} instance {inst.id} by its label {intent.label}; recorded it")


def overview(reg: Registry, *, providers: list[Provider] = (), warnings: list[str] = (), active_only: bool = False,
             limit: int = 20, now: float | None = None) -> RunsOverview:
    """Recent runs, every live instance with dph x hours since creation, and what the providers say is orphaned."""
    now = time.time() if now is None else now
    orphans: list[Orphan] = []
    notes, checked = list(warnings), []
    for p in providers:
        try:
            orphans += sweep(p, reg, now)
            checked.append(p.name)
        except ProviderError as e:
            notes.append(f"could not list {p.title} instances ({e.message}): orphans unknown, not none")
    inst = [_view(i, now) for i in reg.instances(active_only=True)]
    runs = reg.list_runs(active_only=active_only, limit=limit)
    for r in runs:  # a run far from its plan: the plan was made for other hardware or its priors are off
        drift = run_drift(r.plan_path, r.run_dir)[1]
        if drift:
            notes.append(f"run {r.id} drifts from its plan: {'; '.join(drift)} (jitplan calibrate {r.id})")
    return RunsOverview(
        runs=runs, instances=inst, orphans=orphans,
        open_intents=reg.intents(), checked=checked, warnings=notes,
        total_dph=sum(v.row.dph for v in inst) + sum(o.dph or 0 for o in orphans),
        total_cost_so_far=sum(v.cost_so_far for v in inst) + sum(o.cost_so_far or 0 for o in orphans),
    )


def destroy_orphans(provider: Provider, orphans: list[Orphan], say: Callable[[str], None]) -> list[int]:
    """Destroy the given orphans (they are ours by label); return the ids destroyed. Raises on the first failure."""
    done = []
    for o in orphans:
        if o.provider != provider.name:
            continue
        provider.destroy(o.instance_id)
        say(f"destroyed orphan {provider.title} instance {o.instance_id} ({o.label}, "
            f"{o.cost_so_far or 0:.2f} $ so far)")
        done.append(o.instance_id)
    return done


def run_status(reg: Registry, run_id: str, now: float | None = None) -> RunStatusView:
    now = time.time() if now is None else now
    run = reg.get_run(run_id)
    measured, drift = run_drift(run.plan_path, run.run_dir)
    return RunStatusView(run=run, instances=[_view(i, now) for i in reg.instances(active_only=False, run_id=run.id)],
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


def ssh_launch(run: RunRow, registry_dir: Path | None = None) -> SSHLaunch | None:
    """An SSHLaunch for a remote run, from what the launcher recorded (``meta.ssh``, else ``host``)."""
    meta = run.meta
    target = meta.ssh or (run.host if run.backend in ("ssh", "vast") else None)
    if not target:
        return None
    from jitplan.launch.ssh import SSHLaunch, SSHOptions, parse_target

    known_hosts, accept_new = meta.known_hosts, meta.accept_new_host_key
    if run.backend == "vast" and known_hosts is None and registry_dir is not None:
        known_hosts, accept_new = str(registry_dir / KNOWN_HOSTS), True  # where `launch --vast` keeps them
    remote_id = meta.remote_run_id or (Path(run.run_dir).name if run.run_dir else run.name)
    return SSHLaunch(parse_target(target, meta.identity), SSHOptions(known_hosts=known_hosts,
                                                                     accept_new_host_key=accept_new),
                     root=meta.remote_root or "jitplan", run_id=remote_id)


def stop_training(run: RunRow, registry_dir: Path | None = None) -> str:
    """Stop the run's training: over SSH for remote runs, the local process group otherwise. What happened."""
    from jitplan.launch import local

    if run.backend in ("ssh", "vast"):
        launch = ssh_launch(run, registry_dir)
        if launch is None:
            return "no SSH endpoint recorded: nothing to stop"
        code = launch.stop()
        return f"stopped (exit code {code})" if code is not None else "stop sent; the trainer has not exited yet"
    if not run.run_dir:
        return "no run folder recorded: nothing to stop"
    return "stopped" if local.stop_run(run.run_dir) else "nothing was running"


def stop(reg: Registry, run: RunRow, *, destroy: bool, provider: Callable[[str], Provider],
         say: Callable[[str], None], discard: bool = False) -> list[int]:
    """Stop training (the trainer checkpoints on SIGTERM); with ``destroy`` pull the checkpoint home (verified,
    launch/pull.py), then release the run's instances; a failed pull refuses (PullFailed) unless ``discard``.

    ``provider(name)`` builds a provider only when there is something to destroy. Returns the destroyed ids.
    A failed stop is raised after the destroy (so billing stops either way).
    """
    from jitplan.errors import JitplanError
    from jitplan.launch.pull import pull_before_destroy
    from jitplan.providers.provision import destroy_run

    live = reg.instances(active_only=True, run_id=run.id)
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
    if destroy and not live:
        say(f"run {run.id} has no live cloud instance")
    if destroy and live:
        pulled = pull_before_destroy(reg, run.id, discard=discard, say=say)  # refuses: nothing destroyed
        if pulled is not None:
            say(pulled.message)
        for name in dict.fromkeys(i.provider for i in live):
            done += destroy_run(provider(name), registry=reg, run_id=run.id, say=say)
        if done:
            reg.add_event(run.id, "destroy", f"destroyed instance(s) {', '.join(map(str, done))}")
        if done and stop_error is not None and reg.get_run(run.id).status == "stopping":
            reg.set_status(run.id, "stopped", "training ended with its instance")
    if stop_error is not None:
        raise stop_error
    return done
