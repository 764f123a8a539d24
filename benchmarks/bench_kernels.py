"""Kernels one JiT training micro-step issues (forward + backward): the time model's launch-bound term.

Eager: every aten op that is not a view, counted with a dispatch mode on jitmodel's real Denoiser under
FakeTensorMode (no storage, seconds); on CUDA each is one kernel. The blocks' share is the whole count minus a
model with no blocks. Compiled: Inductor's generated kernels for one block's forward + backward (compiled on
the CPU here; the fusion decisions are the scheduler's, shared with the GPU backend) plus the block's matmuls,
which Inductor leaves to the BLAS library. Prints the constants jitplan.planner.timing uses
(KERNELS_PER_BLOCK, KERNELS_OUTSIDE).

    python benchmarks/bench_kernels.py                 # JiT-B/16 at 256 px; --no-compile skips Inductor (~90 s)
"""

from __future__ import annotations

import argparse
import time


def eager_ops(variant: str, img_size: int, batch: int, blocks: bool) -> int:
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils._python_dispatch import TorchDispatchMode

    from jitmodel.config import DiffusionConfig, ModelConfig
    from jitmodel.denoiser import Denoiser

    free = {"view", "_unsafe_view", "expand", "t", "transpose", "permute", "as_strided", "slice", "select",
            "unsqueeze", "squeeze", "detach", "alias", "split", "split_with_sizes", "unbind", "lift_fresh", "empty",
            "new_empty", "empty_strided"}
    n = [0]

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            n[0] += func.__name__.split(".")[0] not in free
            return func(*args, **(kwargs or {}))

    with FakeTensorMode(allow_non_fake_inputs=True):
        den = Denoiser(ModelConfig(variant=variant, img_size=img_size), DiffusionConfig())
        den.train()
        if not blocks:
            den.net.blocks = torch.nn.ModuleList()
            den.net.in_context_start = 1 << 30
        x, y = torch.rand(batch, 3, img_size, img_size) * 2 - 1, torch.randint(0, 1000, (batch,))
        with Count():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = den(x, y)
            loss.backward()
    return n[0]


def compiled_block(variant: str, img_size: int, batch: int) -> tuple[int, int]:
    """(Inductor kernels, matmuls) of one block's forward + backward."""
    import torch
    import torch._inductor.metrics as metrics

    from jitmodel.config import DiffusionConfig, ModelConfig
    from jitmodel.denoiser import Denoiser

    mc = ModelConfig(variant=variant, img_size=img_size)
    net = Denoiser(mc, DiffusionConfig()).net.train()
    blk, d = net.blocks[-1], mc.spec.hidden
    x = torch.randn(batch, mc.spec.grid(img_size) ** 2 + mc.spec.in_context_len, d, requires_grad=True)
    metrics.reset()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = torch.compile(blk)(x, torch.randn(batch, d), net.feat_rope_incontext)
    out.float().sum().backward()
    mm = 7  # qkv, Q K^T, A V, proj, w12, w3, adaLN: forward; the backward needs two per matmul
    return int(metrics.generated_kernel_count), 3 * mm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="JiT-B/16")
    ap.add_argument("--img-size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--no-compile", action="store_true")
    a = ap.parse_args()
    from jitmodel.variants import get_variant

    depth = get_variant(a.variant).depth
    t0 = time.perf_counter()
    whole, outside = eager_ops(a.variant, a.img_size, a.batch, True), eager_ops(a.variant, a.img_size, a.batch, False)
    per_block = (whole - outside) / depth
    print(f"{a.variant} {a.img_size} px, batch {a.batch}: eager {whole} kernels per micro-step = {depth} blocks x "
          f"{per_block:.0f} + {outside} outside ({time.perf_counter() - t0:.1f} s)")
    if not a.no_compile:
        t0 = time.perf_counter()
        gen, mm = compiled_block(a.variant, a.img_size, a.batch)
        print(f"compiled block: {gen} Inductor kernels + {mm} matmuls = {gen + mm} ({time.perf_counter() - t0:.1f} s)")
        print(f"KERNELS_PER_BLOCK = {{'eager': {per_block:.0f}, 'compiled': {gen + mm}}}; KERNELS_OUTSIDE = {outside}")


if __name__ == "__main__":
    main()
