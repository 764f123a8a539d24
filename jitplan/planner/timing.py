"""Step time of a JiT training step and of an inference forward, term by term, each with its source.

Pure functions, no torch. A step is the sum of what the GPU must do, each at the rate of the unit that
does it (docs/planning.md "Time model" derives every constant):

    tensor      matmul FLOPs at the dense bf16 tensor rate x ETA_TENSOR (published ViT/DiT anchors)
    fp32 attn   the official exact attention's Q K^T in fp32 at the CUDA-core rate x ETA_FP32
    traffic     elementwise memory traffic (norms, modulation, RoPE, gates, casts, softmax) through DRAM
                bandwidth x ETA_BW; bytes counted op by op on jitmodel's own eager step
    accumulate  each micro-step after the first adds its gradients into .grad (12 B per parameter)
    launches    a micro-step cannot end before the host has issued its kernels (counted per block)
    optimizer   fused AdamW + two EMA updates (+ DDP bucket copies) streaming bytes per parameter
    comm        the gradient all-reduce by link kind, partly hidden behind the backward
    host        the official loop's three host syncs per iteration
    data        the DataLoader's decode rate per worker: the step cannot be faster than the loader

A measured run replaces all of it (``jitplan calibrate``; jitplan.planner.calibration).

    >>> from jitplan.hardware.catalog import lookup
    >>> st = train_step_time(TimeInputs.for_model("JiT-B/16", lookup("RTX 3060"), micro_batch=16, world_size=2,
    ...                                           compile=True, attention="exact", workers_per_rank=9))
    >>> [t.name for t in st.terms][:3]
    ['tensor', 'fp32 attention', 'elementwise traffic']
    >>> 0.3 < st.total_s < 0.6
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jitmodel.config import TrainConfig
from jitmodel.counts import forward_flops_per_image, param_breakdown, seq_lens, train_flops_per_image
from jitmodel.variants import Variant, get_variant
from jitplan.hardware.schema import GPUSpec, HostSpec
from jitplan.planner.link import OVERLAP_BACKWARD, Link, allreduce_s, link_for

# ---- rates: fraction of a datasheet peak a real step reaches ---------------------------------------
# Whole-step efficiency against the dense tensor peak (FP32 accumulate) of a plain ViT-B/16 AMP step.
# consumer: timm results/benchmark-train-amp-nchw-pt112-cu113-rtx3090.csv, vit_base_patch16_224:
#   390.9 img/s at batch 192 x 105.6 GFLOP (3 x 2 x 17.6 GMAC) = 41.3 TFLOPS of the RTX 3090's 71 -> 0.58.
# datacenter: fast-DiT README, DiT-XL/2 on 1 x A100, fp16 AMP, batch 128: 0.84 steps/s = 107.5 img/s x
#   712 GFLOP x 4/3 (activation checkpointing recomputes the forward) = 102 TFLOPS of 312 -> 0.33.
# workstation (full-rate FP32 accumulate like datacenter parts, GDDR like consumer): between [judgement].
# The anchors include a plain ViT's/DiT's own elementwise work, so adding JiT's traffic below counts some
# of it twice: this errs slow, not fast.
ETA_TENSOR = {"consumer": 0.58, "workstation": 0.45, "datacenter": 0.33, "custom": 0.45}
# Inference: timm results/benchmark-infer-amp-nchw-pt112-cu113-rtx3090.csv, vit_base_patch16_224: 1132 img/s
# x 35.2 GFLOP = 39.9 TFLOPS of 71 -> 0.56; relative to training 0.56 / 0.58.
INFER_VS_TRAIN = 0.97
# Batched fp32 Q K^T (head dim 64: ~22 FLOP/byte) on the CUDA cores [judgement: 50-70% of the fp32 peak].
ETA_FP32 = 0.6
# Elementwise kernels reach 75-90% of DRAM bandwidth (STREAM-like copies) [judgement].
ETA_BW = 0.8

# ---- traffic: bytes read + written by the non-matmul ops of one eager training step ------------------
# Measured by benchmarks/bench_traffic.py (every aten op's input + output bytes under FakeTensorMode, views
# free, matmuls/convs/SDPA excluded) on jitmodel's JiT-B/16 at 256 px, batch 2 and 4, bf16 autocast,
# 2026-12-02: 1086 B per (token x hidden x block) per image, 51 B per (head x query x key x block) per image
# for the exact attention's fp32 scores and softmax (3 with SDPA: logsumexp), and 12 B per parameter per
# step (the bf16 weight casts of forward and backward).
TRAFFIC_TOKEN = 1086.0
TRAFFIC_ATTN = {"exact": 51.0, "sdpa": 3.0}
TRAFFIC_CAST_PER_PARAM = 12.0
# torch.compile (Inductor) fuses elementwise chains: the traffic that remains is taken as the bytes the
# min-cut partitioner still saves, 42.3 / 81.6 of eager per block (measured on a JiT-like block; see
# jitplan.planner.memory.C_BLOCK_COMPILE). Inductor's own buffer sizes after fusion, on its C++ backend, give
# 0.41 for a JiT-B block (benchmarks/bench_kernels.py); the CPU-only outer-loop fusion makes that a lower
# bound for the GPU, so the larger 0.52 is kept [judgement between the two].
COMPILE_TRAFFIC = 42.3 / 81.6
# The forward's share of a training step's traffic: the backward reads what the forward saved and writes
# gradients of the same sizes, about twice the forward [judgement].
FORWARD_TRAFFIC_SHARE = 1 / 3

# ---- optimizer, EMA, DDP: bytes per parameter per optimizer step (read + written) -------------------------
BYTES_ADAMW_FUSED = 28  # reads p, g, m, v; writes p, m, v (4 B each)
BYTES_ADAMW_FOREACH = 44  # + the per-op intermediates of the foreach kernels (one more read+write pair each)
BYTES_EMA = 20  # per EMA: _foreach_mul_ (read + write 4 B) then _foreach_add_ (read 8, write 4), jitmodel.denoiser
BYTES_DDP_COPY = 16  # grads copied into DDP's flat buckets and back (read + write each; 0 with bucket views)

# ---- the gradient all-reduce: jitplan.planner.link (bus bandwidth from the machine's PCIe / NVLink figures) ----

# ---- gradient accumulation: every micro-step after the first adds its weight gradients into .grad ------------
# AccumulateGrad's in-place add reads the old gradient and the new one and writes the sum (3 x 4 B per parameter);
# the first micro-step's gradient is stolen, not added (its casts are in TRAFFIC_CAST_PER_PARAM).
BYTES_GRAD_ACCUM = 12

# ---- kernel launches: the host must issue every kernel, and a micro-step cannot end before it has ------------
# Kernels of one training micro-step (forward + backward), counted on jitmodel's JiT-B/16 at 256 px
# (benchmarks/bench_kernels.py, 2026-12-02): eager, every non-view aten op (one CUDA kernel each) under
# FakeTensorMode: 1026 per block, 540 outside the blocks; compiled, Inductor's generated kernels for one block
# (92) + its 21 matmuls (7 forward, 14 backward). The count does not depend on the batch or the width.
KERNELS_PER_BLOCK = {"eager": 1026, "compiled": 113}
KERNELS_OUTSIDE = 540
# Issuing one kernel costs the host 4-6 us of driver and runtime calls (measured on an RTX 5070 Ti, CUDA 13:
# susun-blog.com "pegainfer (3): From Launch Overhead to CUDA Graph"); PyTorch's dispatcher adds more, not
# counted here (errs fast). While the GPU has queued work this is hidden; a micro-step whose kernels are
# shorter than their launches is launch-bound (small micro-batches, small models, eager mode).
LAUNCH_S = 5e-6

# ---- host and data ------------------------------------------------------------------------------------------
# The official loop syncs the host three times per iteration (loss.item(), torch.cuda.synchronize(), the loss
# all-reduce; docs/planning.md "Time model"): each drains the launch queue [judgement: ~1.5 ms each].
HOST_SYNC_S = 3 * 0.0015
# PIL decode + ADM centre crop of an average ImageNet JPEG (~500 x 375) takes ~6-7 ms on one core
# [judgement: 150 img/s per DataLoader worker].
DECODE_IMG_PER_S = 150.0
# An average ImageNet-1k training JPEG: the 1,281,167 images of ILSVRC2012_img_train.tar take 138 GB
# (image-net.org download page) -> 108 KB. A loader reading from disk needs this many bytes per image.
JPEG_BYTES = 138e9 / 1_281_167


@dataclass(frozen=True)
class TimeInputs:
    """What the time model needs to know about one training process and its GPU."""

    variant: Variant
    gpu: GPUSpec
    img_size: int = 256
    micro_batch: int = 1
    accum: int = 1
    world_size: int = 1
    nodes: int = 1
    in_channels: int = 3
    num_classes: int = 1000
    compile: bool = False
    attention: str = "exact"
    fused_adamw: bool = True
    ddp_bucket_view: bool = False
    num_emas: int = 2
    workers_per_rank: int | None = None  # None: the loader is not modelled (synthetic / in-memory data)
    link: Link | None = None  # the all-reduce's link; None: jitplan.planner.link.link_for(gpu, nodes)
    cpus_per_rank: float | None = None  # cores the rank's workers may decode on (None: not capped)
    disk_img_per_s: float | None = None  # images/s the disk gives one rank (None: not capped)

    @classmethod
    def for_model(cls, variant: str | Variant, gpu: GPUSpec, **kw: Any) -> TimeInputs:
        v = variant if isinstance(variant, Variant) else get_variant(variant)
        return cls(variant=v, gpu=gpu, **kw)


@dataclass(frozen=True)
class Term:
    name: str
    seconds: float
    why: str


@dataclass(frozen=True)
class StepTime:
    terms: tuple[Term, ...]
    total_s: float  # one optimizer step (all micro-steps), what a wall clock between steps sees
    bound_by: str  # "gpu" | "data"

    def get(self, name: str) -> float:
        return sum(t.seconds for t in self.terms if t.name == name)


def link_kind(gpu: GPUSpec, nodes: int) -> str:
    """How gradients travel: "network" between nodes, else NVLink, PCIe with P2P, or PCIe without.

    GeForce cards have no PCIe peer-to-peer; NCCL stages through host memory (jitplan.planner.link).

        >>> from jitplan.hardware.catalog import lookup
        >>> link_kind(lookup("RTX 3060"), 1), link_kind(lookup("H100 SXM"), 1), link_kind(lookup("L40S"), 1)
        ('pcie-no-p2p', 'nvlink', 'pcie-p2p')
    """
    return link_for(gpu, nodes).kind


def step_link(inp: TimeInputs) -> Link:
    return inp.link or link_for(inp.gpu, inp.nodes)


def _rates(gpu: GPUSpec) -> tuple[float, float, float]:
    """(tensor FLOP/s, fp32 FLOP/s, bytes/s) as reached; datasheet gaps filled from the tensor peak."""
    tensor = gpu.bf16_tflops * 1e12 * ETA_TENSOR.get(gpu.gpu_class, ETA_TENSOR["custom"])
    fp32 = (gpu.fp32_tflops or gpu.bf16_tflops / 2) * 1e12 * ETA_FP32
    bw = (gpu.mem_bw_gbs or gpu.bf16_tflops * 10) * 1e9 * ETA_BW  # ~100 FLOP/byte when unknown
    return tensor, fp32, bw


def _attention_split(v: Variant, img_size: int) -> tuple[float, float]:
    """(sum over blocks of s^2 x heads, fp32 Q K^T FLOPs of one training image: forward 2 s^2 d + backward 4 s^2 d)."""
    lens = seq_lens(v, img_size)
    hs2 = v.heads * sum(s * s for s in lens)
    qk_train = sum(6.0 * s * s * v.hidden for s in lens)
    return hs2, qk_train


def _traffic_per_image(inp: TimeInputs) -> float:
    v = inp.variant
    th = v.hidden * sum(seq_lens(v, inp.img_size))
    hs2, _ = _attention_split(v, inp.img_size)
    eager = TRAFFIC_TOKEN * th + TRAFFIC_ATTN.get(inp.attention, TRAFFIC_ATTN["exact"]) * hs2
    return eager * (COMPILE_TRAFFIC if inp.compile else 1.0)


def train_step_time(inp: TimeInputs) -> StepTime:
    """Seconds of one optimizer step (``micro_batch x accum`` images per GPU), term by term."""
    if inp.micro_batch < 1 or inp.accum < 1:
        raise ValueError(f"micro_batch ({inp.micro_batch}) and accum ({inp.accum}) must be >= 1")
    v, gpu = inp.variant, inp.gpu
    tensor_rate, fp32_rate, bw = _rates(gpu)
    images = inp.micro_batch * inp.accum
    pb = param_breakdown(v, inp.img_size, inp.num_classes, inp.in_channels)
    flops = train_flops_per_image(v, inp.img_size, inp.in_channels, inp.attention)
    _, qk = _attention_split(v, inp.img_size)
    qk = qk if inp.attention == "exact" else 0.0
    mode = "compiled" if inp.compile else "eager"
    t_tensor = images * (flops - qk) / tensor_rate
    t_fp32 = images * qk / fp32_rate
    traffic = _traffic_per_image(inp)
    t_traffic = (images * traffic + inp.accum * TRAFFIC_CAST_PER_PARAM * pb.total) / bw
    opt_bytes = (BYTES_ADAMW_FUSED if inp.fused_adamw else BYTES_ADAMW_FOREACH) * pb.trainable
    opt_bytes += inp.num_emas * BYTES_EMA * pb.total
    ddp_copy = inp.world_size > 1 and not inp.ddp_bucket_view
    opt_bytes += BYTES_DDP_COPY * pb.trainable if ddp_copy else 0
    t_opt = opt_bytes / bw
    t_accum = (inp.accum - 1) * BYTES_GRAD_ACCUM * pb.trainable / bw
    kernels = KERNELS_PER_BLOCK[mode] * v.depth + KERNELS_OUTSIDE
    gpu_micro = (t_tensor + t_fp32 + t_traffic + t_accum) / inp.accum
    t_launch = inp.accum * max(0.0, kernels * LAUNCH_S - gpu_micro)
    terms = [
        Term("tensor", t_tensor, f"{images} x {(flops - qk) / 1e9:.1f} GFLOP at {gpu.bf16_tflops:g} TFLOPS x "
             f"{tensor_rate / gpu.bf16_tflops / 1e12:.2f}"),
        Term("fp32 attention", t_fp32, f"Q K^T in fp32, {images} x {qk / 1e9:.2f} GFLOP on the CUDA cores"
             if qk else "none (SDPA runs attention on the tensor cores)"),
        Term("elementwise traffic", t_traffic, f"{images} x {traffic / 1e9:.2f} GB ({mode}) through "
             f"{bw / 1e9:.0f} GB/s"),
        *([Term("gradient accumulation", t_accum, f"{inp.accum - 1} micro-steps add their gradients into .grad: "
                f"{BYTES_GRAD_ACCUM} B/param each")] if inp.accum > 1 else []),
        *([Term("launch-bound", t_launch, f"{kernels} kernels per micro-step x {LAUNCH_S * 1e6:.0f} us to issue = "
                f"{kernels * LAUNCH_S * 1e3:.1f} ms > {gpu_micro * 1e3:.1f} ms of GPU work ({mode})")]
          if t_launch > 0 else []),
        Term("optimizer + EMA", t_opt, f"{opt_bytes / pb.trainable:.0f} B/param: AdamW, {inp.num_emas} EMAs"
             + (", DDP bucket copies" if ddp_copy else "")),
    ]
    if inp.world_size > 1:
        link = step_link(inp)
        grad_bytes = 4 * pb.trainable
        t_comm = allreduce_s(grad_bytes, inp.world_size, link)
        backward = (2 / 3) * (t_tensor + t_fp32 + t_traffic + t_accum) / inp.accum  # the last micro-step's backward
        hidden = min(t_comm, OVERLAP_BACKWARD * backward)
        terms.append(Term("all-reduce", t_comm - hidden, f"{grad_bytes / 1e9:.2f} GB fp32 gradients over "
                          f"{link.why} = {t_comm * 1e3:.0f} ms" + (f", {hidden * 1e3:.0f} ms hidden behind the "
                                                                  "backward" if hidden else "")))
    terms.append(Term("host syncs", HOST_SYNC_S * inp.accum, "three host syncs per iteration (official loop)"))
    gpu_s = sum(t.seconds for t in terms)
    bound = "gpu"
    if inp.workers_per_rank is not None:
        rate, why = loader_rate(inp)
        data_s = images / rate
        if inp.workers_per_rank == 0:  # the training process decodes between steps
            terms.append(Term("data (in process)", data_s, f"{images} images at {rate:.0f} img/s ({why})"))
        elif data_s > gpu_s:
            terms.append(Term("data wait", data_s - gpu_s, f"{why} = {rate:.0f} img/s < {images / gpu_s:.0f} img/s "
                              "the GPU takes"))
            bound = "data"
    return StepTime(terms=tuple(terms), total_s=sum(t.seconds for t in terms), bound_by=bound)


def loader_rate(inp: TimeInputs) -> tuple[float, str]:
    """(images/s one rank's loader delivers, why): workers on the cores they get, capped by the disk."""
    w = max(inp.workers_per_rank or 0, 1)
    cores = min(float(w), inp.cpus_per_rank) if inp.cpus_per_rank else float(w)
    rate = DECODE_IMG_PER_S * cores
    why = f"{w} workers" + (f" on {cores:g} cores" if cores < w else "") + f" x {DECODE_IMG_PER_S:g} img/s"
    if inp.disk_img_per_s is not None and inp.disk_img_per_s < rate:
        rate, why = inp.disk_img_per_s, f"the disk: {inp.disk_img_per_s:.0f} img/s of {JPEG_BYTES / 1e3:.0f} KB JPEGs"
    return rate, why


def forward_time_per_image(variant: str | Variant, gpu: GPUSpec, *, img_size: int = 256, in_channels: int = 3,
                           attention: str = "exact", compile: bool = False) -> float:
    """Seconds of one network forward per image in inference (large batches, no autograd)."""
    v = variant if isinstance(variant, Variant) else get_variant(variant)
    tensor_rate, fp32_rate, bw = _rates(gpu)
    hs2, qk_train = _attention_split(v, img_size)
    qk = qk_train / 3 if attention == "exact" else 0.0
    inp = TimeInputs(variant=v, gpu=gpu, img_size=img_size, in_channels=in_channels, attention=attention,
                     compile=compile)
    fwd = forward_flops_per_image(v, img_size, in_channels)
    return ((fwd - qk) / (tensor_rate * INFER_VS_TRAIN) + qk / fp32_rate
            + FORWARD_TRAFFIC_SHARE * _traffic_per_image(inp) / bw)


def eval_time_s(variant: str | Variant, gpu: GPUSpec, *, num_images: int, nfe: int, world_size: int,
                img_size: int = 256, attention: str = "exact", compile: bool = False, cfg_forwards: int = 2) -> float:
    """One online evaluation: ``num_images`` x NFE x CFG forwards, sharded over the ranks."""
    per = forward_time_per_image(variant, gpu, img_size=img_size, attention=attention, compile=compile)
    return num_images * nfe * cfg_forwards * per / max(world_size, 1)


def inputs_for(train: TrainConfig, gpu: GPUSpec, *, world_size: int, nodes: int = 1, accum: int | None = None,
               ddp_bucket_view: bool = False, host: HostSpec | None = None, link: Link | None = None) -> TimeInputs:
    """The time model's inputs for a TrainConfig on ``world_size`` x ``gpu`` (the loader is modelled for
    image folders, whose JPEGs are decoded per step); ``host``: the machine's cores, disk and link figures."""
    m = train.model
    ranks = max(1, world_size // max(nodes, 1))
    h = host or HostSpec()
    cpus = max(1.0, h.cpus / ranks - 1) if h.cpus else None  # one core per rank for its training process
    disk = h.disk_read_mbs * 1e6 / JPEG_BYTES / ranks if h.disk_read_mbs else None
    return TimeInputs(
        variant=m.spec, gpu=gpu, img_size=m.img_size, micro_batch=train.batch_per_gpu,
        accum=train.accum_steps if accum is None else accum, world_size=world_size, nodes=nodes,
        in_channels=m.in_channels, num_classes=m.num_classes, compile=train.compile, attention=m.attention,
        fused_adamw=train.optim.fused is not False, ddp_bucket_view=ddp_bucket_view,
        num_emas=len(train.diffusion.ema_decays),
        workers_per_rank=train.data.num_workers if train.data.kind == "imagefolder" else None,
        link=link or (link_for(gpu, nodes, h) if world_size > 1 else None),
        cpus_per_rank=cpus if train.data.kind == "imagefolder" else None,
        disk_img_per_s=disk if train.data.kind == "imagefolder" else None)


def nfe(steps: int, method: str) -> int:
    """Network evaluations of one sample: Heun's last interval is Euler (2 (steps - 1) + 1)."""
    return 2 * (steps - 1) + 1 if method == "heun" else steps
