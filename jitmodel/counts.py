"""Parameter and FLOP counts of JiT variants from the variant table alone. Pure Python, no torch.

The counts follow the layer shapes of the official code (LTH14/JiT model_jit.py; see
``../shared/reference/jit_repo.md`` §1.2, §1.4, §9): a bottleneck patch embedding (conv p x p without
bias, then a 1x1 conv), a timestep MLP, a label table with a null class, per block qkv/proj with bias,
qk-RMSNorm, SwiGLU (fused w12, then w3), adaLN-Zero ``Linear(D, 6D)``, 32 in-context tokens from block
``in_context_start`` on, and a final layer (RMSNorm, adaLN ``Linear(D, 2D)``, ``Linear(D, p*p*3)``).
``pos_embed`` is a frozen parameter: it is excluded from the trainable count, like main_jit.py does.

    >>> from jitmodel.counts import param_count, train_flops_per_image
    >>> round(param_count("JiT-B/16", 256) / 1e6, 2)
    131.12
    >>> round(train_flops_per_image("JiT-B/16", 256) / 1e9, 1)
    152.7
"""

from __future__ import annotations

from dataclasses import dataclass

from jitmodel.variants import Variant, get_variant

_FREQ_DIM = 256  # sinusoidal timestep embedding width (official TimestepEmbedder)
# The flash-attention backward recomputes Q K^T and computes dV, dP, dQ, dK: 2.5x the forward matmuls
# (torch.utils.flop_counter's sdpa_backward_flop_count; estimation.md §1.5).
_ATTN_BWD_FACTOR = 2.5


def _spec(variant: str | Variant) -> Variant:
    return variant if isinstance(variant, Variant) else get_variant(variant)


@dataclass(frozen=True)
class ParamBreakdown:
    """Parameter counts by role. ``tokenwise`` multiplies every token; ``per_sample`` does not."""

    embed: int  # patch embedding (conv p x p + 1x1 conv)
    cond: int  # timestep MLP + label table + in-context positional embedding
    blocks: int  # all transformer blocks (incl. their adaLN)
    adaln: int  # the adaLN part of the blocks and the final layer
    final: int  # final layer (norm, adaLN, linear)
    pos_embed: int  # frozen, not trainable
    tokenwise_block: int  # per block: the weights applied to every token (qkv, proj, w12, w3)
    lookup: int  # parameters never fed to a matmul: label table, in-context pos-embed, norm weights

    @property
    def trainable(self) -> int:
        return self.embed + self.cond + self.blocks + self.final

    @property
    def total(self) -> int:
        return self.trainable + self.pos_embed

    @property
    def matmul(self) -> int:
        """Weights and biases of every Linear/conv: what bf16 autocast casts (and caches) each step."""
        return self.trainable - self.lookup


def _num_classes_default(num_classes: int | None) -> int:
    return 1000 if num_classes is None else num_classes


def param_breakdown(variant: str | Variant, img_size: int = 256, num_classes: int | None = None,
                    in_channels: int = 3) -> ParamBreakdown:
    """Count the parameters of a JiT network by role.

        >>> b = param_breakdown("JiT-L/16", 256)
        >>> round(b.trainable / 1e6, 2), round(b.total / 1e6, 2)
        (458.88, 459.14)
    """
    v = _spec(variant)
    d, h, hd, p, bn = v.hidden, v.mlp_hidden, v.head_dim, v.patch, v.bottleneck
    n = v.num_patches(img_size)
    nc = _num_classes_default(num_classes)
    embed = in_channels * p * p * bn + (bn * d + d)
    cond = (_FREQ_DIM * d + d) + (d * d + d) + (nc + 1) * d + v.in_context_len * d
    tokenwise = (3 * d * d + 3 * d) + (d * d + d) + (d * 2 * h + 2 * h) + (h * d + d)
    adaln_block = 6 * d * d + 6 * d
    norms = 2 * d + 2 * hd  # norm1, norm2, q_norm, k_norm weights
    block = tokenwise + adaln_block + norms
    adaln_final = 2 * d * d + 2 * d
    final = d + adaln_final + (d * p * p * in_channels + p * p * in_channels)
    lookup = (nc + 1) * d + v.in_context_len * d + v.depth * norms + d
    return ParamBreakdown(embed=embed, cond=cond, blocks=v.depth * block, adaln=v.depth * adaln_block + adaln_final,
                          final=final, pos_embed=n * d, tokenwise_block=tokenwise, lookup=lookup)


def param_count(variant: str | Variant, img_size: int = 256, num_classes: int | None = None,
                trainable: bool = True) -> int:
    """Trainable parameters (``pos_embed`` excluded) or all of them with ``trainable=False``."""
    b = param_breakdown(variant, img_size, num_classes)
    return b.trainable if trainable else b.total


def seq_lens(variant: str | Variant, img_size: int = 256) -> list[int]:
    """Sequence length of each block: N image tokens, plus the in-context tokens from their start block.

        >>> seq_lens("JiT-B/16")[3:5]
        [256, 288]
    """
    v = _spec(variant)
    n = v.num_patches(img_size)
    return [n + (v.in_context_len if i >= v.in_context_start else 0) for i in range(v.depth)]


def token_layers(variant: str | Variant, img_size: int = 256) -> int:
    """Sum over blocks of the sequence length (3328 for JiT-B/16 at 256 px)."""
    return sum(seq_lens(variant, img_size))


def forward_flops_per_image(variant: str | Variant, img_size: int = 256, in_channels: int = 3) -> float:
    """Forward FLOPs (2 x multiply-accumulates) of one image: matmuls, convolutions and attention.

    Elementwise work (norms, softmax, modulation) is not counted, as in FlopCounterMode.

        >>> round(forward_flops_per_image("JiT-B/16") / 2e9, 1)  # GMAC, the paper's "Gflops"
        25.2
    """
    v = _spec(variant)
    d, h, p, bn = v.hidden, v.mlp_hidden, v.patch, v.bottleneck
    n = v.num_patches(img_size)
    mac = 0.0
    for s in seq_lens(v, img_size):
        mac += s * (4 * d * d + 3 * d * h) + 2 * s * s * d
    mac += n * (in_channels * p * p * bn + bn * d)  # bottleneck patch embedding
    mac += n * d * p * p * in_channels  # final linear
    mac += v.depth * 6 * d * d + 2 * d * d + _FREQ_DIM * d + d * d  # per-sample conditioning
    return 2.0 * mac


def train_flops_per_image(variant: str | Variant, img_size: int = 256, in_channels: int = 3,
                          attention: str = "sdpa") -> float:
    """Training FLOPs (forward + backward) of one image, the way FlopCounterMode counts them.

    Matmuls cost 3x their forward (input and weight gradients); the first patch-embedding conv has no
    input gradient (2x); the flash-attention backward (``attention="sdpa"``) costs 2.5x its forward, the
    official materialised attention (``"exact"``: two plain matmuls) 2x. Not 6 * N_total * T: adaLN holds a
    third of the parameters and does per-sample, not per-token, work.
    """
    v = _spec(variant)
    d, p, bn = v.hidden, v.patch, v.bottleneck
    n = v.num_patches(img_size)
    fwd = forward_flops_per_image(v, img_size, in_channels)
    attn_fwd = sum(2.0 * 2 * s * s * d for s in seq_lens(v, img_size))
    conv1_fwd = 2.0 * n * in_channels * p * p * bn
    dense_fwd = fwd - attn_fwd - conv1_fwd
    bwd = _ATTN_BWD_FACTOR if attention == "sdpa" else 2.0
    return 3 * dense_fwd + 2 * conv1_fwd + (1 + bwd) * attn_fwd


def sample_flops_per_image(variant: str | Variant, img_size: int = 256, steps: int = 50,
                           method: str = "heun", cfg_forwards: int = 2) -> float:
    """Forward FLOPs to generate one image: network calls x forwards per call (2 with CFG).

    Heun with ``steps`` intervals calls the network 2 * (steps - 1) + 1 times (the last interval is
    Euler); Euler calls it ``steps`` times.

        >>> round(sample_flops_per_image("JiT-B/16") / 1e12, 2)  # 198 forwards
        9.99
    """
    nfe = 2 * (steps - 1) + 1 if method == "heun" else steps
    return nfe * cfg_forwards * forward_flops_per_image(variant, img_size)
