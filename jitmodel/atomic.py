"""Atomic file writes: a temp file in the same folder, fsync, ``os.replace``. Pure Python, no torch.

A reader sees the old file or the new one, never a half-written one; a crash leaves at most a hidden
``.NAME.*.tmp`` behind. The one implementation in the project (jitplan imports it too). Checkpoints have
their own writer in ``jitmodel.checkpoint`` (torch.save, directory fsync, hard links).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "plan.yaml"
    >>> _ = atomic_write_text(p, "a: 1\\n")
    >>> p.read_text()
    'a: 1\\n'
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def file_mode() -> int:
    """0666 less the process umask: the mode ``open()`` would give a new file (mkstemp makes 0600)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | Path, write: Callable[[IO[Any]], object], *, binary: bool = True) -> Path:
    """Create ``path`` atomically, ``write(f)`` filling the open temp file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, file_mode())
        f: IO[Any] = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")
        with f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.filename is None:  # a failed write names no file: name the one that was not written
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text), binary=False)


def os_error_line(e: OSError) -> str:
    """``No space left on device: plan.yaml``: the file system's reason and the file, one line (both CLIs)."""
    where = f": {e.filename}" if e.filename is not None else ""
    return f"{e.strerror or type(e).__name__}{where}"
