"""Atomic, self-describing checkpoints, and safe loading of official JiT checkpoints.

A jitmodel checkpoint is a plain dict (tensors, numbers, strings, lists, dicts) so that
``torch.load(weights_only=True)`` reads it without unpickling any code::

    {"format": "jitmodel-checkpoint", "format_version": 2,
     "model": Denoiser.state_dict() (keys net.*), "ema1": ..., "ema2": ..., "optimizer": ...,
     "model_config": ModelConfig dump, "train_config": TrainConfig dump, "classes": [...],
     "versions": {"jitmodel", "torch", "python"}, "epoch", "step", "epoch_step", "epoch_samples",
     "rng": {...}, "world_size",
     "digests": {"algorithm": "sha256", "covers": "all", "payloads": {"model": hex, "step": hex, ...}}}

``digests`` (``jitmodel.integrity``) are checked on every load (resume, sample, evaluate, doctor). Format 2
digests cover every entry, metadata (step, epoch, configs, classes, RNG, format version) as well as
tensors; format 1 files (tensor digests only) still load, ``integrity_detail`` says so. Then the semantic
checks (``check_semantics``): a known format version, non-negative integer positions, a step within the
run's own ``max_steps``, weights that are tensors of the shapes the model config gives. Every failure is
one line (ValueError). A file without digests loads with a visible "unverified" line on stderr, and
resuming refuses it unless allowed (``python -m jitmodel.train --allow-unverified`` or
``JITMODEL_ALLOW_UNVERIFIED=1``).
A save first checks the disk has room for the new file (counting the old step files it rotates out,
which it deletes *before* writing, so ``keep_last: 2`` never needs room for three).

Files: ``<output_dir>/ckpt/{step:07d}.pt`` (the last ``keep_last`` kept), ``<output_dir>/ckpt/epoch-{E:04d}.pt``
(permanent, every ``keep_every_epochs``) and ``<output_dir>/last.pt``; the latter two are hard links of the
step file (one write per save). Every file is written to a temporary name in the same folder, flushed,
fsynced and renamed over the final name, so a crash at any moment leaves the previous file intact.

Official checkpoints (``checkpoint-last.pth``: model, model_ema1, model_ema2, optimizer, epoch, args)
load too: only ``argparse.Namespace`` is allowed beyond the default weights-only types.

This module imports torch lazily, so ``infer_model_config`` (pure: {key: shape} -> ModelConfig) is cheap:

    >>> shapes = {"net.pos_embed": (1, 256, 768), "net.x_embedder.proj1.weight": (128, 3, 16, 16),
    ...           "net.in_context_posemb": (1, 32, 768), "net.y_embedder.embedding_table.weight": (1001, 768),
    ...           **{f"net.blocks.{i}.attn.q_norm.weight": (64,) for i in range(12)}}
    >>> describe(infer_model_config(shapes))
    'JiT-B/16 at 256px (1000 classes)'
"""

from __future__ import annotations

import errno
import math
import os
import platform
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jitmodel
from jitmodel import integrity
from jitmodel.ckpt_checks import (  # noqa: F401 (describe, expected_shapes, require_resumable: this module's API)
    check_semantics,
    describe,
    expected_shapes,
    regular_file,
    require_resumable,
    tensor_state,
)
from jitmodel.config import ModelConfig
from jitmodel.custom import check_same_model
from jitmodel.integrity import state_fingerprint  # noqa: F401 (part of this module's API)
from jitmodel.rng_state import capture_rng, restore_rng  # noqa: F401 (part of this module's API)
from jitmodel.variants import VARIANTS

FORMAT = "jitmodel-checkpoint"
FORMAT_VERSION = 2  # 2: digests cover every entry (metadata too); 1: tensor digests only (still read)
KNOWN_VERSIONS = (1, 2)
OFFICIAL = "official-jit"
_STEP_FILE = re.compile(r"^(\d{7})\.pt$")


# --------------------------------------------------------------------------- describing models

def _strip(key: str) -> str:
    for prefix in ("module.", "_orig_mod.", "net.", "_orig_mod."):
        key = key.removeprefix(prefix)
    return key


def infer_model_config(shapes: Mapping[str, Sequence[int]]) -> ModelConfig:
    """Variant, patch, image size, channels and classes of a JiT state dict, from tensor shapes alone.

    Accepts keys with or without the ``net.`` (denoiser), ``module.`` (DDP) or ``_orig_mod.`` (compile)
    prefixes. Raises ValueError when the shapes are not those of a known JiT variant.
    """
    s = {_strip(k): tuple(int(d) for d in v) for k, v in shapes.items()}
    for key in ("pos_embed", "x_embedder.proj1.weight", "y_embedder.embedding_table.weight"):
        if key not in s:
            raise ValueError(f"not a JiT state dict: no {key!r}")
    _, n_tok, hidden = s["pos_embed"]
    bottleneck, chans, patch, _ = s["x_embedder.proj1.weight"]
    num_classes = s["y_embedder.embedding_table.weight"][0] - 1
    ic_len = s.get("in_context_posemb", (1, 0, hidden))[1]
    depth = 1 + max((int(m.group(1)) for k in s if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1)
    head_dim = s.get("blocks.0.attn.q_norm.weight", (None,))[0]
    grid = math.isqrt(n_tok)
    if grid * grid != n_tok:
        raise ValueError(f"pos_embed holds {n_tok} tokens, not a square grid")
    found = dict(depth=depth, hidden=hidden, patch=patch, bottleneck=bottleneck, in_context_len=ic_len)
    for v in VARIANTS.values():
        if all(getattr(v, k) == val for k, val in found.items()) and head_dim in (None, v.head_dim):
            return ModelConfig(variant=v.name, img_size=grid * patch, in_channels=chans, num_classes=num_classes)
    dims = ", ".join(f"{k} {val}" for k, val in found.items())
    raise ValueError(f"no known JiT variant has {dims}" + (f", head_dim {head_dim}" if head_dim else ""))


def check_compatible(ckpt: ModelConfig, wanted: ModelConfig) -> None:
    """Refuse a checkpoint whose network differs from the config's (one message naming both)."""
    if ckpt.factory or wanted.factory:  # a user's model: the same factory, arguments and source (jitmodel.custom)
        check_same_model(ckpt.model_dump(), wanted.model_dump())
    keys = ("variant", "img_size", "in_channels", "num_classes")
    if any(getattr(ckpt, k) != getattr(wanted, k) for k in keys):
        extra = "" if ckpt.in_channels == wanted.in_channels else \
            f" [{ckpt.in_channels} vs {wanted.in_channels} channels]"
        raise ValueError(f"checkpoint is {describe(ckpt)}; config asks for {describe(wanted)}{extra}")


# --------------------------------------------------------------------------- atomic files

def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # not supported (e.g. Windows)
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | Path) -> Path:
    """torch.save to a temp file in the same folder, flush + fsync, os.replace, fsync the folder."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # a full disk: ENOSPC, or torch's "[enforce fail at inline_container.cc"
        tmp.unlink(missing_ok=True)
        if getattr(e, "errno", None) == errno.ENOSPC or "inline_container" in str(e) or "write" in str(e).lower():
            free = shutil.disk_usage(path.parent).free
            raise integrity.CheckpointNoSpace(f"writing {path} failed ({_first_line(e)}); "
                                              f"{free:,} bytes free in {path.parent}") from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_link(src: Path, dst: Path) -> None:
    """Make ``dst`` a hard link of ``src`` atomically (copy when links are not supported)."""
    import shutil

    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(dst.parent)


def remove_stale_temps(out: Path) -> None:
    """Delete temp files left by a writer that was killed (one writer per output_dir: rank 0)."""
    for d in (out, out / "ckpt"):
        if d.is_dir():
            for p in d.glob(".*.tmp-*"):
                if not p.name.endswith(f".tmp-{os.getpid()}"):
                    p.unlink(missing_ok=True)


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return " ".join(lines[0].split())[:200] if lines else type(e).__name__


def versions() -> dict[str, str]:
    import torch


    return {"jitmodel": jitmodel.__version__, "torch": str(torch.__version__), "python": platform.python_version()}


def make_checkpoint(*, model: Mapping[str, Any], ema1: Mapping[str, Any], ema2: Mapping[str, Any],
                    optimizer: Mapping[str, Any], model_config: Any, train_config: Any, classes: Sequence[str],
                    epoch: int, step: int, epoch_step: int, epoch_samples: int,
                    rng_per_rank: Sequence[Mapping[str, Any]], scaler: Mapping[str, Any] | None = None) -> dict:
    """The checkpoint dict (format 2). ``rng`` holds rank 0's streams at the top and every rank's in per_rank."""
    ck = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "model": model, "ema1": ema1, "ema2": ema2,
        "optimizer": optimizer, "model_config": model_config.model_dump(mode="json"),
        "train_config": train_config.model_dump(mode="json"), "classes": list(classes), "versions": versions(),
        "epoch": int(epoch), "step": int(step), "epoch_step": int(epoch_step), "epoch_samples": int(epoch_samples),
        "rng": {**rng_per_rank[0], "per_rank": list(rng_per_rank)}, "world_size": len(rng_per_rank),
    }
    if scaler is not None:
        ck["scaler"] = scaler
    ck["digests"] = integrity.digests(ck)  # checked by load_checkpoint
    return ck


def save_checkpoint(ckpt: dict[str, Any], output_dir: str | Path, *, keep_last: int,
                    permanent_epoch: int | None = None) -> Path:
    """Write ckpt/{step:07d}.pt, link last.pt (and ckpt/epoch-E.pt when permanent), prune old step files."""
    out = Path(output_dir)
    if ckpt.get("format") != FORMAT:
        raise ValueError("save_checkpoint expects a dict built by the trainer (format jitmodel-checkpoint)")
    remove_stale_temps(out)
    target = out / "ckpt" / f"{int(ckpt['step']):07d}.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    steps = sorted(p for p in target.parent.iterdir() if _STEP_FILE.match(p.name) and p != target)
    rotate = steps[:len(steps) - (keep_last - 1)] if len(steps) >= keep_last else []
    integrity.ensure_room(target.parent, integrity.nbytes(ckpt), integrity.reclaimable(rotate))
    for old in rotate:  # before the write: keep_last files on disk at most, never keep_last + 1
        old.unlink(missing_ok=True)  # last.pt / epoch-*.pt are separate links and survive
    step_path = atomic_save(ckpt, target)
    if permanent_epoch is not None:
        atomic_link(step_path, out / "ckpt" / f"epoch-{permanent_epoch:04d}.pt")
    atomic_link(step_path, out / "last.pt")
    return step_path


# --------------------------------------------------------------------------- loading

def resolve_resume(arg: str | None, output_dir: str | Path) -> Path | None:
    """``--resume``: '' / None = fresh; 'auto' = <output_dir>/last.pt when present; a file; or a folder
    holding last.pt (ours) or checkpoint-last.pth (official). A path that does not exist, or that is not a
    regular file (a FIFO, a device such as /dev/zero, a socket, a link loop), is an error naming what it is."""
    if not arg:
        return None
    if arg == "auto":
        p = Path(output_dir) / "last.pt"
        if not os.path.lexists(p):
            return None
        return regular_file(p, f"--resume auto ({p})")
    p = Path(arg).expanduser()
    if p.is_dir():
        for name in ("last.pt", "checkpoint-last.pth"):
            if os.path.lexists(p / name):
                return regular_file(p / name, f"--resume {arg}")
        raise ValueError(f"--resume {arg}: the folder holds neither last.pt nor checkpoint-last.pth")
    return regular_file(p, f"--resume {arg}")


def load_checkpoint(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> dict[str, Any]:
    """Load ours or an official JiT checkpoint with ``weights_only=True``.

    Official checkpoints are normalised to our keys (model, ema1, ema2, optimizer, epoch) plus
    ``args`` as a plain dict and ``model_config`` inferred from the shapes; ``format`` says which.
    ``mmap=True`` maps the tensors from the file (private, copy-on-write) instead of reading them: the
    ranks of a node then share one copy in the page cache (an H/16 checkpoint is ~19 GB).
    """
    import argparse
    import pickle

    import torch

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a checkpoint file (e.g. {path / 'last.pt'})")
    if not os.path.lexists(path):
        raise ValueError(f"checkpoint not found: {path}")
    regular_file(path, str(path))
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            try:
                raw = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
            except RuntimeError:
                if not mmap:
                    raise
                raw = torch.load(path, map_location=map_location, weights_only=True)  # pre-zip format
    except FileNotFoundError:
        raise ValueError(f"checkpoint not found: {path}") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
        first = next((ln for ln in lines if "GLOBAL" in ln), lines[0])
        raise ValueError(f"{path} is not a loadable checkpoint: {' '.join(first.split())[:200]}") from None
    except (OSError, ValueError) as e:  # permissions, I/O errors, a truncated or foreign file
        raise ValueError(f"{path} is not a loadable checkpoint: {_first_line(e)}") from None
    except Exception as e:  # noqa: BLE001 - a corrupt pickle raises KeyError, AttributeError, TypeError ...
        raise ValueError(f"{path} is not a loadable checkpoint (corrupt: {type(e).__name__} "
                         f"{_first_line(e)})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} does not hold a checkpoint dict")
    if raw.get("format") == FORMAT:
        version = raw.get("format_version")
        if type(version) is not int or version not in KNOWN_VERSIONS:
            newer = type(version) is int and version > FORMAT_VERSION
            raise ValueError(f"{path} has checkpoint format version {str(version)[:40]}; this jitmodel reads "
                             f"{', '.join(map(str, KNOWN_VERSIONS))}" + (" (upgrade jitmodel)" if newer else ""))
        raw["integrity"] = integrity.verify(raw, path, format_version=version)
        raw["integrity_detail"] = {"unverified": "unverified: no digests",
                                   "verified": "verified" if version >= 2 else
                                   "verified (format 1: tensors only; metadata by the semantic checks)"
                                   }[raw["integrity"]]
        check_semantics(raw, path)
        if raw["integrity"] == "unverified":
            print(f"warning: {path} carries no digests: integrity unverified (its weights and metadata cannot be "
                  "checked)", file=sys.stderr, flush=True)
        return raw
    if "model" in raw and ("args" in raw or "model_ema1" in raw):
        args = raw.get("args")
        try:
            mc = infer_model_config({k: v.shape for k, v in tensor_state(raw["model"], path, "model").items()})
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        return {
            "format": OFFICIAL, "model": raw["model"], "ema1": raw.get("model_ema1"),
            "ema2": raw.get("model_ema2"), "optimizer": raw.get("optimizer"), "epoch": raw.get("epoch"),
            "args": dict(vars(args)) if isinstance(args, argparse.Namespace) else args,
            "model_config": mc.model_dump(mode="json"), "integrity": "official", "integrity_detail": "official JiT",
        }
    raise ValueError(f"{path} is neither a jitmodel nor an official JiT checkpoint (keys: {sorted(map(str, raw))[:8]})")


def checkpoint_model_config(ckpt: Mapping[str, Any]) -> ModelConfig:
    return ModelConfig.model_validate(ckpt["model_config"])
