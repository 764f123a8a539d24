"""The Stable Diffusion VAE (diffusers' ``AutoencoderKL``) that DiT, SiT and U-ViT train in the latents of.

``build_vae(source)`` returns it from a local folder of weights (``from_pretrained(path)``, offline: nothing
is downloaded) or, with ``source="random"``, randomly initialised with the real configuration of
stabilityai/sd-vae-ft-ema and -mse (block_out_channels 128, 256, 512, 512; two ResNet blocks per level;
4 latent channels; /8; scaling factor 0.18215). Random weights are for tests and for this machine, which
cannot download the real ones: their latents are noise-like and their samples are noise, so building one
prints a warning on stderr every time (never silently). Its weights come from a fixed seed, so the decoder
that draws samples is the one that encoded the data.

``encode`` maps images in [-1, 1] to *scaled* latents: the **mean** of the posterior times the scaling
factor (deterministic, so a resumed or repeated encode writes the same bytes; the posterior's standard
deviation under the real weights is ~1e-3 of the latents' spread, which is why the mean is the usual choice
for pre-encoding). ``decode`` undoes the scaling and returns images in about [-1, 1].

Getting the real weights (on a machine with network)::

    huggingface-cli download stabilityai/sd-vae-ft-ema --local-dir ~/vae/sd-vae-ft-ema
    jitplan data encode /data/in256 --out /data/in256-latents --vae ~/vae/sd-vae-ft-ema
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

RANDOM = "random"
RANDOM_SEED = 0  # a random VAE is always this one: the sampler decodes with the encoder's twin
SCALE = 0.18215  # sd-vae-ft-ema/mse: latents are divided by their std over the training images (~1/0.18215)
DOWNSAMPLE = 8
LATENT_CHANNELS = 4
# The configuration of stabilityai/sd-vae-ft-ema (and -mse): its config.json, the keys AutoencoderKL takes.
SD_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": LATENT_CHANNELS, "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 2, "norm_num_groups": 32, "act_fn": "silu", "sample_size": 256, "scaling_factor": SCALE,
}
VAE_ENV = "JITMODEL_VAE"  # the autoencoder's folder on this machine, when it is not where the data was encoded
_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


class VaeError(ValueError):
    """A VAE that cannot be built (one line: exit 2)."""


def random_warning() -> str:
    return (f"WARNING: a randomly initialised autoencoder (the real sd-vae-ft-ema configuration, seed {RANDOM_SEED}): "
            "its latents are not Stable Diffusion's and its samples are noise. For real latents download the "
            "weights (docs/models.md, Latent models) and pass --vae PATH")


def _diffusers() -> Any:
    try:
        import diffusers  # lazy: optional heavy library (~7 s to import), only latent models need it
    except ImportError:
        raise VaeError("latent models need diffusers for the autoencoder: pip install 'jitplan[train]' "
                       "(or pip install diffusers)") from None
    return diffusers


def vae_digest(source: str) -> str:
    """What identifies the VAE: ``random-seed0`` or sha256 (16 hex) of the folder's config and weight file.

    The latents folder records it and the sampler checks it, so latents are never decoded by another VAE."""
    if source == RANDOM:
        return f"random-seed{RANDOM_SEED}"
    folder = _folder(source)
    h = hashlib.sha256((folder / "config.json").read_bytes())
    weights = next(folder / n for n in _WEIGHT_FILES if (folder / n).is_file())
    with open(weights, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _folder(source: str) -> Path:
    """The diffusers folder ``source`` names (its config.json and weights), or VaeError saying what is missing."""
    folder = Path(source).expanduser()
    if (folder / "vae" / "config.json").is_file():  # a whole pipeline's folder: its vae/ sub-folder
        folder = folder / "vae"
    if not folder.is_dir():
        raise VaeError(f"--vae {source}: no such folder (a diffusers AutoencoderKL folder holding config.json and "
                       f"{_WEIGHT_FILES[0]}, or 'random' for tests)")
    if not (folder / "config.json").is_file() or not any((folder / n).is_file() for n in _WEIGHT_FILES):
        raise VaeError(f"--vae {source}: not a diffusers autoencoder folder (needs config.json and "
                       f"{_WEIGHT_FILES[0]}; download one with `huggingface-cli download stabilityai/sd-vae-ft-ema "
                       "--local-dir DIR`)")
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise VaeError(f"--vae {source}: config.json does not parse ({type(e).__name__})") from None
    if not isinstance(cfg, dict) or cfg.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
        raise VaeError(f"--vae {source}: config.json is not an AutoencoderKL's")
    return folder


def build_vae(source: str, *, device: torch.device | str = "cpu", warn: bool = True) -> Any:
    """The AutoencoderKL ``source`` names (a local folder, or ``random``), in eval mode, gradients off."""
    diffusers = _diffusers()
    if source == RANDOM:
        if warn:
            print(random_warning(), file=sys.stderr)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            vae = diffusers.AutoencoderKL(**SD_VAE_CONFIG)
    else:
        folder = _folder(source)
        try:  # a local folder, local_files_only: never reaches for the network
            vae = diffusers.AutoencoderKL.from_pretrained(str(folder), local_files_only=True)
        except Exception as e:  # noqa: BLE001 - diffusers raises OSError, ValueError, EnvironmentError...
            raise VaeError(f"--vae {source}: cannot load the autoencoder ({type(e).__name__}: "
                           f"{' '.join(str(e).split())[:200]})") from None
    vae.requires_grad_(False)
    return vae.to(device).eval()


def scaling_factor(vae: Any) -> float:
    return float(getattr(vae.config, "scaling_factor", SCALE) or SCALE)


def encode(vae: Any, images: Tensor) -> Tensor:
    """Images (B, 3, H, W) in [-1, 1] -> scaled latents (B, 4, H/8, W/8) fp32: the posterior mean x scale."""
    with torch.no_grad():
        dist = vae.encode(images.to(vae.device, vae.dtype)).latent_dist
        return (dist.mean * scaling_factor(vae)).float()


def decode(vae: Any, latents: Tensor) -> Tensor:
    """Scaled latents (B, 4, h, w) -> images (B, 3, 8h, 8w) fp32 in about [-1, 1] (not clipped)."""
    with torch.no_grad():
        out = vae.decode(latents.to(vae.device, vae.dtype) / scaling_factor(vae)).sample
        return out.float()


def decoder_for(data: object, device: torch.device | str = "cpu") -> Callable[[Tensor], Tensor]:
    """Model space -> pixels for ``jitmodel sample``: the identity for a pixel model; for one trained on latents
    (the checkpoint's ``train_config.data`` has ``kind: latents``) the decoder of the autoencoder it names
    (``data.vae``, or ``$JITMODEL_VAE`` on another machine), refused when its digest is not ``data.vae_digest``."""
    if not isinstance(data, dict) or data.get("kind") != "latents":
        return lambda x: x
    source = os.environ.get(VAE_ENV) or str(data.get("vae") or "")
    if not source:
        raise VaeError("the checkpoint was trained on latents but names no autoencoder (data.vae): set "
                       f"{VAE_ENV}=PATH to the one that encoded them")
    want, got = data.get("vae_digest"), vae_digest(source)
    if want and got != want:
        raise VaeError(f"the autoencoder {source} ({got}) is not the one the latents were encoded with ({want}): "
                       f"set {VAE_ENV}=PATH to that one")
    vae = build_vae(source, device=device)
    return lambda z: decode(vae, z)
