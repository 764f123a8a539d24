"""Everything the checks look at, gathered once: the probe, the torch import, the run, data, checkpoint.

The run is the project's one ``RunSpec`` (``jitplan.runspec``: a plan or a bare TrainConfig), read as is:
the checks take processes per node from its topology, the batch, workers, model and precision from its
TrainConfig and the planner's estimates from its plan (None for a bare config). No copy, nothing derived.

    >>> from jitmodel.config import DataConfig, TrainConfig
    >>> from jitplan.runspec import RunSpec
    >>> run = RunSpec.from_train(TrainConfig(data=DataConfig(path="/data"), world_size=2))
    >>> ctx = DoctorContext(probe=None, plan=run)  # type: ignore[arg-type]  # no probe: the plan alone
    >>> (ctx.plan.topology.nproc_per_node, ctx.train.data.num_workers, ctx.estimates)
    (2, 12, None)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from jitmodel.scan import shown

if TYPE_CHECKING:
    from jitmodel.config import TrainConfig
    from jitplan.dataset.inspect import DatasetReport
    from jitplan.doctor.ckpt import CheckpointSummary
    from jitplan.doctor.measure import LoaderMeasurement
    from jitplan.hardware.probe import ProbeReport
    from jitplan.hardware.software import TorchImport
    from jitplan.runspec import RunSpec
    from jitplan.schemas import Estimates

# jitmodel.dist.init_process_group(timeout_s=1800); the official JiT code keeps torch's 600 s default.
DEFAULT_NCCL_TIMEOUT_S = 1800.0


def short_path(path: str | Path) -> str:
    """A path for a message: printable (non-UTF-8 bytes as ``\\xff``) and at most ~160 characters.

        >>> short_path("/d/" + "x" * 4000)[-20:]
        'x (4,003 characters)'
    """
    text = shown(str(path))
    return text if len(text) <= 160 else f"{text[:80]}...{text[-40:]} ({len(text):,} characters)"


def prefetch(train: TrainConfig) -> int:
    """Batches each worker keeps in flight (DataLoader's default 2; None when there are no workers)."""
    return train.data.prefetch_factor or 2


@dataclass
class DoctorContext:
    """Inputs of the checks. ``None`` means "not asked for" (the check then reports skip)."""

    probe: ProbeReport
    torch_import: TorchImport | None = None
    plan: RunSpec | None = None  # the run (--plan), read as is
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
    def train(self) -> TrainConfig:
        """The run's TrainConfig (only with a plan)."""
        assert self.plan is not None
        return self.plan.train

    @property
    def estimates(self) -> Estimates | None:
        """The planner's estimates; None for a bare TrainConfig or without --plan."""
        return self.plan.plan.estimates if self.plan is not None and self.plan.plan is not None else None

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
