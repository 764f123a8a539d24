"""From a Plan to a Vast.ai offer query and the image to run (ranking is cloud-neutral: providers/ranking.py).

Pure functions: no SDK, no network.

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

from jitplan.errors import UsageError
from jitplan.providers import OfferQuery

if TYPE_CHECKING:  # pragma: no cover
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
