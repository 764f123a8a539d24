"""``jitplan data prepare SRC DST``: flat class folders or the ILSVRC layout -> ``DST/train`` + ``DST/val``.

Symlinks by default (``copy=True`` copies). The split is deterministic: per class, files sorted by name,
shuffled with a generator seeded by ``(seed, class)``, the first ``n_val`` go to val. Hidden folders and
files are skipped. ``DST/classes.json`` lists the classes in sorted-wnid order (the index order
ImageFolder and jitmodel use). Running it twice changes nothing; a different file already at a target
path is never overwritten (UsageError, exit 2). All conflicts are found before anything is written.

    >>> import tempfile, pathlib
    >>> src, dst = pathlib.Path(tempfile.mkdtemp()), pathlib.Path(tempfile.mkdtemp()) / "out"
    >>> for c in ("n01", "n02"):
    ...     (src / c).mkdir()
    ...     for i in range(5): _ = (src / c / f"{i}.png").write_bytes(b"x")
    >>> r = prepare_dataset(src, dst, val_per_class=1)
    >>> (r.train_images, r.val_images, r.created)
    (8, 2, 10)
    >>> prepare_dataset(src, dst, val_per_class=1).created  # idempotent
    0
"""

from __future__ import annotations

import csv
import filecmp
import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from jitmodel.atomic import atomic_write, atomic_write_text
from jitmodel.manifest import decode_error
from jitmodel.scan import scan_classes
from jitplan.dataset.inspect import inspect_dataset, is_image
from jitplan.errors import UsageError


class PrepareResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    src: str
    dst: str
    layout: str
    mode: str  # "symlink" | "copy"
    classes: int
    train_images: int
    val_images: int
    created: int  # links/files made this run
    already: int  # targets already in place (idempotent re-run)
    verified: int | None = None
    bad_images: list[str] = Field(default_factory=list)
    split: str = ""  # the rule that made val/, in words


def split_class(files: list[str], n_val: int, seed: int, cls: str) -> tuple[list[str], list[str]]:
    """Deterministic (train, val) split of one class's file names.

    >>> split_class(["a", "b", "c", "d"], 1, 0, "n01") == split_class(["d", "c", "b", "a"], 1, 0, "n01")
    True
    """
    order = sorted(files)
    random.Random(f"{seed}:{cls}").shuffle(order)
    val = sorted(order[:n_val])
    train = sorted(order[n_val:])
    return train, val


def read_val_labels(path: Path) -> dict[str, str]:
    """Image stem -> wnid from Kaggle's LOC_val_solution.csv ("ImageId,PredictionString") or
    lines of "<file> <wnid>" / "<file>,<wnid>"."""
    out: dict[str, str] = {}
    text = path.read_text()
    rows = list(csv.reader(text.splitlines())) if "," in text else [ln.split() for ln in text.splitlines()]
    for row in rows:
        if len(row) < 2 or row[0] in ("ImageId", "file", "filename"):
            continue
        stem = os.path.splitext(os.path.basename(row[0].strip()))[0]
        wnid = row[1].split()[0] if row[1].strip() else ""
        if wnid:
            out[stem] = wnid
    if not out:
        raise UsageError(f"no labels found in {path} (expected ImageId,PredictionString rows or '<file> <wnid>')")
    return out


DEFAULT_VAL_PER_CLASS = 10  # held out per class when neither --val-per-class nor --val-fraction is given ...
DEFAULT_VAL_SHARE = 10  # ... but never more than a tenth of a class: 2 of a class of 20, none of a class of 9


def default_val(n: int) -> int:
    """Images of a class of ``n`` held out by default: 10, at most a tenth of the class.

        >>> [default_val(n) for n in (9, 20, 35, 100, 1300)]
        [0, 2, 3, 10, 10]
    """
    return min(DEFAULT_VAL_PER_CLASS, n // DEFAULT_VAL_SHARE)


def split_rule(val_per_class: int | None, val_fraction: float | None) -> str:
    """The split in words, as ``data prepare`` states it."""
    if val_per_class is not None:
        return f"val: {val_per_class} image(s) per class (--val-per-class), the rest train"
    if val_fraction is not None:
        return f"val: {val_fraction:.0%} of each class (--val-fraction), the rest train"
    return (f"val: {DEFAULT_VAL_PER_CLASS} images per class, at most a tenth of a class (a class under "
            f"{DEFAULT_VAL_SHARE * 2} images gives 1, under {DEFAULT_VAL_SHARE} none), the rest train; "
            "--val-per-class or --val-fraction to choose")


def _n_val(n: int, val_per_class: int | None, val_fraction: float | None, cls: str) -> int:
    if val_per_class is None and val_fraction is None:
        return default_val(n)
    k = val_per_class if val_per_class is not None else round(n * (val_fraction or 0.0))
    if k >= n and n > 0:
        raise UsageError(f"class {cls} has {n} images; cannot hold out {k} for val and keep any for train")
    return k


def _pairs_flat(src_dir: Path, dst: Path, val_per_class: int | None, val_fraction: float | None,
                seed: int) -> tuple[list[str], list[tuple[Path, Path]], int, int]:
    # The trainer's own scan (jitmodel.scan): the same classes and images it will read, links that leave
    # the dataset skipped by the same rule, images in a class's sub-folders counted as the trainer counts them.
    classes, pairs, n_train, n_val = [], [], 0, 0
    for c in scan_classes(src_dir).class_list:
        if c.problem or c.name.startswith(".") or not c.images:
            continue
        classes.append(c.name)
        files = [rel.split("/", 1)[1] for rel in c.images]  # the scan names images from the root: <class>/<file>
        train, val = split_class(files, _n_val(len(files), val_per_class, val_fraction, c.name), seed, c.name)
        pairs += [(src_dir / c.name / f, dst / "train" / c.name / f) for f in train]
        pairs += [(src_dir / c.name / f, dst / "val" / c.name / f) for f in val]
        n_train, n_val = n_train + len(train), n_val + len(val)
    return classes, pairs, n_train, n_val


def _pairs_ilsvrc(train_dir: Path, val_dir: Path, labels: dict[str, str], dst: Path
                  ) -> tuple[list[str], list[tuple[Path, Path]], int, int]:
    classes, pairs, n_train, _ = _pairs_flat(train_dir, dst, 0, None, 0)
    known = set(classes)
    n_val = 0
    for f in sorted(os.listdir(val_dir)):
        if not is_image(f) or f.startswith("."):
            continue
        wnid = labels.get(os.path.splitext(f)[0])
        if wnid is None:
            raise UsageError(f"val image {f} has no label in the ground-truth file")
        if wnid not in known:
            raise UsageError(f"val image {f} is labelled {wnid}, which is not a train class folder")
        pairs.append((val_dir / f, dst / "val" / wnid / f))
        n_val += 1
    return classes, pairs, n_train, n_val


def _in_place(src: Path, dst: Path, copy: bool) -> bool:
    """True when dst already holds src (same link target, or an identical copy); UsageError when it differs."""
    if not os.path.lexists(dst):
        return False
    if not copy and dst.is_symlink() and os.readlink(dst) == str(src):
        return True
    if copy and dst.is_file() and not dst.is_symlink() and filecmp.cmp(src, dst, shallow=False):
        return True
    raise UsageError(f"{dst} already exists and is not {'a copy of' if copy else 'a link to'} {src}; "
                     "refusing to overwrite (remove it or choose another DST)")


def _refuse_foreign(dst: Path, planned: set[Path]) -> None:
    """Files already under DST/train or DST/val that this run would not make (another split, seed or source)."""
    extra = []
    for sub in ("train", "val"):
        for dirpath, _, files in os.walk(dst / sub):
            extra += [Path(dirpath) / f for f in files if not f.startswith(".") and Path(dirpath) / f not in planned]
    if extra:
        raise UsageError(f"{dst} already holds {len(extra)} file(s) this split would not make (e.g. {extra[0]}): "
                         "a different seed/split/source was used; choose a fresh DST")


def _place(src: Path, dst: Path, copy: bool) -> None:
    """Copy (through the one atomic writer) or symlink ``src`` to ``dst``; a reader never sees half a file."""
    if copy:
        with open(src, "rb") as f_in:
            atomic_write(dst, lambda f: shutil.copyfileobj(f_in, f))
        shutil.copystat(src, dst)
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")  # a link cannot be written through a file handle: link, rename
    if os.path.lexists(tmp):
        tmp.unlink()
    os.symlink(src, tmp)
    os.replace(tmp, dst)


def prepare_dataset(
    src: str | Path,
    dst: str | Path,
    *,
    copy: bool = False,
    val_per_class: int | None = None,
    val_fraction: float | None = None,
    seed: int = 0,
    val_labels: str | Path | None = None,
    verify: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> PrepareResult:
    """Build ``dst/train``, ``dst/val`` and ``dst/classes.json`` from ``src`` (see the module docstring)."""

    if val_per_class is not None and val_fraction is not None:
        raise UsageError("give --val-per-class or --val-fraction, not both")
    if val_per_class is not None and val_per_class < 0:
        raise UsageError(f"--val-per-class must be >= 0, got {val_per_class}")
    if val_fraction is not None and not 0.0 <= val_fraction < 1.0:
        raise UsageError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    src_p, dst_p = Path(src).resolve(), Path(dst).absolute()
    rep = inspect_dataset(src_p, sample_sizes=0)
    if dst_p.resolve() == src_p or src_p in dst_p.resolve().parents:
        raise UsageError(f"DST {dst_p} is inside SRC {src_p}; choose a folder outside the source")
    split = "val: the source's own val/ (ILSVRC ground truth)"
    if rep.layout == "flat":
        split = split_rule(val_per_class, val_fraction)
        classes, pairs, n_train, n_val = _pairs_flat(Path(rep.train_dir or src_p), dst_p, val_per_class,
                                                     val_fraction, seed)
    elif rep.layout == "ilsvrc":
        labels_path = Path(val_labels) if val_labels else (Path(rep.val_labels) if rep.val_labels else None)
        if labels_path is None or not labels_path.is_file():
            raise UsageError(f"{src_p} has a flat val/ but no ground truth; pass --val-labels LOC_val_solution.csv")
        classes, pairs, n_train, n_val = _pairs_ilsvrc(Path(rep.train_dir or ""), Path(rep.val_dir or ""),
                                                       read_val_labels(labels_path), dst_p)
    elif rep.layout == "imagefolder":
        raise UsageError(f"{src_p} already has train/ class folders; point data.path at it (nothing to prepare)")
    else:
        raise UsageError(f"{src_p} has no class folders of images (layout: {rep.layout})")
    classes_json = json.dumps(sorted(classes), indent=0) + "\n"
    cj = dst_p / "classes.json"
    if cj.exists() and cj.read_text() != classes_json:
        raise UsageError(f"{cj} exists with a different class list; refusing to overwrite")
    _refuse_foreign(dst_p, {d for _, d in pairs})
    todo = [(s, d) for s, d in pairs if not _in_place(s, d, copy)]  # raises before any write
    for i, (s, d) in enumerate(todo):
        _place(s, d, copy)
        if progress and (i % 256 == 0 or i == len(todo) - 1):
            progress("copy" if copy else "link", i + 1, len(todo))
    atomic_write_text(cj, classes_json)
    res = PrepareResult(src=str(src_p), dst=str(dst_p), layout=rep.layout, mode="copy" if copy else "symlink",
                        classes=len(classes), train_images=n_train, val_images=n_val, created=len(todo),
                        already=len(pairs) - len(todo), split=split)
    if verify:
        res.bad_images = verify_images([d for _, d in pairs], progress=progress)
        res.verified = len(pairs)
    return res


def verify_images(paths: list[Path], progress: Callable[[str, int, int], None] | None = None) -> list[str]:
    """Decode every image fully (PIL); return 'path: error' for the ones that fail."""
    try:
        import PIL  # noqa: F401

    except ImportError:
        raise UsageError("decoding images needs Pillow: pip install 'jitplan[train]' (or pillow)") from None

    bad = []
    for i, p in enumerate(paths):
        why = decode_error(p)
        if why:
            bad.append(f"{p}: {why}")
        if progress and (i % 64 == 0 or i == len(paths) - 1):
            progress("decode", i + 1, len(paths))
    return bad
