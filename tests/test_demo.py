"""``jitplan demo``: the plan it makes for a machine (pure), and a real tiny run through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jitplan.cli.demo import demo_config
from jitplan.hardware.schema import HardwareSpec, HostSpec

GB = 10**9


@pytest.mark.parametrize(("cpus", "ram", "workers"), [(2, 24 * GB, 1), (16, 64 * GB, 2), (1, 8 * GB, 0)])
def test_demo_plans_workers_from_this_machines_cpus(cpus, ram, workers):
    hw = HardwareSpec(gpus_per_node=0, gpu=None, host=HostSpec(cpus=cpus, ram_bytes=ram), source="probe")
    cfg, reasons = demo_config(hw, steps=None, minutes=1)
    assert cfg.data.num_workers == workers and any(r.startswith("cpus:") for r in reasons)
    assert (cfg.model.variant, cfg.model.img_size, cfg.data.kind) == ("JiT-Tiny/4", 16, "digits")
    assert cfg.max_steps is None and cfg.checkpoint.every_steps == 50
    assert cfg.data.persistent_workers == (workers > 0)
    assert cfg.diffusion.ema_warmup  # short runs: the EMA must not stay an average with the random init
    fixed, _ = demo_config(hw, steps=7, minutes=1)
    assert fixed.max_steps == 7 and fixed.checkpoint.every_steps == 7


def test_demo_rejects_a_bad_budget_and_an_occupied_folder(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "home"))
    r = cli("demo", "--minutes", "0")
    assert r.code == 2 and "--minutes" in r.err
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train.yaml").write_text("x: 1\n")
    r = cli("demo", "--steps", "1", "--out", str(tmp_path / "d"))
    assert r.code == 2 and "already holds a run" in r.err


@pytest.mark.slow
def test_demo_trains_through_the_local_launch_path_and_writes_samples(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "home"))
    out = tmp_path / "demo run"
    r = cli("demo", "--steps", "2", "--samples", "1", "--out", str(out), "--json")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert res["status"] == "finished" and res["final_step"] == 2 and res["device"] == "CPU"
    png = Path(res["samples"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.parent == out
    assert (out / "out" / "last.pt").is_file() and "step 2" in (out / "train.log").read_text()
    from jitplan.launch.registry import Registry

    run = Registry().get_run(res["run_id"])
    assert (run.name, run.backend, run.status) == ("demo", "local", "finished")
