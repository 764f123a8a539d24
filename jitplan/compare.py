"""Compare objectives (x / v / eps prediction, and the loss space) on the same data, seed and budget.

Each *arm* is one ``prediction:loss_space`` setting of ``DiffusionConfig``; everything else (network,
data, data order, initial weights, t/noise draws, optimizer, budget) is the base config's. Each arm is a
normal run through the launch path (run folder, torchrun, supervisor, registry), then this process reads
its ``metrics.jsonl`` and ``last.pt`` and scores it the same way for every arm:

* training loss curves (each in its own loss space: values of different spaces are not comparable),
* a common metric: the v-space loss of every arm on one fixed batch, fixed noise and a fixed t grid
  (the quantiles of the training t distribution), through ``jitmodel.objectives``,
* images/s and peak memory (from the trainer's metrics),
* a samples grid per arm (one class per column) and the quality metric the data supports: on ``digits``,
  the accuracy of the digits classifier on class-conditional samples and a Fréchet distance in its
  feature space; FID (Inception) when reference statistics are given.

Results: ``results.json``, ``summary.md``, ``loss.png`` and ``grids/<arm>.png`` under the output folder.

    jitplan compare templates/compare/digits.yaml --objectives x,v,eps --steps 300 --out runs/cmp
    jitplan compare plan.yaml --arm x:v --arm eps:eps --minutes 10
    jitplan compare --gpus 1xRTX4090 --recipe JiT-B/16 --data /data/imagenet --arm x:v --arm v:v --images 1e6

    >>> [a.name for a in parse_arms(["x:v", "eps"], None)]
    ['x:v', 'eps:v']
    >>> Budget(steps=100).max_steps(effective_batch=64), Budget(images=1000).max_steps(effective_batch=64)
    (100, 16)
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from jitplan.errors import CheckFailed, UsageError

KINDS = ("x", "v", "eps")  # the same names as jitmodel.objectives.KINDS (kept here: no torch import)
SCHEMA_VERSION = 1
Note = Callable[[str], None]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------------------------------------
# Settings (pure)
# --------------------------------------------------------------------------------------------------------
class Arm(_Strict):
    """One objective: what the network output is read as, and where the L2 loss is taken."""

    prediction: Literal["x", "v", "eps"]
    loss_space: Literal["x", "v", "eps"] = "v"

    @property
    def name(self) -> str:
        return f"{self.prediction}:{self.loss_space}"

    @property
    def slug(self) -> str:
        """Path-safe: ``x-v``."""
        return f"{self.prediction}-{self.loss_space}"


def parse_arm(text: str) -> Arm:
    """``x`` (v loss, as JiT), ``eps:eps``, ``v:x`` -> Arm; UsageError on anything else."""
    pred, _, loss = text.strip().lower().partition(":")
    loss = loss or "v"
    for what, k in (("prediction", pred), ("loss space", loss)):
        if k not in KINDS:
            raise UsageError(f"unknown {what} {k!r} in objective {text!r}; expected PRED[:LOSS] with each of "
                             f"{', '.join(KINDS)} (e.g. x:v, eps:eps)")
    return Arm(prediction=pred, loss_space=loss)  # type: ignore[arg-type]


def parse_arms(arms: list[str] | None, objectives: str | None) -> list[Arm]:
    """``--arm`` values and/or ``--objectives x,v,eps`` (each with the v loss) -> at least two distinct arms."""
    texts = list(arms or []) + [o for o in (objectives or "").split(",") if o.strip()]
    out: list[Arm] = []
    for t in texts:
        a = parse_arm(t)
        if a in out:
            raise UsageError(f"objective {a.name} is given twice")
        out.append(a)
    if len(out) < 2:
        raise UsageError(f"a comparison needs at least two objectives, got {len(out)}",
                         hint="e.g. --objectives x,v,eps or --arm x:v --arm eps:eps")
    return out


class Budget(_Strict):
    """Exactly one of: optimizer steps, training images, or wall-clock minutes per arm."""

    steps: Annotated[int, Field(gt=0)] | None = None
    images: Annotated[int, Field(gt=0)] | None = None
    minutes: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _one(self) -> Budget:
        given = [k for k in ("steps", "images", "minutes") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one budget (steps, images or minutes), got {given or 'none'}")
        return self

    def max_steps(self, effective_batch: int) -> int | None:
        """The step cap of a steps or images budget (images rounded up to whole steps); None for minutes."""
        if self.steps is not None:
            return self.steps
        if self.images is not None:
            return math.ceil(self.images / effective_batch)
        return None

    def describe(self) -> str:
        if self.steps is not None:
            return f"{self.steps} optimizer steps"
        if self.images is not None:
            return f"{self.images} training images"
        return f"{self.minutes:g} wall-clock minutes of training"


def make_budget(steps: int | None, images: int | None, minutes: float | None) -> Budget:
    """Budget from CLI values; UsageError (exit 2) for zero, negative or several budgets."""
    for flag, v in (("--steps", steps), ("--images", images), ("--minutes", minutes)):
        if v is not None and v <= 0:
            raise UsageError(f"{flag} must be > 0, got {v:g}")
    given = [f for f, v in (("--steps", steps), ("--images", images), ("--minutes", minutes)) if v is not None]
    if len(given) != 1:
        raise UsageError(f"give exactly one budget: --steps N, --images N or --minutes M (got {', '.join(given) or 'none'})")
    return Budget(steps=steps, images=images, minutes=minutes)


def arm_train_config(base: Any, arm: Arm, budget: Budget, *, seed: int | None, world_size: int,
                     log_every: int | None = None) -> Any:
    """The TrainConfig of one arm: the base with this objective, the seed and the budget's step cap. Pure.

    With a minutes budget the step cap of the base config stays (the launcher stops the run on time).
    """
    from jitmodel.config import TrainConfig

    diffusion = base.diffusion.model_copy(update={"prediction": arm.prediction, "loss_space": arm.loss_space})
    cap = budget.max_steps(base.effective_batch(world_size))
    upd: dict[str, Any] = {"diffusion": diffusion, "max_steps": cap if cap is not None else base.max_steps}
    if seed is not None:
        upd["seed"] = seed
    if log_every is not None:
        upd["log_every"] = log_every
    elif cap is not None:  # about 60 points on the curve
        upd["log_every"] = max(1, min(base.log_every, cap // 60))
    return TrainConfig.model_validate({**base.model_dump(), **upd})


# --------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------
class ArmResult(_Strict):
    arm: str
    prediction: str
    loss_space: str
    status: str  # finished | stopped (minutes budget) | failed
    message: str = ""
    run_dir: str
    steps: int | None = None
    images: int | None = None
    wall_s: float  # the whole run, start-up included
    images_per_s: float | None = None  # training throughput (median over the logged windows)
    peak_mem_mib: float | None = None
    mem_kind: str | None = None  # gpu_allocated | rss
    loss_curve: list[tuple[int, float]] = Field(default_factory=list)  # (step, loss in its own space)
    final_loss: float | None = None
    v_loss_common: float | None = None  # v-space loss on the fixed batch / t grid (comparable)
    v_loss_by_t: list[tuple[float, float]] = Field(default_factory=list)
    accuracy: float | None = None  # digits classifier on class-conditional samples
    fd_digits: float | None = None  # Fréchet distance in the digits classifier's feature space
    fid: float | None = None  # Inception FID against --ref-stats
    samples: int = 0
    grid: str | None = None


class CompareResult(_Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    variant: str
    img_size: int
    patch_dim: int  # values per patch: patch^2 * channels
    hidden: int
    data: str
    budget: Budget
    seed: int
    effective_batch: int
    backend: str
    weights: str  # ema1 | ema2 | raw: what was sampled and scored
    sample_steps: int
    arms: list[ArmResult]
    notes: list[str] = Field(default_factory=list)
    files: dict[str, str] = Field(default_factory=dict)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl (a torn last line from a killed run is skipped)."""
    recs = []
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            recs.append(rec)
    return recs


def summarize_metrics(recs: list[dict[str, Any]]) -> dict[str, Any]:
    """Loss curve, median images/s (the first window, which holds start-up, only when it is the only one)
    and peak memory from training records. Pure.

        >>> summarize_metrics([{"step": 10, "loss": 2.0, "img_per_s": 5.0, "peak_mem_mib": 9.0, "mem_kind": "rss"},
        ...                    {"step": 20, "loss": 1.0, "img_per_s": 8.0, "peak_mem_mib": 10.0, "mem_kind": "rss"}])
        {'loss_curve': [(10, 2.0), (20, 1.0)], 'final_loss': 1.0, 'images_per_s': 8.0, 'peak_mem_mib': 10.0, 'mem_kind': 'rss'}
    """
    train = [r for r in recs if isinstance(r.get("loss"), (int, float)) and "step" in r]
    curve = [(int(r["step"]), float(r["loss"])) for r in train]
    speeds = [float(r["img_per_s"]) for r in train if isinstance(r.get("img_per_s"), (int, float))]
    steady = speeds[1:] or speeds
    mems = [float(r["peak_mem_mib"]) for r in train if isinstance(r.get("peak_mem_mib"), (int, float))]
    return {"loss_curve": curve, "final_loss": curve[-1][1] if curve else None,
            "images_per_s": sorted(steady)[len(steady) // 2] if steady else None,
            "peak_mem_mib": max(mems) if mems else None,
            "mem_kind": next((r["mem_kind"] for r in reversed(train) if r.get("mem_kind")), None)}


# --------------------------------------------------------------------------------------------------------
# Running the arms through the launch path
# --------------------------------------------------------------------------------------------------------
class Runner:
    """Runs one arm in ``run_dir`` from a prepared config file; returns (status, message). Backends: local, ssh."""

    backend = "local"

    def run(self, run_dir: Path, config: Path, *, minutes: float | None, name: str) -> tuple[str, str]:
        raise NotImplementedError


class LocalRunner(Runner):
    """The ``jitplan launch --local`` path: torchrun under the supervisor, recorded in the registry."""

    def __init__(self, shape: Any, *, threads: int | None = None, max_restarts: int = 1, echo: Any = None,
                 registry: Any = None):
        self.shape, self.threads, self.max_restarts, self.echo = shape, threads, max_restarts, echo
        self.registry = registry

    def run(self, run_dir: Path, config: Path, *, minutes: float | None, name: str) -> tuple[str, str]:
        from jitplan.launch import local
        from jitplan.launch.registry import Registry
        from jitplan.launch.supervisor import run_local
        from jitplan.launch.torchrun import spec_from_plan

        env = {"OMP_NUM_THREADS": str(self.threads)} if self.threads else None
        spec = spec_from_plan(self.shape, config=str(config), python=sys.executable, rdzv_id=name, env=env)
        timer = _StopOnTime(run_dir, minutes, lambda: local.stop_run(run_dir, grace_s=120)) if minutes else None
        try:
            _, res = run_local(run_dir, spec, registry=self.registry or Registry(), name=name,
                               max_restarts=self.max_restarts, echo=self.echo)
        finally:
            if timer is not None:
                timer.cancel()
        if res.status == "stopped" and timer is not None and timer.fired:
            return "stopped", f"stopped after {minutes:g} min of training at step {res.final_step}"
        return res.status, res.message


class SSHRunner(Runner):
    """The ``jitplan launch --ssh`` path (upload, detached start, follow), then the run's ``out/`` comes back
    here (metrics.jsonl, last.pt) for scoring. A minutes budget stops the remote run (SIGTERM: it checkpoints)."""

    backend = "ssh"

    def __init__(self, shape: Any, target: Any, opts: Any, *, remote_dir: str = "jitplan", echo: Any = None,
                 registry: Any = None, create_env: bool = False):
        self.shape, self.target, self.opts, self.remote_dir = shape, target, opts, remote_dir
        self.echo, self.registry, self.create_env = echo, registry, create_env

    def download_argv(self, remote_run_dir: str, run_dir: Path) -> list[str]:
        """rsync the remote ``out/`` (links followed, rolling checkpoints left there) into ``run_dir/out/``."""
        import shlex

        from jitplan.launch.ssh import ssh_base

        return ["rsync", "-azL", "--protect-args", "--exclude=ckpt/", "--exclude=tb/", "-e",
                shlex.join(ssh_base(self.target, self.opts)),
                f"{self.target.user}@{self.target.host}:{remote_run_dir}/out/", f"{run_dir}/out/"]

    def run(self, run_dir: Path, config: Path, *, minutes: float | None, name: str) -> tuple[str, str]:
        import subprocess

        from jitplan.launch.registry import Registry
        from jitplan.launch.ssh import SSHLaunch, launch_ssh, run_script_path
        from jitplan.launch.torchrun import node_command, spec_from_plan

        registry = self.registry or Registry()
        job = SSHLaunch(self.target, self.opts, root=self.remote_dir, run_id=name)
        python = job.venv_python if self.create_env else self.opts.python
        spec = spec_from_plan(self.shape, config=config.name, python=python, rdzv_id=name)
        res = launch_ssh(job, registry=registry, name=name, local_code=project_root(),
                         files=[config, run_script_path()], command=node_command(spec), doctor=False,
                         create_env=self.create_env, follow=False, out=self.echo or sys.stderr)
        code = job.follow(self.echo or sys.stderr, timeout_s=minutes * 60 if minutes else None)
        status = "finished" if code == 0 else "failed"
        if minutes and code is None:
            code, status = job.stop(), "stopped"
        msg = f"remote trainer on {self.target} exited with code {code}"
        registry.set_status(res.run_id, status, msg)
        dl = subprocess.run(self.download_argv(job.run_dir, run_dir), capture_output=True, text=True,
                            stdin=subprocess.DEVNULL)
        if dl.returncode != 0:
            last = (dl.stderr.strip().splitlines() or ["(no output)"])[-1]
            return "failed", f"{msg}; fetching {job.run_dir}/out failed: {last}"
        return status, msg


def project_root() -> Path:
    """The checkout holding jitmodel and jitplan (what the SSH path uploads)."""
    import jitmodel

    root = Path(jitmodel.__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise UsageError(f"jitmodel is installed at {root} without its project folder, so there is no code to upload",
                         hint="run jitplan from a checkout (pip install -e .)")
    return root


class _StopOnTime:
    """Stop a run ``minutes`` after its trainer has started (its start-up line is in train.log)."""

    STARTED = "steps/epoch"  # in the trainer's first note, printed once data and model are built

    def __init__(self, run_dir: Path, minutes: float, stop: Callable[[], Any], startup_limit_s: float = 600):
        self.run_dir, self.seconds, self.stop, self.limit = run_dir, minutes * 60, stop, startup_limit_s
        self.fired = False
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        log, t0 = self.run_dir / "train.log", time.monotonic()
        while not self._cancel.is_set() and time.monotonic() - t0 < self.limit:
            if log.is_file() and self.STARTED in log.read_text(errors="replace"):
                break
            self._cancel.wait(0.5)
        if not self._cancel.wait(self.seconds):
            self.fired = True
            self.stop()

    def cancel(self) -> None:
        self._cancel.set()
        self._thread.join(timeout=5)


def load_base(path: Path) -> tuple[Any, Any, bool]:
    """(plan or TrainConfig, the hardware shape the torchrun spec reads, whether it is a plan); UsageError."""
    import yaml

    from jitmodel.config import load_train_config

    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"plan file not found: {path}") from None
    except (yaml.YAMLError, IsADirectoryError, UnicodeDecodeError) as e:
        raise UsageError(f"{path} is not a readable YAML file: {' '.join(str(e).split())[:120]}") from None
    if isinstance(raw, dict) and "train" in raw and "hardware" in raw:
        from pydantic import ValidationError

        from jitplan.schemas import load_plan

        try:
            plan = load_plan(path)
        except (ValueError, ValidationError) as e:
            raise UsageError(f"{path}: not a valid plan: {' '.join(str(e).split())[:200]}") from None
        return plan, plan, True
    try:
        cfg = load_train_config(path)
    except ValueError as e:
        raise UsageError(f"{path}: neither a plan nor a TrainConfig: {' '.join(str(e).split())[:200]}") from None
    shape = {"hardware": {"nodes": 1, "gpus_per_node": cfg.world_size or 1, "host": {"cpus": os.cpu_count()}}}
    return cfg, shape, False


def world_size_of(shape: Any) -> int:
    from jitplan.launch.torchrun import spec_from_plan

    return spec_from_plan(shape, config="x").world_size


def run_compare(base: Any, shape: Any, arms: list[Arm], budget: Budget, out: str | Path, *,
                runner: Runner | None = None, seed: int | None = None, ema: str | None = None,
                sample_steps: int = 50, per_class: int = 10, ref_stats: str | None = None,
                threads: int | None = None, note: Note | None = None) -> CompareResult:
    """Run every arm with the same data, seed and budget, score them alike, and write the results.

    ``base`` is a Plan or a TrainConfig; ``shape`` what the torchrun spec reads (the plan itself, or a
    hardware mapping). ``threads`` caps torch's CPU threads while scoring (as ``--threads`` does for the
    ranks: on a busy machine fewer threads are much faster). Returns the CompareResult also written to
    ``out/results.json``.
    """
    from jitplan.launch import local

    note = note or (lambda m: None)
    out = Path(out).resolve()
    is_plan = not hasattr(base, "diffusion")
    train = base.train if is_plan else base
    world = world_size_of(shape)
    runner = runner or LocalRunner(shape)
    weights = ema or train.sample.ema
    if weights not in ("ema1", "ema2", "raw"):
        raise UsageError(f"--ema must be ema1, ema2 or raw, got {weights!r}")
    results: list[ArmResult] = []
    run_dirs: dict[str, Path] = {}
    for arm in arms:
        rdir = out / "arms" / arm.slug
        if rdir.exists() and any(rdir.iterdir()):
            raise UsageError(f"{rdir} already holds a run; choose a new --out folder")
    if threads:
        import torch

        torch.set_num_threads(threads)
    note("preparing the common evaluation (fixed batch, t grid, classifier / reference statistics)")
    scorer = Scorer(train, seed=train.seed if seed is None else seed, ref_stats=ref_stats)
    for arm in arms:
        cfg = arm_train_config(train, arm, budget, seed=seed, world_size=world)
        rdir = out / "arms" / arm.slug
        what = base.model_copy(update={"train": cfg}) if is_plan else cfg
        config = local.prepare_run_dir(what, rdir)
        note(f"arm {arm.name}: training in {rdir} ({budget.describe()})")
        t0 = time.monotonic()
        status, message = runner.run(rdir, config, minutes=budget.minutes, name=f"compare-{out.name}-{arm.slug}")
        wall = time.monotonic() - t0
        recs = read_metrics(rdir / "out" / "metrics.jsonl")
        results.append(ArmResult(arm=arm.name, prediction=arm.prediction, loss_space=arm.loss_space, status=status,
                                 message=message, run_dir=str(rdir), wall_s=round(wall, 2),
                                 **summarize_metrics(recs)))
        run_dirs[arm.name] = rdir
        note(f"arm {arm.name}: {status}: {message} ({wall:.0f} s)")

    (out / "grids").mkdir(parents=True, exist_ok=True)
    for res in results:
        ckpt = run_dirs[res.arm] / "out" / "last.pt"
        if not ckpt.is_file():
            res.message = (res.message + "; " if res.message else "") + "no checkpoint to score"
            continue
        note(f"arm {res.arm}: scoring {ckpt} ({weights} weights, {sample_steps}-step sampler)")
        scorer.score(res, ckpt, weights=weights, sample_steps=sample_steps, per_class=per_class,
                     grid_path=out / "grids" / f"{res.arm.replace(':', '-')}.png",
                     effective_batch=train.effective_batch(world))
    mc = train.model
    result = CompareResult(
        variant=mc.variant, img_size=mc.img_size, patch_dim=mc.spec.patch ** 2 * mc.in_channels,
        hidden=mc.spec.hidden, data=train.data.kind if train.data.kind == "digits" else str(train.data.path),
        budget=budget, seed=train.seed if seed is None else seed, effective_batch=train.effective_batch(world),
        backend=runner.backend, weights=weights, sample_steps=sample_steps, arms=results,
        notes=_notes(results, scorer, budget))
    write_outputs(result, out)
    return result


def _notes(results: list[ArmResult], scorer: Scorer, budget: Budget) -> list[str]:
    """The caveats printed under the table. Pure."""
    spaces = sorted({r.loss_space for r in results})
    notes = []
    steps = {r.arm: r.steps for r in results if r.steps is not None}
    if budget.minutes is not None and len(set(steps.values())) > 1:
        notes.append("Wall-clock budget: the arms ran different numbers of steps (" +
                     ", ".join(f"{a} {n}" for a, n in steps.items()) + "), which also reflects the machine's "
                     "load at the time; for a like-for-like comparison of objectives use --steps or --images.")
    if len(spaces) > 1:
        notes.append(f"Training losses are each in their own loss space ({', '.join(spaces)}); their values are not "
                     "comparable across spaces. Compare the common v-space loss instead.")
    if scorer.x is not None:
        notes.append(f"Common v-space loss: every arm's network on the same {scorer.n_fixed} training images, the "
                     f"same noise and {len(scorer.t)} fixed times (quantiles of the logit-normal training t "
                     "distribution), converted to v with jitmodel.objectives (t_eps clamp as in training).")
    if scorer.digits is not None:
        notes.append("Digits accuracy: a small MLP trained on scikit-learn's 8x8 digits classifies class-conditional "
                     "samples (downscaled to 8x8); FD-digits is the Fréchet distance in its 64-d hidden features "
                     f"against all {scorer.n_real} real digits (biased upwards with few samples).")
    elif scorer.ref is None:
        notes.append("No quality metric: the data is not digits and no --ref-stats were given for FID.")
    notes += scorer.notes
    failed = [r.arm for r in results if r.status == "failed"]
    if failed:
        notes.append(f"Failed arm(s): {', '.join(failed)}; see their train.log.")
    return notes


# --------------------------------------------------------------------------------------------------------
# Scoring (torch, lazily)
# --------------------------------------------------------------------------------------------------------
class Scorer:
    """Everything that must be the same for every arm: a fixed batch, noise and t grid; sample noise;
    the digits classifier and the real-digit statistics; the Inception extractor and reference stats."""

    def __init__(self, train: Any, *, seed: int, ref_stats: str | None = None, n_fixed: int = 256,
                 n_t: int = 16):
        import torch

        from jitmodel import data as data_mod

        self.train, self.seed, self.notes = train, seed, []
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        mc = train.model
        self.x = self.digits = self.ref = self.inception = None
        self.n_fixed = self.n_real = 0
        self.t = torch.empty(0)
        self.num_classes = mc.num_classes
        if ref_stats:  # first: a bad path fails in a second, before any training
            self._fid_setup(ref_stats)
        try:
            ds = data_mod.build_dataset(train.data, mc.img_size, mc.in_channels, mc.num_classes)
        except (ValueError, OSError) as e:  # e.g. the data sits on the SSH host only
            self.notes.append(f"Common v-loss and data metrics skipped: the data is not readable here "
                              f"({' '.join(str(e).split())[:160]}).")
            ds = None
        if ds is not None:
            self._fixed_batch(ds, seed, n_fixed, n_t)

    def _fixed_batch(self, ds: Any, seed: int, n_fixed: int, n_t: int) -> None:
        import numpy as np
        import torch

        train, mc, d = self.train, self.train.model, self.train.diffusion
        g = torch.Generator().manual_seed(seed + 7919)
        idx = torch.randperm(len(ds), generator=g)[: min(n_fixed, len(ds))]
        items = [ds[int(i)] for i in idx]
        self.n_fixed = len(items)
        self.x = torch.stack([im for im, _ in items]).float().div(255).mul(2).sub(1)
        self.y = torch.tensor([lab for _, lab in items])
        self.e = torch.randn(self.x.shape, generator=g) * d.noise_scale
        q = (torch.arange(n_t, dtype=torch.float64) + 0.5) / n_t
        self.t = torch.sigmoid(d.P_mean + d.P_std * torch.special.ndtri(q)).float()
        self.num_classes = min(mc.num_classes, len(ds.classes))
        if train.data.kind == "digits":
            from jitmodel.fid import DigitsExtractor

            self.digits = DigitsExtractor(seed=0)
            real = torch.stack([ds[i][0] for i in range(len(ds))])
            feats, _ = self.digits(real)
            self.real_mu, self.real_sigma, self.n_real = feats.mean(0), np.cov(feats, rowvar=False), len(feats)

    def _fid_setup(self, ref_stats: str) -> None:
        from jitmodel.fid import FeatureExtractorMissing, get_extractor, load_stats

        try:
            self.ref = load_stats(ref_stats)
        except (OSError, ValueError, KeyError) as e:
            raise UsageError(f"--ref-stats {ref_stats}: {' '.join(str(e).split())[:160]}") from None
        try:
            self.inception = get_extractor(self.ref[2] or "inception", device=str(self.device))
        except FeatureExtractorMissing as e:
            self.notes.append(f"FID skipped: {' '.join(str(e).split())[:200]}")

    def common_v_loss(self, den: Any, prediction: str) -> list[tuple[float, float]]:
        """(t, v-space loss) on the fixed batch for each grid time."""
        import torch

        from jitmodel import objectives

        t_eps = den.diff_cfg.t_eps
        x, e, y = self.x.to(self.device), self.e.to(self.device), self.y.to(self.device)
        rows = []
        with torch.no_grad():
            for t in self.t.tolist():
                tb = torch.full((x.shape[0],), t, device=self.device)
                z = objectives.interpolate(x, e, tb)
                out = den.net(z, tb, y).float()
                loss = objectives.per_sample_loss(out, x, e, z, tb, prediction, "v", t_eps).mean()
                rows.append((round(t, 5), float(loss)))
        return rows

    def classes(self, k: int = 10) -> list[int]:
        """Up to ``k`` class ids spread over the label range (all of them for digits)."""
        n = self.num_classes
        return list(range(n)) if n <= k else sorted({round(i * n / k) for i in range(k)})

    def score(self, res: ArmResult, ckpt: Path, *, weights: str, sample_steps: int, per_class: int,
              grid_path: Path, effective_batch: int) -> None:
        import numpy as np
        import torch

        from jitmodel.checkpoint import load_checkpoint
        from jitmodel.fid import frechet_distance
        from jitmodel.sample import load_for_sampling, make_grid, noise_for_ids, sample, save_png, to_uint8

        step = int(load_checkpoint(ckpt).get("step") or 0)
        res.steps, res.images = step, step * effective_batch
        try:
            loaded = load_for_sampling(ckpt, ema=weights, device=self.device)
        except ValueError as e:
            raise CheckFailed(f"{res.arm}: cannot load {ckpt}: {e}") from None
        den, d, mc = loaded.denoiser, loaded.diffusion, loaded.model_cfg
        if (d.prediction, d.loss_space) != (res.prediction, res.loss_space):
            raise CheckFailed(f"{ckpt} records prediction {d.prediction}, loss {d.loss_space}; expected {res.arm}")
        if self.x is not None:
            res.v_loss_by_t = self.common_v_loss(den, d.prediction)
            res.v_loss_common = float(np.mean([v for _, v in res.v_loss_by_t]))

        cls = self.classes()
        y = torch.tensor(cls * per_class, device=self.device)  # row r: one sample of every class
        shape = (mc.in_channels, mc.img_size, mc.img_size)
        z = noise_for_ids(list(range(len(y))), self.seed, shape, d.noise_scale, self.device)
        scfg = loaded.sample_defaults.model_copy(update={"steps": sample_steps})
        chunks = []
        with torch.no_grad():
            for k in range(0, len(y), 100):
                img, _ = sample(loaded.x_hat, z[k:k + 100], y[k:k + 100], scfg, num_classes=mc.num_classes,
                                t_eps=d.t_eps)
                chunks.append(to_uint8(img))
        u8 = torch.cat(chunks)
        res.samples = len(u8)
        rows = min(per_class, 10)
        res.grid = str(save_png(grid_path, make_grid(u8[: rows * len(cls)], ncol=len(cls))))
        rgb = u8 if u8.shape[1] == 3 else u8[:, :1].expand(-1, 3, -1, -1)
        if self.digits is not None:
            feats, logits = self.digits(rgb)
            res.accuracy = float((logits.argmax(1) == y.cpu().numpy()).mean())
            if len(feats) > 1:
                res.fd_digits = frechet_distance(feats.mean(0), np.cov(feats, rowvar=False), self.real_mu,
                                                 self.real_sigma)
        if self.inception is not None and self.ref is not None:
            feats = np.concatenate([self.inception(rgb[k:k + 64])[0] for k in range(0, len(rgb), 64)])
            res.fid = frechet_distance(feats.mean(0), np.cov(feats, rowvar=False), self.ref[0], self.ref[1])


# --------------------------------------------------------------------------------------------------------
# Outputs: results.json, summary.md, loss.png
# --------------------------------------------------------------------------------------------------------
def _f(v: float | None, fmt: str = ".4g") -> str:
    return "n/a" if v is None or not math.isfinite(v) else format(v, fmt)


def summary_markdown(r: CompareResult) -> str:
    """The side-by-side table (markdown) with the notes and pictures. Pure.

    >>> res = CompareResult(variant="JiT-Tiny/8", img_size=32, patch_dim=192, hidden=96, data="digits",
    ...     budget=Budget(steps=10), seed=0, effective_batch=64, backend="local", weights="ema1", sample_steps=5,
    ...     arms=[ArmResult(arm="x:v", prediction="x", loss_space="v", status="finished", run_dir="r", wall_s=1.0,
    ...                     steps=10, final_loss=0.5, v_loss_common=0.4, accuracy=0.9)])
    >>> [line for line in summary_markdown(res).splitlines() if line.startswith("| x:v")]
    ['| x:v | finished | 10 | n/a | n/a | 0.5 | 0.4 | 0.900 | n/a | n/a |']
    """
    mem_kind = next((a.mem_kind for a in r.arms if a.mem_kind), None)
    mem_col = {"rss": "peak RSS (MiB)", "gpu_allocated": "peak GPU mem (MiB)"}.get(mem_kind or "", "peak mem (MiB)")
    lines = [
        f"# Objectives compared: {', '.join(a.arm for a in r.arms)}",
        "",
        f"{r.variant} at {r.img_size} px (patches of {r.patch_dim} values, width {r.hidden}), data {r.data}, "
        f"budget {r.budget.describe()} per arm, seed {r.seed}, effective batch {r.effective_batch}, backend "
        f"{r.backend}; scored with {r.weights} weights and a {r.sample_steps}-step sampler.",
        "",
        f"| objective (pred:loss) | status | steps | images/s | {mem_col} | final train loss (own space) "
        "| common v-loss | digits acc | FD-digits | FID |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for a in r.arms:
        lines.append(f"| {a.arm} | {a.status} | {a.steps if a.steps is not None else 'n/a'} | "
                     f"{_f(a.images_per_s, '.1f')} | {_f(a.peak_mem_mib, '.0f')} | {_f(a.final_loss)} | "
                     f"{_f(a.v_loss_common)} | {_f(a.accuracy, '.3f')} | {_f(a.fd_digits, '.3g')} | {_f(a.fid, '.4g')} |")
    lines += ["", *[f"- {n}" for n in r.notes], "", "![loss curves](loss.png)", ""]
    for a in r.arms:
        if a.grid:
            lines.append(f"**{a.arm}** samples (one class per column):\n\n![{a.arm}](grids/{Path(a.grid).name})\n")
    return "\n".join(lines) + "\n"


def write_outputs(r: CompareResult, out: Path) -> None:
    """results.json and summary.md (atomic), then loss.png."""
    from jitplan.launch.local import write_atomic

    r.files = {"results": "results.json", "summary": "summary.md", "plot": "loss.png",
               **{f"grid {a.arm}": f"grids/{Path(a.grid).name}" for a in r.arms if a.grid}}
    plot_losses(r, out / "loss.png")
    write_atomic(out / "results.json", json.dumps(r.model_dump(mode="json"), indent=2) + "\n")
    write_atomic(out / "summary.md", summary_markdown(r))


def plot_losses(r: CompareResult, path: Path) -> Path:
    """Two panels: training loss vs step (own spaces) and the common v-space loss vs t; matplotlib if
    installed, else a plain PIL drawing of the same curves."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return _plot_pil(r, path)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for a in r.arms:
        if a.loss_curve:
            s, v = zip(*a.loss_curve, strict=True)
            ax1.plot(s, v, label=f"{a.arm} ({a.loss_space}-space)")
        if a.v_loss_by_t:
            t, v = zip(*a.v_loss_by_t, strict=True)
            ax2.plot(t, v, marker="o", ms=3, label=f"{a.arm} (mean {_f(a.v_loss_common, '.3g')})")
    ax1.set(xlabel="optimizer step", ylabel="training loss (own space)", yscale="log",
            title="training loss (not comparable across spaces)")
    ax2.set(xlabel="t (0 noise, 1 clean)", ylabel="v-space loss", yscale="log",
            title="common metric: v-loss on a fixed batch")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(f"{r.variant} {r.img_size}px, {r.data}, {r.budget.describe()}", fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


_COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def _plot_pil(r: CompareResult, path: Path) -> Path:
    from PIL import Image, ImageDraw

    w, h, pad = 900, 360, 50
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    panels = [((pad, 30, w // 2 - 20, h - pad), [a.loss_curve for a in r.arms], "training loss (own space) vs step"),
              ((w // 2 + pad, 30, w - 20, h - pad), [a.v_loss_by_t for a in r.arms], "common v-loss vs t")]
    for (x0, y0, x1, y1), curves, title in panels:
        draw.rectangle((x0, y0, x1, y1), outline="black")
        draw.text((x0, y0 - 18), title + " (log y)", fill="black")
        pts = [(float(a), float(b)) for c in curves for a, b in c if b is not None and b > 0]
        if not pts:
            continue
        xs, ys = [p[0] for p in pts], [math.log10(p[1]) for p in pts]
        xlo, xhi, ylo, yhi = min(xs), max(xs), min(ys), max(ys)
        draw.text((x0, y1 + 4), f"{xlo:g}", fill="black")
        draw.text((x1 - 40, y1 + 4), f"{xhi:g}", fill="black")
        draw.text((x0 - 45, y0), f"{10 ** yhi:.3g}", fill="black")
        draw.text((x0 - 45, y1 - 10), f"{10 ** ylo:.3g}", fill="black")
        for k, c in enumerate(curves):
            line = [(x0 + (a - xlo) / ((xhi - xlo) or 1) * (x1 - x0),
                     y1 - (math.log10(b) - ylo) / ((yhi - ylo) or 1) * (y1 - y0)) for a, b in c if b and b > 0]
            if len(line) > 1:
                draw.line(line, fill=_COLORS[k % len(_COLORS)], width=2)
    for k, a in enumerate(r.arms):
        draw.text((pad + 110 * k, h - 18), a.arm, fill=_COLORS[k % len(_COLORS)])
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
