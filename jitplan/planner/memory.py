"""Per-GPU memory of one JiT training step: fixed bytes per parameter + activations(b) + overheads.

Pure functions, no torch. The constants are calibrated against a traced training step of
``jitmodel``'s real model (FakeTensorMode + MemTracker on the CPU, ``jitplan plan --trace``;
``benchmarks/bench_memory_trace.py`` prints predicted vs traced). Derivation: docs/planning.md "Memory
model" (each constant and its source).

    >>> from jitplan.planner.memory import MemoryInputs, predict
    >>> inp = MemoryInputs.for_model("JiT-B/16", 256, world_size=2)
    >>> round(predict(inp, 16).total / 1e9, 1)
    8.8

The largest micro-batch that fits is solved once, for every memory strategy (``strategy_memory.max_micro_batch``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from jitmodel.counts import param_breakdown, seq_lens
from jitmodel.variants import Variant, get_variant

GB = 1e9

# ---- constants (bytes) ------------------------------------------------------------------------------
# Calibration: least-squares fit of the per-sample slopes of traced jitmodel steps (trace.py; B/16 exact
# and sdpa, B/32@512, L/16 at 2-3 batch sizes each, 2026-11-26; benchmarks/RESULTS.md). Each constant is
# bytes per unit of its term.
# Activation bytes per (token x hidden x block) per sample, eager bf16 autocast with the fp32 residual:
# RMSNorm internals in fp32, adaLN modulate, qk-norm, RoPE, SwiGLU, gates (82-86 measured on a JiT-like
# model; docs/planning.md "Memory model").
C_BLOCK_EAGER = 80.3
# torch.compile (AOTAutograd min-cut partitioner) keeps (38.3 + 4) / (77.6 + 4) of the eager block
# activations (AOTAutograd min-cut partitioner on a JiT-like block, docs/planning.md "Memory model");
# not traceable here, so derived.
C_BLOCK_COMPILE = round(C_BLOCK_EAGER * 42.3 / 81.6, 1)
# Attention-matrix bytes per (head x query x key) per block per sample. "exact" (the official path):
# fp32 scores -> fp32 softmax output saved for its backward + its bf16 copy saved for A.V; "sdpa"
# (flash / memory-efficient kernels): none, only the fp32 logsumexp per (head x query).
C_ATTN = {"exact": 6.0, "sdpa": 0.0}  # traced: B/16 exact minus sdpa = 6.0 x heads x sum(s^2)
C_LSE = 4.0  # fp32 logsumexp per (head x query) per block, SDPA only
# Image-space tensors per sample (x, noise, z, targets, x_pred, loss terms), bytes per pixel-channel:
# B/32 at 512 px minus B/16 at 256 px (same tokens, 4x the pixels).
C_IMAGE = 36.0
# Token-level tensors outside the blocks (patch embedding, pos-embed add, final layer), bytes per token x hidden.
C_EDGE = 15.2

BYTES_WEIGHTS = 4  # fp32 master weights (autocast keeps weights fp32)
BYTES_GRADS = 4
BYTES_ADAM = 8  # exp_avg + exp_avg_sq
BYTES_EMA = 4  # per EMA copy, fp32, on the GPU
BYTES_DDP_BUCKETS = 4  # DDP flat gradient buckets unless gradient_as_bucket_view=True
BYTES_FOREACH_TMP = 4  # foreach AdamW's transient fp32 copy at step time (0 when fused)
BYTES_AUTOCAST_CACHE = 2  # bf16 copies of matmul/conv weights during forward/backward

# CUDA context per process, outside the allocator: with lazy module loading (CUDA_MODULE_LOADING=LAZY, the
# default since CUDA 11.7 / torch 1.13+ wheels) it measures 0.3-0.45 GB on recent drivers; midpoint.
CUDA_CONTEXT_BYTES = int(0.38 * GB)
# NCCL communicators and staging buffers: 0.1-0.2 GB measured for 2 ranks over PCIe; NVLink and more ranks
# allocate more channels and buffers (up to ~0.4 GB) [judgement above 2 ranks].
NCCL_BYTES = {"pcie": int(0.15 * GB), "nvlink": int(0.4 * GB)}
# Reserved > allocated: block rounding and fragmentation (5-15%). One basis everywhere (analytic and
# --trace): the allocator-managed tensor bytes at the peak, DDP buckets included.
ALLOCATOR_HEADROOM = 0.05


@dataclass(frozen=True)
class MemoryInputs:
    """What the memory model needs to know about one training process."""

    variant: Variant
    img_size: int
    world_size: int = 1
    in_channels: int = 3
    num_classes: int = 1000
    compile: bool = False
    attention: str = "exact"
    fused_adamw: bool = True  # False: foreach AdamW (+4 B/param at step time)
    ddp_bucket_view: bool = False
    num_emas: int = 2
    accum: int = 1  # > 1: gradients stay allocated across micro-steps, so they sit under the forward peak
    nvlink: bool = False  # NCCL allocates more with NVLink

    @classmethod
    def for_model(cls, variant: str | Variant, img_size: int = 256, **kw: Any) -> MemoryInputs:
        v = variant if isinstance(variant, Variant) else get_variant(variant)
        return cls(variant=v, img_size=img_size, **kw)


@dataclass(frozen=True)
class Item:
    name: str
    bytes: int
    why: str


@dataclass(frozen=True)
class MemoryPrediction:
    micro_batch: int
    items: tuple[Item, ...]
    tensor_peak: int  # what MemTracker/max_memory_allocated would see (single process, no DDP)
    total: int  # per GPU, what nvidia-smi would see


# ---- the parts --------------------------------------------------------------------------------------


def fixed_items(inp: MemoryInputs) -> list[Item]:
    """Bytes that do not depend on the batch: weights, AdamW, EMAs, autocast cache, DDP buckets, gradients.

    Gradients count only with accumulation: with one micro-step ``zero_grad(set_to_none=True)`` frees them
    before the forward, whose end is the peak (they are allocated while activations are being freed).
    """
    pb = param_breakdown(inp.variant, inp.img_size, inp.num_classes, inp.in_channels)
    p_all, p_train = pb.total, pb.trainable
    grads = BYTES_GRADS * p_train if inp.accum > 1 else 0
    items = [
        Item("weights", BYTES_WEIGHTS * p_all, f"fp32, {p_all / 1e6:.2f}M params x 4 B"),
        Item("adamw state", BYTES_ADAM * p_train, "exp_avg + exp_avg_sq, 8 B/param"),
        Item("ema", inp.num_emas * BYTES_EMA * p_all, f"{inp.num_emas} fp32 EMA copies on the GPU, 4 B/param each"),
        Item("gradients", grads, f"fp32, 4 B/param, kept across {inp.accum} micro-steps" if grads else
             "fp32 4 B/param, freed before the forward (set_to_none); not under the forward peak"),
        Item("autocast weight cache", BYTES_AUTOCAST_CACHE * pb.matmul,
             "bf16 copies of every Linear/conv weight (adaLN included) during forward and backward"),
    ]
    if inp.world_size > 1 and not inp.ddp_bucket_view:
        items.append(Item("ddp buckets", BYTES_DDP_BUCKETS * p_train,
                          "DDP flat gradient buckets, 4 B/param (0 with gradient_as_bucket_view)"))
    return items


def step_phase_bytes(inp: MemoryInputs) -> int:
    """Tensor bytes in the optimizer step beyond the fixed items: gradients (if not counted) + foreach copy."""
    p_train = param_breakdown(inp.variant, inp.img_size, inp.num_classes).trainable
    grads = 0 if inp.accum > 1 else BYTES_GRADS * p_train
    return grads + (0 if inp.fused_adamw else BYTES_FOREACH_TMP * p_train)


def activation_per_sample(inp: MemoryInputs) -> float:
    """Activation bytes per sample held at the peak of forward/backward."""
    v = inp.variant
    lens = seq_lens(v, inp.img_size)
    c_block = C_BLOCK_COMPILE if inp.compile else C_BLOCK_EAGER
    blocks = c_block * v.hidden * sum(lens)
    attn = C_ATTN[inp.attention] * v.heads * sum(s * s for s in lens)
    if inp.attention == "sdpa":
        attn += C_LSE * v.heads * sum(lens)
    image = C_IMAGE * inp.in_channels * inp.img_size**2
    edge = C_EDGE * v.num_patches(inp.img_size) * v.hidden
    return blocks + attn + image + edge


def nccl_bytes(inp: MemoryInputs) -> int:
    return NCCL_BYTES["nvlink" if inp.nvlink else "pcie"] if inp.world_size > 1 else 0


def overhead_bytes(inp: MemoryInputs) -> int:
    return CUDA_CONTEXT_BYTES + nccl_bytes(inp)


def headroom_bytes(allocator_tensor_bytes: int) -> int:
    """The allocator's reserve above its tensors, on one basis for the analytic model and ``--trace``."""
    return int(ALLOCATOR_HEADROOM * allocator_tensor_bytes)


def predict(inp: MemoryInputs, micro_batch: int) -> MemoryPrediction:
    """Peak memory per GPU at ``micro_batch`` with the breakdown; ValueError on a non-positive batch."""
    if micro_batch < 1:
        raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
    fixed = fixed_items(inp)
    fixed_sum = sum(i.bytes for i in fixed)
    act = int(round(activation_per_sample(inp) * micro_batch))
    # At step time the autocast weight cache is gone (freed when autocast exits), so the step phase
    # competes with activations + cache, not activations alone.
    cache = sum(i.bytes for i in fixed if i.name == "autocast weight cache")
    step_tmp = step_phase_bytes(inp) - cache
    mode = "compiled" if inp.compile else "eager"
    items = list(fixed)
    items.append(Item("activations", act, f"{micro_batch} x {activation_per_sample(inp) / 1e6:.1f} MB/sample "
                      f"({mode}, {inp.attention} attention)"))
    if step_tmp > act:  # the peak falls in the optimizer step (tiny batches, big models)
        items.append(Item("optimizer step", step_tmp - act, "gradients + AdamW temporaries at step time exceed "
                          "the activations + autocast weight cache (freed by then)"))
    no_ddp = sum(i.bytes for i in items if i.name != "ddp buckets")
    tensor_peak = no_ddp
    headroom = headroom_bytes(fixed_sum + max(act, step_tmp))
    items.append(Item("allocator headroom", headroom, f"{ALLOCATOR_HEADROOM:.0%} of the allocator's tensor bytes "
                      "(DDP buckets included): rounding, fragmentation"))
    items.append(Item("cuda context", CUDA_CONTEXT_BYTES, "per process, outside the allocator (lazy module loading: "
                      "0.3-0.45 GB measured)"))
    if inp.world_size > 1:
        link = "nvlink" if inp.nvlink else "pcie"
        items.append(Item("nccl", NCCL_BYTES[link], f"NCCL communicators and buffers (DDP, {link}: "
                          + ("0.1-0.2 GB measured for 2 ranks)" if link == "pcie" else "more channels and buffers)")))
    total = sum(i.bytes for i in items)
    return MemoryPrediction(micro_batch=micro_batch, items=tuple(items), tensor_peak=tensor_peak, total=total)


def min_total(inp: MemoryInputs) -> int:
    """Memory at micro-batch 1: if this exceeds the target nothing fits."""
    return predict(inp, 1).total


def with_world(inp: MemoryInputs, world_size: int) -> MemoryInputs:
    return replace(inp, world_size=world_size)
