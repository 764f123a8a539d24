"""Bounds before work: what the trainer will hold in memory at start, checked before anything is allocated.

:func:`start_memory` is pure (no torch): from the model, the micro-batch and the dataset kind it gives a
*floor* of the bytes one rank holds at its first step, split into host and device:

- the dataset held in memory (``digits`` keeps every image at the model's size, twice while it is built:
  1,797 x H x W x (1 + channels) bytes; ``imagefolder`` reads images per item: 0 here, the DataLoader's
  workers are doctor C7/C8's and the planner's);
- the model state: fp32 weights, gradients, AdamW's two moments and one fp32 copy per EMA (EMAs on the
  host with ``memory.ema_device: cpu``), plus the frozen ``pos_embed``;
- one micro-batch's activations: half the planner's calibrated 80 B per (token x hidden x block) (the
  floor), plus the fp32 attention scores of the exact path (4 B per head x query x key) and 16 B per
  input pixel-channel;
- the torch runtime of a process (0.25 GB).

Floors, not predictions (the planner's memory model predicts): a run this refuses cannot fit, so the check
never stops a run that would have trained. ``check_start`` compares them with what this machine has and
raises ValueError with the numbers; the trainer calls it before it builds its dataset.

    >>> m = start_memory("JiT-Tiny/4", 4096, 2, data_kind="digits", device="cpu")
    >>> round(m.dataset_bytes / 1e9), m.activation_bytes > 1e14  # 1,048,576 tokens: 4 TB of scores a block
    (121, True)
    >>> start_memory("JiT-B/16", 256, 32, data_kind="imagefolder", device="cuda").host_bytes < 1e9
    True
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from jitmodel.config import TrainConfig
from jitmodel.counts import param_breakdown, seq_lens
from jitmodel.variants import get_variant

GB = 1e9
# A decoded training image over this many pixels is refused from its header (the verify manifest and the
# trainer): 50 MP is 10x ImageNet's largest photo (~12 MP) and decodes to 150 MB RGB; PIL's own guard
# (89 MP warning, 179 MP error) let a 12000x12000 PNG (144 MP) take 1.9 GB of RSS.
MAX_PIXELS = 50_000_000
DIGITS_IMAGES = 1797  # scikit-learn's handwritten digits
RUNTIME_BYTES = int(0.25 * GB)  # torch imported, nothing allocated (RSS of an idle trainer process)
ACT_BLOCK_FLOOR = 40.0  # bytes per (token x hidden x block) per sample: half the planner's traced 80.3
ATTN_EXACT_FLOOR = 4.0  # fp32 scores per (head x query x key) per block per sample (the exact path)
IMAGE_FLOOR = 16.0  # bytes per input pixel-channel per sample (x, noise, z, target, prediction)
BYTES_STATE = 4 + 4 + 8  # fp32 weights, gradients, AdamW exp_avg + exp_avg_sq
BYTES_EMA = 4


@dataclass(frozen=True)
class StartMemory:
    """A floor of one rank's bytes at its first step. ``device`` is where the model runs."""

    device: str  # "cuda", "cpu" or "mps" (mps shares the host's memory)
    dataset_bytes: int
    state_bytes: int  # on the device (weights, grads, optimizer, EMAs kept there)
    ema_host_bytes: int  # EMAs kept on the host (memory.ema_device: cpu)
    activation_bytes: int
    runtime_bytes: int = RUNTIME_BYTES

    @property
    def device_bytes(self) -> int:
        return self.state_bytes + self.activation_bytes if self.device == "cuda" else 0

    @property
    def host_bytes(self) -> int:
        on_host = self.state_bytes + self.activation_bytes if self.device != "cuda" else 0
        return self.runtime_bytes + self.dataset_bytes + self.ema_host_bytes + on_host

    def parts(self) -> str:
        return (f"dataset {self.dataset_bytes / GB:.1f} GB, model state {self.state_bytes / GB:.1f} GB, "
                f"one micro-batch's activations {self.activation_bytes / GB:.1f} GB")


def start_memory(variant: str, img_size: int, micro_batch: int, *, data_kind: str, device: str,
                 in_channels: int = 3, num_classes: int = 1000, attention: str = "exact", num_emas: int = 2,
                 ema_on_host: bool = False) -> StartMemory:
    """The floor of one rank's memory at its first step (pure; see the module docstring for each term)."""
    v = get_variant(variant)
    b = param_breakdown(v, img_size, num_classes, in_channels)
    ema = b.trainable * BYTES_EMA * num_emas
    state = b.trainable * BYTES_STATE + b.pos_embed * 4 + (0 if ema_on_host else ema)
    lens = seq_lens(v, img_size)
    per_sample = ACT_BLOCK_FLOOR * sum(lens) * v.hidden + IMAGE_FLOOR * img_size * img_size * in_channels
    if attention == "exact":
        per_sample += ATTN_EXACT_FLOOR * v.heads * sum(s * s for s in lens)
    dataset = DIGITS_IMAGES * img_size * img_size * (1 + in_channels) if data_kind == "digits" else 0
    return StartMemory(device=device, dataset_bytes=dataset, state_bytes=int(state),
                       ema_host_bytes=ema if ema_on_host else 0, activation_bytes=int(per_sample * micro_batch))


def refusal(m: StartMemory, what: str, host_free: int | None, device_free: int | None) -> str | None:
    """Why ``m`` cannot fit (one line, with the numbers), or None. Unknown free memory never refuses."""
    for where, need, free in (("host", m.host_bytes, host_free), ("GPU", m.device_bytes, device_free)):
        if free is not None and need > free:
            return (f"{what} needs at least {need / GB:.1f} GB of {where} memory at start ({m.parts()}) but "
                    f"{free / GB:.1f} GB is free: lower model.img_size or batch_per_gpu")
    return None


def usable_cpus() -> int:
    """CPUs this process may run on (affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def host_free_bytes(root: str = "/") -> int | None:
    """Memory this process can still take: /proc/meminfo's MemAvailable, capped by a cgroup v2 limit."""
    free = None
    try:
        for line in Path(root, "proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        cg = Path(root, "sys/fs/cgroup")
        limit = (cg / "memory.max").read_text().strip()
        if limit != "max":
            room = int(limit) - int((cg / "memory.current").read_text().strip())
            free = room if free is None else min(free, room)
    except (OSError, ValueError):
        pass
    return free


def check_start(cfg: object, world_size: int, device: object) -> None:
    """The trainer's start check: ValueError (one line, with the numbers) when the floor of what this rank
    holds at its first step is over the free host (or GPU) memory. ``cfg`` is a TrainConfig."""

    assert isinstance(cfg, TrainConfig)
    kind = getattr(device, "type", str(device))
    mc = cfg.model
    if mc.factory is not None:  # a user's network: its floor is jitplan's traced plan (docs/models.md), not JiT's
        return
    m = start_memory(mc.variant, mc.img_size, cfg.batch_per_gpu, data_kind=cfg.data.kind, device=kind,
                     in_channels=mc.in_channels, num_classes=mc.num_classes, attention=mc.attention,
                     num_emas=len(cfg.diffusion.ema_decays), ema_on_host=cfg.memory.ema_device == "cpu")
    device_free = None
    if kind == "cuda":
        import torch  # lazy: start-up

        device_free = torch.cuda.mem_get_info(device)[0]  # type: ignore[arg-type]  # a torch.device
    why = refusal(m, f"{mc.variant} at {mc.img_size} px with micro-batch {cfg.batch_per_gpu}", host_free_bytes(),
                  device_free)
    if why:
        raise ValueError(why)
