"""The JiT network ("Back to Basics: Let Denoising Generative Models Denoise", Li & He, 2025).

References: the paper (arXiv 2511.13720); the official code LTH14/JiT ``model_jit.py`` (read for facts,
see ``shared/reference/jit_repo.md`` §1); DiT and SiT for the adaLN-Zero block. Architecture: bottleneck
patch embedding + frozen 2-D sin-cos ``pos_embed``; blocks with adaLN-Zero, RMSNorm pre-norms, qk-norm,
2-D RoPE and a SwiGLU MLP; ``in_context_len`` label tokens prepended at block ``in_context_start``;
dropout only in the middle half of the blocks; a zero-initialised final layer (initial output 0).

State-dict keys and shapes are those of the official network (``tests/data/official_keys_B16.txt``),
so official checkpoints load. Nothing is tied to a device: CPU, CUDA, MPS, meta, FakeTensorMode.

    >>> import torch
    >>> from jitmodel.config import ModelConfig
    >>> from jitmodel.model import build_model, count_trainable
    >>> count_trainable(build_model(ModelConfig(variant="JiT-B/16"), device="meta"))
    131123712
    >>> net = build_model(ModelConfig(variant="JiT-Tiny/4", img_size=16, num_classes=10))
    >>> net(torch.randn(2, 3, 16, 16), torch.rand(2), torch.tensor([1, 10])).abs().max().item()
    0.0
    >>> net.set_grid(24); tuple(net.pos_embed.shape)
    (1, 36, 96)
"""

from __future__ import annotations

from typing import Any, Literal, cast

import torch
from torch import nn

from jitmodel.config import ModelConfig
from jitmodel.layers import (
    Attention,
    BottleneckPatchEmbed,
    LabelEmbedder,
    RMSNorm,
    Rope2D,
    SwiGLU,
    TimestepEmbedder,
    modulate,
    sincos_2d,
)

# ----------------------------------------------------------------------------------------------
# Blocks
# ----------------------------------------------------------------------------------------------


class JiTBlock(nn.Module):
    """Pre-norm transformer block with adaLN-Zero: gated attention and gated SwiGLU residuals."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 attention: Literal["exact", "sdpa"] = "exact", device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.norm1 = RMSNorm(dim, eps=1e-6, **kw)
        self.attn = Attention(dim, heads, attn_drop=attn_drop, proj_drop=proj_drop, kind=attention, **kw)
        self.norm2 = RMSNorm(dim, eps=1e-6, **kw)
        self.mlp = SwiGLU(dim, mlp_hidden, drop=proj_drop, **kw)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim, **kw))

    def forward(self, x: torch.Tensor, c: torch.Tensor, rope: Rope2D) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=-1)  # 6 x (B, D)
        x = x + gate1.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift1, scale1), rope)  # (B, N, D)
        x = x + gate2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift2, scale2))  # (B, N, D)
        return x


class FinalLayer(nn.Module):
    """RMSNorm, adaLN (shift, scale), then a linear map to p*p*C pixel values per token."""

    def __init__(self, dim: int, patch: int, out_channels: int, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.norm_final = RMSNorm(dim, **kw)
        self.linear = nn.Linear(dim, patch * patch * out_channels, **kw)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim, **kw))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)  # 2 x (B, D)
        return self.linear(modulate(self.norm_final(x), shift, scale))  # (B, N, p*p*C)


# ----------------------------------------------------------------------------------------------
# JiT
# ----------------------------------------------------------------------------------------------


class JiT(nn.Module):
    """The JiT denoising network: (x, t, y) -> raw output of the same shape as x.

    ``t`` is the raw time in [0, 1] (0 = noise, 1 = clean), ``y`` the class index (``num_classes`` is the
    null class). The output is read as x, v or eps by ``jitmodel.denoiser`` (official: x).
    """

    def __init__(self, cfg: ModelConfig, *, device: Any = None, dtype: torch.dtype | None = None):
        super().__init__()
        spec = cfg.spec
        kw = {"device": device, "dtype": dtype}
        self.cfg = cfg
        self.patch, self.out_channels = spec.patch, cfg.in_channels
        self.in_context_len, self.in_context_start = spec.in_context_len, spec.in_context_start
        D, grid = spec.hidden, spec.grid(cfg.img_size)
        if D % 4:
            raise ValueError(f"hidden width {D} must be a multiple of 4 for the 2-D sin-cos embedding")

        self.t_embedder = TimestepEmbedder(D, **kw)
        self.y_embedder = LabelEmbedder(cfg.num_classes, D, **kw)
        self.x_embedder = BottleneckPatchEmbed(cfg.img_size, spec.patch, cfg.in_channels, spec.bottleneck, D, **kw)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, D, **kw), requires_grad=False)
        if self.in_context_len > 0:
            self.in_context_posemb = nn.Parameter(torch.zeros(1, self.in_context_len, D, **kw))
            nn.init.normal_(self.in_context_posemb, std=0.02)  # here, as official: same RNG order, same init
        self.feat_rope = Rope2D(spec.head_dim, grid, device=device)
        self.feat_rope_incontext = Rope2D(spec.head_dim, grid, num_prefix=self.in_context_len, device=device)

        lo, hi = spec.depth // 4, spec.depth // 4 * 3  # dropout only in blocks lo <= i < hi (official)
        self.blocks = nn.ModuleList([
            JiTBlock(D, spec.heads, spec.mlp_hidden,
                     attn_drop=cfg.attn_dropout if lo <= i < hi else 0.0,
                     proj_drop=cfg.proj_dropout if lo <= i < hi else 0.0,
                     attention=cfg.attention, **kw)
            for i in range(spec.depth)
        ])
        self.final_layer = FinalLayer(D, spec.patch, self.out_channels, **kw)
        self.initialize_weights()

    @property
    def img_size(self) -> int:
        return self.cfg.img_size

    def reset_parameters(self) -> None:
        """Initialise everything (e.g. after ``to_empty``): in-context posemb, weights, fixed tables."""
        if self.in_context_len > 0:
            nn.init.normal_(self.in_context_posemb, std=0.02)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """The official initialisation, in the official order (also rebuilds the fixed tables).

        Under the same seed, a model built here equals the official one tensor for tensor.
        """
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for conv in (self.x_embedder.proj1, self.x_embedder.proj2):  # like nn.Linear on flattened patches
            nn.init.xavier_uniform_(conv.weight.view(conv.weight.shape[0], -1))
        nn.init.zeros_(cast(torch.Tensor, self.x_embedder.proj2.bias))  # built with bias=True
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        t_in, t_out = (cast(nn.Linear, self.t_embedder.mlp[i]) for i in (0, 2))
        nn.init.normal_(t_in.weight, std=0.02)
        nn.init.normal_(t_out.weight, std=0.02)
        zeroed = [*(cast(nn.Sequential, b.adaLN_modulation)[-1] for b in self.blocks),
                  self.final_layer.adaLN_modulation[-1],
                  self.final_layer.linear]  # adaLN-Zero and a zero output layer
        for mod in cast(list[nn.Linear], zeroed):
            nn.init.zeros_(mod.weight)
            nn.init.zeros_(mod.bias)
        self._fill_grid_tables()

    def _fill_grid_tables(self) -> None:
        grid = self.cfg.spec.grid(self.cfg.img_size)
        with torch.no_grad():
            self.pos_embed.copy_(sincos_2d(self.pos_embed.shape[-1], grid).unsqueeze(0))
        self.feat_rope.set_grid(grid)
        self.feat_rope_incontext.set_grid(grid)

    def set_grid(self, img_size: int) -> None:
        """Rebuild everything that depends on the image size (frozen ``pos_embed``, RoPE tables).

        Lets a checkpoint trained at one size be sampled at another (e.g. 32 px -> 48 px): load the
        weights first, then call ``set_grid``. Raises ValueError when the patch does not divide it.
        """
        cfg = ModelConfig.model_validate({**self.cfg.model_dump(), "img_size": img_size})
        grid = cfg.spec.grid(img_size)
        old = self.pos_embed
        self.cfg = cfg
        self.x_embedder.img_size = img_size
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, old.shape[-1], device=old.device, dtype=old.dtype),
                                      requires_grad=False)
        self._fill_grid_tables()

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, p*p*C) -> (B, C, H, W), tokens row-major, pixels in (p, p, C) order within a token."""
        p, c = self.patch, self.out_channels
        h = w = self.cfg.img_size // p
        x = x.reshape(x.shape[0], h, w, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], c, h * p, w * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) noisy image z_t; t: (B,) in [0, 1]; y: (B,) long -> (B, C, H, W)."""
        t_emb = self.t_embedder(t.flatten())  # (B, D)
        y_emb = self.y_embedder(y)  # (B, D)
        c = t_emb + y_emb  # (B, D)

        x = self.x_embedder(x)  # (B, N, D)
        x = (x + self.pos_embed).to(x.dtype)  # the official in-place add keeps the embedding's dtype
        for i, block in enumerate(self.blocks):
            if self.in_context_len > 0 and i == self.in_context_start:
                tokens = y_emb.unsqueeze(1).expand(-1, self.in_context_len, -1) + self.in_context_posemb
                x = torch.cat([tokens, x], dim=1)  # (B, K + N, D)
            rope = self.feat_rope if i < self.in_context_start else self.feat_rope_incontext
            x = block(x, c, rope)
        x = x[:, self.in_context_len:] if self.in_context_start < len(self.blocks) else x  # (B, N, D)
        x = self.final_layer(x, c)  # (B, N, p*p*C)
        return self.unpatchify(x)  # (B, C, H, W)


# ----------------------------------------------------------------------------------------------
# Construction helpers and the registry (architectures come from jitmodel.variants.VARIANTS)
# ----------------------------------------------------------------------------------------------


def build_model(cfg: ModelConfig, device: Any = None, dtype: torch.dtype | None = None) -> JiT:
    """Build the network a ModelConfig describes (``device="meta"`` builds without allocating)."""
    return JiT(cfg, device=device, dtype=dtype)


def count_trainable(model: nn.Module) -> int:
    """Number of parameters with ``requires_grad`` (excludes the frozen ``pos_embed``, as official)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _make(variant: str, **kw: Any) -> JiT:
    device, dtype = kw.pop("device", None), kw.pop("dtype", None)
    return JiT(ModelConfig(variant=variant, **kw), device=device, dtype=dtype)


def JiT_B_16(**kw: Any) -> JiT: return _make("JiT-B/16", **kw)  # noqa: E704
def JiT_B_32(**kw: Any) -> JiT: return _make("JiT-B/32", **kw)  # noqa: E704
def JiT_L_16(**kw: Any) -> JiT: return _make("JiT-L/16", **kw)  # noqa: E704
def JiT_L_32(**kw: Any) -> JiT: return _make("JiT-L/32", **kw)  # noqa: E704
def JiT_H_16(**kw: Any) -> JiT: return _make("JiT-H/16", **kw)  # noqa: E704
def JiT_H_32(**kw: Any) -> JiT: return _make("JiT-H/32", **kw)  # noqa: E704
def JiT_G_16(**kw: Any) -> JiT: return _make("JiT-G/16", **kw)  # noqa: E704  (paper appendix only)
def JiT_G_32(**kw: Any) -> JiT: return _make("JiT-G/32", **kw)  # noqa: E704  (paper appendix only)
def JiT_Tiny_4(**kw: Any) -> JiT: return _make("JiT-Tiny/4", **kw)  # noqa: E704  (not a paper model)
def JiT_Tiny_8(**kw: Any) -> JiT: return _make("JiT-Tiny/8", **kw)  # noqa: E704  (not a paper model)


JiT_models = {
    "JiT-B/16": JiT_B_16, "JiT-B/32": JiT_B_32,
    "JiT-L/16": JiT_L_16, "JiT-L/32": JiT_L_32,
    "JiT-H/16": JiT_H_16, "JiT-H/32": JiT_H_32,
    "JiT-G/16": JiT_G_16, "JiT-G/32": JiT_G_32,
    "JiT-Tiny/4": JiT_Tiny_4, "JiT-Tiny/8": JiT_Tiny_8,
}
