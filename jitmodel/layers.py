"""Building blocks of the JiT network: norms, MLP, attention, RoPE, embeddings, sin-cos tables.

Every fact here follows the official JiT code (LTH14/JiT ``model_jit.py`` and ``util/model_util.py``,
summarised in ``shared/reference/jit_repo.md`` §1); the code is our own. Every layer takes
``device``/``dtype`` so the whole network can be built on the ``meta`` device or under
``FakeTensorMode`` without allocating memory, and nothing is hard-coded to CUDA.

    >>> import torch
    >>> from jitmodel.layers import RMSNorm, rope_tables
    >>> [round(v, 4) for v in RMSNorm(4)(torch.tensor([[3.0, -3.0, 3.0, -3.0]]))[0].tolist()]
    [1.0, -1.0, 1.0, -1.0]
    >>> cos, sin = rope_tables(head_dim=8, grid=2, num_prefix=1)
    >>> tuple(cos.shape), cos[0].tolist() == [1.0] * 8, sin[0].abs().sum().item()
    ((5, 8), True, 0.0)
"""

from __future__ import annotations

import contextlib
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

AttentionKind = Literal["exact", "sdpa"]


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation: ``x * (1 + scale) + shift`` with (B, D) conditioning over (B, N, D) tokens."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


# ----------------------------------------------------------------------------------------------
# Fixed tables (pure functions of the grid): 2-D sin-cos position embedding, 2-D RoPE
# ----------------------------------------------------------------------------------------------

def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """MAE-style 1-D sin-cos embedding: (M,) positions -> (M, dim) as [sin(pos*w), cos(pos*w)], float64.

    ``w_k = 1 / 10000**(k / (dim/2))`` for k = 0 .. dim/2-1.
    """
    if dim % 2:
        raise ValueError(f"sin-cos embedding width must be even, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    out = pos.reshape(-1).to(torch.float64)[:, None] * omega[None]  # (M, dim/2)
    return torch.cat([out.sin(), out.cos()], dim=1)


def sincos_2d(dim: int, grid: int) -> torch.Tensor:
    """The frozen ``pos_embed`` table: (grid*grid, dim) float32, tokens in row-major order.

    As in the official code (MAE's ``get_2d_sincos_pos_embed``): the first half of the channels encodes
    the column index, the second half the row index. Computed in float64 on the CPU, returned in float32.

        >>> sincos_2d(8, 3).shape
        torch.Size([9, 8])
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding width must be a multiple of 4, got {dim}")
    idx = torch.arange(grid, dtype=torch.float64)
    rows = idx[:, None].expand(grid, grid)  # row index i of token (i, j)
    cols = idx[None, :].expand(grid, grid)  # column index j
    return torch.cat([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], dim=1).float()


def rope_tables(head_dim: int, grid: int, num_prefix: int = 0, theta: float = 10000.0,
                device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables of the 2-D rotary embedding, each (num_prefix + grid*grid, head_dim) float32.

    Matches the official ``VisionRotaryEmbeddingFast(dim=head_dim/2, pt_seq_len=grid)``: head_dim/4
    "lang" frequencies ``1/theta**(2i/(head_dim/2))`` per axis, each repeated for an interleaved pair;
    the first head_dim/2 channels rotate with the row index, the rest with the column index.
    ``num_prefix`` rows of cos=1, sin=0 are prepended for the in-context tokens (left unrotated).
    """
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs head_dim divisible by 4, got {head_dim}")
    half = head_dim // 2
    freqs = 1.0 / (theta ** (torch.arange(0, half, 2).float() / half))  # (head_dim/4,)
    # The official code builds positions as arange(n) / n * n (float32); kept for bitwise parity.
    pos = torch.arange(grid) / grid * grid
    ang = (pos[:, None] * freqs[None]).repeat_interleave(2, dim=-1)  # (grid, half): pairs interleaved
    ang = torch.cat([ang[:, None, :].expand(grid, grid, half),  # row index
                     ang[None, :, :].expand(grid, grid, half)], dim=-1).reshape(grid * grid, head_dim)
    cos, sin = ang.cos(), ang.sin()
    if num_prefix:
        cos = torch.cat([torch.ones(num_prefix, head_dim), cos])
        sin = torch.cat([torch.zeros(num_prefix, head_dim), sin])
    return cos.to(device), sin.to(device)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs: (x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)."""
    x = x.unflatten(-1, (-1, 2))
    return torch.stack((-x[..., 1], x[..., 0]), dim=-1).flatten(-2)


class Rope2D(nn.Module):
    """2-D rotary embedding for (B, heads, N, head_dim) queries/keys.

    The tables are non-persistent buffers (not in the state dict, as in the official code where they
    are plain attributes), always kept in float32: like the official code, a bf16 input leaves in fp32.
    """

    cos: torch.Tensor  # (1, 1, N, head_dim) buffers, kept fp32
    sin: torch.Tensor

    def __init__(self, head_dim: int, grid: int, num_prefix: int = 0, device=None):
        super().__init__()
        self.head_dim, self.num_prefix, self.grid = head_dim, num_prefix, grid
        cos, sin = rope_tables(head_dim, grid, num_prefix, device=device)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def set_grid(self, grid: int) -> None:
        """Rebuild the tables for a new grid on the current device."""
        self.grid = grid
        self.cos, self.sin = rope_tables(self.head_dim, grid, self.num_prefix, device=self.cos.device)

    def _apply(self, fn, recurse=True):  # .to(dtype) must not round the tables: rebuild them in fp32
        super()._apply(fn, recurse)
        if self.cos.dtype not in (torch.float32, torch.float64):
            self.cos, self.sin = rope_tables(self.head_dim, self.grid, self.num_prefix, device=self.cos.device)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] != self.cos.shape[0]:
            raise ValueError(f"RoPE table has {self.cos.shape[0]} rows but the input has {x.shape[-2]} tokens")
        return x * self.cos + rotate_half(x) * self.sin


# ----------------------------------------------------------------------------------------------
# Norms, MLP, attention
# ----------------------------------------------------------------------------------------------

class RMSNorm(nn.Module):
    """LLaMA-style RMSNorm: computed in fp32, weight initialised to 1, cast back to the input dtype."""

    def __init__(self, dim: int, eps: float = 1e-6, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight * h).to(x.dtype)


class SwiGLU(nn.Module):
    """SwiGLU MLP with one fused input projection ``w12`` (D -> 2h) and ``w3`` (h -> D), both with bias.

    ``hidden`` is the final width h (the official ``int(int(4D) * 2/3)``, see ``Variant.mlp_hidden``).
    Dropout acts on the hidden activation before ``w3``.
    """

    def __init__(self, dim: int, hidden: int, drop: float = 0.0, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.w12 = nn.Linear(dim, 2 * hidden, **kw)
        self.w3 = nn.Linear(hidden, dim, **kw)
        self.ffn_dropout = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(self.ffn_dropout(F.silu(x1) * x2))


def _autocast_off(device_type: str):
    """A context that disables autocast on devices that have it (a no-op on meta)."""
    if device_type in ("cpu", "cuda", "mps", "xpu"):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def attention_exact(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """The official attention: Q K^T * scale and softmax in fp32 with autocast off, dropout, then @ V.

    The probabilities are cast to V's dtype for the last product (what autocast does in the official
    code, where V is bf16 under bf16 autocast).
    """
    scale = 1.0 / math.sqrt(q.shape[-1])
    with _autocast_off(q.device.type):
        attn = (q.float() @ k.float().transpose(-2, -1)) * scale  # (B, H, N, N) fp32
        attn = attn.softmax(dim=-1)
    if dropout_p > 0:
        attn = F.dropout(attn, dropout_p, training=True)
    return attn.to(v.dtype) @ v


def attention_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """Fused ``F.scaled_dot_product_attention`` (q, k leave RoPE in fp32; they are cast to V's dtype)."""
    return F.scaled_dot_product_attention(q.to(v.dtype), k.to(v.dtype), v, dropout_p=dropout_p)


class Attention(nn.Module):
    """Multi-head self-attention with qkv bias, per-head qk RMSNorm and 2-D RoPE after the norm."""

    def __init__(self, dim: int, heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 kind: AttentionKind = "exact", device=None, dtype=None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden width {dim} is not divisible by {heads} heads")
        kw = {"device": device, "dtype": dtype}
        self.heads, self.kind = heads, kind
        head_dim = dim // heads
        self.q_norm = RMSNorm(head_dim, **kw)
        self.k_norm = RMSNorm(head_dim, **kw)
        self.qkv = nn.Linear(dim, 3 * dim, **kw)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim, **kw)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, rope: Rope2D) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, N, hd)
        q, k = rope(self.q_norm(q)), rope(self.k_norm(k))
        p = self.attn_drop.p if self.training else 0.0
        fn = attention_exact if self.kind == "exact" else attention_sdpa
        x = fn(q, k, v, dropout_p=p).transpose(1, 2).reshape(B, N, C)  # (B, N, D)
        return self.proj_drop(self.proj(x))


# ----------------------------------------------------------------------------------------------
# Embedders
# ----------------------------------------------------------------------------------------------

class BottleneckPatchEmbed(nn.Module):
    """p x p patches -> bottleneck (conv, no bias) -> D (1x1 conv, bias); (B, C, H, W) -> (B, N, D)."""

    def __init__(self, img_size: int, patch: int, in_chans: int, bottleneck: int, dim: int,
                 device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.img_size, self.patch = img_size, patch
        self.proj1 = nn.Conv2d(in_chans, bottleneck, kernel_size=patch, stride=patch, bias=False, **kw)
        self.proj2 = nn.Conv2d(bottleneck, dim, kernel_size=1, stride=1, bias=True, **kw)

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch) ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"input is {tuple(x.shape[-2:])} but the model is built for "
                             f"{self.img_size}x{self.img_size} (use JiT.set_grid to change it)")
        x = x.to(self.proj1.weight.dtype)
        return self.proj2(self.proj1(x)).flatten(2).transpose(1, 2)  # (B, N, D)


class TimestepEmbedder(nn.Module):
    """Raw t in [0, 1] -> 256 sinusoidal features [cos, sin] (max period 10000) -> Linear, SiLU, Linear."""

    def __init__(self, dim: int, freq_dim: int = 256, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim, **kw), nn.SiLU(), nn.Linear(dim, dim, **kw))

    @staticmethod
    def features(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
        """(B,) -> (B, dim) float32 features; t is used as given (not multiplied by 1000)."""
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half).to(t.device)
        args = t[:, None].float() * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        return emb

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.features(t, self.freq_dim).to(next(self.mlp.parameters()).dtype))  # (B, D)


class LabelEmbedder(nn.Module):
    """Class table with one extra row: index ``num_classes`` is the null (unconditional) class."""

    def __init__(self, num_classes: int, dim: int, device=None, dtype=None):
        super().__init__()
        self.num_classes = num_classes
        self.embedding_table = nn.Embedding(num_classes + 1, dim, device=device, dtype=dtype)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(y)  # (B, D)
