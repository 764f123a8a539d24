"""Launch a plan on a rented instance: record the run, provision, then the SSH path, then watch it.

    the run and the label it will carry are recorded first -> provision (cloud/provision.py) -> the SSH path
    (launch/remote.py) on the rented instance -> without --detach: watch it (cloud/watch.py) until it ends

Every way out is accounted for, through the lifecycle (cloud/lifecycle.py): an error, Ctrl-C or SIGTERM
before training started destroys the instance this attempt rented (unless ``keep``); once training runs, or
when kept, the instance stays (``kept``) and the launcher ends by printing its id, $/h and the exact command
that stops it. Caps (``--max-hours``, ``--budget``) that leave no time after the teardown reserve are refused
before anything is rented.

    req = RemoteRequest(plan_file=Path("plan.yaml"), run_dir=Path("runs/b16"), name="b16",
                        cloud=CloudOptions(provider="vast", yes=True))
    res = launch_cloud(load_run_spec("plan.yaml"), req, RemoteHooks(say=print), registry=Registry())
    res.stop_command     # "jitplan stop 8f3c2a --destroy --yes"
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from jitplan.cloud.lifecycle import Lifecycle, stop_hint
from jitplan.cloud.provision import Hooks, ProvisionRequest, ProvisionResult, provision
from jitplan.cloud.recover import relauncher
from jitplan.cloud.watch import supervise_remote, watch_settings
from jitplan.errors import CheckFailed, UsageError
from jitplan.launch.remote import (
    Interrupted,
    RemoteHooks,
    RemoteRequest,
    RemoteResult,
    Terminated,
    check_request,
    run_ssh,
    sigterm_as_interrupt,
    ssh_options,
    stager,
)
from jitplan.launch.ssh import SSHLaunch
from jitplan.launch.watchdog import DEFAULT_RESERVE_S, config_for
from jitplan.providers import CleanupFailed, self_stop_of
from jitplan.providers.registry import entry, make_provider
from jitplan.runs.schema import RunMeta
from jitplan.runspec import RunSpec
from jitplan.secrets import redact

if TYPE_CHECKING:  # pragma: no cover
    from jitplan.providers import Provider
    from jitplan.runs.registry import Registry
    from jitplan.runs.schema import RunStatus


def check_caps(req: RemoteRequest, dph_hint: float | None = None, reserve_s: float = DEFAULT_RESERVE_S) -> None:
    """A cap that leaves no training time once checkpoint, pull and destroy (``reserve_s``) are kept back is
    refused before renting, with the number to raise it to. ``--budget`` is checked at ``dph_hint`` $/h when
    known (else after the rent, by the watchdog config). UsageError, exit 2."""
    need_h = reserve_s / 3600.0
    if req.max_hours is not None and req.max_hours <= need_h:
        raise UsageError(f"--max-hours {req.max_hours:g} leaves no training time: checkpoint, pull and destroy "
                         f"keep {reserve_s / 60:.0f} min back", hint=f"raise it above {need_h:.2f} (hours)")
    if req.budget is not None and dph_hint is not None and req.budget <= dph_hint * need_h:
        raise UsageError(f"--budget {req.budget:g} $ leaves no training time at {dph_hint:.3f} $/h: checkpoint, "
                         f"pull and destroy keep {reserve_s / 60:.0f} min back ({dph_hint * need_h:.3f} $)",
                         hint=f"raise it above {dph_hint * need_h:.2f} (dollars)")


def launch_cloud(run: RunSpec, req: RemoteRequest, hooks: RemoteHooks, *, registry: Registry | None = None,
                 provider: Provider | None = None) -> RemoteResult:
    """Rent, start, and (without --detach) watch: see the module doc."""
    from jitplan.runs.registry import Registry  # lazy: start-up (sqlite3)

    cloud = req.cloud
    assert cloud is not None
    flag = entry(cloud.provider).flag
    check_request(run, req)
    if req.dry_run:
        raise UsageError(f"{flag} --dry-run cannot show SSH commands before an instance exists",
                         hint="jitplan plan shows the offers' needs; drop --dry-run to search and confirm")
    if run.plan is None:
        raise UsageError(f"{req.plan_file} is a bare training config; renting needs a plan (jitplan plan --out)")
    check_caps(req)
    plan = run.plan
    registry = registry or Registry()
    # The run first: every label a create will carry is written under it before the create is sent.
    run_id = registry.create_run(req.name, cloud.provider, plan_path=str(req.plan_file.resolve()),
                                 run_dir=req.run_dir, status="provisioning")
    registry.update_run(run_id, meta=RunMeta(launch=req.model_copy(update={
        "plan_file": req.plan_file.resolve(), "run_dir": req.run_dir.resolve()}).model_dump(mode="json")))
    got: ProvisionResult | None = None
    since = time.time()  # --max-hours and --budget count from the rent
    with sigterm_as_interrupt():
        try:
            provider = provider or make_provider(cloud.provider, hooks.say)
            preq = ProvisionRequest(plan=plan, run_id=run_id, bid=cloud.bid, max_offers=cloud.max_offers,
                                    instance_id=cloud.instance, identity=req.identity, yes=cloud.yes,
                                    budget_usd=req.budget, reserve_s=DEFAULT_RESERVE_S)
            got = provision(provider, preq, Hooks(say=hooks.say, confirm=hooks.confirm,
                                                  show_offers=hooks.show_offers), registry=registry)
            check_caps(req, got.dph)  # the budget at the price actually rented (the reserve included)
            # A fresh instance has a host key nobody has seen: trust it the first time, in a file of its own.
            job = SSHLaunch(got.ssh, ssh_options(req, known_hosts=req.known_hosts or registry.known_hosts,
                                                 accept_new=True), root=req.remote_dir, run_id=req.name)
            own = not cloud.instance  # never stop an instance we only attached to
            wd = config_for(plan, max_hours=req.max_hours, budget_usd=req.budget, dph=got.dph, since=since,
                            self_stop=self_stop_of(provider, got.instance_id) if own else None)
            res = run_ssh(job, stager(run, req), req, hooks, registry, run_id, watchdog=wd)
            if wd.self_stop is not None and wd.stop_at is not None:
                when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(wd.stop_at))
                note = (f"at {when} ({wd.stop_reason} cap, less {DEFAULT_RESERVE_S / 60:.0f} min for teardown) the "
                        f"watchdog stops training with a checkpoint; unless a watcher tears it down first, instance "
                        f"{got.instance_id} then stops itself ({wd.self_stop.what})")
                registry.add_event(run_id, "cap", note, instance_id=str(got.instance_id), stop_at=wd.stop_at)
                if req.detach:
                    hooks.say(note)
            lc = Lifecycle(registry, provider, run_id, say=hooks.say)
            lc.mark(got.instance_id, "training", f"training started on instance {got.instance_id}")
            if not req.detach and not cloud.instance:  # watch it here: pull, tear down when done, recover
                def rented(new: ProvisionResult) -> None:  # a recovery's instance is the one to tear down now
                    nonlocal got
                    got = new

                w = supervise_remote(registry, run_id, provider,
                                     relauncher(plan, req, hooks, registry, run_id, provider, since, rented),
                                     watch_settings(req.max_recoveries), say=hooks.say)
                res.status = w.status
                if not registry.cloud.instances(run_id=run_id):
                    return res.model_copy(update={"instance_id": got.instance_id, "dph": got.dph})
        except BaseException as e:
            if got is None or provider is None:  # provision() already destroyed what it had rented
                if not isinstance(e, KeyboardInterrupt):
                    raise
                live = registry.cloud.instances(run_id=run_id)
                left = (f"instance {', '.join(i.instance_id for i in live)} may still bill: see `jitplan runs`"
                        if live else "nothing of this run is left billing")
                raise Interrupted(f"launch interrupted ({why(e)}) while renting; {left}") from None
            _leave(provider, registry, run_id, got, cloud.keep, hooks.say, e)
            raise  # _leave raised Interrupted for a Ctrl-C; everything else goes on as it was
    stop = stop_hint(run_id)
    res.instance_id, res.dph, res.stop_command = got.instance_id, got.dph, stop
    hooks.say(f"instance {got.instance_id} keeps billing {got.dph or 0:.3f} $/h until you stop it:\n  {stop}")
    if req.detach and not cloud.instance:
        hooks.say(f"or let jitplan pull it, tear it down when training ends and recover a lost instance:\n  "
                  f"jitplan watch {run_id}")
    return res


def why(e: BaseException) -> str:
    """What ended a launch, in a few words (never a secret)."""
    if isinstance(e, Terminated):
        return "SIGTERM"
    if isinstance(e, KeyboardInterrupt):
        return "Ctrl-C"
    return redact(getattr(e, "message", None) or f"{type(e).__name__}: {e}")[:300]


def _leave(provider: Provider, registry: Registry, run_id: str, got: ProvisionResult, keep: bool,
           say: Callable[[str], None], e: BaseException) -> None:
    """The launch failed after provisioning: destroy what this attempt rented, or keep it and say how to stop it."""
    reason_e = why(e)
    training = registry.get_run(run_id).status == "running"
    iid, dph, stop = got.instance_id, got.dph or 0.0, stop_hint(run_id)
    lc = Lifecycle(registry, provider, run_id, say=say)
    if got.attached or keep or training:
        reason = "it is not ours" if got.attached else "training runs on it" if training else "--keep"
        lc.mark(iid, "kept", f"launch ended ({reason_e}); instance {iid} kept ({reason})")
        say(f"launch ended ({reason_e}); instance {iid} kept ({reason}): it bills {dph:.3f} $/h until you run:\n"
            f"  {stop}")
        if isinstance(e, KeyboardInterrupt):
            registry.set_status(run_id, "running" if training else "interrupted", f"launcher {reason_e}")
            raise Interrupted(f"launch interrupted ({reason_e}); instance {iid} still bills {dph:.3f} $/h",
                              hint=f"stop it with: {stop}") from None
        return
    say(f"launch failed after provisioning ({reason_e}): destroying instance {iid}")
    try:
        lc.destroy_all(f"launch failed after provisioning: {reason_e}")
    except CleanupFailed as ce:
        say(f"Error: {ce.message}; it bills {dph:.3f} $/h until you run:\n  {stop}")
        raise CheckFailed(f"launch failed ({reason_e}) and {ce.message}", hint=f"stop it with: {stop}") from None
    status: RunStatus = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
    registry.set_status(run_id, status, f"launch ended ({reason_e}); instance {iid} destroyed")
    if isinstance(e, KeyboardInterrupt):
        raise Interrupted(f"launch interrupted ({reason_e}); instance {iid} destroyed, nothing left billing") from None
