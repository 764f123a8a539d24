"""The whole launch on one SSH host, step by step, each step a registry event (used by --ssh, --vast, compare).

    from jitplan.launch.ssh_run import launch_ssh
    res = launch_ssh(job, registry=Registry(), name="jit-tiny", local_code=project_root(), stage=stage)
    res.status        # "running" (detached) | "finished" | "failed"
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from pydantic import BaseModel, ConfigDict

from jitmodel.atomic import atomic_write_text
from jitplan.errors import CheckFailed
from jitplan.launch.ssh import SSHLaunch
from jitplan.launch.torchrun import NodeCommand
from jitplan.launch.watchdog import WatchdogConfig
from jitplan.runs.schema import RunMeta, RunStatus


class SSHRunResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str
    target: str
    remote_run_dir: str
    status: str  # running (detached, not followed) | finished | failed | stopped
    exit_code: int | None = None


def launch_ssh(job: SSHLaunch, *, registry, name: str, local_code: str | Path,
               stage: Callable[[SSHLaunch, str | None], tuple[Sequence[Path], NodeCommand]],
               data: str | Path | None = None, doctor: bool = True, create_env: bool = False, follow: bool = True,
               out: TextIO = sys.stdout, run_id: str | None = None,
               local_run_dir: str | Path | None = None, watchdog: WatchdogConfig | None = None,
               resume_from: str | Path | None = None) -> SSHRunResult:
    """The whole SSH launch: folders, code, plan, data, env, doctor, detached start, then follow the log.

    ``stage(job, remote_data_path)`` runs once the remote paths are absolute: it writes the run's files
    here and returns them (to upload into the remote run folder) and the command to start, which must use
    the remote python (``job.venv_python`` when ``create_env``). Each step is a registry event; a failing
    step marks the run failed and raises CheckFailed (exit 1). ``local_run_dir`` (the staged folder) is
    where ``jitplan pull`` brings the run's checkpoint, metrics and logs home. ``watchdog`` settings go up
    as ``watchdog-config.json``, and the watchdog starts next to training. ``resume_from`` (a local
    checkpoint) is uploaded to ``out/last.pt`` before the start.
    """
    if run_id is None:
        run_id = registry.create_run(name, "ssh", status="starting", host=str(job.target))
    registry.set_status(run_id, "starting", f"launching on {job.target}")

    def step(kind: str, message: str, fn, **data):  # noqa: ANN001, ANN202 - a local helper
        registry.add_event(run_id, kind, message, **data)
        try:
            return fn()
        except CheckFailed as e:
            registry.set_status(run_id, "failed", e.message)
            raise

    step("remote_folders", "making the remote folders", job.prepare)
    registry.update_run(run_id, run_dir=job.run_dir, log_path=f"{job.run_dir}/train.log",
                        meta=RunMeta(ssh=str(job.target), remote_root=job.root, remote_run_id=job.run_id,
                                     identity=job.target.identity, known_hosts=job.opts.known_hosts,
                                     accept_new_host_key=job.opts.accept_new_host_key,
                                     local_run_dir=str(Path(local_run_dir).resolve()) if local_run_dir else None))
    data_step, remote_data = job.upload_data_step(data) if data is not None else (None, None)
    files, command = stage(job, remote_data)
    if watchdog is not None:

        folder = Path(local_run_dir or Path(files[0]).parent)
        files = [*files, atomic_write_text(folder / "watchdog-config.json", watchdog.model_dump_json())]
    step("upload_code", f"uploading {Path(local_code).resolve()}", lambda: job.run(job.upload_code_step(local_code)))
    step("upload_files", "uploading the plan", lambda: job.run(job.upload_files_step(files)))
    if data_step is not None:
        step("upload_data", f"uploading {data} to {remote_data}", lambda: job.run(data_step, timeout_s=24 * 3600))
    python = step("python_env", "checking the remote python env", lambda: job.ensure_env(create=create_env))
    if doctor:
        step("doctor", "running doctor on the remote", lambda: job.run(job.doctor_step(python, remote_data)))
    if resume_from is not None:  # a recovery: the last verified pull goes where --resume auto looks
        step("upload_checkpoint", f"uploading {resume_from} to resume from it",
             lambda: job.upload_checkpoint(resume_from))
    step("start", "starting training detached", lambda: job.start(command))
    registry.set_status(run_id, "running", f"training on {job.target} in {job.run_dir}")
    if not follow:
        return SSHRunResult(run_id=run_id, target=str(job.target), remote_run_dir=job.run_dir, status="running")
    code = job.follow(out)
    status: RunStatus = "finished" if code == 0 else "failed"
    registry.set_status(run_id, status, f"trainer exited with code {code}")
    return SSHRunResult(run_id=run_id, target=str(job.target), remote_run_dir=job.run_dir, status=status,
                        exit_code=code)
