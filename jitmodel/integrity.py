"""Checkpoint integrity: a sha256 of each tensor payload, stored in the checkpoint and checked on load;
and the room a checkpoint needs on disk.

The digests are a plain entry of the checkpoint dict (so it stays self-describing and weights-only)::

    "digests": {"algorithm": "sha256", "payloads": {"model": "<hex>", "ema1": ..., "optimizer": ..., "rng": ...}}

Each payload's digest covers, in sorted key order, every tensor inside it: its key path, dtype, shape and
bytes. A flipped byte in any tensor makes :func:`verify` raise one line naming the file and the payload.
Checkpoints written before digests existed load as before; ``integrity`` then says "unverified".

    >>> import torch
    >>> ck = {"model": {"w": torch.ones(2)}, "step": 1}
    >>> ck["digests"] = digests(ck)
    >>> verify(ck, "x.pt")
    'verified'
    >>> ck["model"]["w"][0] = 7.0
    >>> try:
    ...     verify(ck, "x.pt")
    ... except CheckpointCorrupt as e:
    ...     print(e)
    x.pt is corrupt: its 'model' tensors do not match the digest saved with them
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PAYLOADS = ("model", "ema1", "ema2", "optimizer", "rng", "scaler")
_OVERHEAD = 1 << 20  # pickle, zip headers, 64-byte alignment of each storage


class CheckpointCorrupt(ValueError):
    """The file's tensors differ from the digests saved with them (one line)."""


class CheckpointNoSpace(OSError):
    """A checkpoint would not fit, or its write failed for lack of room (one line)."""


def _tensors(obj: Any, prefix: str = ""):
    import torch

    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, Mapping):
        for k in sorted(obj, key=str):
            yield from _tensors(obj[k], f"{prefix}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}/{i}")


def payload_digest(obj: Any) -> str:
    import torch

    h = hashlib.sha256()
    for key, t in _tensors(obj):
        t = t.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{key}|{t.dtype}|{t.numel()}\n".encode())
        if t.numel():
            h.update(t.view(torch.uint8).numpy())
    return h.hexdigest()


def digests(ck: Mapping[str, Any]) -> dict[str, Any]:
    return {"algorithm": "sha256",
            "payloads": {k: payload_digest(ck[k]) for k in PAYLOADS if ck.get(k) is not None}}


def verify(ck: Mapping[str, Any], path: str | os.PathLike) -> str:
    """'verified' or 'unverified' (no digests: an older checkpoint); CheckpointCorrupt on a mismatch."""
    d = ck.get("digests")
    if not isinstance(d, Mapping) or not isinstance(d.get("payloads"), Mapping):
        return "unverified"
    if d.get("algorithm") != "sha256":
        raise CheckpointCorrupt(f"{path}: unknown digest algorithm {str(d.get('algorithm'))[:40]!r}")
    for name, want in d["payloads"].items():
        if name not in ck or payload_digest(ck[name]) != want:
            raise CheckpointCorrupt(f"{path} is corrupt: its {name!r} tensors do not match the digest saved "
                                    "with them")
    return "verified"


def state_fingerprint(state: Mapping[str, Any]) -> str:
    """A short sha256 over the names and exact bytes of a state dict (replica checks, tests)."""
    import torch

    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k].detach().cpu().contiguous().reshape(-1)
        h.update(k.encode())
        h.update(str(v.dtype).encode())
        h.update(v.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def nbytes(ck: Mapping[str, Any]) -> int:
    """About what torch.save will write: every tensor's bytes plus the framing."""
    return sum(t.numel() * t.element_size() for _, t in _tensors(ck)) + _OVERHEAD


def ensure_room(folder: Path, need: int, reclaim: int = 0) -> None:
    """CheckpointNoSpace (one line) unless ``folder``'s disk has ``need`` bytes (``reclaim`` about to be freed)."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # cannot tell: let the write decide
    if free + reclaim < need:
        raise CheckpointNoSpace(f"not enough disk space for a checkpoint in {folder}: needs {need:,} bytes, "
                                f"{free + reclaim:,} available; free space or point output_dir elsewhere")


def reclaimable(paths: list[Path]) -> int:
    """Bytes deleting ``paths`` frees (files with no other hard link, e.g. not last.pt)."""
    total = 0
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            continue
        if st.st_nlink == 1:
            total += st.st_size
    return total
