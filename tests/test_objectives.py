"""x / v / eps conversions on the straight path z = t*x + (1-t)*e: round trips, agreement with finite
differences of the ODE dz/dt = v, the t_eps clamp, and the losses."""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch")

from jitmodel import objectives as ob  # noqa: E402

KINDS = ["x", "v", "eps"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def case():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    e = torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([0.1, 0.25, 0.4, 0.5, 0.75, 0.9], dtype=torch.float64)  # clamp inactive (t_eps=0.05)
    return x, e, t, ob.interpolate(x, e, t)


@pytest.mark.parametrize("src,dst", list(itertools.product(KINDS, KINDS)))
def test_true_values_convert_into_each_other(case, src, dst):
    x, e, t, z = case
    got = ob.convert(ob.target(x, e, src), z, t, src, dst)
    assert torch.allclose(got, ob.target(x, e, dst), atol=1e-12)


@pytest.mark.parametrize("src,dst", list(itertools.permutations(KINDS, 2)))
def test_round_trip_on_arbitrary_tensors(case, src, dst):
    _, _, t, z = case
    out = torch.randn_like(z)  # any network output, not only a consistent one
    back = ob.convert(ob.convert(out, z, t, src, dst), z, t, dst, src)
    assert torch.allclose(back, out, atol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_velocity_matches_finite_differences_of_the_path(case, kind):
    x, e, t, _ = case
    h = 1e-4
    fd = (ob.interpolate(x, e, t + h) - ob.interpolate(x, e, t - h)) / (2 * h)  # dz/dt along the straight path
    z = ob.interpolate(x, e, t)
    v = ob.to_v(ob.target(x, e, kind), z, t, kind)
    assert torch.allclose(v, fd, atol=1e-8)


@pytest.mark.parametrize("kind", KINDS)
def test_euler_step_with_the_converted_velocity_follows_the_path(case, kind):
    x, e, t, z = case
    dt = 0.05
    v = ob.to_v(ob.target(x, e, kind), z, t, kind)
    z_next = z + dt * ob.expand_t(torch.ones_like(t), z) * v  # exact for a straight line
    assert torch.allclose(z_next, ob.interpolate(x, e, t + dt), atol=1e-12)


def test_t_eps_clamp_near_the_ends():
    z = torch.zeros(2, 1, 1, 1)
    out = torch.ones(2, 1, 1, 1)
    t = torch.tensor([0.99, 0.01])
    # from x: divide by max(1-t, 0.05): 1/0.05 = 20 at t=0.99, 1/0.99 at t=0.01
    assert torch.allclose(ob.to_v(out, z, t, "x").flatten(), torch.tensor([20.0, 1 / 0.99]))
    # from eps: divide by max(t, 0.05): -1/0.99 at t=0.99, -1/0.05 = -20 at t=0.01
    assert torch.allclose(ob.to_v(out, z, t, "eps").flatten(), torch.tensor([-1 / 0.99, -20.0]))
    assert torch.allclose(ob.to_x(out, z, t, "eps").flatten(), torch.tensor([-0.01 / 0.99, -0.99 / 0.05]))
    # from v: no division, no clamp
    assert torch.allclose(ob.to_x(out, z, t, "v").flatten(), torch.tensor([0.01, 0.99]))
    # a different clamp
    assert torch.allclose(ob.to_v(out, z, t, "x", t_eps=1e-3).flatten(), torch.tensor([100.0, 1 / 0.99]))


@pytest.mark.parametrize("pred,space", list(itertools.product(KINDS, KINDS)))
def test_perfect_prediction_has_zero_loss(case, pred, space):
    x, e, t, z = case
    assert ob.loss(ob.target(x, e, pred), x, e, z, t, pred, space).item() < 1e-20


def test_official_x_prediction_v_loss_formula():
    g = torch.Generator().manual_seed(1)
    x, xh, e = (torch.randn(4, 3, 2, 2, generator=g) for _ in range(3))
    t = torch.tensor([0.2, 0.5, 0.96, 0.999])  # the last two hit the clamp
    z = ob.interpolate(x, e, t)
    got = ob.per_sample_loss(xh, x, e, z, t, "x", "v", t_eps=0.05)
    w = torch.clamp(1 - t, min=0.05)
    expected = ((x - xh) ** 2).mean(dim=(1, 2, 3)) / w**2
    assert torch.allclose(got, expected, rtol=1e-5)
    assert torch.isclose(ob.loss(xh, x, e, z, t, "x", "v"), expected.mean(), rtol=1e-5)


def test_loss_space_weights_relate_as_the_conversions_say(case):
    x, e, t, z = case
    xh = x + 0.1 * torch.randn_like(x)
    lx = ob.per_sample_loss(xh, x, e, z, t, "x", "x")
    lv = ob.per_sample_loss(xh, x, e, z, t, "x", "v")
    le = ob.per_sample_loss(xh, x, e, z, t, "x", "eps")
    assert torch.allclose(lv, lx / (1 - t) ** 2)
    assert torch.allclose(le, lx * t**2 / (1 - t) ** 2)
    # eps-prediction read in x-space weighs errors by ((1-t)/t)^2
    eh = e + 0.1 * torch.randn_like(e)
    assert torch.allclose(ob.per_sample_loss(eh, x, e, z, t, "eps", "x"),
                          ob.per_sample_loss(eh, x, e, z, t, "eps", "eps") * ((1 - t) / t) ** 2)


def test_scalar_and_per_sample_t_broadcast():
    z = torch.randn(3, 2, 4, 4)
    out = torch.randn_like(z)
    a = ob.to_x(out, z, 0.3, "v")
    b = ob.to_x(out, z, torch.full((3,), 0.3), "v")
    assert torch.allclose(a, b)
    with pytest.raises(ValueError, match="t has shape"):
        ob.to_x(out, z, torch.rand(2), "v")


def test_unknown_kind_is_a_value_error():
    z = torch.zeros(1, 1, 1, 1)
    with pytest.raises(ValueError, match="unknown prediction/loss space 'score'"):
        ob.convert(z, z, 0.5, "x", "score")
    with pytest.raises(ValueError, match="unknown"):
        ob.to_v(z, z, 0.5, "noise")


@pytest.mark.slow
def test_docs_examples_run():
    import re
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "objectives.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 3
    for code in blocks:
        exec(compile(code, "docs/objectives.md", "exec"), {})
