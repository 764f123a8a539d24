"""Follow a rented run from here: the recovery a launch uses, and ``jitplan watch RUN`` for a detached one.

``relauncher`` builds what ``supervise_remote`` (launch/recover.py) calls when an instance is lost: rent a new
offer and start the run again from the last pulled checkpoint, with the launch's own request and watchdog
limits (the budget at the new instance's price, counted from the first rent). ``jitplan launch --vast``
records that request (paths and options, no secrets) in the run's meta, so ``watch_cloud_run`` can do for a
run launched with ``--detach`` what the launcher does when it stays: pull while it trains, tear down when
its watchdog says done (nothing bills after training ends), recover a lost instance.

    jitplan launch plan.yaml --vast --detach      # returns once training started
    jitplan watch 8f3c                            # later, from any terminal on this machine
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from jitplan.errors import CheckFailed, UsageError
from jitplan.launch.remote import (
    RemoteHooks,
    RemoteRequest,
    _run_ssh,
    _stager,
    make_provider,
    sigterm_as_interrupt,
)

if TYPE_CHECKING:  # pragma: no cover
    from jitplan.launch.recover import WatchResult
    from jitplan.runs.registry import Registry
    from jitplan.providers import Provider
    from jitplan.providers.provision import ProvisionResult
    from jitplan.schemas import Plan


def relauncher(plan: Plan, req: RemoteRequest, hooks: RemoteHooks, registry: Registry, run_id: str,
               provider: Provider, since: float,
               rented: Callable[[ProvisionResult], None] = lambda got: None) -> Callable[[int], None]:
    """``relaunch(n)`` for supervise_remote: rent a new offer, start the run again from the last pulled
    checkpoint (launch/recover.py), with the same watchdog limits counted from the first rent."""
    from jitplan.launch.recover import checkpoint_to_resume
    from jitplan.launch.ssh import SSHLaunch, SSHOptions
    from jitplan.launch.watchdog import config_for
    from jitplan.providers.provision import Hooks, ProvisionRequest, provision
    from jitplan.runspec import load_run_spec

    assert req.cloud is not None
    opts = SSHOptions(known_hosts=req.known_hosts or registry.known_hosts,
                      accept_new_host_key=True, python=req.remote_python, detach="tmux" if req.tmux else "setsid")
    preq = ProvisionRequest(plan=plan, run_id=run_id, bid=req.cloud.bid, max_offers=req.cloud.max_offers,
                            instance_id=None, identity=req.identity, yes=True)

    def relaunch(n: int) -> None:
        got = provision(provider, preq, Hooks(say=hooks.say), registry=registry)
        rented(got)
        wd = config_for(plan, max_hours=req.max_hours, budget_usd=req.budget, dph=got.dph, since=since)
        stage = _stager(load_run_spec(req.plan_file), req)
        _run_ssh(SSHLaunch(got.ssh, opts, root=req.remote_dir, run_id=req.name), stage, req, hooks, registry,
                 run_id, watchdog=wd, resume_from=checkpoint_to_resume(req.run_dir))

    return relaunch


def watch_cloud_run(registry: Registry, run_id: str, hooks: RemoteHooks, *, provider: Provider | None = None,
                    max_recoveries: int | None = None) -> WatchResult:
    """``jitplan watch RUN``: what ``jitplan launch --vast`` does after training started, for a run launched
    with ``--detach`` (or whose launcher was stopped): pull while it trains, tear down when its watchdog says
    done, recover a lost instance on a new offer from the last pull (with the launch's own request)."""
    from jitplan.launch.recover import supervise_remote, watch_settings
    from jitplan.runspec import load_run_spec

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
    provider = provider or make_provider(row.meta.provider or live[-1].provider, hooks.say)
    req = RemoteRequest.model_validate(row.meta.launch) if row.meta.launch else None
    if req is not None and max_recoveries is not None:
        req = req.model_copy(update={"max_recoveries": max_recoveries})
    if req is None:  # launched before requests were recorded: no recovery, but pulls and teardown
        def relaunch(n: int) -> None:
            raise CheckFailed("this run's launch settings were not recorded (an older jitplan); relaunch it by hand")
        tries = 0
    else:
        plan = load_run_spec(req.plan_file).plan
        if plan is None:
            raise UsageError(f"{req.plan_file} is no longer a plan; cannot recover from it")
        relaunch, tries = relauncher(plan, req, hooks, registry, row.id, provider, row.created_at), req.max_recoveries
    with sigterm_as_interrupt():
        return supervise_remote(registry, row.id, provider, relaunch, watch_settings(tries), say=hooks.say)
