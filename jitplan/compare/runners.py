"""Running one arm through the launch path: locally (supervised torchrun, registry) or over SSH."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from jitplan.launch import local
from jitplan.launch.ssh import SSHLaunch, project_root, run_script_path, ssh_base
from jitplan.launch.ssh_run import launch_ssh
from jitplan.launch.supervisor import run_local
from jitplan.launch.torchrun import node_command, spec_for_run
from jitplan.runs.registry import Registry

if TYPE_CHECKING:
    from jitplan.launch.ssh import SSHOptions
    from jitplan.runs.registry import Registry
    from jitplan.runs.schema import RunStatus
    from jitplan.runspec import RunSpec
    from jitplan.transport.target import SSHTarget


class Runner:
    """Runs one arm in ``run_dir`` from a prepared config file; returns (status, message). Backends: local, ssh."""

    backend = "local"

    def run(self, run_dir: Path, config: Path, *, minutes: float | None, name: str) -> tuple[str, str]:
        raise NotImplementedError


class LocalRunner(Runner):
    """The ``jitplan launch --local`` path: torchrun under the supervisor, recorded in the registry."""

    def __init__(self, run: RunSpec, *, threads: int | None = None, max_restarts: int = 1,
                 echo: TextIO | None = None, registry: Registry | None = None):
        self.run_spec, self.threads, self.max_restarts, self.echo = run, threads, max_restarts, echo
        self.registry = registry

    def run(self, run_dir: Path, config: Path, *, minutes: float | None, name: str) -> tuple[str, str]:

        env = {"OMP_NUM_THREADS": str(self.threads)} if self.threads else None
        spec = spec_for_run(self.run_spec, config=str(config), python=sys.executable, rdzv_id=name, env=env)
        timer = _StopOnTime(run_dir, minutes, lambda: local.stop_run(run_dir, grace_s=120)) if minutes else None
        try:
            _, res = run_local(run_dir, spec, registry=self.registry or Registry(), name=name,
                               max_restarts=self.max_restarts, echo=self.echo)
        finally:
            if timer is not None:
                timer.cancel()
        if res.status == "stopped" and timer is not None and timer.fired:
            return "stopped", f"stopped after {minutes:g} min of training at step {res.final_step}"
        return res.status, res.message


class SSHRunner(Runner):
    """The ``jitplan launch --ssh`` path (upload, detached start, follow), then the run's ``out/`` comes back
    here (metrics.jsonl, last.pt) for scoring. A minutes budget stops the remote run (SIGTERM: it checkpoints)."""

    backend = "ssh"

    def __init__(self, run: RunSpec, target: SSHTarget, opts: SSHOptions, *, remote_dir: str = "jitplan",
                 echo: TextIO | None = None, registry: Registry | None = None, create_env: bool = False):
        self.run_spec, self.target, self.opts, self.remote_dir = run, target, opts, remote_dir
        self.echo, self.registry, self.create_env = echo, registry, create_env

    def download_argv(self, remote_run_dir: str, run_dir: Path) -> list[str]:
        """rsync the remote ``out/`` (links followed, rolling checkpoints left there) into ``run_dir/out/``."""
        import shlex


        return ["rsync", "-azL", "--protect-args", "--exclude=ckpt/", "--exclude=tb/", "-e",
                shlex.join(ssh_base(self.target, self.opts)),
                f"{self.target.user}@{self.target.host}:{remote_run_dir}/out/", f"{run_dir}/out/"]

    def run(self, run_dir: Path, config: Path, *, minutes: float | None, name: str) -> tuple[str, str]:
        import subprocess

        registry = self.registry or Registry()
        job = SSHLaunch(self.target, self.opts, root=self.remote_dir, run_id=name)
        python = job.venv_python if self.create_env else self.opts.python
        spec = spec_for_run(self.run_spec, config=config.name, python=python, rdzv_id=name)
        # the run folder is staged here already (prepare_run_dir); upload it with the run script
        res = launch_ssh(job, registry=registry, name=name, local_code=project_root(),
                         stage=lambda job, remote_data: ([config, run_script_path()], node_command(spec)),
                         doctor=False, create_env=self.create_env, follow=False, out=self.echo or sys.stderr)
        code = job.follow(self.echo or sys.stderr, timeout_s=minutes * 60 if minutes else None)
        status: RunStatus = "finished" if code == 0 else "failed"
        if minutes and code is None:
            code, status = job.stop(), "stopped"
        msg = f"remote trainer on {self.target} exited with code {code}"
        registry.set_status(res.run_id, status, msg)
        dl = subprocess.run(self.download_argv(job.run_dir, run_dir), capture_output=True, text=True,
                            stdin=subprocess.DEVNULL)
        if dl.returncode != 0:
            last = (dl.stderr.strip().splitlines() or ["(no output)"])[-1]
            return "failed", f"{msg}; fetching {job.run_dir}/out failed: {last}"
        return status, msg


class _StopOnTime:
    """Stop a run ``minutes`` after its trainer has started (its start-up line is in train.log).

    ``started`` is set when the clock begins (the line was seen, or ``startup_limit_s`` passed without it).
    """

    STARTED = "steps/epoch"  # in the trainer's first note, printed once data and model are built

    def __init__(self, run_dir: Path, minutes: float, stop: Callable[[], Any], startup_limit_s: float = 600,
                 poll_s: float = 0.5):
        self.run_dir, self.seconds, self.stop, self.limit = run_dir, minutes * 60, stop, startup_limit_s
        self.poll_s = poll_s
        self.fired = False
        self.started = threading.Event()
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        log, t0 = self.run_dir / "train.log", time.monotonic()
        while not self._cancel.is_set() and time.monotonic() - t0 < self.limit:
            if log.is_file() and self.STARTED in log.read_text(errors="replace"):
                break
            self._cancel.wait(self.poll_s)
        if self._cancel.is_set():
            return
        self.started.set()
        if not self._cancel.wait(self.seconds):
            self.fired = True
            self.stop()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def cancel(self) -> None:
        self._cancel.set()
        self._thread.join(timeout=5)
