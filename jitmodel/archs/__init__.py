"""Transformer-diffusion architectures beyond JiT, written from their papers' descriptions (docs/models.md).

Each follows the adapter protocol of ``jitmodel.custom``: ``forward(x, t, y)`` returns x's shape, and the
module carries ``in_channels``, ``input_size``, ``num_classes`` and its repeated ``blocks``.

- ``dit``: DiT's adaLN-Zero blocks (Peebles & Xie 2023); SiT (Ma et al. 2024) is the same network.
- ``uvit``: U-ViT, all inputs as tokens with long skips between shallow and deep blocks (Bao et al. 2023).
- ``crossattn``: DiT's cross-attention variant: t and y as a two-token sequence that every block attends to.
"""
