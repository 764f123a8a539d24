"""Where jitplan keeps its state (the registry database, the calibration store, known hosts) and its caches.
Pure, cheap to import (the planner reads the calibration store from here without loading the registry)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def default_home(env: dict[str, str] | None = None) -> Path:
    """``$JITPLAN_HOME``, else ``$XDG_DATA_HOME/jitplan``, else ``~/.local/share/jitplan``."""
    env = dict(os.environ) if env is None else env
    if env.get("JITPLAN_HOME"):
        return Path(env["JITPLAN_HOME"]).expanduser()
    if env.get("XDG_DATA_HOME"):
        return Path(env["XDG_DATA_HOME"]).expanduser() / "jitplan"
    return Path(env.get("HOME") or Path.home()) / ".local" / "share" / "jitplan"


def cache_dir(env: Mapping[str, str]) -> Path:
    """Where jitplan keeps caches (doctor's torch-import result, traced model profiles): ``$JITPLAN_CACHE_DIR``,
    else ``$XDG_CACHE_HOME/jitplan``, else ``~/.cache/jitplan``."""
    if env.get("JITPLAN_CACHE_DIR"):
        return Path(env["JITPLAN_CACHE_DIR"])
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "jitplan"
