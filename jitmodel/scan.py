"""The one dataset scanner: which class folders and image files a dataset holds.

The trainer (``jitmodel.data.ImageFolder``), ``jitplan data inspect``, ``jitplan data verify`` and doctor's
data checks all read a folder through :func:`scan_classes`, so they agree on classes and counts.

Rules:
- Every sub-folder of the class root is a class (hidden ones too, as torchvision's ImageFolder counts
  them); classes are the sorted folder names and a class index is its position in that list.
- Images are files (or links to files) whose name ends in an image extension and does not start with
  ``.`` (macOS ``._x.jpg`` resource forks are not images); sub-folders of a class are walked.
- The dataset is the class root and the class folders' real folders. A class folder may be a link (a
  dataset spread over disks), and a file may be a link (``jitplan data prepare`` links files by default).
  A link to a *folder* inside a class is followed only while it stays inside the dataset; a folder link
  that leaves it (``c1/usr -> /usr``, ``c0/slash -> /``) is never followed, whatever ``skip_bad`` says:
  it is listed in ``links_outside`` as ``"c1/usr -> /usr"`` and its contents are not images of the
  dataset. Every consumer reports it (doctor warns, verify and the trainer name it), none reads it.
- A real directory is walked once, whatever the path to it: a link back into the dataset
  (``ln -s . train/c0/loop``, ``ln -s .. train/c1/up``) or to a folder already walked is not followed;
  it is listed in ``links_skipped``. Link loops end there too (a looping link cannot be resolved).
- A folder that cannot be listed (permissions, a link loop, I/O error) is named in ``unreadable`` with
  the reason; the scanner never raises for what it finds inside the root.
- Names are kept as the OS gives them (``os.fsdecode``: undecodable bytes become surrogates);
  :func:`shown` makes one printable (``\\xff`` escapes) for messages.

    >>> import tempfile, pathlib, os
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for c in ("b", "a"):
    ...     (root / c).mkdir(); _ = (root / c / "x.png").write_bytes(b"")
    >>> os.symlink(".", root / "a" / "loop")
    >>> os.symlink("/usr", root / "b" / "usr")
    >>> s = scan_classes(root)
    >>> s.classes, [len(c.images) for c in s.class_list], s.links_skipped, s.links_outside
    (['a', 'b'], [1, 1], ['a/loop'], ['b/usr -> /usr'])
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS) and not name.startswith(".")


def shown(name: str) -> str:
    """A file name as printable text: bytes that are not UTF-8 (kept as surrogates) become ``\\xff``."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


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
    links_outside: list[str] = field(default_factory=list)  # "c1/usr -> /usr": folder links leaving the dataset
    broken_links: int = 0
    other_files: int = 0
    extensions: Counter[str] = field(default_factory=Counter)

    @property
    def classes(self) -> list[str]:
        return [c.name for c in self.class_list]

    @property
    def images(self) -> int:
        return sum(len(c.images) for c in self.class_list)

    def empty_classes(self) -> list[str]:
        """Readable class folders without an image: the trainer refuses them (labels nothing would train)."""
        return [c.name for c in self.class_list if not c.images and not c.problem]

    def problems(self) -> list[str]:
        """One phrase per thing that makes the folder unsafe to train on, worst first."""
        out = [f"class folder {shown(c.name)!r} {c.problem}" for c in self.class_list if c.problem]
        for u in self.unreadable:
            where, _, why = u.partition(": ")
            if not any(c.problem and where == c.name for c in self.class_list):
                out.append(f"folder {shown(where)} is unreadable ({why})")
        return out

    def refusal(self) -> str | None:
        """Why the trainer refuses this class root (one line), or None: the one rule for the trainer,
        ``jitplan data verify`` and doctor. Problems first, then no classes, then empty class folders."""
        problems = self.problems()
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            return f"{shown(self.root)}: {problems[0]}{more}"
        if not self.class_list:
            return f"{shown(self.root)} holds no class folders (expected {shown(self.root)}/<class>/<image>)"
        empty = self.empty_classes()
        if empty:
            names = ", ".join(shown(n) for n in empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
            return (f"{len(empty)} class folder(s) in {shown(self.root)} hold no images ({names}); "
                    f"image types: {' '.join(IMG_EXTENSIONS)}")
        return None

    def outside_note(self) -> str | None:
        return outside_note(self.links_outside)


def outside_note(links: list[str]) -> str | None:
    """The one line every consumer prints about folder links that leave the dataset (None: there are none)."""
    if not links:
        return None
    return (f"{len(links)} folder link(s) leave the dataset and are not followed (their files are not part of "
            f"it), e.g. {shown(links[0])}")


def _key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _inside(real: str, roots: list[str]) -> bool:
    return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def _link_target(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def scan_classes(root: str | Path) -> Scan:
    """Class folders and images under ``root`` (the folder holding one folder per class)."""
    root = Path(root)
    scan = Scan(root=str(root))
    try:
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as err:
        scan.unreadable.append(f".: {_why(err)}")
        return scan
    seen: set[tuple[int, int]] = set()
    rk = _key(str(root))
    if rk:
        seen.add(rk)
    roots = [os.path.realpath(root)]
    dirs: list[tuple[os.DirEntry[str], tuple[int, int] | None, str | None]] = []
    for ent in entries:
        try:
            is_dir = ent.is_dir()
        except OSError:
            is_dir = False
        if not is_dir:
            if ent.is_symlink() and not os.path.exists(ent.path):  # a class folder may hide behind it
                scan.unreadable.append(f"{ent.name}: a broken or looping link")
            continue
        k = _key(ent.path)
        problem = None
        if k is None:
            problem = "is unreadable: a broken or looping link"
        elif k == rk:
            problem = "links back into the dataset (to the class root itself)"
        elif k in seen:
            twin = next(d.name for d, kk, _ in dirs if kk == k)
            problem = f"is a link to class folder {shown(twin)!r} (the same folder twice)"
        else:
            seen.add(k)
            roots.append(os.path.realpath(ent.path))
        dirs.append((ent, k, problem))
    for ent, _, problem in dirs:
        c = ClassScan(name=ent.name, problem=problem)
        scan.class_list.append(c)
        if problem is None:
            _walk(scan, c, Path(ent.path), ent.name, seen, roots)
            c.images.sort()
    return scan


def _walk(scan: Scan, c: ClassScan, top: Path, rel: str, seen: set[tuple[int, int]], roots: list[str]) -> None:
    stack = [(top, rel)]
    while stack:
        d, r = stack.pop()
        try:
            with os.scandir(d) as it:  # real folders before links to them, then by name: deterministic
                entries = sorted(it, key=lambda e: (e.is_symlink(), e.name))
        except OSError as err:
            scan.unreadable.append(f"{r}: {_why(err)}")
            if r == c.name:
                c.problem = f"is unreadable ({_why(err)})"
            continue
        for ent in entries:
            er = f"{r}/{ent.name}"
            try:
                is_dir = ent.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if ent.is_symlink() and not _inside(os.path.realpath(ent.path), roots):
                    scan.links_outside.append(f"{er} -> {_link_target(ent.path)}")
                    continue
                k = _key(ent.path)
                if k is None or k in seen:
                    scan.links_skipped.append(er)
                    continue
                seen.add(k)
                stack.append((Path(ent.path), er))
                continue
            try:
                is_file = ent.is_file()
            except OSError:
                is_file = False
            if not is_file:
                if ent.is_symlink():
                    scan.broken_links += 1
                continue
            if is_image(ent.name):
                c.images.append(er)
                scan.extensions[os.path.splitext(ent.name)[1].lower()] += 1
            elif not ent.name.startswith("."):
                scan.other_files += 1
