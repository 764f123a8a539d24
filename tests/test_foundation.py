"""The package foundation: fast CLI start, config schema, variant table."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jitmodel.config import DataConfig, ModelConfig, TrainConfig
from jitmodel.variants import VARIANTS, get_variant


def test_cli_import_is_light():
    code = "import sys, jitplan.cli; print(' '.join(m for m in ('torch', 'vastai', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_help_lists_commands(cli):
    """Every command module loads (a missing one would be skipped silently) and --help lists each registered
    command with the first line of its docstring."""
    import importlib
    import re
    from pathlib import Path

    import jitplan.cli
    from jitplan.cli import _COMMAND_MODULES, app

    here = Path(jitplan.cli.__file__).parent
    present = {p.stem for p in here.glob("*.py") if "def register(" in p.read_text()}
    assert present <= set(_COMMAND_MODULES), f"command modules never registered: {present - set(_COMMAND_MODULES)}"
    for name in present:  # a listed module may not exist yet (it is skipped); one that exists must load
        assert hasattr(importlib.import_module(f"jitplan.cli.{name}"), "register")
    r = cli("--help")
    assert r.code == 0 and "Usage: jitplan [OPTIONS] COMMAND" in r.out
    listed = set(re.findall(r"^  (\w[\w-]*)\s", r.out, flags=re.M))  # the Commands list
    names = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    assert {"probe", "plan", "doctor", "launch", "runs", "status", "logs", "stop", "demo", "compare", "data"} <= names
    assert names <= listed, f"registered but not in --help: {names - listed}"
    for c in app.registered_commands:
        first = " ".join((c.callback.__doc__ or "").strip().splitlines()[0].split()[:3])
        assert first and first in " ".join(r.out.split()), f"{c.name}: summary {first!r} missing from --help"


def test_tests_run_in_a_scrubbed_environment():
    """conftest's autouse fixture: no JITPLAN_*/VAST_* from the caller's shell, isolated state, fixed width."""
    import os

    allowed = {"JITPLAN_HOME", "JITPLAN_CACHE_DIR", "JITPLAN_REGEN_GOLDEN"}
    leaked = {k for k in os.environ if k.startswith(("JITPLAN_", "VAST_"))} - allowed
    assert leaked == set()
    assert os.environ["COLUMNS"] == "120" and "pytest" in os.environ["JITPLAN_HOME"]


@pytest.mark.parametrize("name", ["JiT-B/16", "jit-b/16", "B/16", "JiT B/16"])
def test_variant_lookup_forgiving(name):
    assert get_variant(name).name == "JiT-B/16"


def test_unknown_variant_names_closest():
    with pytest.raises(KeyError, match="JiT-B/16"):
        get_variant("JiT-B/61")


@pytest.mark.parametrize("name,mlp", [("JiT-B/16", 2048), ("JiT-L/16", 2730), ("JiT-H/16", 3413), ("JiT-G/16", 4437)])
def test_swiglu_hidden_width(name, mlp):
    assert VARIANTS[name].mlp_hidden == mlp


def test_lr_scaling_reference():
    cfg = TrainConfig(data=DataConfig(path="/d"), world_size=8)
    assert cfg.effective_batch() == 1024
    assert cfg.lr == pytest.approx(2e-4)


def test_image_size_must_divide_patch():
    with pytest.raises(ValueError, match="multiple of patch"):
        ModelConfig(variant="JiT-B/16", img_size=250)


def test_version_prints_and_exits_0(cli):
    from jitplan import __version__

    r = cli("--version")
    assert r.code == 0 and r.out.strip() == f"jitplan {__version__}"
