"""Batch and hyper-parameter scaling when the hardware changes. Pure functions.

Policy ``keep-batch`` (default): keep the reference effective batch through gradient accumulation; exact
for JiT (no BatchNorm, per-sample mean loss), so LR, betas, EMA decays and warmup stay unchanged.
Policy ``scale-lr``: shrink the effective batch by kappa = B'/B and scale the LR (linear: kappa; sqrt:
sqrt(kappa) with Adam's betas 1 - kappa(1 - beta) and eps / sqrt(kappa), Malladi et al. 2022) and the EMA
decays rho^kappa (Busbridge et al. 2023); warmup stays in epochs.

    >>> choose_accumulation(1024, world_size=2, max_micro=21)
    (16, 32)
    >>> scale_hparams(2e-4, (0.9, 0.95), 1e-8, (0.9999, 0.9996), kappa=1/16, rule="sqrt").betas
    (0.99375, 0.996875)
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def choose_accumulation(target: int, world_size: int, max_micro: int) -> tuple[int, int]:
    """(micro_batch, accum) with micro <= max_micro and micro x accum x world >= target, as close as possible.

    Prefers an exact split (micro x accum x world == target) when one exists with micro >= about half the
    largest micro-batch that fits; otherwise the fewest accumulation steps, overshooting by less than
    world x accum samples. ValueError when nothing fits or the inputs are not positive.
    """
    if target < 1 or world_size < 1:
        raise ValueError(f"target effective batch ({target}) and world size ({world_size}) must be >= 1")
    if max_micro < 1:
        raise ValueError(f"no micro-batch fits (largest that fits: {max_micro})")
    per_rank = math.ceil(target / world_size)
    max_micro = min(max_micro, per_rank)
    a_min = math.ceil(target / (world_size * max_micro))
    for accum in range(a_min, 2 * a_min + 1):
        if target % (world_size * accum) == 0:
            return target // (world_size * accum), accum
    return math.ceil(target / (world_size * a_min)), a_min


@dataclass(frozen=True)
class HParams:
    lr: float
    betas: tuple[float, float]
    eps: float
    ema_decays: tuple[float, ...]


def scale_hparams(lr: float, betas: tuple[float, float], eps: float, ema_decays: tuple[float, ...],
                  kappa: float, rule: str) -> HParams:
    """LR, Adam betas/eps and EMA decays for an effective batch kappa x the reference one."""
    if kappa <= 0:
        raise ValueError(f"batch ratio kappa must be positive, got {kappa}")
    if rule == "linear":
        new_lr, new_betas, new_eps = lr * kappa, betas, eps
    elif rule == "sqrt":
        new_lr = lr * math.sqrt(kappa)
        new_betas = (_round(1 - min(1.0, kappa * (1 - betas[0]))), _round(1 - min(1.0, kappa * (1 - betas[1]))))
        new_eps = eps / math.sqrt(kappa)
    else:
        raise ValueError(f"unknown LR scaling rule {rule!r} (linear | sqrt)")
    new_ema = tuple(_round(rho**kappa) for rho in ema_decays)
    return HParams(lr=new_lr, betas=new_betas, eps=new_eps, ema_decays=new_ema)


def _round(x: float) -> float:
    return float(f"{x:.10g}")


def warmup_steps(warmup_epochs: float, steps_per_epoch: int) -> int:
    return int(round(warmup_epochs * steps_per_epoch))
