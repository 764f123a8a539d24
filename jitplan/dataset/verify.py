"""``jitplan data verify``: decode every image of a dataset once and keep the result in its manifest.

The scanner and the manifest are jitmodel's (``jitmodel.scan``, ``jitmodel.manifest``), so the trainer
reads exactly what was verified, and a folder the trainer would refuse (empty class folders, unreadable or
looping ones: ``Scan.refusal``) is refused here with the same words. Folder links that leave the dataset
are named in ``notes`` and not read. A second run decodes only the files whose size or mtime changed;
``workers`` is capped at the usable CPUs.

    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "train" / "c").mkdir(parents=True); Image.new("RGB", (4, 4)).save(root / "train/c/a.png")
    >>> r = verify_dataset(root, workers=1)
    >>> (r.images, r.decoded, r.bad, pathlib.Path(r.manifest).name)
    (1, 1, [], 'jitmodel-manifest.json')
    >>> verify_dataset(root, workers=1).decoded  # cached by size + mtime
    0
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from jitmodel import manifest as mf
from jitmodel.scan import scan_classes, shown
from jitplan.errors import UsageError


class VerifyResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    manifest: str
    classes: int
    images: int
    decoded: int  # decoded in this run (the others were unchanged since the manifest)
    workers: int = 1  # decoding processes used (the ones asked for, capped at the usable CPUs)
    bad: list[str] = Field(default_factory=list)  # "class/file: reason", every bad file
    seconds: float
    notes: list[str] = Field(default_factory=list)  # e.g. folder links leaving the dataset, not followed


def verify_dataset(path: str | Path, *, out: str | Path | None = None, workers: int | None = None,
                   progress: Callable[[int, int], None] | None = None) -> VerifyResult:
    """Verify ``<path>/train`` and write the manifest (default ``<path>/jitmodel-manifest.json``)."""

    t0 = time.perf_counter()
    data = Path(path).expanduser()
    root = data / "train"
    if not _is_dir(data):
        raise UsageError(f"dataset path is not a folder: {shown(str(data))[:300]}")
    if not _is_dir(root):
        raise UsageError(f"{shown(str(data))} has no train/ folder (the trainer reads "
                         f"{shown(str(root))}/<class>/<image>)",
                         hint="jitplan data prepare makes train/ + val/ from other layouts")
    scan = scan_classes(root)
    why = scan.refusal()  # the trainer's own rule: what it would refuse is refused here
    if why:
        raise UsageError(why)
    target = Path(out) if out is not None else data / mf.MANIFEST_NAME
    try:
        previous = mf.load_manifest(target) if target.is_file() else None
    except ValueError:
        previous = None  # unreadable or foreign: rebuilt from scratch
    counted: list[int] = []

    def tick(done: int, total: int) -> None:
        counted[:] = [total]
        if progress:
            progress(done, total)

    used = mf.decode_workers(workers)
    m = mf.build_manifest(root, scan=scan, previous=previous, workers=used, progress=tick)
    try:
        mf.write_manifest(target, m)
    except OSError as e:
        raise UsageError(f"cannot write the manifest {shown(str(target))}: {e.strerror or e}",
                         hint="pass --out FILE and set data.manifest: FILE in the config") from None
    return VerifyResult(path=str(data), manifest=str(target), classes=len(scan.class_list), images=scan.images,
                        decoded=counted[0] if counted else 0, workers=used,
                        bad=[f"{shown(rel)}: {shown(why)}" for rel, why in mf.bad_files(m)],
                        seconds=round(time.perf_counter() - t0, 3), notes=[n for n in [scan.outside_note()] if n])


def _is_dir(p: Path) -> bool:
    try:
        return p.is_dir()
    except (OSError, ValueError):  # a name too long for the OS is no folder
        return False
