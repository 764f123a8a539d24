"""Trace one real training step of a user's model on fake tensors: ``jitplan plan --model FILE.py:factory``.

The same machinery as JiT's trace (``trace.py``, ``traced_step.tracked_peaks``): the module is built inside
``FakeTensorMode`` on the CPU (shapes and dtypes, no storage), and its training step runs under CPU bf16
autocast inside ``MemTracker``: a flow-matching batch (x, noise, t, labels with the null class), forward,
MSE loss, backward, fused AdamW, two fp32 EMA updates, ``zero_grad(set_to_none=True)``. The step is traced
at two micro-batches (bytes at the forward peak = fixed + per-sample x batch: the slope and the intercept),
then with every block of ``module.blocks`` checkpointed (``jitmodel.strategy.checkpoint_blocks``, the
trainer's own wrapper). ``FlopCounterMode`` counts the forward + backward FLOPs, and a dispatch mode sums
the bytes in and out of every non-view aten op (the time model's elementwise traffic). Imports torch lazily.

    >>> prof = trace_model("jitmodel.archs.dit:DiT", dict(input_size=8, patch=2, depth=2, hidden=64, heads=4,
    ...                    num_classes=10), batches=(2, 4))
    >>> prof.params == prof.trainable and prof.act_per_sample > 0 and prof.flops_per_image > 0
    True
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from jitmodel import custom
from jitplan.planner import model_profile
from jitplan.planner.model_profile import ModelProfile, torch_version
from jitplan.planner.traced_step import tracked_peaks

EMA_DECAYS = (0.9999, 0.9996)


class ModelStep:
    """One rank's training step of a protocol module at ``micro_batch``; call it to run one step."""

    def __init__(self, model: Any, micro_batch: int):
        import torch

        from jitmodel.denoiser import EMA  # lazy: start-up (numpy, pynvml, torch)

        self.model, self.micro_batch = model, micro_batch
        self.model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.0, fused=True)
        self.ema = EMA(model, EMA_DECAYS)

    def ema_tensors(self) -> list[Any]:
        return [t for shadow in self.ema.shadows for t in shadow]

    def __call__(self, count: AbstractContextManager[Any] | None = None) -> None:
        import torch

        m, b = self.model, self.micro_batch
        x = torch.randn(b, m.in_channels, m.input_size, m.input_size)
        e = torch.randn_like(x)
        t = torch.rand(b)
        y = torch.randint(0, m.num_classes + 1, (b,))
        tt = t.view(-1, 1, 1, 1)
        with count or nullcontext():
            z = tt * x + (1 - tt) * e
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = m(z, t, y)
            loss = ((out.float() - (x - e)) ** 2).mean()
            loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.ema.update(m)


def _traffic_mode() -> Any:
    """A dispatch mode that sums the bytes of every non-view op's tensor inputs and outputs."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class Traffic(TorchDispatchMode):
        bytes = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if not getattr(func, "is_view", False):
                for leaf in tree_leaves((args, kwargs, out)):
                    if isinstance(leaf, torch.Tensor):
                        self.bytes += leaf.numel() * leaf.element_size()
            return out

    return Traffic()


def _fake_module(spec: custom.ModelSpec, kwargs: dict[str, Any] | None) -> Any:
    """The factory's module built on ``meta`` (its init code runs without data: a data-dependent init such as
    ``trunc_normal_`` cannot run on fake tensors), then given fake CPU parameters and buffers of the same
    shapes, dtypes and ``requires_grad`` (shared tensors stay shared). Call inside ``FakeTensorMode``."""
    import torch
    from torch import nn

    with torch.device("meta"):
        model = custom.build(spec, kwargs)
    memo: dict[int, tuple[Any, Any]] = {}  # id -> (the meta tensor, kept alive so its id is not reused; fake)
    for mod in model.modules():
        for table, make in ((mod._parameters, lambda t: nn.Parameter(torch.empty(t.shape, dtype=t.dtype),
                                                                     requires_grad=t.requires_grad)),
                            (mod._buffers, lambda t: torch.empty(t.shape, dtype=t.dtype))):
            for name, t in list(table.items()):
                if t is not None:
                    if id(t) not in memo:
                        memo[id(t)] = (t, make(t))
                    table[name] = memo[id(t)][1]
    return model


def _counts(model: Any) -> dict[str, int]:
    from torch import nn

    linear = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, linear))
    blocks = getattr(model, "blocks", None)
    blocks = list(blocks) if isinstance(blocks, nn.ModuleList) else []
    in_blocks = {id(p) for b in blocks for p in b.parameters()}
    return dict(params=sum(p.numel() for p in model.parameters()),
                trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
                matmul_params=matmul, blocks=len(blocks),
                largest_block_params=max((sum(p.numel() for p in b.parameters()) for b in blocks), default=0),
                root_params=sum(p.numel() for p in model.parameters() if id(p) not in in_blocks),
                buffer_bytes=sum(b.numel() * b.element_size() for b in model.buffers()))


def _global_peak_tracker() -> Any:
    """MemTracker that keeps only the global peak: its per-module peaks walk every module on every op (the
    cost of a DiT-XL/2 trace went from minutes to seconds without them; nothing here reads them)."""
    from torch.distributed._tools.mem_tracker import _TOTAL_KEY, MemTracker

    class GlobalPeak(MemTracker):
        def _update_peak_stats(self, peak_state: Any) -> None:
            for dev, dev_snap in self._curr_mem_snap.items():
                if self._peak_mem.get(dev, 0) < dev_snap[_TOTAL_KEY]:
                    self._peak_mem[dev] = dev_snap[_TOTAL_KEY]
                    self._peak_mem_snap[dev] = dict(dev_snap)

    return GlobalPeak()


def flop_counter() -> Any:
    """``FlopCounterMode`` that also counts the CPU flash attention (``F.scaled_dot_product_attention`` on the
    CPU): torch 2.13 registers formulas for the CUDA kernels only, so the stock counter misses a DiT's attention
    (DiT-XL/2: 114.4 instead of the paper's 118.6 GMAC per forward). The CUDA kernels' formulas, mapped."""
    import torch
    from torch.utils import flop_counter as fc

    def forward(q: Any, k: Any, v: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        return int(fc.sdpa_flop_count(q, k, v))

    def backward(grad: Any, q: Any, k: Any, v: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        return int(fc.sdpa_backward_flop_count(grad, q, k, v))

    aten = torch.ops.aten
    return fc.FlopCounterMode(display=False, custom_mapping={
        aten._scaled_dot_product_flash_attention_for_cpu: forward,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: backward})


def _measure(step: ModelStep, count: bool = True) -> tuple[int, float, float]:
    """(peak tensor bytes, forward + backward FLOPs, op traffic bytes) of one steady-state step. ``count``
    False: the peak alone (checkpointed steps: under the counting modes their recompute keeps more alive)."""

    mt = _global_peak_tracker()
    mt.track_external(step.model, step.opt, *step.ema_tensors())
    flops, traffic = flop_counter(), _traffic_mode()

    def counted() -> None:
        with flops:
            step(count=traffic)

    if not count:
        return tracked_peaks(step, mt, 1)[-1][0], 0.0, 0.0  # type: ignore[arg-type]  # as above

    peak = tracked_peaks(counted, mt, 1)[-1][0]  # type: ignore[arg-type]  # tracked_peaks only calls its step
    return peak, float(flops.get_total_flops()), float(traffic.bytes)


def trace_model(spec_text: str, kwargs: dict[str, Any] | None = None, batches: tuple[int, int] = (8, 16),
                digest: str | None = None) -> ModelProfile:
    """Trace the factory's model (fake tensors, CPU) and return its profile; ModelSpecError on a bad factory."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from jitmodel.strategy import checkpoint_blocks  # lazy: start-up (numpy, pynvml, torch)

    spec = custom.parse_spec(spec_text)
    digest = digest or custom.source_digest(spec, kwargs)
    b1, b2 = batches
    if not 0 < b1 < b2:
        raise ValueError(f"batches must be 0 < b1 < b2, got {batches}")
    t0 = time.perf_counter()
    with FakeTensorMode(allow_non_fake_inputs=True):
        model = _fake_module(spec, kwargs)
        counts = _counts(model)
        step = ModelStep(model, b1)
        # MemTracker hooks every parameter's grad and refuses frozen ones (trace.py): trace them as trainable.
        for p in model.parameters():
            p.requires_grad_(True)
        p_opt = 4 * counts["params"] + 4 * counts["trainable"] + 8 * counts["trainable"] + 8 * counts["params"]
        step_peak = p_opt + counts["buffer_bytes"]
        step()  # the first step creates AdamW's state; the measured steps are the steady state
        for _ in range(4):  # grow the batches until the forward, not the optimizer step, holds the peak
            step.micro_batch = b1
            p1, f1, tr1 = _measure(step)
            if p1 > 1.02 * step_peak:
                break
            b1, b2 = 2 * b1, 2 * b2
        step.micro_batch = b2
        p2, f2, tr2 = _measure(step)
        slope = (p2 - p1) / (b2 - b1)
        fixed = int(p1 - slope * b1)
        ckpt = None
        if counts["blocks"]:
            checkpoint_blocks(model, 1)
            ckpt = (_measure(step, count=False)[0] - fixed) / b2
    return ModelProfile(
        spec=spec_text, digest=digest, in_channels=model.in_channels, input_size=model.input_size,
        num_classes=model.num_classes, **counts, fixed_bytes=fixed, act_per_sample=slope, act_per_sample_ckpt=ckpt,
        step_peak_bytes=step_peak, flops_per_image=(f2 - f1) / (b2 - b1), traffic_per_image=(tr2 - tr1) / (b2 - b1),
        batches=(b1, b2), trace_s=round(time.perf_counter() - t0, 2), torch=torch_version())


def profile_for(spec_text: str, kwargs: dict[str, Any] | None = None, cache_dir: Any = None,
                batches: tuple[int, int] = (8, 16), announce: Any = None) -> tuple[ModelProfile, bool]:
    """(the model's profile, whether it came from the cache). The cache key is the digest of the source files,
    factory, arguments, batches and torch's version: a hit reads one JSON file and imports no torch."""
    from pathlib import Path


    spec = custom.parse_spec(spec_text)
    digest = custom.source_digest(spec, kwargs)
    key = model_profile.profile_key(digest, batches)
    cdir = Path(cache_dir) if cache_dir is not None else None
    hit = model_profile.load_cached(cdir, key)
    if hit is not None:
        return hit, True
    if announce is not None:
        announce(f"tracing one training step of {spec_text} on fake tensors (CPU, no allocation; cached after)...")
    prof = trace_model(spec_text, kwargs, batches, digest=digest)
    if cdir is not None:
        model_profile.save_cached(cdir, key, prof)
    return prof, False
