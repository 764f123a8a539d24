"""Inception Score from split sums: mergeable across ranks, with torch-fidelity's shuffled splits.

Each rank adds its images' class probabilities per split; one all-reduce of (n, sum p, sum p log p) per
split gives every rank the same score (``jitmodel.evaluate``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def split_of_ids(num_images: int, splits: int = 10, seed: int = 2020) -> np.ndarray:
    """Split index of each image id as torch-fidelity assigns them (a seeded shuffle, then equal chunks)."""
    perm = np.random.RandomState(seed).permutation(num_images)
    out = np.empty(num_images, dtype=np.int64)
    for k in range(splits):
        out[perm[k * num_images // splits:(k + 1) * num_images // splits]] = k
    return out


@dataclass
class ISSums:
    """Per split: count, sum of p(y|x), and sum of sum_y p log p; IS needs nothing else."""

    splits: int
    n: np.ndarray = field(init=False)
    p: np.ndarray | None = None
    plogp: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.n, self.plogp = np.zeros(self.splits), np.zeros(self.splits)

    def add(self, split: np.ndarray, logits: np.ndarray) -> None:
        logits = np.asarray(logits, np.float64)
        logp = logits - logits.max(1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(1, keepdims=True))
        p = np.exp(logp)
        if self.p is None:
            self.p = np.zeros((self.splits, logits.shape[1]))
        np.add.at(self.n, split, 1)
        np.add.at(self.p, split, p)
        np.add.at(self.plogp, split, (p * logp).sum(1))

    def score(self) -> tuple[float, float]:
        if self.p is None or (self.n == 0).any():
            raise ValueError(f"inception score needs images in all {self.splits} splits")
        q = self.p / self.n[:, None]
        kl = (self.plogp - (self.p * np.log(q)).sum(1)) / self.n
        s = np.exp(kl)
        return float(s.mean()), float(s.std())
