"""A user's own denoiser, planned with ``jitplan plan --gpus 1xRTX4090 --model examples/models/my_denoiser.py:make``
(docs/models.md walks through it). It imports nothing from jitplan or jitmodel: only torch.

The adapter protocol: ``forward(x, t, y)`` with x (B, C, H, W), t (B,) in [0, 1], y (B,) long in
[0, num_classes] (num_classes: the null class), returning x's shape; the integer attributes ``in_channels``,
``input_size`` and ``num_classes``; ``blocks``, an ``nn.ModuleList``, for checkpointing and sharding.
"""

from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        a = self.norm1(h)
        h = h + self.attn(a, a, a, need_weights=False)[0]
        return h + self.mlp(self.norm2(h))


class MyDenoiser(nn.Module):
    def __init__(self, input_size: int = 32, in_channels: int = 3, patch: int = 4, dim: int = 384, depth: int = 8,
                 heads: int = 6, num_classes: int = 10):
        super().__init__()
        self.in_channels, self.input_size, self.num_classes, self.patch = in_channels, input_size, num_classes, patch
        n = (input_size // patch) ** 2
        self.embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.pos = nn.Parameter(torch.zeros(1, n, dim))
        self.time = nn.Sequential(nn.Linear(1, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.label = nn.Embedding(num_classes + 1, dim)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, patch * patch * in_channels)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        b, c, s, p = x.shape[0], self.in_channels, self.input_size, self.patch
        h = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        h = h + (self.time(t[:, None].float()) + self.label(y))[:, None]
        for blk in self.blocks:
            h = blk(h)
        h = self.out(self.norm(h)).reshape(b, s // p, s // p, p, p, c)
        return h.permute(0, 5, 1, 3, 2, 4).reshape(b, c, s, s)


def make(**kw: int) -> MyDenoiser:
    return MyDenoiser(**kw)
