"""The first ten minutes, as a new user sees them: the README's commands in a real terminal (tmux) at 80
and 120 columns, asserted on the captured screen: no text cut with an ellipsis, no traceback, and the next
step named. Skips with a reason when tmux is missing (CI installs it: .ci/run)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")]


def readme_first_commands() -> list[str]:
    """The ``jitplan ...`` commands of the README's first code block, in order."""
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    first = block.strip().splitlines()[0]
    return [c.strip() for c in first.split("&&") if c.strip().startswith("jitplan ")]


class Terminal:
    """One tmux server on a private socket; each command runs in a fresh window of the given size."""

    def __init__(self, workdir: Path, env: dict[str, str]):
        self.sock, self.workdir, self.env = f"jitplan-test-{uuid.uuid4().hex[:8]}", workdir, env
        self.started = False

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.sock, *args], capture_output=True, text=True, env=self.env,
                              check=True).stdout

    def run(self, command: str, width: int, timeout: float = 120.0) -> tuple[int, str]:
        """Run ``command`` in bash in a ``width``-column terminal; return (exit code, the whole screen)."""
        if not self.started:  # a session that outlives each command's: killing the last one stops the server,
            self.tmux("new-session", "-d", "-s", "keep", "sleep", "3600")  # and the next command raced its exit
            self.started = True
        name = uuid.uuid4().hex[:8]
        shim = f'jitplan() {{ {shlex.quote(sys.executable)} -m jitplan "$@"; }}'
        script = f"cd {shlex.quote(str(self.workdir))}; {shim}; {command}; echo __rc=$?__; sleep 600"
        self.tmux("new-session", "-d", "-s", name, "-x", str(width), "-y", "50", "bash", "--norc", "-c", script)
        try:
            deadline = time.monotonic() + timeout
            while True:
                screen = self.tmux("capture-pane", "-p", "-t", name, "-S", "-3000")
                m = re.search(r"__rc=(\d+)__", screen)
                if m:
                    return int(m.group(1)), screen[: m.start()]
                if time.monotonic() > deadline:
                    pytest.fail(f"{command!r} did not finish in {timeout:.0f} s; screen:\n{screen}")
                time.sleep(0.3)
        finally:
            self.tmux("kill-session", "-t", name)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.sock, "kill-server"], capture_output=True, env=self.env)


@pytest.fixture
def term(tmp_path, monkeypatch):
    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "home"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm-256color", "JITMODEL_NO_PROGRESS": "1"}
    env.pop("COLUMNS", None)  # the terminal's width, not the test runner's, must decide the layout
    env.pop("LINES", None)
    t = Terminal(tmp_path, env)
    yield t
    t.close()


def assert_clean(screen: str, width: int) -> None:
    assert "Traceback" not in screen, screen
    assert "…" not in screen, f"cut text (rich's ellipsis):\n{screen}"
    assert all(len(line) <= width for line in screen.splitlines())


BOX = re.compile("[\u2500-\u257f]")


def words(screen: str) -> set[str]:
    """The words on a screen, table borders and a command's line continuations (``\\``) dropped."""
    return set(BOX.sub(" ", screen).split()) - {"\\"}


def flat(screen: str) -> str:
    """The screen's words joined by single spaces: a sentence the terminal wrapped reads as one."""
    return " ".join(screen.split())


def test_the_readme_starts_with_plan_then_demo():
    cmds = readme_first_commands()
    assert [c.split()[1] for c in cmds] == ["plan", "demo"], cmds


@pytest.mark.parametrize("width", [80, 120])
def test_plan_doctor_probe_version_read_whole_at(term, width):
    plan_cmd = readme_first_commands()[0]
    rc, screen = term.run(plan_cmd, width)
    assert rc == 0
    assert_clean(screen, width)
    # the worker decision (measured worker RAM: the recipe's 12 per rank fit 24 GB) is said once
    assert "batch per GPU" in screen and flat(screen).count("12 per rank as the recipe asks") == 1
    assert "not saved: add --out plan.yaml" in flat(screen)  # the next step, and no torchrun line naming a missing file
    assert not (term.workdir / "plan.yaml").exists()

    rc, screen = term.run(f"{plan_cmd} --out plan.yaml", width)
    assert rc == 0 and (term.workdir / "plan.yaml").is_file()
    assert "next: check it, then launch it" in screen and "\n  jitplan doctor --plan plan.yaml\n" in screen

    rc, screen = term.run("jitplan doctor --plan plan.yaml", width, timeout=300)
    assert rc in (0, 1)  # 1: this CPU box fails the plan's GPU checks, which is the point of the doctor
    assert_clean(screen, width)
    assert "fix:" in screen or width >= 140
    assert re.search(r"\d+ pass, \d+ warn, \d+ fail, \d+ skip", screen)

    rc, screen = term.run("jitplan --version && jitplan plan --model JiT-L/32 --gpus 1xH100 --compact", width)
    assert rc == 0 and "jitplan 0." in screen and "JiT-L/32" in screen
    assert_clean(screen, width)


@pytest.mark.parametrize("width", [80])
def test_a_machine_without_a_gpu_is_told_what_to_do(term, width):
    from jitplan.hardware.nvml import load_pynvml, query_nvml

    if query_nvml(load_pynvml()).available:
        pytest.skip("this machine has an NVIDIA GPU")
    rc, screen = term.run("jitplan probe --out hardware.yaml", width)
    assert rc == 0
    assert_clean(screen, width)
    assert screen.count("libnvidia-ml.so.1") == 1  # the no-GPU message once
    assert "next: plan for the GPUs you will train on" in flat(screen)
    rc, screen = term.run("jitplan plan --hardware hardware.yaml", width)  # no GPU: the laptop plan (issue 23)
    assert rc == 0 and "CPU plan" in flat(screen) and "jitplan launch plan.yaml --local" in screen
    assert_clean(screen, width)


def test_the_demo_shows_progress_and_proves_itself(term):
    demo = readme_first_commands()[1]
    rc, screen = term.run(f"{demo} --steps 30 --samples 1 --out demo", 80, timeout=900)
    assert rc == 0, screen
    assert_clean(screen, 80)
    text = flat(screen)
    assert "30/30" in screen  # the progress bar reached its target
    assert re.search(r"\b\d+ of 10 samples recognised as their digit", text)
    assert "trajectory" in text and (term.workdir / "demo" / "trajectory-7.html").is_file()
    assert "next: plan a real run" in text and "\n  jitplan plan --gpus cpu --out plan.yaml" in screen


@pytest.mark.parametrize("width", [80, 120])
def test_every_readme_command_reads_whole_at(term, width):
    """Each README command that runs here (tests/test_readme.py's list), in a real terminal: no traceback,
    nothing cut, and no word split across lines: every word on the narrow screen is a word of the same
    command's screen at 139 columns (the widest compact layout), so a fold ("workstatio" / "n") or a
    terminal-wrapped long line shows up as a word that does not exist."""
    from test_readme import RUNS_HERE

    for cmd in RUNS_HERE:
        rc, wide = term.run(cmd, 139)
        assert rc == 0, (cmd, wide)
        rc, screen = term.run(cmd, width)
        assert rc == 0, (cmd, screen)
        assert_clean(screen, width)
        split = words(screen) - words(wide)
        assert not split, f"{cmd!r} at {width} columns splits words: {sorted(split)}\n{screen}"
