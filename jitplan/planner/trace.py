"""Trace one real JiT training step on the CPU without allocating: FakeTensorMode + MemTracker.

``jitplan plan --trace`` and ``benchmarks/bench_memory_trace.py`` use it to check (and calibrate) the
analytic memory model. The recipe (docs/planning.md "Memory model"): build jitmodel's real
Denoiser *inside* ``FakeTensorMode`` on the CPU (fake CUDA cannot run backward on torch 2.13), run
forward + loss under CPU bf16 autocast (same dtypes as CUDA autocast), backward, AdamW step, both EMA
updates and ``zero_grad(set_to_none=True)``, twice; the second step's peak is the steady state. Fake
tensors carry shapes and dtypes but no storage, so a JiT-L step at batch 128 "uses" 80 GB in a few
seconds and ~400 MB of real RAM. What the trace does not see (CUDA context, NCCL, DDP buckets, allocator
fragmentation) is added from the analytic model.

Imports torch lazily: importing this module is cheap.

    >>> from jitmodel.config import DataConfig, ModelConfig, TrainConfig
    >>> cfg = TrainConfig(model=ModelConfig(variant="JiT-Tiny/4", img_size=16, num_classes=10),
    ...                   data=DataConfig(kind="digits"))
    >>> r = trace_step(cfg, micro_batch=4)
    >>> r.peak_bytes > r.by_category["Parameter"] > 0
    True
"""

from __future__ import annotations

from dataclasses import dataclass

from jitmodel.config import TrainConfig
from jitmodel.counts import seq_lens
from jitplan.planner import memory
from jitplan.planner.plan import memory_inputs
from jitplan.planner.rows import fmt_bytes
from jitplan.planner.traced_step import TrainingStep, tracked_peaks
from jitplan.schemas import MemoryItem, Plan


@dataclass(frozen=True)
class TraceResult:
    micro_batch: int
    peak_bytes: int  # steady-state (second step) peak of tensor bytes, one process
    first_step_peak_bytes: int
    by_category: dict[str, int]  # MemTracker categories at the peak: Parameter, Gradient, Activation, Optstate, ...
    optimizer: str  # "fused" | "foreach"


def trace_step(train: TrainConfig, micro_batch: int, steps: int = 2, fused: bool | None = None) -> TraceResult:
    """Peak tensor bytes of ``steps`` training steps of ``train``'s model at ``micro_batch`` (fake, CPU)."""
    if micro_batch < 1:
        raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker


    with FakeTensorMode(allow_non_fake_inputs=True):
        step = TrainingStep(train, micro_batch, fused=fused)
        # MemTracker hooks every parameter's grad and refuses frozen ones (torch 2.13, seen 2026-11): let the
        # frozen pos_embed take a gradient it never uses (N x D x 4 B, under 1 MB; not in the optimizer).
        for p in step.den.parameters():
            p.requires_grad_(True)
        mt = MemTracker()
        mt.track_external(step.den, step.opt, *step.ema_tensors())
        peaks = tracked_peaks(step, mt, steps)
    total, cats = peaks[-1]
    return TraceResult(micro_batch=micro_batch, peak_bytes=total, first_step_peak_bytes=peaks[0][0],
                       by_category=cats, optimizer="fused" if step.fused else "foreach")


def apply_trace(plan: Plan) -> Plan:
    """The plan with its memory estimate replaced by a traced step (+ what the trace cannot see)."""

    train = plan.train
    eager = train.model_copy(update={"compile": False})
    res = trace_step(eager, train.batch_per_gpu)
    inp = memory_inputs(train, plan.hardware.world_size)
    traced = res.peak_bytes
    items = [MemoryItem(name="traced step (eager)", bytes=traced,
                        why=f"FakeTensorMode + MemTracker, batch {res.micro_batch}, {res.optimizer} AdamW, 2 EMAs")]
    if train.compile:  # the trace runs eager; torch.compile saves fewer activations (docs/planning.md)
        v = inp.variant

        saved = int((memory.C_BLOCK_EAGER - memory.C_BLOCK_COMPILE) * v.hidden * sum(seq_lens(v, train.model.img_size))
                    * train.batch_per_gpu)
        items.append(MemoryItem(name="torch.compile saving", bytes=0,
                                why=f"-{saved / 1e9:.2f} GB of block activations"))
        traced -= saved
    # The trace runs one micro-step per optimizer step; with accumulation the gradients stay allocated.
    extra = [i for i in memory.predict(inp, train.batch_per_gpu).items
             if i.name in ("ddp buckets", "cuda context", "nccl") or (i.name == "gradients" and i.bytes > 0)]
    items += [MemoryItem(name=i.name, bytes=i.bytes, why=i.why) for i in extra]
    allocator = traced + sum(i.bytes for i in extra if i.name in ("ddp buckets", "gradients"))
    headroom = memory.headroom_bytes(allocator)
    items.append(MemoryItem(name="allocator headroom", bytes=headroom, why=f"{memory.ALLOCATOR_HEADROOM:.0%} of the "
                            "allocator's tensor bytes (traced + DDP buckets), the analytic model's basis"))
    total = traced + headroom + sum(i.bytes for i in extra)
    est = plan.estimates.model_copy(update={"memory_per_gpu_bytes": total, "memory_breakdown": items,
                                            "memory_source": "trace"})
    warnings = list(plan.warnings)
    if total > est.memory_target_bytes:
        warnings.append(f"traced memory {total / 1e9:.1f} GB exceeds the target "
                        f"{est.memory_target_bytes / 1e9:.1f} GB: "
                        f"lower --batch-per-gpu")
    prov = {**plan.provenance, "memory": f"trace: {res.peak_bytes:,} B traced tensor peak at batch {res.micro_batch}"}

    rows = [r.model_copy(update={"target": f"{fmt_bytes(total)}, {total / est.gpu_memory_bytes:.0%}",
                                 "why": f"traced step + overheads; target {est.memory_target_bytes / 1e9:.1f} GB"})
            if r.quantity == "memory per GPU" else r for r in plan.rows]
    return plan.model_copy(update={"estimates": est, "warnings": warnings, "provenance": prov, "rows": rows})
