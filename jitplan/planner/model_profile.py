"""What one traced training step of a user's model measured (``traced_model.trace_model``), and its cache.

Pure (pydantic, no torch): a cached profile is all ``jitplan plan --model`` needs, so a repeat plan imports
neither torch nor the user's code. The cache file is named by the digest of the model's source files, the
factory, its arguments, the trace settings and torch's version (``profile_key``); a changed file is a new key.

    >>> p = ModelProfile(spec="m.py:f", digest="d" * 64, in_channels=4, input_size=32, num_classes=1000,
    ...                  params=10, trainable=10, matmul_params=8, largest_block_params=2, root_params=2, blocks=4,
    ...                  buffer_bytes=0, fixed_bytes=300, act_per_sample=100.0, act_per_sample_ckpt=40.0,
    ...                  step_peak_bytes=400, flops_per_image=1e9, traffic_per_image=1e6, batches=(8, 16),
    ...                  trace_s=1.0, torch="2.13.0")
    >>> p.forward_peak(8)
    1100
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from jitmodel.atomic import atomic_write_text

PROFILE_VERSION = 2  # 2: CPU attention FLOPs counted (traced_model.flop_counter)


class ModelProfile(BaseModel):
    """One process's traced step: counts from the module, bytes and FLOPs from the fake-tensor trace."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = PROFILE_VERSION
    spec: str  # FILE.py:factory or package.module:factory, as given
    digest: str  # jitmodel.custom.source_digest of the source files + factory + arguments
    in_channels: int
    input_size: int
    num_classes: int
    params: int  # every parameter
    trainable: int  # requires_grad (the optimizer's)
    matmul_params: int  # Linear / conv weights: what autocast caches in bf16
    largest_block_params: int  # the largest of ``module.blocks`` (FSDP2 gathers one at a time, plus the next)
    root_params: int  # parameters outside ``module.blocks`` (the sharded run's root, kept fp32)
    blocks: int  # len(module.blocks); 0 when the module has none (no checkpointing or per-block sharding)
    buffer_bytes: int
    fixed_bytes: int  # forward-peak bytes that do not grow with the batch (weights, AdamW, 2 EMAs, autocast cache)
    act_per_sample: float  # forward-peak bytes per sample (slope between the two traced batches)
    act_per_sample_ckpt: float | None  # the same with every block checkpointed (None: no blocks)
    step_peak_bytes: int  # the optimizer step's peak (weights, gradients, AdamW, EMAs), independent of the batch
    flops_per_image: float  # FlopCounterMode, forward + backward, per image
    traffic_per_image: float  # bytes in + out of every non-view aten op, per image (the time model's traffic)
    batches: tuple[int, int]  # the two micro-batches traced
    trace_s: float  # how long the trace took (wall clock)
    torch: str

    def forward_peak(self, micro_batch: int, ckpt: bool = False) -> int:
        """Tensor bytes at the forward/backward peak at ``micro_batch`` (no DDP, no accumulation)."""
        per = self.act_per_sample_ckpt if ckpt and self.act_per_sample_ckpt is not None else self.act_per_sample
        return int(self.fixed_bytes + per * micro_batch)


_VERSION_LINE = re.compile(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", re.M)


def torch_version() -> str:
    """torch's installed version without importing it: ``torch/version.py`` found on the path (0.4 ms), else
    the package metadata (importlib.metadata costs ~40 ms to import and scan: the cached plan's start-up)."""
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin:
        try:
            m = _VERSION_LINE.search((Path(spec.origin).parent / "version.py").read_text())
        except OSError:
            m = None
        if m:
            return m.group(1)
    from importlib import metadata  # lazy: start-up (only when torch/version.py is not there to read)

    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "none"


def profile_key(digest: str, batches: tuple[int, int]) -> str:
    h = hashlib.sha256(f"{PROFILE_VERSION}:{digest}:{batches}:{torch_version()}".encode()).hexdigest()
    return h[:32]


def cache_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / "models" / f"{key}.json"


def load_cached(cache_dir: Path | None, key: str) -> ModelProfile | None:
    """The cached profile, or None when absent or unreadable (a bad cache file is retraced, not an error)."""
    if cache_dir is None:
        return None
    p = cache_path(cache_dir, key)
    try:
        return ModelProfile.model_validate(json.loads(p.read_text()))
    except (OSError, ValueError):
        return None


def save_cached(cache_dir: Path, key: str, profile: ModelProfile) -> Path:
    p = cache_path(cache_dir, key)
    p.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(p, profile.model_dump_json(indent=1))
