"""``jitplan report RUN``: one self-contained HTML page of a run (plan vs measured with drift, loss,
throughput and memory over time, events, samples), or ``--json``.

    jitplan report 8f3c                       # writes <run_dir>/report.html and prints its path
    jitplan report 8f3c --out /tmp/r.html
    jitplan report runs/jit-b16 --json        # a run folder (its plan.yaml and metrics.jsonl), no registry
"""

from __future__ import annotations

from pathlib import Path

import typer


def report_command(
    run: str = typer.Argument(..., help="Run id (a unique prefix) or name, or a run folder."),
    out: str | None = typer.Option(None, "--out", help="Where to write the page (default: <run_dir>/report.html)."),
    json_: bool = typer.Option(False, "--json", help="The report's data as JSON on stdout (no page)."),
) -> None:
    """Write one self-contained HTML page of a run (or print its data as JSON)."""
    from jitmodel.atomic import atomic_write_text  # lazy: CLI start-up
    from jitplan.cli._output import emit, note  # lazy: start-up (rich, typer)
    from jitplan.errors import UsageError  # lazy: CLI start-up
    from jitplan.report.build import build_report  # lazy: CLI start-up
    from jitplan.report.html import render  # lazy: CLI start-up

    folder = Path(run)
    if folder.is_dir():
        plan = folder / "plan.yaml"
        rep = build_report(run_id=None, name=folder.name, status=None, plan_path=str(plan) if plan.is_file() else None,
                           run_dir=folder)
        run_dir = folder
    else:
        from jitplan.runs.registry import Registry  # lazy: CLI start-up

        reg = Registry()
        row = reg.get_run(run)
        if not row.run_dir:
            raise UsageError(f"run {row.id} has no local run folder (pull it first: jitplan pull {row.id})")
        rep = build_report(run_id=row.id, name=row.name, status=row.status, plan_path=row.plan_path,
                           run_dir=row.run_dir, events=reg.events(row.id))
        run_dir = Path(row.run_dir)
    if json_:
        emit(rep, json_mode=True, render=lambda con: None)
        return
    path = Path(out) if out else run_dir / "report.html"
    atomic_write_text(path, render(rep))
    note(f"report: {path}")
    print(path)


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
