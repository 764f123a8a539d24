"""Kernels one JiT training micro-step issues (forward + backward): the time model's launch-bound term.

Eager: every aten op that is not a view, counted with a dispatch mode on jitmodel's real Denoiser under
FakeTensorMode (no storage, seconds); on CUDA each is one kernel. The blocks' share is the whole count minus a
model with no blocks. Compiled: Inductor's generated kernels for one block's forward + backward (compiled on
the CPU here; the fusion decisions are the scheduler's, shared with the GPU backend) plus the block's matmuls,
which Inductor leaves to the BLAS library; and the bytes the fused kernels read and write (Inductor's own
per-kernel buffer sizes, after fusion) against the eager ops' bytes: a bound on timing.COMPILE_TRAFFIC. Prints
the constants jitplan.planner.timing uses (KERNELS_PER_BLOCK, KERNELS_OUTSIDE).

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


def compiled_block(variant: str, img_size: int, batch: int) -> tuple[int, int, int]:
    """(Inductor kernels, matmuls, bytes its fused kernels read + write) of one block's forward + backward."""
    import torch
    import torch._inductor.config as inductor_config
    import torch._inductor.metrics as metrics

    from jitmodel.config import DiffusionConfig, ModelConfig
    from jitmodel.denoiser import Denoiser

    fused = [0]

    def after_fusion(nodes):  # type: ignore[no-untyped-def]
        fused[0] += sum(n.get_read_write_buffers_sizes() for n in nodes if not n.is_extern())
        return nodes

    inductor_config._post_fusion_custom_pass = after_fusion
    inductor_config.fx_graph_cache = False  # a cached graph skips the scheduler
    mc = ModelConfig(variant=variant, img_size=img_size)
    net = Denoiser(mc, DiffusionConfig()).net.train()
    blk, d = net.blocks[-1], mc.spec.hidden
    x = torch.randn(batch, mc.spec.grid(img_size) ** 2 + mc.spec.in_context_len, d, requires_grad=True)
    metrics.reset()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = torch.compile(blk)(x, torch.randn(batch, d), net.feat_rope_incontext)
    out.float().sum().backward()
    mm = 7  # qkv, Q K^T, A V, proj, w12, w3, adaLN: forward; the backward needs two per matmul
    return int(metrics.generated_kernel_count), 3 * mm, fused[0]


def eager_block_bytes(variant: str, img_size: int, batch: int) -> int:
    """Input + output bytes of one block's non-matmul, non-view aten ops (forward + backward), eager."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    from jitmodel.config import DiffusionConfig, ModelConfig
    from jitmodel.denoiser import Denoiser

    skip = {"mm", "addmm", "bmm", "baddbmm", "view", "_unsafe_view", "expand", "t", "transpose", "permute",
            "as_strided", "slice", "select", "unsqueeze", "squeeze", "detach", "alias", "split", "split_with_sizes",
            "unbind", "lift_fresh", "empty", "new_empty", "empty_strided"}
    n = [0]

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            out = func(*args, **(kwargs or {}))
            if func.__name__.split(".")[0] not in skip:
                ts = [t for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, torch.Tensor)]
                n[0] += sum(t.numel() * t.element_size() for t in ts)
            return out

    mc = ModelConfig(variant=variant, img_size=img_size)
    net = Denoiser(mc, DiffusionConfig()).net.train()
    blk, d = net.blocks[-1], mc.spec.hidden
    x = torch.randn(batch, mc.spec.grid(img_size) ** 2 + mc.spec.in_context_len, d, requires_grad=True)
    with Count():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = blk(x, torch.randn(batch, d), net.feat_rope_incontext)
        out.float().sum().backward()
    return n[0]


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
        gen, mm, fused = compiled_block(a.variant, a.img_size, a.batch)
        eager = eager_block_bytes(a.variant, a.img_size, a.batch)
        print(f"compiled block: {gen} Inductor kernels + {mm} matmuls = {gen + mm} ({time.perf_counter() - t0:.1f} s)")
        print(f"elementwise bytes of one block, fwd + bwd: compiled {fused / 1e6:.1f} MB vs eager {eager / 1e6:.1f} MB"
              f" = {fused / eager:.3f} (Inductor's C++ backend; its outer-loop fusion is CPU-only, so the GPU's"
              " ratio is at least this)")
        print(f"KERNELS_PER_BLOCK = {{'eager': {per_block:.0f}, 'compiled': {gen + mm}}}; KERNELS_OUTSIDE = {outside}")


if __name__ == "__main__":
    main()
