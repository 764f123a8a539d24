"""The denoiser: loss on a fixed case, draw order and reproducibility, label dropout, noise scale, t law,
prediction readers, the two EMAs, and a short training smoke test for each prediction type."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from jitmodel import objectives as ob  # noqa: E402
from jitmodel.config import DiffusionConfig, ModelConfig  # noqa: E402
from jitmodel.denoiser import EMA, Denoiser  # noqa: E402

MC = ModelConfig(variant="JiT-Tiny/4", img_size=8, num_classes=10)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Spy(torch.nn.Module):
    """Stands in for the network: records its inputs and returns a fixed output."""

    def __init__(self, out: torch.Tensor | None = None):
        super().__init__()
        self.out, self.calls = out, []

    def forward(self, z, t, y):
        self.calls.append((z.clone(), t.clone(), y.clone()))
        return self.out if self.out is not None else torch.zeros_like(z)


def _den(**diff) -> Denoiser:
    torch.manual_seed(0)
    return Denoiser(MC, DiffusionConfig(**diff))


def test_state_dict_keys_carry_the_net_prefix():
    den = _den()
    assert all(k.startswith("net.") for k in den.state_dict())
    assert "net.pos_embed" in den.state_dict() and "net.in_context_posemb" in den.state_dict()


def test_loss_on_a_fixed_case_is_the_clamped_v_loss():
    den = _den()
    x = torch.full((3, 3, 8, 8), 0.5)
    x[1] = -1.0
    t = torch.tensor([0.5, 0.2, 0.99])  # t=0.99 hits the clamp: divide by 0.05
    noise = torch.zeros_like(x)
    den.net = Spy()  # x_hat = 0
    # per sample: mean((x - 0)^2) / max(1-t, 0.05)^2 = 0.25/0.25, 1/0.64, 0.25/0.0025
    expected = (1.0 + 1 / 0.64 + 100.0) / 3
    assert den.loss_at(x, torch.tensor([1, 2, 3]), t, noise).item() == pytest.approx(expected, rel=1e-6)


def test_forward_draws_in_official_order_and_is_reproducible():
    den = _den(label_drop_prob=0.5, noise_scale=2.0)
    den.net = spy = Spy()
    x = torch.rand(5, 3, 8, 8) * 2 - 1
    y = torch.arange(5)
    loss = den(x, y, generator=torch.Generator().manual_seed(7))
    # replay the draws by hand: label dropout, then t, then noise
    g = torch.Generator().manual_seed(7)
    drop = torch.rand(5, generator=g) < 0.5
    t = torch.sigmoid(torch.randn(5, generator=g) * 0.8 - 0.8)
    e = torch.randn(x.shape, generator=g) * 2.0
    z, tt, yy = spy.calls[0]
    assert torch.equal(yy, torch.where(drop, torch.full_like(y, 10), y))
    assert torch.allclose(tt, t)
    assert torch.allclose(z, t.view(-1, 1, 1, 1) * x + (1 - t.view(-1, 1, 1, 1)) * e)
    expected = (x.pow(2).mean(dim=(1, 2, 3)) / (1 - t).clamp_min(0.05) ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert den(x, y, generator=torch.Generator().manual_seed(7)).item() == loss.item()  # bitwise repeatable


def test_label_dropout_only_in_training_mode():
    den = _den(label_drop_prob=1.0)
    den.net = spy = Spy()
    x, y = torch.zeros(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    den.train()(x, y)
    assert spy.calls[-1][2].eq(10).all()  # all dropped to the null class
    den.eval()(x, y)
    assert torch.equal(spy.calls[-1][2], y)


def test_time_law_is_logit_normal():
    den = _den()
    t = den.sample_t(200_000, generator=torch.Generator().manual_seed(0))
    logit = torch.log(t / (1 - t))
    assert abs(logit.mean().item() + 0.8) < 0.01 and abs(logit.std().item() - 0.8) < 0.01
    assert 0 < t.min() and t.max() < 1


@pytest.mark.parametrize("prediction", ["x", "v", "eps"])
def test_predict_readers_convert_the_network_output(prediction):
    den = _den(prediction=prediction)
    out = torch.randn(2, 3, 8, 8)
    den.net = Spy(out)
    z, t, y = torch.randn(2, 3, 8, 8), torch.tensor([0.3, 0.97]), torch.tensor([1, 2])
    assert torch.allclose(den.x_hat(z, t, y), ob.to_x(out, z, t, prediction, 0.05))
    assert torch.allclose(den.velocity(z, t, y), ob.to_v(out, z, t, prediction, 0.05))
    assert torch.allclose(den.velocity(z, t, y, t_eps=1e-3), ob.to_v(out, z, t, prediction, 1e-3))
    assert torch.allclose(den.predict(z, 0.5, y, "eps"), ob.to_eps(out, z, 0.5, prediction, 0.05))
    assert den.net.calls[-1][1].tolist() == [0.5, 0.5]  # a scalar t is broadcast to (B,)


# ---------------------------------------------------------------------------------------------- EMA


def test_ema_update_math_and_coverage():
    den = _den()
    ema = EMA(den, decays=(0.9, 0.5))
    names = [n for n, _ in den.named_parameters()]
    assert "net.pos_embed" in ema.names and ema.names == names
    start = {n: p.detach().clone() for n, p in den.named_parameters()}
    steps = []
    for k in range(3):
        with torch.no_grad():
            for p in den.parameters():
                p.add_(0.1 * (k + 1))
        steps.append({n: p.detach().clone() for n, p in den.named_parameters()})
        ema.update(den)
    for i, d in enumerate((0.9, 0.5)):
        sd = ema.state_dict(i)
        assert list(sd) == list(den.state_dict())
        for n in ("net.pos_embed", "net.blocks.0.attn.qkv.weight", "net.final_layer.linear.bias"):
            ref = start[n].clone()
            for s in steps:
                ref = ref * d + s[n] * (1 - d)
            assert torch.allclose(sd[n], ref, atol=1e-6), (n, d)


@pytest.mark.slow
def test_ema_warmup_ramps_the_decay_and_is_off_by_default():
    den = _den()
    assert EMA(den).decays_at(0) == (0.9999, 0.9996)  # the official recipe: no warm-up
    warm = EMA(den, decays=(0.995, 0.5), warmup=True)
    assert warm.decays_at(0) == pytest.approx((0.1, 0.1))
    assert warm.decays_at(80) == pytest.approx((0.9, 0.5))
    assert warm.decays_at(10_000) == pytest.approx((0.995, 0.5))
    # After 200 warm-up updates towards fixed weights the shadow is within 5 % of them (no warm-up: 37 % left).
    cold = EMA(den, decays=(0.995, 0.5))
    start = [p.detach().clone() for p in den.parameters()]
    with torch.no_grad():
        for p in den.parameters():
            p.add_(1.0)
    for step in range(200):
        warm.update(den, step=step)
        cold.update(den)
    moved = lambda e: min(float((s - a).mean()) for s, a in zip(e.shadows[0], start, strict=True))  # noqa: E731
    assert moved(warm) > 0.95 and moved(cold) < 0.64
    # The step passed in wins over the count (a resumed run continues the ramp where it was).
    resumed = EMA(den, decays=(0.995, 0.5), warmup=True)
    resumed.update(den, step=5000)
    assert resumed.updates == 5001 and resumed.decays_at(resumed.updates) == pytest.approx((0.995, 0.5))


def test_ema_state_dict_load_and_names():
    den = _den()
    ema = EMA(den)
    ema.update(den)
    with torch.no_grad():
        for p in den.parameters():
            p.mul_(2)
    ema.update(den)
    sd1, sd2 = ({k: v.clone() for k, v in ema.state_dict(w).items()} for w in ("ema1", "ema2"))
    other = EMA(den)
    other.load_state_dicts(sd1, sd2)
    for w in (0, 1):
        for k, v in other.state_dict(w).items():
            assert torch.equal(v, (sd1, sd2)[w][k])
    fresh = _den()
    fresh.load_state_dict(sd2)  # an EMA state dict loads into the module
    with pytest.raises(ValueError, match="lacks"):
        other.load_state_dicts({}, sd2)
    with pytest.raises(ValueError, match="unknown EMA"):
        ema.state_dict("ema3")
    with pytest.raises(ValueError, match="two decays"):
        EMA(den, decays=(0.9,))


def test_ema_swap_in_restores_the_weights():
    den = _den()
    ema = EMA(den)
    with torch.no_grad():
        for p in den.parameters():
            p.add_(1.0)
    before = {k: v.clone() for k, v in den.state_dict().items()}
    ema.update(den)
    with ema.swap_in(den, "ema2") as m:
        for k, v in m.state_dict().items():
            assert torch.equal(v, ema.state_dict("ema2")[k])
    for k, v in den.state_dict().items():
        assert torch.equal(v, before[k])


def test_ema_shadows_are_fp32_for_a_bf16_module():
    den = Denoiser(MC, DiffusionConfig(), dtype=torch.bfloat16)
    ema = EMA(den)
    assert all(s.dtype == torch.float32 for s in ema.shadows[0])
    ema.update(den)
    with ema.swap_in(den, 0):
        pass


# ---------------------------------------------------------------------------------------------- training smoke


@pytest.mark.parametrize("prediction", ["x", "v", "eps"])
@pytest.mark.slow
def test_a_few_adamw_steps_reduce_the_loss(prediction):
    torch.manual_seed(0)
    den = Denoiser(MC, DiffusionConfig(prediction=prediction, label_drop_prob=0.0))
    g = torch.Generator().manual_seed(1)
    x = torch.rand(8, 3, 8, 8, generator=g) * 2 - 1
    y = torch.randint(0, 10, (8,), generator=g)
    t_eval, n_eval = torch.rand(64, generator=g) * 0.8 + 0.1, torch.randn(64, 3, 8, 8, generator=g)
    xe, ye = x.repeat(8, 1, 1, 1), y.repeat(8)

    def eval_loss():
        with torch.no_grad():
            return den.loss_at(xe, ye, t_eval, n_eval).item()

    opt = torch.optim.AdamW([p for p in den.parameters() if p.requires_grad], lr=5e-3, betas=(0.9, 0.95))
    ema = EMA(den, decays=(0.9, 0.5))
    first = eval_loss()
    for _ in range(40):
        loss = den(x, y, generator=g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update(den)
    last = eval_loss()
    assert last < 0.85 * first, (first, last)  # measured: x 0.36, v 0.74, eps 0.57 of the start
    with ema.swap_in(den, "ema2"):
        assert eval_loss() < first
