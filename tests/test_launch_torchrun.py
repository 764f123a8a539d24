"""Plan -> torchrun argv, checked with torchrun's own parser; the sbatch template rendered and bash -n'd."""

from __future__ import annotations

import shlex
import shutil
import subprocess

import pytest
from pydantic import ValidationError

from jitplan.launch.slurm import fill, render_sbatch
from jitplan.launch.torchrun import (
    TorchrunSpec,
    launcher_argv,
    node_command,
    node_commands,
    plan_command,
    shell_line,
    spec_for_run,
    torchrun_argv,
)


def _parse(argv: list[str]):
    from torch.distributed.run import get_args_parser  # lazy: only the tests need torch here

    return get_args_parser().parse_args(argv)


@pytest.mark.slow
def test_single_node_is_standalone_with_the_trainer_module():
    spec = TorchrunSpec(nproc_per_node=2, config="/r/plan.yaml", omp_num_threads=4)
    cmd = node_command(spec)
    assert cmd.argv[:3] == ["python", "-m", "jitmodel.run"]
    a = _parse(cmd.argv[3:])
    assert a.standalone and a.nnodes == "1" and a.nproc_per_node == "2" and a.max_restarts == 0
    assert a.module and a.training_script == "jitmodel.train"
    assert a.training_script_args == ["--config", "/r/plan.yaml", "--resume", "auto"]
    assert cmd.env == {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "4"}


def test_multi_node_renders_one_c10d_command_per_node_with_node0_hosting():
    spec = TorchrunSpec(nnodes=3, nproc_per_node=8, rdzv_endpoint="10.1.2.3:29400", rdzv_id="run-7",
                        config="plan.yaml")
    cmds = node_commands(spec)
    assert [c.node_rank for c in cmds] == [0, 1, 2]
    parsed = [_parse(c.argv[3:]) for c in cmds]
    for a in parsed:
        assert (a.nnodes, a.nproc_per_node, a.rdzv_backend) == ("3", "8", "c10d")
        assert (a.rdzv_endpoint, a.rdzv_id, a.standalone) == ("10.1.2.3:29400", "run-7", False)
    assert [a.rdzv_conf for a in parsed] == ["is_host=1", "is_host=0", "is_host=0"]
    assert cmds[1].argv == cmds[2].argv != cmds[0].argv  # c10d assigns ranks; only node 0 hosts the store


def test_shell_line_round_trips_hostile_words():
    spec = TorchrunSpec(config="/runs/a b; rm -rf ~/plan.yaml", python="/opt/my env/bin/python",
                        env={"JITPLAN_NOTE": "x'y \"z\" $(id)"})
    cmd = node_command(spec)
    words = shlex.split(shell_line(cmd))
    assert words[0] == "env" and "JITPLAN_NOTE=x'y \"z\" $(id)" in words
    assert words[words.index("/opt/my env/bin/python"):] == cmd.argv


@pytest.mark.parametrize(("kw", "msg"), [
    ({"nnodes": 2}, "rendezvous endpoint"),
    ({"rdzv_endpoint": "host"}, "host:port"),
    ({"rdzv_endpoint": "h:70000"}, "1..65535"),
    ({"rdzv_id": "a b"}, "rendezvous id"),
    ({"env": {"A-B": "1"}}, "environment variable"),
    ({"nproc_per_node": 0}, "greater than 0"),
])
def test_bad_specs_raise_with_the_values(kw, msg):
    with pytest.raises(ValidationError, match=msg):
        TorchrunSpec(**kw)
    with pytest.raises(ValueError, match="node rank 2"):
        launcher_argv(TorchrunSpec(), 2)


def _plan(spec: str, **opts):
    from jitplan.hardware.spec import hardware_from_flags
    from jitplan.planner.plan import make_plan
    from jitplan.schemas import PlanOptions, load_recipe

    return make_plan(hardware_from_flags(spec, cpus=32), load_recipe("JiT-B/16"), PlanOptions(**opts))


def test_spec_for_run_reads_the_plans_topology():
    from jitplan.runspec import RunSpec

    plan = _plan("2x4xH100", rdzv_endpoint="head:29400")
    plan = plan.model_copy(update={"launch": plan.launch.model_copy(update={"env": {"NCCL_P2P_DISABLE": "1"}})})
    s = spec_for_run(RunSpec.from_plan(plan), config="plan.yaml", rdzv_id="r1")
    assert (s.nnodes, s.nproc_per_node, s.rdzv_endpoint, s.omp_num_threads) == (2, 4, "head:29400", 8)
    assert s.env == {"NCCL_P2P_DISABLE": "1"}
    over = spec_for_run(RunSpec.from_plan(plan), config="p.yaml", rdzv_endpoint="10.0.0.9:1234", env={"X": "1"})
    assert over.rdzv_endpoint == "10.0.0.9:1234" and over.env == {"NCCL_P2P_DISABLE": "1", "X": "1"}


def test_spec_for_a_bare_config_is_one_node_of_world_size_ranks():
    from jitmodel.config import DataConfig, TrainConfig
    from jitplan.runspec import RunSpec

    cpu = spec_for_run(RunSpec.from_train(TrainConfig(data=DataConfig(kind="digits")), cpus=2), config="p.yaml")
    assert (cpu.nnodes, cpu.nproc_per_node, cpu.omp_num_threads) == (1, 1, 2)
    two = spec_for_run(RunSpec.from_train(TrainConfig(data=DataConfig(kind="digits"), world_size=2), cpus=None),
                       config="p.yaml")
    assert (two.nnodes, two.nproc_per_node, two.omp_num_threads) == (1, 2, None)


@pytest.mark.parametrize("gpus", ["8xH100", "2x8xH100"])
def test_the_plan_shows_the_command_the_launcher_runs(gpus):
    """One authority on the torchrun flags: the plan's command is torchrun_argv of the launcher's own spec."""
    from jitplan.runspec import RunSpec

    plan = _plan(gpus, rdzv_endpoint="10.0.0.1:29400")
    spec = spec_for_run(RunSpec.from_plan(plan), config="plan.yaml", rdzv_id=plan.launch.rdzv_id or "jitplan")
    assert plan_command(plan.launch) == torchrun_argv(spec)
    assert node_command(spec).argv[3:] == plan_command(plan.launch)[1:]  # python -m jitmodel.run <same flags>


def test_sbatch_renders_and_passes_bash_n(tmp_path):
    spec = TorchrunSpec(nnodes=2, nproc_per_node=8, rdzv_endpoint="head:29400", config="/w d/plan.yaml",
                        python="/opt/venv/bin/python", omp_num_threads=8)
    text = render_sbatch(spec, job_name="jit-b-16", workdir="/w d", cpus_per_task=64, gpus_per_node=8,
                         time_limit="2-00:00:00")
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --cpus-per-task=64", "#SBATCH --time=2-00:00:00", "export OMP_NUM_THREADS=8"):
        assert line in text.splitlines()
    assert "{{" not in text and "srun --kill-on-bad-exit=1 /opt/venv/bin/python -m jitmodel.run" in text
    assert "--config '/w d/plan.yaml' --resume auto" in text and "cd '/w d'" in text
    # the torchrun part parses with torchrun's parser once the shell has expanded it
    line = text[text.index("-m jitmodel.run") + len("-m jitmodel.run"):].replace("\\\n", " ")
    words = shlex.split(line.replace('"${head_node}:29400"', "node01:29400").replace('"${SLURM_JOB_ID}"', "42"))
    a = _parse(words)
    assert (a.nnodes, a.nproc_per_node, a.rdzv_backend, a.rdzv_endpoint, a.rdzv_id) == ("2", "8", "c10d",
                                                                                       "node01:29400", "42")
    script = tmp_path / "job.sbatch"
    script.write_text(text)
    if shutil.which("bash"):
        assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    cpu = render_sbatch(TorchrunSpec(config="p.yaml"), job_name="t", workdir="/w", cpus_per_task=4, gpus_per_node=0)
    assert "--gpus-per-node" not in cpu


def test_sbatch_rejects_bad_values():
    spec = TorchrunSpec(config="p.yaml")
    with pytest.raises(ValueError, match="job name"):
        render_sbatch(spec, job_name="a;b", workdir="/w", cpus_per_task=1, gpus_per_node=0)
    with pytest.raises(ValueError, match="time limit"):
        render_sbatch(spec, job_name="a", workdir="/w", cpus_per_task=1, gpus_per_node=0, time_limit="$(x)")
    with pytest.raises(ValueError, match="missing values"):
        fill("{{A}} {{B}}", {"A": "1"})


def test_the_docs_torchrun_example_runs_and_prints_one_line_per_node(capsys):
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "launch.md").read_text()
    block = text.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(block, "docs/launch.md", "exec"), {})
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all("--rdzv-endpoint=10.0.0.1:29400" in ln for ln in lines)
    assert "is_host=1" in lines[0] and "is_host=0" in lines[1]


def test_module_docstring_examples_pass():
    import doctest

    from jitplan.launch import local, slurm, ssh, supervisor, torchrun

    for mod in (torchrun, slurm, supervisor, local, ssh):
        failed, _ = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert failed == 0, mod.__name__


@pytest.mark.slow
def test_launch_and_demo_commands_import_without_torch():
    import subprocess
    import sys

    code = ("import sys, jitplan.cli.launch, jitplan.cli.demo, jitplan.launch.ssh, jitplan.launch.supervisor; "
            "bad = [m for m in ('torch', 'numpy', 'vastai') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
