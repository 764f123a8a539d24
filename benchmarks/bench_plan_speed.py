"""Wall time of `jitplan plan` as a user runs it (a fresh process each time) and what it imports.

    python benchmarks/bench_plan_speed.py            # 15 runs of the seed command, median and spread
    python benchmarks/bench_plan_speed.py -n 30 -- --gpus 2x8xH100 --json

Target: median <= 0.3 s on the 2-core CI machine, and neither torch, numpy nor vastai imported.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

SEED = ["--gpus", "2xRTX3060", "--host-ram", "24GB"]
PROBE = ("import sys; from jitplan.cli import run; rc = run(['plan', *sys.argv[1:]]); "
         "print('HEAVY', ','.join(m for m in ('torch', 'numpy', 'vastai') if m in sys.modules), file=sys.stderr)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=15, help="runs (default 15)")
    ap.add_argument("--no-pyc", action="store_true",
                    help="keep PYTHONDONTWRITEBYTECODE (compile every module from source on every run)")
    ap.add_argument("args", nargs="*", help="arguments after `jitplan plan` (default: the seed case)")
    a = ap.parse_args()
    env = dict(os.environ)
    if not a.no_pyc:  # an installed wheel has its .pyc files; this box sets PYTHONDONTWRITEBYTECODE=1
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    args = a.args or SEED
    exe = shutil.which("jitplan")
    cmd = [exe, "plan", *args] if exe else [sys.executable, "-m", "jitplan", "plan", *args]
    subprocess.run(cmd, capture_output=True, check=True, env=env)  # warm the page cache and .pyc files
    walls, cpus = [], []
    for _ in range(a.n):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True, env=env)
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    probe = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True, env=env)
    heavy = [ln.split(" ", 1)[1] if " " in ln else "" for ln in probe.stderr.splitlines() if ln.startswith("HEAVY")]
    q = statistics.quantiles(walls, n=10)
    print(f"command: {' '.join(cmd)}  (.pyc files: {'no' if a.no_pyc else 'yes'})")
    print(f"runs: {a.n}  median: {statistics.median(walls):.3f} s  p10: {q[0]:.3f} s  p90: {q[-1]:.3f} s  "
          f"min: {min(walls):.3f} s")
    print(f"cpu (user+sys) median: {statistics.median(cpus):.3f} s  min: {min(cpus):.3f} s  "
          f"(what the wall would be on an idle machine; one process, one thread)")
    print(f"load average during the runs: {' '.join(f'{x:.1f}' for x in __import__('os').getloadavg())}")
    print(f"heavy modules imported: {heavy[0] or 'none'}")
    print("target: median <= 0.300 s -> " + ("OK" if statistics.median(walls) <= 0.3 else "MISSED"))


if __name__ == "__main__":
    main()
