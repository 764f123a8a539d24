"""Launch a run spec on this machine (supervised torchrun) or write its Slurm script: the core of
``jitplan launch --local`` and ``--slurm``. The command parses, calls one of these, renders the result.

    from jitplan.launch.here import launch_local
    from jitplan.runspec import load_run_spec

    run = load_run_spec("plan.yaml")
    res = launch_local(run, plan_file=Path("plan.yaml"), run_dir=Path("runs/r1"), name="r1", dry_run=True)
    res.commands      # ['jitplan doctor --plan plan.yaml', 'cd /…/runs/r1 && env … jitmodel.run …']

The remote paths (``--ssh``, ``--vast``) are in ``launch/remote.py``.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from pydantic import BaseModel, ConfigDict, Field

from jitmodel.atomic import atomic_write_text
from jitmodel.config import TrainConfig
from jitplan.doctor.runner import run_doctor
from jitplan.errors import CheckFailed, UsageError
from jitplan.launch import local
from jitplan.launch.slurm import job_cpus, render_sbatch
from jitplan.launch.supervisor import run_local
from jitplan.launch.torchrun import node_commands, shell_line, spec_for_run
from jitplan.runs import folders
from jitplan.runs.registry import Registry
from jitplan.runspec import RunSpec
from jitplan.secrets import redact

Say = Callable[[str], None]


class LaunchResult(BaseModel):
    """What ``jitplan launch --local/--slurm`` reports (``--json`` prints it; unset fields are left out)."""

    model_config = ConfigDict(extra="forbid")

    backend: str
    name: str
    run_dir: str
    commands: list[str] = Field(default_factory=list)  # secrets redacted; one copy-pasteable command each
    message: str | None = None
    run_id: str | None = None
    status: str | None = None
    final_step: int | None = None
    restarts: int | None = None
    num_workers: int | None = None


def preflight(plan_file: Path, data_path: str | None) -> None:
    """The doctor before a launch; CheckFailed (exit 1) naming the failed checks."""

    if data_path is not None and not Path(data_path).is_dir():  # HOOK (newcomer): say where the path came from
        raise UsageError(f"data.path {data_path} (from {plan_file}): no such folder", hint="plan with your dataset: "
                         "jitplan plan ... --data DIR --out plan.yaml; no GPU: jitplan plan --gpus cpu --out plan.yaml")
    report = run_doctor(plan_path=plan_file, data_path=data_path)
    if report.failed:
        ids = ", ".join(f"{f.id} ({f.title})" for f in report.failed)
        raise CheckFailed(f"doctor: {len(report.failed)} check(s) failed: {ids}",
                          hint=f"see `jitplan doctor --plan {plan_file}`; --no-doctor skips the preflight")


def launch_local(run: RunSpec, *, plan_file: Path, run_dir: Path, name: str, rdzv_endpoint: str | None = None,
                 max_restarts: int = 3, doctor: bool = True, dry_run: bool = False, echo: TextIO | None = None,
                 say: Say | None = None, fresh: bool = False, budget: float | None = None) -> LaunchResult:
    """Doctor (plans only), stage ``run_dir``, run every node here under the supervisor, record the run.

    ``fresh``: ``run_dir`` is a new run's default folder, claimed exclusively (``runs.folders.claim_run_dir``:
    a launch in the same second gets ``NAME-2``; ``name`` follows the folder); else a folder the user named,
    reused to continue its run. ``dry_run`` returns the commands instead. A failed run comes back with
    ``status == "failed"``. ``budget`` (USD) goes into the staged config (``train.budget_usd``): the trainer
    re-plans itself after warm-up and stops with a checkpoint when the cost to the end exceeds it.
    """

    res = LaunchResult(backend="local", name=name, run_dir=str(run_dir))
    if budget is not None:
        run = with_budget(run, budget)
    doctor = doctor and run.kind == "plan"
    spec = spec_for_run(run, config=str(run_dir / run.file_name), python=sys.executable, rdzv_id=name,
                        rdzv_endpoint=rdzv_endpoint)
    if dry_run:
        cmds = [f"jitplan doctor --plan {plan_file}"] if doctor else []
        cmds += [f"cd {shlex.quote(str(run_dir))} && {shell_line(c)}" for c in node_commands(spec)]
        return res.model_copy(update={"commands": [redact(c) for c in cmds]})
    if doctor:
        preflight(plan_file, run.train.data.path)
    if fresh:
        run_dir = folders.claim_run_dir(run_dir.parent, run_dir.name)
        name = run_dir.name
        res = res.model_copy(update={"name": name, "run_dir": str(run_dir)})
        spec = spec_for_run(run, config=str(run_dir / run.file_name), python=sys.executable, rdzv_id=name,
                            rdzv_endpoint=rdzv_endpoint)
    else:
        run_dir = folders.reuse_run_dir(run_dir)
    try:
        folders.prepare_run_dir(run, run_dir)
    except BaseException:
        if fresh:
            folders.drop_if_empty(run_dir)
        raise

    (say or (lambda m: None))(f"run folder {run_dir}; log {run_dir / local.LOG_NAME}")
    run_id, result = run_local(run_dir, spec, registry=Registry(), name=name, plan_path=str(plan_file.resolve()),
                               max_restarts=max_restarts, echo=echo)
    return res.model_copy(update={
        "run_id": run_id, "status": result.status, "final_step": result.final_step,
        "message": f"run {run_id}: {result.message} (folder {run_dir})", "restarts": result.restarts,
        "num_workers": result.num_workers})


def with_budget(run: RunSpec, budget: float) -> RunSpec:
    """``run`` with ``train.budget_usd`` set; UsageError (one line) for a budget that is not a positive amount."""
    from pydantic import ValidationError


    try:
        train = TrainConfig.model_validate({**run.train.model_dump(), "budget_usd": budget})
    except ValidationError:
        raise UsageError(f"--budget {budget}: give a positive amount in USD") from None
    return run.with_train(train)


def write_sbatch(run: RunSpec, *, plan_file: Path, out: Path, name: str, run_dir: Path,
                 rdzv_endpoint: str | None = None, dry_run: bool = False) -> LaunchResult:
    """The sbatch script of ``run`` (one task per node, each running torchrun) written to ``out``;
    ``dry_run`` returns its lines instead."""

    spec = spec_for_run(run, config=str(plan_file.resolve()), rdzv_id=name, rdzv_endpoint=rdzv_endpoint)
    cpus, source = job_cpus(run)
    text = render_sbatch(spec, job_name=name, workdir=str(Path.cwd()),
                         gpus_per_node=run.topology.gpus_per_node if run.kind == "plan" else 0,
                         cpus_per_task=cpus, cpus_source=source)
    res = LaunchResult(backend="slurm", name=name, run_dir=str(run_dir))
    if dry_run:
        return res.model_copy(update={"commands": [redact(c) for c in text.splitlines()]})
    atomic_write_text(out, text)
    return res.model_copy(update={"message": f"wrote {out}; submit with: sbatch {out}"})
