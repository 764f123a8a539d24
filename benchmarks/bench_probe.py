"""Wall time of ``jitplan probe`` and ``jitplan doctor`` as a user runs them (fresh processes).

Budgets (issue #5): probe <= 1 s without a GPU; doctor without --deep <= 3 s.

    python benchmarks/bench_probe.py            # 7 runs each, prints medians
    python benchmarks/bench_probe.py --runs 15

doctor is measured three ways: cold (``--no-cache``: torch imported in a child every time), warm (the
cached successful import is reused because torch's files did not change), and with a replayed
2xRTX3060 + plan + dataset (the story's full check set, warm).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(argv: list[str], env: dict[str, str], runs: int) -> tuple[float, float, int]:
    times, rc = [], 0
    for _ in range(runs):
        t0 = time.perf_counter()
        rc = subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), rc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    jp = [sys.executable, "-m", "jitplan"]
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "JITPLAN_CACHE_DIR": tmp, "COLUMNS": "200"}
        plan = Path(tmp) / "plan.yaml"
        subprocess.run([*jp, "plan", "--gpus", "2xRTX3060", "--host-ram", "24GB", "--out", str(plan)], cwd=ROOT,
                       env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        data = Path(tmp) / "ds" / "train"
        for c in ("n01440764", "n01443537"):
            (data / c).mkdir(parents=True)
            for i in range(50):
                (data / c / f"{i}.JPEG").write_bytes(b"")
        replay = ["--replay-nvml", "tests/data/nvml/2x_rtx3060.yaml", "--host-root", "tests/data/cgroup/v2_24g"]
        cases = [
            ("python -c pass (interpreter floor)", [sys.executable, "-c", "pass"]),
            ("jitplan --help", [*jp, "--help"]),
            ("jitplan probe", [*jp, "probe"]),
            ("jitplan probe --json", [*jp, "probe", "--json"]),
            ("jitplan probe --json (replayed 2xRTX3060)", [*jp, "probe", "--json", *replay]),
            ("jitplan doctor --no-cache (cold: imports torch in a child)", [*jp, "doctor", "--no-cache"]),
            ("jitplan doctor (warm: cached import)", [*jp, "doctor"]),
            ("jitplan doctor --plan --data (replayed 2xRTX3060, warm)",
             [*jp, "doctor", "--plan", str(plan), "--data", str(data.parent), *replay]),
        ]
        subprocess.run([*jp, "doctor"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)  # fill the cache
        print(f"{'command':62s} {'median s':>9s} {'min s':>7s} {'rc':>3s}  ({args.runs} runs, {os.cpu_count()} CPUs)")
        for name, argv in cases:
            med, best, rc = timed(argv, env, args.runs)
            print(f"{name:62s} {med:9.3f} {best:7.3f} {rc:3d}")
        from jitplan.hardware.probe import run_probe

        run_probe()  # imports warmed
        inproc = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            run_probe()
            inproc.append(time.perf_counter() - t0)
        print(f"{'run_probe() in-process (the probe itself, imports excluded)':62s} "
              f"{statistics.median(inproc):9.3f} {min(inproc):7.3f}   -")


if __name__ == "__main__":
    main()
