"""FID and Inception Score: Fréchet distance, reference statistics (npz), feature extractors.

Reference statistics use the format of the official ``jit_in256_stats.npz`` (keys ``mu`` and ``sigma``;
we add ``n`` and ``extractor``). The default extractor is torch-fidelity's Inception-v3 ("compat", pool3,
2048-d, with the 1008-way logits for IS), loaded from a local weights file, never downloaded at run time.
Any object with ``name``, ``dim`` and ``__call__(uint8 (B, 3, H, W)) -> (features, logits | None)`` can
stand in for it, e.g. ``digits``: a small classifier trained on scikit-learn's 8x8 digits, for tiny runs.

    >>> import numpy as np
    >>> from jitmodel.fid import frechet_distance
    >>> mu, sigma = np.zeros(2), np.eye(2)
    >>> frechet_distance(mu, sigma, mu + [3.0, 4.0], sigma)  # means 5 apart, same covariance
    25.0
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from jitmodel.atomic import atomic_write

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
WEIGHTS_ENV = "JITMODEL_INCEPTION_WEIGHTS"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class FeatureExtractorMissing(ValueError):
    """The feature extractor (its package or its weights file) is not on this machine."""


# --------------------------------------------------------------------------------------------------------
# Statistics (pure numpy)
# --------------------------------------------------------------------------------------------------------
def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), the trace term through symmetric eigensolves.

    tr((S1 S2)^(1/2)) = sum sqrt(eig(S1^(1/2) S2 S1^(1/2))), which is symmetric PSD: no complex parts.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"statistics do not match: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}")
    w, q = np.linalg.eigh((s1 + s1.T) / 2)
    root1 = (q * np.sqrt(np.clip(w, 0, None))) @ q.T
    m = root1 @ s2 @ root1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


@dataclass
class FeatureSums:
    """Sufficient statistics of features: count, sum, sum of outer products (mergeable across ranks)."""

    n: int = 0
    s: np.ndarray | None = None
    ss: np.ndarray | None = None
    logits: list[np.ndarray] = field(default_factory=list)

    def add(self, feats: np.ndarray, logits: np.ndarray | None = None) -> None:
        f = np.asarray(feats, np.float64)
        s = self.s if self.s is not None else np.zeros(f.shape[1])
        ss = self.ss if self.ss is not None else np.zeros((f.shape[1], f.shape[1]))
        self.n += f.shape[0]
        self.s, self.ss = s + f.sum(0), ss + f.T @ f
        if logits is not None:
            self.logits.append(np.asarray(logits, np.float64))

    def mu_sigma(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and unbiased covariance (as ``np.cov(rowvar=False)``)."""
        if self.n < 2 or self.s is None or self.ss is None:
            raise ValueError(f"need at least 2 images for feature statistics, got {self.n}")
        mu = self.s / self.n
        sigma = (self.ss - self.n * np.outer(mu, mu)) / (self.n - 1)
        return mu, sigma


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """IS = exp(E_x KL(p(y|x) || p(y))) over ``splits`` chunks: (mean, std), as torch-fidelity."""
    logits = np.asarray(logits, np.float64)
    splits = max(1, min(splits, logits.shape[0]))
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    scores = []
    for chunk in np.array_split(p, splits):
        py = chunk.mean(0, keepdims=True)
        kl = (chunk * (np.log(chunk + 1e-30) - np.log(py + 1e-30))).sum(1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


def save_stats(path: str | Path, mu: np.ndarray, sigma: np.ndarray, n: int, extractor: str) -> Path:
    """Write reference statistics as npz (mu, sigma, n, extractor) atomically."""

    return atomic_write(path, lambda f: np.savez(f, mu=mu, sigma=sigma, n=np.int64(n), extractor=np.str_(extractor)))


def load_stats(path: str | Path) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Read (mu, sigma, extractor name or None) from an npz like ``jit_in256_stats.npz``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"reference statistics not found: {path}")
    try:
        z = np.load(path)
    except (OSError, EOFError, ValueError) as e:  # not a zip, truncated, or a pickle
        raise ValueError(f"{path} is not a readable npz file: {' '.join(str(e).split())[:120]}") from None
    with z:
        if not hasattr(z, "files") or "mu" not in z.files or "sigma" not in z.files:
            raise ValueError(f"{path} has no mu/sigma arrays (keys: {', '.join(getattr(z, 'files', []))})")
        mu, sigma = z["mu"], z["sigma"]
        extractor = str(z["extractor"]) if "extractor" in z.files else None
    if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
        raise ValueError(f"{path}: mu {mu.shape} and sigma {sigma.shape} are not a D / DxD pair")
    return mu, sigma, extractor


# --------------------------------------------------------------------------------------------------------
# Feature extractors
# --------------------------------------------------------------------------------------------------------
class FeatureExtractor(Protocol):
    name: str
    dim: int

    def __call__(self, images):  # uint8 (B, 3, H, W) tensor -> (features (B, D), logits (B, K) | None)
        ...


def find_inception_weights(explicit: str | Path | None = None) -> Path:
    """The Inception weights file: ``explicit``, $JITMODEL_INCEPTION_WEIGHTS, or torch's hub cache."""
    import torch

    cache = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    for cand in (explicit, os.environ.get(WEIGHTS_ENV), cache):
        if cand and Path(cand).is_file():
            return Path(cand)
    given = f" (not found: {explicit})" if explicit else ""
    raise FeatureExtractorMissing(
        f"Inception weights missing{given}: download {INCEPTION_URL} and put it at {cache} "
        f"(or pass --inception-weights PATH, or set {WEIGHTS_ENV}); nothing is downloaded at run time")


def _fidelity_inception_class() -> type:
    """torch-fidelity's FeatureExtractorInceptionV3, importable without torchvision."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        return FeatureExtractorInceptionV3
    except ModuleNotFoundError as e:
        if e.name != "torchvision":
            raise FeatureExtractorMissing(
                "torch-fidelity is not installed: pip install --no-deps torch-fidelity") from None
    # torch-fidelity 0.4.0 (seen 2026-11): the package __init__ imports its CLIP/DINOv2 extractors, which
    # need torchvision; the Inception module itself does not. Import it under a bare package stub.
    spec = importlib.util.find_spec("torch_fidelity")
    if spec is None or not spec.submodule_search_locations:
        raise FeatureExtractorMissing("torch-fidelity is not installed: pip install --no-deps torch-fidelity")
    for k in [k for k in sys.modules if k == "torch_fidelity" or k.startswith("torch_fidelity.")]:
        del sys.modules[k]  # partial leftovers of the failed import
    stub = types.ModuleType("torch_fidelity")
    stub.__path__ = list(spec.submodule_search_locations)
    sys.modules["torch_fidelity"] = stub
    return importlib.import_module("torch_fidelity.feature_extractor_inceptionv3").FeatureExtractorInceptionV3


class InceptionExtractor:
    """torch-fidelity's Inception-v3 (FID "compat"): pool3 features (2048) and unbiased logits (IS)."""

    name, dim = "inception", 2048

    def __init__(self, weights: str | Path | None = None, device: str = "cpu"):
        path = find_inception_weights(weights)
        cls = _fidelity_inception_class()
        self.device = device
        self.net = cls("inception-v3-compat", ["2048", "logits_unbiased"],
                       feature_extractor_weights_path=str(path)).to(device)

    def __call__(self, images):
        import torch

        with torch.no_grad():
            feats, logits = self.net(images.to(self.device))
        # to the CPU first: MPS has no float64 (PyTorch raises converting an MPS tensor to double)
        return feats.cpu().double().numpy(), logits.cpu().double().numpy()


class DigitsExtractor:
    """A small MLP trained on scikit-learn's 8x8 digits: 64 hidden ReLU features and 10 logits.

    Images are turned into 8x8 grey digits (mean of channels, area downscale, 0..16 like the dataset).
    For FID/IS on the digits learning check, where Inception features mean little.
    """

    name, dim = "digits", 64

    def __init__(self, seed: int = 0):
        from sklearn.datasets import load_digits
        from sklearn.neural_network import MLPClassifier

        d = load_digits()
        self.clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=600, random_state=seed).fit(d.data / 16, d.target)

    @staticmethod
    def to_digits(images) -> np.ndarray:
        """uint8 (B, 3, H, W) -> (B, 64) in 0..16, the format of sklearn's digits."""
        import torch.nn.functional as F

        x = images.float().mean(1, keepdim=True) / 255 * 16  # (B, 1, H, W)
        return F.adaptive_avg_pool2d(x, 8).flatten(1).double().numpy()

    def __call__(self, images):
        x = self.to_digits(images) / 16
        hidden = np.maximum(x @ self.clf.coefs_[0] + self.clf.intercepts_[0], 0)
        logits = hidden @ self.clf.coefs_[1] + self.clf.intercepts_[1]
        return hidden, logits


@functools.lru_cache(maxsize=1)
def _digits_extractor() -> DigitsExtractor:
    return DigitsExtractor()


def get_extractor(name: str, device: str = "cpu", weights: str | Path | None = None) -> FeatureExtractor:
    """``inception`` | ``digits`` | ``package.module:factory`` (called with no arguments)."""
    if name == "inception":
        return InceptionExtractor(weights, device)
    if name == "digits":
        return _digits_extractor()
    if ":" in name:
        mod, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(mod), attr)()
        except (ImportError, AttributeError) as e:
            raise ValueError(f"cannot load feature extractor {name!r}: {e}") from None
    raise ValueError(f"unknown feature extractor {name!r}; choose inception, digits or module:factory")


# --------------------------------------------------------------------------------------------------------
# Images on disk -> features
# --------------------------------------------------------------------------------------------------------
def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"image folder not found: {folder}")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def load_images(paths: Iterable[Path], img_size: int | None = None):
    """Read images as uint8 (B, 3, H, W); ``img_size`` centre-crops to a square and resizes (bicubic)."""
    import torch
    from PIL import Image

    out = []
    for p in paths:
        with Image.open(p) as f:
            im = f.convert("RGB")
            if img_size is not None and im.size != (img_size, img_size):
                s = min(im.size)
                left, top = (im.width - s) // 2, (im.height - s) // 2
                im = im.crop((left, top, left + s, top + s)).resize((img_size, img_size), Image.Resampling.BICUBIC)
            out.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1))
    sizes = {tuple(t.shape) for t in out}
    if len(sizes) > 1:
        raise ValueError(f"images have different sizes {sorted(sizes)}; pass --img-size to crop and resize")
    return torch.stack(out) if out else torch.empty(0, 3, 0, 0, dtype=torch.uint8)


def batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def feature_sums(paths: list[Path], extractor: FeatureExtractor, batch: int = 64,
                 img_size: int | None = None) -> FeatureSums:
    sums = FeatureSums()
    for chunk in batches(paths, batch):
        feats, logits = extractor(load_images(chunk, img_size))
        sums.add(feats, logits)
    return sums


def folder_stats(folder: str | Path, extractor: FeatureExtractor, batch: int = 64,
                 img_size: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """mu, sigma and the image count of every image under ``folder``."""
    paths = list_images(folder)
    if len(paths) < 2:
        raise ValueError(f"{folder} holds {len(paths)} images; FID statistics need at least 2")
    sums = feature_sums(paths, extractor, batch, img_size)
    mu, sigma = sums.mu_sigma()
    return mu, sigma, sums.n
