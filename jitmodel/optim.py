"""The optimizer and its LR schedule, as the official recipe sets them (LTH14/JiT main_jit.py, util/misc.py,
util/lr_sched.py): AdamW (0.9, 0.95) over the trainable parameters, no weight decay on 1-D tensors and
biases, linear warm-up in fractional epochs from exactly 0, then constant (or half-cosine to min_lr).

    >>> from jitmodel.config import OptimConfig
    >>> o = OptimConfig(warmup_epochs=5)
    >>> lr_at(0.0, 2e-4, o, 600), lr_at(2.5, 2e-4, o, 600), lr_at(7.0, 2e-4, o, 600)
    (0.0, 0.0001, 0.0002)
"""

from __future__ import annotations

import math
from typing import Any

import torch

from jitmodel.config import OptimConfig


def lr_at(epoch: float, peak: float, o: OptimConfig, total_epochs: float) -> float:
    """LR at a fractional epoch: linear warm-up from 0 (as official), then constant or half-cosine."""
    if epoch < o.warmup_epochs:
        return peak * epoch / o.warmup_epochs
    if o.lr_schedule == "constant":
        return peak
    span = max(total_epochs - o.warmup_epochs, 1e-12)
    return o.min_lr + (peak - o.min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(epoch - o.warmup_epochs, span) / span))


def param_groups(module: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Official ``add_weight_decay``: 1-D tensors and biases get no decay; frozen parameters are left out."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def build_optimizer(groups: list[dict[str, Any]], o: OptimConfig, lr: float,
                    device: torch.device) -> torch.optim.Optimizer:
    """AdamW: fused where the device has it (``o.fused`` None = try), else foreach on accelerators.

    Raises ValueError when ``o.fused`` is True and fused AdamW is unavailable.
    """
    kw: dict[str, Any] = dict(lr=lr, betas=tuple(o.betas), eps=o.eps)
    fused = o.fused if o.fused is not None else device.type in ("cuda", "cpu")
    if fused:
        try:
            return torch.optim.AdamW(groups, fused=True, **kw)
        except (RuntimeError, TypeError) as e:
            if o.fused:
                msg = " ".join(str(e).split())
                raise ValueError(f"optim.fused is true but fused AdamW is unavailable here: {msg}") from None
    return torch.optim.AdamW(groups, foreach=True if device.type in ("cuda", "mps") else None, **kw)
