"""U-ViT (Bao et al., "All are Worth Words: A ViT Backbone for Diffusion Models", CVPR 2023), written from
the paper: the time, the class and every patch are tokens of one sequence (with a learned position
embedding); pre-LN transformer blocks are split into a shallow half, a middle block and a deep half, and
each deep block first fuses the output of its mirror shallow block through a long skip, ``Linear(2D, D)``
on the concatenation; after a final LayerNorm a linear layer decodes patches and a 3x3 convolution smooths
the image. Labels have one extra embedding row (the null class of classifier-free guidance).

``uvit_l_2()``: U-ViT-L/2 on 32x32x4 latents (20 blocks + the middle one counted in depth 21, 1024 wide);
``uvit_h_2()``: U-ViT-H/2 (29 blocks, 1152 wide), the paper's ImageNet 256 model.

    >>> import torch
    >>> m = UViT(input_size=8, patch=2, in_channels=4, depth=5, hidden=64, heads=4, num_classes=10)
    >>> m(torch.randn(2, 4, 8, 8), torch.rand(2), torch.tensor([1, 10])).shape
    torch.Size([2, 4, 8, 8])
"""

from __future__ import annotations

import torch
from torch import nn

from jitmodel.archs.common import Attention, Mlp, patchify, timestep_features, unpatchify


class UViTBlock(nn.Module):
    """Pre-LN attention and MLP; with ``skip`` a Linear(2D, D) first fuses the long-skip input."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float = 4.0, skip: bool = False):
        super().__init__()
        self.skip = nn.Linear(2 * hidden, hidden) if skip else None
        self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.attn, self.mlp = Attention(hidden, heads), Mlp(hidden, mlp_ratio)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.skip is not None:
            assert skip is not None
            x = self.skip(torch.cat([x, skip], dim=-1))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class UViT(nn.Module):
    def __init__(self, input_size: int = 32, patch: int = 2, in_channels: int = 4, depth: int = 29,
                 hidden: int = 1152, heads: int = 16, mlp_ratio: float = 4.0, num_classes: int = 1000):
        super().__init__()
        if depth % 2 == 0:
            raise ValueError(f"U-ViT depth = shallow half + the middle block + deep half: odd, not {depth}")
        self.in_channels, self.input_size, self.num_classes, self.patch = in_channels, input_size, num_classes, patch
        n = (input_size // patch) ** 2
        self.x_embed = nn.Linear(patch * patch * in_channels, hidden)
        self.t_embed = nn.Linear(256, hidden)  # ImageNet configs: no time MLP, a projection of the features
        self.y_embed = nn.Embedding(num_classes + 1, hidden)
        self.pos = nn.Parameter(torch.zeros(1, 2 + n, hidden))
        nn.init.trunc_normal_(self.pos, std=0.02)
        half = depth // 2
        self.in_blocks = nn.ModuleList(UViTBlock(hidden, heads, mlp_ratio) for _ in range(half))
        self.mid_block = UViTBlock(hidden, heads, mlp_ratio)
        self.out_blocks = nn.ModuleList(UViTBlock(hidden, heads, mlp_ratio, skip=True) for _ in range(half))
        self.blocks = nn.ModuleList([*self.in_blocks, self.mid_block, *self.out_blocks])  # the same modules
        self.norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, patch * patch * in_channels)
        self.final_conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        tok = self.x_embed(patchify(x, self.patch))
        extra = torch.stack([self.t_embed(timestep_features(t)), self.y_embed(y)], dim=1)
        h = torch.cat([extra, tok], dim=1) + self.pos
        skips = []
        for blk in self.in_blocks:
            h = blk(h)
            skips.append(h)
        h = self.mid_block(h)
        for blk in self.out_blocks:
            h = blk(h, skips.pop())
        h = self.out(self.norm(h))[:, 2:]
        return self.final_conv(unpatchify(h, self.patch, self.in_channels, self.input_size))


def uvit_l_2(**kw: int) -> UViT:
    return UViT(depth=21, hidden=1024, heads=16, **kw)


def uvit_h_2(**kw: int) -> UViT:
    return UViT(depth=29, hidden=1152, heads=16, **kw)


def uvit_small(**kw: int) -> UViT:
    return UViT(depth=13, hidden=512, heads=8, **kw)
