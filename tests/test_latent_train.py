"""Training a latent model (issue 21, Build 3): a tiny DiT (jitmodel.archs.dit) trains on latents that
``jitplan data encode`` wrote with the random real-config SD VAE, its checkpoint records the autoencoder, and
``jitmodel sample`` decodes its samples to pixels through that autoencoder (noise with random weights, but the
path runs); another autoencoder is refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("diffusers")

from jitmodel import checkpoint as C  # noqa: E402
from jitmodel.train import main  # noqa: E402
from jitplan.dataset.encode import encode_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KW = {"input_size": 4, "patch": 2, "in_channels": 4, "depth": 2, "hidden": 32, "heads": 4, "num_classes": 2}


def make_folder(root: Path, per_class: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / "train" / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (40, 36, 3), dtype=np.uint8)).save(root / "train" / c / f"{i}.png")


@pytest.mark.slow
def test_a_dit_trains_on_latents_and_samples_decode(tmp_path):
    make_folder(tmp_path / "ds", per_class=4)
    encode_dataset(tmp_path / "ds", tmp_path / "lat", vae="random", image_size=32, batch=4, shard_size=8,
                   device="cpu")
    cfg = {"model": {"factory": "jitmodel.archs.dit:DiT", "factory_kwargs": KW, "img_size": 4, "in_channels": 4,
                     "num_classes": 2},
           "data": {"kind": "latents", "path": str(tmp_path / "lat"), "num_workers": 0},
           "optim": {"lr": 1e-3, "warmup_epochs": 0}, "batch_per_gpu": 4, "epochs": 100, "max_steps": 4,
           "log_every": 1, "output_dir": str(tmp_path / "run")}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["--config", str(tmp_path / "c.yaml")]) == 0
    ck = C.load_checkpoint(tmp_path / "run" / "last.pt")
    data = ck["train_config"]["data"]
    assert (data["kind"], data["vae"], data["vae_digest"]) == ("latents", "random", "random-seed0")
    assert ck["step"] == 4 and list(ck["classes"]) == ["cat", "dog"]

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "jitmodel", "sample", "--ckpt", str(tmp_path / "run" / "last.pt"), "--classes",
            "0,1", "--n", "1", "--steps", "3", "--out", str(tmp_path / "grid.png"), "--out-dir", str(tmp_path / "s")]
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "WARNING: a randomly initialised autoencoder" in r.stderr  # never silently
    from PIL import Image

    assert Image.open(tmp_path / "s" / "00000.png").size == (32, 32)  # decoded: 4x4 latents -> 32x32 pixels

    (tmp_path / "fake").mkdir()  # another autoencoder (a folder with its own config and weights) is refused
    (tmp_path / "fake" / "config.json").write_text('{"_class_name": "AutoencoderKL"}')
    (tmp_path / "fake" / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    r = subprocess.run(argv, capture_output=True, text=True, env={**env, "JITMODEL_VAE": str(tmp_path / "fake")},
                       timeout=600)
    assert r.returncode == 2 and "is not the one the latents were encoded with (random-seed0)" in r.stderr
    assert "Traceback" not in r.stderr
