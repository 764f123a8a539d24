"""The run's resumable state, and the one object that saves and restores it: ``TrainState``.

It owns what a checkpoint holds of a run: the weights (through the denoiser), both EMAs, the optimizer
and gradient scaler, the position (step, epoch, step within the epoch) and this rank's random streams.
``save`` writes it, ``restore`` reads it back, ``check_replicas`` compares the ranks' weights at the end.

The checkpoint is always ONE self-describing file (``jitmodel.checkpoint.make_checkpoint``) whatever the
memory strategy of the run that wrote it: sharded weights, optimizer state and EMAs are gathered into full
state dicts before saving (``jitmodel.strategy``), and a restore scatters them into whatever strategy and
world size the resuming run uses. Every rank's RNG state is gathered into the file; a run with the same
world size continues each rank's random streams exactly, another world size re-seeds them (data order kept).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from jitmodel import checkpoint as ckpt_io
from jitmodel import strategy
from jitmodel.config import TrainConfig
from jitmodel.dist import DistEnv, all_gather, barrier
from jitmodel.ema_host import full_ema_state, load_ema_state


class Log(Protocol):
    def note(self, msg: str) -> None: ...  # noqa: E704
    def log(self, rec: dict[str, Any]) -> None: ...  # noqa: E704


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


class TrainState:
    """Weights, EMAs, optimizer, scaler, position and random streams of one rank; saved and restored whole."""

    def __init__(self, cfg: TrainConfig, env: DistEnv, device: torch.device, *, denoiser: torch.nn.Module,
                 ema: Any, opt: torch.optim.Optimizer, scaler: Any, out: Path, classes: list[str], eff_batch: int,
                 steps_per_epoch: int) -> None:
        self.cfg, self.env, self.device, self.out = cfg, env, device, out
        self.denoiser, self.ema, self.opt, self.scaler = denoiser, ema, opt, scaler
        self.classes, self.eff_batch, self.steps_per_epoch = classes, eff_batch, steps_per_epoch
        self.step = self.epoch = self.epoch_step = 0
        self.resume_note: str | None = None  # set when resuming
        self.gen: torch.Generator = torch.Generator(device=device)
        self._saved_step = -1

    def seed_rank(self) -> None:
        """Seed every random stream of this rank from the run's seed (a fresh start, or a new world size)."""
        s = self.cfg.seed + self.env.rank
        torch.manual_seed(s)
        np.random.seed(s)
        random.seed(s)
        self.gen = torch.Generator(device=self.device).manual_seed(s)  # t, noise, label dropout

    def advance(self) -> None:
        """One optimizer step done."""
        self.step += 1
        self.epoch_step += 1

    def restore(self, ck: dict[str, Any]) -> None:
        """Load EMAs, optimizer, scaler, position and random streams of ``ck`` (the weights were loaded into the
        denoiser before the strategy was applied: Trainer.__init__)."""
        if ck.get("ema1") is not None and ck.get("ema2") is not None:
            load_ema_state(self.ema, ck["ema1"], ck["ema2"])
        official = ck["format"] == ckpt_io.OFFICIAL
        self.resume_note = ""
        if ck.get("optimizer") is not None:
            try:
                self.opt.load_state_dict(strategy.optimizer_state_like(ck["optimizer"], self.opt))
            except (ValueError, KeyError) as e:
                if not official:
                    raise ValueError(f"the checkpoint's optimizer state does not fit: {_first_line(e)}") from None
                self.resume_note = f"official optimizer state not used ({_first_line(e)})"
        self.seed_rank()
        if official:  # saved at the end of epoch `epoch`; its random streams are not recorded
            self.epoch = int(ck.get("epoch") or 0) + 1
            self.step = self.epoch * self.steps_per_epoch
            return
        if self.scaler is not None and ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        self.step, self.epoch = int(ck["step"]), int(ck["epoch"])
        consumed = int(ck.get("epoch_samples", 0))
        per_step = self.eff_batch
        self.epoch_step = consumed // per_step
        if self.epoch_step >= self.steps_per_epoch:  # saved at an epoch's end (or the epoch got shorter)
            self.epoch, self.epoch_step = self.epoch + 1, 0
        rng = ck.get("rng") or {}
        ranks = rng.get("per_rank", [])
        if int(ck.get("world_size", 0)) == self.env.world_size and len(ranks) == self.env.world_size:
            ckpt_io.restore_rng(ranks[self.env.rank], self.gen)
        else:
            self.resume_note = (f"world size changed ({ck.get('world_size')} -> {self.env.world_size}): data order "
                                "kept, random streams re-seeded")
        if consumed % per_step:
            self.resume_note += f"; {consumed % per_step} image(s) of the epoch are seen again"

    def save(self, permanent: bool = False) -> None:
        """Checkpoint on rank 0 (every rank's RNG state gathered into it), then a barrier."""
        if self.step == self._saved_step and not permanent:
            return  # e.g. the end of an epoch that was also the last step
        self._saved_step = self.step
        ranks = all_gather(ckpt_io.capture_rng(self.gen))
        if self.env.is_main or self.cfg.memory.shard:  # gathering shards is a collective: every rank takes part
            model, ema1, ema2, opt = self.full_state()
        if self.env.is_main:
            ck = ckpt_io.make_checkpoint(
                model=model, ema1=ema1, ema2=ema2,
                optimizer=opt, scaler=self.scaler.state_dict() if self.scaler else None,
                model_config=self.cfg.model, train_config=self.cfg, classes=self.classes, epoch=self.epoch,
                step=self.step, epoch_step=self.epoch_step, epoch_samples=self.epoch_step * self.eff_batch,
                rng_per_rank=ranks)
            ckpt_io.save_checkpoint(ck, self.out, keep_last=self.cfg.checkpoint.keep_last,
                                    permanent_epoch=self.epoch if permanent else None)
        barrier()

    def full_state(self) -> tuple[dict, dict, dict, dict]:
        """(model, ema1, ema2, optimizer) as full state dicts on the CPU, whatever the strategy: the one
        checkpoint format that any strategy and world size resumes from and ``jitmodel sample`` reads."""
        model = {k: strategy.full(v) for k, v in self.denoiser.state_dict().items()}
        return (model, full_ema_state(self.ema, "ema1"), full_ema_state(self.ema, "ema2"),
                strategy.full_optimizer_state(self.opt))

    def check_replicas(self, log: Log) -> int:
        """Every rank must hold the same weights (DDP keeps them in lockstep; sharded runs compare the gathered
        weights, which says every rank took part in the same steps); 1 if they drifted apart."""
        sd = {k: strategy.full(v) for k, v in self.denoiser.state_dict().items()} if self.cfg.memory.shard \
            else self.denoiser.state_dict()
        fps = all_gather(ckpt_io.state_fingerprint(sd))
        log.log({"step": self.step, "event": "replicas", "fingerprints": fps, "consistent": len(set(fps)) == 1})
        if len(set(fps)) != 1:
            log.note(f"Error: the {len(fps)} ranks ended with different weights: {fps}")
            return 1
        return 0
