"""A folder of pre-encoded latents (``jitplan data encode``): its manifest, its verification, its dataset.

Layout of ``LATENTS/``::

    latents.json                 the manifest (written atomically after every shard)
    shard-00000.npy              float16 (or float32) latents, shape (n, views, C, h, w)
    shard-00000.labels.npy       int64 class indices, shape (n,)
    ...

The manifest says which autoencoder encoded them (``vae``: source, digest, scaling factor), the image size,
the latent shape, the class names (sorted folder names: the labels ImageFolder gives), the source dataset's
listing digest, and for every finished shard its image count and the sha256 of both files. ``complete`` is
false until the last shard is written. ``views`` is 2 when the encoder also stored each image's mirror
(``--hflip``): a horizontal flip is done on the *image*, before the encoder, as DiT's data pipeline does;
flipping a latent is not the latent of the flipped image (the VAE is not exactly mirror-equivariant).

``verify(folder)`` reads every shard against the manifest and raises ``LatentsError`` (one line) for a
missing, truncated, reshaped or tampered shard or an incomplete folder; the trainer's dataset
(``LatentFolder``, ``data.kind: latents``) runs it before training.
"""

from __future__ import annotations

import bisect
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jitmodel.bounded_io import read_regular
from jitmodel.integrity import sha256_file
from jitmodel.keyed import KeyedDataset

FORMAT = "jitmodel-latents"
FORMAT_VERSION = 1
MANIFEST = "latents.json"
MAX_MANIFEST_BYTES = 256 * 2**20
DTYPES = ("float16", "float32")


class LatentsError(ValueError):
    """A latents folder that cannot be used as it is (one line; exit 2)."""


def shard_names(index: int) -> tuple[str, str]:
    return f"shard-{index:05d}.npy", f"shard-{index:05d}.labels.npy"


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of ``folder``; LatentsError when there is none or it is not one of ours."""
    path = Path(folder).expanduser() / MANIFEST
    try:
        raw = json.loads(read_regular(path, MAX_MANIFEST_BYTES, "latents manifest"))
    except FileNotFoundError:
        raise LatentsError(f"{path.parent}: no {MANIFEST} (not a latents folder; make one with "
                           "`jitplan data encode ROOT --out LATENTS --vae PATH`)") from None
    except (OSError, ValueError) as e:
        raise LatentsError(f"{path}: not a latents manifest ({' '.join(str(e).split())[:160]})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise LatentsError(f"{path}: not a latents manifest (format is not {FORMAT!r})")
    if raw.get("format_version") != FORMAT_VERSION:
        raise LatentsError(f"{path}: latents format version {raw.get('format_version')!r}, this jitmodel reads "
                           f"{FORMAT_VERSION}")
    for key in ("shards", "latent_shape", "views", "dtype", "classes", "vae", "num_images"):
        if key not in raw:
            raise LatentsError(f"{path}: the manifest has no {key!r} (damaged)")
    if raw["dtype"] not in DTYPES or raw["views"] not in (1, 2) or not isinstance(raw["shards"], list):
        raise LatentsError(f"{path}: the manifest's dtype/views/shards are not valid (damaged)")
    return raw


def check_shard(folder: Path, entry: dict[str, Any], man: dict[str, Any], *, digest: bool = True) -> None:
    """One finished shard against its manifest entry: both files there, shapes, dtype and (``digest``) sha256."""
    try:
        name, lname, count = str(entry["name"]), str(entry["labels"]), int(entry["count"])
    except (KeyError, TypeError, ValueError):
        raise LatentsError(f"{folder / MANIFEST}: a shard entry is damaged ({str(entry)[:80]})") from None
    shape = (count, man["views"], *man["latent_shape"])
    for fname, want_shape, dtype, key in ((name, shape, man["dtype"], "sha256"),
                                           (lname, (count,), "int64", "labels_sha256")):
        path = folder / fname
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise LatentsError(f"{path}: missing (the manifest lists it): re-run `jitplan data encode` to rebuild "
                               "it") from None
        except (OSError, ValueError) as e:
            raise LatentsError(f"{path}: damaged or truncated ({' '.join(str(e).split())[:120]}): delete it and "
                               "re-run `jitplan data encode`") from None
        if tuple(arr.shape) != want_shape or str(arr.dtype) != dtype:
            raise LatentsError(f"{path}: holds {arr.dtype} {tuple(arr.shape)}, the manifest says {dtype} "
                               f"{want_shape}: delete it and re-run `jitplan data encode`")
        if digest and sha256_file(path) != entry.get(key):
            raise LatentsError(f"{path}: sha256 differs from the manifest (changed since it was encoded): delete "
                               "it and re-run `jitplan data encode`")


def verify(folder: str | Path, *, digest: bool = True) -> dict[str, Any]:
    """The manifest of a complete latents folder whose every shard checks; LatentsError (one line) otherwise."""
    folder = Path(folder).expanduser()
    man = read_manifest(folder)
    done = sum(int(s.get("count", 0)) for s in man["shards"] if isinstance(s, dict))
    if not man.get("complete"):
        raise LatentsError(f"{folder}: incomplete ({done:,} of {man['num_images']:,} images encoded): run "
                           "`jitplan data encode` again with the same arguments to finish it")
    if done != man["num_images"]:
        raise LatentsError(f"{folder}: the shards hold {done:,} images, the manifest says {man['num_images']:,} "
                           "(damaged)")
    for entry in man["shards"]:
        check_shard(folder, entry if isinstance(entry, dict) else {}, man, digest=digest)
    return man


class LatentFolder(KeyedDataset):
    """``data.kind: latents``: a verified latents folder, items (C, h, w) float32 scaled latents + label.

    With ``views == 2`` a flip picks the mirror image's latent; with one view flips are not applied (``note``
    says so) since flipping a latent is not flipping the image.
    """

    def __init__(self, path: str | Path, img_size: int, in_channels: int, *, vae_digest: str | None = None,
                 hflip: bool = True):
        self.folder = Path(path).expanduser()
        man = verify(self.folder)
        c, h, w = man["latent_shape"]
        if (c, h, w) != (in_channels, img_size, img_size):
            raise LatentsError(f"{self.folder}: latents are {c}x{h}x{w} but the model takes "
                               f"{in_channels}x{img_size}x{img_size} (model.in_channels, model.img_size)")
        if vae_digest is not None and vae_digest != man["vae"].get("digest"):
            raise LatentsError(f"{self.folder}: encoded by the autoencoder {man['vae'].get('digest')} "
                               f"({man['vae'].get('source')}), the config names {vae_digest} (data.vae_digest)")
        self.classes = [str(x) for x in man["classes"]]
        self.views = int(man["views"])
        self.vae = dict(man["vae"])
        self._files = [str(self.folder / s["name"]) for s in man["shards"]]
        self._starts = [0]
        labels = []
        for s in man["shards"]:
            labels.append(np.load(self.folder / s["labels"], allow_pickle=False))
            self._starts.append(self._starts[-1] + int(s["count"]))
        self.labels = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
        self._maps: dict[int, np.ndarray] = {}
        parts = [f"latents {c}x{h}x{w} {man['dtype']} from {man['vae'].get('source')} "
                 f"(autoencoder {man['vae'].get('digest')}), {len(self._files)} shard(s) verified"]
        if hflip and self.views == 1:
            parts.append("data.hflip: these latents hold no mirrored copies, so no flips are applied (encode with "
                         "--hflip for them; flipping a latent is not the latent of the flipped image)")
        self.note = "; ".join(parts)

    def __len__(self) -> int:
        return self._starts[-1]

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers map the shards themselves
        return {**self.__dict__, "_maps": {}}

    def _shard(self, k: int) -> np.ndarray:
        if k not in self._maps:
            self._maps[k] = np.load(self._files[k], mmap_mode="r", allow_pickle=False)
        return self._maps[k]

    def _load_flipped(self, index: int, flip: bool) -> tuple[torch.Tensor, int]:
        k = bisect.bisect_right(self._starts, index) - 1
        view = 1 if flip and self.views == 2 else 0
        arr = np.array(self._shard(k)[index - self._starts[k], view], dtype=np.float32)
        return torch.from_numpy(arr), int(self.labels[index])
