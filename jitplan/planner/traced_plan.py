"""Plan a traced model (``model_profile.ModelProfile``) on the GPUs you have. Pure: no torch, no I/O.

Memory per GPU at micro-batch b = the traced forward peak (fixed bytes + b x traced activations per sample,
or the checkpointed slope with ``ckpt``), moved by each strategy as ``strategy_memory`` moves JiT's:
``ema-cpu`` takes the two fp32 EMAs (8 B/param) off the GPU; ``shard`` divides weights, AdamW, EMAs (and
gradients under accumulation) by the world size, adds the gathered parameters of two blocks in bf16
(``GATHER_PREFETCH``) and shrinks autocast's weight cache to the root's; accumulation keeps the fp32
gradients (4 B/param) under the forward; DDP adds its buckets; then ``memory``'s allocator headroom, CUDA
context and NCCL. fp16 + scaler (cards without bf16) has the same bytes. Time per optimizer step uses
``timing``'s rates: traced FLOPs at the tensor rate, traced op traffic at the memory bandwidth, fused AdamW
and the EMAs per parameter, the all-reduce (or FSDP2's gathers and reduce-scatter) on the machine's link.

    >>> from jitplan.hardware.spec import hardware_from_flags
    >>> from jitplan.planner.model_profile import ModelProfile
    >>> p = ModelProfile(spec="m.py:f", digest="d", in_channels=4, input_size=32, num_classes=1000,
    ...                  params=10**8, trainable=10**8, matmul_params=10**8, largest_block_params=8 * 10**6,
    ...                  root_params=10**6, blocks=12, buffer_bytes=0, fixed_bytes=22 * 10**8, act_per_sample=2e8,
    ...                  act_per_sample_ckpt=5e7, step_peak_bytes=24 * 10**8, flops_per_image=1e11,
    ...                  traffic_per_image=1e9, batches=(8, 16), trace_s=1.0, torch="2.13")
    >>> tp = plan_traced(p, hardware_from_flags("1xRTX4090"), effective_batch=256)
    >>> tp.strategy, tp.micro_batch * tp.accum_steps >= 256, tp.memory_per_gpu_bytes <= tp.memory_target_bytes
    ('none', True, True)
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict

from jitmodel.config import effective_batch as images_per_step
from jitplan.errors import CheckFailed
from jitplan.hardware.schema import HardwareSpec
from jitplan.planner import memory, scaling, strategy_memory, timing
from jitplan.planner.link import link_for
from jitplan.planner.model_profile import ModelProfile
from jitplan.planner.strategy import precision_for


class Part(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    value: float  # bytes (memory) or seconds (time)
    why: str


class Candidate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    strategy: str
    fits: bool
    max_micro_batch: int
    micro_batch: int = 0
    accum_steps: int = 0
    memory_bytes: int = 0
    step_s: float = 0.0
    images_per_s: float = 0.0


class TracedPlan(BaseModel):
    """What ``jitplan plan --model`` prints (and ``--json`` emits)."""

    model_config = ConfigDict(extra="forbid")
    model: str
    digest: str
    gpu: str
    world_size: int
    precision: str
    strategy: str
    micro_batch: int
    accum_steps: int
    effective_batch: int
    max_micro_batch: int
    params: int
    train_flops_per_image: float
    memory_per_gpu_bytes: int
    memory_target_bytes: int
    gpu_memory_bytes: int
    memory_breakdown: list[Part]
    step_time_s: float
    images_per_s: float
    step_breakdown: list[Part]
    candidates: list[Candidate]
    trace: str  # "traced in 12.3 s" | "cached (traced in 12.3 s)"
    warnings: list[str]


def memory_parts(p: ModelProfile, name: str, b: int, world: int, accum: int, nvlink: bool) -> list[Part]:
    m = strategy_memory.parse(name)
    ckpt, shard, ema_cpu = m.checkpoint_every > 0, m.shard and world > 1, m.ema_device == "cpu"
    act = b * (p.act_per_sample_ckpt if ckpt and p.act_per_sample_ckpt is not None else p.act_per_sample)
    fixed = p.fixed_bytes
    parts = [Part(name="traced fixed state", value=fixed, why="fp32 weights, AdamW m and v, 2 fp32 EMAs, autocast's "
                  "bf16 weight copies, buffers (traced at the forward peak)")]
    if ema_cpu:
        parts.append(Part(name="ema on the host", value=-8 * p.params, why="both fp32 EMAs leave the GPU (8 B/param)"))
    if accum > 1:
        parts.append(Part(name="gradients", value=4 * p.trainable, why=f"fp32, kept across {accum} micro-steps"))
    if shard:
        state = 4 * p.params + 8 * p.trainable + (0 if ema_cpu else 8 * p.params) + (4 * p.trainable if accum > 1
                                                                                        else 0)
        gather = strategy_memory.GATHER_PREFETCH * p.largest_block_params * (2 + 2)
        cache = -2 * max(p.matmul_params - p.root_params, 0)
        parts += [Part(name="sharded state", value=-state * (world - 1) / world, why=f"weights, AdamW, EMAs / {world}"),
                  Part(name="gathered blocks", value=gather, why=f"{strategy_memory.GATHER_PREFETCH} blocks' bf16 "
                       "parameters and gradients"),
                  Part(name="autocast cache (blocks)", value=cache, why="bf16 gathers: only the root's is cached")]
    per = act / b
    parts.append(Part(name="activations", value=act, why=f"{b} x {per / 1e6:.1f} MB/sample (traced"
                      + (", every block checkpointed)" if ckpt else ")")))
    tensor = sum(x.value for x in parts)
    step_phase = (p.step_peak_bytes - (8 * p.params if ema_cpu else 0)) / (world if shard else 1)
    if step_phase > tensor:
        parts.append(Part(name="optimizer step", value=step_phase - tensor, why="the step's peak (gradients + "
                          "AdamW) exceeds the forward's"))
        tensor = step_phase
    if world > 1 and not shard:
        parts.append(Part(name="ddp buckets", value=memory.BYTES_DDP_BUCKETS * p.trainable, why="4 B/param"))
        tensor += memory.BYTES_DDP_BUCKETS * p.trainable
    parts.append(Part(name="allocator headroom", value=memory.headroom_bytes(int(tensor)),
                      why=f"{memory.ALLOCATOR_HEADROOM:.0%} of the tensor bytes"))
    parts.append(Part(name="cuda context", value=memory.CUDA_CONTEXT_BYTES, why="per process"))
    if world > 1:
        parts.append(Part(name="nccl", value=memory.NCCL_BYTES["nvlink" if nvlink else "pcie"], why="communicators"))
    return parts


def memory_bytes(p: ModelProfile, name: str, b: int, world: int, accum: int = 1, nvlink: bool = False) -> int:
    return int(sum(x.value for x in memory_parts(p, name, b, world, accum, nvlink)))


def largest_batch(p: ModelProfile, name: str, world: int, accum: int, target: int, nvlink: bool = False) -> int:
    """The largest b whose memory is within ``target`` (0: not even 1), by the planner's one solver."""
    return strategy_memory.largest_fitting(lambda b: memory_bytes(p, name, b, world, accum, nvlink), target)


def step_parts(p: ModelProfile, hw: HardwareSpec, name: str, b: int, accum: int) -> list[Part]:
    gpu = hw.gpu
    assert gpu is not None
    m = strategy_memory.parse(name)
    world = hw.world_size
    tensor, _, bw = timing._rates(gpu)
    images = b * accum
    parts = [Part(name="tensor", value=p.flops_per_image * images / tensor, why="traced FLOPs at the tensor rate"),
             Part(name="elementwise traffic", value=p.traffic_per_image * images / bw,
                  why="traced bytes in + out of every op at the memory bandwidth (eager)")]
    if m.checkpoint_every:
        parts.append(Part(name="recompute", value=p.flops_per_image / 3 * images / tensor,
                          why="one more forward of the checkpointed blocks (~1/3 of the training FLOPs)"))
    emas = 0 if m.ema_device == "cpu" else 2
    opt = p.trainable * timing.BYTES_ADAMW_FUSED + emas * p.params * timing.BYTES_EMA
    parts.append(Part(name="optimizer + ema", value=opt / (world if m.shard and world > 1 else 1) / bw,
                      why="fused AdamW 28 B/param, each EMA 20 B/param"))
    if world > 1:
        bus = link_for(gpu, hw.nodes, hw.host).bus_gbs * 1e9
        if m.shard:
            moved = accum * (2 * 2 * p.params + 4 * p.trainable) * (world - 1) / world
            parts.append(Part(name="all-gathers + reduce-scatter", value=moved / bus, why=f"FSDP2 per micro-step, "
                              f"{bus / 1e9:.1f} GB/s"))
        else:
            parts.append(Part(name="all-reduce", value=2 * (world - 1) / world * 4 * p.trainable / bus,
                              why=f"fp32 gradients, {bus / 1e9:.1f} GB/s bus"))
    if m.ema_device == "cpu":
        parts.append(Part(name="ema copy to host", value=4 * p.params / 12e9, why="fp32 parameters over PCIe"))
    parts.append(Part(name="host syncs", value=timing.HOST_SYNC_S * accum, why="loss.item() and friends"))
    return parts


def _candidate(p: ModelProfile, hw: HardwareSpec, name: str, target: int, eff: int,
               batch_per_gpu: int | None) -> Candidate:
    gpu = hw.gpu
    assert gpu is not None
    world, nv = hw.world_size, gpu.nvlink
    bmax = largest_batch(p, name, world, 1, target, nv)
    if bmax < 1:
        return Candidate(strategy=name, fits=False, max_micro_batch=0)
    b, accum = (batch_per_gpu, math.ceil(eff / (world * batch_per_gpu))) if batch_per_gpu else \
        scaling.choose_accumulation(eff, world, bmax)
    if accum > 1 and not batch_per_gpu:
        bmax = largest_batch(p, name, world, accum, target, nv)
        if bmax < 1:
            return Candidate(strategy=name, fits=False, max_micro_batch=0)
        b, accum = scaling.choose_accumulation(eff, world, bmax)
    mem = memory_bytes(p, name, b, world, accum, nv)
    step = sum(x.value for x in step_parts(p, hw, name, b, accum))
    return Candidate(strategy=name, fits=mem <= target, max_micro_batch=bmax, micro_batch=b, accum_steps=accum,
                     memory_bytes=mem, step_s=step, images_per_s=images_per_step(b, accum, world) / step)


def plan_traced(p: ModelProfile, hw: HardwareSpec, *, effective_batch: int = 256, strategy: str | None = None,
                batch_per_gpu: int | None = None, memory_fraction: float = 0.9, cached: bool = False) -> TracedPlan:
    """The fastest strategy that fits (or ``strategy``), its micro-batch x accumulation, memory and time.
    CheckFailed (exit 1) when nothing fits."""
    gpu = hw.gpu
    if gpu is None:
        raise CheckFailed("planning a model needs GPUs: give --gpus (e.g. 1xRTX4090)")
    world = hw.world_size
    target = int(memory_fraction * gpu.memory_bytes)
    names = [strategy_memory.name_of(strategy_memory.parse(strategy))] if strategy else \
        [n for n in strategy_memory.NAMES if world > 1 or "shard" not in n]
    if p.blocks == 0:
        names = [n for n in names if "ckpt" not in n and "shard" not in n] or names
    cands = [_candidate(p, hw, n, target, effective_batch, batch_per_gpu) for n in names]
    fitting = [c for c in cands if c.fits]
    if not fitting:
        need, least = min((memory_bytes(p, n, 1, world, 1, gpu.nvlink), n) for n in names)
        raise CheckFailed(f"{p.spec} does not fit {world} x {gpu.name}: batch 1 needs at least {need / 1e9:.1f} GB "
                          f"({least}, the least of {', '.join(names)}) > target {target / 1e9:.1f} GB",
                          hint="options: --strategy ckpt, ema-cpu or shard (with more GPUs), or a bigger card")
    fastest = max(c.images_per_s for c in fitting)
    # Within 2% the simpler strategy (NAMES order: none first) wins: the priors do not resolve a smaller gap.
    best = next(c for c in fitting if c.images_per_s >= 0.98 * fastest)
    mem = memory_parts(p, best.strategy, best.micro_batch, world, best.accum_steps, gpu.nvlink)
    steps = step_parts(p, hw, best.strategy, best.micro_batch, best.accum_steps)
    warnings = ["time is a prior: traced FLOPs and op traffic at the catalog's rates; a short run of your own "
                "replaces it (jitplan calibrate)"]
    if p.blocks == 0:
        warnings.append("the module has no `blocks` ModuleList: no checkpointing or per-block sharding planned")
    return TracedPlan(
        model=p.spec, digest=p.digest, gpu=gpu.name, world_size=world, precision=precision_for(gpu, "bf16"),
        strategy=best.strategy, micro_batch=best.micro_batch, accum_steps=best.accum_steps,
        effective_batch=images_per_step(best.micro_batch, best.accum_steps, world),
        max_micro_batch=best.max_micro_batch,
        params=p.trainable, train_flops_per_image=p.flops_per_image, memory_per_gpu_bytes=best.memory_bytes,
        memory_target_bytes=target, gpu_memory_bytes=gpu.memory_bytes,
        memory_breakdown=mem, step_time_s=best.step_s, images_per_s=best.images_per_s, step_breakdown=steps,
        candidates=cands, trace=("cached (traced in " if cached else "traced in ") + f"{p.trace_s:.1f} s"
        + (")" if cached else ""), warnings=warnings)
