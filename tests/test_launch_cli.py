"""``jitplan launch`` through the CLI: usage errors, dry runs (parsed with torchrun's parser), Slurm, a real
supervised local run, the doctor preflight, and a sentinel API key that must never leak."""

from __future__ import annotations

import functools
import json
import shlex
import sqlite3
import subprocess
from pathlib import Path

import pytest
import yaml

SENTINEL = "sk-SENTINEL-h6b-7f3a9c"

TINY_TRAIN = {
    "model": {"variant": "JiT-Tiny/4", "img_size": 16, "in_channels": 1, "num_classes": 10},
    "data": {"kind": "digits", "num_workers": 0, "persistent_workers": False, "prefetch_factor": None},
    "batch_per_gpu": 16, "max_steps": 4, "optim": {"warmup_epochs": 0}, "checkpoint": {"every_steps": 2},
    "log_every": 2, "device": "cpu",
}


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VAST_API_KEY", SENTINEL)
    monkeypatch.chdir(tmp_path)


@functools.cache
def _plan_text(nodes: int) -> str:
    from conftest import plan_for_tiny_recipe

    from jitplan.schemas import plan_to_yaml

    plan = plan_for_tiny_recipe(TINY_TRAIN, nodes=nodes, rdzv_endpoint="10.0.0.1:29400")
    assert plan.train.effective_batch() == TINY_TRAIN["batch_per_gpu"] and plan.train.data.num_workers == 0
    return plan_to_yaml(plan)


def tiny_plan(tmp_path: Path, nodes: int = 1) -> Path:
    """A real plan (for 1-2 nodes of 1 x RTX 3060), made by the planner for the tiny CPU recipe on the digits."""
    path = tmp_path / "plan.yaml"
    path.write_text(_plan_text(nodes))
    return path


def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(TINY_TRAIN))
    return path


def _torchrun_args(line: str):
    from torch.distributed.run import get_args_parser

    words = shlex.split(line)
    return get_args_parser().parse_args(words[words.index("jitmodel.run") + 1:])


# ------------------------------------------------------------------ usage

@pytest.mark.parametrize("argv", [
    ["plan.yaml"],
    ["plan.yaml", "--local", "--ssh", "root@h"],
    ["plan.yaml", "--local", "--max-restarts", "-1"],
])
@pytest.mark.slow
def test_usage_errors_exit_2_with_one_line(cli, tmp_path, argv):
    tiny_plan(tmp_path)
    r = cli("launch", *argv)
    assert r.code == 2 and r.err.startswith("Error: ") and "Traceback" not in r.err


def test_missing_or_bad_plan_file_is_exit_2(cli, tmp_path):
    r = cli("launch", "nope.yaml", "--local")
    assert r.code == 2 and "not found" in r.err
    (tmp_path / "bad.yaml").write_text("train: [1, 2\n")
    assert cli("launch", "bad.yaml", "--local").code == 2
    (tmp_path / "other.yaml").write_text("a: 1\n")
    r = cli("launch", "other.yaml", "--local")
    assert r.code == 2 and "neither a plan nor a TrainConfig" in r.err


def test_ssh_target_errors_exit_2(cli, tmp_path):
    tiny_plan(tmp_path)
    assert cli("launch", "plan.yaml", "--ssh", "nohost", "--dry-run").code == 2
    r = cli("launch", "plan.yaml", "--ssh", "root@h", "--identity", "missing-key", "--dry-run")
    assert r.code == 2 and "no such key file" in r.err


def test_multi_node_plan_over_one_ssh_host_is_refused(cli, tmp_path):
    tiny_plan(tmp_path, nodes=2)
    r = cli("launch", "plan.yaml", "--ssh", "root@h", "--dry-run")
    assert r.code == 2 and "2 nodes" in r.err


# ------------------------------------------------------------------ dry runs

@pytest.mark.slow
def test_local_dry_run_prints_doctor_and_a_parsable_torchrun_line_and_runs_nothing(cli, tmp_path):
    tiny_plan(tmp_path)
    r = cli("launch", "plan.yaml", "--local", "--dry-run", "--run-dir", str(tmp_path / "my run"))
    assert r.code == 0, r.err
    lines = r.out.strip().splitlines()
    assert lines[0] == "jitplan doctor --plan plan.yaml"
    assert lines[1].startswith(f"cd {shlex.quote(str(tmp_path / 'my run'))} && env ")
    a = _torchrun_args(lines[1].split(" && ", 1)[1])
    assert a.standalone and a.training_script == "jitmodel.train"
    assert a.training_script_args == ["--config", str(tmp_path / "my run" / "plan.yaml"), "--resume", "auto"]
    assert not (tmp_path / "my run").exists() and not (tmp_path / "home" / "runs.db").exists()


def test_two_node_plan_dry_run_renders_one_command_per_node(cli, tmp_path):
    tiny_plan(tmp_path, nodes=2)
    r = cli("launch", "plan.yaml", "--local", "--dry-run", "--no-doctor", "--json")
    assert r.code == 0, r.err
    cmds = json.loads(r.out)["commands"]
    assert len(cmds) == 2
    parsed = [_torchrun_args(c.split(" && ", 1)[1]) for c in cmds]
    assert [(a.nnodes, a.rdzv_backend, a.rdzv_endpoint, a.rdzv_conf) for a in parsed] == [
        ("2", "c10d", "10.0.0.1:29400", "is_host=1"), ("2", "c10d", "10.0.0.1:29400", "is_host=0")]


def test_ssh_dry_run_lists_every_step_safely_quoted(cli, tmp_path):
    tiny_plan(tmp_path)
    r = cli("launch", "plan.yaml", "--ssh", "ubuntu@10.0.0.5:2222", "--remote-dir", "/srv/a b; touch x",
            "--create-env", "--dry-run", "--json")
    assert r.code == 0, r.err
    assert SENTINEL not in r.out + r.err  # VAST_API_KEY is set in this test's environment
    cmds = json.loads(r.out)["commands"]
    words = [shlex.split(c) for c in cmds]
    assert [w[0] for w in words] == ["ssh", "rsync", "rsync", "ssh", "ssh", "ssh", "ssh", "ssh"]
    for w in words:
        if w[0] == "ssh":
            assert w[w.index("ubuntu@10.0.0.5") + 1] == "--" and "StrictHostKeyChecking=yes" in w
            assert w[-1].startswith("sh -c ")
    start = shlex.split(shlex.split(words[-2][-1])[2])  # the remote script, word by word
    assert "/srv/a b; touch x/runs/" in " ".join(start)
    assert start[:3] == ["setsid", "nohup", "bash"] and start[start.index("env") + 2].endswith("venv/bin/python")


def test_slurm_writes_a_script_that_bash_accepts(cli, tmp_path):
    tiny_plan(tmp_path, nodes=2)
    r = cli("launch", "plan.yaml", "--slurm", "job.sbatch")
    assert r.code == 0, r.err
    text = (tmp_path / "job.sbatch").read_text()
    assert "#SBATCH --nodes=2" in text and "#SBATCH --gpus-per-node=1" in text and "srun" in text
    assert subprocess.run(["bash", "-n", "job.sbatch"]).returncode == 0
    assert "sbatch job.sbatch" in r.out


def test_vast_dry_run_is_refused_before_any_request(cli, tmp_path):
    tiny_plan(tmp_path)
    r = cli("launch", "plan.yaml", "--vast", "--dry-run")
    assert r.code == 2 and "--vast --dry-run" in r.err


# ------------------------------------------------------------------ real local runs

def test_doctor_failure_stops_the_launch_before_torchrun(cli, tmp_path, monkeypatch):
    from jitplan.doctor.finding import DoctorReport, Finding

    tiny_plan(tmp_path)
    seen = {}

    def fake_doctor(**kw):  # the one side effect patched: the preflight's verdict
        seen.update(kw)
        return DoctorReport(findings=[Finding(id="C7", level="fail", title="/dev/shm", found="64 MB")])

    monkeypatch.setattr("jitplan.launch.here.run_doctor", fake_doctor)
    r = cli("launch", "plan.yaml", "--local", "--run-dir", "run")
    assert r.code == 1 and "doctor: 1 check(s) failed: C7" in r.err and "--no-doctor" in r.err
    assert Path(seen["plan_path"]).name == "plan.yaml"
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_local_launch_trains_records_and_never_leaks_the_key(cli, tmp_path):
    plan = tiny_plan(tmp_path)
    r = cli("launch", str(plan), "--local", "--no-doctor", "--run-dir", "run one", "--json")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert res["status"] == "finished" and res["final_step"] == 4
    run = tmp_path / "run one"
    assert (run / "out" / "last.pt").is_file() and "step 4" in (run / "train.log").read_text()
    saved = yaml.safe_load((run / "plan.yaml").read_text())
    assert saved["train"]["output_dir"] == "out"
    r2 = cli("launch", str(plan), "--local", "--dry-run")
    # the key is in the environment of every command above; it must not appear anywhere we wrote
    texts = [r.out, r.err, r2.out, r2.err] + [p.read_text(errors="replace") for p in run.rglob("*")
                                               if p.is_file() and p.suffix in (".yaml", ".log", ".jsonl", "")]
    with sqlite3.connect(tmp_path / "home" / "runs.db") as con:
        texts += [repr(row) for t in ("runs", "events") for row in con.execute(f"SELECT * FROM {t}")]
        kinds = [k for (k,) in con.execute("SELECT kind FROM events ORDER BY id")]
    assert not [t for t in texts if SENTINEL in t]
    assert kinds[-2:] == ["finished", "status"] and "started" in kinds


def test_a_bare_train_config_is_launched_as_is(cli, tmp_path):
    tiny_config(tmp_path)
    r = cli("launch", "train.yaml", "--local", "--dry-run", "--run-dir", "bare", "--json")
    assert r.code == 0, r.err
    (line,) = json.loads(r.out)["commands"]  # no doctor line: there is no plan to check
    a = _torchrun_args(line.split(" && ", 1)[1])
    assert a.training_script_args[:2] == ["--config", str(tmp_path / "bare" / "train.yaml")]


@pytest.mark.slow
def test_trainer_input_error_is_one_voice_exit_2(cli, tmp_path) -> None:
    """A config jitplan accepts but the trainer refuses (a dataset folder holding no train/): the user sees the
    trainer's own Error: line once, then where the log is; exit 2, no torchrun traceback."""
    (tmp_path / "empty").mkdir()
    train = dict(TINY_TRAIN, kind="train", data={"kind": "imagefolder", "path": str(tmp_path / "empty"),
                                                 "num_workers": 0})
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(train))
    r = cli("launch", "train.yaml", "--local", "--no-doctor", "--max-restarts", "0")
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert r.code == 2 and "Traceback" not in r.err and "ChildFailedError" not in r.err, r.err[-800:]
    assert sum(ln.startswith("Error: ") for ln in lines) == 1, r.err[-800:]
    assert lines[-1].startswith("hint: run ") and "train.log" in lines[-1]
