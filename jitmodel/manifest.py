"""The verified manifest of an image dataset: every image decoded once, the result kept by size + mtime.

``jitplan data verify /data/in256`` (or :func:`build_manifest`) decodes every image the scanner
(``jitmodel.scan``) finds under ``<path>/train`` and writes ``<path>/jitmodel-manifest.json``::

    {"format": "jitmodel-data-manifest", "format_version": 1, "root": ".../train",
     "files": {"<class>/<file>": [size, mtime_ns, null | "why it does not decode"], ...}}

A second run decodes only the files whose size or mtime changed. Bounds: an image over
``jitmodel.bounds.MAX_PIXELS`` is reported bad from its header, before it is decoded (a 12000x12000 PNG
would take ~0.5 GB to decode); the decoding processes are capped at the usable CPUs; a manifest is read only
when it is a regular file of at most ``MAX_MANIFEST_BYTES``. The trainer reads the manifest
(``data.manifest``, default that file when present) and refuses to start while it lists bad files, or,
with ``data.skip_bad: true``, leaves them out and logs how many.

    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "c").mkdir(); Image.new("RGB", (4, 4)).save(root / "c" / "ok.png")
    >>> _ = (root / "c" / "bad.png").write_bytes(b"not a png")
    >>> m = build_manifest(root, workers=1)
    >>> sorted(rel for rel, (_, _, why) in m["files"].items() if why)
    ['c/bad.png']
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from jitmodel.atomic import atomic_write_text
from jitmodel.bounded_io import read_regular
from jitmodel.bounds import MAX_PIXELS, usable_cpus
from jitmodel.scan import Scan, scan_classes, shown

FORMAT = "jitmodel-data-manifest"
FORMAT_VERSION = 1
MANIFEST_NAME = "jitmodel-manifest.json"
_CHUNK = 64
# ~75 bytes per entry: 1 GiB holds ~14 M images (ImageNet-1k's 1.28 M take ~95 MB); a bigger file is not ours.
MAX_MANIFEST_BYTES = 2**30


def decode_error(path: str | os.PathLike) -> str | None:
    """None when PIL decodes the whole image, else a one-line reason (never raises)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:  # from the header: nothing decoded yet
                return (f"too large: {im.width}x{im.height} = {im.width * im.height:,} pixels, over the "
                        f"{MAX_PIXELS:,}-pixel limit for a training image (resize it first)")
            im.load()
            if im.width < 1 or im.height < 1:
                return "the image has no pixels"
    except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        msg = " ".join(str(e).split()) or type(e).__name__
        return f"{type(e).__name__}: {msg}"[:200]
    return None


def _stat(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _decode_chunk(paths: list[str]) -> list[str | None]:
    return [decode_error(p) for p in paths]


def build_manifest(class_root: str | Path, *, scan: Scan | None = None, previous: dict[str, Any] | None = None,
                   workers: int | None = None,
                   progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Decode every image under ``class_root`` (reusing ``previous`` entries whose size and mtime match)."""
    root = Path(class_root)
    scan = scan or scan_classes(root)
    old = (previous or {}).get("files", {})
    files: dict[str, list] = {}
    todo: list[tuple[str, tuple[int, int] | None]] = []
    for c in scan.class_list:
        for rel in c.images:
            st = _stat(str(root / rel))
            prev = old.get(rel)
            if st is not None and prev is not None and tuple(prev[:2]) == st:
                files[rel] = list(prev)
            else:
                todo.append((rel, st))
    total = len(todo)
    if progress:
        progress(0, total)
    results = _decode_all([str(root / rel) for rel, _ in todo], workers, progress)
    for (rel, st), why in zip(todo, results, strict=True):
        if st is None:
            why = why or "cannot stat the file"
        files[rel] = [st[0] if st else -1, st[1] if st else -1, why]
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "root": str(root),
            "files": dict(sorted(files.items()))}


def _decode_all(paths: list[str], workers: int | None, progress: Callable[[int, int], None] | None) -> list:
    chunks = [paths[i:i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    workers = decode_workers(workers, len(chunks))
    out: list[str | None] = []
    if workers <= 1 or len(chunks) <= 1:
        results: Iterable[list[str | None]] = map(_decode_chunk, chunks)
        for r in results:
            out += r
            if progress:
                progress(len(out), len(paths))
        return out
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for r in pool.map(_decode_chunk, chunks):
            out += r
            if progress:
                progress(len(out), len(paths))
    return out


def decode_workers(asked: int | None, chunks: int | None = None) -> int:
    """Decoding processes: ``asked`` (default all), never more than the usable CPUs nor the chunks of work.

        >>> decode_workers(500) <= usable_cpus()
        True
    """
    n = min(asked if asked is not None else usable_cpus(), usable_cpus())
    return max(1, min(n, chunks) if chunks is not None else n)


def bad_files(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    return [(rel, why) for rel, (_, _, why) in manifest["files"].items() if why]


def load_manifest(path: str | Path) -> dict[str, Any]:
    """A manifest file; ValueError (one line) when it is not one."""
    p = Path(path)
    try:
        raw = json.loads(read_regular(p, MAX_MANIFEST_BYTES, "manifest").decode("utf-8"))
    except FileNotFoundError:
        raise ValueError(f"manifest not found: {shown(str(p))}") from None
    except ValueError as e:  # not a regular file, too big, not UTF-8, not JSON
        why = str(e) if str(p) in str(e) else f"{shown(str(p))} is not a readable manifest ({type(e).__name__})"
        raise ValueError(f"{why}; re-run jitplan data verify") from None
    except OSError as e:
        raise ValueError(f"{shown(str(p))} is not a readable manifest ({e.strerror or type(e).__name__}); "
                         "re-run jitplan data verify") from None
    ok = isinstance(raw, dict) and raw.get("format") == FORMAT and isinstance(raw.get("files"), dict) and all(
        isinstance(v, list) and len(v) == 3 for v in raw["files"].values())
    if not ok:
        raise ValueError(f"{p} is not a jitmodel data manifest; re-run jitplan data verify")
    if int(raw.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{p} has manifest format {raw['format_version']}; upgrade jitmodel")
    return raw


def write_manifest(path: str | Path, manifest: dict[str, Any]) -> Path:

    return atomic_write_text(path, json.dumps(manifest, separators=(",", ":")) + "\n")


def check_against(class_root: str | Path, scan: Scan, manifest: dict[str, Any]) -> tuple[list[tuple[str, str]], int]:
    """(bad files of the scan the manifest names, images the manifest does not vouch for: new or changed)."""
    root = Path(class_root)
    files = manifest["files"]
    bad, unverified = [], 0
    for c in scan.class_list:
        for rel in c.images:
            entry = files.get(rel)
            if entry is None or tuple(entry[:2]) != _stat(str(root / rel)):
                unverified += 1
            elif entry[2]:
                bad.append((rel, entry[2]))
    return bad, unverified
