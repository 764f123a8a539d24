"""Read a torch checkpoint's *shapes and config* without torch and without loading any tensor data.

A ``torch.save`` file is a zip whose ``*/data.pkl`` pickle rebuilds tensors through
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``; the bytes live in separate
entries. A restricted unpickler maps that call to a ``TensorMeta(shape)`` and every other global to an
inert placeholder, so no code from the file runs (safer than ``weights_only``, and a 2.6 GB checkpoint
reads in milliseconds). The model's shapes are then fed to ``jitmodel.checkpoint.infer_model_config``.

    >>> summary = read_checkpoint("missing.pt")
    Traceback (most recent call last):
    ...
    jitplan.errors.UsageError: checkpoint not found: missing.pt
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jitmodel.bounded_io import run_bounded
from jitplan.errors import UsageError

STATE_KEYS = ("model", "ema1", "model_ema1", "ema", "state_dict", "model_ema2", "ema2")


class TensorMeta:
    __slots__ = ("shape",)

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = tuple(int(d) for d in shape)

    def __repr__(self) -> str:
        return f"TensorMeta{self.shape}"


class _Opaque:
    """Stands in for any class or function the pickle names: records arguments, runs nothing."""

    name = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _Namespace(_Opaque):
    name = "argparse.Namespace"


def _rebuild_tensor(storage: Any, offset: Any, size: Any, *args: Any, **kwargs: Any) -> TensorMeta:
    return TensorMeta(tuple(size))


def _passthrough(data: Any, *args: Any, **kwargs: Any) -> Any:
    return data


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _passthrough,
    ("torch._utils", "_rebuild_parameter_with_state"): _passthrough,
    ("collections", "OrderedDict"): OrderedDict,
    ("argparse", "Namespace"): _Namespace,
    ("torch", "Size"): tuple,
}


class _ShapeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        return type(name, (_Opaque,), {"name": f"{module}.{name}"})

    def persistent_load(self, pid: Any) -> None:
        return None  # storages are never read


class CheckpointSummary(BaseModel):
    """Top-level keys, the model's {key: shape}, and the config the checkpoint says it was trained with."""

    model_config = ConfigDict(extra="forbid")
    path: str
    keys: list[str]
    state_key: str | None = None  # which entry held the model state dict
    shapes: dict[str, tuple[int, ...]] = Field(default_factory=dict)
    saved_config: dict[str, Any] | None = None  # variant, img_size, num_classes as saved (if any)
    saved_from: str | None = None  # "model_config" | "args"
    classes: list[str] | None = None
    integrity: str | None = None  # "verified" | "unverified" (no digests) | None (not checked)


# Runs in a child process (so the caller stays torch-free): the one checkpoint load check, used by doctor
# (C-checks on --resume) and by every pull before a checkpoint is promoted (launch/pull.py).
_LOAD_CHECK = r"""
import json, sys
from jitmodel.checkpoint import load_checkpoint
try:
    ck = load_checkpoint(sys.argv[1], mmap=True)  # weights-only; checks per-tensor digests when present
    out = {"integrity": ck.get("integrity") or "unverified", "step": ck.get("step"), "format": ck.get("format")}
except Exception as e:
    out = {"error": str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"}
print("JITPLAN_CKPT " + json.dumps(out, default=str))
"""


class LoadCheck(BaseModel):
    """What loading a checkpoint (weights-only, digests checked) says about it."""

    model_config = ConfigDict(extra="forbid")
    integrity: str  # "verified" (per-tensor digests match) | "unverified" (it has none)
    step: int | None = None
    format: Any = None


def load_check(path: str | Path, python: str | None = None, timeout: float = 900.0) -> LoadCheck:
    """Load the checkpoint in a child process (torch, weights-only, mmap) so its digests are checked there.
    UsageError (one line) when it does not load, is corrupt, or cannot be checked."""
    import subprocess
    import sys

    try:
        proc = run_bounded([python or sys.executable, "-c", _LOAD_CHECK, str(path)], timeout=timeout)  # bounded output
    except subprocess.TimeoutExpired:
        raise UsageError(f"{path}: loading it took over {timeout:.0f} s") from None
    except OSError as e:
        raise UsageError(f"{path}: could not verify the checkpoint ({type(e).__name__})") from None
    for line in proc.stdout.splitlines():
        if line.startswith("JITPLAN_CKPT "):
            res = json.loads(line.removeprefix("JITPLAN_CKPT "))
            if "error" in res:
                raise UsageError(res["error"])
            step = res.get("step")
            return LoadCheck(integrity=str(res["integrity"]), step=step if isinstance(step, int) else None,
                             format=res.get("format"))
    tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    raise UsageError(f"{path}: could not verify the checkpoint ({tail[-1][:160] if tail else proc.returncode})")


def verify_digests(path: str | Path, python: str | None = None, timeout: float = 900.0) -> str:
    """'verified' or 'unverified' (:func:`load_check`); UsageError when it is corrupt or cannot be checked."""
    return load_check(path, python, timeout).integrity


def _plain(obj: Any) -> Any:
    if isinstance(obj, _Opaque):
        state = getattr(obj, "state", None)
        return {k: _plain(v) for k, v in state.items()} if isinstance(state, dict) else None
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj if isinstance(obj, (str, int, float, bool, type(None))) else None


def _saved_config(top: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    mc = top.get("model_config")
    if isinstance(mc, dict):
        keys = ("variant", "img_size", "num_classes", "in_channels", "factory", "factory_kwargs", "source_digest")
        return {k: _plain(mc.get(k)) for k in keys if k in mc}, "model_config"
    args = _plain(top.get("args"))
    if isinstance(args, dict):  # official JiT: argparse Namespace(model="JiT-B/16", img_size=256, class_num=1000)
        return {"variant": args.get("model"), "img_size": args.get("img_size"),
                "num_classes": args.get("class_num", args.get("num_classes"))}, "args"
    return None, None


def read_checkpoint(path: str | Path) -> CheckpointSummary:
    """Shapes and saved config of a checkpoint (zip format of torch >= 1.6). UsageError on bad input."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"checkpoint not found: {p}")
    if not zipfile.is_zipfile(p):
        raise UsageError(f"{p} is not a torch zip checkpoint (legacy or other format); re-save it with torch >= 1.6")
    with zipfile.ZipFile(p) as z:
        pkls = sorted((n for n in z.namelist() if n.endswith("data.pkl")), key=len)
        if not pkls:
            raise UsageError(f"{p} is a zip file without data.pkl: not a torch checkpoint")
        raw = z.read(pkls[0])
    try:
        top = _ShapeUnpickler(io.BytesIO(raw)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise UsageError(f"{p}: cannot read the checkpoint's pickle: {e}") from None
    if not isinstance(top, dict):
        raise UsageError(f"{p} does not hold a dict")
    state_key, state = None, None
    for k in STATE_KEYS:
        if isinstance(top.get(k), dict):
            state_key, state = k, top[k]
            break
    if state is None and any(isinstance(v, TensorMeta) for v in top.values()):
        state_key, state = "(top level)", top
    shapes = {k: v.shape for k, v in (state or {}).items() if isinstance(v, TensorMeta)}
    saved, saved_from = _saved_config(top)
    classes = top.get("classes")
    return CheckpointSummary(path=str(p), keys=sorted(map(str, top)), state_key=state_key, shapes=shapes,
                             saved_config=saved, saved_from=saved_from,
                             classes=[str(c) for c in classes] if isinstance(classes, list) else None)

