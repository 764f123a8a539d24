"""The shipped objectives study: x vs v vs eps prediction (v-space loss) on the digits, same budget and seed.

Runs ``jitplan compare jitplan/templates/compare/digits.yaml --objectives x,v,eps`` (JiT-Tiny/8 at 32 px: 192-value
patches, width 96) on this machine's CPU and prints the side-by-side table; the results folder holds
results.json, summary.md, loss.png and grids/. A few CPU minutes per arm; run it alone, e.g.

    nohup python benchmarks/digits_objectives.py --steps 600 --out runs/study-digits > study.log 2>&1 &
    python benchmarks/digits_objectives.py --steps 600 --out runs/study-digits --docs-img docs/img

The numbers it printed for the shipped study are in benchmarks/RESULTS.md ("Objectives study (digits)")
and docs/objectives.md ("Study").
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "jitplan" / "templates" / "compare" / "digits.yaml"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600, help="optimizer steps per arm (batch 64)")
    p.add_argument("--objectives", default="x,v,eps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="OMP threads per arm (1 is fastest on a busy 2-core box)")
    p.add_argument("--per-class", type=int, default=20, help="samples per digit for accuracy / FD")
    p.add_argument("--out", default="runs/study-digits")
    p.add_argument("--docs-img", default=None, help="also copy loss.png and the grids into this folder")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("JITMODEL_NO_PROGRESS", "1")

    from jitplan import compare

    base = compare.load_base(TEMPLATE)
    arms = compare.parse_arms(None, args.objectives)
    t0 = time.monotonic()
    res = compare.run_compare(base, arms, compare.Budget(steps=args.steps), args.out,
                              runner=compare.LocalRunner(base, threads=args.threads, echo=sys.stderr),
                              seed=args.seed, per_class=args.per_class, threads=args.threads,
                              note=lambda m: print(m, file=sys.stderr))
    total = time.monotonic() - t0
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads/arm "
          f"{args.threads}, total {total / 60:.1f} min")
    print(compare.summary_markdown(res))
    for a in res.arms:
        print(f"{a.arm}: wall {a.wall_s:.0f} s, v-loss by t: "
              + ", ".join(f"{t:.2f}:{v:.3g}" for t, v in a.v_loss_by_t[::3]))
    if args.docs_img:
        dst = Path(args.docs_img)
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(args.out) / "loss.png", dst / "objectives_digits_loss.png")
        for a in res.arms:
            if a.grid:
                shutil.copyfile(a.grid, dst / f"objectives_digits_{Path(a.grid).name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
