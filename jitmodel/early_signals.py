"""SIGTERM/SIGINT/SIGHUP honoured from the trainer's first instant, before torch is imported.

``python -m jitmodel.train`` imports this module first; when the trainer is the program being run it
installs a handler at once. What a stop signal does depends on how far the start has got:

- **importing** (``mode="exit"``: torch and the trainer's modules load, seconds under load): nothing is
  open and nothing written, so the process says one line and exits 0 at once;
- **setting up** (``mode="raise"``, from ``jitmodel.train.main``: dataset scan, model build, process
  group): :class:`StartupStop` unwinds the set-up at once and ``main`` ends cleanly (exit 0, one line;
  nothing to checkpoint yet);
- **training**: the trainer's own handler takes over (finish the step, checkpoint, exit 0).

The only window left is the interpreter's own start before this module's first line (tens of ms idle;
``site`` and the ``.pth`` files). A parent that starts the trainer with these signals blocked closes it:
``install`` unblocks them once the handler is in place (a pending signal is then handled, not fatal).
``jitplan``'s launcher instead waits until a rank handles SIGTERM before it sends one (launch/local.py).
Importing this module from anywhere else changes nothing.

    >>> import signal
    >>> before = signal.getsignal(signal.SIGTERM)
    >>> prev = install(mode="raise")
    >>> signal.getsignal(signal.SIGTERM) is _record and caught() is None
    True
    >>> restore(); signal.getsignal(signal.SIGTERM) is before
    True
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, Literal

_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, n))
Mode = Literal["exit", "raise"]
_state: dict[str, Any] = {"caught": None, "previous": None, "mode": "exit"}


class StartupStop(BaseException):
    """A stop signal during the trainer's set-up (a BaseException, like KeyboardInterrupt: no ``except
    Exception`` in the set-up swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def stopped_line(signum: int) -> str:
    return f"stopped by {signal.Signals(signum).name} before the first step, while starting; nothing to checkpoint"


def _record(signum: int, frame: Any) -> None:
    first = _state["caught"] is None
    if first:
        _state["caught"] = signum
    if _state["mode"] == "exit":  # still importing: nothing open, nothing written
        try:
            sys.stderr.write(stopped_line(_state["caught"]) + "\n")
            sys.stderr.flush()
        finally:
            os._exit(0)
    if first:
        raise StartupStop(signum)


def install(mode: Mode = "exit") -> dict[int, Any] | None:
    """Handle SIGTERM/SIGINT/SIGHUP from now on (main thread only), as ``mode`` says; returns the handlers it
    replaced. Unblocks the signals afterwards (a parent may have started this process with them blocked)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    _state["mode"] = mode
    if _state["previous"] is None:
        _state["previous"] = {s: signal.signal(s, _record) for s in _SIGNALS}
    else:
        for s in _SIGNALS:
            signal.signal(s, _record)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    return _state["previous"]


def caught() -> int | None:
    """The first signal recorded, or None."""
    return _state["caught"]


def restore() -> None:
    """Put back the handlers ``install`` replaced, and forget any recorded signal."""
    prev = _state["previous"]
    if prev is not None and threading.current_thread() is threading.main_thread():
        for s, h in prev.items():
            signal.signal(s, h)
    _state["caught"], _state["previous"], _state["mode"] = None, None, "exit"


_main = sys.modules.get("__main__")
if getattr(getattr(_main, "__spec__", None), "name", None) == "jitmodel.train":
    install()
