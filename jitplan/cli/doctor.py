"""``jitplan doctor``: checks C1-C14 on this machine, each with what it found and how to fix it.

    jitplan doctor                                  # torch, driver, GPUs, P2P, shm, CPUs, env
    jitplan doctor --plan plan.yaml                 # does this plan fit here (memory, workers, shm, eval)
    jitplan doctor --data /data/imagenet256         # dataset layout
    jitplan doctor --checkpoint runs/jit/last.pt --plan plan.yaml
    jitplan doctor --json

Exit code 1 when any check fails; see docs/doctor.md for every check.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from jitplan.cli._output import JsonFlag, emit

_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def render(report, console: Console, wide: bool | None = None) -> None:  # report: DoctorReport
    """A table (>= 140 columns or ``--wide``), else one block per finding; text folds, never cut."""
    from rich import box
    from rich.text import Text

    if wide if wide is not None else console.width >= 140:
        t = Table("id", "check", "level", "found", "fix")
        for col in t.columns:
            col.overflow = "fold"
        for f in report.findings:
            t.add_row(f.id, Text(f.title), Text(f.level, style=_STYLE[f.level]), Text(f.found),
                      Text(f.fix or "") if f.level != "pass" else "")
    else:
        t = Table("id", "level", "check: what was found, and the fix", box=box.SIMPLE_HEAD, pad_edge=False)
        t.columns[2].overflow = "fold"
        for f in report.findings:
            cell = Text(f.title, style="bold")
            cell.append(f"\n{f.found}")
            if f.fix and f.level != "pass":
                cell.append(f"\nfix: {f.fix}", style=_STYLE[f.level] if f.level != "skip" else "")
            t.add_row(f.id, Text(f.level, style=_STYLE[f.level]), cell)
    console.print(t)
    c = report.counts()
    console.print(f"{c['pass']} pass, {c['warn']} warn, {c['fail']} fail, {c['skip']} skip in {report.seconds} s")


def doctor(
    plan: Path | None = typer.Option(None, "--plan", help="A plan (jitplan plan --out) or a TrainConfig YAML."),
    data: Path | None = typer.Option(None, "--data", help="Dataset root to check (default: the plan's data.path)."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="A jitmodel or official JiT checkpoint."),
    deep: bool = typer.Option(False, "--deep", help="Also decode a sample of dataset images."),
    nccl_timeout: float | None = typer.Option(None, "--nccl-timeout", help="The run's NCCL timeout, seconds "
                                              "(default: the plan's dist_timeout_s, else jitmodel's 1800; "
                                              "official JiT: 600)."),
    python: str | None = typer.Option(None, "--python", help="The Python whose torch to check (default: this one)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Re-import torch even if nothing changed since the "
                                  "last successful check."),
    import_timeout: float = typer.Option(30.0, "--import-timeout", help="Seconds to wait for `import torch` "
                                         "before calling it hung (a healthy import takes 1-10 s)."),
    json_out: JsonFlag = False,
    wide: bool | None = typer.Option(None, "--wide/--compact", help="One table row per finding (default: when "
                                     "the terminal has >= 140 columns)."),
    replay_nvml: Path | None = typer.Option(None, "--replay-nvml", hidden=True, help="Recorded NVML answers."),
    host_root: Path | None = typer.Option(None, "--host-root", hidden=True, help="Re-root cgroup, /proc, /dev/shm."),
) -> None:
    """Check this machine (and a plan, dataset, checkpoint) before training; exit 1 on any failure.

    jitplan doctor --plan plan.yaml --data /data/imagenet256
    """
    from jitplan.doctor.runner import run_doctor  # lazy: CLI start-up
    from jitplan.errors import CheckFailed, UsageError  # lazy: CLI start-up
    from jitplan.hardware.host import HostPaths  # lazy: CLI start-up
    from jitplan.hardware.nvml_fake import FakeNvml  # lazy: CLI start-up

    if not 0 < import_timeout <= 3600:
        raise UsageError(f"--import-timeout must be in (0, 3600] seconds, got {import_timeout:g}")
    if nccl_timeout is not None and nccl_timeout <= 0:
        raise UsageError(f"--nccl-timeout must be > 0 seconds, got {nccl_timeout:g}")
    nvml = None
    if replay_nvml is not None:
        if not replay_nvml.is_file():
            raise UsageError(f"recorded NVML file not found: {replay_nvml}")
        nvml = FakeNvml.from_file(replay_nvml)
    report = run_doctor(plan_path=plan, data_path=data, checkpoint_path=checkpoint, deep=deep,
                        nccl_timeout_s=nccl_timeout, python=python, nvml=nvml, cache=not no_cache,
                        import_timeout_s=import_timeout,
                        paths=HostPaths.under(host_root) if host_root is not None else None)
    emit(report, json_mode=json_out, render=lambda c: render(report, c, wide))
    if report.failed:
        ids = ", ".join(f.id for f in report.failed)
        raise CheckFailed(f"{len(report.failed)} check(s) failed: {ids}", hint="each finding above says how to fix it")


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
