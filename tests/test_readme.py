"""The README says what the program does (issue 23): its first lines are the two set-up-and-go commands,
the test command is the one `.ci/run` runs, and every command in it either runs here as written or is
listed with the reason it cannot (a GPU, a cloud account, a dataset, a run id) and the test that runs it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

# Commands that run here in a second or two, in this order (later ones use earlier ones' files).
RUNS_HERE = (
    "jitplan plan --gpus 2xRTX3060 --host-ram 24GB",
    "jitplan plan --gpus cpu --out plan.yaml",
    "jitplan probe --out hardware.yaml",
    "jitplan plan --hardware hardware.yaml --out plan.yaml",
    "jitplan launch plan.yaml --slurm job.sbatch",
    "jitplan runs",
    "jitplan plan --gpus 1xM4-24GB --task sample",
)
# Everything else, by its start: why it does not run in this test, and where it does run.
ELSEWHERE = {
    "pip install": "installs packages: .ci/run runs the README's install lines on a clean clone",
    "python -m pytest": "the test suite itself (.ci/run)",
    "jitplan demo": "a minute of training: tests/test_first_ten.py and tests/test_demo.py (slow)",
    "jitplan launch plan.yaml --local": "trains: tests/test_laptop.py::test_laptop_path_end_to_end (slow)",
    "jitplan launch plan.yaml --ssh": "needs an SSH host: tests/test_ssh.py against a local sshd (slow)",
    "jitplan launch plan.yaml --vast": "rents a GPU: tests/test_vast_e2e.py against the fake Vast.ai server",
    "jitplan doctor --plan plan.yaml --data /data/imagenet": "needs ImageNet at /data: tests/test_doctor.py",
    "jitplan data prepare /data/": "needs a dataset at /data: tests/test_dataset.py",
    "jitplan data verify /data/": "needs a dataset at /data: tests/test_dataset.py",
    "jitplan status RUN": "needs a run id: tests/test_laptop.py runs status/logs/report on a real run",
    "jitplan logs RUN": "needs a run id: tests/test_laptop.py",
    "jitplan pull RUN": "needs a cloud run: tests/test_pull.py",
    "jitplan stop RUN": "needs a cloud run: tests/test_vast_lifecycle.py",
    "jitplan watch RUN": "needs a detached cloud run: tests/test_watch.py",
    "jitplan calibrate RUN": "needs a finished run: tests/test_planner_calibration.py",
    "jitplan report RUN": "needs a run id: tests/test_laptop.py",
    "jitplan compare ": "trains three arms for minutes: tests/test_compare.py (slow)",
    "jitplan plan --gpus 2xRTX4090 --model my_net.py": "a file of yours: tests/test_models_launch.py plans "
                                                       "examples/models/my_denoiser.py for 2 GPUs (slow: a trace)",
    "jitplan plan --gpus 2xRTX4090 --recipe dit-": "traces the network (DiT-XL/2: ~20 s): "
                                                  "tests/test_models_plan.py plans a family recipe (slow)",
    "jitplan plan --gpus cpu --model examples/": "builds the network on meta (imports torch): "
                                                "tests/test_models_launch.py",
    "jitplan launch cpu.yaml --local": "trains: tests/test_models_launch.py, the user's model on the digits (slow)",
    "python -m jitmodel.run --nproc-per-node 2": "a plan for two GPUs: tests/test_launch_torchrun.py (CPU)",
    "jitmodel sample --ckpt runs/<run>/": "needs a checkpoint: tests/test_laptop.py draws from its run",
    "jitmodel trajectory --ckpt runs/<run>/": "needs a checkpoint: tests/test_laptop.py",
    "torchrun --nproc-per-node 2 -m jitmodel evaluate": "needs a checkpoint and FID reference stats: "
                                                       "tests/test_evaluate.py",
}


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def readme_commands(text: str = README) -> list[str]:
    """Every command in the README's bash blocks: comments dropped, ``&&`` and `` ; `` chains split."""
    out: list[str] = []
    for block in code_blocks(text):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            for part in re.split(r"\s&&\s|\s;\s", line):
                if part.strip():
                    out.append(" ".join(part.split()))
    return out


def reason_for(cmd: str) -> str | None:
    return next((why for start, why in ELSEWHERE.items() if cmd.startswith(start)), None)


def test_the_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    first = code_blocks(README)[0].strip().splitlines()
    assert README.startswith("# jitplan\n\n```bash\n") and len(first) == 2
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert first[1] in ci, "the README's test command must be the line .ci/run runs"
    assert '-m "not slow"' in first[1] and "torch-fidelity" in first[1]
    assert ci.index(first[1]) < ci.index("python -m pytest -q -m slow")  # then the slow ones: every test runs
    for program in ("openssh-server", "rsync", "chromium", "tmux"):
        assert program in README


def test_every_readme_command_runs_here_or_says_where_it_runs():
    unplaced = [c for c in readme_commands() if c not in RUNS_HERE and reason_for(c) is None]
    assert not unplaced, f"README commands neither run by this test nor given a reason: {unplaced}"
    assert set(RUNS_HERE) <= set(readme_commands()), set(RUNS_HERE) - set(readme_commands())


def test_docs_agree_with_the_program():
    assert "runs/.../last.pt" not in README  # the file lives at runs/<run>/out/last.pt
    template = (ROOT / "jitplan/templates/compare/digits.yaml").read_text()
    named = re.search(r"`(jitplan compare \S+)", template).group(1)
    assert any(c.startswith(named + " ") for c in readme_commands())


@pytest.mark.parametrize("cmd", RUNS_HERE)
def test_readme_command_runs_as_written(cmd, cli, tmp_path_factory, monkeypatch):
    work = tmp_path_factory.getbasetemp() / "readme-commands"
    work.mkdir(exist_ok=True)
    monkeypatch.chdir(work)
    argv = shlex.split(cmd)
    assert argv[0] == "jitplan"
    r = cli(*argv[1:])
    assert r.code == 0, (cmd, r.err)
    assert "Traceback" not in r.err
