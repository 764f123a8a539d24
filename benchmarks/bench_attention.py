"""Forward+backward time of the JiT network with the ``exact`` (official fp32 QK^T/softmax) and ``sdpa``
attention paths, for the tiny test variant and JiT-B/16.

Prints one line per case (median of the timed iterations after warm-up) and, on CUDA, the peak memory.

    python benchmarks/bench_attention.py                       # CPU: tiny + B/16 batch 2, fp32 and bf16
    python benchmarks/bench_attention.py --device cuda --batch-b16 32
    python benchmarks/bench_attention.py --only tiny --iters 20 --json

Results: benchmarks/RESULTS.md, section "Attention: exact vs sdpa".
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import nullcontext

import torch

from jitmodel.config import ModelConfig
from jitmodel.model import build_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def bench_case(variant: str, img: int, batch: int, attention: str, precision: str, device: torch.device,
               iters: int, warmup: int) -> dict:
    torch.manual_seed(0)
    model = build_model(ModelConfig(variant=variant, img_size=img, attention=attention), device=device)
    with torch.no_grad():  # non-zero outputs so the backward does real work everywhere
        model.final_layer.linear.weight.normal_(std=0.02)
        for b in model.blocks:
            b.adaLN_modulation[-1].weight.normal_(std=0.02)
    model.train()
    x = torch.randn(batch, 3, img, img, device=device)
    t = torch.rand(batch, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    ctx = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(warmup + iters):
        _sync(device)
        t0 = time.perf_counter()
        with ctx:
            out = model(x, t, y)
        out.float().square().mean().backward()
        _sync(device)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
        model.zero_grad(set_to_none=True)
    row = {"variant": variant, "img": img, "batch": batch, "attention": attention, "precision": precision,
           "device": str(device), "ms_median": round(statistics.median(times), 2),
           "ms_min": round(min(times), 2), "iters": iters}
    if device.type == "cuda":
        row["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", choices=["tiny", "b16"], default=None)
    ap.add_argument("--iters", type=int, default=None, help="timed iterations (default: 10 tiny, 3 B/16 on CPU)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch-tiny", type=int, default=32)
    ap.add_argument("--batch-b16", type=int, default=2)
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    cases = []
    if a.only in (None, "tiny"):
        cases.append(("JiT-Tiny/4", 32, a.batch_tiny, a.iters or 10))
    if a.only in (None, "b16"):
        cases.append(("JiT-B/16", 256, a.batch_b16, a.iters or (3 if device.type == "cpu" else 10)))
    print(f"# torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}")
    for variant, img, batch, iters in cases:
        for precision in a.precisions.split(","):
            rows = [bench_case(variant, img, batch, att, precision, device, iters, a.warmup)
                    for att in ("exact", "sdpa")]
            for r in rows:
                if a.json:
                    print(json.dumps(r), flush=True)
                else:
                    mem = f"  peak {r['peak_mem_gib']:.2f} GiB" if "peak_mem_gib" in r else ""
                    print(f"{variant:<11} {img}px b={batch:<3} {precision:<4} {r['attention']:<5} "
                          f"fwd+bwd {r['ms_median']:9.1f} ms (min {r['ms_min']:.1f}){mem}", flush=True)
            if not a.json:
                print(f"{'':<11} sdpa/exact time ratio {rows[1]['ms_median'] / rows[0]['ms_median']:.2f}", flush=True)


if __name__ == "__main__":
    main()
