"""Trace one training step under a memory strategy (FakeTensorMode on the CPU, nothing allocated).

The check of ``jitplan.planner.strategy``'s memory model, as ``trace.py`` is of ``memory.py``: the real
Denoiser with the trainer's own strategy code (``jitmodel.strategy.checkpoint_blocks``, FSDP2
``shard_module`` with the run's gather dtype): ``jitplan.planner.traced_step.TrainingStep``, twice; the second
step's peak. Plain and checkpointed steps are measured with ``MemTracker``; sharded steps with FSDP2's
``FSDPMemTracker`` on rank 0 of a fake process group of ``world`` ranks (no communication happens), whose
``track_external`` does nothing, so the EMA shards (alive the whole step) are added by their size. The
EMAs are left out when they live on the host. Imports torch lazily.
"""

from __future__ import annotations

from jitmodel.config import MemoryConfig, TrainConfig
from jitplan.planner.traced_step import TrainingStep, tracked_peaks


def _local_bytes(t: object) -> int:
    local = t.to_local() if hasattr(t, "to_local") else t  # a DTensor's shard on this rank
    return local.numel() * local.element_size()  # type: ignore[union-attr]  # a DTensor's local shard is a Tensor


def trace_strategy(train: TrainConfig, m: MemoryConfig, micro_batch: int, world: int = 1, steps: int = 2) -> int:
    """Steady-state peak tensor bytes of one rank for ``train``'s model under strategy ``m``."""
    import torch.distributed as dist
    from torch._subclasses.fake_tensor import FakeTensorMode


    own_pg = False
    if m.shard:
        from torch.testing._internal.distributed.fake_pg import FakeStore

        if not dist.is_initialized():
            dist.init_process_group("fake", rank=0, world_size=world, store=FakeStore())
            own_pg = True
    mesh = None
    if m.shard:
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh("cpu", (world,))  # outside fake mode: the mesh holds real rank tensors
    try:
        with FakeTensorMode(allow_non_fake_inputs=True):
            step = TrainingStep(train, micro_batch, memory=m, mesh=mesh, fused=True)  # fused, as the trainer
            ema_bytes = 0
            if m.shard:  # FSDPMemTracker.track_external is a no-op: count the EMA shards by their size
                from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker

                mt = FSDPMemTracker(step.den, step.opt)
                ema_bytes = sum(_local_bytes(t) for t in step.ema_tensors())
            else:
                from torch.distributed._tools.mem_tracker import MemTracker

                for p in step.den.parameters():  # MemTracker refuses frozen parameters (see trace.py)
                    p.requires_grad_(True)
                mt = MemTracker()  # type: ignore[assignment]  # the same tracking API as FSDPMemTracker
                mt.track_external(step.den, step.opt, *step.ema_tensors())
            return tracked_peaks(step, mt, steps)[-1][0] + ema_bytes
    finally:
        if own_pg:
            dist.destroy_process_group()
