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
    r = cli("--help")
    assert r.code == 0
    assert "Usage" in r.out


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
