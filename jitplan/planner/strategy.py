"""Memory strategies the planner chooses: for each candidate, predicted memory and time; the fastest that fits.

Pure functions, no torch. Candidates are mixes of activation checkpointing (``ckpt``), FSDP2 sharding of
parameters, gradients, AdamW state and EMAs (``shard``) and the EMAs on the host (``ema-cpu``); the trainer
runs each (``jitmodel.strategy``, ``TrainConfig.memory``). Memory is ``jitplan.planner.memory``'s prediction
with the terms each strategy moves:

- ckpt: a checkpointed block keeps only its fp32 input (4 B x hidden per token) instead of its activations;
  one block's activations live again while it is recomputed. Time: about one extra forward of the
  checkpointed blocks (a third of their training FLOPs).
- shard: weights, gradients, AdamW moments and EMAs / world; no DDP buckets; one block's fp32 parameters and
  gradients gathered at a time (plus the one being prefetched) and the root's (embeddings, final layer).
  Time: two all-gathers of the fp32 parameters and one reduce-scatter of the gradients per micro-step,
  against one all-reduce per optimizer step (the same ring cost as all-gather + reduce-scatter).
- ema-cpu: the EMAs leave the GPU. Time: the parameters cross the host link every EMA update (overlapped
  with the next step, so only what exceeds the step counts) and the host does the EMA arithmetic; when that
  is slower than a step, the EMAs update every k steps with decay**k (same horizon in images).

    >>> from jitplan.planner import memory
    >>> inp = memory.MemoryInputs.for_model("JiT-L/16", 256, world_size=2, accum=2)
    >>> full, sharded = predict(inp, parse("none"), 8), predict(inp, parse("shard"), 8)
    >>> round(full.total / 1e9, 1), round(sharded.total / 1e9, 1)
    (21.2, 13.6)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

from jitmodel.config import MemoryConfig
from jitmodel.counts import param_breakdown, seq_lens
from jitplan.errors import UsageError
from jitplan.planner import memory

NAMES = ("none", "ckpt", "ema-cpu", "ckpt+ema-cpu", "shard", "shard+ckpt", "shard+ema-cpu", "shard+ckpt+ema-cpu")
HOST_LINK_GBS = 12.0  # GPU <-> pinned host copies, PCIe 3.0/4.0 x16 in practice [judgement, unverified]
HOST_EMA_GBS = 10.0  # host memory traffic of the CPU's foreach EMA update (12 B/param per EMA) [judgement]
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


def activations(inp: memory.MemoryInputs, m: MemoryConfig, micro_batch: int) -> tuple[int, str]:
    """Activation bytes at the peak and why, with blocks 0, k, 2k, ... checkpointed."""
    kept, why = _kept_per_sample(inp, m.checkpoint_every)
    return int(round(kept * micro_batch)), why


@functools.lru_cache(maxsize=512)
def _static(inp: memory.MemoryInputs, shard: bool, ema_cpu: bool) -> tuple[tuple[memory.Item, ...], str, int,
                                                                            tuple[memory.Item, ...]]:
    """What does not depend on the batch: (fixed tensor items, plain activation why, step bytes, overheads)."""
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
        else:
            tensor.append(it)
    step = memory.step_phase_bytes(inp) // w
    if w > 1:
        block = pb.blocks // inp.variant.depth
        root = pb.total - pb.blocks
        tensor.append(memory.Item("fsdp gathered", GATHER_PREFETCH * 4 * block + 4 * root,
                                  f"{GATHER_PREFETCH} blocks' fp32 params unsharded at a time (one computing, one "
                                  f"prefetched) and the root's {root / 1e6:.1f}M params"))
        step += (GATHER_PREFETCH + 1) * 4 * block + 4 * root  # the backward's tail: + one block reduce-scattering
    act_why = next(i.why for i in base.items if i.name == "activations").replace("1 x ", "micro x ", 1)
    over = tuple(i for i in base.items if i.name in ("cuda context", "nccl"))
    return tuple(tensor), act_why, step, over


def predict(inp: memory.MemoryInputs, m: MemoryConfig, micro_batch: int) -> memory.MemoryPrediction:
    """Peak memory per GPU under strategy ``m`` (memory.predict with the terms the strategy moves)."""
    if name_of(m) == "none":
        return memory.predict(inp, micro_batch)
    if m.shard and inp.world_size < 2:
        raise ValueError("sharding needs at least 2 GPUs")
    fixed, act_why, step_tmp, over = _static(inp, m.shard, m.ema_device == "cpu")
    act, why = activations(inp, m, micro_batch)
    tensor = [*fixed, memory.Item("activations", act, why or act_why)]
    # The peak is the forward's end (autocast's weight cache, gathered blocks, activations) or the step (gradients,
    # AdamW temporaries; sharded: the backward's tail, every gradient shard and three blocks' buffers), after
    # autocast freed its cache and FSDP2 resharded (traced: L/16 ckpt; B/16 shard, shard+ckpt at 2 and 4 ranks)
    gone = sum(i.bytes for i in fixed if i.name in ("autocast weight cache", "fsdp gathered"))
    if step_tmp - gone > act:
        what = "gradient shards + 3 blocks' FSDP2 buffers in the backward" if m.shard else "gradients + AdamW temporaries"
        tensor.append(memory.Item("optimizer step", step_tmp - gone - act, f"{what} at step time, after autocast "
                                  "freed its weight cache"))
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
    def total(b: int) -> int:
        return predict(inp, m, b).total

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


# --------------------------------------------------------------------------- time

@dataclass(frozen=True)
class StepCost:
    extra_s: float  # added to a plain step
    ema_every: int  # EMA update interval that keeps the host EMA under the step time
    why: str


@dataclass(frozen=True)
class PlainStep:
    """The planner's own time of a plain (DDP) step: total, its compute part, its exposed all-reduce."""

    total_s: float
    compute_s: float  # tensor + fp32 attention + elementwise traffic, all micro-steps
    allreduce_s: float  # the exposed part of DDP's gradient all-reduce
    bus_gbs: float  # the link the gradients travel


def plain_step(st, bus_gbs: float) -> PlainStep:  # type: ignore[no-untyped-def]
    """From ``timing.StepTime`` terms (jitplan.planner.timing)."""
    comp = st.get("tensor") + st.get("fp32 attention") + st.get("elementwise traffic")
    return PlainStep(total_s=st.total_s, compute_s=comp, allreduce_s=st.get("all-reduce"), bus_gbs=bus_gbs)


def step_cost(inp: memory.MemoryInputs, m: MemoryConfig, plain: PlainStep, *, accum: int) -> StepCost:
    """Time one optimizer step gains or loses under ``m``, against the plain step ``plain``."""
    pb = param_breakdown(inp.variant, inp.img_size, inp.num_classes, inp.in_channels)
    extra, why = 0.0, []
    if m.checkpoint_every:
        n = len(range(0, inp.variant.depth, m.checkpoint_every))
        t = plain.compute_s / 3 * n / inp.variant.depth  # forward = a third of forward + backward
        extra += t
        why.append(f"recompute +{t:.2f} s")
    if m.shard:
        w = inp.world_size
        one_pass = (w - 1) / w * 4 * pb.trainable / (plain.bus_gbs * 1e9)  # all-gather or reduce-scatter, fp32
        t = 3 * one_pass * accum - plain.allreduce_s  # 2 all-gathers + 1 reduce-scatter per micro-step
        extra += t
        why.append(f"all-gather/reduce-scatter {t:+.2f} s")
    every = 1
    if m.ema_device == "cpu":
        copy = 4 * pb.total / (HOST_LINK_GBS * 1e9)
        host = inp.num_emas * 12 * pb.total / (HOST_EMA_GBS * 1e9)
        every = max(1, math.ceil((copy + host) / max(plain.total_s + extra, 1e-9)))
        t = copy / every  # the D2H copy shares the link; the host arithmetic overlaps the next step
        extra += t
        why.append(f"host EMA {copy + host:.2f} s/update, every {every} step(s), copy +{t:.2f} s")
    return StepCost(extra_s=extra, ema_every=every, why="; ".join(why) or "no extra work")


# --------------------------------------------------------------------------- the choice

@dataclass(frozen=True)
class Machine:
    """What the comparison needs besides memory: the plan's own step time (a callable, so the planner's time
    model is the one used) and the links."""

    world: int
    nodes: int
    nvlink: bool
    target_bytes: int
    step_time: Callable[[int, int], tuple[PlainStep, int]]  # (micro, accum) -> (plain step, steps per epoch)


@dataclass(frozen=True)
class Candidate:
    name: str
    memory: MemoryConfig
    fits: bool
    micro_batch: int
    accum: int
    peak_bytes: int  # at the chosen micro-batch (at batch 1 when nothing fits)
    step_s: float
    epoch_s: float
    why: str


def evaluate(name: str, inp_for: Callable[[int], memory.MemoryInputs],
             pick_batch: Callable[[int], tuple[int, int, str]], mach: Machine) -> Candidate:
    """One candidate: the plan's batch rule under its memory model, then its step and epoch time."""
    m = parse(name)
    inp = inp_for(1)
    bmax = max_micro_batch(inp, m, mach.target_bytes)
    if bmax >= 1:
        b, accum, _ = pick_batch(bmax)
        if accum > 1:
            inp = inp_for(2)
            bmax = max_micro_batch(inp, m, mach.target_bytes)
            if bmax >= 1:
                b, accum, _ = pick_batch(bmax)
    if bmax < 1:
        peak = predict(inp, m, 1).total
        return Candidate(name, m, False, 0, 0, peak, math.inf, math.inf,
                         f"batch 1 needs {peak / 1e9:.1f} GB > target {mach.target_bytes / 1e9:.1f} GB")
    inp = inp_for(accum)
    peak = predict(inp, m, b).total
    plain, spe = mach.step_time(b, accum)
    cost = step_cost(inp, m, plain, accum=accum)
    m = m.model_copy(update={"ema_every": cost.ema_every})
    step = plain.total_s + cost.extra_s
    return Candidate(name, m, True, b, accum, peak, step, spe * step,
                     f"micro {b} x accum {accum}; {cost.why}")


def choose(inp_for: Callable[[int], memory.MemoryInputs], pick_batch: Callable[[int], tuple[int, int, str]],
           mach: Machine, forced: str | None = None) -> tuple[Candidate, list[Candidate]]:
    """(the chosen candidate, every candidate evaluated). The fastest epoch that fits; ties go to the
    simpler mix (the order of NAMES). ``forced`` (``--strategy``) is taken as given, fitting or not."""
    names = [n for n in NAMES if mach.world > 1 or "shard" not in n]
    if forced is not None:
        want = name_of(parse(forced))
        if "shard" in want and mach.world < 2:
            raise UsageError(f"--strategy {forced}: sharding needs at least 2 GPUs (this plan has {mach.world})")
        names = [want, *[n for n in names if n != want]]
    cands = [evaluate(n, inp_for, pick_batch, mach) for n in names]
    if forced is not None:
        return cands[0], cands
    fitting = [c for c in cands if c.fits]
    if not fitting:
        return cands[0], cands  # "none": the plan's own infeasibility message explains
    best = min(fitting, key=lambda c: (round(c.epoch_s, 6), names.index(c.name)))
    return best, cands


def adjust_estimates(est, inp: memory.MemoryInputs, m: MemoryConfig, plain: PlainStep, *,  # type: ignore[no-untyped-def]
                     accum: int, epochs: float):
    """The plan's Estimates plus the strategy's extra step time (epoch, total time and throughput follow)."""
    if name_of(m) == "none":
        return est
    cost = step_cost(inp, m, plain, accum=accum)
    step = est.step_time_s + cost.extra_s
    epoch = est.steps_per_epoch * step
    return est.model_copy(update={
        "step_time_s": step, "mfu": round(est.mfu * est.step_time_s / step, 4),
        "images_per_s": est.images_per_s * est.step_time_s / step, "epoch_time_s": epoch,
        "total_time_s": est.total_time_s + epochs * (epoch - est.epoch_time_s)})


def rows(chosen: Candidate, cands: list[Candidate], forced: bool, precision: tuple[str, str, str] | None = None,
         ) -> list[tuple[str, str, str, str]]:
    """(quantity, reference, target, why) rows: precision when the card changed it, the choice, then what each
    other candidate would cost."""
    from jitplan.planner.rows import fmt_bytes, fmt_duration

    how = "--strategy" if forced else "fastest that fits"
    out = []
    if precision is not None and precision[0] != precision[1]:
        ref, got, gpu = precision
        why = (f"{gpu} has no bf16: fp16 autocast with a gradient scaler; time at its FP16 tensor rate"
               if got == "fp16" else f"{gpu} has neither bf16 nor fp16 tensor cores: fp32")
        out.append(("precision", ref, got, why))
    out.append(("memory strategy", "none", chosen.name, f"{how}; {chosen.why}"))
    for c in cands:
        if c is chosen:
            continue
        if not c.fits:
            out.append((f"  {c.name}", "", "does not fit", c.why))
            continue
        slower = c.epoch_s / chosen.epoch_s - 1 if chosen.fits else 0.0
        out.append((f"  {c.name}", "", f"{fmt_bytes(c.peak_bytes)}, epoch {fmt_duration(c.epoch_s)}",
                    f"{slower:+.0%} epoch time; {c.why}"))
    return out


def precision_for(gpu, wanted: str) -> str:  # type: ignore[no-untyped-def]
    """The plan's precision: the recipe's on cards with bf16; fp16 (with a gradient scaler) on cards without
    bf16 but with fp16 tensor cores (compute capability >= 7.0: V100, T4, RTX 20xx), fp32 below that; a
    recipe's bf16 means "bf16 where the card has it". (A hand-edited bf16 on such a card: ``jitplan doctor``.)"""
    if gpu.bf16 or wanted not in ("auto", "bf16"):
        return wanted
    cc = tuple(int(x) for x in (gpu.compute_capability or "0.0").split(".")[:2])
    return "fp16" if cc >= (7, 0) else "fp32"


def choose_for(train, world: int, hardware, options, target: int,  # type: ignore[no-untyped-def]
               inp_for: Callable[[int], memory.MemoryInputs], pick_batch: Callable[[int], tuple[int, int, str]],
               step_time: Callable[[int, int], tuple[PlainStep, int]]) -> tuple[Candidate, list[Candidate]]:
    """``choose`` with the plan's machine and its own step-time model (``plan.step_time``)."""
    mach = Machine(world=world, nodes=hardware.nodes, nvlink=hardware.gpu.nvlink, target_bytes=target,
                   step_time=step_time)
    return choose(inp_for, pick_batch, mach, forced=options.strategy)
