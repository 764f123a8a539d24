"""Checkpoint integrity: a sha256 of every entry of a checkpoint, stored in it and checked on load; and the
room a checkpoint needs on disk.

The digests are a plain entry of the checkpoint dict (so it stays self-describing and weights-only)::

    "digests": {"algorithm": "sha256", "covers": "all",
                "payloads": {"model": "<hex>", "ema1": ..., "step": ..., "train_config": ..., "rng": ...}}

Format 2 (``covers: all``): one digest per top-level entry, every entry but ``digests`` itself, and each
covers everything inside it: tensors (key path, dtype, shape, bytes) and plain values (key path, type,
value). So a changed step, epoch, config, class list, RNG state or format version is caught like a flipped
weight, and so is an entry added or removed. Format 1 files (written before) carry digests of the tensor
payloads only; they verify as before and say so (``detail``); their metadata is checked by
``jitmodel.checkpoint``'s semantic checks alone. Files without digests load as ``unverified``.

    >>> import torch
    >>> ck = {"model": {"w": torch.ones(2)}, "step": 1}
    >>> ck["digests"] = digests(ck)
    >>> verify(ck, "x.pt")
    'verified'
    >>> ck["step"] = -5
    >>> try:
    ...     verify(ck, "x.pt")
    ... except CheckpointCorrupt as e:
    ...     print(e)
    x.pt is corrupt: its 'step' entry does not match the digest saved with it
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

PAYLOADS_V1 = ("model", "ema1", "ema2", "optimizer", "rng", "scaler")  # what format 1 digests covered
COVERS_ALL = "all"
_OVERHEAD = 1 << 20  # pickle, zip headers, 64-byte alignment of each storage
_PLAIN = (bool, int, float, str, type(None))


class CheckpointCorrupt(ValueError):
    """The file's entries differ from the digests saved with them, or hold what no checkpoint holds (one line)."""


class CheckpointNoSpace(OSError):
    """A checkpoint would not fit, or its write failed for lack of room (one line)."""


def _tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    import torch

    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, Mapping):
        for k in sorted(obj, key=str):
            yield from _tensors(obj[k], f"{prefix}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}/{i}")


def _hash_tensor(h: Any, key: str, t: Any, with_shape: bool) -> None:
    import torch

    shape = "x".join(map(str, t.shape)) if with_shape else ""
    t = t.detach().to("cpu").contiguous().reshape(-1)
    h.update(f"{key}|{t.dtype}|{t.numel()}{'|' + shape if with_shape else ''}\n".encode())
    if t.numel():
        h.update(t.view(torch.uint8).numpy())


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """The sha256 of a file's bytes, read in 4 MiB blocks (pulled checkpoints, latent shards)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def payload_digest(obj: Any) -> str:
    """Format 1: the tensors inside ``obj`` only."""
    h = hashlib.sha256()
    for key, t in _tensors(obj):
        _hash_tensor(h, key, t, with_shape=False)
    return h.hexdigest()


def _walk(h: Any, obj: Any, key: str) -> None:
    import torch

    if isinstance(obj, torch.Tensor):
        _hash_tensor(h, key, obj, with_shape=True)
    elif isinstance(obj, Mapping):
        h.update(f"{key}|map|{len(obj)}\n".encode())
        for k in sorted(obj, key=str):
            _walk(h, obj[k], f"{key}/{type(k).__name__}:{k}")
    elif isinstance(obj, (list, tuple)):
        h.update(f"{key}|{type(obj).__name__}|{len(obj)}\n".encode())
        for i, v in enumerate(obj):
            _walk(h, v, f"{key}/{i}")
    elif isinstance(obj, _PLAIN):
        h.update(f"{key}|{type(obj).__name__}|{obj!r}\n".encode())
    else:
        raise CheckpointCorrupt(f"holds a {type(obj).__name__} at {key or '/'}, which no checkpoint holds")


def entry_digest(obj: Any) -> str:
    """Format 2: everything inside ``obj``, tensors and plain values (CheckpointCorrupt for anything else)."""
    h = hashlib.sha256()
    _walk(h, obj, "")
    return h.hexdigest()


def digests(ck: Mapping[str, Any]) -> dict[str, Any]:
    """Format 2 digests of ``ck``: one per entry (all but ``digests``)."""
    return {"algorithm": "sha256", "covers": COVERS_ALL,
            "payloads": {str(k): entry_digest(v) for k, v in ck.items() if k != "digests"}}


def verify(ck: Mapping[str, Any], path: str | os.PathLike[str], *, format_version: int | None = None) -> str:
    """'verified' or 'unverified' (no digests); CheckpointCorrupt (one line) on any mismatch.

    ``format_version`` 2 and later require digests that cover every entry; 1 accepts the tensor-only layout.
    """
    d = ck.get("digests")
    if d is None:
        return "unverified"
    if not isinstance(d, Mapping) or not isinstance(d.get("payloads"), Mapping):
        raise CheckpointCorrupt(f"{path} is corrupt: its digests entry is malformed")
    if d.get("algorithm") != "sha256":
        raise CheckpointCorrupt(f"{path}: unknown digest algorithm {str(d.get('algorithm'))[:40]!r}")
    want: Mapping[str, Any] = d["payloads"]
    if d.get("covers") != COVERS_ALL:
        if format_version is not None and format_version >= 2:
            raise CheckpointCorrupt(f"{path} is corrupt: format {format_version} with digests of its tensors only")
        for name, digest in want.items():
            if name not in ck or payload_digest(ck[name]) != digest:
                raise CheckpointCorrupt(f"{path} is corrupt: its {name!r} tensors do not match the digest saved "
                                        "with them")
        return "verified"
    entries = {str(k) for k in ck if k != "digests"}
    extra, missing = sorted(entries - set(want)), sorted(set(want) - entries)
    if extra or missing:
        what = f"entries no digest covers: {extra[:4]}" if extra else f"digested entries missing: {missing[:4]}"
        raise CheckpointCorrupt(f"{path} is corrupt: {what}")
    for name in sorted(want):
        try:
            ok = entry_digest(ck[name]) == want[name]
        except CheckpointCorrupt as e:
            raise CheckpointCorrupt(f"{path} is corrupt: {name!r} {e}") from None
        if not ok:
            raise CheckpointCorrupt(f"{path} is corrupt: its {name!r} entry does not match the digest saved with it")
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
