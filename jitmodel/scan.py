"""The one dataset scanner: which class folders and image files a dataset holds.

The trainer (``jitmodel.data.ImageFolder``), ``jitplan data inspect``, ``jitplan data verify`` and doctor's
data checks all read a folder through :func:`scan_classes`, so they agree on classes and counts.

Rules:
- Every sub-folder of the class root is a class (hidden ones too, as torchvision's ImageFolder counts
  them); classes are the sorted folder names and a class index is its position in that list.
- Images are files (or links to files) whose name ends in an image extension and does not start with
  ``.`` (macOS ``._x.jpg`` resource forks are not images); sub-folders of a class are walked.
- A real directory is walked once, whatever the path to it: a link back into the dataset
  (``ln -s . train/c0/loop``, ``ln -s .. train/c1/up``) or to a folder already walked is not followed;
  it is listed in ``links_skipped``. A link to a folder outside the dataset is followed (once).
- A folder that cannot be listed (permissions, a link loop, I/O error) is named in ``unreadable`` with
  the reason; the scanner never raises for what it finds inside the root.

    >>> import tempfile, pathlib, os
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for c in ("b", "a"):
    ...     (root / c).mkdir(); _ = (root / c / "x.png").write_bytes(b"")
    >>> os.symlink(".", root / "a" / "loop")
    >>> s = scan_classes(root)
    >>> s.classes, [len(c.images) for c in s.class_list], s.links_skipped
    (['a', 'b'], [1, 1], ['a/loop'])
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS) and not name.startswith(".")


def _why(e: OSError) -> str:
    return e.strerror or type(e).__name__


@dataclass
class ClassScan:
    name: str
    images: list[str] = field(default_factory=list)  # paths relative to the class root, sorted
    problem: str | None = None  # "unreadable: Permission denied", "links back into the dataset", ...


@dataclass
class Scan:
    root: str
    class_list: list[ClassScan] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # "rel/path: reason"
    links_skipped: list[str] = field(default_factory=list)  # dir links not followed (relative paths)
    broken_links: int = 0
    other_files: int = 0
    extensions: Counter[str] = field(default_factory=Counter)

    @property
    def classes(self) -> list[str]:
        return [c.name for c in self.class_list]

    @property
    def images(self) -> int:
        return sum(len(c.images) for c in self.class_list)

    def problems(self) -> list[str]:
        """One phrase per thing that makes the folder unsafe to train on, worst first."""
        out = [f"class folder {c.name!r} {c.problem}" for c in self.class_list if c.problem]
        for u in self.unreadable:
            where, _, why = u.partition(": ")
            if not any(c.problem and where == c.name for c in self.class_list):
                out.append(f"folder {where} is unreadable ({why})")
        return out


def _key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def scan_classes(root: str | Path) -> Scan:
    """Class folders and images under ``root`` (the folder holding one folder per class)."""
    root = Path(root)
    scan = Scan(root=str(root))
    try:
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        scan.unreadable.append(f".: {_why(e)}")
        return scan
    seen: set[tuple[int, int]] = set()
    rk = _key(str(root))
    if rk:
        seen.add(rk)
    dirs: list[tuple[os.DirEntry, tuple[int, int] | None, str | None]] = []
    for e in entries:
        try:
            is_dir = e.is_dir()
        except OSError:
            is_dir = False
        if not is_dir:
            if e.is_symlink() and not os.path.exists(e.path):  # a class folder may hide behind it
                scan.unreadable.append(f"{e.name}: a broken or looping link")
            continue
        k = _key(e.path)
        problem = None
        if k is None:
            problem = "is unreadable: a broken or looping link"
        elif k == rk:
            problem = "links back into the dataset (to the class root itself)"
        elif k in seen:
            twin = next(n for n, kk, _ in dirs if kk == k)
            problem = f"is a link to class folder {twin.name!r} (the same folder twice)"
        else:
            seen.add(k)
        dirs.append((e, k, problem))
    for e, _, problem in dirs:
        c = ClassScan(name=e.name, problem=problem)
        scan.class_list.append(c)
        if problem is None:
            _walk(scan, c, Path(e.path), e.name, seen)
            c.images.sort()
    return scan


def _walk(scan: Scan, c: ClassScan, top: Path, rel: str, seen: set[tuple[int, int]]) -> None:
    stack = [(top, rel)]
    while stack:
        d, r = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = list(it)
        except OSError as e:
            scan.unreadable.append(f"{r}: {_why(e)}")
            if r == c.name:
                c.problem = f"is unreadable ({_why(e)})"
            continue
        for e in entries:
            er = f"{r}/{e.name}"
            try:
                is_dir = e.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                k = _key(e.path)
                if k is None or k in seen:
                    scan.links_skipped.append(er)
                    continue
                seen.add(k)
                stack.append((Path(e.path), er))
                continue
            try:
                is_file = e.is_file()
            except OSError:
                is_file = False
            if not is_file:
                if e.is_symlink():
                    scan.broken_links += 1
                continue
            if is_image(e.name):
                c.images.append(er)
                scan.extensions[os.path.splitext(e.name)[1].lower()] += 1
            elif not e.name.startswith("."):
                scan.other_files += 1
