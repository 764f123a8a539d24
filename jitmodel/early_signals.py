"""SIGTERM/SIGINT noted from the trainer's first instant, before torch is imported.

``python -m jitmodel.train`` imports this module first; when the trainer is the program being run it
installs a handler that only records the signal, so a SIGTERM during the slow start (imports, dataset
scan, model build, process-group init) is not a silent death: ``jitmodel.train.main`` sees it and ends
cleanly (exit 0, one line; nothing to checkpoint yet). Once the trainer exists its own handler takes over
(finish the step, checkpoint, exit 0). Importing it from anywhere else changes nothing.

    >>> import signal
    >>> before = signal.getsignal(signal.SIGTERM)
    >>> prev = install()
    >>> signal.getsignal(signal.SIGTERM) is _record and caught() is None
    True
    >>> restore(); signal.getsignal(signal.SIGTERM) is before
    True
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_state: dict[str, Any] = {"caught": None, "previous": None}


def _record(signum: int, frame: Any) -> None:
    if _state["caught"] is not None and signum == signal.SIGINT:
        raise KeyboardInterrupt  # a second Ctrl-C: stop now
    _state["caught"] = signum


def install() -> dict[int, Any] | None:
    """Record SIGTERM/SIGINT from now on (main thread only); returns the handlers it replaced."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if _state["previous"] is None:
        _state["previous"] = {s: signal.signal(s, _record) for s in _SIGNALS}
    else:
        for s in _SIGNALS:
            signal.signal(s, _record)
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
    _state["caught"], _state["previous"] = None, None


_main = sys.modules.get("__main__")
if getattr(getattr(_main, "__spec__", None), "name", None) == "jitmodel.train":
    install()
