"""A tiny JiT trained for a few seconds on scikit-learn's digits, saved as a real jitmodel checkpoint.

Shared by the sampling, trajectory and evaluation tests (``tiny_checkpoint(tmp_path_factory)`` caches the
file per test session). Built here with the library's own Denoiser/EMA/atomic_save rather than the
trainer, so these tests depend only on the model and checkpoint format.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

STEPS, BATCH, IMG, VARIANT = 100, 32, 32, "JiT-Tiny/8"


def train_tiny(path: Path, steps: int = STEPS, seed: int = 0) -> dict:
    """Train JiT-Tiny/8 at 32 px on digits and save a self-describing checkpoint; returns loss info."""

    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: one thread is faster than two spinning on a shared machine
    try:
        return _train(path, steps, seed)
    finally:
        torch.set_num_threads(threads)


def _train(path: Path, steps: int, seed: int) -> dict:
    from jitmodel.checkpoint import FORMAT, FORMAT_VERSION, atomic_save, versions
    from jitmodel.config import DataConfig, DiffusionConfig, ModelConfig, SampleConfig, TrainConfig
    from jitmodel.data import Digits
    from jitmodel.denoiser import EMA, Denoiser
    from jitmodel.integrity import digests

    mc = ModelConfig(variant=VARIANT, img_size=IMG, num_classes=10)
    dc = DiffusionConfig(ema_decays=(0.99, 0.95))
    tc = TrainConfig(model=mc, diffusion=dc, data=DataConfig(kind="digits"), batch_per_gpu=BATCH,
                     sample=SampleConfig(steps=20, cfg=2.0, interval_min=0.1, interval_max=1.0))
    ds = Digits(IMG)
    x_all = ds.images.float() / 127.5 - 1
    y_all = torch.tensor(ds.labels)
    den = Denoiser(mc, dc)
    ema = EMA(den, dc.ema_decays)
    opt = torch.optim.AdamW(den.parameters(), lr=2e-3, betas=(0.9, 0.95), weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(y_all), (BATCH,), generator=g)
        loss = den(x_all[idx], y_all[idx], generator=g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update(den)
        losses.append(loss.item())
    ck = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": den.state_dict(),
          "ema1": ema.state_dict("ema1"), "ema2": ema.state_dict("ema2"),
          "model_config": mc.model_dump(mode="json"), "train_config": tc.model_dump(mode="json"),
          "classes": ds.classes, "versions": versions(), "step": steps, "epoch": 0,
          "loss_first": sum(losses[:20]) / 20, "loss_last": sum(losses[-20:]) / 20}
    atomic_save({**ck, "digests": digests(ck)}, path)  # verified like a trainer's checkpoint: no warning line
    return {"first": sum(losses[:20]) / 20, "last": sum(losses[-20:]) / 20}


def tiny_checkpoint(tmp_path_factory) -> Path:
    """The session's tiny checkpoint (trained once, a few seconds; $JITMODEL_TINY_CKPT reuses a file)."""
    reuse = os.environ.get("JITMODEL_TINY_CKPT")
    if reuse and Path(reuse).is_file():
        return Path(reuse)
    root = tmp_path_factory.getbasetemp() / "tiny-jit"
    path = root / "last.pt"
    if not path.is_file():
        root.mkdir(parents=True, exist_ok=True)
        train_tiny(path)
    return path


@pytest.mark.slow
def test_tiny_training_learns(tmp_path_factory):
    from jitmodel.checkpoint import checkpoint_model_config, load_checkpoint

    ck = load_checkpoint(tiny_checkpoint(tmp_path_factory))
    assert ck["loss_last"] < 0.8 * ck["loss_first"], (ck["loss_first"], ck["loss_last"])
    assert checkpoint_model_config(ck).variant == VARIANT and ck["classes"][3] == "3"


pytestmark = pytest.mark.usefixtures("one_torch_thread")
