"""Parameter and FLOP counts from the variant table (no torch), checked against the paper and the real model."""

from __future__ import annotations

import pytest

from jitmodel.counts import (
    forward_flops_per_image,
    param_count,
    sample_flops_per_image,
    seq_lens,
    token_layers,
    train_flops_per_image,
)


@pytest.mark.parametrize("variant,img,millions", [
    ("JiT-B/16", 256, 131.12), ("JiT-L/16", 256, 458.88), ("JiT-H/16", 256, 952.51),
    ("JiT-B/32", 512, 133.19), ("JiT-L/32", 512, 461.53), ("JiT-H/32", 512, 956.06),
])
def test_trainable_params_match_reference(variant, img, millions):
    assert round(param_count(variant, img) / 1e6, 2) == millions


def test_pos_embed_is_not_trainable():
    assert param_count("JiT-B/16", 256, trainable=False) - param_count("JiT-B/16", 256) == 256 * 768


@pytest.mark.parametrize("variant,img,gmac", [("JiT-B/16", 256, 25), ("JiT-L/16", 256, 88), ("JiT-H/16", 256, 182),
                                              ("JiT-B/32", 512, 26), ("JiT-G/16", 256, 383)])
def test_forward_gmac_matches_paper_gflops(variant, img, gmac):
    # The paper's "Gflops" column counts multiply-accumulates (DiT convention).
    assert forward_flops_per_image(variant, img) / 2e9 == pytest.approx(gmac, rel=0.02)


def test_train_flops_b16():
    assert train_flops_per_image("JiT-B/16", 256) / 1e9 == pytest.approx(152.7, abs=0.1)


def test_not_six_n_total_t():
    # adaLN holds a third of the parameters but does per-sample work: 6*N*T would be ~30% too high.
    six_nt = 6 * param_count("JiT-B/16") * 256
    assert six_nt > 1.25 * train_flops_per_image("JiT-B/16")


def test_sequence_lengths_include_in_context_tokens():
    lens = seq_lens("JiT-B/16")
    assert lens[:4] == [256] * 4 and lens[4:] == [288] * 8
    assert token_layers("JiT-B/16") == 3328


def test_sampling_flops_heun_cfg():
    # Heun-50: 99 network calls, each conditional + unconditional.
    assert sample_flops_per_image("JiT-B/16") == pytest.approx(198 * forward_flops_per_image("JiT-B/16"))
    assert sample_flops_per_image("JiT-B/16", method="euler", steps=50) == pytest.approx(
        100 * forward_flops_per_image("JiT-B/16"))


@pytest.mark.parametrize("variant", ["JiT-Tiny/4", "JiT-B/16", "JiT-L/32"])
@pytest.mark.slow
def test_counts_match_the_real_model(variant):
    torch = pytest.importorskip("torch")
    from jitmodel.config import ModelConfig
    from jitmodel.model import JiT

    img = 512 if variant.endswith("/32") else (16 if "Tiny" in variant else 256)
    with torch.device("meta"):
        net = JiT(ModelConfig(variant=variant, img_size=img))
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    total = sum(p.numel() for p in net.parameters())
    assert trainable == param_count(variant, img)
    assert total == param_count(variant, img, trainable=False)


@pytest.mark.parametrize("attention", ["exact", "sdpa"])
@pytest.mark.slow
def test_train_flops_match_flop_counter(attention):
    """FlopCounterMode on a real (tiny) training step agrees with the analytic count."""
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import (
        FlopCounterMode,
        register_flop_formula,
        sdpa_backward_flop_count,
        sdpa_flop_count,
    )

    from jitmodel.config import DiffusionConfig, ModelConfig
    from jitmodel.denoiser import Denoiser

    aten = torch.ops.aten
    # CPU SDPA has no formula in torch 2.13 (pytorch#195460); register one for the flash CPU kernels.
    try:
        @register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu, get_raw=True)
        def _fwd(q, k, v, *args, out_val=None, **kw):
            return sdpa_flop_count(q.shape, k.shape, v.shape)

        @register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu_backward, get_raw=True)
        def _bwd(grad_out, q, k, v, *args, out_val=None, **kw):
            return sdpa_backward_flop_count(grad_out.shape, q.shape, k.shape, v.shape)
    except Exception:  # noqa: BLE001 - already registered in this process
        pass
    cfg = ModelConfig(variant="JiT-Tiny/4", img_size=16, num_classes=10, attention=attention)
    den = Denoiser(cfg, DiffusionConfig())
    x, y = torch.rand(2, 3, 16, 16) * 2 - 1, torch.tensor([1, 2])
    with FlopCounterMode(display=False) as fc:
        den(x, y).backward()
    counted = fc.get_total_flops() / 2
    assert counted == pytest.approx(train_flops_per_image("JiT-Tiny/4", 16, attention=attention), rel=0.01)
