"""Launch a plan on a machine you can SSH into, and the request every remote launch is described by.

    --ssh:  stage the run folder here -> upload code, plan, data -> check the python env -> doctor -> start
            detached -> follow the log (launch/ssh.py, launch/ssh_run.py)

A rented instance (``--cloud``/provider flags) is the same SSH path after provisioning: ``jitplan.cloud.launch``
builds on :func:`stager` and :func:`run_ssh` here. No CLI import: ``say``, ``confirm`` and the offers table
come in :class:`RemoteHooks`.

    req = RemoteRequest(plan_file=Path("plan.yaml"), run_dir=Path("runs/b16"), name="b16", ssh="root@10.0.0.5")
    res = launch_remote(load_run_spec("plan.yaml"), req, RemoteHooks(say=print), registry=Registry())
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any, TextIO

from pydantic import BaseModel, ConfigDict, Field

from jitmodel import custom
from jitmodel.atomic import atomic_write
from jitplan.errors import JitplanError, UsageError
from jitplan.launch import local
from jitplan.launch.ssh import SSHLaunch, SSHOptions, parse_target, project_root, run_script_path
from jitplan.launch.ssh_run import launch_ssh
from jitplan.launch.torchrun import node_command, spec_for_run
from jitplan.launch.watchdog import config_for
from jitplan.runs.registry import Registry
from jitplan.runspec import RunSpec
from jitplan.secrets import redact

if TYPE_CHECKING:  # pragma: no cover
    from jitplan.launch.ssh import SSHLaunch, SSHOptions
    from jitplan.launch.torchrun import NodeCommand
    from jitplan.launch.watchdog import WatchdogConfig
    from jitplan.providers.ranking import RankedOffer
    from jitplan.runs.registry import Registry


class Interrupted(JitplanError):
    """Ctrl-C or SIGTERM ended the launch; the message says what happened to the instance. Exit 130."""

    exit_code = 130


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be so that the same cleanup runs."""


class CloudOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: str  # a name from jitplan.providers.registry
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


def check_request(run: RunSpec, req: RemoteRequest) -> None:
    """What any remote launch refuses before touching a machine (UsageError, exit 2)."""
    if run.topology.nnodes > 1:
        raise UsageError(f"this plan has {run.topology.nnodes} nodes; an SSH host or a rented instance starts one "
                         "node", hint="use --slurm, or run the per-node commands that `--local --dry-run` prints on "
                         "each node")
    if req.data is not None and not req.data.is_dir():
        raise UsageError(f"--data {req.data}: not a folder")


def ssh_options(req: RemoteRequest, *, known_hosts: str | None = None, accept_new: bool | None = None) -> SSHOptions:
    """The SSH options of a request (a rented instance passes its own known_hosts and accept-new)."""

    return SSHOptions(known_hosts=known_hosts or req.known_hosts,
                      accept_new_host_key=req.accept_new_host_key if accept_new is None else accept_new,
                      python=req.remote_python, detach="tmux" if req.tmux else "setsid")


def launch_remote(run: RunSpec, req: RemoteRequest, hooks: RemoteHooks, *,
                  registry: Registry | None = None) -> RemoteResult:
    """--ssh: see the module doc. ``registry`` defaults to the user's."""

    check_request(run, req)
    if req.budget is not None:
        raise UsageError("--budget needs the instance's price per hour: use it with a rented instance "
                         "(or use --max-hours)")
    stage = stager(run, req)
    job = SSHLaunch(parse_target(req.ssh or "", req.identity), ssh_options(req), root=req.remote_dir,
                    run_id=req.name)
    if req.dry_run:
        files, cmd = stage(job, None)
        steps = job.steps(local_code=project_root(), files=files, command=cmd, data=req.data,
                          doctor=req.doctor, create_env=req.create_env)
        return RemoteResult(commands=[redact(s.shell()) for s in steps])
    return run_ssh(job, stage, req, hooks, registry or Registry(), None,
                   watchdog=config_for(run.plan or run.train, max_hours=req.max_hours))


Stage = Callable[["SSHLaunch", "str | None"], "tuple[Sequence[Path], NodeCommand]"]


def stager(run: RunSpec, req: RemoteRequest) -> Stage:
    """``stage(job, remote_data)``: writes the run folder here, returns the files to upload and the command."""

    config = run.file_name

    def stage(job: SSHLaunch, remote_data: str | None) -> tuple[Sequence[Path], NodeCommand]:
        """Write the run folder here once the remote paths are absolute; the files to upload and the command."""
        python = job.venv_python if req.create_env else req.remote_python  # the trainer runs in its run folder
        staged, extra = run, list[Path]()
        if not req.dry_run:
            staged, extra = ship_factory(run, req.run_dir, job.run_dir)
            local.prepare_run_dir(staged, req.run_dir, data_path=remote_data)
        spec = spec_for_run(staged, config=config, python=python, rdzv_id=req.name)
        return [req.run_dir / config, run_script_path(), *extra], node_command(spec)

    return stage


def _writer(data: bytes) -> Callable[[IO[Any]], object]:
    return lambda fh: fh.write(data)


def ship_factory(run: RunSpec, run_dir: Path, remote_run_dir: str) -> tuple[RunSpec, list[Path]]:
    """A user's network defined in a file (``model.factory: /home/me/net.py:make``) travels with the run: its
    source files (the file and the ``.py`` files beside it, what the digest covers) are copied into the run
    folder's ``model/`` and the staged config names them at the remote run folder. Names and bytes are unchanged,
    so the recorded source digest still holds there. A module factory (``pkg.mod:make``) must be importable on
    the remote machine (the project's own ``jitmodel.archs`` is: the code is synced)."""
    m = run.train.model
    if m.factory is None or custom.parse_spec(m.factory).kind != "file":
        return run, []
    spec = custom.parse_spec(m.factory)
    dest = run_dir / "model"
    dest.mkdir(parents=True, exist_ok=True)
    try:
        files = custom.source_files(spec)
    except custom.ModelSpecError as e:
        raise UsageError(str(e)) from None
    for f in files:
        atomic_write(dest / f.name, _writer(f.read_bytes()))
    remote = f"{remote_run_dir}/model/{Path(spec.target).name}:{spec.factory}"
    return run.with_train(run.train.model_copy(update={"model": m.model_copy(update={"factory": remote})})), [dest]


def run_ssh(job: SSHLaunch, stage: Stage, req: RemoteRequest, hooks: RemoteHooks, registry: Registry,
            run_id: str | None, watchdog: WatchdogConfig | None = None,
            resume_from: Path | None = None) -> RemoteResult:
    """The SSH launch of a staged run (launch/ssh_run.py); follows the log only for --ssh without --detach."""

    res = launch_ssh(job, registry=registry, name=req.name, local_code=project_root(), stage=stage, data=req.data,
                     doctor=req.doctor, create_env=req.create_env, follow=not req.detach and req.cloud is None,
                     out=hooks.out, run_id=run_id, local_run_dir=req.run_dir, watchdog=watchdog,
                     resume_from=resume_from)
    return RemoteResult(run_id=res.run_id, target=res.target, remote_run_dir=res.remote_run_dir, status=res.status,
                        exit_code=res.exit_code)
