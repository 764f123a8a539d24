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


def _block_after(heading: str) -> str:
    part = TEXT.split(heading, 1)[1]
    return part.split("```", 2)[1]


def test_the_floors_drawn_are_the_contract_ci_checks():
    import tomllib

    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in conf if c["type"] == "layers")["layers"]
    drawn = [line.split("  ")[0].strip() for line in _block_after("## Floors").strip().splitlines()]
    drawn = [d for d in drawn if d.startswith("jitplan")]
    assert drawn == layers


def test_the_lifecycle_drawn_is_the_state_machine():
    from jitplan.cloud.lifecycle import TRANSITIONS
    from jitplan.runs.schema import INSTANCE_STATUSES

    drawn = set(re.findall(r"[a-z]+", _block_after("## The cloud lifecycle")))
    states = set(INSTANCE_STATUSES) - {"lost"}  # lost: the provider forgot it on its own, never drawn as a step
    assert states <= drawn, states - drawn
    assert set(TRANSITIONS) == set(INSTANCE_STATUSES)
    assert "destroyed" in TRANSITIONS["destroying"] and not TRANSITIONS["destroyed"]


def test_the_checkpoint_entries_named_are_the_ones_written():
    import inspect

    from jitmodel import checkpoint

    section = TEXT.split("## The checkpoint format", 1)[1].split("##", 1)[0]
    named = set(re.findall(r"`(\w+)`", section.split("Every load")[0])) - {"True", "torch"}
    src = inspect.getsource(checkpoint.make_checkpoint)
    written = set(re.findall(r'"(\w+)":', src)) | set(re.findall(r'ck\["(\w+)"\] =', src))
    assert written <= named | {"digests"}, written - named
    assert {"format", "format_version", "digests", "model", "ema1", "ema2", "optimizer", "rng"} <= named
