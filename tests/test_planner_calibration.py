"""The calibration loop: shipped record -> calibrated plan, the store, `jitplan calibrate`, and drift seen by a
real short CPU run whose plan was made for other hardware (the trainer's log, metrics, status and runs)."""

from __future__ import annotations

import json

import pytest

from jitmodel.config import DataConfig, ModelConfig, TrainConfig
from jitplan.calibration.records import CalibrationRecord, add_record, all_records, shipped_records
from jitplan.hardware.spec import hardware_from_flags
from jitplan.planner import calibration
from jitplan.planner.plan import make_plan
from jitplan.schemas import PlanOptions, load_recipe, save_plan

STORY = dict(batch_per_gpu=16, policy="scale-lr", lr_scaling="linear")


def story(records=()):
    return make_plan(hardware_from_flags("2xRTX3060", host_ram="24GB"), load_recipe("JiT-B/16"),
                     PlanOptions(**STORY), calibration=records)


def test_the_shipped_story_record_calibrates_its_own_plan_within_3_percent():
    plan = story(shipped_records()).estimates
    assert abs(plan.memory_per_gpu_bytes / 2**30 - 6.6) / 6.6 < 0.03
    assert abs(plan.epoch_time_s / 3600 - 6.0) / 6.0 < 0.03
    assert plan.time_source.startswith("calibrated from 1 run on RTX 3060 12GB (2025-11")
    prior = story().estimates
    assert prior.time_source == "prior" and prior.memory_calibration == "prior"
    assert plan.step_time_s / prior.step_time_s == pytest.approx(0.54 / prior.step_time_s, rel=1e-6)


def test_rows_say_prior_or_calibrated():
    rows = {r.quantity: r.why for r in story(shipped_records()).rows}
    assert "calibrated from 1 run on RTX 3060" in rows["step time"]
    assert "calibrated from 1 run on RTX 3060" in rows["memory per GPU"]
    assert "prior" in {r.quantity: r.why for r in story().rows}["images/s"]


def test_strategy_rows_are_calibrated_like_the_headline():
    """A calibrated plan compares its memory strategies on the same (calibrated) clock as its epoch row."""
    import re

    def hours(text: str) -> tuple[float, float]:  # (value, half the printed resolution), in hours
        val, unit = re.search(r"epoch ([0-9.]+) (min|h|d)", text).groups()
        scale = {"min": 1 / 60, "h": 1.0, "d": 24.0}[unit]
        return float(val) * scale, (0.5 if unit == "min" else 0.05) * scale

    plan = make_plan(hardware_from_flags("2xRTX3060", host_ram="64GB"), load_recipe("JiT-L/16"), PlanOptions(),
                     calibration=shipped_records())
    headline = plan.estimates.epoch_time_s / 3600
    assert "calibrated" in plan.estimates.time_source
    others = [r for r in plan.rows if r.quantity.startswith("  ") and "epoch" in r.target]
    assert others
    for r in others:
        pct = int(re.match(r"([+-]\d+)%", r.why).group(1))
        got, half = hours(r.target)
        assert got == pytest.approx(headline * (1 + pct / 100), rel=0.006, abs=half), r


def test_a_plan_on_priors_says_how_far_the_priors_were_off_where_measured():
    """No record of an RTX 4090: the time stays a prior, and the plan warns with the shipped run's ratio; the
    RTX 3060 plan is calibrated and does not."""
    recs = shipped_records()
    gap, rec = calibration.known_gap(recs)
    from jitplan.hardware.catalog import lookup

    assert gap == pytest.approx(rec.step_time_s / calibration.timing.train_step_time(
        calibration.timing.TimeInputs.for_model(rec.variant, lookup(rec.gpu), img_size=rec.img_size,
                                                micro_batch=rec.batch_per_gpu, accum=rec.accum_steps,
                                                world_size=rec.world_size, compile=rec.compile,
                                                attention=rec.attention, workers_per_rank=rec.workers_per_rank)
    ).total_s)
    p4090 = make_plan(hardware_from_flags("1xRTX4090"), load_recipe("JiT-B/16"), PlanOptions(), calibration=recs)
    (w,) = [w for w in p4090.warnings if w.startswith("time is a prior")]
    assert f"{gap:.2f}x" in w and "jitplan calibrate" in w and p4090.estimates.time_source == "prior"
    p3060 = story(recs)
    assert not any(w.startswith("time is a prior") for w in p3060.warnings)
    assert not any(w.startswith("time is a prior") for w in make_plan(
        hardware_from_flags("1xRTX4090"), load_recipe("JiT-B/16"), PlanOptions()).warnings)  # no records: silent


def test_nearest_record_on_the_same_gpu_and_none_on_another():
    rec = shipped_records()[0]
    eager_plan = make_plan(hardware_from_flags("2xRTX3060", host_ram="24GB"), load_recipe("JiT-B/16"),
                           PlanOptions(**STORY, compile=False), calibration=[rec])
    assert "nearest: JiT-B/16 compiled exact" in eager_plan.estimates.time_source
    h100 = make_plan(hardware_from_flags("8xH100"), load_recipe("JiT-B/16"), PlanOptions(), calibration=[rec])
    assert h100.estimates.time_source == "prior"
    assert calibration.match([rec], gpu="H100 SXM", variant="JiT-B/16", compile=True, attention="exact") is None


def test_store_folds_a_second_run_of_the_same_configuration(tmp_path):
    rec = shipped_records()[0].model_copy(update={"step_time_s": 0.60, "source": "run a", "date": "2026-12-01"})
    add_record(rec, tmp_path)
    folded = add_record(rec.model_copy(update={"step_time_s": 0.50, "source": "run b"}), tmp_path)
    assert folded.runs == 2 and folded.step_time_s == pytest.approx(0.55) and "run a; run b" in folded.source
    assert [r.source for r in all_records(tmp_path)] == ["run a; run b"]  # the local record replaces the shipped


def test_calibrate_by_hand_then_plan_uses_it(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path))
    r = cli("calibrate", "--gpu", "RTX4090", "--batch-per-gpu", "64", "--step-time", "1.0", "--memory", "20GiB",
            "--source", "a 4090 run by hand", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)[0]["gpu"] == "RTX 4090"
    r = cli("plan", "--gpus", "1xRTX4090", "--json")
    est = json.loads(r.out)["estimates"]
    assert est["time_source"].startswith("calibrated from 1 run on RTX 4090")
    assert cli("plan", "--gpus", "1xRTX4090", "--json", "--no-calibration").code == 0
    assert cli("calibrate", "--gpu", "RTX4090", "--step-time", "1").code == 2  # no batch, no source


def cpu_plan_for_other_hardware(tmp_path):
    """A plan made for 1 x H100 (the planner's numbers) around a tiny CPU-sized TrainConfig."""
    plan = make_plan(hardware_from_flags("1xH100"), load_recipe("JiT-B/16"), PlanOptions())
    train = TrainConfig(model=ModelConfig(variant="JiT-Tiny/4", img_size=8, num_classes=10),
                        data=DataConfig(kind="digits", num_workers=0), batch_per_gpu=8, epochs=1, max_steps=6,
                        log_every=2, world_size=1, output_dir=str(tmp_path / "run" / "out"))
    path = tmp_path / "run" / "plan.yaml"
    path.parent.mkdir()
    save_plan(plan.model_copy(update={"train": train}), path)
    return plan, path


@pytest.mark.slow
def test_a_real_cpu_run_planned_for_an_h100_reports_drift(tmp_path, monkeypatch, cli):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from jitplan.runs.registry import Registry

    plan, path = cpu_plan_for_other_hardware(tmp_path)
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "JITMODEL_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "jitmodel.train", "--config", str(path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = proc.stdout
    assert "drift: step time" in log and "planned" in log  # the run log says so
    recs = [json.loads(x) for x in (tmp_path / "run" / "out" / "metrics.jsonl").read_text().splitlines()]
    train_recs = [x for x in recs if "loss" in x]
    assert {"step_s", "data_wait_s", "compute_s", "optimizer_s", "host_rss_mib", "host_rss_peak_mib"} <= set(train_recs[-1])
    assert any(x.get("event") == "drift" for x in recs)

    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "home"))
    reg = Registry()
    run_id = reg.create_run("cpu-vs-h100", "local", plan_path=str(path), run_dir=str(tmp_path / "run"),
                            status="finished")
    r = cli("status", run_id)
    assert r.code == 0 and "drift:" in r.out and "step time" in r.out
    r = cli("runs", "--offline")
    assert f"run {run_id} drifts from its plan" in r.out
    r = cli("calibrate", run_id)  # a CPU run cannot calibrate a GPU model
    assert r.code == 2 and "ran on the CPU" in r.err


def test_hand_record_validates():
    with pytest.raises(ValueError):
        CalibrationRecord(gpu="x", variant="JiT-B/16", compile=True, attention="flash", batch_per_gpu=1,
                          date="2026", source="s")
