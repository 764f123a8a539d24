"""Trace one training step under a memory strategy (FakeTensorMode on the CPU, nothing allocated).

The check of ``jitplan.planner.strategy``'s memory model, as ``trace.py`` is of ``memory.py``: the real
Denoiser with the trainer's own strategy code (``jitmodel.strategy.checkpoint_blocks``, FSDP2
``shard_module`` with the run's gather dtype), forward under bf16 autocast, backward, AdamW, EMA updates, twice; the second step's
peak. Plain and checkpointed steps are measured with ``MemTracker``; sharded steps with FSDP2's
``FSDPMemTracker`` on rank 0 of a fake process group of ``world`` ranks (no communication happens), whose
``track_external`` does nothing, so the EMA shards (alive the whole step) are added by their size. The
EMAs are left out when they live on the host. Imports torch lazily.
"""

from __future__ import annotations

from jitmodel.config import MemoryConfig, TrainConfig


def _peak_total(mt: object) -> int:
    snap = mt.get_tracker_snapshot("peak")  # type: ignore[attr-defined]
    total = 0
    for dev_stats in snap.values():
        for key, val in dev_stats.items():
            if str(getattr(key, "value", key)).lower() == "total":
                total += int(val)
    return total


def _local_bytes(t: object) -> int:
    local = t.to_local() if hasattr(t, "to_local") else t  # a DTensor's shard on this rank
    return local.numel() * local.element_size()  # type: ignore[attr-defined]


def trace_strategy(train: TrainConfig, m: MemoryConfig, micro_batch: int, world: int = 1, steps: int = 2) -> int:
    """Steady-state peak tensor bytes of one rank for ``train``'s model under strategy ``m``."""
    import torch
    import torch.distributed as dist
    from torch._subclasses.fake_tensor import FakeTensorMode

    from jitmodel.denoiser import EMA, Denoiser
    from jitmodel.strategy import checkpoint_blocks, gather_dtype, shard_module

    mc = train.model
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
            den = Denoiser(mc, train.diffusion)
            den.train()
            checkpoint_blocks(den.net, m.checkpoint_every)
            if m.shard:  # the trainer's FSDP2 units and gather dtype (bf16 under autocast unless shard_gather: fp32)
                shard_module(den, mesh, gather_dtype(m, torch.bfloat16))
            params = [p for p in den.parameters() if p.requires_grad]
            kw = dict(lr=1e-4, betas=train.optim.betas, weight_decay=train.optim.weight_decay)
            opt = torch.optim.AdamW(params, fused=True, **kw)
            ema = EMA(den, train.diffusion.ema_decays) if m.ema_device != "cpu" else None
            if m.shard:
                from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker

                mt = FSDPMemTracker(den, opt)
            else:
                from torch.distributed._tools.mem_tracker import MemTracker

                for p in den.parameters():  # MemTracker refuses frozen parameters (see trace.py)
                    p.requires_grad_(True)
                mt = MemTracker()
                mt.track_external(den, opt)
            ema_bytes = 0
            if ema is not None and m.shard:  # FSDPMemTracker.track_external is a no-op: count the EMA shards
                ema_bytes = sum(_local_bytes(t) for shadow in ema.shadows for t in shadow)
            elif ema is not None:
                mt.track_external(*[t for shadow in ema.shadows for t in shadow])
            peak = 0
            with mt:
                for _ in range(steps):
                    x = torch.rand(micro_batch, mc.in_channels, mc.img_size, mc.img_size) * 2 - 1
                    y = torch.randint(0, mc.num_classes, (micro_batch,))
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        loss = den(x, y)
                    loss.backward()
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    if ema is not None:
                        ema.update(den)
                    peak = _peak_total(mt) + ema_bytes
                    mt.reset_mod_stats()
                    mt._peak_mem = {}  # type: ignore[attr-defined]  # no public reset (torch 2.13; trace.py)
                    mt._peak_mem_snap = {}  # type: ignore[attr-defined]
            return peak
    finally:
        if own_pg:
            dist.destroy_process_group()
