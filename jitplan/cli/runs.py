"""``jitplan runs | status RUN | logs RUN [-f] | stop RUN [--destroy]``: the run registry from the shell.

    jitplan runs                     # recent runs, and the cloud instances still alive with their cost so far
    jitplan runs --active --json     # machine-readable
    jitplan runs --destroy-orphans --yes   # destroy live instances with jitplan labels that no run records
    jitplan status 8f3c              # one run (a unique id prefix is enough): fields, instances, events
    jitplan logs 8f3c -f             # follow the run's log until it ends (Ctrl-C to stop following)
    jitplan stop 8f3c                # stop training (SIGTERM: the trainer checkpoints), keep the instance
    jitplan stop 8f3c --destroy --yes   # ... and destroy its cloud instance (billing stops)

Thin: parse -> core (jitplan/cloud/runs.py, jitplan/launch/runs.py) -> pydantic data -> rich or ``--json``. A
cloud provider (jitplan.providers.registry) is asked for live instances and orphans only when this registry
has rented there and its key exists (``--offline`` skips it).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from jitplan.cli._output import JsonFlag

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from jitplan.cloud.runs import RunsOverview
    from jitplan.launch.runs import InstanceView, RunStatusView
    from jitplan.providers import Provider
    from jitplan.runs.registry import Registry


SWEEP_TIMEOUT_S = 10.0  # `jitplan runs` must not hang for long when the provider does not answer


def _registry() -> Registry:
    from jitplan.runs.registry import Registry  # lazy: CLI start-up

    return Registry()


def _providers(reg: Registry, offline: bool) -> tuple[list[Provider], list[str]]:
    """The providers to ask for live instances: each this registry ever rented on, when its key exists."""
    from jitplan.errors import JitplanError  # lazy: CLI start-up
    from jitplan.providers.registry import entries  # lazy: CLI start-up

    if offline:
        return [], []
    used = {r.backend for r in reg.list_runs(limit=10_000)} | {i.provider for i in reg.cloud.instances()}
    out, notes = [], []
    for e in entries():
        if e.name not in used:
            continue
        if not e.has_credentials():
            notes.append(f"no {e.title} API key: live instances and orphans were not checked")
            continue
        try:
            out.append(e.build(lambda m: None, http_timeout_s=SWEEP_TIMEOUT_S))
        except JitplanError as err:
            notes.append(f"cannot ask {e.title}: {err.message}")
    return out, notes


def _ago(ts: float, now: float) -> str:
    s = max(now - ts, 0)
    if s < 120:
        return f"{s:.0f}s"
    return f"{s / 60:.0f}m" if s < 7200 else f"{s / 3600:.1f}h" if s < 172800 else f"{s / 86400:.0f}d"


def _render_instances(con: Console, views: list[InstanceView], title: str) -> None:
    from rich.table import Table

    t = Table(title=title)
    for c in ("instance", "run", "status", "GPUs", "$/h", "hours", "cost $"):
        t.add_column(c, no_wrap=c in ("instance", "GPUs"), overflow="fold")
    for v in views:
        r = v.row
        gpus = f"{r.num_gpus}x {r.gpu_name}" if r.gpu_name else ""
        t.add_row(f"{r.provider} {r.instance_id}", r.run_id or "", r.status, gpus, f"{r.dph:.3f}", f"{v.hours:.2f}",
                  f"{v.cost_so_far:.2f}")
    con.print(t)


def _render_overview(data: RunsOverview, con: Console) -> None:
    from rich.table import Table

    now = time.time()
    if not data.runs:
        con.print("no runs recorded yet (jitplan launch ... records them)")
    else:
        t = Table(title="Runs", show_edge=False, pad_edge=False)  # 4 more columns for the names at 80 columns
        # Every run here: the host column says nothing, and an 80-column terminal needs the room for the names
        show_host = any((r.host or "localhost") != "localhost" for r in data.runs)
        cols = ("id", "name", "backend", "status", "started", *(("host",) if show_host else ()))
        for c in cols:  # a run name is one token: never broken across lines (its full text is in --json)
            t.add_column(c, overflow="ellipsis" if c == "name" else "fold", no_wrap=c in ("id", "status"))
        for r in data.runs:
            row = [r.id, r.name, r.backend, r.status, _ago(r.created_at, now) + " ago"]
            t.add_row(*row, *((r.host or "",) if show_host else ()))
        con.print(t)
    if data.instances:
        _render_instances(con, data.instances, "Live cloud instances (billing until destroyed)")
    if data.orphans:
        t = Table(title="Orphans: live instances with jitplan labels that no run records (billing)")
        for c in ("instance", "label", "status", "GPUs", "$/h", "hours", "cost $"):
            t.add_column(c, overflow="fold")
        for o in data.orphans:
            t.add_row(f"{o.provider} {o.instance_id}", o.label, o.status, o.gpus, _num(o.dph, 3), _num(o.hours, 2),
                      _num(o.cost_so_far, 2))
        con.print(t)
        con.print("destroy them with: jitplan runs --destroy-orphans --yes")
    for it in data.open_intents:
        con.print(f"create of {it.provider} instance {it.label} (run {it.run_id}) has no known outcome yet; "
                  "`jitplan runs` with the provider's key looks it up")
    for w in data.warnings:
        con.print(f"warning: {w}")
    if data.instances or data.orphans:
        con.print(f"total {data.total_dph:.3f} $/h, {data.total_cost_so_far:.2f} $ so far")


def _num(v: float | None, digits: int) -> str:
    return "?" if v is None else f"{v:.{digits}f}"


def _render_status(data: RunStatusView, con: Console) -> None:
    from rich.table import Table

    r = data.run.model_dump()
    for k in ("id", "name", "backend", "status", "plan_path", "run_dir", "log_path", "host", "pid"):
        if r.get(k) is not None:
            con.print(f"[bold]{k:>9}[/bold]  {r[k]}")
    if data.instances:
        _render_instances(con, data.instances, "Instances")
    for d in data.drift:
        con.print(f"[yellow]drift:[/yellow] {d} (beyond 15%; jitplan calibrate {data.run.id} folds it in)")
    for line in data.replan.lines() if data.replan else []:  # HOOK (replan): plan -> measured -> re-planned
        con.print(line, markup=False, highlight=False)
    t = Table(title="Events")
    for c in ("when (UTC)", "kind", "message"):
        t.add_column(c)
    for e in data.events:
        t.add_row(time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.ts)), e.kind, e.message)
    con.print(t)


def runs_command(
    active: bool = typer.Option(False, "--active", help="Only runs that are not finished."),
    limit: int = typer.Option(20, "--limit", min=1, help="At most this many runs, newest first."),
    offline: bool = typer.Option(False, "--offline", help="Do not ask cloud providers for live instances."),
    destroy_orphans: bool = typer.Option(False, "--destroy-orphans",
                                         help="Destroy the orphans listed (billing stops)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before destroying orphans."),
    json_out: JsonFlag = False,
) -> None:
    """List recorded runs, the cloud instances still alive with their cost so far, and orphaned instances."""
    from jitplan.cli._output import emit, note  # lazy: start-up (rich, typer)
    from jitplan.cloud.runs import destroy_orphans as destroy  # lazy: CLI start-up
    from jitplan.cloud.runs import overview  # lazy: CLI start-up
    from jitplan.errors import CheckFailed, UsageError  # lazy: CLI start-up

    reg = _registry()
    providers, warnings = _providers(reg, offline)
    data = overview(reg, providers=providers, warnings=warnings, active_only=active, limit=limit)
    emit(data, json_mode=json_out, render=lambda con: _render_overview(data, con))
    if not destroy_orphans:
        return
    if not data.orphans:
        note("no orphans to destroy" + (" (providers not checked)" if not data.checked else ""))
        return
    if not yes:
        if not (sys.stdin.isatty() and sys.stderr.isatty()):
            raise UsageError("destroying instances deletes their disks; pass --yes to confirm without a terminal")
        ids = ", ".join(str(o.instance_id) for o in data.orphans)
        if not typer.confirm(f"Destroy orphan instance(s) {ids}? Their disks are deleted.", err=True):
            raise CheckFailed("not confirmed; nothing destroyed")
    for p in providers:
        destroy(p, reg, data.orphans, say=note)


def status_command(
    run: str = typer.Argument(..., help="Run id (a unique prefix is enough) or name."),
    json_out: JsonFlag = False,
) -> None:
    """One run: its fields, instances and events."""
    from jitplan.cli._output import emit  # lazy: start-up (rich, typer)
    from jitplan.launch.runs import run_status  # lazy: CLI start-up

    data = run_status(_registry(), run)
    emit(data, json_mode=json_out, render=lambda con: _render_status(data, con))


def logs_command(
    run: str = typer.Argument(..., help="Run id (a unique prefix is enough) or name."),
    follow_: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines until the run ends."),
    tail: int | None = typer.Option(None, "--tail", "-n", min=0, help="Only the last N lines first."),
) -> None:
    """Print a run's log (local file, the remote one over SSH, or the copy pulled home once its instance is gone)."""
    from jitplan.errors import UsageError  # lazy: CLI start-up
    from jitplan.launch.remote_job import is_remote, ssh_launch  # lazy: CLI start-up
    from jitplan.launch.runs import follow, log_path  # lazy: CLI start-up
    from jitplan.providers.registry import is_provider  # lazy: CLI start-up

    reg = _registry()
    row = reg.get_run(run)
    path = log_path(row)
    rows = reg.cloud.instances(active_only=False, run_id=row.id) if is_provider(row.backend) else []
    gone = bool(rows) and not [i for i in rows if i.active]  # it had instances, all destroyed now
    if gone and row.meta.local_run_dir:  # the instance is destroyed: its log came home with the last pull
        path = Path(row.meta.local_run_dir) / "train.log"
    remote = is_remote(row) and not gone and not (path is not None and path.exists())
    if path is not None and (path.exists() or (follow_ and row.active and not remote)):
        if not follow_:
            lines = path.read_bytes().splitlines(keepends=True)
            sys.stdout.write(b"".join(lines if tail is None else lines[-tail:]).decode(errors="replace"))
            return
        try:
            follow(path, sys.stdout, still_running=lambda: reg.get_run(row.id).active, tail=tail)
        except KeyboardInterrupt:
            pass
        return
    launch = None if gone else ssh_launch(row, reg.path.parent)
    if launch is None:
        why = " (its instance is gone and none was pulled home)" if gone else ""
        raise UsageError(f"run {row.id} has no log at {path or '(no run folder recorded)'}{why}")
    if follow_:
        launch.follow(sys.stdout)
        return
    import shlex

    from jitplan.launch.ssh import Step  # lazy: CLI start-up

    remote_log = shlex.quote(launch.run_dir + "/train.log")
    script = f"tail -n {tail} {remote_log}" if tail is not None else f"cat {remote_log}"
    sys.stdout.write(launch.run(Step(name="read log", argv=launch.ssh(["sh", "-c", script]))))


def stop_command(
    run: str = typer.Argument(..., help="Run id (a unique prefix is enough) or name."),
    destroy: bool = typer.Option(False, "--destroy", help="Also destroy the run's cloud instance (billing stops)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before destroying."),
    discard: bool = typer.Option(False, "--discard", help="Destroy even when the checkpoint could not be pulled."),
) -> None:
    """Stop a run's training (the trainer checkpoints on SIGTERM); --destroy pulls its checkpoint, metrics
    and logs home (verified), then releases its instance; a failed pull refuses unless --discard."""
    from jitplan.cli._output import note  # lazy: start-up (rich, typer)
    from jitplan.cloud.runs import stop  # lazy: CLI start-up
    from jitplan.errors import CheckFailed, UsageError  # lazy: CLI start-up
    from jitplan.providers.registry import make_provider  # lazy: CLI start-up

    reg = _registry()
    row = reg.get_run(run)
    live = reg.cloud.instances(active_only=True, run_id=row.id)
    if destroy and live and not yes:
        if not (sys.stdin.isatty() and sys.stderr.isatty()):
            raise UsageError("destroying an instance deletes its disk; pass --yes to confirm without a terminal")
        ids = ", ".join(i.instance_id for i in live)
        if not typer.confirm(f"Destroy instance {ids} of run {row.id}? Its disk is deleted.", err=True):
            raise CheckFailed("not confirmed; nothing destroyed")
    stop(reg, row, destroy=destroy, provider=lambda name: make_provider(name, note), say=note, discard=discard)


def register(app: typer.Typer) -> None:
    app.command("runs")(runs_command)
    app.command("status")(status_command)
    app.command("logs")(logs_command)
    app.command("stop")(stop_command)
