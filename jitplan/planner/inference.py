"""Memory and time of sampling (and FID evaluation) from a checkpoint on one GPU: CUDA or Apple silicon (MPS).

Pure functions, no torch. What ``jitmodel sample`` / ``jitmodel evaluate`` hold on the device while sampling
(docs/apple.md derives each constant):

    weights        one set of weights (the EMA the sampler uses), fp32 as jitmodel keeps them
    autocast cache half-precision copies of every Linear/conv weight (autocast caches them: the loaded
                   parameters keep requires_grad), 2 B/param, none in fp32
    activations    one inference forward, no autograd: only one block's transients are alive at a time, so
                   the largest block counts, not their sum; the batched CFG forward doubles the batch
    sampler state  the ODE state z, the Heun predictor, the first velocity and the batched input, fp32
    inception      (evaluate) the FID Inception-v3's weights

The activation constants are fitted to a traced forward of jitmodel's real denoiser (FakeTensorMode +
MemTracker, ``benchmarks/bench_infer_memory.py``). Time per image is forwards per image x one forward, the
forward from jitplan.planner.timing on CUDA cards and from the Apple GPU's FP32 ALU rate on MPS.

    >>> from jitplan.hardware.catalog import lookup
    >>> m4 = lookup("M4")
    >>> round(usable_memory(m4) / 2**30, 2)  # Metal's recommendedMaxWorkingSetSize on 16 GiB: 2/3
    10.67
    >>> s = SamplerSettings(steps=50, cfg=2.9, interval_min=0.1)
    >>> nfe_of(s), forwards_per_image(s)  # 99 evaluations; 11 of them at t <= 0.1 run without guidance
    (99, 187)
    >>> max_batch("JiT-B/16", 256, m4, s, dtype="bf16")  # images per sampling batch within 0.9 x 10.67 GiB
    302
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from jitmodel.counts import forward_flops_per_image, param_breakdown, seq_lens
from jitmodel.variants import Variant, get_variant
from jitplan.hardware.schema import GPUSpec
from jitplan.planner import timing
from jitplan.planner.memory import ALLOCATOR_HEADROOM, CUDA_CONTEXT_BYTES

# ---- memory (bytes) --------------------------------------------------------------------------------------
# Metal's recommendedMaxWorkingSetSize, the GPU's share of unified memory, as reported on real Macs: 2/3 of
# RAM up to 32 GiB (16 GiB -> 10922.67 MiB, llama-cpp-python #687; 32 GiB -> 21845.34 MiB, ollama #434) and
# 3/4 above (64 GiB -> 49152 MiB, llama.cpp #1870; 96 GiB -> 73728 MiB, llama.cpp #3213). Between 32 and
# 64 GiB [judgement: 3/4]. PyTorch's MPS allocator refuses allocations past PYTORCH_MPS_HIGH_WATERMARK_RATIO
# (default 1.7) x this; between 1x and 1.7x macOS pages to swap, so the plan targets 1x.
WORKING_SET_SMALL, WORKING_SET_LARGE, WORKING_SET_SPLIT = 2 / 3, 3 / 4, 32 * 2**30
# Per sample of one inference forward (the forward batch), fitted to traced forwards (bench_infer_memory.py,
# JiT-B/16 256 px exact and sdpa, batch 2 and 8, 2026-12-02): bytes per (token x hidden) of the longest block
# in half-precision autocast (fp32 without autocast), and per (head x query x key) of that block for the
# exact attention's fp32 probabilities and their half copy (sdpa: none).
C_TOKEN = {"half": 32.6, "fp32": 38.6}
C_ATTN = {"exact": 5.8, "sdpa": 0.0}
# The sampler's fp32 image tensors per image while a forward runs: z, the first velocity, the Heun predictor
# and the two halves of the batched cond+uncond input (jitmodel.sample.sample), 4 B each.
C_SAMPLER_IMAGE = 5 * 4.0
BYTES_AUTOCAST_CACHE = 2
# FID Inception-v3 (pytorch-fid's weights, 23.9M params, fp32) and its inference activations per image at
# 299 px [judgement: the largest pair of consecutive feature maps, ~12 MB].
INCEPTION_PARAMS = 23_900_000
INCEPTION_ACT_PER_IMAGE = 12e6

# ---- time -----------------------------------------------------------------------------------------------
# Apple GPUs have no tensor cores; half precision runs at the FP32 ALU rate on M1-M4. Fraction of that peak
# an eager PyTorch-MPS forward reaches on its matmuls [judgement: 0.5; MPSGraph GEMMs reach more on large
# shapes, per-op dispatch and unfused kernels lose some]. Calibrate with a measured run when one exists.
ETA_MPS = 0.5
# Inception-v3: 5.71 GMAC per 299 px image (torchvision's model table) = 11.4 GFLOP, fp32 convolutions at
# the fp32 rate x timing.ETA_FP32 (CUDA) or ETA_MPS (Apple).
INCEPTION_FLOPS = 2 * 5.71e9
# PNG encode (jitmodel writes every image) and decode (FID reads them back), seconds per megapixel on one CPU
# core: PIL measured 14-17 ms write, 1.3-2.8 ms read per 256 px image on this project's shared x86 core
# (2026-12-02); a desktop core is faster [judgement: 0.1 s/MP write, 0.03 s/MP read].
PNG_WRITE_S_PER_MP, PNG_READ_S_PER_MP = 0.1, 0.03
GEN_BATCH_CAP = 128  # the recipe's gen_batch: larger batches gain little once the GPU is busy


@dataclass(frozen=True)
class SamplerSettings:
    """The sampler as jitmodel.config.SampleConfig describes it (kept torch-free here)."""

    method: str = "heun"
    steps: int = 50
    cfg: float = 1.0
    interval_min: float = 0.0
    interval_max: float = 1.0
    mode: str = "fast"


def _f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def _grid(steps: int) -> list[float]:
    """torch.linspace(0, 1, steps + 1) in fp32: the first half from 0 up, the second from 1 down (ATen)."""
    n = steps + 1
    step = _f32(1.0 / steps)
    half = n // 2
    return [_f32(_f32(step * i)) if i < half else _f32(1.0 - _f32(step * (n - 1 - i))) for i in range(n)]


def nfe_of(s: SamplerSettings) -> int:
    """Velocity evaluations per image (Heun's last interval is Euler): timing.nfe."""
    return timing.nfe(s.steps, s.method)


def forwards_per_image(s: SamplerSettings) -> int:
    """Network forwards per image as jitmodel.sample counts them (a batched cond+uncond pass is 2)."""
    if s.method not in ("heun", "euler") or s.steps < 1:
        raise ValueError(f"sampler must be heun or euler with steps >= 1, got {s.method} {s.steps}")
    grid = _grid(s.steps)
    lo, hi = _f32(s.interval_min), _f32(s.interval_max)
    guided = [t < hi and (s.interval_min == 0 or t > lo) and s.cfg != 1.0 for t in grid]
    pts = [j for i in range(s.steps - 1) for j in ((i, i + 1) if s.method == "heun" else (i,))] + [s.steps - 1]
    if s.mode == "exact":
        return 2 * len(pts)
    return sum(2 if guided[i] else 1 for i in pts)


def forward_batch(s: SamplerSettings, batch: int) -> int:
    """Images in the largest network call: 2 x batch for the batched cond+uncond pass (fast mode with CFG)."""
    return 2 * batch if s.mode == "fast" and forwards_per_image(s) > nfe_of(s) else batch


# ---- memory ---------------------------------------------------------------------------------------------
def usable_memory(gpu: GPUSpec) -> int:
    """Bytes the GPU may use: all of a CUDA card; Metal's recommended working set of a Mac's unified memory."""
    if gpu.backend != "mps":
        return gpu.memory_bytes
    frac = WORKING_SET_SMALL if gpu.memory_bytes <= WORKING_SET_SPLIT else WORKING_SET_LARGE
    return int(gpu.memory_bytes * frac)


def _v(variant: str | Variant) -> Variant:
    return variant if isinstance(variant, Variant) else get_variant(variant)


def half(dtype: str) -> bool:
    return dtype in ("bf16", "fp16")


@dataclass(frozen=True)
class Item:
    name: str
    bytes: int
    why: str


def weight_items(variant: str | Variant, img_size: int, dtype: str, num_classes: int = 1000,
                 in_channels: int = 3) -> list[Item]:
    """The weights the sampler holds: one fp32 set and, under autocast, the half-precision cache."""
    pb = param_breakdown(_v(variant), img_size, num_classes, in_channels)
    items = [Item("weights", 4 * pb.total, f"one set (the sampler's EMA), fp32: {pb.total / 1e6:.2f}M params x 4 B")]
    if half(dtype):
        items.append(Item("autocast weight cache", BYTES_AUTOCAST_CACHE * pb.matmul,
                          f"{dtype} copies of every Linear/conv weight, 2 B/param (kept while autocast is on)"))
    return items


def activation_per_forward_sample(variant: str | Variant, img_size: int, *, attention: str = "exact",
                                  dtype: str = "bf16") -> float:
    """Bytes per sample of one inference forward: the longest block's transients (no autograd)."""
    v = _v(variant)
    s = max(seq_lens(v, img_size))
    return C_TOKEN["half" if half(dtype) else "fp32"] * v.hidden * s + C_ATTN[attention] * v.heads * s * s


def forward_activation_bytes(variant: str | Variant, img_size: int, forward_images: int, *,
                             attention: str = "exact", dtype: str = "bf16") -> int:
    """Activation bytes of one forward over ``forward_images`` images (bench_infer_memory.py compares)."""
    return int(round(forward_images * activation_per_forward_sample(variant, img_size, attention=attention,
                                                                   dtype=dtype)))


@dataclass(frozen=True)
class MemoryEstimate:
    batch: int
    items: tuple[Item, ...]
    total: int


def predict_memory(variant: str | Variant, img_size: int, gpu: GPUSpec, s: SamplerSettings, batch: int, *,
                   dtype: str = "bf16", attention: str = "exact", evaluate: bool = False, num_classes: int = 1000,
                   in_channels: int = 3) -> MemoryEstimate:
    """Peak bytes on the device while sampling ``batch`` images at a time (and scoring them, ``evaluate``)."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    items = weight_items(variant, img_size, dtype, num_classes, in_channels)
    fb = forward_batch(s, batch)
    per = activation_per_forward_sample(variant, img_size, attention=attention, dtype=dtype)
    gen = int(round(fb * per + batch * C_SAMPLER_IMAGE * in_channels * img_size**2))
    why = (f"{fb} x {per / 1e6:.1f} MB per forward sample ({'2 x ' if fb > batch else ''}{batch} images: "
           f"{'batched cond+uncond' if fb > batch else 'one branch per call'}; {attention} attention) + "
           f"{batch} x {C_SAMPLER_IMAGE * in_channels * img_size**2 / 1e6:.1f} MB sampler state")
    if evaluate:
        items.append(Item("inception weights", 4 * INCEPTION_PARAMS, "FID Inception-v3, fp32, loaded before "
                          "generation"))
        score = int(batch * INCEPTION_ACT_PER_IMAGE)
        if score > gen:  # scoring runs after generation: the larger phase is the peak
            gen, why = score, f"scoring: {batch} x {INCEPTION_ACT_PER_IMAGE / 1e6:.0f} MB Inception activations"
    items.append(Item("activations", gen, why))
    tensors = sum(i.bytes for i in items)
    items.append(Item("allocator headroom", int(ALLOCATOR_HEADROOM * tensors),
                      f"{ALLOCATOR_HEADROOM:.0%} of the tensor bytes: rounding, fragmentation"))
    if gpu.backend != "mps":
        items.append(Item("cuda context", CUDA_CONTEXT_BYTES, "per process, outside the allocator"))
    return MemoryEstimate(batch=batch, items=tuple(items), total=sum(i.bytes for i in items))


def max_batch(variant: str | Variant, img_size: int, gpu: GPUSpec, s: SamplerSettings, *, dtype: str = "bf16",
              attention: str = "exact", evaluate: bool = False, memory_fraction: float = 0.9,
              limit: int = 1 << 14, **kw: int) -> int:
    """The largest sampling batch whose predicted peak fits ``memory_fraction`` x the usable memory (0: none)."""
    target = memory_fraction * usable_memory(gpu)

    def fits(b: int) -> bool:
        return predict_memory(variant, img_size, gpu, s, b, dtype=dtype, attention=attention, evaluate=evaluate,
                              **kw).total <= target

    if not fits(1):
        return 0
    lo, hi = 1, limit
    if fits(hi):
        return hi
    while hi - lo > 1:  # the prediction grows with the batch: binary search
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


# ---- time -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Term:
    name: str
    seconds: float  # per image
    why: str


def forward_terms(variant: str | Variant, gpu: GPUSpec, img_size: int = 256, *, attention: str = "exact",
                  in_channels: int = 3) -> list[Term]:
    """One network forward of one image, term by term; on CUDA they add up to timing.forward_time_per_image."""
    v = _v(variant)
    lens = seq_lens(v, img_size)
    qk = sum(2.0 * s * s * v.hidden for s in lens) if attention == "exact" else 0.0
    mm = forward_flops_per_image(v, img_size, in_channels) - qk
    traffic = timing.FORWARD_TRAFFIC_SHARE * (timing.TRAFFIC_TOKEN * v.hidden * sum(lens)
                                              + timing.TRAFFIC_ATTN[attention] * v.heads * sum(s * s for s in lens))
    if gpu.backend == "mps":
        rate = (gpu.fp32_tflops or gpu.bf16_tflops) * 1e12 * ETA_MPS
        mm_rate = fp32_rate = rate
        how = f"{gpu.fp32_tflops or gpu.bf16_tflops:g} TFLOPS FP32 ALUs x {ETA_MPS} (no tensor cores)"
    else:
        eta = timing.ETA_TENSOR.get(gpu.gpu_class, timing.ETA_TENSOR["custom"])
        mm_rate = gpu.bf16_tflops * 1e12 * eta * timing.INFER_VS_TRAIN
        fp32_rate = (gpu.fp32_tflops or gpu.bf16_tflops / 2) * 1e12 * timing.ETA_FP32
        how = f"{gpu.bf16_tflops:g} TFLOPS x {eta * timing.INFER_VS_TRAIN:.2f}"
    bw = (gpu.mem_bw_gbs or gpu.bf16_tflops * 10) * 1e9 * timing.ETA_BW
    terms = [Term("matmuls", mm / mm_rate, f"{mm / 1e9:.1f} GFLOP at {how}")]
    if qk:
        terms.append(Term("fp32 attention", qk / fp32_rate, f"Q K^T in fp32, {qk / 1e9:.2f} GFLOP"))
    terms.append(Term("elementwise traffic", traffic / bw, f"{traffic / 1e9:.2f} GB through {bw / 1e9:.0f} GB/s"))
    if gpu.backend != "mps":  # the training planner's inference forward is the authority on CUDA cards
        whole = timing.forward_time_per_image(v, gpu, img_size=img_size, in_channels=in_channels, attention=attention)
        rest = whole - sum(t.seconds for t in terms)
        if rest > 1e-12 * whole:
            terms.append(Term("other", rest, "further terms of jitplan.planner.timing's inference forward"))
        elif rest < 0:
            terms = [Term(t.name, t.seconds * whole / (whole - rest), t.why) for t in terms]
    return terms


def inception_s_per_image(gpu: GPUSpec) -> float:
    fp32 = (gpu.fp32_tflops or gpu.bf16_tflops / 2) * 1e12
    return INCEPTION_FLOPS / (fp32 * (ETA_MPS if gpu.backend == "mps" else timing.ETA_FP32))


def time_terms(variant: str | Variant, gpu: GPUSpec, s: SamplerSettings, img_size: int = 256, *,
               attention: str = "exact", evaluate: bool = False, in_channels: int = 3) -> list[Term]:
    """Seconds per image on one GPU: the forwards, PNG writing and (``evaluate``) the FID pass."""
    fwd = forward_terms(variant, gpu, img_size, attention=attention, in_channels=in_channels)
    one = sum(t.seconds for t in fwd)
    fpi = forwards_per_image(s)
    mp = img_size * img_size / 1e6
    terms = [Term("network forwards", fpi * one, f"{fpi} forwards x {one * 1e3:.1f} ms ("
                  + " + ".join(f"{t.name} {t.seconds * 1e3:.1f}" for t in fwd) + " ms)"),
             Term("png write", PNG_WRITE_S_PER_MP * mp, f"{PNG_WRITE_S_PER_MP:g} s/MP on one CPU core")]
    if evaluate:
        terms.append(Term("inception (FID)", inception_s_per_image(gpu), f"{INCEPTION_FLOPS / 1e9:.1f} GFLOP fp32 "
                          "at 299 px"))
        terms.append(Term("png read", PNG_READ_S_PER_MP * mp, f"{PNG_READ_S_PER_MP:g} s/MP, images read back"))
    return terms
