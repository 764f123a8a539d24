"""jitmodel's training step, built once for the three places that measure it.

``TrainingStep`` is the trainer's step on one rank: the real Denoiser with the run's memory strategy
(activation checkpointing, FSDP2 sharding in the run's gather dtype, both via ``jitmodel.strategy``),
AdamW, both EMAs (unless they live on the host), and per call: a random batch, forward + loss under
autocast, backward, AdamW step, ``zero_grad(set_to_none=True)``, EMA update. Only the measuring differs:

- ``jitplan.planner.trace`` builds and runs it inside ``FakeTensorMode`` under ``MemTracker`` (the
  analytic memory model's check; nothing allocated);
- ``jitplan.planner.strategy_trace`` does the same under FSDP2's ``FSDPMemTracker`` for sharded steps;
- ``benchmarks/gpu_check.py`` runs it on a real GPU and reads ``torch.cuda``'s memory stats and the clock.

``tracked_peaks`` runs it under a tracker and returns each step's peak. Imports torch lazily.

    >>> from jitmodel.config import DataConfig, ModelConfig, TrainConfig
    >>> cfg = TrainConfig(model=ModelConfig(variant="JiT-Tiny/4", img_size=16, num_classes=10),
    ...                   data=DataConfig(kind="digits"))
    >>> step = TrainingStep(cfg, micro_batch=2)
    >>> step()
    >>> len(step.ema_tensors()) == 2 * len(list(step.den.parameters()))
    True
"""

from __future__ import annotations

from typing import Any

from jitmodel.config import MemoryConfig, TrainConfig


class TrainingStep:
    """One rank's training step of ``train``'s model at ``micro_batch``; call it to run one step.

    ``device``: where the model lives (a fake-mode tracer passes the CPU); ``memory``: the strategy (default:
    none); ``mesh``: the device mesh when ``memory.shard``; ``fused``: fused AdamW (else foreach; default from
    ``train.optim.fused``); ``compile``: ``torch.compile`` the network in place, as the trainer does.
    """

    def __init__(self, train: TrainConfig, micro_batch: int, *, device: Any = "cpu", memory: MemoryConfig | None = None,
                 mesh: Any = None, fused: bool | None = None, compile: bool = False, amp: Any = "bf16"):
        import torch

        from jitmodel.denoiser import EMA, Denoiser  # lazy: start-up (numpy, pynvml, torch)
        from jitmodel.strategy import (  # lazy: start-up (numpy, pynvml, torch)
            checkpoint_blocks,
            gather_dtype,
            shard_module,
        )

        if micro_batch < 1:
            raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
        m = memory or MemoryConfig()
        if m.shard and mesh is None:
            raise ValueError("a sharded step needs the device mesh of its ranks")
        self.train, self.micro_batch, self.device = train, micro_batch, torch.device(device)
        self.amp = torch.bfloat16 if amp == "bf16" else amp  # the tracers' CPU autocast; fp16 has the same sizes
        self.den = Denoiser(train.model, train.diffusion, device=self.device)
        self.den.train()
        checkpoint_blocks(self.den.net, m.checkpoint_every)
        if compile:
            self.den.net.compile()  # in place, as jitmodel.strategy.prepare does
        if m.shard:
            shard_module(self.den, mesh, gather_dtype(m, self.amp))
        self.fused = train.optim.fused is not False if fused is None else fused
        params = [p for p in self.den.parameters() if p.requires_grad]
        kw: dict[str, Any] = dict(lr=1e-4, betas=train.optim.betas, weight_decay=train.optim.weight_decay)
        self.opt = (torch.optim.AdamW(params, fused=True, **kw) if self.fused
                    else torch.optim.AdamW(params, foreach=True, **kw))
        self.ema = EMA(self.den, train.diffusion.ema_decays) if m.ema_device != "cpu" else None

    def ema_tensors(self) -> list[Any]:
        """Every EMA shadow tensor (none when the EMAs live on the host)."""
        return [t for shadow in self.ema.shadows for t in shadow] if self.ema is not None else []

    def __call__(self) -> None:
        import torch

        mc, b, dev = self.train.model, self.micro_batch, self.device
        x = torch.rand(b, mc.in_channels, mc.img_size, mc.img_size, device=dev) * 2 - 1
        y = torch.randint(0, mc.num_classes, (b,), device=dev)
        with torch.autocast(dev.type, dtype=self.amp):
            loss = self.den(x, y)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.den)


def tracker_peak(mt: Any) -> tuple[int, dict[str, int]]:
    """(total, by category) of a MemTracker's (or FSDPMemTracker's) peak snapshot."""
    snap = mt.get_tracker_snapshot("peak")
    total, cats = 0, dict[str, int]()
    for dev_stats in snap.values():
        for key, val in dev_stats.items():
            name = str(getattr(key, "value", key))
            if name.lower() == "total":
                total += int(val)
            else:
                cats[name] = cats.get(name, 0) + int(val)
    return total, cats


def tracked_peaks(step: TrainingStep, mt: Any, steps: int) -> list[tuple[int, dict[str, int]]]:
    """Run ``steps`` steps under the tracker ``mt``; each step's own peak (the second is the steady state)."""
    peaks = []
    with mt:
        for _ in range(steps):
            step()
            peaks.append(tracker_peak(mt))
            mt.reset_mod_stats()
            # No public API resets the global peak (torch 2.13); reset it so each step has its own.
            mt._peak_mem = {}
            mt._peak_mem_snap = {}
    return peaks
