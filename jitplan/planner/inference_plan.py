"""A sampling or evaluation plan: the recipe's checkpoint sampled on your GPU, beside its reference hardware.

``jitplan plan --gpus 1xM4 --task sample`` and ``--task evaluate`` build one with :func:`make_inference_plan`
(pure: same inputs, same plan). Every number has a row with its reason; the command to run is
``jitmodel sample`` (a batch that fits at once) or ``jitmodel evaluate`` (batches, resumable, FID).

    >>> from jitplan.hardware.spec import hardware_from_flags
    >>> from jitplan.schemas import load_recipe
    >>> p = make_inference_plan(hardware_from_flags("1xM4"), load_recipe("JiT-B/16"), InferenceOptions())
    >>> p.target.dtype, p.target.batch, p.command[:2]
    ('bf16', 64, ['jitmodel', 'sample'])
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from jitmodel.config import SampleConfig
from jitmodel.counts import forward_flops_per_image, param_breakdown
from jitplan.errors import CheckFailed, UsageError
from jitplan.hardware.schema import GPUSpec, HardwareSpec
from jitplan.planner import inference as inf
from jitplan.planner.rows import fmt_bytes, fmt_duration
from jitplan.schemas import MemoryItem, PlanRow, Recipe, TimeItem

Task = Literal["sample", "evaluate"]
CKPT_BYTES_PER_PARAM = 20  # model + 2 EMAs (4 B each) + AdamW moments (8 B), fp32: what a jitmodel .pt holds


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InferenceOptions(_Strict):
    """What the user chose; None means the recipe's value (its sampler, its attention)."""

    task: Task = "sample"
    num_images: Annotated[int, Field(gt=0)] | None = None  # sample: 64, evaluate: the recipe's 50,000
    steps: Annotated[int, Field(gt=0)] | None = None
    method: Literal["heun", "euler"] | None = None
    batch: Annotated[int, Field(gt=0)] | None = None  # images per sampling batch per GPU
    attention: Literal["exact", "sdpa"] | None = None
    memory_fraction: Annotated[float, Field(gt=0.1, le=1.0)] = 0.9
    price_per_hour: Annotated[float, Field(ge=0)] | None = None  # USD per node-hour (a rented GPU)
    ckpt: str = "last.pt"


class InferenceEstimate(_Strict):
    gpus: str  # "1 x Apple M4"
    world_size: int
    dtype: Literal["bf16", "fp16", "fp32"]
    usable_memory_bytes: int  # what the GPU may use (Mac: Metal's recommended working set)
    memory_target_bytes: int
    max_batch: int
    batch: int
    memory_bytes: int  # predicted peak at ``batch``
    memory_breakdown: list[MemoryItem]
    nfe: int
    forwards_per_image: int
    seconds_per_image: float  # on one GPU
    time_breakdown: list[TimeItem]
    images_per_s: float  # all GPUs
    total_s: float  # num_images over all GPUs
    time_source: str = "prior"
    cost_usd: float | None = None  # --price-per-hour x nodes x total_s


class InferencePlan(_Strict):
    """What ``jitplan plan --task sample|evaluate`` returns (``--json``, ``--out``)."""

    kind: Literal["inference-plan"] = "inference-plan"
    schema_version: Literal[1] = 1
    task: Task
    recipe: str
    variant: str
    img_size: int
    num_images: int
    sample: SampleConfig
    hardware: HardwareSpec
    reference: InferenceEstimate
    target: InferenceEstimate
    rows: list[PlanRow]
    warnings: list[str] = Field(default_factory=list)
    command: list[str]


def autocast_dtype(gpu: GPUSpec) -> Literal["bf16", "fp16"]:
    """What ``jitmodel sample --precision auto`` picks: bf16 where the card has it, else fp16.

    On MPS bf16 needs macOS 14+ (jitmodel falls back to fp16 before that; same bytes, same modelled time).
    """
    return "bf16" if gpu.bf16 or gpu.backend == "mps" else "fp16"


def _gpus(hw: HardwareSpec) -> str:
    assert hw.gpu is not None
    return f"{hw.world_size} x {hw.gpu.name}"


def estimate(hw: HardwareSpec, recipe: Recipe, opts: InferenceOptions, s: inf.SamplerSettings,
             num_images: int) -> InferenceEstimate:
    """Memory, batch and time of ``num_images`` on ``hw`` (images shared evenly over the GPUs)."""
    gpu = hw.gpu
    if gpu is None:
        raise UsageError("a sampling plan needs a GPU: give --gpus (e.g. 1xM4 or 1xRTX3060)")
    m = recipe.train.model
    attention = opts.attention or m.attention
    dtype: Literal["bf16", "fp16", "fp32"] = autocast_dtype(gpu)
    evaluate = opts.task == "evaluate"
    kw: dict[str, Any] = dict(dtype=dtype, attention=attention, evaluate=evaluate, num_classes=m.num_classes,
              in_channels=m.in_channels)
    usable = inf.usable_memory(gpu)
    target = int(opts.memory_fraction * usable)
    cap = inf.max_batch(m.variant, m.img_size, gpu, s, memory_fraction=opts.memory_fraction, **kw)
    if cap == 0:  # fp32 holds no half-precision weight cache (2 B/param): it may fit where autocast does not
        kw["dtype"] = "fp32"
        cap = inf.max_batch(m.variant, m.img_size, gpu, s, memory_fraction=opts.memory_fraction, **kw)
        dtype = "fp32" if cap else dtype
    per_gpu = -(-num_images // hw.world_size)
    if cap == 0:
        one = inf.predict_memory(m.variant, m.img_size, gpu, s, 1, **kw).total  # fp32, the smaller
        raise CheckFailed(f"{m.variant} at {m.img_size} px does not fit {gpu.name} even one image at a time: "
                          f"{one / 1e9:.1f} GB predicted, {target / 1e9:.1f} GB usable",
                          hint="a smaller variant or image size, or a GPU with more memory")
    batch = opts.batch or min(cap, inf.GEN_BATCH_CAP, per_gpu)
    mem = inf.predict_memory(m.variant, m.img_size, gpu, s, batch, **kw)
    terms = inf.time_terms(m.variant, gpu, s, m.img_size, attention=attention, evaluate=evaluate,
                           in_channels=m.in_channels)
    per_image = sum(t.seconds for t in terms)
    total = per_gpu * per_image
    return InferenceEstimate(
        gpus=_gpus(hw), world_size=hw.world_size, dtype=dtype, usable_memory_bytes=usable, memory_target_bytes=target,
        max_batch=cap, batch=batch, memory_bytes=mem.total,
        memory_breakdown=[MemoryItem(name=i.name, bytes=i.bytes, why=i.why) for i in mem.items],
        nfe=inf.nfe_of(s), forwards_per_image=inf.forwards_per_image(s), seconds_per_image=per_image,
        time_breakdown=[TimeItem(name=t.name, seconds=t.seconds, why=t.why) for t in terms],
        images_per_s=hw.world_size / per_image, total_s=total,
        cost_usd=None if opts.price_per_hour is None else opts.price_per_hour * hw.nodes * total / 3600)


def make_inference_plan(hw: HardwareSpec, recipe: Recipe, opts: InferenceOptions) -> InferencePlan:
    """The plan for sampling (or evaluating) ``recipe``'s checkpoint on ``hw``, beside the recipe's hardware."""
    gpu = hw.gpu
    if gpu is None:
        raise UsageError("a sampling plan needs a GPU: give --gpus (e.g. 1xM4 or 1xRTX3060)")
    if gpu.backend == "mps" and hw.world_size > 1:
        raise UsageError(f"{hw.world_size} x {gpu.name}: a Mac has one GPU and MPS has no NCCL; plan --gpus "
                         f"1x{gpu.name.removeprefix('Apple ').replace(' ', '')}")
    t = recipe.train
    sc = t.sample.model_copy(update={k: v for k, v in (("steps", opts.steps), ("method", opts.method)) if v})
    s = inf.SamplerSettings(method=sc.method, steps=sc.steps, cfg=sc.cfg, interval_min=sc.interval_min,
                            interval_max=sc.interval_max, mode=sc.mode)
    n = opts.num_images or (t.eval.num_images if opts.task == "evaluate" else 64)
    ref = estimate(recipe.hardware, recipe, opts.model_copy(update={"batch": None, "price_per_hour": None}), s, n)
    tgt = estimate(hw, recipe, opts, s, n)
    rows = _rows(hw, recipe, opts, sc, n, ref, tgt)
    warnings = []
    if tgt.batch > tgt.max_batch:
        warnings.append(f"batch {tgt.batch} is above the {tgt.max_batch} predicted to fit: expect an out-of-memory "
                        "error or (on a Mac) paging")
    if gpu.backend == "mps":
        warnings.append("MPS: one process, no torch.compile, no NCCL; times are priors until a run on this Mac "
                        "measures them (jitmodel prints images_per_s)")
    return InferencePlan(task=opts.task, recipe=recipe.slug, variant=t.model.variant, img_size=t.model.img_size,
                         num_images=n, sample=sc, hardware=hw, reference=ref, target=tgt, rows=rows,
                         warnings=warnings, command=command(hw, opts, sc, n, tgt.batch, tgt.dtype))


def command(hw: HardwareSpec, opts: InferenceOptions, sc: SampleConfig, n: int, batch: int,
            dtype: str = "bf16") -> list[str]:
    """``jitmodel sample`` when every image fits one batch, else ``jitmodel evaluate`` (batched, resumable)."""
    assert hw.gpu is not None
    device = "mps" if hw.gpu.backend == "mps" else "cuda"
    sampler = ["--sampler", sc.method, "--steps", str(sc.steps), "--cfg", f"{sc.cfg:g}",
               "--interval", f"{sc.interval_min:g},{sc.interval_max:g}", "--device", device]
    sampler += ["--precision", "fp32"] if dtype == "fp32" else []
    if opts.task == "sample" and n <= batch and hw.world_size == 1:
        return ["jitmodel", "sample", "--ckpt", opts.ckpt, "--random", "--n", str(n), *sampler, "--out", "samples.png"]
    head = (["torchrun", "--nproc-per-node", str(hw.gpus_per_node), "-m", "jitmodel"] if hw.world_size > 1
            else ["jitmodel"])
    argv = [*head, "evaluate", "--ckpt", opts.ckpt, "--out-dir", "eval" if opts.task == "evaluate" else "samples",
            "--num-images", str(n), "--batch", str(batch), *sampler]
    return argv + (["--ref-stats", "jit_in256_stats.npz"] if opts.task == "evaluate" else [])


def _rows(hw: HardwareSpec, recipe: Recipe, opts: InferenceOptions, sc: SampleConfig, n: int,
          ref: InferenceEstimate, tgt: InferenceEstimate) -> list[PlanRow]:
    gpu, rgpu, m = hw.gpu, recipe.hardware.gpu, recipe.train.model
    assert gpu is not None and rgpu is not None
    pb = param_breakdown(m.variant, m.img_size, m.num_classes, m.in_channels)
    rows: list[tuple[str, str, str, str]] = []
    add = rows.append
    mac = gpu.backend == "mps"
    add(("GPUs", ref.gpus, tgt.gpus, (f"Apple silicon, {gpu.gpu_cores}-core GPU (MPS), {gpu.fp32_tflops:g} TFLOPS FP32"
         if mac else f"{gpu.bf16_tflops:g} TFLOPS bf16") + f", {gpu.mem_bw_gbs or 0:g} GB/s (sources: plan --list-gpus "
         "--wide)"))
    add(("usable GPU memory", fmt_bytes(ref.usable_memory_bytes), fmt_bytes(tgt.usable_memory_bytes),
         (f"Metal's recommendedMaxWorkingSetSize: {tgt.usable_memory_bytes / gpu.memory_bytes:.0%} of "
          f"{gpu.memory_bytes / 2**30:.0f} GiB unified memory (state yours: --gpus 1xM4-24GB or --gpu-mem 24GiB); "
          "PyTorch allows 1.7x this (PYTORCH_MPS_HIGH_WATERMARK_RATIO) while macOS pages to swap")
         if mac else "memory as NVML reports it, per GPU"))
    fwd_gflop = forward_flops_per_image(m.variant, m.img_size) / 1e9
    add(("model", m.variant, m.variant, f"{pb.total / 1e6:.2f}M params; {fwd_gflop:.1f}"
         f" GFLOP per forward at {m.img_size} px"))
    add(("task", f"{opts.task} {n:,} images", f"{opts.task} {n:,} images",
         "FID/IS over the images (jitmodel evaluate --ref-stats)" if opts.task == "evaluate"
         else "images to a folder or a grid (--num-images)"))
    guided = f"cfg {sc.cfg:g} on t in ({sc.interval_min:g}, {sc.interval_max:g})" if sc.cfg != 1 else "no guidance"
    add(("sampler", f"{sc.method} {sc.steps} steps", f"{sc.method} {sc.steps} steps",
         f"NFE {tgt.nfe}; {guided}, {sc.mode} mode: {tgt.forwards_per_image} network forwards per image"))
    fp32 = "fp32 (no autocast): the half-precision weight cache does not fit; " if tgt.dtype == "fp32" else ""
    add(("precision", f"{ref.dtype} autocast", "fp32" if fp32 else f"{tgt.dtype} autocast",
         fp32 + ("bf16 needs macOS 14+ on MPS (fp16 before; emulated through FP32 on M1/M2); weights stay fp32"
                 if mac else "bf16 where the card has it, else fp16; weights stay fp32")))
    cap = f"min(largest that fits {tgt.max_batch}, {inf.GEN_BATCH_CAP}, images per GPU)"
    add(("batch per GPU", str(ref.batch), str(tgt.batch),
         f"{'--batch-per-gpu' if opts.batch else cap}"
         f"; CFG runs {2 * tgt.batch if tgt.forwards_per_image > tgt.nfe and sc.mode == 'fast' else tgt.batch} "
         "images per forward"))
    add(("memory per GPU", _mem(ref), _mem(tgt), f"predicted peak; target {fmt_bytes(tgt.memory_target_bytes)} "
         f"({opts.memory_fraction:.0%} of usable); see the breakdown"))
    add(("host RAM to load", fmt_bytes(4 * pb.total), fmt_bytes(4 * pb.total),
         f"the EMA's fp32 copy on the CPU before it moves to the GPU; the "
         f"{CKPT_BYTES_PER_PARAM * pb.trainable / 1e9:.1f}"
         f" GB file (model + 2 EMAs + AdamW, {CKPT_BYTES_PER_PARAM} B/param) is memory-mapped, not read"
         + ("; on a Mac the same unified memory, freed before sampling" if mac else "")))
    add(("time per image (one GPU)", f"{ref.seconds_per_image:.3g} s", f"{tgt.seconds_per_image:.3g} s",
         " + ".join(f"{i.name} {i.seconds:.3g} s" for i in tgt.time_breakdown) + f"; {tgt.time_source}"))
    add(("images/s", f"{ref.images_per_s:.3g}", f"{tgt.images_per_s:.3g}", f"all GPUs; {tgt.time_source}"))
    add((f"time for {n:,} images", fmt_duration(ref.total_s), fmt_duration(tgt.total_s),
         f"{n:,} images / {tgt.world_size} GPU(s) x {tgt.seconds_per_image:.3g} s"))
    add(("cost", "-", "-" if tgt.cost_usd is None else f"${tgt.cost_usd:,.2f}",
         "give --price-per-hour (a rented GPU)" if tgt.cost_usd is None else "--price-per-hour x nodes x time"))
    return [PlanRow(quantity=q, reference=a, target=b, why=w) for q, a, b, w in rows]


def _mem(e: InferenceEstimate) -> str:
    return f"{fmt_bytes(e.memory_bytes)}, {e.memory_bytes / e.usable_memory_bytes:.0%}"
