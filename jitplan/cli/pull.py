"""``jitplan pull RUN``: bring a remote run's latest checkpoint, metrics and logs home, verified.

    jitplan pull 8f3c                # while it trains: out/last.pt (sha256 checked, loads), metrics, logs
    jitplan pull 8f3c --json         # the PullResult as JSON

The checkpoint is verified (the sha256 computed on the remote equals the local one, and it loads with
``weights_only=True`` in a child process) before it replaces the previous pull. Exit 1 when it fails.
Thin: parse -> ``jitplan.launch.pull.pull_run`` -> render. See docs/runs.md.
"""

from __future__ import annotations

import typer

from jitplan.cli._output import JsonFlag


def pull_command(
    run: str = typer.Argument(..., help="Run id (a unique prefix is enough) or name."),
    json_out: JsonFlag = False,
) -> None:
    """Pull a remote run's latest checkpoint, metrics and logs into its local run folder, verified."""
    from jitplan.cli._output import emit  # lazy: start-up (rich, typer)
    from jitplan.launch.pull import pull_run  # lazy: CLI start-up
    from jitplan.runs.registry import Registry  # lazy: CLI start-up

    res = pull_run(Registry(), run)
    emit(res, json_mode=json_out, render=lambda con: con.print(res.message, markup=False, soft_wrap=True))


def register(app: typer.Typer) -> None:
    app.command("pull")(pull_command)
