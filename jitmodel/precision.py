"""Which CUDA cards run which autocast dtype: the rule, once, for the planner, doctor, probe and trainer.

Pure Python (no torch): ``jitplan`` reads it to plan and check; ``jitmodel.dist`` applies it at run time.

    >>> bf16_supported("8.6"), bf16_supported("7.5"), bf16_supported("10.0"), bf16_supported(None)
    (True, False, True, None)
"""

from __future__ import annotations

BF16_MIN_CC = (8, 0)  # bf16 tensor cores: Ampere (sm 8.0) and newer
FP16_TENSOR_MIN_CC = (7, 0)  # fp16 tensor cores (Volta, Turing): fp16 autocast beats fp32 from here on


def parse_cc(text: str | None) -> tuple[int, int] | None:
    """ "8.6" -> (8, 6); None when unknown or unreadable.

        >>> parse_cc("12.0"), parse_cc(None), parse_cc("x")
        ((12, 0), None, None)
    """
    try:
        major, minor = (text or "").split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return None


def bf16_supported(compute_capability: str | None) -> bool | None:
    """Whether a CUDA card of this compute capability has bf16 tensor cores; None when it is unknown."""
    cc = parse_cc(compute_capability)
    return None if cc is None else cc >= BF16_MIN_CC


def fp16_tensor_cores(cc: tuple[int, int]) -> bool:
    """Whether fp16 autocast (with a gradient scaler) is worth it on a card without bf16."""
    return cc >= FP16_TENSOR_MIN_CC
