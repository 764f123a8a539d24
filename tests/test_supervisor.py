"""Supervision of a local run: classification (pure) and real recoveries of the real trainer on the CPU."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml

from jitplan.launch.supervisor import Outcome, checkpoint_step, classify, fewer_workers, supervise
from jitplan.launch.torchrun import TorchrunSpec
from jitplan.runs.registry import Registry

OOM_LINE = "RuntimeError: DataLoader worker (pid 4242) is killed by signal: Killed."


# ------------------------------------------------------------------ pure parts

@pytest.mark.parametrize(("rc", "log", "before", "after", "stop", "want"), [
    (0, "done", None, 40, False, Outcome.finished),
    (0, "", 8, 16, False, Outcome.terminated),  # checkpointed on SIGTERM before max_steps
    (0, "", 16, 16, False, Outcome.finished),  # clean exit without progress: epochs ran out
    (1, OOM_LINE, None, 8, False, Outcome.worker_oom),
    (1, "RuntimeError: DataLoader worker (pid(s) 12, 13) exited unexpectedly", 4, 8, False, Outcome.worker_oom),
    (-9, "", 4, 8, False, Outcome.killed),
    (1, "SignalException: Process 77 got signal: 15", 4, 8, False, Outcome.terminated),
    (1, "ValueError: loss is NaN", 4, 8, False, Outcome.failed),
    (1, OOM_LINE, 4, 8, True, Outcome.stopped),  # a stop the user asked for is never restarted
])
def test_classify(rc, log, before, after, stop, want):
    assert classify(rc, log, step_before=before, step_after=after, max_steps=40, stop_requested=stop) is want


def test_fewer_workers_halves_down_to_zero():
    seq = [12]
    while seq[-1]:
        seq.append(fewer_workers(seq[-1]))
    assert seq == [12, 6, 3, 1, 0]
    with pytest.raises(ValueError, match="-1"):
        fewer_workers(-1)


def test_checkpoint_step_reads_step_named_files(tmp_path):
    assert checkpoint_step(tmp_path) is None
    (tmp_path / "ckpt").mkdir()
    for name in ("0000004.pt", "0000012.pt", "epoch-0001.pt", "0000008.pt.tmp"):
        (tmp_path / "ckpt" / name).write_bytes(b"")
    assert checkpoint_step(tmp_path) == 12


def test_supervise_rejects_bad_settings(tmp_path):
    spec = TorchrunSpec(config=str(tmp_path / "train.yaml"))
    with pytest.raises(ValueError, match="max_restarts"):
        supervise(tmp_path, spec, max_restarts=-1)
    with pytest.raises(ValueError, match="resume"):
        supervise(tmp_path, spec.model_copy(update={"resume": False}))


# ------------------------------------------------------------------ the real trainer

def _tiny_config(run_dir: Path, *, workers: int, max_steps: int, every: int) -> Path:
    cfg = {
        "model": {"variant": "JiT-Tiny/4", "img_size": 16, "in_channels": 1, "num_classes": 10},
        "data": {"kind": "digits", "num_workers": workers, "persistent_workers": False},
        "batch_per_gpu": 16, "max_steps": max_steps, "optim": {"warmup_epochs": 0},
        "checkpoint": {"every_steps": every}, "output_dir": "out", "log_every": 2, "device": "cpu",
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def registry(tmp_path, monkeypatch):
    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "home"))
    reg = Registry()
    return reg


def _sink(reg: Registry, run_id: str):
    return lambda kind, message, data: reg.add_event(run_id, kind, message, **data)


def _trainer_pid(run_dir: Path) -> int | None:
    torchrun = psutil.Process(int((run_dir / "pid").read_text()))
    for child in torchrun.children(recursive=True):
        if "jitmodel.train" in " ".join(child.cmdline()):
            return child.pid
    return None


@pytest.mark.slow
def test_a_sigtermed_then_oom_killed_run_recovers_both_times_from_its_checkpoints(tmp_path, registry, monkeypatch):
    """The real trainer, supervised: try 1 is SIGTERM'd (a preempting host) after a checkpoint -> resumed
    as is; try 2 loses a DataLoader worker to an injected SIGKILL (the OOM killer's signature) -> the
    workers are re-planned 2 -> 1 and it resumes from the same checkpoint; try 3 finishes."""
    run_dir = tmp_path / "run"
    cfg = _tiny_config(run_dir, workers=2, max_steps=12, every=3)  # DataLoader workers must survive the stop
    rid = registry.create_run("recover", "local", run_dir=run_dir)
    box: dict = {}
    t = threading.Thread(target=lambda: box.update(res=supervise(
        run_dir, TorchrunSpec(config=str(cfg), omp_num_threads=1), max_restarts=2, events=_sink(registry, rid),
        poll_s=0.2)))
    t.start()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not (checkpoint_step(run_dir / "out") or 0) >= 3:
        time.sleep(0.1)
    pid = _trainer_pid(run_dir)
    assert pid is not None
    # From the next try on, a worker SIGKILLs itself while num_workers >= 2 (read when a try starts).
    monkeypatch.setenv("JITMODEL_INJECT_WORKER_KILL", "2")
    os.kill(pid, signal.SIGTERM)  # as a preempting host would: the trainer checkpoints and exits 0
    t.join(400)
    res = box["res"]
    log = (run_dir / "train.log").read_text()
    assert res.status == "finished", (res, log[-3000:])
    assert res.outcomes == [Outcome.terminated, Outcome.worker_oom, Outcome.finished]
    assert res.final_step == 12 and res.num_workers == 1
    assert yaml.safe_load(cfg.read_text())["data"]["num_workers"] == 1  # the rewritten config
    ev = registry.events(rid)
    assert [e.kind for e in ev] == ["created", "started", "terminated", "resumed", "started", "oom_detected",
                                    "replanned_workers", "resumed", "started", "finished"]
    resumed = [e.data["step"] for e in ev if e.kind == "resumed"]
    assert 3 <= resumed[0] < 12 and resumed[1] >= resumed[0]  # nothing checkpointed is ever lost
    replan = next(e for e in ev if e.kind == "replanned_workers")
    assert (replan.data["from"], replan.data["to"]) == (2, 1)
    assert "stopped by SIGTERM" in log and "is killed by signal" in log


FAKE_TRAINER = """
import os, pathlib, signal, sys, time
mode = os.environ["FAKE_TRAINER_MODE"]
if mode == "oom":  # what torch prints when the OOM killer takes a DataLoader worker
    print("RuntimeError: DataLoader worker (pid 4242) is killed by signal: Killed.", flush=True)
    sys.exit(1)
signal.signal(signal.SIGTERM, lambda *a: (print("stopped by SIGTERM", flush=True), sys.exit(0)))
pathlib.Path("out/ckpt").mkdir(parents=True, exist_ok=True)
pathlib.Path("out/ckpt/0000003.pt").write_bytes(b"")
print("step 3", flush=True)
time.sleep(120)
"""


def _fake_spec(tmp_path: Path, monkeypatch, mode: str) -> TorchrunSpec:
    """torchrun running a stand-in trainer module: the supervisor's loop without a minute of real training."""
    (tmp_path / "fakes").mkdir()
    (tmp_path / "fakes" / "fake_trainer.py").write_text(FAKE_TRAINER)
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path / 'fakes'}:{Path(__file__).resolve().parent.parent}")
    monkeypatch.setenv("FAKE_TRAINER_MODE", mode)
    cfg = _tiny_config(tmp_path / "run", workers=2, max_steps=8, every=2)
    return TorchrunSpec(config=str(cfg), module="fake_trainer", omp_num_threads=1)


@pytest.mark.slow
def test_restarts_are_bounded(tmp_path, registry, monkeypatch):
    spec = _fake_spec(tmp_path, monkeypatch, "oom")
    rid = registry.create_run("bounded", "local", run_dir=tmp_path / "run")
    res = supervise(tmp_path / "run", spec, max_restarts=1, events=_sink(registry, rid), poll_s=0.1)
    assert res.status == "failed" and res.restarts == 1 and res.num_workers == 1
    assert res.outcomes == [Outcome.worker_oom] * 2
    kinds = [e.kind for e in registry.events(rid)]
    assert kinds.count("replanned_workers") == 1 and kinds[-1] == "gave_up"
    assert "--max-restarts 1" in registry.events(rid)[-1].message


@pytest.mark.slow
def test_time_budget_stops_gracefully_and_counts_as_finished(tmp_path, registry, monkeypatch):
    spec = _fake_spec(tmp_path, monkeypatch, "sleep")
    res = supervise(tmp_path / "run", spec, max_restarts=2, poll_s=0.1, time_budget_s=12, grace_s=20)
    assert res.status == "finished" and res.final_step == 3 and "time budget" in res.message
    assert res.outcomes == [Outcome.stopped]
    assert "stopped by SIGTERM" in (tmp_path / "run" / "train.log").read_text()


def _rewrite_workers(path, workers: int) -> None:
    """What the supervisor does after a worker OOM: one typed path for plans and bare configs."""
    from jitplan.runspec import load_run_spec, save_run_spec

    save_run_spec(load_run_spec(path).with_workers(workers), path)


@pytest.mark.slow
def test_rewrite_workers_goes_through_the_planner_for_a_plan(tmp_path):
    from jitmodel.config import TrainConfig
    from jitplan.hardware.spec import hardware_from_flags
    from jitplan.planner.plan import make_plan
    from jitplan.schemas import PlanOptions, load_plan, load_recipe, save_plan

    plan = make_plan(hardware_from_flags("1xRTX3060", host_ram="24GB"), load_recipe("JiT-B/16"), PlanOptions())
    assert plan.workers.per_rank >= 2
    path = tmp_path / "plan.yaml"
    save_plan(plan, path)
    _rewrite_workers(path, 1)
    new = load_plan(path)
    assert new.train.data.num_workers == 1 and new.workers.per_rank == 1
    assert new.workers.reasons[0].startswith("re-planned")
    # a config whose worker count is above the plan's decision is still lowered
    tiny = TrainConfig.model_validate({"data": {"kind": "digits", "num_workers": 6}})
    save_plan(plan.model_copy(update={"train": tiny, "workers": plan.workers.model_copy(update={"per_rank": 1})}),
              path)
    _rewrite_workers(path, 3)
    assert load_plan(path).train.data.num_workers == 3
    bare = _tiny_config(tmp_path / "bare", workers=1, max_steps=4, every=2)
    _rewrite_workers(bare, 0)
    data = yaml.safe_load(bare.read_text())["data"]
    assert (data["num_workers"], data["prefetch_factor"], data["persistent_workers"]) == (0, None, False)
