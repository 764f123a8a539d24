"""Analytic memory model vs a traced JiT training step (FakeTensorMode + MemTracker, CPU, no allocation).

For each (variant, attention, micro-batch): the analytic tensor peak of one process (jitplan.planner.memory:
fixed state + activations, no DDP buckets, context or headroom, which the trace cannot see) against the
steady-state peak of two traced training steps of jitmodel's real Denoiser (bf16 autocast, fused AdamW,
2 EMAs). Prints a markdown table and, with --jsonl FILE, one JSON line per row (used to fit the constants).

    python benchmarks/bench_memory_trace.py                       # B/16 and L/16, several batch sizes
    python benchmarks/bench_memory_trace.py --quick               # B/16 at 4 and 16 only
    python benchmarks/bench_memory_trace.py --configs B/16:sdpa:4,16 B/32@512:exact:4,16 --jsonl fit.jsonl
"""

from __future__ import annotations

import argparse
import json
import time

from jitmodel.config import DataConfig, ModelConfig, TrainConfig
from jitplan.planner import memory
from jitplan.planner.plan import memory_inputs
from jitplan.planner.trace import trace_step

DEFAULT = ["B/16:exact:4,16,32,64", "L/16:exact:4,16,32"]


def parse(spec: str) -> tuple[str, int, str, list[int]]:
    model, attention, batches = spec.split(":")
    name, _, img = model.partition("@")
    return f"JiT-{name}", int(img or 256), attention, [int(b) for b in batches.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="*", default=DEFAULT, help="VARIANT[@IMG]:ATTENTION:B1,B2,...")
    ap.add_argument("--quick", action="store_true", help="B/16 exact at 4 and 16 only")
    ap.add_argument("--jsonl", help="also append one JSON line per row to this file")
    args = ap.parse_args()
    configs = ["B/16:exact:4,16"] if args.quick else args.configs
    print("| model | attention | batch | analytic (GB) | traced (GB) | error | trace wall (s) |")
    print("|---|---|---|---|---|---|---|")
    errors = []
    for spec in configs:
        variant, img, attention, batches = parse(spec)
        cfg = TrainConfig(model=ModelConfig(variant=variant, img_size=img, attention=attention),
                          data=DataConfig(kind="digits"), compile=False)
        inp = memory_inputs(cfg, world_size=1, accum=1)
        for b in batches:
            t0 = time.perf_counter()
            res = trace_step(cfg, b)
            wall = time.perf_counter() - t0
            pred = memory.predict(inp, b).tensor_peak
            err = (pred - res.peak_bytes) / res.peak_bytes
            errors.append(abs(err))
            print(f"| {variant}@{img} | {attention} | {b} | {pred / 1e9:.3f} | {res.peak_bytes / 1e9:.3f} | "
                  f"{err:+.2%} | {wall:.0f} |", flush=True)
            if args.jsonl:
                with open(args.jsonl, "a") as f:
                    f.write(json.dumps({"variant": variant, "img": img, "attention": attention, "batch": b,
                                        "traced": res.peak_bytes, "predicted": pred,
                                        "categories": res.by_category}) + "\n")
    print(f"\nmax |error| {max(errors):.2%} over {len(errors)} rows (target: within 5%)")


if __name__ == "__main__":
    main()
