"""``jitplan watch RUN``: follow a detached cloud run from here until it ends, then tear it down.

    jitplan launch plan.yaml --vast --detach     # returns once training started; the instance bills on
    jitplan watch 8f3c                           # pulls every 30 min, pulls + destroys when training ends,
                                                 # recovers a lost instance (--max-restarts, default: the launch's)

What a cloud launch (``jitplan launch --vast``) does after training started, for a run launched with
``--detach`` or whose
launcher was stopped (Ctrl-C keeps the instance and prints its stop command). Thin: parse ->
``jitplan.cloud.watch.watch_cloud_run`` -> render. See docs/vast.md.
"""

from __future__ import annotations

import sys

import typer

from jitplan.cli._output import JsonFlag


def watch_command(
    run: str = typer.Argument(..., help="Run id (a unique prefix is enough) or name."),
    max_restarts: int | None = typer.Option(None, "--max-restarts", min=0,
                                            help="New instances after one is lost (default: the launch's)."),
    json_out: JsonFlag = False,
) -> None:
    """Follow a cloud run launched with --detach: pull while it trains, pull and destroy its instance when
    training ends, recover a lost instance from the last pull. Exit 0 when it finished, 1 otherwise."""
    from jitplan.cli._output import emit, note  # lazy: start-up (rich, typer)
    from jitplan.cloud.watch import watch_cloud_run  # lazy: CLI start-up
    from jitplan.errors import CheckFailed  # lazy: CLI start-up
    from jitplan.launch.remote import RemoteHooks  # lazy: CLI start-up
    from jitplan.runs.registry import Registry  # lazy: CLI start-up

    res = watch_cloud_run(Registry(), run, RemoteHooks(say=note, out=sys.stderr), max_recoveries=max_restarts)
    emit(res, json_mode=json_out, render=lambda con: con.print(
        f"{res.status}: {res.message or ''} (step {res.step}, {res.recoveries} recoveries)", markup=False,
        soft_wrap=True))
    if res.status != "finished":
        raise CheckFailed(f"run {run} ended {res.status}" + (f": {res.message}" if res.message else ""))


def register(app: typer.Typer) -> None:
    app.command("watch")(watch_command)
