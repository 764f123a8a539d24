"""Traced plan vs a real CPU training step for the architectures of jitmodel.archs, and the first-trace time
of DiT-XL/2 at 256 px (latent 32x32x4). Prints a markdown table; the numbers go to docs/models.md.

    python benchmarks/bench_trace_models.py            # the three small models vs their real step + DiT-XL/2
    python benchmarks/bench_trace_models.py --no-xl    # without the DiT-XL/2 trace
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SMALL = dict(input_size=16, patch=2, in_channels=4, hidden=128, heads=4, num_classes=10)
CASES = [
    ("DiT (adaLN-Zero)", "jitmodel.archs.dit:DiT", dict(SMALL, depth=4)),
    ("U-ViT (long skips)", "jitmodel.archs.uvit:UViT", dict(SMALL, depth=5)),
    ("DiT cross-attention", "jitmodel.archs.crossattn:CrossDiT", dict(SMALL, depth=4)),
]
BATCH = 12


def real_step(spec: str, kw: dict, batch: int) -> tuple[int, float]:
    import torch
    from torch.distributed._tools.mem_tracker import MemTracker

    from jitmodel import custom
    from jitplan.planner.traced_model import ModelStep, flop_counter
    from jitplan.planner.traced_step import tracked_peaks

    torch.manual_seed(0)
    step = ModelStep(custom.build(custom.parse_spec(spec), kw), batch)
    step()
    mt = MemTracker()
    mt.track_external(step.model, step.opt, *step.ema_tensors())
    peak = tracked_peaks(step, mt, 1)[-1][0]
    flops = flop_counter()
    with flops:
        step()
    return peak, float(flops.get_total_flops())


def main() -> None:
    from jitplan.planner.traced_model import trace_model

    print(f"load average {os.getloadavg()}, {os.cpu_count()} CPUs")
    print(f"| model | traced bytes at b={BATCH} | real step bytes | error | traced FLOPs | real FLOPs | error |")
    print("|---|---|---|---|---|---|---|")
    for name, spec, kw in CASES:
        prof = trace_model(spec, kw, batches=(4, 8))
        peak, flops = real_step(spec, kw, BATCH)
        tb, tf = prof.forward_peak(BATCH), prof.flops_per_image * BATCH
        print(f"| {name} | {tb:,} | {peak:,} | {tb / peak - 1:+.2%} | {tf:.4g} | {flops:.4g} | {tf / flops - 1:+.2%} |")
    if "--no-xl" not in sys.argv:
        t0 = time.perf_counter()
        prof = trace_model("jitmodel.archs.dit:dit_xl_2")
        print(f"DiT-XL/2 first trace: {time.perf_counter() - t0:.1f} s (load average after: {os.getloadavg()}); "
              f"{prof.params / 1e6:.1f}M params, {prof.flops_per_image / 1e9:.1f} GFLOP/image, "
              f"{prof.act_per_sample / 1e6:.0f} MB/sample activations, batches {prof.batches}")


if __name__ == "__main__":
    main()
