"""``jitplan demo``: plan for this machine, train the tiny JiT on the digits for about a minute, draw samples.

    jitplan demo                          # ~1 minute on the CPU, then runs/demo-<time>/samples.png
    jitplan demo --minutes 5 --out runs/digits
    jitplan demo --steps 20 --json        # a fixed number of steps (tests, CI)

It goes through the normal local launch path: probe -> plan (workers from this machine's CPUs and RAM) ->
run folder -> torchrun, supervised and recorded in the run registry -> checkpoint -> ``jitmodel sample``.
Continue the same run later with ``jitplan launch <run>/train.yaml --local``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import typer
from pydantic import BaseModel, ConfigDict

from jitplan.cli._output import emit, note
from jitplan.errors import CheckFailed, UsageError

DIGITS_IMAGES = 1797
# docs/training.md's digits recipe: JiT-Tiny/4 at 16 px, a high LR and short EMAs so that a minute shows digits.
DEMO_TRAIN = {
    "model": {"variant": "JiT-Tiny/4", "img_size": 16, "num_classes": 10},
    "data": {"kind": "digits", "num_images": DIGITS_IMAGES},
    "optim": {"lr": 1.0e-3, "warmup_epochs": 1},
    "diffusion": {"ema_decays": [0.995, 0.999], "ema_warmup": True},
    "sample": {"steps": 20, "cfg": 2.0, "interval_min": 0.1},
    "batch_per_gpu": 32, "epochs": 1000, "log_every": 20,
}


class DemoResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str
    run_dir: str
    device: str
    num_workers: int
    worker_reasons: list[str]
    status: str
    final_step: int | None
    seconds: float
    log: str
    checkpoint: str | None
    samples: str | None


def demo_config(hardware, *, steps: int | None, minutes: float):
    """The demo's TrainConfig for ``hardware`` (a probed HardwareSpec): workers from its CPUs, RAM, shm."""
    from jitmodel.config import TrainConfig
    from jitplan.planner.workers import decide_workers

    host = hardware.host
    ranks = max(hardware.gpus_per_node, 1) if hardware.gpu is not None else 1
    wp = decide_workers(requested=2, ranks_per_node=ranks, micro_batch=DEMO_TRAIN["batch_per_gpu"], img_size=16,
                        num_images=DIGITS_IMAGES, ram_bytes=host.ram_bytes, cpus=host.cpus, shm_bytes=host.shm_bytes)
    data = {**DEMO_TRAIN["data"], "num_workers": wp.per_rank}  # 0 workers: DataConfig drops prefetching
    # Checkpoint often: a minute-long run stopped by its time budget keeps what it learned.
    every = max(1, min(50, steps or 50))
    cfg = TrainConfig.model_validate({**DEMO_TRAIN, "data": data, "max_steps": steps, "world_size": ranks,
                                      "checkpoint": {"every_steps": every, "keep_last": 2}})
    return cfg, wp.reasons


def demo(
    minutes: float = typer.Option(1.0, "--minutes", help="Time budget for training (stops gracefully)."),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Train this many steps (no time budget)."),
    out: Path | None = typer.Option(None, "--out", help="Run folder (default runs/demo-<time>)."),
    samples: int = typer.Option(2, "--samples", min=1, help="Samples per digit in the grid."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Train the tiny JiT on the digits for about a minute on this machine, then draw samples.

    jitplan demo --minutes 1
    """
    from jitplan.hardware.probe import run_probe
    from jitplan.launch import local
    from jitplan.launch.registry import Registry
    from jitplan.launch.supervisor import run_local
    from jitplan.launch.torchrun import spec_for_run
    from jitplan.runspec import RunSpec, save_run_spec

    if minutes <= 0:
        raise UsageError(f"--minutes must be > 0, got {minutes:g}")
    hw = run_probe().to_hardware_spec()
    device = f"{hw.gpus_per_node} x {hw.gpu.name}" if hw.gpu is not None and hw.gpus_per_node else "CPU"
    cfg, reasons = demo_config(hw, steps=steps, minutes=minutes)
    run_dir = (out or Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    if (run_dir / "train.yaml").exists():
        raise UsageError(f"{run_dir} already holds a run", hint="pick another --out, or continue it with "
                         f"`jitplan launch {run_dir / 'train.yaml'} --local`")
    cfg = cfg.model_copy(update={"output_dir": "out"})
    run = RunSpec.from_train(cfg, gpus_per_node=hw.gpus_per_node if hw.gpu is not None else 0, cpus=hw.host.cpus)
    save_run_spec(run, run_dir / "train.yaml")
    spec = spec_for_run(run, config=str(run_dir / "train.yaml"), python=sys.executable, rdzv_id="demo")
    budget = None if steps else minutes * 60
    note(f"demo: JiT-Tiny/4 on the digits on {device}, {cfg.data.num_workers} data worker(s); "
         + (f"{steps} steps" if steps else f"{minutes:g} min") + f"; run folder {run_dir}")
    t0 = time.monotonic()
    run_id, res = run_local(run_dir, spec, registry=Registry(), name="demo", plan_path=str(run_dir / "train.yaml"),
                            max_restarts=2, echo=None if json_out else sys.stderr, time_budget_s=budget)
    seconds = round(time.monotonic() - t0, 1)
    ckpt = run_dir / "out" / "last.pt"
    if res.status != "finished" or not ckpt.is_file():
        raise CheckFailed(f"demo training {res.status}: {res.message}", hint=f"log: {run_dir / local.LOG_NAME}")
    grid = run_dir / "samples.png"
    cmd = [sys.executable, "-m", "jitmodel", "sample", "--ckpt", str(ckpt), "--classes", "0,1,2,3,4,5,6,7,8,9",
           "--n", str(samples), "--device", "cpu", "--out", str(grid)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=local.pythonpath_env())
    if done.returncode != 0 or not grid.is_file():
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise CheckFailed(f"sampling failed: {last}", hint=f"run it yourself: {' '.join(cmd)}")
    result = DemoResult(run_id=run_id, run_dir=str(run_dir), device=device, num_workers=cfg.data.num_workers,
                        worker_reasons=reasons, status=res.status, final_step=res.final_step, seconds=seconds,
                        log=str(run_dir / local.LOG_NAME), checkpoint=str(ckpt), samples=str(grid))
    emit(result, json_mode=json_out, render=lambda c: c.print(
        f"trained {res.final_step} steps in {seconds:g} s on {device} ({res.message})\n"
        f"  samples     {grid}\n  checkpoint  {ckpt}\n  log         {result.log}\n"
        f"  run         {run_id}  (jitplan status {run_id})\n"
        f"  continue    jitplan launch {run_dir / 'train.yaml'} --local --run-dir {run_dir}", markup=False,
        soft_wrap=True))


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
