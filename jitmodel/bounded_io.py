"""Reads with bounds: a file read only when it is a regular file under a stated size, and a child process
whose output is kept to a stated size and whose run ends at a deadline.

- :func:`read_regular` refuses, before reading a byte, what is not a regular file (a FIFO blocks on open, a
  character device like ``/dev/zero`` never ends) and what is over ``limit`` bytes. A kernel file under
  ``/proc`` or ``/sys`` looks regular with size 0 but reads without end or blocks (``/proc/kmsg``): it is
  refused by its file system, and a regular file is never read past the size it reports, so a size-0
  file reads as empty instead of blocking.
- :func:`run_bounded` is ``subprocess.run(capture_output=True, text=True, timeout=...)`` with the output
  kept to the last ``keep`` bytes of each stream, the child stopped once it wrote more than ``limit`` bytes
  (a program that floods stdout), and the whole process group killed at the deadline (a grandchild that
  holds the pipes cannot make it wait).

    >>> import tempfile, os
    >>> fd, name = tempfile.mkstemp(); _ = os.write(fd, b"abc"); os.close(fd)
    >>> read_regular(name, 10, "config")
    b'abc'
    >>> read_regular("/dev/zero", 10, "manifest")
    Traceback (most recent call last):
    ...
    ValueError: /dev/zero is not a regular file (a character device): not a manifest
    >>> run_bounded(["sh", "-c", "echo hi; echo oops >&2"], timeout=10).stdout
    'hi\\n'
"""

from __future__ import annotations

import os
import selectors
import signal
import stat
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
_PSEUDO_ROOTS = ("/proc", "/sys")


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _pseudo_devices() -> set[int]:
    out = set()
    for r in _PSEUDO_ROOTS:
        try:
            out.add(os.stat(r).st_dev)
        except OSError:
            pass
    return out


def read_regular(path: str | os.PathLike[str], limit: int, what: str) -> bytes:
    """The bytes of ``path``, a regular file of at most ``limit`` bytes. ValueError (one line) otherwise;
    FileNotFoundError / PermissionError as the OS says (callers word those themselves)."""
    p = Path(path)
    st = os.stat(p)  # follows links: the target is what would be read
    if not stat.S_ISREG(st.st_mode):
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(21, "Is a directory", str(p))
        raise ValueError(f"{p} is not a regular file ({_kind(st.st_mode)}): not a {what}")
    if st.st_dev in _pseudo_devices():
        raise ValueError(f"{p} is a kernel file (/proc, /sys), not a {what}")
    if st.st_size > limit:
        raise ValueError(f"{p} is larger than the {limit:,}-byte limit for a {what} ({st.st_size:,} bytes)")
    fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    try:
        st2 = os.fstat(fd)  # the file opened is the file checked (not swapped in between)
        if not stat.S_ISREG(st2.st_mode) or (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino):
            raise ValueError(f"{p} changed while it was opened: not a {what}")
        want = min(st2.st_size, limit)
        chunks, got = [], 0
        while got < want:  # never past the size it reports: a size-0 special file reads as empty
            b = os.read(fd, want - got)
            if not b:
                break
            chunks.append(b)
            got += len(b)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        proc.kill()
    proc.wait()


def run_bounded(argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None,
                keep: int = 256 * 1024, limit: int = 64 * 2**20) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to the end, within ``timeout`` seconds and ``limit`` bytes of output (both streams).

    Returns the last ``keep`` bytes of stdout and stderr as text (undecodable bytes replaced). Past
    ``limit`` the child's group is killed and stderr ends with a line saying so; past ``timeout`` it is
    killed and ``subprocess.TimeoutExpired`` raised, as ``subprocess.run`` does."""
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(env) if env is not None else None, start_new_session=True)
    bufs = {"out": bytearray(), "err": bytearray()}
    total, over = 0, False
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        assert proc.stdout is not None and proc.stderr is not None
        sel.register(proc.stdout, selectors.EVENT_READ, "out")
        sel.register(proc.stderr, selectors.EVENT_READ, "err")
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                _kill_group(proc)
                raise subprocess.TimeoutExpired(list(argv), timeout)
            for key, _ in sel.select(min(left, 1.0)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf = bufs[key.data]
                buf += chunk
                if len(buf) > 2 * keep:
                    del buf[:-keep]
                total += len(chunk)
            if total > limit:
                over = True
                break
    if over:
        _kill_group(proc)
    else:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise subprocess.TimeoutExpired(list(argv), timeout) from None
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    out, err = (bytes(bufs[k][-keep:]).decode("utf-8", "replace") for k in ("out", "err"))
    if over:
        err += f"\nstopped: the program wrote more than {limit // 2**20} MiB of output\n"
    return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
