"""`jitplan plan` start-up as a fraction of a bare `import torch`, measured side by side (the brief's budget: a
quarter), for the JiT seed plan and for a cached traced model (`--model FILE.py:factory`, issue 21).

    python benchmarks/bench_startup_ratio.py            # 9 rounds
    python benchmarks/bench_startup_ratio.py -n 15

Each round runs the three commands once each, in turn, so a load change on a shared box hits all three alike.
Both CPU time (user + sys of the child: what the wall would be on an idle machine) and wall time are reported;
the ratio uses medians. The model's profile is traced once before the rounds (into a temporary cache), so the
rounds measure the cached path: no torch, no user code imported.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], env: dict[str, str], cwd: str) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=True, env=env, cwd=cwd)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=9, help="rounds (default 9)")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="jitplan-startup-")
    shutil.copy(ROOT / "examples" / "models" / "my_denoiser.py", work)
    env = {**os.environ, "JITPLAN_CACHE_DIR": str(Path(work) / "cache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed wheel has its .pyc files
    exe = shutil.which("jitplan")
    jp = [exe] if exe else [sys.executable, "-m", "jitplan"]
    cmds = {
        "import torch": [sys.executable, "-c", "import torch"],
        "plan (JiT seed)": [*jp, "plan", "--gpus", "2xRTX3060", "--host-ram", "24GB"],
        "plan --model (cached)": [*jp, "plan", "--gpus", "1xRTX4090", "--model", "my_denoiser.py:make"],
    }
    for cmd in cmds.values():  # warm: page cache, .pyc files, and the model's trace into the cache
        subprocess.run(cmd, capture_output=True, check=True, env=env, cwd=work)
    cpu: dict[str, list[float]] = {k: [] for k in cmds}
    wall: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(a.n):
        for k, cmd in cmds.items():
            c, w = timed(cmd, env, work)
            cpu[k].append(c)
            wall[k].append(w)
    base_c, base_w = statistics.median(cpu["import torch"]), statistics.median(wall["import torch"])
    print(f"rounds: {a.n}; load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for k in cmds:
        mc, mw = statistics.median(cpu[k]), statistics.median(wall[k])
        print(f"{k:24s} cpu {mc:.3f} s ({mc / base_c:.2f}x)   wall {mw:.3f} s ({mw / base_w:.2f}x)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
