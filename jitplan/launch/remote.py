"""Launch a plan on a remote machine: an SSH host you have, or an instance rented from a cloud provider.

    --ssh:  stage the run folder here -> upload code, plan, data -> check the python env -> doctor -> start
            detached -> follow the log (launch/ssh.py)
    --vast: the run and the label it will carry are recorded first -> provision (providers/provision.py)
            -> the SSH path above on the rented instance

Every way out of a cloud launch is accounted for: an error, Ctrl-C or SIGTERM before training started destroys
the instance this attempt rented (unless ``keep``); once training runs, or when kept, the instance stays and the
launcher ends by printing its id, $/h and the exact command that stops it. No CLI import: ``say``, ``confirm``
and the offers table come in :class:`RemoteHooks`.

    req = RemoteRequest(plan_file=Path("plan.yaml"), run_dir=Path("runs/b16"), name="b16", cloud=CloudOptions(yes=True))
    res = launch_remote(load_run_spec("plan.yaml"), req, RemoteHooks(say=print), registry=Registry())
    res.stop_command     # "jitplan stop 8f3c2a --destroy --yes"
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

from pydantic import BaseModel, ConfigDict, Field

from jitplan.errors import CheckFailed, JitplanError, UsageError
from jitplan.runspec import RunSpec

if TYPE_CHECKING:  # pragma: no cover
    from jitplan.runs.registry import Registry
    from jitplan.launch.ssh import SSHLaunch, SSHOptions
    from jitplan.launch.torchrun import NodeCommand
    from jitplan.launch.watchdog import WatchdogConfig
    from jitplan.providers import Provider
    from jitplan.providers.provision import ProvisionResult
    from jitplan.providers.ranking import RankedOffer
    from jitplan.schemas import Plan


class Interrupted(JitplanError):
    """Ctrl-C or SIGTERM ended the launch; the message says what happened to the instance. Exit 130."""

    exit_code = 130


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be so that the same cleanup runs."""


class CloudOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: str = "vast"
    bid: Annotated[float, Field(gt=0)] | None = None  # $/h for the whole instance (interruptible)
    instance: int | None = None  # attach to this existing instance
    yes: bool = False
    max_offers: Annotated[int, Field(ge=1)] = 3
    keep: bool = False  # keep the instance when the launch fails (it keeps billing; the stop command is printed)


class RemoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan_file: Path
    run_dir: Path  # the local staging folder
    name: str
    ssh: str | None = None  # USER@HOST[:PORT]; None with ``cloud``
    cloud: CloudOptions | None = None
    identity: str | None = None
    known_hosts: str | None = None
    accept_new_host_key: bool = False
    remote_dir: str = "jitplan"
    remote_python: str = "python3"
    create_env: bool = False
    data: Path | None = None
    detach: bool = False
    tmux: bool = False
    rdzv_endpoint: str | None = None
    doctor: bool = True
    dry_run: bool = False
    max_hours: Annotated[float, Field(gt=0)] | None = None  # the watchdog stops training (checkpoint) before it
    budget: Annotated[float, Field(gt=0)] | None = None  # dollars at the instance's $/h (cloud only)
    max_recoveries: Annotated[int, Field(ge=0)] = 2  # cloud: new instances after one is lost (launch/recover.py)


class RemoteResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str | None = None
    target: str | None = None
    remote_run_dir: str | None = None
    status: str = "planned"
    exit_code: int | None = None
    commands: list[str] = Field(default_factory=list)  # --dry-run: every command, in order
    instance_id: int | None = None
    dph: float | None = None
    stop_command: str | None = None


@dataclass
class RemoteHooks:
    say: Callable[[str], None]
    confirm: Callable[[str], bool] | None = None  # None: no terminal (``yes`` must be given)
    show_offers: Callable[[list[RankedOffer], int, str], None] = field(default=lambda ranked, top, title: None)
    out: TextIO = sys.stdout  # where the followed training log goes


def make_provider(name: str, say: Callable[[str], None], *, http_timeout_s: float | None = None) -> Provider:
    """The provider called ``name``, configured from the environment (key, URL, ``JITPLAN_<NAME>_POLL_S``)."""
    if name != "vast":
        raise UsageError(f"unknown cloud provider {name!r} (known: vast)")
    import os

    from jitplan.providers.vast import VastProvider
    from jitplan.providers.vast.client import DEFAULT_TIMEOUT_S, VastClient

    raw = os.environ.get("JITPLAN_VAST_POLL_S")
    try:
        poll = float(raw) if raw else None
    except ValueError:
        raise UsageError(f"JITPLAN_VAST_POLL_S must be a number of seconds, got {raw!r}") from None
    client = VastClient.from_env(timeout_s=http_timeout_s or DEFAULT_TIMEOUT_S)
    return VastProvider(client, poll_s=poll,
                        on_progress=lambda i: say(f"  instance {i.id}: {i.actual_status or 'scheduling'}"))


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated("SIGTERM")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def stop_command(run_id: str) -> str:
    return f"jitplan stop {run_id} --destroy --yes"


def launch_remote(run: RunSpec, req: RemoteRequest, hooks: RemoteHooks, *, registry: Registry | None = None,
                  provider: Provider | None = None) -> RemoteResult:
    """--ssh or a cloud: see the module doc. ``registry`` and ``provider`` default to the user's."""
    from jitplan.launch.ssh import SSHLaunch, SSHOptions, parse_target, project_root
    from jitplan.secrets import redact

    if run.topology.nnodes > 1:
        raise UsageError(f"this plan has {run.topology.nnodes} nodes; --ssh/--vast start one node",
                         hint="use --slurm, or run the per-node commands that `--local --dry-run` prints on each node")
    if req.data is not None and not req.data.is_dir():
        raise UsageError(f"--data {req.data}: not a folder")
    if req.cloud is not None and req.dry_run:
        raise UsageError(f"--{req.cloud.provider} --dry-run cannot show SSH commands before an instance exists",
                         hint="jitplan plan shows the offers' needs; drop --dry-run to search and confirm")
    if req.budget is not None and req.cloud is None:
        raise UsageError("--budget needs the instance's price per hour: use it with --vast (or use --max-hours)")
    if req.cloud is not None and run.plan is None:
        raise UsageError(f"{req.plan_file} is a bare training config; renting needs a plan (jitplan plan --out)")
    opts = SSHOptions(known_hosts=req.known_hosts, accept_new_host_key=req.accept_new_host_key,
                      python=req.remote_python, detach="tmux" if req.tmux else "setsid")
    stage = _stager(run, req)
    if req.cloud is None:
        target = parse_target(req.ssh or "", req.identity)
        job = SSHLaunch(target, opts, root=req.remote_dir, run_id=req.name)
        if req.dry_run:
            files, cmd = stage(job, None)
            steps = job.steps(local_code=project_root(), files=files, command=cmd, data=req.data,
                              doctor=req.doctor, create_env=req.create_env)
            return RemoteResult(commands=[redact(s.shell()) for s in steps])
        from jitplan.runs.registry import Registry
        from jitplan.launch.watchdog import config_for

        return _run_ssh(job, stage, req, hooks, registry or Registry(), None,
                        watchdog=config_for(run.plan or run.train, max_hours=req.max_hours))
    return _launch_cloud(run.plan, req, hooks, opts, stage, registry, provider)  # type: ignore[arg-type]


def _stager(run: RunSpec, req: RemoteRequest) -> Callable[[SSHLaunch, str | None], tuple[Sequence[Path], NodeCommand]]:
    from jitplan.launch import local
    from jitplan.launch.ssh import run_script_path
    from jitplan.launch.torchrun import node_command, spec_for_run

    config = run.file_name

    def stage(job: SSHLaunch, remote_data: str | None) -> tuple[Sequence[Path], NodeCommand]:
        """Write the run folder here once the remote paths are absolute; the files to upload and the command."""
        python = job.venv_python if req.create_env else req.remote_python  # the trainer runs in its run folder
        if not req.dry_run:
            local.prepare_run_dir(run, req.run_dir, data_path=remote_data)
        spec = spec_for_run(run, config=config, python=python, rdzv_id=req.name)
        return [req.run_dir / config, run_script_path()], node_command(spec)

    return stage


def _run_ssh(job: SSHLaunch, stage: Callable[[SSHLaunch, str | None], tuple[Sequence[Path], NodeCommand]],
             req: RemoteRequest, hooks: RemoteHooks, registry: Registry, run_id: str | None,
             watchdog: WatchdogConfig | None = None, resume_from: Path | None = None) -> RemoteResult:
    from jitplan.launch.ssh import project_root
    from jitplan.launch.ssh_run import launch_ssh

    res = launch_ssh(job, registry=registry, name=req.name, local_code=project_root(), stage=stage, data=req.data,
                     doctor=req.doctor, create_env=req.create_env, follow=not req.detach and req.cloud is None,
                     out=hooks.out, run_id=run_id, local_run_dir=req.run_dir, watchdog=watchdog, resume_from=resume_from)
    return RemoteResult(run_id=res.run_id, target=res.target, remote_run_dir=res.remote_run_dir, status=res.status,
                        exit_code=res.exit_code)


def _launch_cloud(plan: Plan, req: RemoteRequest, hooks: RemoteHooks, opts: SSHOptions,
                  stage: Callable[[SSHLaunch, str | None], tuple[Sequence[Path], NodeCommand]],
                  registry: Registry | None, provider: Provider | None) -> RemoteResult:
    from jitplan.launch.cloud_watch import relauncher
    from jitplan.launch.recover import supervise_remote, watch_settings
    from jitplan.runs.registry import Registry
    from jitplan.runs.schema import RunMeta
    from jitplan.launch.ssh import SSHLaunch
    from jitplan.launch.watchdog import config_for
    from jitplan.providers.provision import Hooks, ProvisionRequest, provision

    cloud = req.cloud
    assert cloud is not None
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
                                    instance_id=cloud.instance, identity=req.identity, yes=cloud.yes)
            got = provision(provider, preq, Hooks(say=hooks.say, confirm=hooks.confirm,
                                                  show_offers=hooks.show_offers), registry=registry)
            # A fresh instance has a host key nobody has seen: trust it the first time, in a file of its own.
            known = req.known_hosts or registry.known_hosts
            job = SSHLaunch(got.ssh, opts.model_copy(update={"known_hosts": known, "accept_new_host_key": True}),
                            root=req.remote_dir, run_id=req.name)
            wd = config_for(plan, max_hours=req.max_hours, budget_usd=req.budget, dph=got.dph, since=since)
            res = _run_ssh(job, stage, req, hooks, registry, run_id, watchdog=wd)
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
                raise Interrupted(f"launch interrupted ({_why(e)}) while renting; {left}") from None
            _leave(provider, registry, run_id, got, cloud.keep, hooks.say, e)
            raise  # _leave raised Interrupted for a Ctrl-C; everything else goes on as it was
    res.instance_id, res.dph, res.stop_command = got.instance_id, got.dph, stop_command(run_id)
    hooks.say(f"instance {got.instance_id} keeps billing {got.dph or 0:.3f} $/h until you stop it:\n  "
              f"{stop_command(run_id)}")
    if req.detach and not cloud.instance:
        hooks.say(f"or let jitplan pull it, tear it down when training ends and recover a lost instance:\n  "
                  f"jitplan watch {run_id}")
    return res


def _why(e: BaseException) -> str:
    if isinstance(e, Terminated):
        return "SIGTERM"
    if isinstance(e, KeyboardInterrupt):
        return "Ctrl-C"
    return getattr(e, "message", None) or f"{type(e).__name__}: {e}"


def _leave(provider: Provider, registry: Registry, run_id: str, got: ProvisionResult, keep: bool,
           say: Callable[[str], None], e: BaseException) -> None:
    """The launch failed after provisioning: destroy what this attempt rented, or record it and say how to stop it."""
    from jitplan.providers import CleanupFailed
    from jitplan.providers.provision import destroy_run
    from jitplan.secrets import redact

    why = redact(_why(e))[:300]
    training = registry.get_run(run_id).status == "running"
    iid, dph, stop = got.instance_id, got.dph or 0.0, stop_command(run_id)
    if got.attached or keep or training:
        reason = "it is not ours" if got.attached else "training runs on it" if training else "--keep"
        registry.add_event(run_id, "kept", f"launch ended ({why}); instance {iid} kept ({reason})", instance_id=iid)
        say(f"launch ended ({why}); instance {iid} kept ({reason}): it bills {dph:.3f} $/h until you run:\n  {stop}")
        if isinstance(e, KeyboardInterrupt):
            registry.set_status(run_id, "running" if training else "interrupted", f"launcher {why}")
            raise Interrupted(f"launch interrupted ({why}); instance {iid} still bills {dph:.3f} $/h",
                              hint=f"stop it with: {stop}") from None
        return
    say(f"launch failed after provisioning ({why}): destroying instance {iid}")
    registry.add_event(run_id, "teardown", f"launch failed after provisioning: {why}", instance_id=iid)
    try:
        destroy_run(provider, registry=registry, run_id=run_id, say=say)
    except CleanupFailed as ce:
        say(f"Error: {ce.message}; it bills {dph:.3f} $/h until you run:\n  {stop}")
        raise CheckFailed(f"launch failed ({why}) and {ce.message}", hint=f"stop it with: {stop}") from None
    status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
    registry.set_status(run_id, status, f"launch ended ({why}); instance {iid} destroyed")  # type: ignore[arg-type]
    if isinstance(e, KeyboardInterrupt):
        raise Interrupted(f"launch interrupted ({why}); instance {iid} destroyed, nothing left billing") from None
