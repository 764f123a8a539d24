"""The JiT network: counts, official state-dict parity, registry-wide shape/init/dropout checks, RoPE,
sin-cos tables, set_grid, exact vs sdpa attention, meta/FakeTensor construction."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from jitmodel.config import DiffusionConfig, ModelConfig  # noqa: E402
from jitmodel.denoiser import Denoiser  # noqa: E402
from jitmodel.layers import (  # noqa: E402
    TimestepEmbedder,
    attention_exact,
    attention_sdpa,
    rope_tables,
    rotate_half,
    sincos_2d,
)
from jitmodel.model import JiT, JiT_models, build_model, count_trainable  # noqa: E402
from jitmodel.variants import VARIANTS, get_variant  # noqa: E402

DATA = Path(__file__).parent / "data"
ALL = list(JiT_models)
TINY = [n for n in ALL if get_variant(n).test_only]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(name: str, **kw) -> ModelConfig:
    """A config at the variant's smallest sensible image size (2x2 patches) unless given."""
    kw.setdefault("img_size", 2 * get_variant(name).patch)
    kw.setdefault("num_classes", 10)
    return ModelConfig(variant=name, **kw)


def _randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every parameter (also the zero-initialised ones) random values so outputs are non-trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("pos_embed"):
                continue
            p.copy_(torch.randn(p.shape, generator=g) * (0.02 if p.ndim > 1 else 0.1) + (1.0 if "norm" in n else 0.0))


# ---------------------------------------------------------------------------------------------- registry


@pytest.mark.slow
def test_registry_covers_the_variant_table():
    assert set(JiT_models) == set(VARIANTS)
    for name, factory in JiT_models.items():
        m = factory(img_size=2 * get_variant(name).patch, device="meta")
        assert isinstance(m, JiT) and m.cfg.spec.name == name


@pytest.mark.parametrize("name,expected", [("JiT-B/16", 131.12), ("JiT-L/16", 458.88), ("JiT-H/16", 952.51),
                                           ("JiT-B/32", 133.19), ("JiT-G/16", 2007.13)])
def test_trainable_parameter_counts(name, expected):
    img = 512 if name.endswith("/32") else 256
    m = build_model(ModelConfig(variant=name, img_size=img), device="meta")
    assert round(count_trainable(m) / 1e6, 2) == expected
    # pos_embed is the only frozen parameter: (1, N, D)
    frozen = [n for n, p in m.named_parameters() if not p.requires_grad]
    assert frozen == ["pos_embed"]
    assert tuple(m.pos_embed.shape) == (1, 256, get_variant(name).hidden)


def test_state_dict_matches_official_b16_keys_and_shapes():
    rows = [ln.split() for ln in (DATA / "official_keys_B16.txt").read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]
    expected = [(k, tuple(int(s) for s in shape.split(","))) for k, shape in rows]
    den = Denoiser(ModelConfig(variant="JiT-B/16"), DiffusionConfig(), device="meta")
    got = [(k, tuple(v.shape)) for k, v in den.state_dict().items()]
    assert got == expected  # same keys, same shapes, same order; RoPE tables are not in it


@pytest.mark.parametrize("name,img,shapes", [
    # from jit_repo.md section 1.3: the shapes behind the "pos_embed shape mismatch" reports
    ("JiT-B/16", 256, {"pos_embed": (1, 256, 768), "x_embedder.proj1.weight": (128, 3, 16, 16),
                       "final_layer.linear.weight": (768, 768)}),
    ("JiT-B/16", 512, {"pos_embed": (1, 1024, 768)}),
    ("JiT-B/32", 512, {"pos_embed": (1, 256, 768), "x_embedder.proj1.weight": (128, 3, 32, 32),
                       "final_layer.linear.weight": (3072, 768)}),
    ("JiT-L/16", 256, {"pos_embed": (1, 256, 1024), "blocks.23.mlp.w3.weight": (1024, 2730)}),
    ("JiT-H/16", 256, {"pos_embed": (1, 256, 1280), "x_embedder.proj1.weight": (256, 3, 16, 16),
                       "blocks.31.attn.q_norm.weight": (80,), "blocks.31.mlp.w12.weight": (6826, 1280)}),
])
def test_image_size_dependent_shapes(name, img, shapes):
    sd = build_model(ModelConfig(variant=name, img_size=img), device="meta").state_dict()
    assert {k: tuple(sd[k].shape) for k in shapes} == shapes


def test_rope_tables_are_non_persistent_buffers():
    m = build_model(_cfg("JiT-Tiny/4"))
    names = {n for n, _ in m.named_buffers()}
    assert {"feat_rope.cos", "feat_rope_incontext.sin"} <= names
    assert not any("rope" in k for k in m.state_dict())


# ---------------------------------------------------------------------------------------------- registry-wide


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("attention", ["exact", "sdpa"])
@pytest.mark.slow
def test_forward_shapes_on_meta(name, attention):
    v = get_variant(name)
    m = build_model(_cfg(name, img_size=4 * v.patch, attention=attention, in_channels=1), device="meta")
    out = m(torch.empty(3, 1, 4 * v.patch, 4 * v.patch, device="meta"), torch.empty(3, device="meta"),
            torch.zeros(3, dtype=torch.long, device="meta"))
    assert out.shape == (3, 1, 4 * v.patch, 4 * v.patch)


@pytest.mark.parametrize("name", ALL)
def test_dropout_only_in_middle_half_of_blocks(name):
    v = get_variant(name)
    m = build_model(_cfg(name, attn_dropout=0.1, proj_dropout=0.2), device="meta")
    for i, b in enumerate(m.blocks):
        middle = v.depth // 4 <= i < v.depth // 4 * 3
        assert b.attn.attn_drop.p == (0.1 if middle else 0.0), i
        assert b.attn.proj_drop.p == (0.2 if middle else 0.0), i
        assert b.mlp.ffn_dropout.p == (0.2 if middle else 0.0), i
    assert sum(b.attn.attn_drop.p > 0 for b in m.blocks) == v.depth // 4 * 3 - v.depth // 4


@pytest.mark.parametrize("name", ALL)
@pytest.mark.slow
def test_zero_init_layers_and_widths(name):
    v = get_variant(name)
    m = build_model(_cfg(name), device="meta")
    assert m.blocks[0].mlp.w3.in_features == v.mlp_hidden == int(int(4 * v.hidden) * 2 / 3)
    assert m.x_embedder.proj1.bias is None and m.x_embedder.proj2.bias is not None
    assert m.y_embedder.embedding_table.num_embeddings == 11  # 10 classes + the null class
    assert m.feat_rope_incontext.cos.shape == (v.in_context_len + 4, v.head_dim)


@pytest.mark.parametrize("name", TINY)
def test_initial_output_is_zero_and_adaln_is_zero(name):
    torch.manual_seed(0)
    m = build_model(_cfg(name))
    for b in m.blocks:
        assert not b.adaLN_modulation[-1].weight.any() and not b.adaLN_modulation[-1].bias.any()
    assert not m.final_layer.linear.weight.any()
    s = m.cfg.img_size
    out = m(torch.randn(2, 3, s, s), torch.rand(2), torch.tensor([3, 10]))
    assert out.shape == (2, 3, s, s) and not out.any()
    # the non-zero parts follow the official init
    assert abs(m.t_embedder.mlp[0].weight.std().item() - 0.02) < 0.005
    assert abs(m.y_embedder.embedding_table.weight.std().item() - 0.02) < 0.005
    w = m.blocks[0].attn.qkv.weight
    assert w.abs().max().item() <= math.sqrt(6 / sum(w.shape)) + 1e-6  # xavier-uniform bound
    assert not m.blocks[0].attn.qkv.bias.any()


def test_conditioning_reaches_the_output():
    m = build_model(_cfg("JiT-Tiny/4"))
    _randomize(m)
    x, t = torch.randn(1, 3, 8, 8), torch.tensor([0.4])
    outs = [m(x, t, torch.tensor([y])) for y in (0, 1)] + [m(x, torch.tensor([0.8]), torch.tensor([0]))]
    assert not torch.allclose(outs[0], outs[1]) and not torch.allclose(outs[0], outs[2])


def test_in_context_tokens_get_gradients():
    m = build_model(_cfg("JiT-Tiny/4"))
    _randomize(m)
    m(torch.randn(2, 3, 8, 8), torch.rand(2), torch.tensor([1, 2])).square().sum().backward()
    assert m.in_context_posemb.grad is not None and m.in_context_posemb.grad.abs().sum() > 0
    assert m.pos_embed.grad is None


def test_wrong_input_size_is_a_clear_error():
    m = build_model(_cfg("JiT-Tiny/4"))
    with pytest.raises(ValueError, match="built for 8x8"):
        m(torch.randn(1, 3, 12, 12), torch.rand(1), torch.zeros(1, dtype=torch.long))


# ---------------------------------------------------------------------------------------------- fixed tables


def test_sincos_pos_embed_layout():
    D, grid = 16, 5
    pe = sincos_2d(D, grid)
    i, j = 3, 1  # token (row 3, col 1) sits at index 3*5+1
    tok = pe[i * grid + j].double()
    w = 1.0 / 10000 ** (torch.arange(D // 4, dtype=torch.float64) / (D // 4))
    expected = torch.cat([torch.sin(j * w), torch.cos(j * w), torch.sin(i * w), torch.cos(i * w)])
    assert torch.allclose(tok, expected, atol=1e-7)
    assert pe.dtype == torch.float32


def test_timestep_features_use_raw_t_cos_then_sin():
    f = TimestepEmbedder.features(torch.tensor([0.0, 0.5]), 256)
    assert f[0, :128].eq(1).all() and f[0, 128:].eq(0).all()
    half = torch.tensor(0.5)
    assert torch.isclose(f[1, 0], torch.cos(half)) and torch.isclose(f[1, 128], torch.sin(half))


def test_rope_table_values_and_interleaving():
    hd, grid = 16, 4
    cos, sin = rope_tables(hd, grid)
    freqs = 1.0 / 10000 ** (torch.arange(0, hd // 2, 2).float() / (hd // 2))  # hd/4 frequencies
    i, j = 2, 3
    ang_row = (i * freqs).repeat_interleave(2)
    ang_col = (j * freqs).repeat_interleave(2)
    assert torch.allclose(cos[i * grid + j], torch.cat([ang_row, ang_col]).cos())
    assert torch.allclose(sin[i * grid + j], torch.cat([ang_row, ang_col]).sin())
    assert rotate_half(torch.tensor([1.0, 2.0, 3.0, 4.0])).tolist() == [-2.0, 1.0, -4.0, 3.0]


def test_rope_is_relative_in_2d_and_leaves_in_context_rows_unrotated():
    m = build_model(_cfg("JiT-Tiny/4", img_size=24))  # grid 6, 4 in-context tokens
    rope, rope_ic, K, grid = m.feat_rope, m.feat_rope_incontext, m.in_context_len, 6
    q = torch.randn(1, 1, K + grid * grid, rope.head_dim)
    rq = rope_ic(q)
    assert torch.equal(rq[:, :, :K], q[:, :, :K])  # in-context rows untouched
    assert torch.equal(rope_ic.cos[K:], rope.cos) and torch.equal(rope_ic.sin[K:], rope.sin)
    # <R(p) a, R(p') b> depends only on p - p' (2-D): shift both positions by (1, 2)
    a, b = torch.randn(rope.head_dim), torch.randn(rope.head_dim)

    def dot(p1, p2):
        x = torch.zeros(1, 1, grid * grid, rope.head_dim)
        x[0, 0, p1[0] * grid + p1[1]], x[0, 0, p2[0] * grid + p2[1]] = a, b
        r = rope(x)[0, 0]
        return (r[p1[0] * grid + p1[1]] * r[p2[0] * grid + p2[1]]).sum()

    assert torch.isclose(dot((0, 1), (2, 2)), dot((1, 3), (3, 4)), atol=1e-5)
    assert not torch.isclose(dot((0, 1), (2, 2)), dot((0, 1), (2, 3)), atol=1e-3)


def test_rope_tables_stay_fp32_when_the_model_is_cast():
    m = build_model(_cfg("JiT-Tiny/4")).to(torch.bfloat16)
    assert m.feat_rope.cos.dtype == torch.float32
    assert torch.equal(m.feat_rope.cos, rope_tables(24, 2)[0])
    assert m.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    out = m(torch.randn(1, 3, 8, 8), torch.rand(1), torch.zeros(1, dtype=torch.long))
    assert out.dtype == torch.bfloat16


# ---------------------------------------------------------------------------------------------- set_grid


@pytest.mark.parametrize("name", TINY)
def test_set_grid_matches_a_model_built_at_the_new_size(name):
    p = get_variant(name).patch
    old = build_model(_cfg(name, img_size=4 * p))
    _randomize(old)
    old.set_grid(6 * p)
    assert old.pos_embed.shape == (1, 36, old.cfg.spec.hidden) and not old.pos_embed.requires_grad
    assert old.cfg.img_size == 6 * p
    fresh = build_model(_cfg(name, img_size=6 * p))
    assert torch.equal(old.pos_embed, fresh.pos_embed)
    assert torch.equal(old.feat_rope_incontext.cos, fresh.feat_rope_incontext.cos)
    fresh.load_state_dict(old.state_dict())  # strict: same keys and shapes
    x, t, y = torch.randn(2, 3, 6 * p, 6 * p), torch.rand(2), torch.tensor([0, 10])
    assert torch.equal(old(x, t, y), fresh(x, t, y))


def test_set_grid_rejects_a_size_the_patch_does_not_divide():
    m = build_model(_cfg("JiT-Tiny/8"))
    with pytest.raises(ValueError, match="patch 8"):
        m.set_grid(20)
    assert m.cfg.img_size == 16  # unchanged


# ---------------------------------------------------------------------------------------------- attention


def test_exact_and_sdpa_attention_agree_fp32_and_bf16():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 37, 32, generator=g) for _ in range(3))
    assert torch.allclose(attention_exact(q, k, v), attention_sdpa(q, k, v), atol=1e-5)
    ref = attention_exact(q.double(), k.double(), v.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = attention_exact(q, k, v.bfloat16())
        b = attention_sdpa(q, k, v.bfloat16())
    assert a.dtype == b.dtype == torch.bfloat16
    assert torch.allclose(a.double(), ref, atol=2e-2, rtol=2e-2)
    assert torch.allclose(b.double(), ref, atol=2e-2, rtol=2e-2)
    assert torch.allclose(a.float(), b.float(), atol=2e-2, rtol=2e-2)


def test_exact_attention_logits_are_fp32_under_autocast():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 1, 8, 16, generator=g) * 20
    k = q[:, :, :1] + 0.2 * torch.randn(1, 1, 8, 16, generator=g)  # large logits, small differences
    v = torch.eye(8)[None, None]
    ref = torch.softmax(q.double() @ k.double().transpose(-2, -1) / 4, -1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        exact = attention_exact(q, k, v.bfloat16())
        bf16_logits = torch.softmax(q @ k.transpose(-2, -1) / 4, -1)  # what autocast alone would do
    assert (exact.double() - ref).abs().max() < 0.01  # measured 0.002
    assert (bf16_logits.double() - ref).abs().max() > 0.1  # measured 0.38: the case is discriminative


@pytest.mark.parametrize("name", TINY)
def test_exact_and_sdpa_models_agree(name):
    p = get_variant(name).patch
    exact = build_model(_cfg(name, img_size=4 * p))
    _randomize(exact)
    sdpa = build_model(_cfg(name, img_size=4 * p, attention="sdpa"))
    sdpa.load_state_dict(exact.state_dict())
    x, t, y = torch.randn(2, 3, 4 * p, 4 * p), torch.rand(2), torch.tensor([1, 10])
    a, b = exact(x, t, y), sdpa(x, t, y)
    assert a.abs().mean() > 1e-3
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a16, b16 = exact(x, t, y).float(), sdpa(x, t, y).float()
    scale = a.abs().max()
    assert (a16 - b16).abs().max() <= 3e-2 * scale
    assert (a16 - a).abs().max() <= 3e-2 * scale


# ---------------------------------------------------------------------------------------------- construction


@pytest.mark.slow
def test_build_on_meta_and_under_fake_tensors_without_allocating():
    from torch._subclasses.fake_tensor import FakeTensorMode

    m = build_model(ModelConfig(variant="JiT-L/16"), device="meta")
    assert all(p.is_meta for p in m.parameters()) and m.feat_rope.cos.is_meta
    with FakeTensorMode():
        m = build_model(ModelConfig(variant="JiT-B/16"), dtype=torch.bfloat16)
        out = m(torch.randn(2, 3, 256, 256), torch.rand(2), torch.zeros(2, dtype=torch.long))
        out.float().sum().backward()
        assert out.shape == (2, 3, 256, 256) and out.dtype == torch.bfloat16
        assert m.blocks[0].attn.qkv.weight.grad is not None


def test_to_empty_then_reset_parameters_restores_tables():
    m = build_model(_cfg("JiT-Tiny/4"), device="meta").to_empty(device="cpu")
    m.reset_parameters()
    ref = build_model(_cfg("JiT-Tiny/4"))
    assert torch.equal(m.pos_embed, ref.pos_embed) and torch.equal(m.feat_rope.sin, ref.feat_rope.sin)
    assert abs(m.in_context_posemb.std().item() - 0.02) < 0.01 and not m.final_layer.linear.weight.any()


@pytest.mark.slow
def test_exact_path_compiles_as_one_graph_under_autocast():
    m = build_model(_cfg("JiT-Tiny/4"))  # the exact path holds an autocast-off region
    _randomize(m)
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True)  # fullgraph: a graph break raises
    x, t, y = torch.randn(2, 3, 8, 8), torch.rand(2), torch.tensor([1, 10])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, ref = compiled(x, t, y), m(x, t, y)
    assert torch.equal(out, ref)
    out.float().sum().backward()
    assert m.blocks[0].attn.qkv.weight.grad is not None


@pytest.mark.parametrize("module", ["jitmodel.layers", "jitmodel.model", "jitmodel.objectives", "jitmodel.denoiser"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), verbose=False)
    assert result.attempted > 0 and result.failed == 0
