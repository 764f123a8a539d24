"""Compute model: step, epoch and total time from FLOPs, the GPU's dense bf16 peak and an MFU prior.

Pure functions, no torch. FLOPs per image come from ``jitmodel.counts`` (token-wise weights plus
attention, not 6·N_total·T). MFU priors (model FLOPs / (time x dense bf16 peak)) are judgements from the
anchors in ``../shared/reference/estimation.md`` §4.2 (DiT-XL/2 on A100 ~12% eager TF32, fast-DiT ~25%
with AMP, small ViTs on H100 5-7% eager and 16-23% compiled): consumer cards have a lower machine balance,
so JiT's memory-bound elementwise work hurts them less; larger variants have larger GEMMs. A measured
step on the real GPU replaces all of this.

    >>> mfu_prior("consumer", compile=False, depth=12)
    0.25
    >>> round(allreduce_time_s(131e6 * 4, world_size=2, nodes=1, nvlink=False), 3)
    0.044
"""

from __future__ import annotations

import math

# MFU prior against the dense bf16 peak, by GPU class and compile mode (B-sized model).
MFU_PRIORS: dict[str, dict[bool, float]] = {
    "consumer": {False: 0.25, True: 0.38},
    "workstation": {False: 0.22, True: 0.35},
    "datacenter": {False: 0.15, True: 0.30},
    "custom": {False: 0.20, True: 0.33},
}
MFU_LARGE_BONUS = 0.05  # L and H (depth >= 24): larger GEMMs
MFU_EXACT_ATTENTION = 0.9  # the official fp32 materialised attention costs extra memory traffic

# All-reduce bus bandwidth (GB/s) for DDP's gradient all-reduce [judgement, unverified].
BUS_GBS_NVLINK = 150.0
BUS_GBS_PCIE = 12.0
BUS_GBS_INTERNODE = 12.5  # 100 Gb/s network between nodes


def mfu_prior(gpu_class: str, *, compile: bool, depth: int, attention: str = "sdpa") -> float:
    """The MFU assumed for a JiT training step (stated in the plan's provenance)."""
    base = MFU_PRIORS.get(gpu_class, MFU_PRIORS["custom"])[bool(compile)]
    if depth >= 24:
        base += MFU_LARGE_BONUS
    if attention == "exact":
        base *= MFU_EXACT_ATTENTION
    return round(base, 4)


def allreduce_time_s(grad_bytes: float, *, world_size: int, nodes: int, nvlink: bool) -> float:
    """Ring all-reduce of the gradients once per optimizer step: 2(n-1)/n x bytes / bus bandwidth."""
    if world_size <= 1:
        return 0.0
    bw = BUS_GBS_INTERNODE if nodes > 1 else (BUS_GBS_NVLINK if nvlink else BUS_GBS_PCIE)
    return 2 * (world_size - 1) / world_size * grad_bytes / (bw * 1e9)


def compute_time_s(images: float, flops_per_image: float, peak_tflops: float, mfu: float) -> float:
    """Seconds for ``images`` images on one GPU."""
    if peak_tflops <= 0 or mfu <= 0:
        raise ValueError(f"peak ({peak_tflops} TFLOPS) and MFU ({mfu}) must be positive")
    return images * flops_per_image / (peak_tflops * 1e12 * mfu)


def steps_per_epoch(num_images: int, world_size: int, micro_batch: int, accum: int) -> int:
    """Optimizer steps per epoch: the DistributedSampler pads to ceil(N/world), the loader drops the last batch.

        >>> steps_per_epoch(1281167, 8, 128, 1)
        1251
    """
    from jitmodel.config import steps_per_epoch as spe  # the one formula, shared with the trainer

    return spe(num_images, world_size, micro_batch, accum)


def num_evals(epochs: float, every: int, at_epoch0: bool, online: bool) -> int:
    """Online evaluations in a run: epochs where epoch % every == 0 (0 only if at_epoch0), plus the last.

        >>> num_evals(600, 40, True, True)
        16
    """
    if not online:
        return 0
    last = math.ceil(epochs) - 1
    epochs_at = {e for e in range(0, last + 1, every) if e > 0 or at_epoch0}
    epochs_at.add(last)
    return len(epochs_at)


def checkpoint_bytes(params_total: int, num_emas: int = 2) -> int:
    """model + EMAs + AdamW's two moments, fp32: (3 + num_emas) x 4 B/param (+ a little metadata)."""
    return (3 + num_emas) * 4 * params_total


def cost_usd(total_time_s: float, price_per_hour: float | None, nodes: int) -> float | None:
    if price_per_hour is None:
        return None
    return total_time_s / 3600 * price_per_hour * nodes
