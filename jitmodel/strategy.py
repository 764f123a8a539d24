"""Memory strategies of the trainer: how the denoiser is wrapped for this run and where its state lives.

Plain DDP today (one full replica per rank); the home of activation checkpointing, FSDP2 sharding, EMA
placement and the fp16 gradient scaler, each a TrainConfig switch (docs/training.md).
"""

from __future__ import annotations

import torch

from jitmodel.config import TrainConfig
from jitmodel.dist import DistEnv


def wrap_model(denoiser: torch.nn.Module, cfg: TrainConfig, env: DistEnv, device: torch.device) -> torch.nn.Module:
    """The module the training step calls: the denoiser itself (one process) or its DDP wrapper."""
    if cfg.compile:
        denoiser.net.compile()  # compiles in place: state-dict keys stay net.*
    if not env.distributed:
        return denoiser
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(denoiser, device_ids=ids)


def make_scaler(amp: torch.dtype | None, device: torch.device) -> torch.amp.GradScaler | None:
    """A gradient scaler for fp16 autocast (bf16 and fp32 need none)."""
    return torch.amp.GradScaler(device.type) if amp == torch.float16 else None
