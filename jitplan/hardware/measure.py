"""Short measurements ``jitplan probe`` takes of this machine: a disk read and, when a GPU is visible, a
host->GPU copy per GPU (in a child Python, so the probe itself never imports torch). The results are the same
figures a marketplace offer publishes (jitplan.hardware.figures), so a plan from a probe uses them.

    >>> import tempfile
    >>> mbs = disk_read_mbs(tempfile.gettempdir(), size=4 << 20)
    >>> mbs is None or mbs > 0
    True
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from pydantic import BaseModel, ConfigDict

COPY_BYTES = 256 << 20  # per GPU: long enough to leave the launch latency behind, short enough for a probe
# A child Python: pinned host buffer -> each GPU, three timed copies, the best (GB/s, 1e9). Prints JSON.
_COPY = """
import json, sys, time, torch
n, out = int(sys.argv[1]), []
if torch.cuda.is_available():
    host = torch.empty(n, dtype=torch.uint8).pin_memory()
    for d in range(torch.cuda.device_count()):
        dev = torch.empty(n, dtype=torch.uint8, device=f"cuda:{d}")
        dev.copy_(host, non_blocking=True); torch.cuda.synchronize(d)
        best = 0.0
        for _ in range(3):
            t = time.perf_counter(); dev.copy_(host, non_blocking=True); torch.cuda.synchronize(d)
            best = max(best, n / (time.perf_counter() - t) / 1e9)
        out.append(round(best, 2))
print(json.dumps(out))
"""


class Figures(BaseModel):
    """What the probe measured (None: not measured)."""

    model_config = ConfigDict(extra="forbid")
    pcie_gbs: list[float] | None = None  # host->GPU copy per GPU, GB/s
    disk_read_mbs: float | None = None
    disk_path: str | None = None
    notes: list[str] = []


def disk_read_mbs(directory: str, size: int = 64 << 20) -> float | None:
    """MB/s reading ``size`` bytes written (and fsynced, then dropped from the page cache) in ``directory``."""
    try:
        fd, path = tempfile.mkstemp(dir=directory, prefix=".jitplan-disk-")
    except OSError:
        return None
    try:
        chunk = os.urandom(1 << 20)
        with os.fdopen(fd, "wb") as f:
            for _ in range(max(1, size >> 20)):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        with open(path, "rb") as f:
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            t = time.perf_counter()
            n = 0
            while block := f.read(8 << 20):
                n += len(block)
            dt = time.perf_counter() - t
        return n / dt / 1e6 if dt > 0 else None
    except OSError:
        return None
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


def pcie_copy_gbs(python: str | None = None, size: int = COPY_BYTES, timeout_s: float = 120) -> tuple[
        list[float] | None, str | None]:
    """(GB/s per GPU, None) or (None, why not) from a child Python with torch."""
    try:
        proc = subprocess.run([python or sys.executable, "-c", _COPY, str(size)], capture_output=True, text=True,
                              timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"host->GPU copy not measured ({type(e).__name__})"
    if proc.returncode != 0:
        return None, "host->GPU copy not measured (" + (proc.stderr.strip().splitlines() or ["torch failed"])[-1] + ")"
    try:
        vals = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None, "host->GPU copy not measured (unreadable output)"
    return ([float(v) for v in vals] or None), None


def measure(disk_path: str, gpus: int, python: str | None = None) -> Figures:
    notes = []
    pcie = None
    if gpus > 0:
        pcie, why = pcie_copy_gbs(python)
        if why:
            notes.append(why)
    return Figures(pcie_gbs=pcie, disk_read_mbs=disk_read_mbs(disk_path), disk_path=disk_path, notes=notes)
