"""``jitplan data encode``: encode an image folder once into latents (jitmodel.latents' layout).

Images are read as the trainer reads them (``jitmodel.data.ImageFolder``: the scanner, the verified
manifest's refusals, the ADM centre crop to ``image_size``), mapped to [-1, 1] and encoded by the
autoencoder (``jitmodel.autoencoder``: the posterior mean x 0.18215). ``hflip`` also encodes each image's
mirror (two views per image, twice the time and disk): a flip is done on the image, as DiT does.

Resumable: shards of ``shard_size`` images are written atomically and the manifest (also atomic) lists a
shard only once both its files are on disk, so a run killed at any point continues at the first shard the
manifest does not list; the shards it lists are checked (sha256) first, and a damaged one is encoded again.
Batches never cross a shard, so a resumed folder holds the bytes an uninterrupted run writes. A second run
on a complete folder checks it and writes nothing. An ``out`` holding another encode (other images,
autoencoder, size, dtype, views or shard size) is refused before anything is written.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch.utils.data import DataLoader

from jitmodel import autoencoder as ae
from jitmodel import latents as lt
from jitmodel.atomic import atomic_write, atomic_write_text
from jitmodel.data import BadImage, ImageFolder
from jitplan.errors import UsageError


class EncodeResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    out: str
    images: int
    classes: int
    latent_shape: list[int]
    views: int
    dtype: str
    vae: str
    vae_digest: str
    shards: int
    encoded: int  # images encoded by this run (the rest were already there)
    resumed_from: int  # images found done when this run started
    seconds: float
    images_per_s: float | None  # of this run's encoding (None when it encoded nothing)
    bytes: int  # on disk: shards + labels
    device: str
    notes: list[str] = []


def _listing_digest(ds: ImageFolder, root: Path) -> str:
    h = hashlib.sha256()
    for path, label in ds.samples:
        h.update(f"{label}\t{Path(path).relative_to(root)}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:16]


def _pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise UsageError(f"--device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device here")
    return torch.device(device)


def _settings(man: dict[str, Any], want: dict[str, Any]) -> list[str]:
    return [k for k, v in want.items() if man.get(k) != v]


def _resume_point(out: Path, want: dict[str, Any], notes: list[str]) -> dict[str, Any] | None:
    """The manifest to continue (its good shards kept), None for a fresh folder; UsageError for a foreign one."""
    if not (out / lt.MANIFEST).exists():
        ours = [p for p in out.iterdir() if not p.name.startswith(("shard-", ".shard-", f".{lt.MANIFEST}"))] \
            if out.is_dir() else []
        if ours:
            raise UsageError(f"--out {out} is not empty and holds no {lt.MANIFEST} (e.g. {ours[0].name}): choose a new "
                             "or empty folder")
        return None
    try:
        man = lt.read_manifest(out)
    except lt.LatentsError as e:
        raise UsageError(f"{e}; delete {out / lt.MANIFEST} to start over") from None
    differ = _settings(man, want)
    if differ:
        raise UsageError(f"--out {out} holds latents of another encode (its {', '.join(differ)} differ): choose a "
                         "new folder, or delete this one to start over")
    for k, entry in enumerate(man["shards"]):
        try:
            lt.check_shard(out, entry, man)
        except lt.LatentsError as e:
            notes.append(f"shard {k} does not check ({e}); encoding again from it")
            man["shards"], man["complete"] = man["shards"][:k], False
            break
    return man


def encode_dataset(root: str | Path, out: str | Path, *, vae: str, image_size: int = 256, batch: int = 16,
                   shard_size: int = 1024, hflip: bool = False, dtype: str = "float16", device: str = "auto",
                   workers: int = 0, progress: Callable[[int, int], None] | None = None) -> EncodeResult:
    """Encode ``root/train/<class>/*`` into ``out`` (resuming it); UsageError (exit 2) for bad input."""
    t0 = time.perf_counter()
    root, out = Path(root).expanduser(), Path(out).expanduser()
    if image_size % ae.DOWNSAMPLE or image_size < ae.DOWNSAMPLE:
        raise UsageError(f"--image-size {image_size} is not a multiple of the autoencoder's /{ae.DOWNSAMPLE}")
    if dtype not in lt.DTYPES:
        raise UsageError(f"--dtype must be one of {', '.join(lt.DTYPES)}, got {dtype!r}")
    for name, v in (("--batch", batch), ("--shard-size", shard_size)):
        if v < 1:
            raise UsageError(f"{name} must be >= 1, got {v}")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    if out.resolve() == root.resolve() or root.resolve() in out.resolve().parents:
        raise UsageError(f"--out {out} is inside the dataset {root}: the trainer would count it as images")
    try:
        ds = ImageFolder(root, image_size, 3)
    except ValueError as e:
        raise UsageError(str(e)) from None
    dev = _pick_device(device)
    try:
        digest = ae.vae_digest(vae)
    except ae.VaeError as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        raise UsageError(f"--vae {vae}: {e.strerror or type(e).__name__}") from None
    h = image_size // ae.DOWNSAMPLE
    n = len(ds)
    want = {"format": lt.FORMAT, "format_version": lt.FORMAT_VERSION, "image_size": image_size,
            "latent_shape": [ae.LATENT_CHANNELS, h, h], "views": 2 if hflip else 1, "dtype": dtype,
            "classes": list(ds.classes), "num_images": n, "shard_size": shard_size,
            "source_listing": _listing_digest(ds, root / "train")}
    notes: list[str] = [ds.note] if ds.note else []
    man = _resume_point(out, {**want, "vae_digest": digest}, notes) if out.exists() else None
    if man is None:
        man = {**want, "vae": {"source": vae if vae == ae.RANDOM else str(Path(vae).expanduser().resolve()),
                               "digest": digest, "scale": ae.SCALE, "posterior": "mean"},
               "vae_digest": digest, "source_root": str(root.resolve()), "shards": [], "complete": False}
    out.mkdir(parents=True, exist_ok=True)
    n_shards = math.ceil(n / shard_size)
    done_images = sum(int(s["count"]) for s in man["shards"])
    start = len(man["shards"])
    if progress:
        progress(done_images, n)
    model = None
    if start < n_shards:
        try:
            model = ae.build_vae(vae, device=dev)
        except ae.VaeError as e:
            raise UsageError(str(e)) from None
    t_enc, encoded = time.perf_counter(), 0
    for k in range(start, n_shards):
        lo, hi = k * shard_size, min(n, (k + 1) * shard_size)
        lat, labels = _encode_range(model, ds, lo, hi, batch=batch, hflip=hflip, workers=workers, dev=dev,
                                    progress=(lambda done: progress(done, n)) if progress else None)
        name, lname = lt.shard_names(k)
        arr = lat.numpy().astype(dtype)
        for fname, data in ((name, arr), (lname, labels)):
            atomic_write(out / fname, functools.partial(_save_npy, data))
        man["shards"].append({"name": name, "labels": lname, "count": hi - lo, "sha256": lt.sha256_file(out / name),
                              "labels_sha256": lt.sha256_file(out / lname)})
        man["complete"] = k == n_shards - 1
        atomic_write_text(out / lt.MANIFEST, json.dumps(man, indent=1))  # the shard counts from here on
        encoded += hi - lo
        if progress:
            progress(hi, n)
    if (n_shards == 0 or start == n_shards) and not man.get("complete"):  # a complete folder is left untouched
        man["complete"] = True
        atomic_write_text(out / lt.MANIFEST, json.dumps(man, indent=1))
    secs = time.perf_counter() - t_enc
    size = sum((out / s[f]).stat().st_size for s in man["shards"] for f in ("name", "labels"))
    return EncodeResult(out=str(out), images=n, classes=len(ds.classes), latent_shape=want["latent_shape"],
                        views=want["views"], dtype=dtype, vae=man["vae"]["source"], vae_digest=digest,
                        shards=len(man["shards"]), encoded=encoded, resumed_from=done_images,
                        seconds=time.perf_counter() - t0, images_per_s=encoded / secs if encoded else None,
                        bytes=size, device=str(dev), notes=notes)


def _encode_range(model: Any, ds: ImageFolder, lo: int, hi: int, *, batch: int, hflip: bool, workers: int,
                  dev: torch.device, progress: Callable[[int], None] | None) -> tuple[torch.Tensor, np.ndarray]:
    """Latents (n, views, C, h, w) fp32 and labels (n,) int64 of images lo..hi-1 (batches inside the range)."""
    indices: list[int] = list(range(lo, hi))
    loader: DataLoader[Any] = DataLoader(
        indices,  # type: ignore[arg-type]  # a list of indices is a map-style dataset
        batch_size=batch, shuffle=False, num_workers=workers, collate_fn=functools.partial(_load_batch, ds))
    lats, labels = [], []
    try:
        for x, y in loader:
            x = x.to(dev).float().div_(255).mul_(2).sub_(1)  # uint8 -> [-1, 1], as the trainer maps pixels
            views = [ae.encode(model, x)] + ([ae.encode(model, x.flip(-1))] if hflip else [])
            lats.append(torch.stack(views, 1).cpu())
            labels.append(y)
            if progress:
                progress(lo + sum(len(b) for b in labels))
    except BadImage as e:
        raise UsageError(e.one_line()) from None
    return torch.cat(lats), np.concatenate(labels).astype(np.int64)


def _save_npy(arr: np.ndarray, f: IO[Any]) -> None:
    np.save(f, arr, allow_pickle=False)


def _load_batch(ds: ImageFolder, idx: list[int]) -> tuple[torch.Tensor, np.ndarray]:
    items = [ds._load(i) for i in idx]
    return torch.stack([img for img, _ in items]), np.array([label for _, label in items], dtype=np.int64)
