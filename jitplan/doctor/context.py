"""Everything the checks look at, gathered once: the probe, the torch import, the plan, data, checkpoint.

``PlanFacts`` is the slice of a plan (``jitplan.schemas.Plan``) or of a bare TrainConfig YAML that the
checks need, so a check never depends on the whole plan schema.

    >>> from jitmodel.config import DataConfig, TrainConfig
    >>> f = PlanFacts.from_train(TrainConfig(data=DataConfig(path="/data"), world_size=2), source="x")
    >>> (f.nproc_per_node, f.num_workers, f.variant)
    (2, 12, 'JiT-B/16')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from jitmodel.config import TrainConfig
    from jitplan.dataset.inspect import DatasetReport
    from jitplan.doctor.ckpt import CheckpointSummary
    from jitplan.doctor.measure import LoaderMeasurement
    from jitplan.hardware.probe import ProbeReport
    from jitplan.hardware.software import TorchImport
    from jitplan.runspec import RunSpec

# jitmodel.dist.init_process_group(timeout_s=1800); the official JiT code keeps torch's 600 s default.
DEFAULT_NCCL_TIMEOUT_S = 1800.0


class PlanFacts(BaseModel):
    """The numbers of a plan the checks compare with this machine. Estimates are None for a bare config."""

    model_config = ConfigDict(extra="forbid")
    source: str
    nodes: int = 1
    nproc_per_node: int
    batch_per_gpu: int
    num_workers: int
    planned_workers: int | None = None  # what the planner chose (num_workers may have been edited since)
    prefetch_factor: int
    img_size: int
    in_channels: int
    variant: str
    num_classes: int
    num_images: int | None = None
    data_path: str | None = None
    eval_online: bool = False
    gpu_name: str | None = None
    memory_per_gpu_bytes: int | None = None
    host_ram_needed_bytes: int | None = None  # per node
    host_ram_per_worker_bytes: int | None = None
    shm_needed_bytes: int | None = None  # per node
    eval_time_s: float | None = None
    dist_timeout_s: float | None = None  # the run's process-group timeout (TrainConfig.dist_timeout_s)
    params: int | None = None  # trainable parameters
    precision: str = "auto"  # TrainConfig.precision (C14)

    @classmethod
    def from_train(cls, t: TrainConfig, *, source: str, nodes: int = 1, **extra: Any) -> PlanFacts:
        world = t.world_size or 1
        return cls(
            source=source, nodes=nodes, nproc_per_node=max(1, world // max(nodes, 1)),
            batch_per_gpu=t.batch_per_gpu, num_workers=t.data.num_workers,
            prefetch_factor=t.data.prefetch_factor or 2, img_size=t.model.img_size,
            in_channels=t.model.in_channels, variant=t.model.variant, num_classes=t.model.num_classes,
            num_images=t.data.num_images, data_path=t.data.path, eval_online=t.eval.online,
            dist_timeout_s=t.dist_timeout_s, precision=t.precision, **extra,
        )

    @classmethod
    def from_run(cls, run: RunSpec) -> PlanFacts:
        """The facts of a run spec; a plan adds its estimates and its worker decision."""
        source = run.source or run.kind
        if run.plan is None:
            return cls.from_train(run.train, source=source)
        plan, e = run.plan, run.plan.estimates
        return cls.from_train(
            run.train, source=source, nodes=run.topology.nnodes,
            planned_workers=run.workers.per_rank if run.workers is not None else None,
            gpu_name=plan.hardware.gpu.name if plan.hardware.gpu else None,
            memory_per_gpu_bytes=e.memory_per_gpu_bytes, host_ram_needed_bytes=e.host_ram_needed_bytes,
            host_ram_per_worker_bytes=e.host_ram_per_worker_bytes, shm_needed_bytes=e.shm_needed_bytes,
            eval_time_s=e.eval_time_s, params=e.params,
        )


def load_plan_facts(path: str | Path) -> PlanFacts:
    """A plan file (``jitplan plan --out``) or a TrainConfig YAML -> PlanFacts. UsageError on bad input."""
    from jitplan.runspec import load_run_spec

    return PlanFacts.from_run(load_run_spec(path))


@dataclass
class DoctorContext:
    """Inputs of the checks. ``None`` means "not asked for" (the check then reports skip)."""

    probe: ProbeReport
    torch_import: TorchImport | None = None
    plan: PlanFacts | None = None
    data_path: str | None = None
    data: DatasetReport | None = None
    data_error: str | None = None  # the dataset could not be read at all (e.g. its root is unreadable)
    bad_images: list[str] = field(default_factory=list)  # --deep: sample images that failed to decode
    loader: LoaderMeasurement | None = None  # --deep with a plan: the measured DataLoader
    checkpoint_path: str | None = None
    checkpoint: CheckpointSummary | None = None
    checkpoint_error: str | None = None
    nccl_timeout_s: float | None = None  # None: the plan's dist_timeout_s, else DEFAULT_NCCL_TIMEOUT_S
    deep: bool = False
    env: dict[str, str] = field(default_factory=dict)

    @property
    def gpus(self) -> list:
        return self.probe.nvml.gpus

    @property
    def torch_cuda(self) -> str | None:
        imp = self.torch_import
        if imp is not None and imp.ok:
            return imp.cuda
        return self.probe.torch.cuda

    @property
    def torch_version(self) -> str | None:
        imp = self.torch_import
        return imp.version if imp is not None and imp.ok else self.probe.torch.version
