"""Numerical parity of jitmodel with the official JiT code, run against a checkout you provide.

The official repository (LTH14/JiT; upstream commit cbc743a) is not vendored here. Point this script at a
checkout of it (needs ``einops``); it runs the official ``model_jit.py`` / ``denoiser.py`` unmodified on
the CPU under three shims (see ``_cpu_shims``): the official code hard-codes ``.cuda()``, disables CUDA
autocast for Q K^T, and decorates its blocks with ``torch.compile`` (compiled kernels round differently;
eager against eager is the meaningful comparison). It then checks, for JiT-Tiny/4 (registered
into the official table with the same hyper-parameters) and JiT-B/16 at 64 px:

* same-seed initialisation: every state-dict tensor equal;
* forward with random weights: fp32 and bf16-autocast outputs, bitwise;
* the denoiser: loss and gradients under the same global RNG state, bitwise;
* the two EMAs after a few updates, and the sampler velocity (x-prediction, t_eps clamp), bitwise.

    git clone https://github.com/LTH14/JiT /tmp/JiT && pip install einops
    python benchmarks/parity_official.py --official-dir /tmp/JiT

Results: benchmarks/RESULTS.md, section "Attention: exact vs sdpa" (parity paragraph).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import types

import torch

from jitmodel.config import DiffusionConfig, ModelConfig
from jitmodel.denoiser import EMA, Denoiser
from jitmodel.model import build_model

TINY = dict(depth=4, hidden_size=96, num_heads=4, bottleneck_dim=32, in_context_len=4, in_context_start=1)
B16 = dict(depth=12, hidden_size=768, num_heads=12, bottleneck_dim=128, in_context_len=32, in_context_start=4)


@contextlib.contextmanager
def _cpu_shims():
    """Run the CUDA-only official code on the CPU, changing nothing else.

    ``Tensor.cuda`` returns the tensor itself; ``torch.compile`` returns the function (the decorators are
    applied at import); ``torch.cuda.amp.autocast(enabled=False)``, which the official attention uses to
    keep Q K^T in fp32, becomes its CPU counterpart ``torch.autocast("cpu", enabled=False)``.
    """
    saved = torch.Tensor.cuda, torch.compile, torch.cuda.amp.autocast
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.compile = lambda fn=None, **kw: fn if fn is not None else (lambda f: f)  # type: ignore[assignment]
    torch.cuda.amp.autocast = lambda enabled=True, **kw: torch.autocast("cpu", enabled=enabled, **kw)
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.compile, torch.cuda.amp.autocast = saved  # type: ignore[method-assign]


def _load_official(path: str) -> tuple[types.ModuleType, types.ModuleType]:
    sys.path.insert(0, path)
    import denoiser as off_denoiser
    import model_jit as off_model

    return off_model, off_denoiser


def _randomize_pair(a: torch.nn.Module, b: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for (k, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            if not k.endswith("pos_embed"):
                r = torch.randn(pa.shape, generator=g) * 0.05 + (1.0 if "norm" in k else 0.0)
                pa.copy_(r)
                pb.copy_(r)


def check_network(off_model, variant: str, img: int, kw: dict) -> list[tuple[str, bool]]:
    ncls = 10
    torch.manual_seed(0)
    off = off_model.JiT(input_size=img, num_classes=ncls, **kw)
    torch.manual_seed(0)
    ours = build_model(ModelConfig(variant=variant, img_size=img, num_classes=ncls))
    osd, msd = off.state_dict(), ours.state_dict()
    rows = [(f"{variant}: same keys, order and shapes",
             [(k, v.shape) for k, v in osd.items()] == [(k, v.shape) for k, v in msd.items()]),
            (f"{variant}: same-seed init equal", all(torch.equal(osd[k], msd[k]) for k in osd))]
    _randomize_pair(off, ours, 1)
    off.eval()
    ours.eval()
    g = torch.Generator().manual_seed(2)
    x, t, y = torch.randn(3, 3, img, img, generator=g), torch.rand(3, generator=g), torch.tensor([0, 1, ncls])
    with torch.no_grad():
        rows.append((f"{variant}: fp32 forward bitwise", torch.equal(off(x, t, y), ours(x, t, y))))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rows.append((f"{variant}: bf16-autocast forward bitwise", torch.equal(off(x, t, y), ours(x, t, y))))
    return rows


def check_denoiser(off_model, off_denoiser) -> list[tuple[str, bool]]:
    off_model.JiT_models["JiT-Tiny/4"] = lambda **kw: off_model.JiT(patch_size=4, **TINY, **kw)
    off_denoiser.JiT_models = off_model.JiT_models
    args = types.SimpleNamespace(
        model="JiT-Tiny/4", img_size=32, class_num=10, attn_dropout=0.0, proj_dropout=0.0, label_drop_prob=0.1,
        P_mean=-0.8, P_std=0.8, t_eps=0.05, noise_scale=1.0, ema_decay1=0.9999, ema_decay2=0.9996,
        sampling_method="heun", num_sampling_steps=50, cfg=1.0, interval_min=0.0, interval_max=1.0)
    torch.manual_seed(0)
    off = off_denoiser.Denoiser(args)
    torch.manual_seed(0)
    ours = Denoiser(ModelConfig(variant="JiT-Tiny/4", img_size=32, num_classes=10), DiffusionConfig())
    _randomize_pair(off, ours, 1)
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(16, 3, 32, 32, generator=g) * 2 - 1, torch.randint(0, 10, (16,), generator=g)
    off.train()
    ours.train()
    torch.manual_seed(3)
    lo = off(x, y)
    torch.manual_seed(3)
    lm = ours(x, y)
    lo.backward()
    lm.backward()
    rows = [("denoiser: training loss bitwise", torch.equal(lo, lm)),
            ("denoiser: gradients bitwise", all(torch.equal(p.grad, q.grad) for p, q in
                                                zip(off.parameters(), ours.parameters(), strict=True)
                                                if p.grad is not None))]
    off.ema_params1 = [p.detach().clone() for p in off.parameters()]
    off.ema_params2 = [p.detach().clone() for p in off.parameters()]
    ema = EMA(ours, (0.9999, 0.9996))
    with torch.no_grad():
        for p, q in zip(off.parameters(), ours.parameters(), strict=True):
            d = torch.randn(p.shape, generator=g)
            p.add_(d)
            q.add_(d)
    for _ in range(3):
        off.update_ema()
        ema.update(ours)
    rows.append(("EMA 0.9999 / 0.9996 after 3 updates bitwise",
                 all(torch.equal(a, b) for a, b in zip(off.ema_params1, ema.shadows[0], strict=True))
                 and all(torch.equal(a, b) for a, b in zip(off.ema_params2, ema.shadows[1], strict=True))))
    off.eval()
    ours.eval()
    z, t = torch.randn(4, 3, 32, 32, generator=g), torch.tensor([0.0, 0.3, 0.97, 1.0])
    yy = torch.tensor([1, 2, 3, 10])
    off.cfg_scale, off.cfg_interval = 3.0, (0.1, 1.0)  # a README recipe: CFG 3.0 on (0.1, 1]
    tb = t.view(-1, 1, 1, 1)
    with torch.no_grad():
        vo = off._forward_sample(z, tb, yy)
        vc, vu = ours.velocity(z, t, yy), ours.velocity(z, t, torch.full_like(yy, 10))
        w = torch.where((tb < 1.0) & (tb > 0.1), 3.0, 1.0)
        rows.append(("sampler CFG velocity (x-pred, t_eps clamp) bitwise", torch.equal(vo, vu + w * (vc - vu))))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official-dir", required=True, help="a checkout of LTH14/JiT")
    ap.add_argument("--skip-b16", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    with _cpu_shims():
        off_model, off_denoiser = _load_official(a.official_dir)
        rows = check_network(off_model, "JiT-Tiny/4", 32, dict(patch_size=4, **TINY))
        if not a.skip_b16:
            rows += check_network(off_model, "JiT-B/16", 64, dict(patch_size=16, **B16))
        rows += check_denoiser(off_model, off_denoiser)
    for name, ok in rows:
        print(f"{'OK  ' if ok else 'DIFF'} {name}")
    return 0 if all(ok for _, ok in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
