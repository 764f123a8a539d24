"""The Trainer: one rank's run of JiT training, set up from a TrainConfig and driven epoch by epoch.

It composes three collaborators, each owning one concept:

- the data (``jitmodel.data``: dataset, resumable sampler, loader) and the wrapped model (``jitmodel.strategy``);
- ``TrainState`` (``jitmodel.train_state``): weights, EMAs, optimizer, scaler, position and random streams,
  saved and restored whole;
- ``Stepper`` (``jitmodel.train_step``): the micro-steps and the optimizer step, advancing the state.

The loop here decides when to log, evaluate, checkpoint and stop. The entry point (argument parsing,
signals, exit codes) is ``jitmodel.train``.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from pathlib import Path
from typing import Any, Protocol

import torch
from pydantic import ValidationError

from jitmodel import bounds, strategy
from jitmodel import checkpoint as ckpt_io
from jitmodel import data as data_mod
from jitmodel.config import TrainConfig, effective_batch, steps_per_epoch, validation_summary
from jitmodel.dist import DistEnv, amp_dtype, init_process_group, pick_device
from jitmodel.metrics import MetricsLogger, StepTimer, peak_memory_mib
from jitmodel.optim import build_optimizer, param_groups
from jitmodel.plan_view import PlanExpectations
from jitmodel.replan import BUDGET_EXIT
from jitmodel.replanner import Replanner
from jitmodel.train_state import TrainState
from jitmodel.train_step import Stepper


def one_line(e: BaseException) -> str:
    """An error in one line for the user (a config error in the project's one format)."""
    if isinstance(e, ValidationError):
        return f"invalid config: {validation_summary(e)}"
    lines = str(e).strip().splitlines()
    return lines[0][:400] if lines else type(e).__name__


class Trainer:
    """Everything one rank needs; ``__init__`` raises ValueError for bad config/input (exit 2)."""

    def __init__(self, cfg: TrainConfig, env: DistEnv, resume: str | None = None, *, allow_unverified: bool = False):
        from jitmodel.denoiser import Denoiser  # lazy: start-up (numpy, pynvml, torch)
        from jitmodel.ema_host import build_ema  # lazy: start-up (numpy, pynvml, torch)

        if cfg.world_size is not None and cfg.world_size != env.world_size:
            raise ValueError(f"the config was planned for world_size {cfg.world_size} but this job has "
                             f"{env.world_size} process(es)")
        self.cfg, self.env = cfg, env
        self.device = pick_device(cfg.device, env.local_rank)
        bounds.check_start(cfg, env.world_size, self.device)  # memory floor vs free memory, before allocating
        self.amp = amp_dtype(cfg.precision, self.device)
        self.out = Path(cfg.output_dir)
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"output_dir {self.out} exists and is not a folder")
        if env.is_main:
            self.out.mkdir(parents=True, exist_ok=True)  # an OSError here is one line (main): before any work
        resume_path = ckpt_io.resolve_resume(resume, self.out)
        ck = ckpt_io.load_checkpoint(resume_path, mmap=True) if resume_path else None
        if ck is not None and resume_path is not None:
            if ck["format"] == ckpt_io.FORMAT:
                ckpt_io.require_resumable(ck, resume_path, allow_unverified=allow_unverified)
            ckpt_io.check_compatible(ckpt_io.checkpoint_model_config(ck), cfg.model)

        self.dataset = data_mod.build_dataset(cfg.data, cfg.model.img_size, cfg.model.in_channels,
                                              cfg.model.num_classes)
        self.num_images: int = len(self.dataset)  # type: ignore[arg-type]  # data._Base declares no __len__

        if ck is not None and ck.get("classes") and list(ck["classes"]) != list(self.dataset.classes):
            a, b = list(ck["classes"]), list(self.dataset.classes)
            first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
            raise ValueError(f"the checkpoint was trained on other classes ({len(a)} vs {len(b)} in the data; "
                             f"first difference at label {first}): labels would change meaning")
        mb, accum, world = cfg.batch_per_gpu, cfg.accum_steps, env.world_size
        self.steps_per_epoch = steps_per_epoch(self.num_images, world, mb, accum)
        if self.steps_per_epoch == 0:
            raise ValueError(f"{self.num_images} images give no full optimizer step per epoch with micro-batch "
                             f"{mb} x accum {accum} x world {world}")
        self.eff_batch = effective_batch(mb, accum, world)
        self.total_steps = math.ceil(cfg.epochs * self.steps_per_epoch)
        if cfg.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        if ck is not None and ck["format"] == ckpt_io.FORMAT and ck["step"] > self.total_steps:
            raise ValueError(f"{resume_path} is at step {ck['step']}, beyond this run's {self.total_steps} steps "
                             "(max_steps / epochs)")
        self.sampler = data_mod.ResumableSampler(self.num_images, world, env.rank, cfg.seed, mb,
                                                 hflip=cfg.data.hflip and cfg.data.kind != "digits",
                                                 micro_per_epoch=self.steps_per_epoch * accum)
        self.kill_armed = data_mod.worker_kill_threshold(cfg.data.num_workers) is not None

        init_process_group(env, self.device, timeout_s=cfg.dist_timeout_s or 1800)
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
        self.denoiser = Denoiser(cfg.model, cfg.diffusion, device=self.device)
        if ck is not None:
            self.denoiser.load_state_dict(ck["model"])  # full weights, before any sharding
        self.model: torch.nn.Module = strategy.prepare(self.denoiser, cfg, env, self.device)  # DDP/FSDP2/...
        mem = cfg.memory  # EMAs and optimizer on the (possibly sharded) parameters, so built after prepare
        self.ema = build_ema(self.denoiser, cfg.diffusion.ema_decays, mem.ema_device, mem.ema_every,
                             warmup=cfg.diffusion.ema_warmup)
        groups = param_groups(self.denoiser, cfg.optim.weight_decay)
        self.peak_lr = cfg.optim.lr_for(self.eff_batch)
        self.opt = build_optimizer(groups, cfg.optim, self.peak_lr, self.device)
        self.scaler = strategy.make_scaler(self.amp, self.device)
        self.classes = list(self.dataset.classes)
        self.state = TrainState(cfg, env, self.device, denoiser=self.denoiser, ema=self.ema, opt=self.opt,
                                scaler=self.scaler, out=self.out, classes=self.classes, eff_batch=self.eff_batch,
                                steps_per_epoch=self.steps_per_epoch)  # owns position, RNG, save and restore
        if ck is not None:
            self.state.restore(ck)
        else:
            self.state.seed_rank()
        self.stepper = Stepper(cfg, env, self.state, model=self.model, amp=self.amp, peak_lr=self.peak_lr)
        self.loader = data_mod.build_loader(self.dataset, self.sampler, cfg.data, self.device, cfg.seed + env.rank)
        self.stop_signal: int | None = None
        self.expect: PlanExpectations | None = None  # a plan's predictions (main sets them): drift, re-plan
        self.replanner: Replanner | None = None  # rank 0, set by fit (after main has set expect)
        self.budget_stop = False  # rank 0's re-plan is over the budget: the next step stops every rank

    @property
    def step(self) -> int:
        return self.state.step

    @property
    def resume_note(self) -> str | None:
        return self.state.resume_note

    def save(self, permanent: bool = False) -> None:
        """Checkpoint on rank 0 (full state gathered whatever the strategy), then a barrier."""
        self.state.save(permanent)

    def _end_of_epoch(self, log: RunLog) -> None:
        """Called after the last step of epoch ``state.epoch - 1``: online eval, then the epoch checkpoint."""
        done, c = self.state.epoch, self.cfg.checkpoint
        if self.cfg.eval_due(done - 1):
            self._online_eval(done - 1, log)
        keep = c.keep_every_epochs is not None and done % c.keep_every_epochs == 0
        if done % c.every_epochs == 0 or keep:
            self.save(permanent=keep)

    def _online_eval(self, epoch: int, log: RunLog) -> None:
        t0 = time.perf_counter()
        self._online_eval_timed(epoch, log)
        if self.replanner is not None:
            self.replanner.evaluated(time.perf_counter() - t0)

    def _online_eval_timed(self, epoch: int, log: RunLog) -> None:
        try:
            from jitmodel.evaluate import online_eval  # lazy: start-up (numpy, pynvml, torch)
        except ImportError as e:
            log.note(f"online evaluation unavailable ({one_line(e)}); training continues")
            return
        which = self.cfg.sample.ema
        swap = self.ema.swap_in(self.denoiser, which) if which != "raw" else contextlib.nullcontext()
        self.denoiser.eval()
        try:
            with swap, strategy.gathered(self.denoiser, self.cfg.memory, self.amp):  # sharded: x_hat sees full weights
                res = online_eval(self.denoiser, self.cfg, epoch=epoch, device=self.device, out_dir=self.out)
        finally:
            self.denoiser.train()
        if self.env.is_main:
            log.log({"step": self.state.step, "epoch": float(epoch + 1), **{f"eval/{k}": v for k, v in res.items()}})

    def _replanner(self) -> Replanner | None:
        """Rank 0's re-plan (jitmodel.replanner): the plan's step time, evaluation and $/h when a plan is read,
        the config's budget_usd and price_per_hour first."""
        if not self.env.is_main:
            return None
        exp, cfg = self.expect or PlanExpectations(), self.cfg
        price = cfg.price_per_hour if cfg.price_per_hour is not None else exp.price_per_hour
        return Replanner(self.out, steps_per_epoch=self.steps_per_epoch, total_steps=self.total_steps,
                         planned_step_s=exp.step_time_s, planned_eval_s=exp.eval_time_s,
                         price_per_hour=price, budget_usd=cfg.budget_usd, resumed=self.state.step > 0)

    def _evals_left(self) -> int:
        last = math.ceil(self.total_steps / self.steps_per_epoch)
        return sum(self.cfg.eval_due(e) for e in range(self.state.epoch, last))

    def _replan(self, rec: dict[str, Any], log: RunLog) -> None:
        """After a log window (rank 0): re-plan, print a new line, ask every rank to stop when over budget."""
        if self.replanner is None:
            return
        said = len(self.replanner.said)
        r = self.replanner.window(rec, done_steps=self.state.step, evals_left=self._evals_left())
        for line in self.replanner.said[said:]:
            log.note(line)
        if r is not None and r.over_budget:
            self.budget_stop = True

    # -- the loop ------------------------------------------------------------------------------------
    def fit(self) -> int:
        log = (MetricsLogger(self.out, self.total_steps, self.step, expect=self.expect)
               if self.env.is_main else None)
        self.replanner = self._replanner()
        try:
            return self._fit(log or _Silent())
        finally:
            if log is not None:
                log.close()

    def _fit(self, log: RunLog) -> int:
        cfg, env, accum, every = self.cfg, self.env, self.cfg.accum_steps, self.cfg.checkpoint.every_steps
        st, stepper = self.state, self.stepper
        net = cfg.model.factory or cfg.model.variant  # a factory config keeps a (meaningless) variant field
        log.note(f"{net} at {cfg.model.img_size}px, {self.num_images} images in {len(self.classes)} "
                 f"classes | effective batch {self.eff_batch} = micro {cfg.batch_per_gpu} x accum {accum} x world "
                 f"{env.world_size} | peak lr {self.peak_lr:.3g} | {self.steps_per_epoch} steps/epoch, "
                 f"{self.total_steps} steps | {self.device.type}, "
                 f"{str(self.amp).removeprefix('torch.') if self.amp else 'fp32'}, attention {cfg.model.attention} | "
                 f"memory: {strategy.describe(cfg.memory)}")
        data_note = getattr(self.dataset, "note", None)  # ImageFolder's (skipped images, manifest)
        if data_note:
            log.note(f"data: {data_note}")
        if st.resume_note is not None:
            log.note(f"resumed at step {st.step} (epoch {st.epoch}, step {st.epoch_step} of it)"
                     + (f"; {st.resume_note.lstrip('; ')}" if st.resume_note else ""))
        self.denoiser.train()
        first_epoch = True
        window, t0, n0 = [], time.perf_counter(), st.step
        timer = StepTimer(self.device)  # the step split and memory for calibration (jitmodel.metrics)
        while st.step < self.total_steps:
            self.sampler.set_epoch(st.epoch, start_micro=st.epoch_step * accum)
            if first_epoch and self.kill_armed:
                data_mod.arm_worker_kill(self.dataset, cfg.data.num_workers, cfg.batch_per_gpu)
            loss_sum, stop, at = None, False, st.step
            for i, (x, y) in enumerate(self.loader):
                timer.batch()
                loss = stepper.micro_step(x, y, last=(i + 1) % accum == 0)
                timer.micro_done()
                loss_sum = loss if loss_sum is None else loss_sum + loss
                if (i + 1) % accum:
                    continue
                value, lr, stop = stepper.optimizer_step(loss_sum, self.stop_signal is not None, self.budget_stop)
                timer.step_end()
                loss_sum = None
                window.append(value)
                log.advance(st.step)
                if st.step % cfg.log_every == 0 or st.step == self.total_steps:
                    dt = time.perf_counter() - t0
                    mem, kind = peak_memory_mib(self.device)
                    rec = {"step": st.step, "epoch": round(st.epoch + st.epoch_step / self.steps_per_epoch, 4),
                           "loss": sum(window) / len(window), "lr": lr,
                           "img_per_s": round((st.step - n0) * self.eff_batch / max(dt, 1e-9), 2),
                           "peak_mem_mib": round(mem, 1), "mem_kind": kind, **timer.window()}
                    log.log(rec)
                    self._replan(rec, log)
                    window, t0, n0 = [], time.perf_counter(), st.step
                if stop or st.step >= self.total_steps or st.epoch_step == self.steps_per_epoch:
                    break  # the saves below see a consistent position (epoch bumped first)
                if every and st.step % every == 0:
                    self.save()
            if st.step == at:
                raise RuntimeError(f"the data loader gave no batch for epoch {st.epoch} (step {st.step})")
            if first_epoch and self.kill_armed:
                self.dataset.kill_after_items = None
            first_epoch = False
            if st.epoch_step == self.steps_per_epoch:
                st.epoch, st.epoch_step = st.epoch + 1, 0
                self._end_of_epoch(log)
            if every and st.step % every == 0:
                self.save()  # no-op when the epoch end already saved this step
            if stop:
                self.save()
                if stepper.over_budget:
                    log.note(f"stopped over budget at step {st.step}; checkpoint {self.out / 'last.pt'} (raise the "
                             "budget and continue with --resume auto)")
                    return st.check_replicas(log) or BUDGET_EXIT
                sig = signal.Signals(self.stop_signal).name if self.stop_signal else "a signal on another rank"
                log.note(f"stopped by {sig} at step {st.step}; checkpoint {self.out / 'last.pt'} "
                         "(continue with --resume auto)")
                return st.check_replicas(log)
        self.save()
        log.note(f"done: {st.step} steps; checkpoint {self.out / 'last.pt'}")
        return st.check_replicas(log)


class RunLog(Protocol):
    """What the loop writes to: rank 0's MetricsLogger, or ``_Silent`` on the other ranks."""

    def note(self, msg: str) -> None: ...  # noqa: E704
    def advance(self, step: int) -> None: ...  # noqa: E704
    def log(self, rec: dict[str, Any]) -> None: ...  # noqa: E704


class _Silent:
    """The logger of ranks other than 0."""

    def note(self, msg: str) -> None: ...  # noqa: E704
    def advance(self, step: int) -> None: ...  # noqa: E704
    def log(self, rec: dict[str, Any]) -> None: ...  # noqa: E704
