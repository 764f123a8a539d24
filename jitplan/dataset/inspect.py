"""What an image dataset folder looks like: layout, classes, images per class, sizes, extensions.

Layouts (``DatasetReport.layout``):
- ``imagefolder``: ``root/train/<class>/*`` (+ optional ``root/val/<class>/*``): what jitmodel reads.
- ``ilsvrc``: ``root/train/<wnid>/*`` with a *flat* ``root/val/*.JPEG`` (the official archives, or Kaggle's
  ``ILSVRC/Data/CLS-LOC``); val needs its ground truth to be split into classes.
- ``flat``: class folders directly under ``root`` and no ``train/`` (Kaggle "ImageNet 256x256").
- ``empty`` / ``unknown``: nothing usable.

Class folders are what ``ImageFolder``/``jitmodel.data`` would take: *every* sub-directory, hidden ones
(``.ipynb_checkpoints``) included, which is why they are reported.

    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for c in ("n01440764", "n01443537"):
    ...     (root / c).mkdir(); _ = (root / c / "a.JPEG").write_bytes(b"")
    >>> r = inspect_dataset(root, sample_sizes=0)
    >>> (r.layout, r.classes, r.images, r.wnid_fraction)
    ('flat', 2, 2, 1.0)
"""

from __future__ import annotations

import os
import re
import statistics
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from jitplan.errors import UsageError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
WNID = re.compile(r"^n\d{8}$")
VAL_LABEL_FILES = ("LOC_val_solution.csv", "val_labels.csv", "val_labels.txt")
Layout = Literal["imagefolder", "ilsvrc", "flat", "empty", "unknown"]


class DatasetReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    layout: Layout
    train_dir: str | None = None  # the folder holding the class folders
    val_dir: str | None = None
    val_layout: Literal["classes", "flat"] | None = None
    val_images: int = 0
    val_labels: str | None = None  # ground-truth file found for a flat val
    classes: int = 0
    class_names: list[str] = Field(default_factory=list)  # sorted, as ImageFolder indexes them
    wnid_fraction: float = 0.0
    images: int = 0
    per_class_min: int = 0
    per_class_median: float = 0.0
    per_class_max: int = 0
    extensions: dict[str, int] = Field(default_factory=dict)
    other_files: int = 0
    hidden_dirs: list[str] = Field(default_factory=list)  # would become classes in ImageFolder
    empty_classes: list[str] = Field(default_factory=list)
    sizes: dict[str, int] = Field(default_factory=dict)  # "256x256": count, over a sample
    notes: list[str] = Field(default_factory=list)


def is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def _subdirs(d: Path) -> list[os.DirEntry]:
    with os.scandir(d) as it:
        return sorted((e for e in it if e.is_dir()), key=lambda e: e.name)


def _files(d: Path) -> list[str]:
    with os.scandir(d) as it:
        return sorted(e.name for e in it if e.is_file())


def _count_images(d: Path) -> int:
    with os.scandir(d) as it:
        return sum(1 for e in it if is_image(e.name) and not e.name.startswith("."))


def _has_class_dirs(d: Path) -> bool:
    return any(not e.name.startswith(".") and _count_images(Path(e.path)) for e in _subdirs(d))


def find_val_labels(root: Path) -> Path | None:
    """A ground-truth file for a flat val folder (Kaggle's LOC_val_solution.csv or similar)."""
    for base in (root, root.parent, root.parent.parent.parent):
        for name in VAL_LABEL_FILES:
            if (base / name).is_file():
                return base / name
    return None


def _resolve_root(root: Path) -> Path:
    """Kaggle's ImageNet archive nests the class folders under ILSVRC/Data/CLS-LOC."""
    nested = root / "ILSVRC" / "Data" / "CLS-LOC"
    return nested if nested.is_dir() else root


def inspect_dataset(path: str | Path, *, sample_sizes: int = 16) -> DatasetReport:
    """Describe the dataset at ``path``. ``sample_sizes`` images (one per class) are opened for their size."""
    root = Path(path)
    if not root.exists():
        raise UsageError(f"dataset path does not exist: {root}")
    if not root.is_dir():
        raise UsageError(f"dataset path is not a folder: {root}")
    base = _resolve_root(root)
    train, val = base / "train", base / "val"
    rep = DatasetReport(path=str(root), layout="unknown")
    if train.is_dir() and _has_class_dirs(train):
        class_root = train
        if val.is_dir() and _has_class_dirs(val):
            rep.val_dir, rep.val_layout = str(val), "classes"
            rep.val_images = sum(_count_images(Path(e.path)) for e in _subdirs(val) if not e.name.startswith("."))
            rep.layout = "imagefolder"
        elif val.is_dir() and (n := _count_images(val)):
            rep.val_dir, rep.val_layout, rep.val_images = str(val), "flat", n
            labels = find_val_labels(root)
            rep.val_labels = str(labels) if labels else None
            rep.layout = "ilsvrc"
        else:
            rep.layout = "imagefolder"
    elif _has_class_dirs(base):
        class_root = base
        rep.layout = "flat"
    else:
        rep.layout = "unknown" if any(True for _ in os.scandir(base)) else "empty"
        n = _count_images(base)
        if n:
            rep.notes.append(f"{n} images directly under {base} with no class folders")
        return rep
    _fill_classes(rep, class_root, sample_sizes)
    _add_notes(rep)
    return rep


def _fill_classes(rep: DatasetReport, class_root: Path, sample_sizes: int) -> None:
    rep.train_dir = str(class_root)
    ext: Counter[str] = Counter()
    per_class: list[int] = []
    names: list[str] = []
    samples: list[Path] = []
    for e in _subdirs(class_root):
        if e.name.startswith("."):
            rep.hidden_dirs.append(e.name)
        names.append(e.name)
        n = 0
        first = None
        for f in _files(Path(e.path)):
            if f.startswith("."):
                continue
            if is_image(f):
                n += 1
                ext[os.path.splitext(f)[1].lower()] += 1
                first = first or f
            else:
                rep.other_files += 1
        if n == 0:
            rep.empty_classes.append(e.name)
        elif len(samples) < sample_sizes and first:
            samples.append(Path(e.path) / first)
        per_class.append(n)
    rep.class_names = names
    rep.classes = len(names)
    rep.images = sum(per_class)
    rep.extensions = dict(ext.most_common())
    if per_class:
        rep.per_class_min, rep.per_class_max = min(per_class), max(per_class)
        rep.per_class_median = float(statistics.median(per_class))
    rep.wnid_fraction = round(sum(bool(WNID.match(n)) for n in names) / max(len(names), 1), 4)
    rep.sizes = _sizes(samples)


def _sizes(samples: list[Path]) -> dict[str, int]:
    if not samples:
        return {}
    try:
        from PIL import Image
    except ImportError:
        return {}
    sizes: Counter[str] = Counter()
    for p in samples:
        try:
            with Image.open(p) as im:
                sizes[f"{im.width}x{im.height}"] += 1
        except OSError:
            sizes["unreadable"] += 1
    return dict(sizes.most_common())


def _add_notes(rep: DatasetReport) -> None:
    if rep.images in range(1_281_000, 1_281_200):
        rep.notes.append("full ImageNet-1k train (1,281,167 images)")
    if rep.layout == "flat":
        rep.notes.append("flat class folders with no train/ split (e.g. Kaggle ImageNet 256x256); "
                         "`jitplan data prepare` makes train/ + val/")
    if rep.layout == "ilsvrc" and not rep.val_labels:
        rep.notes.append("flat val/ without a ground-truth file (LOC_val_solution.csv): val cannot be split "
                         "into classes")
    if rep.classes and rep.wnid_fraction < 1.0:
        rep.notes.append(f"{rep.wnid_fraction:.0%} of class folders are wnids (n########): class indices will "
                         "not follow the standard ImageNet order")
