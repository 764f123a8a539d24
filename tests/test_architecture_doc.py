"""docs/architecture.md names real things: every module path and every dotted name it cites exists."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "docs" / "architecture.md").read_text()


def test_every_cited_file_exists():
    paths = set(re.findall(r"[\w/]+\.(?:py|yaml|html)\b", TEXT)) - {"plan.yaml", "train.yaml"}
    missing = [p for p in sorted(paths) if not any((base / p).exists() for base in (
        ROOT, ROOT / "jitplan", ROOT / "jitmodel", ROOT / "jitplan" / "hardware", ROOT / "jitplan" / "planner",
        ROOT / "jitplan" / "launch", ROOT / "jitplan" / "templates"))]
    assert len(paths) > 25 and missing == []


def test_every_cited_dotted_name_resolves():
    names = set(re.findall(r"`((?:jitmodel|jitplan)\.[\w.]+)", TEXT))
    names |= {f"jitplan.{m}" for m in re.findall(r"`((?:planner|launch|hardware)\.[\w.]+)`", TEXT)}
    assert len(names) > 15
    for name in sorted(names):
        parts = name.split(".")
        for i in range(len(parts), 0, -1):  # the longest importable prefix, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:i]))
                break
            except ModuleNotFoundError:
                continue
        for attr in parts[i:]:
            assert hasattr(obj, attr), f"{name}: no {attr!r}"
            obj = getattr(obj, attr)
