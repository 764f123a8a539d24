"""The run spec: one typed object for "a plan file or a bare training config", what every consumer reads.

Launch, doctor, the supervisor, compare and the demo take a ``RunSpec``: the TrainConfig the ranks read,
the topology (nodes, processes per node, rendezvous, CPUs), the planner's worker decision with its
reasons (None for a bare config) and the provenance of each derived number. ``load_run_spec`` is the one
loader; files say what they hold with ``kind: plan`` or ``kind: train`` (files written before that key
still load: see ``jitmodel.config.file_kind``).

    >>> from jitmodel.config import DataConfig, TrainConfig
    >>> run = RunSpec.from_train(TrainConfig(data=DataConfig(kind="digits"), world_size=2), cpus=8)
    >>> run.kind, run.topology.nnodes, run.topology.nproc_per_node, run.file_name
    ('train', 1, 2, 'train.yaml')
    >>> run.with_workers(0).train.data.persistent_workers
    False
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from jitmodel.atomic import atomic_write_text
from jitmodel.config import TrainConfig, dump_yaml, file_kind, read_yaml_mapping, validation_summary
from jitplan.errors import UsageError
from jitplan.schemas import Plan, WorkerDecision, load_plan, plan_to_yaml

PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]


class Topology(BaseModel):
    """Where the ranks run: ``nnodes`` x ``nproc_per_node`` processes, and what torchrun needs to meet."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    nnodes: PositiveInt = 1
    nproc_per_node: PositiveInt = 1  # one per GPU; one on a CPU-only machine
    gpus_per_node: NonNegInt = 0
    cpus_per_node: PositiveInt | None = None  # None: unknown
    rdzv_endpoint: str | None = None  # node 0's host:port, multi-node only
    rdzv_id: str | None = None

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node


class RunSpec(BaseModel):
    """A run as every consumer sees it: a whole plan, or a bare TrainConfig (exactly one of the two)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topology: Topology
    workers: WorkerDecision | None = None  # the planner's decision and reasons; None for a bare config
    provenance: dict[str, str] = Field(default_factory=dict)  # derived number -> where it came from
    plan: Plan | None = None  # the whole plan, whose ``train`` is the run's one TrainConfig
    config: TrainConfig | None = None  # a bare TrainConfig (never set beside a plan)
    source: str | None = None  # the file it was read from

    @model_validator(mode="after")
    def _one_source(self) -> RunSpec:
        """One TrainConfig per run: a plan's lives in ``plan.train``, a bare config's in ``config``."""
        if (self.plan is None) == (self.config is None):
            raise ValueError("a run spec holds its TrainConfig in plan.train or in config, exactly one")
        return self

    @property
    def kind(self) -> Literal["plan", "train"]:
        """What the run's file holds (the ``kind:`` key it is written with)."""
        return "plan" if self.plan is not None else "train"

    @property
    def train(self) -> TrainConfig:
        """The TrainConfig every rank reads."""
        if self.plan is not None:
            return self.plan.train
        assert self.config is not None  # the validator holds one of the two
        return self.config

    @classmethod
    def from_plan(cls, plan: Plan, *, source: str | None = None) -> RunSpec:
        hw, ln = plan.hardware, plan.launch
        topo = Topology(nnodes=ln.nnodes or hw.nodes, nproc_per_node=ln.nproc_per_node or max(hw.gpus_per_node, 1),
                        gpus_per_node=hw.gpus_per_node, cpus_per_node=hw.host.cpus,
                        rdzv_endpoint=ln.rdzv_endpoint, rdzv_id=ln.rdzv_id)
        prov = {**plan.provenance, "topology": "plan: launch (nodes x processes per node from the hardware)"}
        return cls(topology=topo, workers=plan.workers, provenance=prov, plan=plan, source=source)

    @classmethod
    def from_train(cls, train: TrainConfig, *, source: str | None = None, gpus_per_node: int | None = None,
                   cpus: int | None = None) -> RunSpec:
        """A bare TrainConfig: one node, ``train.world_size`` processes (1 when unset)."""
        nproc = train.world_size or max(gpus_per_node or 0, 1)
        topo = Topology(nnodes=1, nproc_per_node=nproc, gpus_per_node=gpus_per_node or 0, cpus_per_node=cpus)
        prov = {"topology": f"one node, {nproc} process(es): train.world_size" if train.world_size
                else "one node, one process per GPU (train.world_size unset)",
                "cpus_per_node": "this machine (os.cpu_count)" if cpus else "unknown",
                "num_workers": "train.data.num_workers as written (no planner decision)"}
        return cls(config=train, topology=topo, provenance=prov, source=source)

    @property
    def file_name(self) -> str:
        """What the run folder calls this run's config."""
        return "plan.yaml" if self.kind == "plan" else "train.yaml"

    def with_train(self, train: TrainConfig) -> RunSpec:
        if self.plan is not None:
            return self.model_copy(update={"plan": self.plan.model_copy(update={"train": train})})
        return self.model_copy(update={"config": train})

    def with_workers(self, num_workers: int) -> RunSpec:
        """At most ``num_workers`` DataLoader workers per rank (after a worker OOM). A plan's worker decision
        and reasons follow (``replan_workers``); the TrainConfig is normalised either way."""
        if self.plan is None:
            return self.with_train(self.train.with_workers(num_workers))
        return RunSpec.from_plan(replan_workers(self.plan, num_workers), source=self.source)

    def to_yaml(self) -> str:
        return plan_to_yaml(self.plan) if self.plan is not None else dump_yaml(self.train)


def replan_workers(plan: Plan, max_workers: int) -> Plan:
    """The same plan with at most ``max_workers`` DataLoader workers per rank (after a worker OOM)."""
    if max_workers < 0:
        raise ValueError(f"max_workers must be >= 0, got {max_workers}")
    w = plan.workers
    if w.per_rank <= max_workers:  # the decision holds; a hand-edited train.data.num_workers is still capped
        n = min(plan.train.data.num_workers, max_workers)
        return plan if n == plan.train.data.num_workers else plan.model_copy(
            update={"train": plan.train.with_workers(n)})
    reasons = [f"re-planned: {w.per_rank} -> {max_workers} workers per rank", *w.reasons]
    workers_ = w.model_copy(update={"per_rank": max_workers, "total": max_workers * plan.hardware.gpus_per_node,
                                    "bound_by": "user", "caps": {**w.caps, "user": max_workers}, "reasons": reasons})
    n = min(plan.train.data.num_workers, max_workers)
    return plan.model_copy(update={"workers": workers_, "train": plan.train.with_workers(n)})


def save_run_spec(run: RunSpec, path: str | Path) -> Path:
    """Write the run's config (the plan, or the bare TrainConfig) atomically; ``load_run_spec`` reads it back."""
    return atomic_write_text(path, run.to_yaml())


def load_run_spec(path: str | Path) -> RunSpec:
    """The one loader: a plan (``jitplan plan --out``) or a bare TrainConfig YAML -> RunSpec.

    A one-line UsageError when the file is missing, unreadable, of an unknown kind or invalid.
    """
    p = Path(path)
    try:
        raw = read_yaml_mapping(p, "plan")
        kind = file_kind(raw)
    except ValueError as e:
        raise UsageError(f"{p}: {e}" if str(p) not in str(e) else str(e)) from None
    if kind == "plan":
        return RunSpec.from_plan(load_plan(p), source=str(p))
    if "gpus_per_node" in raw and "data" not in raw:  # HOOK (newcomer): a probe file where a plan belongs
        raise UsageError(f"{p} describes hardware (jitplan probe --out), not a run", hint=f"plan for it first: "
                         f"jitplan plan --hardware {p} --out plan.yaml, then: jitplan launch plan.yaml --local")
    try:
        train = TrainConfig.model_validate(raw)
    except ValidationError as e:
        raise UsageError(f"{p}: neither a plan nor a TrainConfig: {validation_summary(e)}") from None
    if not isinstance(raw.get("model"), dict):  # no silent JiT-B/16 (issue 13)
        raise UsageError(f"{p}: model.variant is required (e.g. model: {{variant: JiT-B/16}})")
    return RunSpec.from_train(train, source=str(p), cpus=os.cpu_count())
