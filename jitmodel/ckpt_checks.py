"""What a jitmodel checkpoint must be, beyond its digests: the checks every load and every resume run.

``check_semantics`` (every load of our format): positions are integers >= 0 and the step is within its own
run's ``max_steps``; the model config is valid; the weights (model, EMAs) are state dicts of tensors with
exactly the keys and shapes of the network that config describes (``expected_shapes``: built on the meta
device). ``require_resumable`` (resume): the entries a resume needs, and digests unless allowed.
``regular_file``: a path is a regular file, or one line says what it is instead (a FIFO, a device, a link
loop). Every failure is a one-line ValueError. See docs/training.md "Checkpoints".

    >>> describe(ModelConfig(variant="JiT-B/16"))
    'JiT-B/16 at 256px (1000 classes)'
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jitmodel.config import DiffusionConfig, ModelConfig, validation_summary


def describe(mc: ModelConfig) -> str:
    """'JiT-B/16 at 256px (1000 classes)'."""
    return f"{mc.factory or mc.variant} at {mc.img_size}px ({mc.num_classes} classes)"


def regular_file(p: Path, what: str) -> Path:
    """``p`` when it is a regular file (links followed); else ValueError saying what it is instead."""
    try:
        st = os.stat(p)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ValueError(f"{what}: a symbolic link loop, not a checkpoint file") from None
        if e.errno == errno.ENOENT:
            broken = os.path.islink(p)
            raise ValueError(f"{what}: " + ("a broken symbolic link" if broken else "no such file")) from None
        raise ValueError(f"{what}: {os.strerror(e.errno) if e.errno else e}") from None
    kinds = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
             stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}
    kind = kinds.get(stat.S_IFMT(st.st_mode))
    if kind is not None:
        raise ValueError(f"{what}: {kind}, not a checkpoint file")
    return p


def tensor_state(obj: Any, path: Path, name: str) -> Mapping[str, Any]:
    """``obj`` when it is a {name: tensor} state dict, else a one-line ValueError."""
    import torch

    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{path}: its {name!r} entry is not a state dict of tensors")
    bad = next((k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise ValueError(f"{path}: its {name!r} entry holds a {type(obj[bad]).__name__} at {str(bad)[:80]!r}, "
                         "not a tensor")
    return obj


def _count(raw: Mapping[str, Any], key: str, path: Path, low: int = 0) -> int:
    v = raw.get(key)
    if type(v) is not int or v < low:
        raise ValueError(f"{path}: {key} is {str(v)[:40]}, not an integer >= {low}")
    return v


def check_semantics(raw: Mapping[str, Any], path: str | Path) -> None:
    """What a well-formed jitmodel checkpoint holds, whatever its digests say, for each entry present:
    positions are integers >= 0 and the step is within its own run's max_steps, the model config is valid
    and the weights (model, EMAs) are tensors of exactly the shapes it gives. One-line ValueError otherwise.
    What a consumer needs present it asks for itself (resume: ``require_resumable``)."""
    from pydantic import ValidationError


    path = Path(path)
    for key in ("step", "epoch", "epoch_step", "epoch_samples"):
        if key in raw:
            _count(raw, key, path)
    if "world_size" in raw:
        _count(raw, "world_size", path, low=1)
    tc = raw.get("train_config")
    if "train_config" in raw and not isinstance(tc, Mapping):
        raise ValueError(f"{path}: train_config is not a mapping")
    max_steps = tc.get("max_steps") if isinstance(tc, Mapping) else None
    if max_steps is not None and "step" in raw and (type(max_steps) is not int or raw["step"] > max_steps):
        raise ValueError(f"{path}: step {raw['step']} is beyond its run's max_steps {str(max_steps)[:40]}")
    for name in ("model", "ema1", "ema2"):
        if name == "model" or raw.get(name) is not None:
            tensor_state(raw.get(name), path, name)
    if "optimizer" in raw and not isinstance(raw["optimizer"], (Mapping, type(None))):
        raise ValueError(f"{path}: its optimizer entry is not a state dict")
    if "model_config" not in raw:
        return
    try:
        mc = ModelConfig.model_validate(raw["model_config"])
    except ValidationError as e:
        raise ValueError(f"{path}: model_config: {validation_summary(e)}") from None
    want = expected_shapes(mc)
    for name in ("model", "ema1", "ema2"):
        sd = raw.get(name)
        if sd is None:
            continue
        keys = {k.removeprefix("net.") for k in sd}
        if keys != set(want):
            odd = sorted(keys ^ set(want))[:3]
            raise ValueError(f"{path}: its {name!r} weights are not those of {describe(mc)} (keys differ: {odd})")
        for k, v in sd.items():
            if tuple(v.shape) != want[k.removeprefix("net.")]:
                raise ValueError(f"{path}: {name} {k[:80]} has shape {list(v.shape)}, {describe(mc)} needs "
                                 f"{list(want[k.removeprefix('net.')])}")


def require_resumable(ck: Mapping[str, Any], path: str | Path, *, allow_unverified: bool) -> None:
    """What resuming needs of one of our checkpoints beyond ``load_checkpoint``: every position entry and
    both configs present, and digests unless ``allow_unverified`` (one-line ValueError)."""
    missing = [k for k in ("step", "epoch", "model_config", "train_config") if k not in ck]
    if missing:
        raise ValueError(f"{path}: not resumable: no {', '.join(missing)}")
    if ck.get("integrity") == "unverified" and not allow_unverified:
        raise ValueError(f"{path} carries no digests (integrity unverified): resume refuses it; pass "
                         "--allow-unverified (or set JITMODEL_ALLOW_UNVERIFIED=1) to resume from it anyway")


def expected_shapes(mc: ModelConfig) -> dict[str, tuple[int, ...]]:
    """{state dict key without ``net.``: shape} of the network ``mc`` describes (built on the meta device:
    no memory, no time)."""
    from jitmodel.denoiser import Denoiser  # lazy: start-up (torch)

    net = Denoiser(mc, DiffusionConfig(), device="meta")
    return {k.removeprefix("net."): tuple(v.shape) for k, v in net.state_dict().items()}
