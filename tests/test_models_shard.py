"""The sharded plan of a traced model against a sharded trace (issue 21: strategies apply to traced models).

``traced_plan`` moves the traced numbers for FSDP2 as ``strategy_memory`` does for JiT (state / world, two
blocks gathered in bf16, only the root's autocast cache). Here the same model is sharded for real with the
trainer's ``jitmodel.strategy.shard_module`` (bf16 gathers) on rank 0 of a fake process group of 2 ranks and
traced under FSDP2's ``FSDPMemTracker`` (nothing allocated, no communication), with and without checkpointing;
the plan's tensor bytes must be within the 5% tests/test_strategy_plan.py allows JiT's strategy model.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from jitplan.planner import traced_model as tm  # noqa: E402
from jitplan.planner.traced_plan import memory_parts  # noqa: E402

SPEC = "jitmodel.archs.dit:DiT"
KW = dict(input_size=16, patch=2, in_channels=4, hidden=256, heads=4, num_classes=10, depth=6)
OUTSIDE = ("allocator headroom", "cuda context", "nccl", "ddp buckets")


class Holder(nn.Module):
    """shard_module shards ``denoiser.net.blocks`` then the denoiser: the protocol module as ``net``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.in_channels, self.input_size, self.num_classes = net.in_channels, net.input_size, net.num_classes

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.net(*args)


def sharded_peak(world: int, batch: int, ckpt: bool) -> int:
    import torch.distributed as dist
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker
    from torch.distributed.device_mesh import init_device_mesh
    from torch.testing._internal.distributed.fake_pg import FakeStore

    from jitmodel import custom
    from jitmodel.strategy import checkpoint_blocks, shard_module
    from jitplan.planner.traced_step import tracked_peaks

    dist.init_process_group("fake", rank=0, world_size=world, store=FakeStore())
    try:
        mesh = init_device_mesh("cpu", (world,))
        with FakeTensorMode(allow_non_fake_inputs=True):
            h = Holder(tm._fake_module(custom.parse_spec(SPEC), KW))
            if ckpt:
                checkpoint_blocks(h.net, 1)
            shard_module(h, mesh, torch.bfloat16)
            step = tm.ModelStep(h, batch)
            step()
            mt = FSDPMemTracker(h, step.opt)
            ema = sum(t.to_local().numel() * 4 if hasattr(t, "to_local") else t.numel() * 4
                      for t in step.ema_tensors())  # FSDPMemTracker.track_external is a no-op (strategy_trace.py)
            return tracked_peaks(step, mt, 1)[-1][0] + ema
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["shard", "shard+ckpt"])
def test_sharded_plan_matches_a_sharded_trace(name):
    prof = tm.trace_model(SPEC, KW, batches=(4, 8))
    predicted = sum(p.value for p in memory_parts(prof, name, 8, 2, 1, False) if p.name not in OUTSIDE)
    traced = sharded_peak(2, 8, ckpt="ckpt" in name)
    assert predicted == pytest.approx(traced, rel=0.05), (name, predicted, traced)
