"""Elementwise memory traffic of one eager JiT training step, counted op by op (the time model's constants).

Runs jitmodel's real Denoiser under FakeTensorMode on the CPU (no storage: any size, seconds) with a dispatch
mode that adds up the input + output bytes of every aten op except matmuls/convolutions/SDPA (timed at the
tensor rate instead) and views (free). Tensors whose last two dims are (s, s) are the attention matrix.
Two batch sizes separate the per-image slope from the per-step part (weight casts). Prints the constants
jitplan.planner.timing uses (TRAFFIC_TOKEN, TRAFFIC_ATTN, TRAFFIC_CAST_PER_PARAM).

    python benchmarks/bench_traffic.py                      # JiT-B/16 at 256 px, exact and sdpa
    python benchmarks/bench_traffic.py --variant JiT-B/32 --img-size 256
"""

from __future__ import annotations

import argparse
import time


def count(variant: str, img_size: int, attention: str, batch: int) -> tuple[float, float]:
    """(token-wise bytes, attention-matrix bytes) of one fwd+bwd at ``batch``."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    from jitmodel.config import DiffusionConfig, ModelConfig
    from jitmodel.counts import seq_lens
    from jitmodel.denoiser import Denoiser

    matmul = {"mm", "addmm", "bmm", "baddbmm", "convolution", "convolution_backward",
              "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention_for_cpu_backward"}
    free = {"view", "_unsafe_view", "expand", "t", "transpose", "permute", "as_strided", "slice", "select",
            "unsqueeze", "squeeze", "detach", "alias", "split", "split_with_sizes", "unbind", "lift_fresh", "empty",
            "new_empty", "empty_strided"}
    mc = ModelConfig(variant=variant, img_size=img_size, attention=attention)
    square = {(s, s) for s in seq_lens(mc.spec, img_size)}
    totals = {"token": 0, "attn": 0}

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            out = func(*args, **(kwargs or {}))
            name = func.__name__.split(".")[0]
            outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
            if name in free or name in matmul or not outs:
                return out
            ts = [t for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, torch.Tensor)]
            nbytes = sum(t.numel() * t.element_size() for t in ts)
            key = "attn" if any(t.dim() >= 2 and tuple(t.shape[-2:]) in square for t in ts) else "token"
            totals[key] += nbytes
            return out

    with FakeTensorMode(allow_non_fake_inputs=True):
        den = Denoiser(mc, DiffusionConfig())
        den.train()
        x = torch.rand(batch, 3, img_size, img_size) * 2 - 1
        y = torch.randint(0, 1000, (batch,))
        with Count():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = den(x, y)
            loss.backward()
    return float(totals["token"]), float(totals["attn"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="JiT-B/16")
    ap.add_argument("--img-size", type=int, default=256)
    ap.add_argument("--batches", default="2,4")
    a = ap.parse_args()
    from jitmodel.counts import param_breakdown, seq_lens
    from jitmodel.variants import get_variant

    v = get_variant(a.variant)
    lens = seq_lens(v, a.img_size)
    th, hs2 = v.hidden * sum(lens), v.heads * sum(s * s for s in lens)
    p = param_breakdown(v, a.img_size).total
    b1, b2 = (int(b) for b in a.batches.split(","))
    for attention in ("exact", "sdpa"):
        t0 = time.perf_counter()
        (t1, a1), (t2, a2) = count(a.variant, a.img_size, attention, b1), count(a.variant, a.img_size, attention, b2)
        slope_tok, slope_att = (t2 - t1) / (b2 - b1), (a2 - a1) / (b2 - b1)
        per_step = t1 - b1 * slope_tok
        print(f"{a.variant} {a.img_size}px {attention:5s}: {slope_tok / th:6.0f} B/(token x hidden x block), "
              f"{slope_att / hs2:5.1f} B/(head x s^2 x block) per image; per step {per_step / 1e9:.2f} GB = "
              f"{per_step / p:.1f} B/param ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
