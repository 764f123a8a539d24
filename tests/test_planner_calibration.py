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


def test_a_record_of_exactly_the_plans_configuration_is_shown_as_the_measurement():
    """Before: "calibrated from 1 run" (a replay of the plan's own source, every term x 1.53)."""
    est = story(shipped_records()).estimates
    rec = shipped_records()[0]
    assert est.step_time_s == rec.step_time_s and est.memory_per_gpu_bytes == rec.memory_used_bytes
    assert est.time_source == "measured on 2 x RTX 3060 12GB (2025-11, 1 run)" == est.memory_calibration
    assert est.memory_source == "measured"
    assert abs(est.epoch_time_s / 3600 - 6.0) / 6.0 < 0.03
    prior = story().estimates
    assert prior.time_source == "prior" and prior.memory_calibration == "prior"
    assert est.eval_time_s == prior.eval_time_s  # a training record does not measure the evaluation
    # the model's terms stay, and a "measured" term makes them sum to the measured step
    assert sum(t.seconds for t in est.step_breakdown) == pytest.approx(est.step_time_s)
    assert any(t.name == "measured" and f"{prior.step_time_s:.3f} s" in t.why for t in est.step_breakdown)


def test_memory_items_sum_to_the_total_with_a_negative_correction():
    """Before: the calibration item was stored as abs(): "99 MB" beside "-94 MiB", items summing to 7.284 GB
    against a total of 7.087 GB."""
    est = story(shipped_records()).estimates
    (item,) = [i for i in est.memory_breakdown if i.name == "measured"]
    assert item.bytes < 0
    assert sum(i.bytes for i in est.memory_breakdown) == est.memory_per_gpu_bytes


def test_rows_say_prior_or_measured():
    rows = {r.quantity: r.why for r in story(shipped_records()).rows}
    assert "measured on 2 x RTX 3060" in rows["step time"]
    assert "measured on 2 x RTX 3060" in rows["memory per GPU"]
    assert "prior" in {r.quantity: r.why for r in story().rows}["images/s"]


def test_one_number_per_configuration_jit_l_is_not_scaled_by_a_b16_record():
    """Before: the B/16 2-GPU record scaled every term of JiT-L/16 by 1.53 (21.2 h default, 13.9 h without)."""
    hw = hardware_from_flags("2xRTX3060", host_ram="64GB")
    default = make_plan(hw, load_recipe("JiT-L/16"), PlanOptions(), calibration=shipped_records())
    bare = make_plan(hw, load_recipe("JiT-L/16"), PlanOptions())
    assert default.estimates.epoch_time_s == bare.estimates.epoch_time_s
    assert default.estimates.time_source == "prior"
    assert any("not transferred" in w and "link nobody measured" in w for w in default.warnings)


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


def test_a_one_gpu_record_transfers_an_efficiency_to_the_compute_terms_only():
    rec = shipped_records()[0].model_copy(update={"world_size": 1, "batch_per_gpu": 32, "step_time_s": 0.8,
                                                  "memory_used_bytes": None})
    hw = hardware_from_flags("2xRTX3060", host_ram="24GB")
    opts = PlanOptions(**STORY)
    bare = make_plan(hw, load_recipe("JiT-B/16"), opts).estimates
    est = make_plan(hw, load_recipe("JiT-B/16"), opts, calibration=[rec]).estimates
    eff, _ = calibration.compute_efficiency(rec, hw.gpu)
    assert eff is not None and eff > 1 and est.time_source.startswith(f"compute x{eff:.2f} from JiT-B/16")
    before = {t.name: t.seconds for t in bare.step_breakdown}
    for t in est.step_breakdown:
        if t.name in calibration.COMPUTE_TERMS:
            assert t.seconds == pytest.approx(before[t.name] * eff)
        elif t.name != "calibration":
            assert t.seconds == pytest.approx(before[t.name])  # all-reduce, optimizer, host syncs: the prior
    note = next(t.why for t in est.step_breakdown if t.name == "calibration")
    assert "tensor +" in note and "other terms are the prior" in note
    assert est.memory_per_gpu_bytes == bare.memory_per_gpu_bytes  # a record of another config: not memory
    h100 = make_plan(hardware_from_flags("8xH100"), load_recipe("JiT-B/16"), PlanOptions(), calibration=[rec])
    assert h100.estimates.time_source == "prior"


def test_store_folds_a_second_run_of_the_same_configuration(tmp_path):
    rec = shipped_records()[0].model_copy(update={"step_time_s": 0.60, "source": "run a", "date": "2026-12-01"})
    add_record(rec, tmp_path)
    folded = add_record(rec.model_copy(update={"step_time_s": 0.50, "source": "run b"}), tmp_path)
    assert folded.runs == 2 and folded.step_time_s == pytest.approx(0.55) and "run a; run b" in folded.source
    assert [r.source for r in all_records(tmp_path)] == ["run a; run b"]  # the local record replaces the shipped


def test_calibrate_by_hand_then_plan_uses_it(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path))
    r = cli("calibrate", "--gpu", "RTX4090", "--batch-per-gpu", "64", "--step-time", "0.5", "--memory", "20GiB",
            "--source", "a 4090 run by hand", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)[0]["gpu"] == "RTX 4090"
    r = cli("plan", "--gpus", "1xRTX4090", "--json")
    est = json.loads(r.out)["estimates"]
    assert est["time_source"].startswith("compute x") and "RTX 4090" in est["time_source"]
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
    want = {"step_s", "data_wait_s", "compute_s", "optimizer_s", "host_rss_mib", "host_rss_peak_mib"}
    assert want <= set(train_recs[-1])
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


@pytest.mark.parametrize("content", [b"\xff\xfe- a: 1\n", b"- " * 200 + b"1\n", b"- {a: 1, a: 2}\n"])
def test_a_hostile_calibration_store_is_one_line_not_a_traceback(content, tmp_path, monkeypatch, cli):
    """The local store is a file a user can edit: UTF-16, nesting past the limit and a key given twice are
    refused by the project's one YAML reader, in one line with exit 2 (it was a bare yaml.safe_load)."""
    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path))
    from jitplan.calibration.records import store_path

    store_path(tmp_path).write_bytes(content)
    r = cli("plan", "--gpus", "1xRTX4090")
    assert r.code == 2, r.out + r.err
    assert "calibration store" in r.err and len(r.err.strip().splitlines()) == 1, r.err
