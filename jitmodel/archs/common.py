"""Pieces the architectures share: patches, fixed 2-D sin-cos positions, timestep and label embedders,
multi-head attention over ``scaled_dot_product_attention`` and the transformer MLP.

    >>> import torch
    >>> x = torch.randn(2, 4, 8, 8)
    >>> torch.equal(unpatchify(patchify(x, 2), 2, 4, 8), x)
    True
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/p * W/p, p*p*C), row-major over the patch grid."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(tokens: torch.Tensor, p: int, c: int, size: int) -> torch.Tensor:
    """The inverse of ``patchify`` for a square ``size`` x ``size`` image of ``c`` channels."""
    b, g = tokens.shape[0], size // p
    x = tokens.reshape(b, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, c, size, size)


def sincos_2d(dim: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding (grid*grid, dim): half the channels for rows, half for columns."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    pos = torch.arange(grid, dtype=torch.float64)
    ang = pos[:, None] * omega[None, :]  # (grid, quarter)
    emb1 = torch.cat([ang.sin(), ang.cos()], dim=1)  # (grid, dim/2)
    rows = emb1[:, None, :].expand(grid, grid, dim // 2)
    cols = emb1[None, :, :].expand(grid, grid, dim // 2)
    return torch.cat([rows, cols], dim=-1).reshape(grid * grid, dim).float()


def timestep_features(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of t (B,) -> (B, dim). t in [0, 1] is scaled by 1000, as DDPM-style steps."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * 1000.0)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """t -> sinusoidal features -> Linear, SiLU, Linear (DiT's t-embedder)."""

    def __init__(self, hidden: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_features(t, self.freq_dim))


class Attention(nn.Module):
    """Multi-head self-attention (or cross-attention with ``context``) through SDPA."""

    def __init__(self, dim: int, heads: int, cross: bool = False):
        super().__init__()
        self.heads = heads
        if cross:
            self.q, self.kv = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim)
        else:
            self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.cross = cross

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        h = self.heads
        if self.cross:
            assert context is not None
            q = self.q(x).reshape(b, n, h, d // h).transpose(1, 2)
            k, v = self.kv(context).reshape(b, context.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        else:
            q, k, v = self.qkv(x).reshape(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """Linear -> GELU (tanh approximation, as DiT) -> Linear."""

    def __init__(self, dim: int, ratio: float = 4.0):
        super().__init__()
        hid = int(dim * ratio)
        self.fc1, self.fc2 = nn.Linear(dim, hid), nn.Linear(hid, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))
