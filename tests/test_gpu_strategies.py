"""benchmarks/gpu_strategies.py, the prepared GPU check of the memory strategies: its cases and predictions
(dry run), and its whole path (config -> torchrun -> the real trainer -> metrics -> table) on this CPU."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_strategies.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_strategies", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_strategies"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_dry_run_lists_each_strategy_with_the_planners_prediction(tmp_path, capsys):
    from jitplan.hardware.spec import hardware_from_flags
    from jitplan.planner import strategy
    from jitplan.planner.plan import memory_inputs

    gs = _module()
    out = tmp_path / "r.json"
    assert gs.main(["--dry-run", "--gpu", "RTX3060", "--gpus", "2", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["strategy"], r["gpus"]) for r in rows] == [("none", 1), ("ckpt", 1), ("shard", 2), ("shard+ckpt", 2)]
    for r in rows:
        a = gs.parse_args(["--dry-run", "--gpu", "RTX3060"])
        train = gs.train_config(r["variant"], r["strategy"], r["gpus"], a, tmp_path / "x")
        hw = hardware_from_flags(f"{r['gpus']}xRTX3060")
        want = strategy.predict(memory_inputs(train, r["gpus"], nvlink=hw.gpu.nvlink), train.memory, 16)
        assert r["predicted"]["tensor_peak_mib"] == pytest.approx(want.tensor_peak / 2**20)
    pred = {r["strategy"]: r["predicted"] for r in rows}
    assert pred["ckpt"]["tensor_peak_mib"] < pred["none"]["tensor_peak_mib"]  # what each strategy is for
    assert pred["ckpt"]["step_s"] > pred["none"]["step_s"]
    assert "| JiT-B/16 | shard | 2 | 16 |" in capsys.readouterr().out
    # one GPU: the sharded cases are listed as skipped, with the reason
    assert gs.main(["--dry-run", "--gpu", "H200", "--out", str(out)]) == 0
    assert [r.get("skipped", "")[:17] for r in json.loads(out.read_text())][2:] == ["sharding needs 2+"] * 2


def test_bad_arguments_exit_2(tmp_path):
    gs = _module()
    with pytest.raises(SystemExit) as e:
        gs.main(["--dry-run", "--out", str(tmp_path / "r.json")])  # no --gpu
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        gs.main(["--variants", "JiT-Q/3", "--dry-run", "--gpu", "RTX3060"])
    assert e.value.code == 2


@pytest.mark.slow
def test_the_whole_path_on_this_cpu_measures_every_strategy(tmp_path, capsys):
    gs = _module()
    out = tmp_path / "r.json"
    rc = gs.main(["--device", "cpu", "--gpu", "RTX3060", "--gpus", "2", "--variants", "JiT-Tiny/4",
                  "--img-size", "8", "--batch", "2", "--steps", "2", "--out", str(out)])
    rows = json.loads(out.read_text())
    assert rc == 0, [r.get("error") for r in rows]
    assert [r["strategy"] for r in rows] == ["none", "ckpt", "shard", "shard+ckpt"]
    assert all(r["measured"]["step_s"] > 0 for r in rows)
    assert "| JiT-Tiny/4 | shard+ckpt | 2 | 2 |" in capsys.readouterr().out
