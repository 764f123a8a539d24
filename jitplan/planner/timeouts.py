"""The process-group timeout and the online evaluation's chunks: a hung collective is caught in minutes.

Ranks evaluate in chunks with a barrier after each (``jitmodel.evaluate``, ``eval.chunk_images``), so no rank
waits at a collective for more than one chunk; the timeout covers the larger of a few training steps and one
chunk, within [10, 60] minutes. Pure.

    >>> c = eval_chunks(eval_time_s=3600.0, num_images=1000, world_size=2, batch=32)  # 7.2 s per image per rank
    >>> (c.images, c.chunks, timeout_for(0.5, c, 2))
    (32, 16, 600.0)
"""

from __future__ import annotations

from dataclasses import dataclass

DIST_TIMEOUT_DEFAULT_S = 1800.0  # jitmodel.dist.init_process_group's default
DIST_TIMEOUT_MIN_S = 600.0  # the official JiT code's timeout (10 min): the floor
DIST_TIMEOUT_MAX_S = 3600.0  # never more: a real hang must not bill for hours before the watchdog sees it
DIST_TIMEOUT_STEPS = 20  # a collective of training waits at most a few steps; 20 x the step catches a hang
DIST_TIMEOUT_MARGIN = 2.5  # x one evaluation chunk: ranks meet at a barrier after each chunk
EVAL_CHUNK_S = 300.0  # evaluate in chunks of at most ~5 min per rank, a barrier after each


@dataclass(frozen=True)
class EvalChunks:
    images: int  # images per rank per chunk (each rank generates this many, then all meet at a barrier)
    seconds: float  # one chunk, per rank
    chunks: int


def eval_chunks(eval_time_s: float, num_images: int, world_size: int, batch: int) -> EvalChunks:
    """How an online evaluation is cut so that no rank waits at a collective for more than one chunk."""
    per_rank = -(-num_images // max(world_size, 1))
    per_image = eval_time_s / max(per_rank, 1)
    n = max(batch, int(EVAL_CHUNK_S // per_image) // batch * batch) if per_image > 0 else per_rank
    n = min(n, per_rank)
    return EvalChunks(images=n, seconds=n * per_image, chunks=-(-per_rank // max(n, 1)))


def timeout_for(step_time_s: float, chunk: EvalChunks | None, world_size: int) -> float | None:
    """The process-group timeout, in whole minutes within [10, 60]: the larger of 20 x the step time and
    2.5 x one evaluation chunk. None on one rank (no collectives)."""
    if world_size < 2:
        return None
    need = max(DIST_TIMEOUT_STEPS * step_time_s, DIST_TIMEOUT_MARGIN * chunk.seconds if chunk else 0.0,
               DIST_TIMEOUT_MIN_S)
    return float(min(DIST_TIMEOUT_MAX_S, 60 * -(-need // 60)))
