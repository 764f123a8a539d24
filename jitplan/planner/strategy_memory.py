"""The memory model of the planner's strategies: peak bytes per GPU under each mix, and the largest batch.

Pure functions, no torch; ``jitplan.planner.strategy`` costs the time and chooses. Memory is
``jitplan.planner.memory``'s prediction with the terms each strategy moves:

- ckpt: a checkpointed block keeps only its fp32 input (4 B x hidden per token) instead of its activations;
  one block's activations live again while it is recomputed.
- shard: weights, gradients, AdamW moments and EMAs / world; no DDP buckets; one block's parameters and
  gradients gathered at a time (plus the one being prefetched) and the root's (embeddings, final layer), in
  the gather dtype (``MemoryConfig.shard_gather``: auto = the autocast dtype, 2 B; fp32, 4 B; the root
  stays fp32). With fp32 gathers autocast caches a bf16 copy of every gathered weight for the whole
  forward; with bf16 gathers the blocks' weights are already bf16 and only the root's are cached
  (B/16: 261 MB -> 5 MB); the backward's tail holds a block's gathered parameters and
  bf16 gradients and the fp32 copy of those gradients that is reduce-scattered.
- ema-cpu: the EMAs leave the GPU.

    >>> from jitplan.planner import memory
    >>> inp = memory.MemoryInputs.for_model("JiT-L/16", 256, world_size=2, accum=2)
    >>> full, sharded = predict(inp, parse("none"), 8), predict(inp, parse("shard"), 8)
    >>> fp32 = predict(inp, parse("shard").model_copy(update={"shard_gather": "fp32"}), 8)
    >>> round(full.total / 1e9, 1), round(sharded.total / 1e9, 1), round(fp32.total / 1e9, 1)
    (21.2, 12.6, 13.6)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

from jitmodel.config import MemoryConfig
from jitmodel.counts import param_breakdown, seq_lens
from jitplan.errors import UsageError
from jitplan.planner import memory

NAMES = ("none", "ckpt", "ema-cpu", "ckpt+ema-cpu", "shard", "shard+ckpt", "shard+ema-cpu", "shard+ckpt+ema-cpu")
GATHER_PREFETCH = 2  # FSDP2 holds the current block's unsharded parameters and the prefetched next one


def parse(name: str) -> MemoryConfig:
    """A strategy name (``none``, ``ckpt``, ``shard``, ``ema-cpu``, or a ``+`` mix) as a MemoryConfig."""
    parts = {p.strip() for p in name.lower().split("+") if p.strip()}
    unknown = parts - {"none", "ckpt", "shard", "ema-cpu"}
    if unknown or not parts or ("none" in parts and len(parts) > 1):
        raise UsageError(f"unknown --strategy {name!r}; use none, ckpt, shard, ema-cpu or a mix such as shard+ckpt")
    return MemoryConfig(checkpoint_every=1 if "ckpt" in parts else 0, shard="shard" in parts,
                        ema_device="cpu" if "ema-cpu" in parts else "same")


def name_of(m: MemoryConfig) -> str:
    parts = [p for p, on in (("shard", m.shard), ("ckpt", m.checkpoint_every > 0), ("ema-cpu", m.ema_device == "cpu"))
             if on]
    return "+".join(parts) or "none"


# --------------------------------------------------------------------------- memory

def _block_activations(inp: memory.MemoryInputs) -> tuple[float, float]:
    """(all blocks, the largest block) activation bytes per sample, from memory.activation_per_sample."""
    v = inp.variant
    outside = memory.activation_per_sample(dataclasses.replace(inp, variant=dataclasses.replace(v, depth=0)))
    all_blocks = memory.activation_per_sample(inp) - outside
    but_last = memory.activation_per_sample(dataclasses.replace(inp, variant=dataclasses.replace(v, depth=v.depth - 1)))
    return all_blocks, memory.activation_per_sample(inp) - but_last


@functools.lru_cache(maxsize=512)
def _kept_per_sample(inp: memory.MemoryInputs, every: int) -> tuple[float, str]:
    per = memory.activation_per_sample(inp)
    if not every:
        return per, ""
    v = inp.variant
    lens = seq_lens(v, inp.img_size)
    ck = list(range(0, v.depth, every))
    all_blocks, largest = _block_activations(inp)
    kept = per - all_blocks * len(ck) / v.depth + 4 * v.hidden * sum(lens[i] for i in ck) + largest
    return kept, (f"{len(ck)} of {v.depth} blocks checkpointed: their fp32 inputs + one block recomputed "
                  f"({kept / per:.0%} of the activations)")


@functools.lru_cache(maxsize=512)
def _tail_per_sample(inp: memory.MemoryInputs, every: int) -> float:
    """Activation bytes per sample when the first block is recomputed, last in the backward: the checkpointed
    blocks' fp32 inputs (MemTracker: they stay until the backward ends) and that block's activations."""
    v = inp.variant
    lens = seq_lens(v, inp.img_size)
    return 4 * v.hidden * sum(lens[i] for i in range(0, v.depth, every)) + _block_activations(inp)[1]


def activations(inp: memory.MemoryInputs, m: MemoryConfig, micro_batch: int) -> tuple[int, str]:
    """Activation bytes at the peak and why, with blocks 0, k, 2k, ... checkpointed."""
    kept, why = _kept_per_sample(inp, m.checkpoint_every)
    return int(round(kept * micro_batch)), why


def gather_bytes(m: MemoryConfig) -> int:
    """Bytes per parameter FSDP2 all-gathers: 2 (the autocast dtype, ``shard_gather: auto``) or 4 (fp32). The
    planner sets ``shard_gather: fp32`` for fp32 plans, where auto means fp32 too (no autocast)."""
    return 4 if m.shard_gather == "fp32" else 2


@functools.lru_cache(maxsize=512)
def _static(inp: memory.MemoryInputs, shard: bool, ema_cpu: bool, gather: int = 4,
            ) -> tuple[tuple[memory.Item, ...], str, int, tuple[memory.Item, ...]]:
    """What does not depend on the batch: (fixed tensor items, plain activation why, step bytes, overheads);
    ``gather``: bytes per parameter of the FSDP2 all-gathers."""
    base = memory.predict(inp, 1)
    w = inp.world_size if shard else 1
    pb = param_breakdown(inp.variant, inp.img_size, inp.num_classes, inp.in_channels)
    tensor: list[memory.Item] = []
    for it in base.items:
        if it.name in ("activations", "optimizer step", "allocator headroom", "cuda context", "nccl"):
            continue
        if it.name == "ema" and ema_cpu:
            tensor.append(memory.Item("ema", 0, f"{inp.num_emas} fp32 EMAs in pinned host memory (ema-cpu)"))
        elif it.name in ("weights", "adamw state", "ema", "gradients") and w > 1:
            tensor.append(memory.Item(it.name, it.bytes // w, f"{it.why}; sharded over {w} ranks (FSDP2)"))
        elif it.name == "ddp buckets" and w > 1:
            continue
        elif it.name == "autocast weight cache" and w > 1 and gather < 4:  # blocks' weights come gathered in bf16
            root_mm = max(0, pb.matmul - pb.blocks)
            tensor.append(memory.Item(it.name, memory.BYTES_AUTOCAST_CACHE * root_mm, f"bf16 copies of the root's "
                                      f"{root_mm / 1e6:.1f}M fp32 matmul params (FSDP2 gathers the blocks' in bf16)"))
        else:
            tensor.append(it)
    step = memory.step_phase_bytes(inp) // w
    if w > 1:
        block = pb.blocks // inp.variant.depth
        root = pb.total - pb.blocks
        dt = "fp32" if gather == 4 else "bf16/fp16"
        tensor.append(memory.Item("fsdp gathered", GATHER_PREFETCH * gather * block + 4 * root,
                                  f"{GATHER_PREFETCH} blocks' {dt} params unsharded at a time (one computing, one "
                                  f"prefetched) and the root's {root / 1e6:.1f}M fp32 params"))
        # The backward's tail (traced, B/16: fp32 and bf16 gathers, 2 ranks): a block's gathered params, the next
        # one's prefetched, its unsharded gradients (all in the gather dtype), their fp32 copy being reduce-
        # scattered; the gradient shards of the two blocks still to come are not written yet.
        step += (GATHER_PREFETCH + 1) * gather * block + 4 * block - 2 * 4 * block // w + 4 * root
    act_why = next(i.why for i in base.items if i.name == "activations").replace("1 x ", "micro x ", 1)
    over = tuple(i for i in base.items if i.name in ("cuda context", "nccl"))
    return tuple(tensor), act_why, step, over


def predict(inp: memory.MemoryInputs, m: MemoryConfig, micro_batch: int) -> memory.MemoryPrediction:
    """Peak memory per GPU under strategy ``m`` (memory.predict with the terms the strategy moves)."""
    if name_of(m) == "none":
        return memory.predict(inp, micro_batch)
    if m.shard and inp.world_size < 2:
        raise ValueError("sharding needs at least 2 GPUs")
    fixed, act_why, step_tmp, over = _static(inp, m.shard, m.ema_device == "cpu", gather_bytes(m))
    act, why = activations(inp, m, micro_batch)
    tensor = [*fixed, memory.Item("activations", act, why or act_why)]
    # The peak is the forward's end (autocast's weight cache, gathered blocks, activations) or the step (gradients,
    # AdamW temporaries; sharded: the backward's tail, the gradient shards and a few blocks' buffers), after
    # autocast freed its cache and FSDP2 resharded (traced: L/16 ckpt; B/16 shard, shard+ckpt at 2 and 4 ranks)
    # Checkpointed, unsharded: the backward's end holds every gradient with the checkpointed inputs and the first
    # block recomputed (traced, L/16 micro 32: 9.04 GB there vs 7.77 GB at the forward's end; H/16 the same)
    what = "gradient shards + FSDP2's block buffers in the backward" if m.shard else "gradients + AdamW temporaries"
    if m.checkpoint_every and not m.shard:
        step_tmp += int(round(_tail_per_sample(inp, m.checkpoint_every) * micro_batch))
        what = "gradients + the checkpointed inputs and the recomputed first block at the backward's end"
    gone = sum(i.bytes for i in fixed if i.name in ("autocast weight cache", "fsdp gathered"))
    if step_tmp - gone > act:
        tensor.append(memory.Item("optimizer step", step_tmp - gone - act, f"{what}, after autocast freed its "
                                  "weight cache"))
    headroom = memory.headroom_bytes(sum(i.bytes for i in tensor))
    items = [*tensor, memory.Item("allocator headroom", headroom, f"{memory.ALLOCATOR_HEADROOM:.0%} of the allocator's "
                                  "tensor bytes: rounding, fragmentation"), *over]
    peak = sum(i.bytes for i in tensor if i.name != "ddp buckets")
    return memory.MemoryPrediction(micro_batch=micro_batch, items=tuple(items), tensor_peak=peak,
                                   total=sum(i.bytes for i in items))


def max_micro_batch(inp: memory.MemoryInputs, m: MemoryConfig, target: int, limit: int = 1 << 16) -> int:
    """The largest micro-batch that fits ``target`` under strategy ``m`` (0 when batch 1 does not).

    Past the smallest batches the prediction is affine in the batch (activations and their headroom), so the
    answer is solved from two large batches and then confirmed with a few exact predictions: the planner
    compares eight candidates and stays fast.
    """
    return largest_fitting(lambda b: predict(inp, m, b).total, target, limit)


def largest_fitting(total: Callable[[int], int], target: int, limit: int = 1 << 16) -> int:
    """The largest b in [1, limit] with ``total(b) <= target`` (0 when b = 1 does not fit), for a ``total`` that is
    non-decreasing and affine past the smallest batches (the JiT model; traced models, traced_plan.py)."""
    if total(1) > target:
        return 0
    lo_b, hi_b = limit // 2, limit
    t_lo, t_hi = total(lo_b), total(hi_b)
    if t_hi <= target:
        return limit
    slope = (t_hi - t_lo) / (hi_b - lo_b)
    b = max(1, min(limit, int((target - (t_lo - slope * lo_b)) // slope))) if slope > 0 else 1
    while b > 1 and total(b) > target:
        b -= 1
    while b < limit and total(b + 1) <= target:
        b += 1
    return b
