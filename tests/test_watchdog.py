"""The on-instance watchdog: its decisions (pure), and the real loop against real processes laid out as on
the instance (run_remote.sh -> a torchrun stand-in -> a rank): a finished run, a stalled one (stacks in the
log first, then stopped), a time cap (the rank checkpoints on SIGTERM and exits 0)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jitplan.errors import UsageError
from jitplan.launch.watchdog import (
    CONFIG,
    STATE,
    Observation,
    Watchdog,
    WatchdogConfig,
    config_for,
    decide,
    last_step,
    stop_at,
)

REPO = Path(__file__).resolve().parent.parent


def obs(elapsed: float, step: int | None = None, seen: float | None = None, code: int | None = None,
        now: float = 0.0) -> Observation:
    return Observation(now=now, elapsed_s=elapsed, last_step=step, progress_at_s=seen, exit_code=code)


def test_decisions() -> None:
    cfg = WatchdogConfig(step_time_s=1.0, log_every=5, stall_factor=4, startup_grace_s=100, stop_at=5000.0,
                         stop_reason="budget", min_stall_s=0)
    assert decide(cfg, obs(119)) is None  # 100 s grace + 4 x 1 s x 5 steps = 120 s before the first record
    assert decide(cfg, obs(121)).reason == "stalled"
    assert decide(cfg, obs(500, step=40, seen=481)) is None  # a record 19 s ago: fine
    d = decide(cfg, obs(502, step=40, seen=481))
    assert (d.reason, d.stop, d.dump_stacks) == ("stalled", True, True) and "after step 40" in d.message
    assert decide(cfg, obs(10, step=3, seen=9, now=5000.0)).reason == "budget"
    assert decide(cfg, obs(10, step=3, seen=9, code=0)).reason == "finished"
    assert decide(cfg, obs(1e6, step=3, seen=9, code=1)).reason == "failed"  # an exit wins over any cap
    over = decide(WatchdogConfig(), obs(10, step=3, seen=9, code=3))  # the trainer's re-plan: over its budget
    assert over.reason == "budget" and not over.stop and "stopped over budget at step 3" in over.message
    assert not decide(cfg, obs(1e6, code=0)).stop
    assert decide(WatchdogConfig(), obs(1e9)) is None  # no estimate and no cap: only the exit ends it
    floor = WatchdogConfig(step_time_s=0.001, min_stall_s=600)  # an estimate far too fast for this machine
    assert decide(floor, obs(1500, step=3, seen=901)) is None and decide(floor, obs(1502, step=3, seen=901)).stop


def test_caps_keep_a_reserve_for_checkpoint_pull_and_destroy() -> None:
    assert stop_at(max_hours=None, budget_usd=None, dph=1.0, reserve_s=600, since=50.0) == (None, None)
    # $10 at 2 $/h = 5 h; 3 h is sooner; both from the instance's creation, minus the reserve
    at = stop_at(max_hours=3, budget_usd=10, dph=2.0, reserve_s=600, since=100.0)
    assert at == (100 + 3 * 3600 - 600, "max-hours")
    assert stop_at(max_hours=9, budget_usd=10, dph=2.0, reserve_s=600, since=0.0) == (5 * 3600 - 600, "budget")
    assert stop_at(max_hours=0.1, budget_usd=None, dph=None, reserve_s=600, since=7.0) == (7.0, "max-hours")
    with pytest.raises(ValueError, match="price per hour"):
        stop_at(max_hours=None, budget_usd=5, dph=None, reserve_s=0, since=0)
    with pytest.raises(UsageError, match="must be > 0"):
        config_for(None, max_hours=-1)


def test_config_from_a_plan_uses_its_step_time_and_logging_interval() -> None:
    from fakes.plans import make_plan

    plan = make_plan("RTX 3060", 2)
    cfg = config_for(plan, budget_usd=2.0, dph=0.5, since=1000.0)
    assert cfg.step_time_s == plan.estimates.step_time_s and cfg.log_every == plan.train.log_every
    assert (cfg.stop_at, cfg.stop_reason) == (1000.0 + 4 * 3600 - 600, "budget")
    assert config_for(plan.train).step_time_s is None  # a bare TrainConfig: no estimate, no stall check


def test_last_step_reads_the_last_training_record(tmp_path: Path) -> None:
    m = tmp_path / "metrics.jsonl"
    assert last_step(m) is None
    m.write_text('{"step": 3, "loss": 1.0}\n{"step": 4, "loss": 0.9}\n{"step": 4, "event": "replicas"}\n{"ste')
    assert last_step(m) == 4


# ------------------------------------------------------------------------------ real processes
RANK = r'''
import faulthandler, json, os, signal, sys, time
faulthandler.register(signal.SIGUSR1, all_threads=True)  # as jitmodel.train does
mode, steps = sys.argv[1], int(sys.argv[2])
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
os.makedirs("out", exist_ok=True)
def stuck_in_a_collective():
    while not stop:
        time.sleep(0.05)
for step in range(1, steps + 1):
    with open("out/metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": step, "loss": 1.0 / step}) + "\n")
    time.sleep(0.05)
    if stop:
        break
if mode == "stall":
    stuck_in_a_collective()
elif mode == "long":
    while not stop:
        time.sleep(0.05)
        with open("out/metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "loss": 0.5}) + "\n")
        step += 1
if stop:
    open("out/last.pt", "w").write(f"checkpoint at step {step}")
    print(f"stopped by SIGTERM at step {step}", flush=True)
'''
# torchrun's place in the tree: run_remote.sh -> this -> the rank (the watchdog signals the ranks)
AGENT = "import subprocess, sys; sys.exit(subprocess.call([sys.executable, 'rank.py', *sys.argv[1:]]))"


def _start(run_dir: Path, mode: str, steps: int, cfg: WatchdogConfig) -> subprocess.Popen:
    run_dir.mkdir(parents=True)
    (run_dir / "rank.py").write_text(RANK)
    (run_dir / "agent.py").write_text(AGENT)
    (run_dir / CONFIG).write_text(cfg.model_dump_json())
    from jitplan.launch.ssh import run_script_path

    script = run_dir / "run_remote.sh"
    script.write_text(run_script_path().read_text())
    proc = subprocess.Popen(["setsid", "bash", str(script), str(REPO), sys.executable, "agent.py", mode, str(steps)],
                            stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not (run_dir / "pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc


def _state(run_dir: Path) -> dict:
    return json.loads((run_dir / STATE).read_text())


def test_a_finished_run_is_recorded_and_nothing_is_stopped(tmp_path: Path) -> None:
    d = tmp_path / "run"
    proc = _start(d, "finish", 5, WatchdogConfig(step_time_s=1.0, poll_s=0.05))
    dec = Watchdog(d, WatchdogConfig.model_validate_json((d / CONFIG).read_text())).run()
    assert proc.wait(30) == 0
    assert dec.reason == "finished" and _state(d)["state"] == "done" and _state(d)["exit_code"] == 0
    assert _state(d)["step"] == 5 and not (d / "stop").exists()


@pytest.mark.slow
def test_a_stalled_run_dumps_stacks_to_the_log_then_is_stopped(tmp_path: Path) -> None:
    d = tmp_path / "run"
    cfg = WatchdogConfig(step_time_s=0.05, log_every=1, stall_factor=10, startup_grace_s=20, grace_s=20, poll_s=0.05,
                         min_stall_s=0)
    proc = _start(d, "stall", 3, cfg)
    dec = Watchdog(d, cfg).run()
    assert proc.wait(30) == 0  # SIGTERM reached the rank, which checkpointed and exited 0
    log = (d / "train.log").read_text()
    assert dec.reason == "stalled" and (d / "stop").read_text().strip() == "stalled"
    assert "stuck_in_a_collective" in log and log.index("stuck_in_a_collective") < log.index("stopped by SIGTERM")
    assert _state(d)["reason"] == "stalled" and _state(d)["step"] == 3 and (d / "out" / "last.pt").is_file()
    assert "SIGUSR1" in (d / "watchdog.log").read_text()


def test_the_time_cap_stops_the_run_cleanly_with_a_checkpoint(tmp_path: Path) -> None:
    d = tmp_path / "run"
    cfg = WatchdogConfig(step_time_s=10.0, stop_at=time.time() + 1.5, stop_reason="max-hours", poll_s=0.05)
    proc = _start(d, "long", 2, cfg)
    dec = Watchdog(d, cfg).run()
    assert proc.wait(30) == 0
    assert dec.reason == "max-hours" and _state(d)["exit_code"] == 0
    assert (d / "out" / "last.pt").read_text().startswith("checkpoint at step")
    assert "stopped by SIGTERM" in (d / "train.log").read_text()


@pytest.mark.slow
def test_the_trainer_dumps_its_stacks_on_sigusr1() -> None:
    code = ("import signal, os, time, sys\nfrom jitmodel.train import _install_signal_handlers\n"
            "class T: stop_signal = None\n_install_signal_handlers(T())\nos.kill(os.getpid(), signal.SIGUSR1)\n"
            "time.sleep(0.2)\nprint('alive')")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "alive"
    assert "Current thread" in res.stderr or "Thread 0x" in res.stderr, res.stderr


def test_module_doctests() -> None:
    import doctest
    import importlib

    for name in ("jitplan.launch.watchdog", "jitplan.launch.pull", "jitplan.transport.sshcmd"):
        res = doctest.testmod(importlib.import_module(name))
        assert res.failed == 0 and res.attempted > 0, name
