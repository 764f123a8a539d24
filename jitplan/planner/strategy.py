"""Memory strategies the planner chooses: for each candidate, predicted memory and time; the fastest that fits.

Pure functions, no torch. Candidates are mixes of activation checkpointing (``ckpt``), FSDP2 sharding of
parameters, gradients, AdamW state and EMAs (``shard``) and the EMAs on the host (``ema-cpu``); the trainer
runs each (``jitmodel.strategy``, ``TrainConfig.memory``). Memory: ``jitplan.planner.strategy_memory``
(re-exported here). Time, against the plan's own plain (DDP) step:

- ckpt: about one extra forward of the checkpointed blocks (a third of their training FLOPs).
- shard: two all-gathers of the blocks' parameters in the gather dtype (bf16/fp16 under autocast with
  ``shard_gather: auto``, else fp32; the root's in fp32) and one reduce-scatter of the fp32 gradients per micro-step,
  against
  one fp32 all-reduce per optimizer step (whose ring cost is an fp32 all-gather + reduce-scatter).
- ema-cpu: the parameters cross the host link every EMA update (overlapped with the next step, so only
  what exceeds the step counts) and the host does the EMA arithmetic; when that is slower than a step, the
  EMAs update every k steps with decay**k (same horizon in images).

L/16 on two GPUs over a 10 GB/s link, 4 micro-steps per optimizer step, against DDP's 0.5 s all-reduce:

    >>> from jitplan.planner import memory
    >>> inp = memory.MemoryInputs.for_model("JiT-L/16", 256, world_size=2, accum=4)
    >>> plain = PlainStep(total_s=10.0, compute_s=9.0, allreduce_s=0.5, bus_gbs=10.0)
    >>> [round(step_cost(inp, parse("shard").model_copy(update={"shard_gather": g}), plain, accum=4).extra_s, 2)
    ...  for g in ("auto", "fp32")]
    [0.24, 0.6]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from jitmodel.config import MemoryConfig, TrainConfig
from jitmodel.counts import param_breakdown
from jitmodel.precision import fp16_tensor_cores, parse_cc
from jitplan.errors import UsageError
from jitplan.hardware.schema import GPUSpec, HardwareSpec
from jitplan.planner import memory, timing
from jitplan.planner.rows import fmt_bytes, fmt_duration
from jitplan.planner.strategy_memory import (  # noqa: F401  (the memory model, re-exported)
    NAMES,
    activations,
    gather_bytes,
    max_micro_batch,
    name_of,
    parse,
    predict,
)
from jitplan.schemas import Estimates, PlanOptions

HOST_LINK_GBS = 12.0  # GPU <-> pinned host copies, PCIe 3.0/4.0 x16 in practice [judgement, unverified]
HOST_EMA_GBS = 10.0  # host memory traffic of the CPU's foreach EMA update (12 B/param per EMA) [judgement]

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


def plain_step(st: timing.StepTime, bus_gbs: float) -> PlainStep:
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
        w, g = inp.world_size, gather_bytes(m)
        ring = (w - 1) / w / (plain.bus_gbs * 1e9)  # seconds per byte per rank around the ring
        gather = g * pb.blocks + 4 * (pb.trainable - pb.blocks)  # the root (embeddings, final layer) stays fp32
        t = (2 * gather + 4 * pb.trainable) * ring * accum - plain.allreduce_s  # 2 all-gathers + 1 fp32 reduce-scatter
        extra += t
        why.append(f"{'fp32' if g == 4 else 'bf16/fp16'} all-gathers + fp32 reduce-scatter {t:+.2f} s")
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
    shard_gather: str = "auto"  # MemoryConfig.shard_gather of every candidate ("fp32" for fp32 plans)


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
    m = parse(name).model_copy(update={"shard_gather": mach.shard_gather})
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


def adjust_estimates(est: Estimates, inp: memory.MemoryInputs, m: MemoryConfig, plain: PlainStep, *,
                     accum: int, epochs: float) -> Estimates:
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
        slower = c.epoch_s / chosen.epoch_s - 1 if chosen.fits and chosen.epoch_s > 0 else 0.0
        subsets = sorted((o for o in cands if o.fits and o is not c and o.peak_bytes < c.peak_bytes
                          and set(o.name.split("+")) < set(c.name.split("+"))),
                         key=lambda o: (-len(o.name.split("+")), o.peak_bytes))
        more = (f"; more memory than {subsets[0].name} ({fmt_bytes(subsets[0].peak_bytes)}): what it saves buys "
                f"micro-batch {c.micro_batch} instead of {subsets[0].micro_batch}" if subsets else "")
        out.append((f"  {c.name}", "", f"{fmt_bytes(c.peak_bytes)} at micro {c.micro_batch}, epoch "
                    f"{fmt_duration(c.epoch_s)}", f"{slower:+.0%} epoch time{more}; {c.why}"))
    return out


def precision_for(gpu: GPUSpec, wanted: str) -> str:
    """The plan's precision: the recipe's on cards with bf16; fp16 (with a gradient scaler) on cards without
    bf16 but with fp16 tensor cores (compute capability >= 7.0: V100, T4, RTX 20xx), fp32 below that; a
    recipe's bf16 means "bf16 where the card has it". (A hand-edited bf16 on such a card: ``jitplan doctor``.)"""
    if gpu.bf16 or wanted not in ("auto", "bf16"):
        return wanted
    cc = parse_cc(gpu.compute_capability) or (0, 0)
    return "fp16" if fp16_tensor_cores(cc) else "fp32"


def choose_for(train: TrainConfig, world: int, hardware: HardwareSpec, options: PlanOptions, target: int,
               inp_for: Callable[[int], memory.MemoryInputs], pick_batch: Callable[[int], tuple[int, int, str]],
               step_time: Callable[[int, int], tuple[PlainStep, int]]) -> tuple[Candidate, list[Candidate]]:
    """``choose`` with the plan's machine and its own step-time model (``plan.step_time``)."""
    # fp32 plans have no autocast dtype to gather in: say fp32, as the trainer would do under auto
    gather = "fp32" if train.precision == "fp32" or train.memory.shard_gather == "fp32" else "auto"
    nvlink = bool(hardware.gpu and hardware.gpu.nvlink)
    mach = Machine(world=world, nodes=hardware.nodes, nvlink=nvlink, target_bytes=target,
                   step_time=step_time, shard_gather=gather)
    return choose(inp_for, pick_batch, mach, forced=options.strategy)
