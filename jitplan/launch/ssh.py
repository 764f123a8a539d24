"""Launch on any machine you can SSH into: upload, check the Python env, doctor, start detached, follow, stop.

Every remote command is one string built with ``shlex.quote`` around each word, so a path holding spaces
or ``;`` stays one argument and cannot inject a command. Host keys are checked: ``StrictHostKeyChecking=yes``
against the user's known_hosts (or the file given), ``accept-new`` only when asked; never ``no``.

Remote layout under ``root`` (relative paths are under the remote home)::

    root/code/               the project, rsynced (no .git, runs, caches)
    root/runs/<run_id>/      train.yaml, plan.yaml, run_remote.sh, train.log, pid, exit_code, out/
    root/data/<name>/        the dataset, when uploaded

    from jitplan.launch.ssh import SSHLaunch, SSHOptions
    from jitplan.transport.target import SSHTarget
    job = SSHLaunch(SSHTarget(user="root", host="1.2.3.4", port=22, identity="~/.ssh/id_ed25519"),
                    SSHOptions(), root="jitplan", run_id="jit-tiny-20260101")
    for step in job.steps(local_code=".", train_yaml="runs/x/train.yaml", command=cmd):
        print(step.shell())        # what --dry-run prints
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import jitmodel
from jitplan.errors import CheckFailed, UsageError
from jitplan.launch.torchrun import NodeCommand
from jitplan.templates import templates_dir
from jitplan.transport.sshcmd import (  # noqa: F401 - re-exported: the SSH backend's public names
    SSHOptions,
    Step,
    parse_target,
    remote_sh,
    rsync_argv,
    ssh_argv,
    ssh_base,
)
from jitplan.transport.target import SSHTarget

RSYNC_EXCLUDES = (".git", "runs", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache", ".venv", "*.egg-info",
                  ".mypy_cache", "node_modules")
RUN_SCRIPT = "launch/run_remote.sh"


class SSHLaunch:
    """One run on one SSH host. ``steps()`` lists the commands (for --dry-run); the methods run them."""

    def __init__(self, target: SSHTarget, opts: SSHOptions, *, root: str, run_id: str) -> None:
        if not run_id or "/" in run_id or run_id in (".", ".."):
            raise UsageError(f"run id must be a plain name, got {run_id!r}")
        self.target, self.opts, self.run_id = target, opts, run_id
        self._set_root(root)

    def _set_root(self, root: str) -> None:
        self.root = root.rstrip("/") or "/"
        self.code_dir = f"{self.root}/code"
        self.run_dir = f"{self.root}/runs/{self.run_id}"

    @property
    def venv_python(self) -> str:
        return f"{self.root}/venv/bin/python"

    # ---------------------------------------------------------------- commands (pure)
    def ssh(self, words: Sequence[str] | str) -> list[str]:
        return ssh_argv(self.target, self.opts, words)

    def mkdirs_step(self) -> Step:
        """Make the folders and print the absolute root (a relative root is under the remote home)."""
        q = shlex.quote
        script = (f"mkdir -p -- {q(self.code_dir)} {q(self.run_dir)} {q(self.root + '/data')} && "
                  f"cd {q(self.root)} && pwd")
        return Step(name="make remote folders", argv=self.ssh(remote_sh(script)))

    def upload_code_step(self, local_code: str | Path) -> Step:
        src = str(Path(local_code).resolve()) + "/"
        return Step(name="upload code", argv=rsync_argv(self.target, self.opts, src, self.code_dir + "/",
                                                         excludes=RSYNC_EXCLUDES, delete=True))

    def upload_files_step(self, files: Sequence[str | Path]) -> Step:
        srcs = [str(Path(f).resolve()) for f in files]
        argv = rsync_argv(self.target, self.opts, srcs[0], self.run_dir + "/")
        return Step(name="upload run files", argv=[*argv[:-2], *srcs, argv[-1]])

    def upload_data_step(self, local_data: str | Path) -> tuple[Step, str]:
        name = Path(local_data).resolve().name
        remote = f"{self.root}/data/{name}"
        step = Step(name="upload data", argv=rsync_argv(self.target, self.opts, str(Path(local_data).resolve()) + "/",
                                                         remote + "/"))
        return step, remote

    def env_check_step(self, python: str) -> Step:
        probe = "import sys, torch, jitmodel; print(sys.version.split()[0], torch.__version__)"
        script = f"cd {shlex.quote(self.code_dir)} && PYTHONPATH=. {shlex.quote(python)} -c {shlex.quote(probe)}"
        return Step(name="check python env", argv=self.ssh(remote_sh(script)))

    def env_create_step(self, base_python: str = "python3") -> tuple[Step, str]:
        venv = self.venv_python.removesuffix("/bin/python")
        q = shlex.quote
        script = (f"{q(base_python)} -m venv {q(venv)} && {q(venv + '/bin/pip')} install -q --upgrade pip && "
                  f"{q(venv + '/bin/pip')} install -q -e {q(self.code_dir + '[train]')}")
        return Step(name="create python env", argv=self.ssh(remote_sh(script))), f"{venv}/bin/python"

    def doctor_step(self, python: str, data: str | None = None) -> Step:
        q = shlex.quote
        words = [python, "-m", "jitplan", "doctor", "--plan", "plan.yaml"] + (["--data", data] if data else [])
        script = f"cd {q(self.run_dir)} && PYTHONPATH={q(self.code_dir)} {shlex.join(words)}"
        return Step(name="remote doctor", argv=self.ssh(remote_sh(script)))

    def start_step(self, command: NodeCommand) -> Step:
        q = shlex.quote
        inner = ["bash", f"{self.run_dir}/run_remote.sh", self.code_dir, "env",
                 *[f"{k}={v}" for k, v in sorted(command.env.items())], *command.argv]
        if self.opts.detach == "tmux":
            script = f"tmux new-session -d -s {q('jitplan-' + self.run_id)} {q(shlex.join(inner))}"
        else:
            script = f"setsid nohup {shlex.join(inner)} </dev/null >/dev/null 2>&1 &"
        wait_pid = f"for i in $(seq 100); do [ -s {q(self.run_dir + '/pid')} ] && exit 0; sleep 0.1; done; exit 1"
        rd = q(self.run_dir)  # the watchdog (jitplan.launch.watchdog) runs next to training when configured
        watchdog = (f"rm -f {rd}/watchdog-state.json {rd}/stop; if [ -f {rd}/watchdog-config.json ]; then "
                    f"PYTHONPATH={q(self.code_dir)} setsid nohup {q(command.argv[0])} -m jitplan.launch.watchdog {rd} "
                    f"</dev/null >>{rd}/watchdog.log 2>&1 & fi")
        return Step(name="start training (detached)", argv=self.ssh(remote_sh(f"{script}\n{watchdog}\n{wait_pid}")))

    def follow_step(self) -> Step:
        q = shlex.quote
        log, pid = q(self.run_dir + "/train.log"), q(self.run_dir + "/pid")
        script = f"touch {log}; tail -n +1 --pid=\"$(cat {pid})\" -f {log}"
        return Step(name="follow logs", argv=self.ssh(remote_sh(script)))

    def stop_step(self, *, group: bool = False) -> Step:
        """SIGTERM the ranks (torchrun's children) so they checkpoint and exit 0, or the whole process group
        (``group``: the escalation). run_remote.sh's pid -> torchrun -> ranks; see local.term_ranks for why
        not the group first."""
        pid, stop = shlex.quote(self.run_dir + "/pid"), shlex.quote(self.run_dir + "/stop")
        to_group = "g=$(ps -o pgid= -p \"$p\" | tr -d ' ') && [ -n \"$g\" ] && kill -TERM \"-$g\""
        if group:
            script = f"touch {stop} && p=$(cat {pid}) && {to_group}"
        else:
            script = (f"touch {stop} && p=$(cat {pid}) && r= && for t in $(pgrep -P \"$p\"); do "
                      f"r=\"$r $(pgrep -P \"$t\" | tr '\\n' ' ')\"; done; "
                      f"if [ -n \"$(echo $r)\" ]; then kill -TERM $r; else {to_group}; fi")
        return Step(name="stop training", argv=self.ssh(remote_sh(script)))

    def status_step(self) -> Step:
        q = shlex.quote
        code, pid = q(self.run_dir + "/exit_code"), q(self.run_dir + "/pid")
        script = (f"if [ -f {code} ]; then echo exited $(cat {code}); "
                  f"elif [ -s {pid} ] && kill -0 \"$(cat {pid})\" 2>/dev/null; then echo running; "
                  "else echo unknown; fi")
        return Step(name="status", argv=self.ssh(remote_sh(script)))

    def steps(self, *, local_code: str | Path, files: Sequence[str | Path], command: NodeCommand,
              data: str | Path | None = None, doctor: bool = True, create_env: bool = False) -> list[Step]:
        """Every command a launch runs, in order (what ``--dry-run`` prints)."""
        out = [self.mkdirs_step(), self.upload_code_step(local_code), self.upload_files_step(files)]
        if data is not None:
            out.append(self.upload_data_step(data)[0])
        python = self.opts.python
        if create_env:
            step, python = self.env_create_step(self.opts.python)
            out.append(step)
        out.append(self.env_check_step(python))
        if doctor:
            out.append(self.doctor_step(python))
        out += [self.start_step(command), self.follow_step()]
        return out

    # ---------------------------------------------------------------- side effects
    def run(self, step: Step, *, timeout_s: float = 600) -> str:
        """Run one step; its stdout on success, CheckFailed with the last stderr line otherwise."""
        try:
            res = subprocess.run(step.argv, capture_output=True, text=True, timeout=timeout_s,
                                 stdin=subprocess.DEVNULL)
        except FileNotFoundError as e:
            raise CheckFailed(f"{step.name}: {e.filename} is not installed on this machine") from None
        except subprocess.TimeoutExpired:
            raise CheckFailed(f"{step.name}: no answer from {self.target} within {timeout_s:.0f} s") from None
        if res.returncode != 0:
            last = (res.stderr.strip().splitlines() or res.stdout.strip().splitlines() or ["(no output)"])[-1]
            hint = None
            if "Host key verification failed" in res.stderr or "No matching host key" in res.stderr:
                hint = ("the host key of this machine is not in your known_hosts; add it (ssh-keyscan, checking "
                        "the fingerprint) or pass --accept-new-host-key to trust it the first time")
            raise CheckFailed(f"{step.name} failed on {self.target} (exit {res.returncode}): {last}", hint=hint)
        return res.stdout

    def prepare(self) -> None:
        """Make the remote folders and switch to absolute remote paths (the trainer runs in its run folder)."""
        lines = self.run(self.mkdirs_step()).strip().splitlines()
        if not lines or not lines[-1].startswith("/"):
            raise CheckFailed(f"make remote folders on {self.target}: could not resolve {self.root!r}")
        self._set_root(lines[-1])

    def ensure_env(self, *, create: bool) -> str:
        """The remote python that can import torch and jitmodel; creates a venv when ``create``."""
        python = self.opts.python
        if create:
            step, python = self.env_create_step(self.opts.python)
            self.run(step, timeout_s=3600)
        try:
            self.run(self.env_check_step(python))
        except CheckFailed as e:
            if create:
                raise
            raise CheckFailed(e.message, hint=f"{python} on {self.target} cannot import torch and jitmodel: pass "
                              f"--remote-python PATH (a Python with torch), or --create-env to make a venv at "
                              f"{self.root}/venv and pip install the project into it") from None
        return python

    def start(self, command: NodeCommand) -> None:
        self.run(self.start_step(command))

    def follow(self, out: TextIO = sys.stdout, *, timeout_s: float | None = None) -> int | None:
        """Stream train.log until the trainer exits (or ``timeout_s`` passes); its exit code, None if still running."""
        proc = subprocess.Popen(self.follow_step().argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(line)
                out.flush()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pass  # detach from the log; the run goes on
        finally:
            proc.terminate()
            proc.wait()
            reader.join(5)
        return self.exit_code()

    def exit_code(self) -> int | None:
        state = self.run(self.status_step()).split()
        return int(state[1]) if state and state[0] == "exited" else None

    def status(self) -> str:
        return self.run(self.status_step()).strip()

    def upload_checkpoint(self, ckpt: str | Path) -> None:
        """Put a local checkpoint at ``run_dir/out/last.pt``, where ``--resume auto`` finds it."""
        self.run(Step(name="make the output folder", argv=self.ssh(["mkdir", "-p", "--", self.run_dir + "/out"])))
        self.run(Step(name="upload checkpoint", argv=rsync_argv(self.target, self.opts, str(Path(ckpt).resolve()),
                                                                 self.run_dir + "/out/last.pt")), timeout_s=6 * 3600)

    def stop(self, *, wait_s: float = 60.0) -> int | None:
        """SIGTERM the remote ranks and wait for the exit code; after ``wait_s``, SIGTERM the process group
        and wait 30 s more. ``run_dir/stop`` marks the stop as asked for. None when it has not exited yet."""
        self.run(self.stop_step())
        for extra, escalate in ((wait_s, True), (30.0, False)):
            deadline = time.monotonic() + extra
            while time.monotonic() < deadline:
                code = self.exit_code()
                if code is not None:
                    return code
                time.sleep(0.5)
            if escalate:
                self.run(self.stop_step(group=True))
        return None


def project_root() -> Path:
    """The checkout holding jitmodel and jitplan: the code the SSH path uploads."""

    root = Path(jitmodel.__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise UsageError(f"jitmodel is installed at {root} without its project folder, so there is no code to upload",
                         hint="run jitplan from a checkout (pip install -e .)")
    return root


def run_script_path() -> Path:
    """The run_remote.sh template to upload into the run folder."""
    return templates_dir() / RUN_SCRIPT
