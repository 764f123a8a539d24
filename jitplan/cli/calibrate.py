"""``jitplan calibrate``: fold measured runs (or a measurement entered by hand) into the calibration store.

    jitplan calibrate 8f3c                   # a recorded run: its plan + metrics.jsonl -> a record
    jitplan calibrate --list                 # shipped + local records, with sources
    jitplan calibrate --gpu RTX3060 --gpus 2 --variant JiT-B/16 --batch-per-gpu 16 --compile \\
        --attention exact --step-time 0.54 --memory 6.6GiB --source "my 2x3060 run, nvidia-smi"

Later plans for the same GPU model use the record: every corrected row says "calibrated from N runs on
GPU (date)" (docs/planning.md "Calibration").
"""

from __future__ import annotations

import datetime

import typer


def calibrate_command(
    runs: list[str] = typer.Argument(None, help="Recorded runs (id prefix or name) to fold in."),
    list_: bool = typer.Option(False, "--list", help="Show the records plans use and exit."),
    gpu: str | None = typer.Option(None, "--gpu", help="Hand entry: the GPU model (catalog name), e.g. RTX3060."),
    gpus: int = typer.Option(1, "--gpus", min=1, help="Hand entry: GPUs (ranks) in the run."),
    variant: str = typer.Option("JiT-B/16", "--variant", help="Hand entry: the model variant."),
    img_size: int = typer.Option(256, "--img-size", min=8),
    batch_per_gpu: int | None = typer.Option(None, "--batch-per-gpu", min=1),
    accum: int = typer.Option(1, "--accum", min=1),
    compile_: bool = typer.Option(True, "--compile/--no-compile"),
    attention: str = typer.Option("exact", "--attention", help="exact or sdpa."),
    step_time: float | None = typer.Option(None, "--step-time", min=0.0, help="Seconds per optimizer step."),
    memory: str | None = typer.Option(None, "--memory", help="GPU memory per GPU as nvidia-smi shows it: 6.6GiB."),
    date: str | None = typer.Option(None, "--date", help="When it was measured (YYYY-MM-DD; default today)."),
    source: str | None = typer.Option(None, "--source", help="Where the numbers come from (required by hand)."),
    json_: bool = typer.Option(False, "--json", help="JSON on stdout."),
) -> None:
    """Fold measured runs or a hand-entered measurement into the local calibration store."""
    from jitplan.calibration.records import CalibrationRecord, add_record, all_records, store_path  # lazy: CLI start-up
    from jitplan.cli._output import emit, note  # lazy: start-up (rich, typer)
    from jitplan.errors import UsageError  # lazy: CLI start-up

    if list_:
        recs = all_records()
        emit(recs, json_mode=json_, render=lambda con: _render(recs, con))
        return
    added = []
    if gpu is not None:
        from jitplan.hardware.catalog import lookup  # lazy: CLI start-up
        from jitplan.hardware.spec import parse_bytes  # lazy: CLI start-up

        if batch_per_gpu is None or source is None or (step_time is None and memory is None):
            raise UsageError("a hand entry needs --batch-per-gpu, --source and --step-time and/or --memory")
        if attention not in ("exact", "sdpa"):
            raise UsageError(f"--attention must be exact or sdpa, got {attention!r}")
        rec = CalibrationRecord(
            gpu=lookup(gpu).name, variant=variant, img_size=img_size, compile=compile_, attention=attention,
            batch_per_gpu=batch_per_gpu, accum_steps=accum, world_size=gpus, step_time_s=step_time or None,
            memory_used_bytes=parse_bytes(memory, "--memory") if memory else None,
            date=date or datetime.date.today().isoformat(), source=source)
        added.append(add_record(rec))
    if runs:
        from jitplan.calibration.from_run import record_from_run  # lazy: CLI start-up
        from jitplan.runs.registry import Registry  # lazy: CLI start-up

        reg = Registry()
        for key in runs:
            row = reg.get_run(key)
            added.append(add_record(record_from_run(row.plan_path, row.run_dir, name=row.id)))
    if not added:
        raise UsageError("nothing to calibrate: give RUN ids, a hand entry (--gpu ...), or --list")
    note(f"calibration store: {store_path()}")
    emit(added, json_mode=json_, render=lambda con: _render(added, con))


def _render(recs, con) -> None:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title="calibration records")
    for c in ("GPU", "configuration", "step", "memory", "runs", "date", "source"):
        t.add_column(c)
    for r in recs:
        mem = f"{r.memory_used_bytes / 2**30:.2f} GiB" if r.memory_used_bytes else "-"
        step = f"{r.step_time_s:.3f} s" if r.step_time_s else "-"
        cfg = (f"{r.variant} {'compiled' if r.compile else 'eager'} {r.attention}, {r.world_size} GPU(s), "
               f"b {r.batch_per_gpu}")
        t.add_row(escape(r.gpu), escape(cfg), step, mem, str(r.runs), r.date, escape(r.source))
    con.print(t)


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_command)
