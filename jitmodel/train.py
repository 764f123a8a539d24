"""Train JiT from a TrainConfig: one process, N GPUs with torchrun, or several nodes.

    python -m jitmodel.train --config train.yaml                                  # 1 process (CPU/GPU/MPS)
    torchrun --standalone --nproc-per-node 8 -m jitmodel.train --config train.yaml
    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 8 --rdzv-backend c10d \\
        --rdzv-endpoint host0:29500 -m jitmodel.train --config train.yaml         # node 0 of 2
    python -m jitmodel.train --config train.yaml --resume auto                    # continue <output_dir>/last.pt

The recipe is the official one (LTH14/JiT main_jit.py / engine_jit.py): AdamW (0.9, 0.95), no weight decay
on 1-D tensors and biases, frozen pos_embed excluded, LR = blr * effective batch / 256 with a linear warm-up
in fractional epochs set every optimizer step, then constant (or cosine); bf16 autocast on GPUs that have
it; two EMAs updated every optimizer step. Added: gradient accumulation (``no_sync`` on non-final
micro-steps), fused AdamW, optional clipping and torch.compile, exact mid-epoch resume, SIGTERM/SIGINT =
finish the step, checkpoint, exit 0. Exit codes: 0 done or stopped by a signal, 1 the run failed
(e.g. the loss became NaN), 2 bad config or input (one line on stderr). See docs/training.md.
"""

from __future__ import annotations

# isort: off
import jitmodel.early_signals as early_signals  # first: SIGTERM is noted before the slow imports below
# isort: on
import argparse
import contextlib
import faulthandler
import math
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from jitmodel import bounds, strategy, train_state, train_step
from jitmodel import checkpoint as ckpt_io
from jitmodel import data as data_mod
from jitmodel.config import TrainConfig, load_train_config, steps_per_epoch, validation_summary
from jitmodel.dist import (
    DistEnv,
    amp_dtype,
    barrier,
    destroy_process_group,
    init_process_group,
    pick_device,
)
from jitmodel.metrics import MetricsLogger, StepTimer, peak_memory_mib, plan_expectations
from jitmodel.optim import build_optimizer, param_groups
from jitmodel.train_step import TrainingDiverged


def _one_line(e: BaseException) -> str:
    if isinstance(e, ValidationError):
        return f"invalid config: {validation_summary(e)}"
    lines = str(e).strip().splitlines()
    return lines[0][:400] if lines else type(e).__name__


# --------------------------------------------------------------------------- the run

class Trainer:
    """Everything one rank needs; ``__init__`` raises ValueError for bad config/input (exit 2)."""

    def __init__(self, cfg: TrainConfig, env: DistEnv, resume: str | None = None):
        from jitmodel.denoiser import Denoiser
        from jitmodel.ema_host import build_ema

        if cfg.world_size is not None and cfg.world_size != env.world_size:
            raise ValueError(f"the config was planned for world_size {cfg.world_size} but this job has "
                             f"{env.world_size} process(es)")
        self.cfg, self.env = cfg, env
        self.device = pick_device(cfg.device, env.local_rank)
        self.amp = amp_dtype(cfg.precision, self.device)
        bounds.check_start(cfg, env.world_size, self.device)  # memory floor vs free memory, before allocating
        self.out = Path(cfg.output_dir)
        resume_path = ckpt_io.resolve_resume(resume, self.out)
        ck = ckpt_io.load_checkpoint(resume_path, mmap=True) if resume_path else None
        if ck is not None:
            ckpt_io.check_compatible(ckpt_io.checkpoint_model_config(ck), cfg.model)

        self.dataset = data_mod.build_dataset(cfg.data, cfg.model.img_size, cfg.model.in_channels,
                                              cfg.model.num_classes)
        if ck is not None and ck.get("classes") and list(ck["classes"]) != list(self.dataset.classes):
            a, b = list(ck["classes"]), list(self.dataset.classes)
            first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
            raise ValueError(f"the checkpoint was trained on other classes ({len(a)} vs {len(b)} in the data; "
                             f"first difference at label {first}): labels would change meaning")
        mb, accum, world = cfg.batch_per_gpu, cfg.accum_steps, env.world_size
        self.steps_per_epoch = steps_per_epoch(len(self.dataset), world, mb, accum)
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(self.dataset)} images give no full optimizer step per epoch with micro-batch "
                             f"{mb} x accum {accum} x world {world}")
        self.eff_batch = mb * accum * world
        self.total_steps = math.ceil(cfg.epochs * self.steps_per_epoch)
        if cfg.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.sampler = data_mod.ResumableSampler(len(self.dataset), world, env.rank, cfg.seed, mb,
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
        self.step = self.epoch = self.epoch_step = 0
        self.resume_note: str | None = None  # set when resuming
        self.classes = list(self.dataset.classes)
        if ck is not None:
            self._restore(ck)
        else:
            self._seed_rank()
        self.loader = data_mod.build_loader(self.dataset, self.sampler, cfg.data, self.device, cfg.seed + env.rank)
        self.stop_signal: int | None = None
        self._saved_step = -1

    def _seed_rank(self) -> None:
        s = self.cfg.seed + self.env.rank
        torch.manual_seed(s)
        np.random.seed(s)
        random.seed(s)
        self.gen = torch.Generator(device=self.device).manual_seed(s)  # t, noise, label dropout

    def _restore(self, ck: dict[str, Any]) -> None:
        train_state.restore(self, ck)

    # -- one optimizer step --------------------------------------------------------------------------
    def _micro_step(self, x: torch.Tensor, y: torch.Tensor, last: bool) -> torch.Tensor:
        return train_step.micro_step(self, x, y, last)

    def _optimizer_step(self, loss_sum: torch.Tensor) -> tuple[float, float, bool]:
        return train_step.optimizer_step(self, loss_sum)

    # -- checkpoints ---------------------------------------------------------------------------------
    def save(self, permanent: bool = False) -> None:
        """Checkpoint on rank 0 (full state gathered whatever the strategy), then a barrier."""
        train_state.save(self, permanent)

    def _end_of_epoch(self, log: MetricsLogger) -> None:
        """Called after the last step of epoch ``self.epoch - 1``: online eval, then the epoch checkpoint."""
        done, c = self.epoch, self.cfg.checkpoint
        if self.cfg.eval_due(done - 1):
            self._online_eval(done - 1, log)
        keep = c.keep_every_epochs is not None and done % c.keep_every_epochs == 0
        if done % c.every_epochs == 0 or keep:
            self.save(permanent=keep)

    def _online_eval(self, epoch: int, log: MetricsLogger) -> None:
        try:
            from jitmodel.evaluate import online_eval
        except ImportError as e:
            log.note(f"online evaluation unavailable ({_one_line(e)}); training continues")
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
            log.log({"step": self.step, "epoch": float(epoch + 1), **{f"eval/{k}": v for k, v in res.items()}})

    # -- the loop ------------------------------------------------------------------------------------
    def fit(self) -> int:
        log = (MetricsLogger(self.out, self.total_steps, self.step, expect=getattr(self, "expect", None))
               if self.env.is_main else None)
        try:
            return self._fit(log or _Silent())
        finally:
            if log is not None:
                log.close()

    def _fit(self, log: MetricsLogger) -> int:
        cfg, env, accum, every = self.cfg, self.env, self.cfg.accum_steps, self.cfg.checkpoint.every_steps
        log.note(f"{cfg.model.variant} at {cfg.model.img_size}px, {len(self.dataset)} images in {len(self.classes)} "
                 f"classes | effective batch {self.eff_batch} = micro {cfg.batch_per_gpu} x accum {accum} x world "
                 f"{env.world_size} | peak lr {self.peak_lr:.3g} | {self.steps_per_epoch} steps/epoch, "
                 f"{self.total_steps} steps | {self.device.type}, "
                 f"{str(self.amp).removeprefix('torch.') if self.amp else 'fp32'}, attention {cfg.model.attention} | "
                 f"memory: {strategy.describe(cfg.memory)}")
        if getattr(self.dataset, "note", None):
            log.note(f"data: {self.dataset.note}")
        if self.resume_note is not None:
            log.note(f"resumed at step {self.step} (epoch {self.epoch}, step {self.epoch_step} of it)"
                     + (f"; {self.resume_note.lstrip('; ')}" if self.resume_note else ""))
        self.denoiser.train()
        first_epoch = True
        window, t0, n0 = [], time.perf_counter(), self.step
        timer = StepTimer(self.device)  # the step split and memory for calibration (jitmodel.metrics)
        while self.step < self.total_steps:
            self.sampler.set_epoch(self.epoch, start_micro=self.epoch_step * accum)
            if first_epoch and self.kill_armed:
                data_mod.arm_worker_kill(self.dataset, cfg.data.num_workers, cfg.batch_per_gpu)
            loss_sum, stop, at = None, False, self.step
            for i, (x, y) in enumerate(self.loader):
                timer.batch()
                loss = self._micro_step(x, y, last=(i + 1) % accum == 0)
                timer.micro_done()
                loss_sum = loss if loss_sum is None else loss_sum + loss
                if (i + 1) % accum:
                    continue
                value, lr, stop = self._optimizer_step(loss_sum)
                timer.step_end()
                loss_sum = None
                window.append(value)
                log.advance(self.step)
                if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                    dt = time.perf_counter() - t0
                    mem, kind = peak_memory_mib(self.device)
                    log.log({"step": self.step, "epoch": round(self.epoch + self.epoch_step / self.steps_per_epoch, 4),
                             "loss": sum(window) / len(window), "lr": lr,
                             "img_per_s": round((self.step - n0) * self.eff_batch / max(dt, 1e-9), 2),
                             "peak_mem_mib": round(mem, 1), "mem_kind": kind, **timer.window()})
                    window, t0, n0 = [], time.perf_counter(), self.step
                if stop or self.step >= self.total_steps or self.epoch_step == self.steps_per_epoch:
                    break  # the saves below see a consistent position (epoch bumped first)
                if every and self.step % every == 0:
                    self.save()
            if self.step == at:
                raise RuntimeError(f"the data loader gave no batch for epoch {self.epoch} (step {self.step})")
            if first_epoch and self.kill_armed:
                self.dataset.kill_after_items = None
            first_epoch = False
            if self.epoch_step == self.steps_per_epoch:
                self.epoch, self.epoch_step = self.epoch + 1, 0
                self._end_of_epoch(log)
            if every and self.step % every == 0:
                self.save()  # no-op when the epoch end already saved this step
            if stop:
                self.save()
                sig = signal.Signals(self.stop_signal).name if self.stop_signal else "a signal on another rank"
                log.note(f"stopped by {sig} at step {self.step}; checkpoint {self.out / 'last.pt'} "
                         "(continue with --resume auto)")
                return self._check_replicas(log)
        self.save()
        log.note(f"done: {self.step} steps; checkpoint {self.out / 'last.pt'}")
        return self._check_replicas(log)

    def _check_replicas(self, log: MetricsLogger) -> int:
        return train_state.check_replicas(self, log)


class _Silent:
    """The logger of ranks other than 0."""

    def note(self, msg: str) -> None: ...  # noqa: E704
    def advance(self, step: int) -> None: ...  # noqa: E704
    def log(self, rec: dict[str, Any]) -> None: ...  # noqa: E704


# --------------------------------------------------------------------------- entry point

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jitmodel.train", description="Train JiT from a TrainConfig YAML.")
    p.add_argument("--config", required=True, help="TrainConfig YAML, or a jitplan plan YAML holding one")
    p.add_argument("--resume", default=None, help="checkpoint file or folder, or 'auto' (<output_dir>/last.pt)")
    p.add_argument("--output-dir", default=None, help="override output_dir of the config")
    p.add_argument("--max-steps", type=int, default=None, help="override max_steps of the config")
    return p.parse_args(argv)


def _install_signal_handlers(trainer: Trainer) -> dict[int, Any]:
    """SIGTERM/SIGINT ask for a clean stop after the current optimizer step; returns the old handlers."""
    def handler(signum: int, frame: Any) -> None:
        if trainer.stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        trainer.stop_signal = signum

    if hasattr(signal, "SIGUSR1"):  # a stall watchdog (jitplan's) asks for every thread's stack in the log
        try:
            faulthandler.register(signal.SIGUSR1, all_threads=True)
        except (OSError, ValueError, AttributeError):  # stderr without a file descriptor (captured, in-process)
            pass
    return {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m jitmodel.train`` / ``torchrun -m jitmodel.train`` / ``jitmodel train``."""
    args = parse_args(argv)
    early_signals.install()  # (again) for callers that import this module: jitmodel train, tests
    try:
        env = DistEnv.from_env()
        cfg = load_train_config(args.config)
        over = {k: v for k, v in (("output_dir", args.output_dir), ("max_steps", args.max_steps)) if v is not None}
        if over:
            cfg = TrainConfig.model_validate({**cfg.model_dump(), **over})
        trainer = Trainer(cfg, env, resume=args.resume)
        trainer.expect = plan_expectations(args.config)  # a plan's predictions: drift is reported in the log
    except (ValueError, OSError) as e:
        print(f"Error: {_one_line(e)}", file=sys.stderr)
        destroy_process_group()
        early_signals.restore()
        return 2
    if early_signals.caught() is not None:  # stopped while starting: nothing trained, nothing to save
        print(f"stopped by {signal.Signals(early_signals.caught()).name} before the first step; nothing to "
              "checkpoint", file=sys.stderr)
        destroy_process_group()
        early_signals.restore()
        return 0
    old = _install_signal_handlers(trainer)
    try:
        rc = trainer.fit()
        barrier()  # leave together: a gloo rank torn down while its peer still works can abort at exit
        return rc
    except TrainingDiverged as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    except ckpt_io.integrity.CheckpointNoSpace as e:  # checked before each save; also a disk filled meanwhile
        print(f"Error: {e}", file=sys.stderr)
        return 1
    except data_mod.BadImage as e:  # also when a DataLoader worker raised it
        print(f"Error: {e.one_line()}", file=sys.stderr)
        data_mod.close_loader(trainer.loader)
        return 2
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        early_signals.restore()  # the handlers from before main()
        destroy_process_group()


def _entry() -> int:
    from torch.distributed.elastic.multiprocessing.errors import record

    return record(main)() or 0


if __name__ == "__main__":
    sys.exit(_entry())
