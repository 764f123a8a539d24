"""From a Plan to an offer query, and offers ranked by predicted cost per epoch (not only $/h).

Pure functions: no SDK, no network. The speed of each offer's GPUs comes from the planner's compute
model (``jitplan.planner.compute``: FLOPs per image / (peak bf16 x MFU prior for the GPU class) plus the
gradient all-reduce per step), so a 0.30 $/h RTX 3060 pair can lose to a 0.45 $/h RTX 4090 pair.

    >>> from jitplan.providers import Offer
    >>> image_for("2.8.0", None, "8.6")
    ('pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime', 12.8)
    >>> image_for(None, None, "12.0")[1] >= 12.8   # Blackwell needs CUDA >= 12.8
    True
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from jitplan.errors import UsageError
from jitplan.hardware.schema import GPUSpec
from jitplan.providers import Offer, OfferQuery

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from jitplan.schemas import Plan

MIB = 1024 * 1024
GB = 1000**3

# Official pytorch/pytorch runtime tags (torch, CUDA), oldest first. Seen on Docker Hub 2025-2026;
# the "-cudnn9-runtime" suffix holds for torch >= 2.4. [unverified for tags not pulled here]
PYTORCH_IMAGES: tuple[tuple[str, str], ...] = (
    ("2.4.1", "12.4"),
    ("2.5.1", "12.4"),
    ("2.6.0", "12.6"),
    ("2.7.1", "12.8"),
    ("2.8.0", "12.8"),
    ("2.9.1", "12.8"),
)
IMAGE_DISK_GB = 20.0  # the pytorch runtime image unpacked, pip caches, the code
JPEG_BYTES_PER_IMAGE = 110_000  # ImageNet-1k train: ~140 GB / 1.28 M images
DISK_HEADROOM = 1.15
GPU_RAM_SLACK = 0.97  # hosts report slightly different gpu_ram for one model (gpuhunt #32)
DEFAULT_MIN_RELIABILITY = 0.98
DEFAULT_MIN_INET_MBPS = 200.0


def _ver(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def _image(torch: str, cuda: str) -> str:
    return f"pytorch/pytorch:{torch}-cuda{cuda}-cudnn9-runtime"


def image_for(torch_version: str | None, torch_cuda: str | None, compute_capability: str | None) -> tuple[str, float]:
    """The pytorch/pytorch image matching the plan's torch (major.minor) and CUDA; returns (image, CUDA).

    Blackwell (compute capability >= 10) needs a CUDA >= 12.8 build. A torch newer than the table gets
    its own tag with the plan's CUDA (or the newest CUDA of the table).
    """
    need_cuda = (12, 8) if compute_capability and _ver(compute_capability) >= (10,) else (0,)
    rows = [r for r in PYTORCH_IMAGES if _ver(r[1]) >= need_cuda]
    if torch_version:
        want = _ver(torch_version.split("+")[0])[:2]
        same = [r for r in rows if _ver(r[0])[:2] == want]
        if torch_cuda:
            exact = [r for r in same if _ver(r[1])[:2] == _ver(torch_cuda)[:2]]
            same = exact or same
        if same:
            t, c = same[-1]
            return _image(t, c), float(c)
        if want > _ver(PYTORCH_IMAGES[-1][0])[:2]:
            cuda = torch_cuda if torch_cuda and _ver(torch_cuda) >= need_cuda else PYTORCH_IMAGES[-1][1]
            base = ".".join(str(x) for x in _ver(torch_version.split("+")[0]))
            return _image(base, cuda), float(".".join(cuda.split(".")[:2]))
    t, c = rows[-1]
    return _image(t, c), float(c)


def image_cuda(image: str) -> float | None:
    """The CUDA version in an image tag ("...:2.8.0-cuda12.8-cudnn9-runtime" -> 12.8), None if absent."""
    m = re.search(r"cuda[-_]?(\d+)\.(\d+)", image)
    return float(f"{m.group(1)}.{m.group(2)}") if m else None


def disk_gb(plan: Plan) -> float:
    """Disk to ask for: image + dataset + the checkpoints the run keeps, with headroom (fixed at create)."""
    train, est = plan.train, plan.estimates
    data = 0.0
    if train.data.kind == "imagefolder" and train.data.num_images:
        data = train.data.num_images * JPEG_BYTES_PER_IMAGE
    ck = train.checkpoint
    permanent = math.ceil(train.epochs / ck.keep_every_epochs) if ck.keep_every_epochs else 0
    ckpts = est.checkpoint_bytes * (ck.keep_last + 1 + permanent)
    total = IMAGE_DISK_GB + (data + ckpts) / GB
    return float(max(16, math.ceil(total * DISK_HEADROOM)))


def _cap100(cc: str | None) -> int:
    if not cc:
        return 0
    v = _ver(cc)
    return v[0] * 100 + (v[1] * 10 if len(v) > 1 else 0)


def query_for(
    plan: Plan,
    *,
    bid: float | None = None,
    any_gpu: bool = False,
    image: str | None = None,
    min_reliability: float = DEFAULT_MIN_RELIABILITY,
    min_inet_mbps: float = DEFAULT_MIN_INET_MBPS,
) -> tuple[OfferQuery, str]:
    """The offer query a plan needs and the image to run; ``any_gpu`` accepts other models with enough memory."""
    hw = plan.hardware
    if hw.nodes != 1:
        raise UsageError(
            f"the plan is for {hw.nodes} nodes; Vast.ai instances are single machines",
            hint="plan for one node (jitplan plan --gpus NxGPU) or launch the nodes with --ssh",
        )
    if hw.gpu is None or hw.gpus_per_node < 1:
        raise UsageError("the plan is for a CPU-only machine; Vast.ai rents GPUs", hint="plan with --gpus NxGPU")
    sw = hw.software
    chosen, cuda = (image, image_cuda(image)) if image else image_for(
        sw.torch_version if sw else None, sw.torch_cuda if sw else None, hw.gpu.compute_capability
    )
    if cuda is None:
        raise UsageError(f"cannot tell the CUDA version of image {image!r}", hint="use a tag containing cudaX.Y")
    if any_gpu:
        names = None
        need_mib = plan.estimates.memory_per_gpu_bytes / MIB
        cap = 800 if plan.train.precision in ("auto", "bf16") else 700  # bf16 wants Ampere or newer
    else:
        names = sorted({hw.gpu.name, *hw.gpu.aliases})
        need_mib = hw.gpu.memory_bytes / MIB * GPU_RAM_SLACK
        cap = _cap100(hw.gpu.compute_capability)
    host = hw.host
    cpus = host.cpus if host.cpus else hw.gpus_per_node * (plan.workers.per_rank + 1)
    q = OfferQuery(
        gpu_names=names,
        num_gpus=hw.gpus_per_node,
        min_gpu_ram_mib=int(need_mib),
        min_cpu_ram_mb=math.ceil(plan.estimates.host_ram_needed_bytes / 1e6),
        min_cpus=cpus,
        min_disk_gb=disk_gb(plan),
        min_cuda=cuda,
        min_compute_cap=cap,
        min_reliability=min_reliability,
        min_inet_down_mbps=min_inet_mbps,
        interruptible=bid is not None,
        bid=bid,
    )
    return q, chosen


class RankedOffer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    offer: Offer
    gpu: str | None  # catalog name, None when the model is not in the catalog
    dph: float  # what we would pay per hour
    epoch_time_s: float | None
    cost_per_epoch: float | None

    @property
    def why(self) -> str:
        if self.cost_per_epoch is None:
            return f"{self.offer.gpu_name} is not in the GPU catalog: ranked by $/h only"
        return f"{self.epoch_time_s / 3600:.2f} h/epoch x {self.dph:.3f} $/h"


def epoch_time_s(plan: Plan, gpu: GPUSpec, num_gpus: int) -> float:
    """Predicted seconds per epoch of ``plan`` on ``num_gpus`` x ``gpu`` (the planner's time model).

    The plan's effective batch is kept (keep-batch), so steps per epoch stay the same; each GPU takes its
    share of every optimizer step's images (jitplan.planner.timing).
    """
    from dataclasses import replace

    from jitplan.planner.timing import inputs_for, train_step_time

    est, train = plan.estimates, plan.train
    per_gpu = max(1, train.effective_batch(plan.hardware.world_size) // num_gpus)
    micro = min(train.batch_per_gpu, per_gpu)
    inp = replace(inputs_for(train, gpu, world_size=num_gpus), micro_batch=micro, accum=max(1, -(-per_gpu // micro)))
    return est.steps_per_epoch * train_step_time(inp).total_s


def rank(plan: Plan, offers: list[Offer], query: OfferQuery) -> list[RankedOffer]:
    """Offers that really satisfy ``query`` (RAM share, CPUs, bid floor checked here), cheapest epoch first."""
    from jitplan.hardware.catalog import match_nvml_name

    out: list[RankedOffer] = []
    for o in offers:
        if o.num_gpus != query.num_gpus or o.gpu_ram_mib < query.min_gpu_ram_mib:
            continue
        if o.cpu_ram_mb < query.min_cpu_ram_mb or o.cpus < query.min_cpus:
            continue
        if o.cuda_max_good < query.min_cuda or o.disk_space_gb < query.min_disk_gb:
            continue
        if query.bid is not None and o.min_bid is not None and o.min_bid > query.bid:
            continue
        spec = match_nvml_name(o.gpu_name, int(o.gpu_ram_mib * MIB))
        dph = o.price(query.bid)
        t = epoch_time_s(plan, spec, o.num_gpus) if spec is not None else None
        out.append(RankedOffer(
            offer=o, gpu=spec.name if spec else None, dph=dph, epoch_time_s=t,
            cost_per_epoch=dph * t / 3600 if t is not None else None,
        ))
    out.sort(key=lambda r: (r.cost_per_epoch is None, r.cost_per_epoch or 0.0, r.dph, -(r.offer.reliability or 0)))
    return out


def render(ranked: list[RankedOffer], console: Console, top: int = 5) -> None:
    """The top offers as a rich table (on the given console, usually stderr)."""
    from rich.table import Table

    t = Table(title=f"Top {min(top, len(ranked))} of {len(ranked)} Vast.ai offers (by predicted cost per epoch)")
    for col in ("#", "offer", "GPUs", "$/h", "h/epoch", "$/epoch", "RAM GB", "CPUs", "CUDA", "reliab.", "where"):
        t.add_column(col, justify="right" if col not in ("GPUs", "where") else "left")
    for i, r in enumerate(ranked[:top], 1):
        o = r.offer
        t.add_row(
            str(i), str(o.id), f"{o.num_gpus}x {o.gpu_name}", f"{r.dph:.3f}",
            f"{r.epoch_time_s / 3600:.2f}" if r.epoch_time_s is not None else "?",
            f"{r.cost_per_epoch:.3f}" if r.cost_per_epoch is not None else "?",
            f"{o.cpu_ram_mb / 1000:.0f}", f"{o.cpus:g}", f"{o.cuda_max_good:g}",
            f"{o.reliability:.3f}" if o.reliability is not None else "?", o.geolocation or "",
        )
    console.print(t)
