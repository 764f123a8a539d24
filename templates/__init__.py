"""Data files shipped with jitplan (recipes, launch templates). Not code.

`templates_dir()` finds them in an installed wheel and in a checkout alike.
"""

from __future__ import annotations

from pathlib import Path


def templates_dir() -> Path:
    return Path(__file__).resolve().parent
