"""What an image dataset folder looks like: layout, classes, images per class, sizes, extensions.

Layouts (``DatasetReport.layout``):
- ``imagefolder``: ``root/train/<class>/*`` (+ optional ``root/val/<class>/*``): what jitmodel reads.
- ``ilsvrc``: ``root/train/<wnid>/*`` with a *flat* ``root/val/*.JPEG`` (the official archives, or Kaggle's
  ``ILSVRC/Data/CLS-LOC``); val needs its ground truth to be split into classes.
- ``flat``: class folders directly under ``root`` and no ``train/`` (Kaggle "ImageNet 256x256").
- ``empty`` / ``unknown``: nothing usable.

Class folders and images come from ``jitmodel.scan`` (the scanner the trainer uses, so both agree):
*every* sub-directory is a class, hidden ones (``.ipynb_checkpoints``) included, which is why they are
reported; each real folder is walked once; unreadable or looping class folders are named in ``problems``;
folder links that leave the dataset are not followed and are named in ``links_outside``.

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

from jitmodel.scan import IMG_EXTENSIONS, Scan, is_image, scan_classes, shown
from jitplan.errors import UsageError

__all__ = ["IMG_EXTENSIONS", "DatasetReport", "inspect_dataset", "is_image", "sample_images", "scan_dataset"]

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
    problems: list[str] = Field(default_factory=list)  # unreadable or looping class folders (jitmodel.scan)
    links_skipped: list[str] = Field(default_factory=list)  # folder links not followed (loops, repeats)
    links_outside: list[str] = Field(default_factory=list)  # "c1/usr -> /usr": folder links leaving the dataset
    notes: list[str] = Field(default_factory=list)


def _count_images(d: Path) -> int:
    """Loose images directly in ``d`` (a flat val/ folder); 0 when it cannot be listed."""
    try:
        with os.scandir(d) as it:
            return sum(1 for e in it if is_image(e.name))
    except OSError:
        return 0


def _usable(scan: Scan) -> bool:
    """Class folders that hold images, or that are broken in a way worth naming."""
    return bool(scan.class_list) and (any(c.images for c in scan.class_list if not c.name.startswith("."))
                                      or bool(scan.problems()))


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
    return scan_dataset(path, sample_sizes=sample_sizes)[0]


def scan_dataset(path: str | Path, *, sample_sizes: int = 16) -> tuple[DatasetReport, Scan | None]:
    """The report and the scan of its class folders (None when none were found)."""
    root = Path(path)
    try:
        exists, is_dir = root.exists(), root.is_dir()
    except (OSError, ValueError) as e:  # a name the OS refuses (too long, NUL)
        raise UsageError(f"dataset path is unusable: {shown(str(root))[:200]} ({type(e).__name__})") from None
    if not exists:
        raise UsageError(f"dataset path does not exist: {shown(str(root))}")
    if not is_dir:
        raise UsageError(f"dataset path is not a folder: {shown(str(root))}")
    try:
        any(True for _ in os.scandir(root))
    except OSError as e:
        raise UsageError(f"dataset path is unreadable: {root} ({e.strerror or type(e).__name__})") from None
    base = _resolve_root(root)
    train, val = base / "train", base / "val"
    rep = DatasetReport(path=str(root), layout="unknown")
    scan = scan_classes(train) if train.is_dir() else None
    if scan is not None and _usable(scan):
        vscan = scan_classes(val) if val.is_dir() else None
        if vscan is not None and _usable(vscan):
            rep.val_dir, rep.val_layout, rep.val_images = str(val), "classes", vscan.images
            rep.layout = "imagefolder"
        elif val.is_dir() and (n := _count_images(val)):
            rep.val_dir, rep.val_layout, rep.val_images = str(val), "flat", n
            labels = find_val_labels(root)
            rep.val_labels = str(labels) if labels else None
            rep.layout = "ilsvrc"
        else:
            rep.layout = "imagefolder"
    elif _usable(scan := scan_classes(base)):
        rep.layout = "flat"
    else:
        rep.layout = "unknown" if any(True for _ in os.scandir(base)) else "empty"
        n = _count_images(base)
        if n:
            rep.notes.append(f"{n} images directly under {base} with no class folders")
        return rep, None
    _fill_classes(rep, scan, sample_sizes)
    _add_notes(rep)
    return rep, scan


def _fill_classes(rep: DatasetReport, scan: Scan, sample_sizes: int) -> None:
    rep.train_dir = scan.root
    rep.class_names = scan.classes
    rep.classes = len(scan.class_list)
    rep.hidden_dirs = [n for n in scan.classes if n.startswith(".")]
    rep.empty_classes = scan.empty_classes()
    per_class = [len(c.images) for c in scan.class_list]
    rep.images = sum(per_class)
    rep.extensions = dict(scan.extensions.most_common())
    rep.other_files = scan.other_files
    rep.problems = scan.problems()
    rep.links_skipped = scan.links_skipped
    rep.links_outside = [shown(x) for x in scan.links_outside]
    if per_class:
        rep.per_class_min, rep.per_class_max = min(per_class), max(per_class)
        rep.per_class_median = float(statistics.median(per_class))
    rep.wnid_fraction = round(sum(bool(WNID.match(n)) for n in scan.classes) / max(len(scan.classes), 1), 4)
    firsts = [Path(scan.root) / c.images[0] for c in scan.class_list if c.images]
    rep.sizes = _sizes(firsts[:sample_sizes])


def sample_images(scan: Scan, n: int, per_class: int = 2) -> list[Path]:
    """Up to ``n`` images, ``per_class`` from each non-hidden class in order (doctor --deep decodes them)."""
    out: list[Path] = []
    for c in scan.class_list:
        if not c.name.startswith("."):
            out += [Path(scan.root) / rel for rel in c.images[:per_class]]
        if len(out) >= n:
            break
    return out[:n]


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
        except Exception:  # noqa: BLE001 - PIL's errors vary by format; all mean "cannot open"
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
