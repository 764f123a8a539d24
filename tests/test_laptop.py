"""The laptop path (issue 23): ``plan --gpus cpu`` -> ``launch plan.yaml --local`` -> status, logs, report,
samples and a trajectory, each step's "next:" naming the following command whole; and the messages that
name the fix where a newcomer goes wrong (a probe file for a plan, no plan at all, a data path the plan
gave)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jitplan.cli._output import command_lines
from jitplan.runspec import load_run_spec


def test_plan_for_the_cpu_is_a_run_launch_reads(cli, tmp_path):
    out = tmp_path / "plan.yaml"
    r = cli("plan", "--gpus", "cpu", "--out", str(out))
    assert r.code == 0, r.err  # before: "unknown GPU 'cpu'", exit 2
    run = load_run_spec(out)
    assert run.kind == "train" and run.train.model.variant == "JiT-Tiny/4" and run.train.data.kind == "digits"
    assert run.topology.nproc_per_node == 1 and run.topology.gpus_per_node == 0 and run.train.max_steps == 1400
    assert f"jitplan launch {out} --local" in r.out and "about 1 min on a quiet 2-core box" in r.out


def test_a_probe_file_without_gpus_plans_for_the_cpu(cli, tmp_path):
    hw = tmp_path / "hardware.yaml"
    hw.write_text(yaml.safe_dump({"schema_version": 1, "nodes": 1, "gpus_per_node": 0, "gpu": None,
                                  "host": {"cpus": 2, "ram_bytes": 8 * 10**9}, "source": "probe"}))
    r = cli("plan", "--hardware", str(hw))
    assert r.code == 0, r.err  # before: "describes a machine with no NVIDIA GPU", exit 2
    assert "CPU plan" in r.out and f"jitplan plan --hardware {hw} --out plan.yaml" in r.out
    r = cli("launch", str(hw), "--local")  # a probe file where a plan belongs: say so, and how to plan from it
    assert r.code == 2 and "describes hardware" in r.err and f"jitplan plan --hardware {hw}" in r.err


def test_cpu_plan_on_a_folder(cli, tmp_path):
    from PIL import Image

    for c in ("cat", "dog"):
        (tmp_path / "ds" / "train" / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 40), (i * 40, 0, 0)).save(tmp_path / "ds" / "train" / c / f"{i}.png")
    r = cli("plan", "--gpus", "cpu", "--data", str(tmp_path / "ds"), "--json")
    assert r.code == 0, r.err
    train = yaml.safe_load(r.out)["train"]
    assert train["data"]["kind"] == "imagefolder" and train["data"]["num_images"] == 6
    assert train["model"]["num_classes"] == 2
    r = cli("plan", "--gpus", "cpu", "--data", str(tmp_path))
    assert r.code == 2 and "--data" in r.err and "no train/ folder" in r.err and "data prepare" in r.err


def test_missing_plans_name_the_next_step(cli, tmp_path):
    for argv in (("launch",), ("launch", str(tmp_path / "missing.yaml"), "--local"),
                 ("doctor", "--plan", str(tmp_path / "missing.yaml"))):
        r = cli(*argv)
        assert r.code == 2 and "Traceback" not in r.err
        assert "hint: make one: jitplan plan --gpus" in r.err and "--gpus cpu" in r.err, (argv, r.err)


def test_launch_names_where_a_data_path_came_from(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("plan", "--gpus", "1xRTX3060", "--out", "plan.yaml").code == 0
    r = cli("launch", "plan.yaml", "--local")
    # before: "--data ./data/imagenet: no such folder", a flag the user never passed
    assert r.code == 2 and "--data" not in r.err.splitlines()[0]
    assert "data.path ./data/imagenet (from plan.yaml): no such folder" in r.err


@pytest.mark.parametrize("width", [30, 50, 80, 200])
def test_commands_stay_whole_at_any_width(width):
    cmd = ("jitmodel trajectory --ckpt runs/JiT-Tiny-4-16px-20261207-023447/out/last.pt --class 7 --steps 10 "
           "--out runs/JiT-Tiny-4-16px-20261207-023447/strip.png --html page.html")
    lines = command_lines(cmd, width)
    assert all(len(ln) <= width or " " not in ln.strip(" \\").split(" ", 1)[-1] for ln in lines)
    joined = " ".join(ln.strip().removesuffix("\\").strip() for ln in lines)
    assert joined.split() == cmd.split()  # the shell reads the same words back
    assert all(ln.endswith(" \\") for ln in lines[:-1])


def _jp(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "80", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _next_commands(text: str) -> list[str]:
    """The commands under the last "next:" line (its indented lines), `` \\`` continuations joined."""
    cmds: list[str] = []
    for line in text[text.rindex("next:"):].splitlines()[1:]:
        if not line.startswith("  "):
            break
        if cmds and cmds[-1].endswith("\\"):
            cmds[-1] = cmds[-1][:-1].rstrip() + " " + line.strip()
        else:
            cmds.append(line.strip())
    return cmds


@pytest.mark.slow
def test_laptop_path_end_to_end(tmp_path):
    """plan -> launch -> every command the launch's "next:" names, run as printed (a short run: 30 steps)."""
    r = _jp("jitplan", "plan", "--gpus", "cpu", "--out", "plan.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert _next_commands(r.stdout) == ["jitplan launch plan.yaml --local"]
    p = tmp_path / "plan.yaml"
    p.write_text(p.read_text().replace("max_steps: 1400", "max_steps: 30"))
    r = _jp("jitplan", "launch", "plan.yaml", "--local", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    cmds = _next_commands(r.stderr)
    assert [c.split()[:2] for c in cmds] == [["jitplan", "status"], ["jitplan", "report"], ["jitmodel", "sample"],
                                            ["jitmodel", "trajectory"]]
    run_id = cmds[0].split()[2]
    for cmd in [*cmds, f"jitplan logs {run_id}"]:
        mod, *args = cmd.split()
        done = _jp(mod, *args, cwd=tmp_path)
        assert done.returncode == 0 and "Traceback" not in done.stderr, (cmd, done.stderr[-2000:])
    run_dir = next((tmp_path / "runs").iterdir())
    for name in ("report.html", "grid.png", "strip.png", "trajectory.html"):
        assert (run_dir / name).stat().st_size > 0, name
    assert re.search(r"finished", _jp("jitplan", "status", run_id, cwd=tmp_path).stdout)
