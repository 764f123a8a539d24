"""``jitplan runs | status RUN | logs RUN [-f] | stop RUN [--destroy]``: the run registry from the shell.

    jitplan runs                     # recent runs, and the cloud instances still alive with their cost so far
    jitplan runs --active --json     # machine-readable
    jitplan status 8f3c              # one run (a unique id prefix is enough): fields, instances, events
    jitplan logs 8f3c -f             # follow the run's log until it ends (Ctrl-C to stop following)
    jitplan stop 8f3c                # stop training (SIGTERM: the trainer checkpoints), keep the instance
    jitplan stop 8f3c --destroy --yes   # ... and destroy its Vast.ai instance (billing stops)

Thin: parse -> registry -> pydantic data -> rich or ``--json``. No vastai import unless ``--destroy``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from jitplan.launch.registry import InstanceRow, Registry, RunRow


class InstanceView(BaseModel):
    model_config = ConfigDict(extra="forbid")

    row: dict[str, Any]
    hours: float
    cost_so_far: float


class RunsOverview(BaseModel):
    model_config = ConfigDict(extra="forbid")

    runs: list[dict[str, Any]]
    instances: list[InstanceView]
    total_dph: float
    total_cost_so_far: float


class RunStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run: dict[str, Any]
    instances: list[InstanceView]
    events: list[dict[str, Any]]


def _registry() -> Registry:
    from jitplan.launch.registry import Registry

    return Registry()


def _view(i: InstanceRow, now: float) -> InstanceView:
    end = i.ended_at if i.ended_at is not None else now
    return InstanceView(row=i.model_dump(), hours=max(end - i.created_at, 0) / 3600, cost_so_far=i.cost_so_far(now))


def overview(reg: Registry, *, active_only: bool = False, limit: int = 20, now: float | None = None) -> RunsOverview:
    """Recent runs and every live instance with dph x hours since creation."""
    now = time.time() if now is None else now
    inst = [_view(i, now) for i in reg.instances(active_only=True)]
    return RunsOverview(
        runs=[r.model_dump() for r in reg.list_runs(active_only=active_only, limit=limit)],
        instances=inst,
        total_dph=sum(v.row["dph"] for v in inst),
        total_cost_so_far=sum(v.cost_so_far for v in inst),
    )


def run_status(reg: Registry, run_id: str, now: float | None = None) -> RunStatus:
    now = time.time() if now is None else now
    run = reg.get_run(run_id)
    return RunStatus(
        run=run.model_dump(),
        instances=[_view(i, now) for i in reg.instances(active_only=False, run_id=run.id)],
        events=[e.model_dump() for e in reg.events(run.id)],
    )


def _ago(ts: float, now: float) -> str:
    s = max(now - ts, 0)
    return f"{s:.0f}s" if s < 120 else f"{s / 60:.0f}m" if s < 7200 else f"{s / 3600:.1f}h" if s < 172800 else f"{s / 86400:.0f}d"


def _render_instances(con: Console, views: list[InstanceView], title: str) -> None:
    from rich.table import Table

    t = Table(title=title)
    for c in ("instance", "run", "status", "GPUs", "$/h", "hours", "cost $"):
        t.add_column(c, no_wrap=c in ("instance", "GPUs"), overflow="fold")
    for v in views:
        r = v.row
        gpus = f"{r['num_gpus']}x {r['gpu_name']}" if r.get("gpu_name") else ""
        t.add_row(f"{r['provider']} {r['instance_id']}", r["run_id"] or "", r["status"], gpus, f"{r['dph']:.3f}",
                  f"{v.hours:.2f}", f"{v.cost_so_far:.2f}")
    con.print(t)


def _render_overview(data: RunsOverview, con: Console) -> None:
    from rich.table import Table

    now = time.time()
    if not data.runs:
        con.print("no runs recorded yet (jitplan launch ... records them)")
    else:
        t = Table(title="Runs")
        for c in ("id", "name", "backend", "status", "started", "host"):
            t.add_column(c, overflow="fold")
        for r in data.runs:
            t.add_row(r["id"], r["name"], r["backend"], r["status"], _ago(r["created_at"], now) + " ago", r["host"] or "")
        con.print(t)
    if data.instances:
        _render_instances(con, data.instances, "Live cloud instances (billing until destroyed)")
        con.print(f"total {data.total_dph:.3f} $/h, {data.total_cost_so_far:.2f} $ so far")


def _render_status(data: RunStatus, con: Console) -> None:
    from rich.table import Table

    r = data.run
    for k in ("id", "name", "backend", "status", "plan_path", "run_dir", "log_path", "host", "pid"):
        if r.get(k) is not None:
            con.print(f"[bold]{k:>9}[/bold]  {r[k]}")
    if data.instances:
        _render_instances(con, data.instances, "Instances")
    t = Table(title="Events")
    for c in ("when (UTC)", "kind", "message"):
        t.add_column(c)
    for e in data.events:
        t.add_row(time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e["ts"])), e["kind"], e["message"])
    con.print(t)


def runs_command(
    active: bool = typer.Option(False, "--active", help="Only runs that are not finished."),
    limit: int = typer.Option(20, "--limit", min=1, help="At most this many runs, newest first."),
    json_out: bool = typer.Option(False, "--json", help="JSON on stdout."),
) -> None:
    """List recorded runs and the cloud instances still alive, with their cost so far."""
    from jitplan.cli._output import emit

    data = overview(_registry(), active_only=active, limit=limit)
    emit(data, json_mode=json_out, render=lambda con: _render_overview(data, con))


def status_command(
    run: str = typer.Argument(..., help="Run id (a unique prefix is enough) or name."),
    json_out: bool = typer.Option(False, "--json", help="JSON on stdout."),
) -> None:
    """One run: its fields, instances and events."""
    from jitplan.cli._output import emit

    data = run_status(_registry(), run)
    emit(data, json_mode=json_out, render=lambda con: _render_status(data, con))


def log_path(run: RunRow) -> Path | None:
    """The run's local log file: ``log_path``, else ``run_dir/train.log``."""
    if run.log_path:
        return Path(run.log_path)
    if run.run_dir:
        return Path(run.run_dir) / "train.log"
    return None


def follow(path: Path, out: Any, *, still_running: Any, poll_s: float = 0.2, idle_s: float = 1.0,
           tail: int | None = None) -> None:
    """Print ``path`` (its last ``tail`` lines), then what is appended, until ``still_running()`` is False
    and nothing new came for ``idle_s``. Survives truncation (a restarted run) and a file that appears late."""
    pos, idle_since = 0, None
    if tail is not None and path.exists():
        lines = path.read_bytes().splitlines(keepends=True)
        out.write(b"".join(lines[-tail:]).decode(errors="replace"))
        pos = path.stat().st_size
    while True:
        size = path.stat().st_size if path.exists() else 0
        if size < pos:
            pos = 0  # truncated: read again from the top
        if size > pos:
            with path.open("rb") as f:
                f.seek(pos)
                chunk = f.read(size - pos)
            pos = size
            out.write(chunk.decode(errors="replace"))
            out.flush()
            idle_since = None
            continue
        if not still_running():
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since >= idle_s:
                return
        time.sleep(poll_s)


def logs_command(
    run: str = typer.Argument(..., help="Run id (a unique prefix is enough) or name."),
    follow_: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines until the run ends."),
    tail: int | None = typer.Option(None, "--tail", "-n", min=0, help="Only the last N lines first."),
) -> None:
    """Print a run's log (local file, or the remote one over SSH for ssh/vast runs)."""
    from jitplan.errors import UsageError

    reg = _registry()
    row = reg.get_run(run)
    path = log_path(row)
    remote = row.backend in ("ssh", "vast") and not (path is not None and path.exists())
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
    launch = _ssh_launch(row, reg.path.parent)
    if launch is None:
        raise UsageError(f"run {row.id} has no log at {path or '(no run folder recorded)'}")
    if follow_:
        launch.follow(sys.stdout)
        return
    import shlex

    from jitplan.launch.ssh import Step

    remote = shlex.quote(launch.run_dir + "/train.log")
    script = f"tail -n {tail} {remote}" if tail is not None else f"cat {remote}"
    sys.stdout.write(launch.run(Step(name="read log", argv=launch.ssh(["sh", "-c", script]))))


def _ssh_launch(run: RunRow, registry_dir: Path | None = None) -> Any:
    """An SSHLaunch for a remote run, from what the launcher recorded (``host``, ``run_dir``, ``meta``)."""
    from jitplan.launch.pull import remote_job

    return remote_job(run, registry_dir)


def stop_training(run: RunRow, registry_dir: Path | None = None) -> str:
    """Stop the run's training: the backend's ``stop_run(run)`` hook, local process group, or SSH. What happened."""
    from jitplan.launch import local

    if run.backend in ("ssh", "vast"):
        from jitplan.launch import ssh

        hook = getattr(ssh, "stop_run", None)
        if hook is not None:
            return "stopped" if hook(run) is not False else "nothing was running"
        launch = _ssh_launch(run, registry_dir)
        if launch is None:
            return "no SSH endpoint recorded: nothing to stop"
        code = launch.stop()
        return f"stopped (exit code {code})" if code is not None else "stop sent; the trainer has not exited yet"
    if not run.run_dir:
        return "no run folder recorded: nothing to stop"
    return "stopped" if local.stop_run(run.run_dir) else "nothing was running"


def stop_command(
    run: str = typer.Argument(..., help="Run id (a unique prefix is enough) or name."),
    destroy: bool = typer.Option(False, "--destroy", help="Also destroy the run's cloud instance (billing stops)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before destroying."),
    discard: bool = typer.Option(False, "--discard", help="Destroy even when the checkpoint could not be pulled."),
) -> None:
    """Stop a run's training (the trainer checkpoints on SIGTERM); --destroy pulls its checkpoint, metrics
    and logs home (verified), then releases its instance; a failed pull refuses unless --discard."""
    from jitplan.cli._output import note
    from jitplan.errors import CheckFailed, JitplanError, UsageError

    reg = _registry()
    row = reg.get_run(run)
    live = reg.instances(active_only=True, run_id=row.id)
    if destroy and live and not yes:
        if not (sys.stdin.isatty() and sys.stderr.isatty()):
            raise UsageError("destroying an instance deletes its disk; pass --yes to confirm without a terminal")
        ids = ", ".join(i.instance_id for i in live)
        if not typer.confirm(f"Destroy instance {ids} of run {row.id}? Its disk is deleted.", err=True):
            raise CheckFailed("not confirmed; nothing destroyed")
    stop_error = None
    if row.active:
        reg.set_status(row.id, "stopping")
        try:
            what = stop_training(row, reg.path.parent)
        except JitplanError as e:
            stop_error, what = e, f"could not stop training: {e.message}"
        reg.add_event(row.id, "stop", what)
        note(f"run {row.id}: {what}")
        if stop_error is None:
            reg.set_status(row.id, "stopped")
    else:
        note(f"run {row.id} is already {row.status}")
    if destroy:
        if not live:
            note(f"run {row.id} has no live cloud instance")
        else:
            from jitplan.launch.pull import pull_before_destroy
            from jitplan.providers.provision import destroy as destroy_instances

            for p in {i.provider for i in live} - {"vast"}:
                raise UsageError(f"cannot destroy {p} instances (only vast)")
            pulled = pull_before_destroy(reg, row.id, discard=discard, say=note)  # refuses: nothing destroyed
            if pulled is not None:
                note(pulled.message)
            done = destroy_instances(registry=reg, run_id=row.id, say=note)
            reg.add_event(row.id, "destroy", f"destroyed instance(s) {', '.join(map(str, done))}")
            if stop_error is not None and reg.get_run(row.id).status == "stopping":
                reg.set_status(row.id, "stopped", "training ended with its instance")
    if stop_error is not None:
        raise stop_error


def register(app: typer.Typer) -> None:
    app.command("runs")(runs_command)
    app.command("status")(status_command)
    app.command("logs")(logs_command)
    app.command("stop")(stop_command)
