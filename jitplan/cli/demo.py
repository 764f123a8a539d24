"""``jitplan demo``: train the tiny JiT on the digits to a step target, draw samples, and check them.

    jitplan demo                          # 1,400 steps: about a minute on a quiet 2-core box, longer on a busy one
    jitplan demo --steps 300 --out runs/digits
    jitplan demo --minutes 2              # stop at 1,400 steps or after 2 minutes, whichever comes first
    jitplan demo --steps 20 --json        # a smoke run (tests, CI); 20 steps draw noise, and it says so

It goes through the normal local launch path: probe -> plan (workers from this machine's CPUs and RAM) ->
run folder -> torchrun, supervised and recorded in the run registry -> checkpoint -> ``jitmodel sample``
-> a classifier trained only on the real digits reads every sample -> ``jitmodel trajectory`` for one digit.
Continue the same run later with ``jitplan launch <run>/train.yaml --local``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TextIO, cast

import typer
from pydantic import BaseModel, ConfigDict

from jitmodel import custom
from jitplan.cli._output import JsonFlag, emit, note, print_next
from jitplan.demo import DEFAULT_STEPS, StepProgress, demo_config, labelled_grid, recognise, with_model
from jitplan.errors import CheckFailed, UsageError

TARGET = 0.8  # the share of samples the judge must recognise for the demo to call the grid legible


class DemoResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str
    run_dir: str
    device: str
    num_workers: int
    worker_reasons: list[str]
    status: str
    target_steps: int
    final_step: int | None
    seconds: float
    log: str
    checkpoint: str
    samples: str
    recognised: int
    of: int
    predictions: list[int]
    classifier_held_out: float
    trajectory: str | None
    trajectory_page: str | None


def _jitmodel(args: list[str], env: dict[str, str], what: str) -> None:
    from jitplan.launch import local  # lazy: CLI start-up

    cmd = [sys.executable, "-m", "jitmodel", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**local.pythonpath_env(), **env})
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise CheckFailed(f"{what} failed: {last}", hint=f"run it yourself: {' '.join(cmd)}")


def _render(r: DemoResult, c) -> None:
    share = r.recognised / max(r.of, 1)
    verdict = ("legible" if share >= TARGET else
               f"below the {TARGET:.0%} this demo aims for: train longer (--steps), or continue this run")
    for line in (f"trained {r.final_step} of {r.target_steps} steps in {r.seconds:g} s on {r.device} ({r.status})",
                 f"{r.recognised} of {r.of} samples recognised as their digit ({share:.0%}; {verdict})",
                 f"  judge       an SVM trained only on the real 8x8 scans ({r.classifier_held_out:.1%} on held-out "
                 "real digits)",
                 f"  samples     {r.samples}  (rows by digit, the score in the caption)",
                 *([f"  trajectory  {r.trajectory_page}  (open it in a browser)"] if r.trajectory_page else []),
                 f"  checkpoint  {r.checkpoint}", f"  log         {r.log}",
                 f"  run         {r.run_id}  (jitplan status {r.run_id})"):
        c.print(line, markup=False)  # rich wraps these at spaces
    print_next(c, "continue this run to train longer:", [f"jitplan launch {_short(r.run_dir)}/train.yaml --local "
                                                        f"--run-dir {_short(r.run_dir)}"], label="")
    print_next(c, "plan a real run, or one on this CPU:",
               ["jitplan plan --gpus 2xRTX3060 --host-ram 24GB --out plan.yaml",
                "jitplan plan --gpus cpu --out plan.yaml"])


def _short(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return path


def demo(
    steps: int = typer.Option(DEFAULT_STEPS, "--steps", min=1, help="Train to this many optimizer steps."),
    minutes: float | None = typer.Option(None, "--minutes", help="Also stop after this many minutes (graceful)."),
    out: Path | None = typer.Option(None, "--out", help="Run folder (default runs/demo-<time>)."),
    samples: int = typer.Option(4, "--samples", min=1, help="Samples per digit in the grid."),
    digit: int = typer.Option(7, "--digit", min=0, max=9, help="The digit whose denoising trajectory is drawn."),
    json_out: JsonFlag = False,
) -> None:
    """Train the tiny JiT on the digits (about a minute on a quiet 2-core box), draw samples, check them.

    jitplan demo --steps 1400
    """
    from jitplan.hardware.probe import run_probe  # lazy: CLI start-up
    from jitplan.launch import local  # lazy: CLI start-up
    from jitplan.launch.supervisor import run_local  # lazy: CLI start-up
    from jitplan.launch.torchrun import spec_for_run  # lazy: CLI start-up
    from jitplan.runs.registry import Registry  # lazy: CLI start-up
    from jitplan.runspec import RunSpec, save_run_spec  # lazy: CLI start-up

    if minutes is not None and minutes <= 0:
        raise UsageError(f"--minutes must be > 0, got {minutes:g}")
    hw = run_probe().to_hardware_spec()
    device = f"{hw.gpus_per_node} x {hw.gpu.name}" if hw.gpu is not None and hw.gpus_per_node else "CPU"
    cfg, reasons = demo_config(hw, steps=steps)
    run_dir = (out or Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    if (run_dir / "train.yaml").exists():
        raise UsageError(f"{run_dir} already holds a run", hint="pick another --out, or continue it with "
                         f"`jitplan launch {run_dir / 'train.yaml'} --local`")
    cfg = cfg.model_copy(update={"output_dir": "out"})
    run = RunSpec.from_train(cfg, gpus_per_node=hw.gpus_per_node if hw.gpu is not None else 0, cpus=hw.host.cpus)
    save_run_spec(run, run_dir / "train.yaml")
    spec = spec_for_run(run, config=str(run_dir / "train.yaml"), python=sys.executable, rdzv_id="demo")
    if hw.gpu is None:  # one thread: the tiny model gains little from two, and on a busy box they spin
        spec = spec.model_copy(update={"omp_num_threads": 1})
    note(f"demo: JiT-Tiny/4 on the digits on {device}, {cfg.data.num_workers} data worker(s), {steps} steps"
         + (f" or {minutes:g} min" if minutes else "") + f"; run folder {run_dir}")
    progress = StepProgress(steps, sys.stderr, tty=sys.stderr.isatty())
    t0 = time.monotonic()
    try:
        run_id, res = run_local(run_dir, spec, registry=Registry(), name="demo",
                                plan_path=str(run_dir / "train.yaml"), max_restarts=2, echo=cast(TextIO, progress),
                                time_budget_s=minutes * 60 if minutes else None)
    finally:
        progress.close()
    seconds = round(time.monotonic() - t0, 1)
    ckpt = run_dir / "out" / "last.pt"
    if res.status not in ("finished", "stopped") or not ckpt.is_file():
        raise CheckFailed(f"demo training {res.status}: {res.message}", hint=f"log: {run_dir / local.LOG_NAME}")

    note(f"trained {res.final_step} steps in {seconds:g} s; sampling {samples} per digit and reading them back")
    threads = {"OMP_NUM_THREADS": str(spec.omp_num_threads or 1)}
    grid, pics = run_dir / "samples.png", run_dir / "samples"
    _jitmodel(["sample", "--ckpt", str(ckpt), "--classes", "0,1,2,3,4,5,6,7,8,9", "--n", str(samples),
               "--device", "cpu", "--out", str(grid), "--out-dir", str(pics)], threads, "sampling")
    labels = [d for d in range(10) for _ in range(samples)]
    singles = sorted(pics.glob("[0-9]*.png"))
    ok, pred, held_out = recognise(singles, labels)
    labelled_grid(singles, labels, pred, grid, caption=f"JiT-Tiny/4 after {res.final_step} steps: {ok} of "
                  f"{len(labels)} recognised as their digit ({ok / max(len(labels), 1):.0%})")
    strip, page = run_dir / f"trajectory-{digit}.png", run_dir / f"trajectory-{digit}.html"
    _jitmodel(["trajectory", "--ckpt", str(ckpt), "--class", str(digit), "--device", "cpu", "--out", str(strip),
               "--html", str(page)], threads, "the trajectory")
    result = DemoResult(run_id=run_id, run_dir=str(run_dir), device=device, num_workers=cfg.data.num_workers,
                        worker_reasons=reasons, status=res.status, target_steps=steps, final_step=res.final_step,
                        seconds=seconds, log=str(run_dir / local.LOG_NAME), checkpoint=str(ckpt),
                        samples=str(grid), recognised=ok, of=len(labels), predictions=pred,
                        classifier_held_out=round(held_out, 4), trajectory=str(strip), trajectory_page=str(page))
    emit(result, json_mode=json_out, render=lambda c: _render(result, c))


class CpuPlan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = "cpu"
    trains_on: str
    cpus: int | None
    num_workers: int
    worker_reasons: list[str]
    steps: int
    quiet_minutes: float | None  # measured on the digits on a quiet 2-core box; None for a folder (not measured)
    plan: str | None
    train: dict


def wants_cpu(gpus: str | None, hardware: str | None) -> bool:
    """``plan --gpus cpu``, or ``--hardware`` a file probed on a machine without a GPU: the laptop plan."""
    from jitplan.hardware.spec import is_cpu_spec, load_hardware  # lazy: CLI start-up

    if gpus is not None:
        return is_cpu_spec(gpus)
    return hardware is not None and Path(hardware).is_file() and load_hardware(hardware).gpu is None


def plan_on_cpu(gpus: str | None, hardware: str | None, *, data: str | None, out: str | None, json_out: bool,
                host_ram: str | None = None, cpus: int | None = None, model: str | None = None,
                model_kwargs: dict[str, Any] | None = None) -> None:
    """``jitplan plan --gpus cpu``: the tiny JiT on the digits (or a small folder) on this machine's CPU, as a
    config ``jitplan launch FILE --local`` runs. The planner's models are for GPUs; this is the demo's
    recipe with workers from this machine's CPUs and RAM."""
    from jitplan.demo import QUIET_STEPS_PER_S, laptop_config  # lazy: CLI start-up
    from jitplan.hardware.host import read_host  # lazy: CLI start-up
    from jitplan.hardware.schema import HostSpec  # lazy: CLI start-up
    from jitplan.hardware.spec import hardware_from_flags, load_hardware  # lazy: CLI start-up
    from jitplan.runspec import RunSpec, save_run_spec  # lazy: CLI start-up

    hw = hardware_from_flags(gpus, host_ram=host_ram, cpus=cpus) if gpus else load_hardware(str(hardware))
    if hw.host.cpus is None or hw.host.ram_bytes is None:  # --gpus cpu is this machine: fill in what it has
        here = read_host()
        hw = hw.model_copy(update={"host": HostSpec(
            cpus=hw.host.cpus or here.cpus_usable, ram_bytes=hw.host.ram_bytes or here.ram_bytes,
            shm_bytes=hw.host.shm_bytes or here.shm_total_bytes, disk_free_bytes=hw.host.disk_free_bytes)})
    cfg, reasons, what = laptop_config(hw, steps=DEFAULT_STEPS, data=data)
    params = 0
    if model is not None:  # a user's network in place of JiT-Tiny: built on meta for its sizes (docs/models.md)
        cfg, params = _user_model(cfg, model, model_kwargs or {})
    minutes = round(DEFAULT_STEPS / QUIET_STEPS_PER_S / 60, 1) if data is None else None
    if out:  # one torch thread (cpus_per_node 1): the tiny model gains little from two, and on a busy box they spin
        run = RunSpec.from_train(cfg, gpus_per_node=0, cpus=1)
        save_run_spec(run.model_copy(update={"provenance": {
            **run.provenance, "cpus_per_node": f"1 torch thread for the tiny model (this machine: {hw.host.cpus})"}}),
            out)
    result = CpuPlan(trains_on=what, cpus=hw.host.cpus, num_workers=cfg.data.num_workers, worker_reasons=reasons,
                     steps=DEFAULT_STEPS, quiet_minutes=minutes, plan=out,
                     train=cfg.model_dump(mode="json", exclude_unset=True))

    def render(c) -> None:
        took = (f"about {minutes:g} min on a quiet 2-core box ({QUIET_STEPS_PER_S:g} steps/s measured; "
                "a busy machine takes longer and says so)" if minutes else "not measured for a folder: "
                "32 px is about 4x the work per step of the 16 px digits")
        name = cfg.model.variant if cfg.model.factory is None else f"{cfg.model.factory} ({params / 1e6:.2f}M params)"
        lines = [f"CPU plan: {name} at {cfg.model.img_size} px on {what}",
                 f"  processes   1 on the CPU (no GPU); batch {cfg.batch_per_gpu}, lr {cfg.optim.lr:g}, "
                 f"EMA {', '.join(f'{d:g}' for d in cfg.diffusion.ema_decays)} with warm-up",
                 f"  steps       {DEFAULT_STEPS:,} (max_steps; continue the run to train longer)",
                 f"  workers     {cfg.data.num_workers} data loader(s): {reasons[0] if reasons else 'as asked'}",
                 f"  time        {took}"]
        for line in lines:  # rich wraps the prose at spaces
            c.print(line, markup=False)
        if out:
            c.print(f"plan written to {out}", markup=False)
            print_next(c, "train it here, supervised:", [f"jitplan launch {out} --local"])
        else:
            given = f"--gpus {gpus}" if gpus else f"--hardware {hardware}"
            print_next(c, "write it, then train it here:",
                       [f"jitplan plan {given}{f' --data {data}' if data else ''} --out plan.yaml",
                        "jitplan launch plan.yaml --local"])

    emit(result, json_mode=json_out, render=render)


def _user_model(cfg: Any, model: str, kwargs: dict[str, Any]) -> tuple[Any, int]:
    """(the laptop config with the user's network, its parameter count)."""
    try:
        spec = custom.resolved(model)
        net = custom.build_model({"factory": spec, "factory_kwargs": kwargs}, device="meta")
    except custom.ModelSpecError as e:
        raise UsageError(str(e)) from None
    params = sum(p.numel() for p in net.parameters())
    new = with_model(cfg, spec, kwargs, in_channels=net.in_channels, input_size=net.input_size,
                     num_classes=net.num_classes, data_classes=cfg.model.num_classes)
    return new, params


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
