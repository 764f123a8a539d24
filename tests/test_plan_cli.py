"""``jitplan plan`` end to end: the side-by-side table, --json, --out, bad input, infeasible plans, speed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from jitmodel.config import load_train_config
from jitplan.schemas import load_plan

SEED = ("plan", "--gpus", "2xRTX3060", "--host-ram", "24GB")


@pytest.mark.slow
def test_seed_case_table(cli):
    r = cli(*SEED, "--wide")
    assert r.code == 0, r.err
    for text in ("quantity", "reference", "target", "why", "batch per GPU", "gradient accumulation",
                 "8 x H200", "2 x RTX 3060 12GB", "memory per GPU", "as the recipe asks", "host-ram", "torchrun"):
        assert text in r.out, text
    assert "[derived]" in r.out  # sources are printed literally, not eaten as rich markup


@pytest.mark.parametrize("spec", ["2xRTX3060", "8xH100", "1xRTX4090", "2x8xH100"])
@pytest.mark.slow
def test_out_writes_a_valid_plan(cli, tmp_path, spec):
    out = tmp_path / "plan.yaml"
    ram = "24GB" if spec.endswith("RTX3060") or spec.startswith("1x") else "512GB"  # 8 ranks need > 24 GB
    r = cli("plan", "--gpus", spec, "--host-ram", ram, "--out", str(out), "--json")
    assert r.code == 0, r.err
    plan = load_plan(out)
    assert json.loads(r.out) == plan.model_dump(mode="json")
    assert load_train_config(out) == plan.train
    assert plan.launch.config == str(out)
    assert plan.hardware.world_size == plan.train.world_size


def test_list_gpus(cli):
    r = cli("plan", "--list-gpus", "--json")
    assert r.code == 0
    names = [g["name"] for g in json.loads(r.out)]
    assert "RTX 3060 12GB" in names and "H200" in names
    assert cli("plan", "--list-gpus").code == 0


def test_show_renders_a_saved_plan(cli, tmp_path):
    out = tmp_path / "plan.yaml"
    assert cli(*SEED, "--out", str(out)).code == 0
    r = cli("plan", "--show", str(out), "--json")
    assert r.code == 0 and json.loads(r.out)["recipe"] == "jit-b-16"


def test_hardware_file_with_host_override(cli, tmp_path):
    from jitplan.hardware.spec import hardware_from_flags

    hw = tmp_path / "hw.yaml"
    hw.write_text(yaml.safe_dump(hardware_from_flags("2xRTX3060", cpus=8).model_dump(mode="json")))
    r = cli("plan", "--hardware", str(hw), "--host-ram", "24GB", "--json")
    assert r.code == 0, r.err
    d = json.loads(r.out)
    assert d["hardware"]["host"]["ram_bytes"] == 24 * 10**9 and d["workers"]["bound_by"] == "cpus"


def test_scale_lr_policy_flags(cli):
    r = cli("plan", "--gpus", "1xRTX4090", "--policy", "scale-lr", "--lr-scaling", "linear", "--json")
    assert r.code == 0, r.err
    d = json.loads(r.out)
    assert d["policy"] == "scale-lr" and d["lr_scaling"] == "linear" and d["train"]["accum_steps"] == 1


def test_uncatalogued_gpu(cli):
    r = cli("plan", "--gpus", "2xMYCARD", "--gpu-mem", "20GB", "--gpu-tflops", "80", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["hardware"]["gpu"]["gpu_class"] == "custom"


@pytest.mark.parametrize("argv,match", [
    (("plan", "--gpus", "2xRTX3061"), "closest: RTX 3060 12GB"),
    (("plan", "--gpus", "0xRTX3060"), "at least 1"),
    (("plan", "--gpus", "2xRTX3060", "--host-ram", "-24GB"), "positive"),
    (("plan", "--gpus", "2xRTX3060", "--host-ram", "lots"), "size"),
    (("plan",), "exactly one of --gpus"),
    (("plan", "--gpus", "2xRTX3060", "--recipe", "JiT-X/16"), "unknown recipe"),
    (("plan", "--gpus", "2xRTX3060", "--policy", "yolo"), "yolo"),
])
def test_bad_input_one_line_exit_2(cli, argv, match):
    r = cli(*argv)
    assert r.code == 2
    assert r.out == ""
    lines = r.err.strip().splitlines()
    assert lines[0].startswith("Error:") and match in r.err and "Traceback" not in r.err


@pytest.mark.parametrize("content,match", [("nodes: [", "not valid YAML"), ("schema_version: 3\n", "schema_version 3")])
def test_bad_files_exit_2(cli, tmp_path, content, match):
    p = tmp_path / "f.yaml"
    p.write_text(content)
    for flag in ("--hardware", "--show"):
        r = cli("plan", flag, str(p))
        assert r.code == 2 and match in r.err and len(r.err.strip().splitlines()) == 1


def test_infeasible_exit_1_with_numbers_and_options(cli):
    r = cli("plan", "--gpus", "2xRTX3060", "--recipe", "JiT-L/16", "--strategy", "none")
    assert r.code == 1
    assert "24 B/param" in r.err and "11.0 GB" in r.err and "bigger card" in r.err
    assert "Traceback" not in r.err


@pytest.mark.slow
def test_plan_does_not_import_torch_numpy_or_vastai():
    code = ("import sys; from jitplan.cli import run; rc = run(['plan', '--gpus', '2xRTX3060', '--json']); "
            "print(rc, [m for m in ('torch', 'numpy', 'vastai') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "0 []"


TINY_RECIPE = """
schema_version: 1
name: tiny test recipe
slug: tiny
description: a CPU-sized recipe for tests
source: tests
hardware: 2xRTX3060
eval_cfg: {cfg_online: 1.5, cfg_release: 1.5}
train:
  model: {variant: JiT-Tiny/4, img_size: 16, num_classes: 10}
  data: {kind: digits, num_images: 1797, num_workers: 2}
  batch_per_gpu: 64
  world_size: 2
  epochs: 2
"""


@pytest.mark.slow
def test_trace_flag_replaces_the_memory_estimate(cli, tmp_path):
    pytest.importorskip("torch")
    rec = tmp_path / "tiny.yaml"
    rec.write_text(TINY_RECIPE)
    r = cli("plan", "--gpus", "1xRTX3060", "--recipe", str(rec), "--trace", "--batch-per-gpu", "32", "--json")
    assert r.code == 0, r.err
    plan = json.loads(r.out)
    est = plan["estimates"]
    assert est["memory_source"] == "trace" and plan["train"]["accum_steps"] == 4
    names = [i["name"] for i in est["memory_breakdown"]]
    assert names[0] == "traced step (eager)"
    assert "gradients" in names  # one traced micro-step; with accumulation the gradients stay allocated
    assert sum(i["bytes"] for i in est["memory_breakdown"]) == est["memory_per_gpu_bytes"]
    row = next(r for r in plan["rows"] if r["quantity"] == "memory per GPU")
    assert "traced" in row["why"]


def _doc_commands():
    import re
    import shlex
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "planning.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return [shlex.split(line.split("#")[0])[1:] for line in block.splitlines() if line.startswith("jitplan plan")]


@pytest.mark.slow
def test_docs_examples_run(cli, tmp_path, monkeypatch):
    """Every `jitplan plan` example in docs/planning.md runs (in order: --out before --show)."""
    from jitplan.hardware.spec import hardware_from_flags

    monkeypatch.chdir(tmp_path)
    (tmp_path / "hardware.yaml").write_text(
        yaml.safe_dump(hardware_from_flags("2xRTX3060", host_ram="24GB").model_dump(mode="json")))
    (tmp_path / "offer.json").write_text('{"id": 1, "gpu_name": "RTX 3060", "num_gpus": 2, "pcie_bw": 3.1, '
                                         '"gpu_lanes": 4, "cpu_cores_effective": 16, "cpu_ram": 64000}')
    for c in range(2):
        (tmp_path / "data" / "mine" / "train" / f"c{c}").mkdir(parents=True)
        (tmp_path / "data" / "mine" / "train" / f"c{c}" / "x.jpg").write_bytes(b"x")
    commands = _doc_commands()
    assert len(commands) >= 8
    for argv in commands:
        if "--trace" in argv:  # traced in test_trace_flag_replaces_the_memory_estimate (B/16 takes ~10 s)
            continue
        r = cli(*argv)
        assert r.code == 0, (argv, r.err)


def test_compact_layout_says_each_decision_once_and_suggests_out(cli):
    r = cli("plan", "--gpus", "2xRTX3060", "--host-ram", "12GB", "--compact")  # 12 GB: workers refused
    assert r.code == 0, r.err
    text = " ".join(r.out.split())
    assert "batch per GPU: 128 -> 32 derived: largest split" in text  # the why under the numbers
    assert text.count("24 workers refused") == 1 and "warning: 12 per rank" in text
    assert "not saved: add --out plan.yaml" in text and "launch (every node)" not in text
    assert "…" not in r.out
    wide = cli(*SEED, "--wide")
    assert "launch (every node)" not in wide.out and "│ why" in wide.out.replace("┃", "│")


def test_saved_plan_names_the_next_step_and_model_is_an_alias_of_recipe(cli, tmp_path):
    out = tmp_path / "p.yaml"
    r = cli("plan", "--gpus", "1xH100", "--model", "JiT-L/32", "--out", str(out))
    assert r.code == 0, r.err
    assert load_plan(out).train.model.variant == "JiT-L/32"
    text = " ".join(r.out.split())
    assert f"next: check it, then launch it (or --ssh / --vast): jitplan doctor --plan {out}" in text
    assert f"  jitplan launch {out} --local\n" in r.out and f"--config {out}" in text  # whole commands


def test_a_gpu_less_hardware_file_says_what_to_do(cli, tmp_path):
    hw = tmp_path / "hardware.yaml"
    hw.write_text(yaml.safe_dump({"nodes": 1, "gpus_per_node": 0, "gpu": None, "host": {"cpus": 2},
                                  "source": "probe"}))
    r = cli("plan", "--hardware", str(hw))  # no GPU: the laptop plan (issue 23), not a refusal
    assert r.code == 0 and "CPU plan" in r.out and f"jitplan plan --hardware {hw} --out plan.yaml" in r.out
    assert "Traceback" not in r.err


def test_catalog_shows_gb_and_gib(cli):
    r = cli("plan", "--list-gpus", "--wide")
    assert r.code == 0 and "GB (" in r.out and "GiB)" in r.out and "source" in r.out
    r = cli("plan", "--list-gpus", "--compact")
    assert r.code == 0 and "GiB)" in r.out and "┃ source" not in r.out and "…" not in r.out
