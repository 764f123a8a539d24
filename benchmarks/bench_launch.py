"""What supervision costs: start-up latency of a supervised local run, and the price of a worker-OOM recovery.

    python benchmarks/bench_launch.py                # JiT-Tiny/4 on the digits, CPU, 1 process
    python benchmarks/bench_launch.py --steps 16 --every 4

Runs the real trainer through ``jitplan.launch.supervisor.supervise`` twice with the same config:
a clean run, and one where ``JITMODEL_INJECT_WORKER_KILL`` makes a DataLoader worker SIGKILL itself
(the supervisor detects it, halves the workers and resumes from the last checkpoint). Prints:

- time from ``supervise()`` to the first logged step (torchrun + trainer start-up),
- wall time of each run and the difference (the recovery's price),
- steps lost: steps the failed try logged beyond the checkpoint it was resumed from.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import threading
import time
from pathlib import Path

import yaml

from jitplan.launch.supervisor import supervise
from jitplan.launch.torchrun import TorchrunSpec

BANNER = "JiT-Tiny/4 at 16px"


def config(run_dir: Path, steps: int, every: int, workers: int) -> Path:
    cfg = {"model": {"variant": "JiT-Tiny/4", "img_size": 16, "in_channels": 1, "num_classes": 10},
           "data": {"kind": "digits", "num_workers": workers, "persistent_workers": False},
           "batch_per_gpu": 16, "max_steps": steps, "optim": {"warmup_epochs": 0},
           "checkpoint": {"every_steps": every}, "output_dir": "out", "log_every": 1, "device": "cpu"}
    run_dir.mkdir(parents=True)
    (run_dir / "train.yaml").write_text(yaml.safe_dump(cfg))
    return run_dir / "train.yaml"


def timed_run(run_dir: Path, cfg: Path, inject: str | None) -> dict:
    if inject:
        os.environ["JITMODEL_INJECT_WORKER_KILL"] = inject
    else:
        os.environ.pop("JITMODEL_INJECT_WORKER_KILL", None)
    first: dict[str, float] = {}
    t0 = time.monotonic()

    def watch() -> None:
        log = run_dir / "train.log"
        while "t" not in first and time.monotonic() - t0 < 600:
            if log.exists() and re.search(r"^step \d+ ", log.read_text(errors="replace"), re.M):
                first["t"] = time.monotonic() - t0
            time.sleep(0.05)

    w = threading.Thread(target=watch, daemon=True)
    w.start()
    events: list[tuple[str, dict]] = []
    res = supervise(run_dir, TorchrunSpec(config=str(cfg), omp_num_threads=1), max_restarts=3, poll_s=0.1,
                    events=lambda k, m, d: events.append((k, d)))
    wall = time.monotonic() - t0
    w.join(1)
    tries = (run_dir / "train.log").read_text(errors="replace").split(BANNER)[1:]
    lost = 0
    resumed = [d.get("step") or 0 for k, d in events if k == "resumed"]
    for text, resume_step in zip(tries, resumed, strict=False):  # the last try has no resume after it
        logged = [int(s) for s in re.findall(r"^step (\d+) ", text, re.M)]
        lost += max(0, max(logged, default=resume_step) - resume_step)
    return {"status": res.status, "wall_s": wall, "first_step_s": first.get("t"), "tries": res.attempts,
            "final_step": res.final_step, "workers": res.num_workers, "steps_lost": lost,
            "resumed_from": resumed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--every", type=int, default=2)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-launch-"))
    load0 = os.getloadavg()[0]
    clean = timed_run(root / "clean", config(root / "clean", args.steps, args.every, 2), None)
    oom = timed_run(root / "oom", config(root / "oom", args.steps, args.every, 2), "2")
    load1 = os.getloadavg()[0]
    print(f"load average {load0:.1f} -> {load1:.1f} on {os.cpu_count()} CPUs; {args.steps} steps, "
          f"checkpoint every {args.every}")
    print("| run | status | tries | workers at end | first step after start (s) | wall (s) | steps lost "
          "| resumed from |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in (("clean, 2 workers", clean), ("worker OOM injected at 2 workers", oom)):
        first = f"{r['first_step_s']:.1f}" if r["first_step_s"] is not None else "-"
        print(f"| {name} | {r['status']} | {r['tries']} | {r['workers']} | {first} | {r['wall_s']:.1f} | "
              f"{r['steps_lost']} | {r['resumed_from'] or '-'} |")
    print(f"recovery price: {oom['wall_s'] - clean['wall_s']:+.1f} s wall")


if __name__ == "__main__":
    main()
