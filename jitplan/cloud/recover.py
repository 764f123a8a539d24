"""Recover a lost instance: rent a new offer and start the run again from its last pulled checkpoint.

``relauncher`` builds what ``supervise_remote`` (cloud/watch.py) calls when an instance is lost, with the
launch's own request and watchdog limits (the budget at the new instance's price, counted from the first rent).
The new instance's lifecycle starts at ``training`` once the run is started on it.

    relaunch = relauncher(plan, req, hooks, registry, run_id, provider, since)
    relaunch(1)        # rents, uploads out/last.pt (the last verified pull), starts with --resume auto
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from jitplan.cloud.lifecycle import Lifecycle
from jitplan.cloud.provision import Hooks, ProvisionRequest, ProvisionResult, provision
from jitplan.launch.remote import RemoteHooks, RemoteRequest, run_ssh, ssh_options, stager
from jitplan.launch.ssh import SSHLaunch
from jitplan.launch.watchdog import config_for
from jitplan.providers import self_stop_of
from jitplan.runspec import load_run_spec

if TYPE_CHECKING:  # pragma: no cover
    from jitplan.providers import Provider
    from jitplan.runs.registry import Registry
    from jitplan.schemas import Plan


def checkpoint_to_resume(local_run_dir: str | Path) -> Path | None:
    """The last verified pull of a run (``out/last.pt`` in its local folder), if any."""
    p = Path(local_run_dir) / "out" / "last.pt"
    return p if p.is_file() else None


def relauncher(plan: Plan, req: RemoteRequest, hooks: RemoteHooks, registry: Registry, run_id: str,
               provider: Provider, since: float,
               rented: Callable[[ProvisionResult], None] = lambda got: None) -> Callable[[int], None]:
    """``relaunch(n)`` for supervise_remote: rent a new offer, start the run again from the last pulled
    checkpoint, with the same watchdog limits counted from the first rent."""
    assert req.cloud is not None
    opts = ssh_options(req, known_hosts=req.known_hosts or registry.known_hosts, accept_new=True)
    preq = ProvisionRequest(plan=plan, run_id=run_id, bid=req.cloud.bid, max_offers=req.cloud.max_offers,
                            instance_id=None, identity=req.identity, yes=True)

    def relaunch(n: int) -> None:
        got = provision(provider, preq, Hooks(say=hooks.say), registry=registry)
        rented(got)
        wd = config_for(plan, max_hours=req.max_hours, budget_usd=req.budget, dph=got.dph, since=since,
                        self_stop=self_stop_of(provider, got.instance_id))
        stage = stager(load_run_spec(req.plan_file), req)
        run_ssh(SSHLaunch(got.ssh, opts, root=req.remote_dir, run_id=req.name), stage, req, hooks, registry,
                run_id, watchdog=wd, resume_from=checkpoint_to_resume(req.run_dir))
        Lifecycle(registry, provider, run_id).mark(got.instance_id, "training", f"recovery {n}: training resumed")

    return relaunch
