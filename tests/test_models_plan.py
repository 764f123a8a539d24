"""``jitplan plan --model`` and the family recipes (issue 21): the factory protocol, the cache (a repeat plan
imports no torch and no user code; a changed source file is traced again), bad input (one line, exit 2), the
strategies on traced numbers, and reference vs target for DiT/SiT/U-ViT."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jitmodel import custom
from jitplan.errors import CheckFailed
from jitplan.hardware.spec import hardware_from_flags
from jitplan.planner.family import family_slugs, load_family
from jitplan.planner.model_profile import ModelProfile
from jitplan.planner.traced_plan import memory_bytes, plan_traced

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "models" / "my_denoiser.py"


def profile(**over: object) -> ModelProfile:
    base = dict(spec="m.py:f", digest="d", in_channels=4, input_size=32, num_classes=1000, params=675_000_000,
                trainable=675_000_000, matmul_params=673_000_000, largest_block_params=24_000_000,
                root_params=5_000_000, blocks=28, buffer_bytes=0, fixed_bytes=14_840_000_000, act_per_sample=4.0e8,
                act_per_sample_ckpt=1.2e8, step_peak_bytes=16_200_000_000, flops_per_image=6.86e11,
                traffic_per_image=9.2e9, batches=(8, 16), trace_s=20.0, torch="2.13")
    return ModelProfile(**{**base, **over})  # type: ignore[arg-type]


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = ("import sys; from jitplan.cli import app; from jitplan.cli._errors import run_with_error_map; "
            "rc = run_with_error_map(app, sys.argv[1:]); "
            "print('MODULES', [m for m in ('torch', 'my_denoiser') if any(k == m or k.startswith('jitmodel_user_') "
            "and m == 'my_denoiser' for k in sys.modules)], file=sys.stderr); sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env}, cwd=ROOT)


# ---------------------------------------------------------------- the factory spec and digest (pure)

def test_spec_parsing_and_recipe_names_are_told_apart():
    assert custom.looks_like_spec("examples/models/my_denoiser.py:make")
    assert custom.looks_like_spec("jitmodel.archs.dit:dit_xl_2")
    assert not custom.looks_like_spec("JiT-B/16") and not custom.looks_like_spec("recipes/mine.yaml")
    with pytest.raises(custom.ModelSpecError):
        custom.parse_spec("model.py:not-an-identifier")


def test_digest_follows_the_source_and_the_arguments(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def make():\n    return None\n")
    spec = custom.parse_spec(f"{f}:make")
    d0 = custom.source_digest(spec)
    assert custom.source_digest(spec, {"depth": 2}) != d0
    (tmp_path / "helper.py").write_text("X = 1\n")  # a sibling module the factory may import
    d1 = custom.source_digest(spec)
    assert d1 != d0
    f.write_text("def make():\n    return 1\n")
    assert custom.source_digest(spec) != d1


# ---------------------------------------------------------------- planning a profile (pure)

def test_strategies_move_memory_as_they_should():
    p = profile()
    none, ckpt, ema = (memory_bytes(p, s, 32, 1) for s in ("none", "ckpt", "ema-cpu"))
    assert ckpt < none and none - ema == pytest.approx(8 * p.params * 1.05, rel=1e-3)
    assert none - ckpt == pytest.approx(32 * (p.act_per_sample - p.act_per_sample_ckpt) * 1.05, rel=1e-3)
    plain2, shard2 = memory_bytes(p, "none", 32, 2), memory_bytes(p, "shard", 32, 2)
    assert shard2 < plain2 - 10e9  # half of ~20 GB of state and no DDP buckets
    assert memory_bytes(p, "none", 32, 1, accum=4) - none == pytest.approx(4 * p.trainable * 1.05, rel=1e-3)
    # the optimizer step's peak is sharded too (it held the whole state: 11.9 GB on 2 GPUs > 11.7 on one)
    assert memory_bytes(p, "shard+ckpt+ema-cpu", 1, 2) < memory_bytes(p, "ckpt+ema-cpu", 1, 1) - 3e9


def test_plan_picks_a_fitting_strategy_and_keeps_the_batch():
    tp = plan_traced(profile(), hardware_from_flags("1xRTX4090"), effective_batch=256)
    assert tp.memory_per_gpu_bytes <= tp.memory_target_bytes
    assert tp.micro_batch * tp.accum_steps >= 256 and tp.strategy in ("none", "ckpt", "ema-cpu", "ckpt+ema-cpu")
    forced = plan_traced(profile(), hardware_from_flags("1xRTX4090"), effective_batch=256, strategy="ckpt")
    assert forced.strategy == "ckpt" and forced.max_micro_batch > tp.max_micro_batch // 2


def test_a_model_that_cannot_fit_says_so():
    huge = profile(params=10**10, trainable=10**10, fixed_bytes=2 * 10**11, step_peak_bytes=24 * 10**10)
    with pytest.raises(CheckFailed, match="does not fit"):
        plan_traced(huge, hardware_from_flags("1xRTX3060"))


# ---------------------------------------------------------------- family recipes

def test_family_recipes_load_with_sources_and_reference_runs():
    assert {"dit-b-2", "dit-xl-2", "sit-xl-2", "uvit-h-2"} <= set(family_slugs())
    for slug in family_slugs():
        r = load_family(slug)
        assert r.reference.source and r.source and r.reference.batch >= 256
        assert r.factory_kwargs()["input_size"] == 32 and r.factory_kwargs()["in_channels"] == 4
    assert load_family("DiT-XL/2").arch.depth == 28
    assert load_family("sit-xl-2").objective.prediction == "v"


def test_family_recipe_builds_the_published_size():
    torch = pytest.importorskip("torch")
    r = load_family("dit-xl-2")
    with torch.device("meta"):
        m = custom.build(custom.parse_spec(r.factory), r.factory_kwargs())
    assert sum(p.numel() for p in m.parameters()) == pytest.approx(675e6, rel=0.005)  # DiT paper: 675M


def test_jit_recipes_are_unchanged():
    from jitplan.schemas import load_recipe, recipe_names

    assert "family" not in recipe_names() and load_recipe("JiT-B/16").train.model.variant == "JiT-B/16"


# ---------------------------------------------------------------- the command

@pytest.mark.slow
def test_plan_model_traces_then_hits_the_cache_without_torch(tmp_path):
    pytest.importorskip("torch")
    user = tmp_path / "mine"
    user.mkdir()
    f = user / "my_denoiser.py"
    f.write_text(EXAMPLE.read_text())
    env = {"JITPLAN_CACHE_DIR": str(tmp_path / "cache")}
    args = ("plan", "--gpus", "1xRTX4090", "--model", f"{f}:make", "--json")
    first = run_cli(*args, env=env)
    assert first.returncode == 0, first.stderr
    assert "tracing one training step" in first.stderr
    plan = json.loads(first.stdout)["target"]
    assert plan["memory_per_gpu_bytes"] <= plan["memory_target_bytes"] and plan["params"] > 10_000_000
    again = run_cli(*args, env=env)
    assert again.returncode == 0 and "tracing" not in again.stderr
    assert "MODULES []" in again.stderr  # neither torch nor the user's module was imported
    assert json.loads(again.stdout)["target"] == plan | {"trace": json.loads(again.stdout)["target"]["trace"]}
    f.write_text(f.read_text().replace("depth: int = 8", "depth: int = 4"))
    changed = run_cli(*args, env=env)
    assert "tracing one training step" in changed.stderr
    assert json.loads(changed.stdout)["target"]["params"] < plan["params"]


@pytest.mark.parametrize("spec, why", [
    ("nothere.py:make", "no such file"),
    ("examples/models/my_denoiser.py:nope", "no callable 'nope'"),
    ("no_such_pkg_xyz.mod:make", "not found on the Python path"),
])
def test_bad_model_is_one_line_and_exit_2(spec, why, tmp_path):
    r = run_cli("plan", "--gpus", "1xRTX4090", "--model", spec, env={"JITPLAN_CACHE_DIR": str(tmp_path)})
    assert r.returncode == 2, r.stderr
    assert why in r.stderr and "Traceback" not in r.stderr


def test_jit_only_options_are_refused_with_a_model(tmp_path):
    r = run_cli("plan", "--gpus", "1xRTX4090", "--model", "examples/models/my_denoiser.py:make", "--trace",
                "--epochs", "3", env={"JITPLAN_CACHE_DIR": str(tmp_path)})
    assert r.returncode == 2 and "--trace, --epochs plan(s) a JiT recipe" in r.stderr, r.stderr


def test_a_published_recipe_on_the_cpu_is_refused_not_swapped_for_the_demo(tmp_path):
    r = run_cli("plan", "--gpus", "cpu", "--recipe", "dit-xl-2", env={"JITPLAN_CACHE_DIR": str(tmp_path)})
    assert r.returncode == 2 and "planned for GPUs" in r.stderr and "JiT-Tiny" not in r.stdout, r.stdout + r.stderr


def test_a_module_without_the_protocol_is_refused(tmp_path):
    pytest.importorskip("torch")
    f = tmp_path / "plain.py"
    f.write_text("from torch import nn\n\ndef make():\n    return nn.Linear(2, 2)\n")
    r = run_cli("plan", "--gpus", "1xRTX4090", "--model", f"{f}:make", env={"JITPLAN_CACHE_DIR": str(tmp_path)})
    assert r.returncode == 2 and "in_channels, input_size, num_classes" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_family_recipe_plans_reference_beside_target(tmp_path):
    pytest.importorskip("torch")
    r = run_cli("plan", "--gpus", "1xRTX4090", "--recipe", "DiT-B/2", "--json",
                env={"JITPLAN_CACHE_DIR": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    ref, target = out["reference"], out["target"]
    assert out["recipe"]["slug"] == "dit-b-2" and out["recipe"]["reference"]["steps"] == 400_000
    assert ref["world_size"] == 8 and ref["gpu"] == "A100 80GB SXM" and ref["effective_batch"] == 256
    assert ref["micro_batch"] == 32 and ref["accum_steps"] == 1
    assert target["world_size"] == 1 and target["effective_batch"] >= 256
    assert target["params"] == pytest.approx(130.3e6, rel=0.002)  # DiT paper, Table 1: 130M (without sigma)
    assert target["images_per_s"] < ref["images_per_s"]
    lat = out["latents"]  # the dataset's encoding once (jitplan.planner.latent), no longer a warning
    assert lat["latent_shape"] == [4, 32, 32] and lat["disk_bytes"] == 10_505_569_400 and lat["encode_s"] > 0
    assert not any("pre-encoded" in w for w in target["warnings"])
