"""Rank/world helpers: the torchrun environment, the process group, device, backend and autocast choice.

One process works without any launcher (rank 0 of 1); under torchrun the ranks come from RANK,
WORLD_SIZE and LOCAL_RANK. NCCL on CUDA, gloo otherwise.

    >>> from jitmodel.dist import DistEnv
    >>> DistEnv.from_env({}).world_size
    1
    >>> DistEnv.from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}).is_main
    False
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist

from jitmodel.precision import fp16_tensor_cores


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DistEnv:
        """Read torchrun's variables (SLURM_PROCID/SLURM_NTASKS as a fallback); one process without them."""
        env = os.environ if env is None else env

        def _int(*names: str, default: int) -> int:
            for n in names:
                if env.get(n, "") != "":
                    try:
                        return int(env[n])
                    except ValueError:
                        raise ValueError(f"environment variable {n}={env[n]!r} is not an integer") from None
            return default

        rank = _int("RANK", "SLURM_PROCID", default=0)
        world = _int("WORLD_SIZE", "SLURM_NTASKS", default=1)
        local = _int("LOCAL_RANK", "SLURM_LOCALID", default=rank)
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"rank {rank} is outside a world of size {world}")
        return cls(rank=rank, world_size=world, local_rank=local)


def pick_device(wanted: str, local_rank: int = 0) -> torch.device:
    """auto = cuda > mps > cpu. A named device that is absent is a ValueError."""
    if wanted == "auto":
        if torch.cuda.is_available():
            wanted = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            wanted = "mps"
        else:
            wanted = "cpu"
    if wanted == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but torch sees no CUDA GPU")
        n = torch.cuda.device_count()
        if local_rank >= n:
            raise ValueError(f"local rank {local_rank} needs GPU {local_rank} but only {n} are visible")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    if wanted == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' was asked for but torch sees no Apple GPU")
    return torch.device(wanted)


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA, gloo for everything else (CPU, and MPS which has no collective backend)."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_process_group(env: DistEnv, device: torch.device, timeout_s: float = 1800) -> None:
    """Join the job's process group (env:// rendezvous set up by torchrun). No-op for one process."""
    if not env.distributed or torch_dist.is_initialized():
        return
    kwargs: dict[str, Any] = {}
    if device.type == "cuda":
        kwargs["device_id"] = device  # binds NCCL to this GPU; avoids a guess in barrier()
    torch_dist.init_process_group(backend=backend_for(device), rank=env.rank, world_size=env.world_size,
                                  timeout=datetime.timedelta(seconds=timeout_s), **kwargs)


def destroy_process_group() -> None:
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def barrier() -> None:
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype (None = fp32). auto: bf16 on CUDA GPUs that have it; fp16 (with a gradient scaler)
    on CUDA GPUs without bf16 but with fp16 tensor cores (Volta/Turing: V100, T4, RTX 20xx); fp32 elsewhere.
    fp16 on the CPU is allowed (slow; tests of the scaler path) but never chosen by auto."""
    cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if precision == "auto":
        if device.type != "cuda":
            return None
        if cuda_bf16:
            return torch.bfloat16
        return torch.float16 if fp16_tensor_cores(torch.cuda.get_device_capability(device)) else None
    if precision == "bf16":
        if device.type == "cuda" and not cuda_bf16:
            raise ValueError(f"precision bf16 was asked for but {torch.cuda.get_device_name(device)} lacks bf16; "
                             "use precision: fp16 or fp32")
        return torch.bfloat16
    if precision == "fp16":
        if device.type not in ("cuda", "cpu"):
            raise ValueError(f"precision fp16 needs a CUDA GPU or the CPU (device is {device.type}); use bf16 or fp32")
        return torch.float16
    return None


def mps_bf16_supported() -> bool:
    """Whether this Mac's MPS backend takes bf16 tensors (macOS 14+; PyTorch raises a TypeError before)."""
    try:
        torch.empty(1, dtype=torch.bfloat16, device="mps")
    except (RuntimeError, TypeError):
        return False
    return True


def sampling_autocast(precision: str, device: torch.device) -> torch.dtype | None:
    """The sampler's autocast dtype (None: fp32). ``auto``: on CUDA as training (bf16 where the card has it,
    fp16 on Volta/Turing); on Apple MPS bf16 where macOS supports it (14+; the dtype the model trained in),
    else fp16; fp32 on the CPU. ValueError (one line) for a dtype the device cannot run.

        >>> sampling_autocast("auto", torch.device("cpu")) is None, sampling_autocast("fp16", torch.device("cpu"))
        (True, torch.float16)
    """
    if precision not in ("auto", "bf16", "fp16", "fp32"):
        raise ValueError(f"--precision must be auto, bf16, fp16 or fp32, got {precision!r}")
    if precision == "fp32":
        return None
    if device.type == "cuda":
        return amp_dtype(precision, device)
    if device.type == "mps":
        bf16 = mps_bf16_supported()
        if precision == "auto":
            return torch.bfloat16 if bf16 else torch.float16
        if precision == "bf16" and not bf16:
            raise ValueError("bf16 on MPS needs macOS 14 or newer; use --precision fp16 (or fp32)")
    elif precision == "auto":
        return None
    return torch.bfloat16 if precision == "bf16" else torch.float16


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` for one process."""
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * torch_dist.get_world_size()
    torch_dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks in place (identity for one process)."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.SUM)
    return t
