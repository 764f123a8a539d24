"""The ``metrics.jsonl`` format read back: the one reader, and the one drift threshold. Pure, no torch.

The trainer writes one JSON object per line (``jitmodel.metrics.MetricsLogger``); training records carry
``loss``, evaluation and event lines do not (or carry ``event``). A line cut by a crash is skipped, never
an error. Readers: the calibration store (``jitplan calibrate``), ``jitplan report``, ``jitplan compare``
and the remote watchdog (the last step, from the file's tail).

    >>> import json, pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp(), "metrics.jsonl")
    >>> _ = p.write_text(json.dumps({"step": 10, "loss": 0.5}) + "\\n" + '{"event": "eval"}\\n{"step": 2')
    >>> [r.get("step") for r in read_records(p)], [r["step"] for r in training_records(p)]
    ([10, None], [10])
    >>> last_step(p)
    10
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

DRIFT = 0.15  # relative difference between a plan and what its run measured that is reported


def read_records(path: str | Path, *, tail_bytes: int | None = None) -> list[dict[str, Any]]:
    """Every JSON object of the file, in order ([] when it is missing); only the last ``tail_bytes`` when
    given (its first, partial line is skipped like a torn one)."""
    try:
        with open(path, "rb") as f:
            if tail_bytes is not None:
                f.seek(max(f.seek(0, os.SEEK_END) - tail_bytes, 0))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash (or by the tail's start)
        if isinstance(rec, dict):
            out.append(rec)
    return out


def is_training(rec: dict[str, Any]) -> bool:
    """A training record (has a loss), not an evaluation or event line."""
    return "loss" in rec and "event" not in rec


def training_records(path: str | Path) -> list[dict[str, Any]]:
    return [r for r in read_records(path) if is_training(r)]


def last_step(path: str | Path, tail_bytes: int = 8192) -> int | None:
    """The ``step`` of the newest training record, read from the file's tail; None when there is none."""
    for rec in reversed(read_records(path, tail_bytes=tail_bytes)):
        if is_training(rec) and isinstance(rec.get("step"), int):
            return rec["step"]
    return None
