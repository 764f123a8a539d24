"""Datasets, the resumable distributed sampler and the DataLoader (no torchvision needed).

* ``imagefolder``: ``<path>/train/<class>/*.JPEG`` (ImageNet wnid folders); classes are the sorted folder
  names, as torchvision's ImageFolder numbers them. Each image gets the ADM centre crop (box-halve while
  the short side is >= 2x the target, bicubic resize, centre crop), an optional horizontal flip, and is
  returned as uint8 (C, H, W); the trainer maps it to [-1, 1] on the device, as the official code does.
* ``latents``: a folder of latents pre-encoded by an autoencoder (``jitplan data encode``; jitmodel.latents),
  float32 (C, h, w) already scaled; a flip picks the stored mirror's latent when the folder has one.
* ``digits``: scikit-learn's 1,797 scanned 8x8 handwritten digits (they ship inside the package), upscaled
  bicubically to the model's image size and repeated to its channels. Never flipped (digits are not
  mirror-symmetric). For tests, demos and the learning check.

The sampler reproduces ``DistributedSampler(shuffle=True)`` (permutation from seed + epoch, padded to a
multiple of the world size, rank r takes positions r, r + W, ...) and adds what resume needs: it can
start inside an epoch, and the flip of each sample is drawn from the same per-epoch generator, so the
data order *and* augmentation are a pure function of (seed, epoch) whatever the worker count.

    >>> s = ResumableSampler(num_samples=10, world_size=2, rank=0, seed=0, micro_batch=2, hflip=False)
    >>> s.set_epoch(0); len(s), len(list(s))
    (4, 4)
    >>> s.set_epoch(0, start_micro=1); len(list(s))
    2
"""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Sampler

from jitmodel import bounds, latents
from jitmodel import manifest as mf
from jitmodel import scan as scan_mod
from jitmodel.config import DataConfig
from jitmodel.keyed import KeyedDataset

IMG_EXTENSIONS = scan_mod.IMG_EXTENSIONS
INJECT_ENV = "JITMODEL_INJECT_WORKER_KILL"  # test hook, see docs/training.md
_INJECT_AFTER_BATCHES = 2


# --------------------------------------------------------------------------- transforms

def center_crop_arr(img: Image.Image, size: int) -> Image.Image:
    """ADM centre crop (guided-diffusion): BOX-halve while short side >= 2*size, BICUBIC resize, crop."""
    while min(img.size) >= 2 * size:
        img = img.resize((img.size[0] // 2, img.size[1] // 2), resample=Image.Resampling.BOX)
    scale = size / min(img.size)
    img = img.resize((round(img.size[0] * scale), round(img.size[1] * scale)), resample=Image.Resampling.BICUBIC)
    left, top = (img.size[0] - size) // 2, (img.size[1] - size) // 2
    return img.crop((left, top, left + size, top + size))


def pil_to_uint8(img: Image.Image) -> torch.Tensor:
    """PIL image -> uint8 tensor (C, H, W), like torchvision's PILToTensor."""
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


# --------------------------------------------------------------------------- datasets

_Base = KeyedDataset  # the datasets' base (jitmodel.keyed), under its old name


class BadImage(ValueError):
    """An image that does not decode (one line; exit 2 in the trainer)."""

    def one_line(self) -> str:
        """The message, also when a DataLoader worker re-raised it with its traceback prepended."""
        last = str(self).strip().splitlines()[-1] if str(self).strip() else "an image does not decode"
        head, sep, rest = last.partition(": ")
        return rest if sep and head.endswith("BadImage") else last


def _shown(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def _scan(root: Path) -> scan_mod.Scan:
    if not _is_dir(root.parent):
        raise ValueError(f"data directory not found: {scan_mod.shown(str(root.parent))}")
    if not _is_dir(root):
        raise ValueError(f"{scan_mod.shown(str(root.parent))} has no train/ folder "
                         f"(expected {scan_mod.shown(str(root))}/<class>/<image>)")
    scan = scan_mod.scan_classes(root)
    why = scan.refusal()
    if why:
        raise ValueError(why)
    return scan


def _is_dir(p: Path) -> bool:
    """``Path.is_dir`` that says False for a path the OS refuses (too long, bad bytes) instead of raising."""
    try:
        return p.is_dir()
    except (OSError, ValueError):
        return False


class ImageFolder(_Base):
    """``<path>/train/<class>/<image>`` with the ADM centre crop, as uint8 (C, H, W).

    Files come from ``jitmodel.scan`` (each real folder once, links back into the dataset skipped).
    With a verified manifest (``jitplan data verify``) bad images refuse the run, or with ``skip_bad``
    are left out; ``note`` says what was done for the trainer's log.
    """

    def __init__(self, path: str | Path, img_size: int, in_channels: int = 3, *, manifest: str | None = None,
                 skip_bad: bool = False):
        data = Path(path).expanduser()
        root = data / "train"
        scan = _scan(root)
        self.note: str | None = None
        self.classes = scan.classes
        self.img_size, self.mode = img_size, {1: "L", 3: "RGB"}.get(in_channels)
        if self.mode is None:
            raise ValueError(f"imagefolder supports 1 or 3 channels, not {in_channels}")
        bad, self.note = _check_images(data, root, scan, manifest, skip_bad)
        drop = {rel for rel, _ in bad}
        self.samples: list[tuple[str, int]] = [(str(root / rel), label) for label, c in enumerate(scan.class_list)
                                               for rel in c.images if rel not in drop]
        have = {label for _, label in self.samples}
        empty = [scan_mod.shown(name) for label, name in enumerate(self.classes) if label not in have]
        if empty:  # every image of these classes was bad and skipped (the scan refused empty folders already)
            raise ValueError(f"{len(empty)} class folder(s) in {root} hold no usable images ({_shown(empty, 5)}): "
                             "every image in them is bad (data.skip_bad)")
        outside = scan.outside_note()
        if outside:
            self.note = f"{self.note}; {outside}" if self.note else outside

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        try:
            with Image.open(path) as im:
                if im.width * im.height > bounds.MAX_PIXELS:  # from the header, before decoding it
                    raise ValueError(f"{im.width}x{im.height} is over the {bounds.MAX_PIXELS:,}-pixel limit")
                img = center_crop_arr(im.convert(self.mode), self.img_size)
        except Exception as e:  # noqa: BLE001 - PIL's errors vary by format; all mean "this file is bad"
            why = " ".join(str(e).split())[:160] or type(e).__name__
            raise BadImage(f"cannot decode {scan_mod.shown(path)} ({type(e).__name__}: {scan_mod.shown(why)}); find "
                           "every bad file with `jitplan data verify`, then remove them or set data.skip_bad: "
                           "true") from None
        return pil_to_uint8(img), label


def _check_images(data: Path, root: Path, scan: scan_mod.Scan, manifest: str | None,
                  skip_bad: bool) -> tuple[list[tuple[str, str]], str | None]:
    """(bad images, a note for the log). ValueError when bad images are known and not to be skipped."""

    mpath = Path(manifest).expanduser() if manifest else data / mf.MANIFEST_NAME
    if manifest or mpath.is_file():
        bad, unverified = mf.check_against(root, scan, mf.load_manifest(mpath))
        source = f"manifest {mpath}"
    else:
        bad, unverified, source = [], scan.images, "no manifest"
    parts = []
    if skip_bad and unverified:  # decode what the manifest does not vouch for now, so nothing bad is left
        previous = mf.load_manifest(mpath) if mpath.is_file() else None
        bad = mf.bad_files(mf.build_manifest(root, scan=scan, previous=previous))
        parts.append(f"decoded {unverified:,} image(s) not vouched for ({source})")
    elif unverified and source != "no manifest":
        parts.append(f"{unverified:,} image(s) are new or changed since {mpath} (not verified)")
    if bad and not skip_bad:
        rel, why = bad[0]
        raise ValueError(f"{len(bad)} image(s) in {root} do not decode, e.g. {scan_mod.shown(rel)} ({why}) "
                         f"[{source}]; remove them, or set data.skip_bad: true to train without them")
    if bad:
        parts.append(f"skipped {len(bad)} bad image(s) (data.skip_bad), e.g. {scan_mod.shown(bad[0][0])}")
    return bad, "; ".join(parts) or None


class Digits(_Base):
    """scikit-learn's handwritten digits (1,797 real scans, 8x8, classes 0-9) upscaled to ``img_size``."""

    def __init__(self, img_size: int, in_channels: int = 3):
        try:
            from sklearn.datasets import load_digits  # lazy: only this dataset needs scikit-learn
        except ImportError:
            raise ValueError("data.kind 'digits' needs scikit-learn (pip install scikit-learn)") from None

        need = bounds.DIGITS_IMAGES * img_size * img_size * (1 + in_channels)  # `big` + the tensor below
        free = bounds.host_free_bytes()
        if free is not None and need > free:
            raise ValueError(f"the digits dataset at {img_size} px takes {need / bounds.GB:.1f} GB "
                             f"({bounds.DIGITS_IMAGES:,} images) but {free / bounds.GB:.1f} GB is free: "
                             "lower model.img_size")
        d = load_digits()
        small = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)  # values 0..16
        big = np.stack([
            np.asarray(Image.fromarray(im, mode="L").resize((img_size, img_size), Image.Resampling.BICUBIC))
            for im in small
        ])
        self.images = torch.from_numpy(big)[:, None].expand(-1, in_channels, -1, -1).contiguous()
        self.labels = [int(t) for t in d.target]
        self.classes = [str(i) for i in range(10)]

    def __len__(self) -> int:
        return len(self.labels)

    def _load(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], self.labels[index]


def build_dataset(cfg: DataConfig, img_size: int, in_channels: int = 3, num_classes: int | None = None) -> _Base:
    """The configured dataset; ValueError (one line) when it cannot be used with this model."""
    ds: _Base
    if cfg.kind == "latents":  # jitplan data encode's folder (jitmodel.latents)
        ds = latents.LatentFolder(cfg.path or "", img_size, in_channels, vae_digest=cfg.vae_digest, hflip=cfg.hflip)
    else:
        ds = Digits(img_size, in_channels) if cfg.kind == "digits" else \
            ImageFolder(cfg.path or "", img_size, in_channels, manifest=cfg.manifest, skip_bad=cfg.skip_bad)
    if num_classes is not None and len(ds.classes) > num_classes:
        raise ValueError(f"the dataset has {len(ds.classes)} classes but model.num_classes is {num_classes}")
    return ds


# --------------------------------------------------------------------------- sampler

class ResumableSampler(Sampler):
    """DistributedSampler(shuffle=True, drop_last-by-batch) that can start mid-epoch.

    Yields ``(index, flip)``. ``micro_per_epoch`` caps the micro-batches per rank (so an epoch holds
    whole optimizer steps); ``start_micro`` skips the micro-batches already consumed in this epoch.
    """

    def __init__(self, num_samples: int, world_size: int, rank: int, seed: int, micro_batch: int,
                 hflip: bool = True, micro_per_epoch: int | None = None):
        if num_samples <= 0:
            raise ValueError("the dataset is empty")
        self.n, self.world, self.rank, self.seed = num_samples, world_size, rank, seed
        self.micro, self.hflip = micro_batch, hflip
        self.per_rank = math.ceil(num_samples / world_size)
        full = self.per_rank // micro_batch
        if full == 0:
            raise ValueError(f"{num_samples} images over {world_size} rank(s) is less than one micro-batch "
                             f"of {micro_batch} per rank")
        self.micro_per_epoch = full if micro_per_epoch is None else min(full, micro_per_epoch)
        self.epoch, self.start_micro = 0, 0

    def set_epoch(self, epoch: int, start_micro: int = 0) -> None:
        if not 0 <= start_micro <= self.micro_per_epoch:
            raise ValueError(f"start_micro {start_micro} outside 0..{self.micro_per_epoch}")
        self.epoch, self.start_micro = epoch, start_micro

    def order(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Global (padded) index order and flip bits of an epoch: a pure function of seed + epoch."""
        g = torch.Generator().manual_seed(self.seed + epoch)
        perm = torch.randperm(self.n, generator=g)
        flips = torch.randint(0, 2, (self.n,), generator=g, dtype=torch.bool) if self.hflip \
            else torch.zeros(self.n, dtype=torch.bool)
        pad = self.per_rank * self.world - self.n
        if pad:
            reps = math.ceil(pad / self.n)
            perm = torch.cat([perm] * (reps + 1))[: self.n + pad]
            flips = torch.cat([flips] * (reps + 1))[: self.n + pad]
        return perm, flips

    def __len__(self) -> int:
        return (self.micro_per_epoch - self.start_micro) * self.micro

    def __iter__(self) -> Iterator[tuple[int, bool]]:
        perm, flips = self.order(self.epoch)
        first = self.rank + self.world * self.start_micro * self.micro
        pos = range(first, len(perm), self.world)[: len(self)]
        for p in pos:
            yield int(perm[p]), bool(flips[p])


# --------------------------------------------------------------------------- loader

def worker_kill_threshold(num_workers: int, env: dict[str, str] | None = None) -> int | None:
    """The fault-injection hook: JITMODEL_INJECT_WORKER_KILL=K fires only when num_workers >= K."""
    raw = (os.environ if env is None else env).get(INJECT_ENV, "").strip()
    if not raw:
        return None
    try:
        k = int(raw)
    except ValueError:
        raise ValueError(f"{INJECT_ENV}={raw!r} is not an integer") from None
    return k if num_workers >= max(k, 1) else None


def build_loader(ds: _Base, sampler: ResumableSampler, cfg: DataConfig, device: torch.device,
                 seed: int) -> DataLoader:
    """The DataLoader with the config's worker settings; its own generator keeps the global RNG untouched."""
    workers = cfg.num_workers
    pin = cfg.pin_memory and device.type == "cuda"
    gen = torch.Generator().manual_seed(seed)
    if workers == 0:  # DataLoader refuses prefetch/persistent settings without workers
        return DataLoader(ds, batch_size=sampler.micro, sampler=sampler, num_workers=0, drop_last=True,
                          pin_memory=pin, generator=gen)
    return DataLoader(ds, batch_size=sampler.micro, sampler=sampler, num_workers=workers, drop_last=True,
                      pin_memory=pin, generator=gen, worker_init_fn=_ignore_sigterm,
                      prefetch_factor=cfg.prefetch_factor, persistent_workers=cfg.persistent_workers)


def _ignore_sigterm(_worker_id: int) -> None:
    """A SIGTERM meant for the trainer (a preempting host signals every process) must not kill the
    DataLoader workers mid-step: the trainer finishes its step, checkpoints, then shuts its workers down
    itself (they also exit when their parent dies). Seen with torch 2.13: a group-wide SIGTERM crashed the
    rank with "DataLoader worker ... killed by signal: Terminated" before it could checkpoint."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def close_loader(loader: DataLoader) -> None:
    """Stop the loader's workers now, after an error. Seen with torch 2.13: an exception re-raised from a
    worker keeps its iterator alive in a reference cycle until interpreter exit, where multiprocessing
    SIGTERMs the workers (ignored, see ``_ignore_sigterm``) and then joins them forever."""
    import gc

    gc.collect()  # frees a non-persistent iterator caught in the exception's cycle (its __del__ shuts down)
    it = getattr(loader, "_iterator", None)  # persistent_workers keeps one on the loader
    if it is not None and hasattr(it, "_shutdown_workers"):
        it._shutdown_workers()
        loader._iterator = None


def arm_worker_kill(ds: _Base, num_workers: int, micro_batch: int) -> bool:
    """Arm the fault-injection hook for the first epoch; returns whether it is armed."""
    if worker_kill_threshold(num_workers) is None:
        return False
    ds.kill_after_items = _INJECT_AFTER_BATCHES * micro_batch
    return True
