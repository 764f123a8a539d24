"""Peak tensor bytes of one inference forward of jitmodel's real denoiser, traced without allocating.

Checks (and calibrated) jitplan.planner.inference's activation model: FakeTensorMode + MemTracker on the CPU,
``torch.no_grad()``, bf16 autocast (the dtypes MPS/CUDA autocast use), the EMA weights in fp32 as
``jitmodel sample`` holds them. Prints traced vs predicted for a few variants, sizes and forward batches.

    PYTHONPATH=. python benchmarks/bench_infer_memory.py
"""

from __future__ import annotations

import sys

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributed._tools.mem_tracker import MemTracker

from jitmodel.config import DiffusionConfig, ModelConfig
from jitmodel.denoiser import Denoiser
from jitplan.planner.inference import forward_activation_bytes, weight_items


def traced_forward(variant: str, img_size: int, batch: int, attention: str = "exact",
                   dtype: torch.dtype | None = torch.bfloat16) -> tuple[int, int]:
    """(peak tensor bytes of one forward at ``batch``, parameter bytes) under no_grad + autocast."""
    mc = ModelConfig(variant=variant, img_size=img_size, attention=attention)
    with FakeTensorMode(allow_non_fake_inputs=True):
        den = Denoiser(mc, DiffusionConfig()).eval()
        # MemTracker hooks every parameter's grad and refuses frozen ones (torch 2.13, seen 2026-11); jitmodel
        # sample leaves requires_grad on (so autocast caches the half-precision weight copies, as counted).
        for p in den.parameters():
            p.requires_grad_(True)
        mt = MemTracker()
        mt.track_external(den)
        z = torch.randn(batch, 3, img_size, img_size)
        t = torch.rand(batch)
        y = torch.randint(0, 1000, (batch,))
        with mt, torch.no_grad():
            if dtype is None:
                den.x_hat(z, t, y)
            else:
                with torch.autocast("cpu", dtype=dtype):
                    den.x_hat(z, t, y)
            snap = mt.get_tracker_snapshot("peak")
    total = params = 0
    for dev_stats in snap.values():
        for key, val in dev_stats.items():
            name = str(getattr(key, "value", key)).lower()
            total += int(val) if name == "total" else 0
            params += int(val) if name == "parameter" else 0
    return total, params


def main() -> int:
    cases = [("JiT-B/16", 256, "exact", "bf16"), ("JiT-B/16", 256, "exact", "fp32"), ("JiT-B/16", 128, "exact", "bf16"),
             ("JiT-B/16", 256, "sdpa", "bf16"), ("JiT-L/16", 256, "exact", "bf16"), ("JiT-B/32", 512, "exact", "bf16")]
    print("traced = FakeTensorMode + MemTracker peak of one forward; "
          "predicted = weight_items + forward_activation_bytes")
    print(f"{'case':30} {'traced b=2/8 MB':>17} {'predicted b=2/8 MB':>19} {'slope MB/sample traced/pred':>28}")
    for variant, size, attn, dt in cases:
        traced, pred = [], []
        for b in (2, 8):
            total, _ = traced_forward(variant, size, b, attn, None if dt == "fp32" else torch.bfloat16)
            fixed = sum(i.bytes for i in weight_items(variant, size, dt))
            traced.append(total)
            pred.append(fixed + forward_activation_bytes(variant, size, b, attention=attn, dtype=dt))
        st, sp = (traced[1] - traced[0]) / 6e6, (pred[1] - pred[0]) / 6e6
        print(f"{variant + ' ' + str(size) + ' ' + attn + ' ' + dt:30} {traced[0] / 1e6:8.1f}/{traced[1] / 1e6:<8.1f} "
              f"{pred[0] / 1e6:9.1f}/{pred[1] / 1e6:<9.1f} {st:13.2f}/{sp:<6.2f} ({sp / st - 1:+.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
