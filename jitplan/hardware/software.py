"""torch as installed, read without importing it here.

Two levels:
- ``torch_metadata()``: milliseconds. Finds the torch package, reads ``torch/version.py`` as text
  (``__version__``, ``cuda``) and the installed distributions' metadata (installer pip/conda, NVIDIA wheels,
  MKL). Used by ``jitplan probe``.
- ``torch_import_check()``: ~1-2 s. Imports torch in a *subprocess* with a timeout, so a broken torch
  (the ``iJIT_NotifyEvent`` undefined symbol of conda MKL >= 2024.1, a shadowed nvJitLink) cannot crash us;
  the stderr is kept for doctor's C1. Reports the arch list, NCCL and cuDNN versions.

    >>> meta = torch_metadata()
    >>> meta.installed in (True, False)
    True
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from jitmodel.atomic import atomic_write_text
from jitmodel.bounded_io import run_bounded
from jitplan.secrets import redact


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TorchMetadata(_Strict):
    """What the files on disk say about torch (no import)."""

    installed: bool
    location: str | None = None
    version: str | None = None
    cuda: str | None = None  # CUDA version torch was built with; None for a CPU build
    installer: str | None = None  # "pip", "conda", "uv", ...
    packages: dict[str, str] = Field(default_factory=dict)  # nvidia-*/mkl/intel-openmp/pynvml versions


class TorchImport(_Strict):
    """The result of ``import torch`` in a child process."""

    ok: bool
    seconds: float | None = None
    timed_out: bool = False
    returncode: int | None = None
    error: str | None = None  # last line of stderr (the ImportError message)
    stderr_tail: str | None = None
    version: str | None = None
    cuda: str | None = None
    arch_list: list[str] = Field(default_factory=list)  # ["sm_80", "sm_86", "sm_90", "compute_90"]
    nccl: str | None = None
    cudnn: str | None = None
    cuda_available: bool | None = None
    device_count: int | None = None
    cuda_warning: str | None = None  # e.g. "The NVIDIA driver on your system is too old ..."
    cached: bool = False  # reused from an earlier successful run (nothing it depends on changed)


_VERSION_RE = re.compile(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", re.M)
_CUDA_RE = re.compile(r"^cuda\s*(?::\s*[\w\[\]]+)?\s*=\s*(None|['\"]([^'\"]*)['\"])", re.M)
_WATCHED = ("mkl", "intel-openmp", "nvidia-nccl-cu12", "nvidia-nccl-cu13", "nvidia-cudnn-cu12",
            "nvidia-cudnn-cu13", "nvidia-cuda-runtime-cu12", "nvidia-cuda-runtime", "nvidia-nvjitlink-cu12",
            "nvidia-ml-py", "pynvml", "torchvision")


def parse_version_py(text: str) -> tuple[str | None, str | None]:
    """(__version__, cuda) from the text of ``torch/version.py``.

    >>> parse_version_py("__version__ = '2.5.1+cu124'\\ncuda: Optional[str] = '12.4'\\n")
    ('2.5.1+cu124', '12.4')
    >>> parse_version_py("__version__ = '2.13.0+cpu'\\ncuda: Optional[str] = None\\n")
    ('2.13.0+cpu', None)
    """
    v = _VERSION_RE.search(text)
    c = _CUDA_RE.search(text)
    cuda = c.group(2) if c and c.group(1) != "None" else None
    return (v.group(1) if v else None), cuda


def _dist_version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def torch_metadata() -> TorchMetadata:
    """Read torch's version and CUDA build from its files; never imports torch."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return TorchMetadata(installed=False, packages=_watched())
    loc = Path(list(spec.submodule_search_locations)[0])
    try:
        version, cuda = parse_version_py((loc / "version.py").read_text())
    except OSError:
        version, cuda = None, None
    installer = None
    try:
        installer = (md.distribution("torch").read_text("INSTALLER") or "").strip() or None
    except md.PackageNotFoundError:
        installer = None
    if installer is None and (loc.parent.parent.parent.parent / "conda-meta").is_dir():
        installer = "conda"
    return TorchMetadata(installed=True, location=str(loc), version=version, cuda=cuda,
                         installer=installer, packages=_watched())


def _watched() -> dict[str, str]:
    return {n: v for n in _WATCHED if (v := _dist_version(n))}


# The child: prints one JSON line. Kept small: every attribute access guarded, CUDA init only via
# is_available() (which warns rather than raises when the driver is missing or too old).
_CHILD = r"""
import json, warnings
out = {}
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    import torch
    out["version"] = torch.__version__
    out["cuda"] = torch.version.cuda
    try:
        flags = torch._C._cuda_getArchFlags() if hasattr(torch._C, "_cuda_getArchFlags") else ""
    except Exception:
        flags = ""
    out["arch_list"] = (flags or "").split()
    try:
        out["cudnn"] = str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None
    except Exception:
        out["cudnn"] = None
    try:
        v = torch.cuda.nccl.version() if torch.version.cuda else None
        out["nccl"] = ".".join(map(str, v)) if isinstance(v, tuple) else (str(v) if v else None)
    except Exception:
        out["nccl"] = None
    out["cuda_available"] = bool(torch.cuda.is_available())
    out["device_count"] = torch.cuda.device_count() if out["cuda_available"] else 0
    msgs = [str(x.message) for x in w if "CUDA" in str(x.message) or "NVIDIA" in str(x.message)]
    out["cuda_warning"] = msgs[0] if msgs else None
print("JITPLAN_TORCH " + json.dumps(out))
"""


def _cache_key(python: str, env: Mapping[str, str]) -> str | None:
    """What a successful import depends on: the interpreter, torch's files, MKL/NVIDIA wheels, library paths."""
    import hashlib

    meta = torch_metadata() if python == sys.executable else None
    if meta is not None and not meta.installed:
        return None
    parts = [python, *(f"{k}={env.get(k, '')}" for k in ("LD_LIBRARY_PATH", "LD_PRELOAD", "CONDA_PREFIX",
                                                           "CUDA_VISIBLE_DEVICES", "PYTHONPATH", "PYTHONHOME"))]
    if meta is not None and meta.location:
        loc = Path(meta.location)
        try:  # a half-installed torch (no version.py) is never cached: C1 reports it
            parts += [meta.model_dump_json(), str((loc / "version.py").stat().st_mtime_ns),
                      str((loc / "lib").stat().st_mtime_ns) if (loc / "lib").is_dir() else ""]
        except OSError:
            return None
    else:
        return None  # another interpreter: no cheap way to see its torch change, never cache
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def torch_import_check(
    python: str | None = None, *, timeout: float = 60.0, env: Mapping[str, str] | None = None,
    cache_dir: str | Path | None = None,
) -> TorchImport:
    """Import torch in a child process (``python``, default this interpreter) and report what happened.

    With ``cache_dir``, a *successful* result is reused while nothing it depends on changed (torch's files,
    the MKL/NVIDIA wheel versions, LD_LIBRARY_PATH, ...); failures are always re-run.
    """
    python = python or sys.executable
    env = os.environ if env is None else env
    key = _cache_key(python, env) if cache_dir is not None else None
    cache_file = Path(cache_dir) / f"torch-import-{key}.json" if cache_dir is not None and key else None
    if cache_file is not None and cache_file.is_file():
        try:
            cached = TorchImport.model_validate_json(cache_file.read_text())
        except ValueError:
            cached = None
        if cached is not None and cached.ok:
            cached.cached = True
            return cached
    result = _run_import(python, timeout, env)
    if cache_file is not None and result.ok:

        try:
            atomic_write_text(cache_file, result.model_dump_json())
        except OSError:
            pass  # a read-only home is not an error
    return result


def _run_import(python: str, timeout: float, env: Mapping[str, str]) -> TorchImport:
    import time

    child_env = dict(env)
    child_env.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # avoid initialising CUDA just to ask
    t0 = time.perf_counter()
    try:
        proc = run_bounded([python, "-c", _CHILD], timeout=timeout, env=child_env)  # output kept bounded
    except subprocess.TimeoutExpired:
        return TorchImport(ok=False, timed_out=True, seconds=timeout,
                           error=f"import torch did not finish within {timeout:.0f} s")
    except OSError as e:
        return TorchImport(ok=False, error=f"could not run {python}: {e}")
    secs = round(time.perf_counter() - t0, 3)
    for line in proc.stdout.splitlines():
        if line.startswith("JITPLAN_TORCH "):
            data = json.loads(line.removeprefix("JITPLAN_TORCH "))
            return TorchImport(ok=True, seconds=secs, returncode=proc.returncode, **data)

    err_lines = [ln for ln in redact(proc.stderr).strip().splitlines() if ln.strip()]
    return TorchImport(ok=False, seconds=secs, returncode=proc.returncode,
                       error=err_lines[-1] if err_lines else f"exit code {proc.returncode}, no output",
                       stderr_tail="\n".join(err_lines[-15:]))
