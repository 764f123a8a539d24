"""A progress line with an ETA for work that takes more than a few seconds (sampling, trajectories).

On a terminal the line is redrawn in place (at most twice a second); piped, it prints a quiet line at each
tenth of the work, so a log gets about ten lines and never a wall of carriage returns:

    >>> import io
    >>> buf, now = io.StringIO(), iter(range(100)).__next__
    >>> p = Progress("sample", 20, "steps", stream=buf, clock=lambda: float(now()))
    >>> for _ in range(20):
    ...     p.advance()
    >>> p.close()
    >>> buf.getvalue().splitlines()[0], len(buf.getvalue().splitlines())
    ('sample: 2/20 steps (10 %), eta 0:09', 10)
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

QUIET_ENV = "JITMODEL_NO_PROGRESS"  # 1: no progress at all (tests, scripts that parse stderr)


def clock_text(seconds: float) -> str:
    """``75`` -> ``1:15``; ``3725`` -> ``1:02:05``."""
    s = max(int(round(seconds)), 0)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    """``what: done/total unit (pct), eta m:ss`` on ``stream`` (stderr)."""

    def __init__(self, what: str, total: int, unit: str, *, stream: TextIO | None = None, tty: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.total, self.unit, self.clock = what, max(total, 1), unit, clock
        self.stream: Any = stream or sys.stderr
        self.tty = (hasattr(self.stream, "isatty") and self.stream.isatty()) if tty is None else tty
        self.enabled = os.environ.get(QUIET_ENV, "") in ("", "0")
        self.done, self.t0, self.last, self.tenth = 0, clock(), float("-inf"), 0

    def line(self) -> str:
        spent = self.clock() - self.t0
        eta = spent / self.done * (self.total - self.done) if self.done else None
        return (f"{self.what}: {self.done}/{self.total} {self.unit} ({100 * self.done // self.total} %)"
                + (f", eta {clock_text(eta)}" if eta is not None and self.done < self.total else "")
                + (f", {clock_text(spent)} in all" if self.done >= self.total else ""))

    def advance(self, n: int = 1) -> None:
        self.done = min(self.done + n, self.total)
        if not self.enabled:
            return
        if self.tty:
            now = self.clock()
            if now - self.last >= 0.5 or self.done >= self.total:
                self.last = now
                self.stream.write("\r" + self.line() + "\033[K")
                self.stream.flush()
        elif self.done * 10 // self.total > self.tenth:
            self.tenth = self.done * 10 // self.total
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\r" + self.line() + "\033[K\n")
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TrainLogProgress:
    """Stands in for the stream a training log is echoed to: ``step N ...`` metric lines move a Progress
    (an ETA instead of one line per logged step); every other line passes through.

        >>> import io
        >>> out = io.StringIO()
        >>> echo = TrainLogProgress("arm x", 100, stream=out, tty=False)
        >>> _ = echo.write("JiT-Tiny/8 at 32px\\nstep 50  loss 0.4\\nstep 100  loss 0.3\\ndone\\n")
        >>> out.getvalue().splitlines()[0], out.getvalue().splitlines()[-1]
        ('JiT-Tiny/8 at 32px', 'done')
    """

    def __init__(self, what: str, total: int, *, stream: TextIO, tty: bool | None = None) -> None:
        self.stream, self.bar, self._buf = stream, Progress(what, total, "steps", stream=stream, tty=tty), ""

    def write(self, text: str) -> int:
        self._buf += text
        *lines, self._buf = self._buf.split("\n")
        for line in lines:
            words = line.split()
            if len(words) > 1 and words[0] == "step" and words[1].isdigit() and "event" not in words:
                self.bar.advance(int(words[1]) - self.bar.done)
            elif line.strip():
                if self.bar.tty and self.bar.enabled:
                    self.stream.write("\r\033[K")
                self.stream.write(line + "\n")
        self.stream.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        self.bar.close()
