"""The one table of JiT variants in the project. Pure Python: imports without torch.

Facts from the official code (LTH14/JiT, model_jit.py:362-394) and the paper's appendix (G).
The planner reads this table in milliseconds; ``jitmodel.model`` builds networks from it.

    >>> from jitmodel.variants import get_variant
    >>> v = get_variant("JiT-B/16")
    >>> (v.depth, v.hidden, v.heads, v.patch, v.mlp_hidden)
    (12, 768, 12, 16, 2048)
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Variant:
    """Architecture of one JiT variant (everything that does not depend on image size)."""

    name: str  # e.g. "JiT-B/16"
    depth: int
    hidden: int
    heads: int
    bottleneck: int  # channels of the bottleneck patch embedding
    patch: int
    in_context_len: int  # number of in-context class tokens
    in_context_start: int  # block index where the class tokens are prepended
    mlp_ratio: float = 4.0
    paper_only: bool = False  # defined in the paper's appendix, not in the official code
    test_only: bool = False  # not from the paper: tiny, for tests and demos

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def mlp_hidden(self) -> int:
        """SwiGLU hidden width, computed as the official code does: int(int(D*ratio) * 2/3)."""
        return int(int(self.hidden * self.mlp_ratio) * 2 / 3)

    @property
    def slug(self) -> str:
        """Path-safe name: "JiT-B/16" -> "JiT-B-16"."""
        return self.name.replace("/", "-")

    def grid(self, img_size: int) -> int:
        """Patches per side for an image size; raises ValueError when it does not divide."""
        if img_size <= 0 or img_size % self.patch:
            raise ValueError(f"image size {img_size} is not a positive multiple of patch {self.patch} ({self.name})")
        return img_size // self.patch

    def num_patches(self, img_size: int) -> int:
        return self.grid(img_size) ** 2


def _family(letter: str, depth: int, hidden: int, heads: int, bottleneck: int, ic_start: int,
            patches: tuple[int, ...], **kw: Any) -> list[Variant]:
    return [
        Variant(name=f"JiT-{letter}/{p}", depth=depth, hidden=hidden, heads=heads, bottleneck=bottleneck,
                patch=p, in_context_len=32, in_context_start=ic_start, **kw)
        for p in patches
    ]


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        *_family("B", 12, 768, 12, 128, 4, (16, 32)),
        *_family("L", 24, 1024, 16, 128, 8, (16, 32)),
        *_family("H", 32, 1280, 16, 256, 10, (16, 32)),
        # JiT-G: the paper's appendix (Table 9) / LTH14/JiT issue #18; not in the official code.
        *_family("G", 40, 1664, 16, 256, 10, (16, 32), paper_only=True),
        # Not a paper model: small enough to train on a CPU in minutes (tests, demos, digits study).
        Variant(name="JiT-Tiny/4", depth=4, hidden=96, heads=4, bottleneck=32, patch=4,
                in_context_len=4, in_context_start=1, test_only=True),
        Variant(name="JiT-Tiny/8", depth=4, hidden=96, heads=4, bottleneck=32, patch=8,
                in_context_len=4, in_context_start=1, test_only=True),
    ]
}


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name).lower().removeprefix("jit")


def get_variant(name: str) -> Variant:
    """Look a variant up by name, forgiving case, spaces, hyphens and a missing "JiT-" prefix.

    Raises ``KeyError`` with the closest names when it is unknown.
    """
    wanted = _norm(name)
    for v in VARIANTS.values():
        if _norm(v.name) == wanted:
            return v
    close = difflib.get_close_matches(name, list(VARIANTS), n=3, cutoff=0.3)
    hint = f"; closest: {', '.join(close)}" if close else f"; known: {', '.join(VARIANTS)}"
    raise KeyError(f"unknown JiT variant {name!r}{hint}")
