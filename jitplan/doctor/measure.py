"""``doctor --deep``: measure the DataLoader the plan will run, instead of trusting the RAM model.

A child process builds jitmodel's ImageFolder on the real dataset, runs a torch DataLoader with the plan's
workers, batch and prefetch for up to ``batches`` batches, and reports the peak summed PSS of the worker
processes (PSS, not RSS: RSS counts shared pages once per worker), the main process's PSS and the /dev/shm
high-water mark. Copy-on-read growth continues over a whole epoch (up to the ~208 B/image index per
worker), so a short run is a floor; C8 takes the larger of the model and the measurement.
"""

from __future__ import annotations

import json
import subprocess
import sys

from pydantic import BaseModel, ConfigDict

from jitmodel.bounded_io import run_bounded
from jitplan.runspec import RunSpec


class LoaderMeasurement(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ok: bool
    error: str | None = None
    workers: int = 0
    batches: int = 0
    images: int = 0
    per_worker_bytes: int = 0  # peak summed worker PSS / workers
    main_bytes: int = 0  # the loading process's PSS (no CUDA, no model)
    shm_peak_bytes: int = 0
    seconds: float = 0.0


_CHILD = r"""
import json, os, shutil, sys, time
import psutil
from torch.utils.data import DataLoader
from jitmodel.data import ImageFolder

a = json.loads(sys.argv[1])
ds = ImageFolder(a["path"], a["img_size"], a["in_channels"])
kw = {"prefetch_factor": a["prefetch"]} if a["workers"] else {}
dl = DataLoader(ds, batch_size=a["batch"], num_workers=a["workers"], shuffle=True, **kw)
me = psutil.Process()

def pss(p):
    try:
        return p.memory_full_info().pss
    except (psutil.Error, AttributeError):
        return p.memory_info().rss

shm0 = shutil.disk_usage(a["shm"]).used if os.path.isdir(a["shm"]) else 0
peak_w = peak_m = peak_s = n = kids = 0
t0 = time.perf_counter()
for _ in dl:
    n += 1
    children = me.children(recursive=True)
    kids = max(kids, len(children))
    peak_w = max(peak_w, sum(pss(c) for c in children))
    peak_m = max(peak_m, pss(me))
    if os.path.isdir(a["shm"]):
        peak_s = max(peak_s, shutil.disk_usage(a["shm"]).used - shm0)
    if n >= a["batches"]:
        break
out = {"workers": kids, "batches": n, "images": len(ds), "per_worker_bytes": peak_w // max(kids, 1),
       "main_bytes": peak_m, "shm_peak_bytes": max(peak_s, 0), "seconds": round(time.perf_counter() - t0, 3)}
print("JITPLAN_LOADER " + json.dumps(out))
"""


def measure_loader(run: RunSpec, data_path: str, *, batches: int = 50, shm: str = "/dev/shm",
                   timeout: float = 300.0, python: str | None = None) -> LoaderMeasurement:
    """Run the run's DataLoader on ``data_path`` in a child process and measure its memory."""
    t = run.train
    args = {"path": data_path, "img_size": t.model.img_size, "in_channels": t.model.in_channels,
            "batch": t.batch_per_gpu, "workers": t.data.num_workers, "prefetch": t.data.prefetch_factor or 2,
            "batches": batches, "shm": shm}
    try:  # bounded: a --python that floods its output is stopped, not buffered (jitmodel.bounded_io)
        proc = run_bounded([python or sys.executable, "-c", _CHILD, json.dumps(args)], timeout=timeout)
    except subprocess.TimeoutExpired:
        return LoaderMeasurement(ok=False, error=f"the DataLoader run did not finish within {timeout:.0f} s")
    except OSError as e:
        return LoaderMeasurement(ok=False, error=f"could not run {python}: {e.strerror or e}")
    for line in proc.stdout.splitlines():
        if line.startswith("JITPLAN_LOADER "):
            return LoaderMeasurement(ok=True, **json.loads(line.removeprefix("JITPLAN_LOADER ")))
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    return LoaderMeasurement(ok=False, error=lines[-1] if lines else f"exit code {proc.returncode}")
