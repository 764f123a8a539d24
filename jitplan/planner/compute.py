"""Counting: optimizer steps per epoch, evaluations per run, checkpoint size, cost. Pure functions.

The step time itself is jitplan.planner.timing (term by term, each with its source).
"""

from __future__ import annotations

import math

from jitmodel.config import steps_per_epoch as spe  # the one formula, shared with the trainer


def steps_per_epoch(num_images: int, world_size: int, micro_batch: int, accum: int) -> int:
    """Optimizer steps per epoch: the DistributedSampler pads to ceil(N/world), the loader drops the last batch.

        >>> steps_per_epoch(1281167, 8, 128, 1)
        1251
    """

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
