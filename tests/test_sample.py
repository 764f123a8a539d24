"""Samplers: the official grid and call sequence, CFG interval, forward counts, fast == exact, the ODE itself."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from test_sample_tinyckpt import tiny_checkpoint  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

from jitmodel.config import SampleConfig  # noqa: E402
from jitmodel.sample import (  # noqa: E402
    evaluation_points,
    forwards_per_image,
    guidance_weights,
    make_grid,
    noise_for_ids,
    sample,
    time_grid,
    to_uint8,
)


# ---------------------------------------------------------------------------------------- pure schedule
def test_grid_and_evaluation_points_match_the_official_structure():
    g = time_grid(50)
    assert g.dtype == torch.float32 and len(g) == 51 and g[0] == 0 and g[-1] == 1
    heun = evaluation_points("heun", 50)
    assert len(heun) == 99  # 2 * 49 Heun + 1 final Euler
    assert heun[-3:] == [48, 49, 49] and heun[:4] == [0, 1, 1, 2]
    assert evaluation_points("euler", 50) == list(range(50))
    with pytest.raises(ValueError, match="unknown sampler"):
        evaluation_points("ddim", 10)


def test_guidance_only_strictly_inside_the_interval_compared_in_fp32():
    w = guidance_weights(time_grid(50), 2.9, 0.1, 1.0)
    g = time_grid(50).tolist()
    assert all(x == 1.0 for x, t in zip(w, g, strict=True) if t <= 0.1 + 1e-7 or t >= 1.0)
    assert all(x == 2.9 for x, t in zip(w, g, strict=True) if 0.1 + 1e-6 < t < 1.0)
    assert w[5] == 1.0  # t = 0.1 (fp32) is not > 0.1 (fp32): official mask
    assert guidance_weights(time_grid(4), 3.0, 0.0, 1.0) == [3.0, 3.0, 3.0, 3.0, 1.0]  # lo == 0: from t = 0
    with pytest.raises(ValueError, match="above max"):
        guidance_weights(time_grid(4), 3.0, 0.8, 0.2)


@pytest.mark.parametrize("cfg,lo,hi,method,steps,expected_fast", [
    (2.9, 0.1, 1.0, "heun", 50, 187),  # 11 evaluations at t <= 0.1 skip the unconditional forward
    (1.0, 0.1, 1.0, "heun", 50, 99),  # no guidance anywhere: conditional forwards only
    (3.0, 0.0, 1.0, "heun", 50, 198),  # guidance everywhere: nothing to skip
    (2.0, 0.5, 1.0, "euler", 10, 14),  # t = 0.6 .. 0.9 guided: 4 * 2 + 6 * 1
])
def test_forward_counts(cfg, lo, hi, method, steps, expected_fast):
    c = SampleConfig(method=method, steps=steps, cfg=cfg, interval_min=lo, interval_max=hi, mode="fast")
    nfe = len(evaluation_points(method, steps))
    assert forwards_per_image(c.model_copy(update={"mode": "exact"})) == 2 * nfe
    fast = forwards_per_image(c)
    assert fast == expected_fast
    skipped = sum(1 for i in evaluation_points(method, steps)
                  if guidance_weights(time_grid(steps), cfg, lo, hi)[i] == 1.0)
    assert fast == 2 * nfe - skipped <= 99 * 2


# ---------------------------------------------------------------------------------------- call sequence
class Recorder:
    """A stand-in network that records (batch, labels) per call and predicts a label-dependent mean."""

    def __init__(self, num_classes: int = 10):
        self.calls: list[tuple[int, list[int]]] = []
        self.num_classes = num_classes

    def __call__(self, z, t, y):
        self.calls.append((z.shape[0], y.tolist()))
        m = torch.where(y == self.num_classes, 0.0, y.float() / self.num_classes - 0.5).view(-1, 1, 1, 1)
        return (m + 0.1 * z * t.view(-1, 1, 1, 1)).to(torch.bfloat16)  # bf16 out: the state must stay fp32


def test_exact_mode_calls_cond_then_uncond_separately_even_without_guidance():
    rec, y = Recorder(), torch.tensor([3, 7])
    cfg = SampleConfig(steps=5, cfg=1.0, mode="exact")
    img, stats = sample(rec, torch.randn(2, 3, 4, 4), y, cfg, num_classes=10)
    assert img.dtype == torch.float32
    assert len(rec.calls) == 2 * 9 and stats.calls == 18 and stats.forwards == 18 and stats.evaluations == 9
    assert all(c == (2, [3, 7]) for c in rec.calls[0::2])  # conditional first
    assert all(c == (2, [10, 10]) for c in rec.calls[1::2])  # then unconditional (null class)


def test_fast_mode_batches_where_guided_and_skips_elsewhere():
    rec, y = Recorder(), torch.tensor([3, 7])
    cfg = SampleConfig(method="euler", steps=10, cfg=2.0, interval_min=0.5, interval_max=1.0, mode="fast")
    _, stats = sample(rec, torch.randn(2, 3, 4, 4), y, cfg, num_classes=10)
    assert [b for b, _ in rec.calls] == [2] * 6 + [4] * 4  # t <= 0.5 alone; t = .6 .. .9 batched
    assert rec.calls[-1][1] == [3, 7, 10, 10]
    assert stats.forwards == forwards_per_image(cfg) == 14 and stats.calls == 10


def test_labels_out_of_range_are_refused():
    with pytest.raises(ValueError, match=r"\[0, 9\]"):
        sample(Recorder(), torch.randn(1, 3, 4, 4), torch.tensor([10]), SampleConfig(steps=2), num_classes=10)


# ---------------------------------------------------------------------------------------- the ODE itself
def _gaussian_x_hat(m: float, s: float, sigma: float):
    """E[x | z_t] for x ~ N(m, s^2) per pixel and z_t = t x + (1 - t) e, e ~ N(0, sigma^2)."""
    def x_hat(z, t, y):
        t = t.view(-1, 1, 1, 1).double()
        var = t * t * s * s + (1 - t) ** 2 * sigma * sigma
        return (m + t * s * s / var * (z.double() - t * m)).float()
    return x_hat


def _state_error(method: str, steps: int, m: float, s: float, sigma: float) -> float:
    """Max error of the state at t = 1 - 1/steps (before the final Euler step) against the exact flow."""
    z0 = noise_for_ids(list(range(4)), 0, (1, 4, 4), noise_scale=sigma)
    seen = {}
    c = SampleConfig(method=method, steps=steps, cfg=1.0, mode="fast")
    sample(_gaussian_x_hat(m, s, sigma), z0, torch.zeros(4, dtype=torch.long), c, num_classes=1,
           on_step=lambda i, t, z, v: seen.__setitem__(i, (t, z.clone())))
    t, z = seen[steps - 1]
    exact = t * m + math.sqrt(t * t * s * s + (1 - t) ** 2 * sigma * sigma) * z0 / sigma
    return (z - exact).abs().max().item()


def test_heun_follows_the_exact_gaussian_flow_with_second_order_error():
    """Gaussian data has a linear flow: z_t = t m + sqrt(t^2 s^2 + (1-t)^2 sigma^2) z_0 / sigma."""
    m, s, sigma = 0.3, 0.5, 2.0
    h10, h20 = _state_error("heun", 10, m, s, sigma), _state_error("heun", 20, m, s, sigma)
    e10, e20 = _state_error("euler", 10, m, s, sigma), _state_error("euler", 20, m, s, sigma)
    assert h20 < 0.01, h20
    assert h10 / h20 > 3.0, (h10, h20)  # halving dt quarters the error: second order
    assert e10 / e20 < 2.5 and e20 > 5 * h20, (e10, e20, h20)  # Euler: first order


def test_final_step_clamp_leaves_the_official_residual():
    """At 50 steps the last Euler step (t .98 -> 1) divides by max(.02, .05): it moves 40 % of the way."""
    m, s, sigma = 0.0, 0.5, 1.0
    z0 = noise_for_ids([0], 1, (1, 2, 2), noise_scale=sigma)
    seen = {}
    c = SampleConfig(steps=50, cfg=1.0, mode="fast")
    out, _ = sample(_gaussian_x_hat(m, s, sigma), z0, torch.zeros(1, dtype=torch.long), c, num_classes=1,
                    on_step=lambda i, t, z, v: seen.__setitem__(i, (t, z.clone(), v.clone())))
    t, z, v = seen[49]
    assert math.isclose(t, 0.98, rel_tol=1e-6)
    x_hat = _gaussian_x_hat(m, s, sigma)(z, torch.tensor([t]), None)
    assert torch.allclose(out, z + 0.4 * (x_hat - z), atol=1e-5)


# ---------------------------------------------------------------------------------------- a trained tiny model
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from jitmodel.sample import load_for_sampling

    return load_for_sampling(tiny_checkpoint(tmp_path_factory))


@pytest.mark.slow
def test_exact_and_fast_agree_on_a_trained_model(tiny):
    y = torch.tensor([0, 3, 5, 8])
    z = noise_for_ids([0, 1, 2, 3], 0, (3, 32, 32))
    c = SampleConfig(steps=12, cfg=2.5, interval_min=0.1, interval_max=1.0, mode="exact")
    out = {}
    for mode in ("exact", "fast"):
        for ac in (None, torch.bfloat16):
            with torch.no_grad():
                out[mode, ac], st = sample(tiny.x_hat, z, y, c.model_copy(update={"mode": mode}), num_classes=10,
                                           autocast=ac)
            assert st.forwards == forwards_per_image(c.model_copy(update={"mode": mode}))
            assert out[mode, ac].dtype == torch.float32
    assert (out["exact", None] - out["fast", None]).abs().max() < 1e-4  # fp32: rounding only
    bf16 = (out["exact", torch.bfloat16] - out["fast", torch.bfloat16]).abs().max().item()
    assert bf16 < 0.05, bf16  # bf16 network, fp32 state: within bf16 tolerance on [-1, 1] images
    assert (to_uint8(out["exact", None]).int() - to_uint8(out["fast", torch.bfloat16]).int()).abs().float().mean() < 2
    assert out["exact", None].std() > 0.2  # a trained model makes images, not a constant


def test_make_grid_layout():
    imgs = torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 3, 2, 2)
    g = make_grid(imgs, ncol=3, pad=1)
    assert tuple(g.shape) == (2 * 3 + 1, 3 * 3 + 1, 3)
    assert g[1, 1, 0] == 0 and g[1, 4, 0] == 1 and g[4, 1, 0] == 3 and g[4, 7, 0] == 255  # 6th cell empty


def test_noise_is_per_image_and_scaled():
    a = noise_for_ids([0, 1, 2], 5, (3, 8, 8), noise_scale=2.0)
    b = noise_for_ids([2], 5, (3, 8, 8), noise_scale=2.0)
    assert torch.equal(a[2], b[0]) and not torch.equal(a[0], a[1])
    assert 1.5 < a.std().item() < 2.5


def test_save_png_is_atomic_and_keeps_the_usual_mode(tmp_path):
    import os
    import stat

    from PIL import Image

    from jitmodel.sample import save_png

    old = os.umask(0o022)
    try:
        p = save_png(tmp_path / "a" / "x.png", torch.full((4, 6, 3), 7, dtype=torch.uint8))
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644 and [q.name for q in p.parent.iterdir()] == ["x.png"]
    with Image.open(p) as im:
        assert im.size == (6, 4) and im.getpixel((0, 0)) == (7, 7, 7)


@pytest.mark.parametrize("module", ["jitmodel.sample", "jitmodel.fid", "jitmodel.evaluate", "jitmodel.trajectory"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    res = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert res.failed == 0 and res.attempted > 0
