"""Plan -> torchrun command lines, one per node. Pure: no I/O, no torch import.

The launcher's single authority on how ``jitmodel.train`` is started. Flags use torchrun's dashed names
(``--nproc-per-node``, ``--rdzv-endpoint``); the tests parse the argv with torchrun's own parser.
One node runs ``--standalone`` (a private c10d store on a free port, so two local runs never collide);
several nodes use c10d rendezvous at node 0's endpoint, and node 0 hosts the store (``is_host=1``).

    >>> spec = TorchrunSpec(nnodes=2, nproc_per_node=4, rdzv_endpoint="10.0.0.1:29400", rdzv_id="r1",
    ...                     config="/runs/r1/train.yaml")
    >>> cmds = node_commands(spec)
    >>> shell_line(cmds[1])  # doctest: +NORMALIZE_WHITESPACE
    'env PYTHONUNBUFFERED=1 python -m jitmodel.run --nnodes=2 --nproc-per-node=4
     --rdzv-backend=c10d --rdzv-endpoint=10.0.0.1:29400 --rdzv-id=r1 --rdzv-conf=is_host=0
     --max-restarts=0 -m jitmodel.train --config /runs/r1/train.yaml --resume auto'
"""

from __future__ import annotations

import re
import shlex
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from jitplan.runspec import RunSpec
from jitplan.schemas import LaunchSpec

PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]

_ENDPOINT = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.\-]+):([0-9]{1,5})$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class TorchrunSpec(BaseModel):
    """Everything that decides the torchrun command lines of a run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    nnodes: PositiveInt = 1
    nproc_per_node: PositiveInt = 1
    rdzv_endpoint: str | None = None  # host:port of node 0; required when nnodes > 1
    rdzv_id: str = "jitplan"  # shared by all nodes of one run
    python: str = "python"  # interpreter that runs torchrun (jitmodel.run) and the trainer
    module: str = "jitmodel.train"
    config: str = "train.yaml"  # the TrainConfig (or plan) YAML the trainer reads
    resume: bool = True  # --resume auto: continue from output_dir/last.pt when it exists
    omp_num_threads: PositiveInt | None = None  # set on purpose, so torchrun prints no banner
    env: dict[str, str] = Field(default_factory=dict)  # extra environment for every rank

    @field_validator("rdzv_endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None:
            m = _ENDPOINT.match(v)
            if not m or not 0 < int(m.group(2)) < 65536:
                raise ValueError(f"rendezvous endpoint must be host:port with a port in 1..65535, got {v!r}")
        return v

    @field_validator("rdzv_id")
    @classmethod
    def _run_id(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", v):
            raise ValueError(f"rendezvous id may hold letters, digits, '_', '.', '-' only, got {v!r}")
        return v

    @field_validator("env")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if not _ENV_NAME.match(k)]
        if bad:
            raise ValueError(f"invalid environment variable name(s): {', '.join(map(repr, bad))}")
        return v

    @model_validator(mode="after")
    def _multi_node_needs_endpoint(self) -> TorchrunSpec:
        if self.nnodes > 1 and self.rdzv_endpoint is None:
            raise ValueError(f"a {self.nnodes}-node run needs a rendezvous endpoint (node 0's host:port)")
        return self

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node


class NodeCommand(BaseModel):
    """The command one node runs: argv plus the environment added to the caller's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node_rank: NonNegInt
    argv: list[str]
    env: dict[str, str]


def launcher_argv(spec: TorchrunSpec, node_rank: int) -> list[str]:
    """torchrun's own arguments (what ``torch.distributed.run.get_args_parser()`` parses) for one node."""
    if not 0 <= node_rank < spec.nnodes:
        raise ValueError(f"node rank {node_rank} is outside 0..{spec.nnodes - 1}")
    if spec.nnodes == 1:
        args = ["--standalone", "--nnodes=1", f"--nproc-per-node={spec.nproc_per_node}"]
    else:
        args = [
            f"--nnodes={spec.nnodes}",
            f"--nproc-per-node={spec.nproc_per_node}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={spec.rdzv_endpoint}",
            f"--rdzv-id={spec.rdzv_id}",
            f"--rdzv-conf=is_host={1 if node_rank == 0 else 0}",
        ]
    # Restarts are the supervisor's job (it changes the plan between tries); torchrun's own are off.
    args += ["--max-restarts=0", "-m", spec.module, "--config", spec.config]
    if spec.resume:
        args += ["--resume", "auto"]
    return args


def node_command(spec: TorchrunSpec, node_rank: int = 0) -> NodeCommand:
    """The full command of one node: ``python -m jitmodel.run <launcher_argv>`` (torchrun, with a clean
    exit 0 after a SIGTERM/SIGINT that the ranks answered with a checkpoint; see jitmodel/run.py)."""
    env = {"PYTHONUNBUFFERED": "1"}
    if spec.omp_num_threads is not None:
        env["OMP_NUM_THREADS"] = str(spec.omp_num_threads)
    env.update(spec.env)
    argv = [spec.python, "-m", "jitmodel.run", *launcher_argv(spec, node_rank)]
    return NodeCommand(node_rank=node_rank, argv=argv, env=env)


def node_commands(spec: TorchrunSpec) -> list[NodeCommand]:
    """One command per node, node 0 first."""
    return [node_command(spec, r) for r in range(spec.nnodes)]


def shell_line(cmd: NodeCommand) -> str:
    """The command as one POSIX shell line, every word quoted (safe to paste or send over SSH)."""
    env = [f"{k}={shlex.quote(v)}" for k, v in sorted(cmd.env.items())]
    return " ".join(["env", *env, shlex.join(cmd.argv)])


def torchrun_argv(spec: TorchrunSpec, node_rank: int = 0) -> list[str]:
    """The command as a person types it: ``torchrun <launcher_argv>`` (what ``jitplan plan`` shows).

        >>> torchrun_argv(TorchrunSpec(nproc_per_node=2, config="plan.yaml"))  # doctest: +NORMALIZE_WHITESPACE
        ['torchrun', '--standalone', '--nnodes=1', '--nproc-per-node=2', '--max-restarts=0', '-m', 'jitmodel.train',
         '--config', 'plan.yaml', '--resume', 'auto']
    """
    return ["torchrun", *launcher_argv(spec, node_rank)]


def plan_command(launch: LaunchSpec) -> list[str]:
    """The command a plan's launch data renders to, as a person types it (what ``jitplan plan`` prints):
    the same flags ``jitplan launch`` passes, from the one renderer (``launcher_argv``).

        >>> plan_command(LaunchSpec(nnodes=1, nproc_per_node=2, rdzv_backend="static", rdzv_endpoint=None,
        ...                         rdzv_id=None, config="plan.yaml"))[:4]
        ['torchrun', '--standalone', '--nnodes=1', '--nproc-per-node=2']
    """
    spec = TorchrunSpec(nnodes=launch.nnodes, nproc_per_node=launch.nproc_per_node,
                        rdzv_endpoint=launch.rdzv_endpoint, rdzv_id=launch.rdzv_id or "jitplan", config=launch.config)
    return torchrun_argv(spec)


def spec_for_run(run: RunSpec, *, config: str, python: str = "python", rdzv_id: str = "jitplan",
                 rdzv_endpoint: str | None = None, env: dict[str, str] | None = None) -> TorchrunSpec:
    """The torchrun spec of a run: its topology (nodes, processes per node, rendezvous), OMP threads =
    CPUs per node / processes, the plan's launch environment plus ``env``.

        >>> from jitmodel.config import DataConfig, TrainConfig
        >>> from jitplan.runspec import RunSpec
        >>> s = spec_for_run(RunSpec.from_train(TrainConfig(data=DataConfig(kind="digits")), cpus=8),
        ...                  config="train.yaml")
        >>> (s.nnodes, s.nproc_per_node, s.omp_num_threads)
        (1, 1, 8)
    """
    topo = run.topology
    cpus = topo.cpus_per_node
    threads = max(1, cpus // topo.nproc_per_node) if cpus else None
    plan_env = run.plan.launch.env if run.plan is not None else {}
    return TorchrunSpec(nnodes=topo.nnodes, nproc_per_node=topo.nproc_per_node,
                        rdzv_endpoint=rdzv_endpoint or topo.rdzv_endpoint, rdzv_id=rdzv_id, python=python,
                        config=config, omp_num_threads=threads, env={**plan_env, **(env or {})})
