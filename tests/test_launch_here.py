"""The core of `jitplan launch --local/--slurm` (launch/here.py): typed results, no CLI involved."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import plan_for_tiny_recipe

from jitmodel.config import DataConfig, TrainConfig
from jitplan.launch.here import launch_local, write_sbatch
from jitplan.runspec import RunSpec

TINY = {"model": {"variant": "JiT-Tiny/4", "img_size": 16, "in_channels": 1, "num_classes": 10},
        "data": {"kind": "digits", "num_workers": 0}, "batch_per_gpu": 16, "max_steps": 2, "device": "cpu"}


@pytest.fixture(scope="module")
def plan_run():
    return RunSpec.from_plan(plan_for_tiny_recipe(TINY, "2xRTX3060"))


def test_local_dry_run_lists_doctor_then_every_node(plan_run, tmp_path):
    res = launch_local(plan_run, plan_file=Path("plan.yaml"), run_dir=tmp_path / "r", name="r1", dry_run=True)
    assert (res.backend, res.name, res.status, res.run_id) == ("local", "r1", None, None)
    assert res.commands[0] == "jitplan doctor --plan plan.yaml" and len(res.commands) == 2
    assert "--nproc-per-node=2" in res.commands[1] and str(tmp_path / "r" / "plan.yaml") in res.commands[1]
    assert not (tmp_path / "r").exists()  # a dry run stages nothing
    bare = RunSpec.from_train(TrainConfig(data=DataConfig(kind="digits")), cpus=2)
    res = launch_local(bare, plan_file=Path("train.yaml"), run_dir=tmp_path / "b", name="b", dry_run=True)
    assert len(res.commands) == 1 and "train.yaml" in res.commands[0]  # no doctor for a bare config


def test_sbatch_dry_run_and_write(plan_run, tmp_path):
    dry = write_sbatch(plan_run, plan_file=tmp_path / "plan.yaml", out=tmp_path / "job.sbatch", name="r1",
                       run_dir=tmp_path, dry_run=True)
    assert "#SBATCH --gpus-per-node=2" in dry.commands and not (tmp_path / "job.sbatch").exists()
    done = write_sbatch(plan_run, plan_file=tmp_path / "plan.yaml", out=tmp_path / "job.sbatch", name="r1",
                        run_dir=tmp_path)
    assert done.commands == [] and (tmp_path / "job.sbatch").read_text().splitlines() == dry.commands
    assert done.model_dump(exclude_none=True).keys() == {"backend", "name", "run_dir", "commands", "message"}
