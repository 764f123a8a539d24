"""One optimizer step, owned by a ``Stepper``: micro-steps (autocast, gradient accumulation without sync,
the gradient scaler for fp16), then the reduced loss check, LR, clipping, the optimizer and the EMAs.

The Stepper works on the run's ``TrainState`` (weights, optimizer, scaler, EMAs, position, random stream),
which it advances by one step each time. The memory strategy of the run (``jitmodel.strategy``) decides
how the model is wrapped (DDP, FSDP2, activation checkpointing) and where the EMAs live; this module only
calls it.
"""

from __future__ import annotations

import contextlib
import math

import torch

from jitmodel.config import TrainConfig
from jitmodel.dist import DistEnv, all_reduce_sum
from jitmodel.optim import lr_at
from jitmodel.train_state import TrainState


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf (exit 1)."""


class Stepper:
    """Forward, backward and the optimizer step of the (wrapped) ``model`` on ``state``."""

    def __init__(self, cfg: TrainConfig, env: DistEnv, state: TrainState, *, model: torch.nn.Module,
                 amp: torch.dtype | None, peak_lr: float) -> None:
        self.cfg, self.env, self.state, self.model, self.amp, self.peak_lr = cfg, env, state, model, amp, peak_lr
        self.over_budget = False  # some rank (rank 0, the re-plan) asked to stop over budget: every rank knows

    def micro_step(self, x: torch.Tensor, y: torch.Tensor, last: bool) -> torch.Tensor:
        """Forward + backward of one micro-batch; gradients are synchronised only on the ``last`` one."""
        st = self.state
        x = x.to(st.device, non_blocking=True)
        x = x.float().div_(255).mul_(2).sub_(1) if x.dtype == torch.uint8 else x.float()  # pixels -> [-1, 1]; latents
        y = y.to(st.device, non_blocking=True)
        # DDP: all-reduce on the last micro-step only; FSDP2 reduce-scatters every micro-step (sharded grads)
        accumulate = self.env.distributed and not last and not self.cfg.memory.shard
        sync = self.model.no_sync() if accumulate else contextlib.nullcontext()  # type: ignore[operator]  # DDP's
        with sync:
            amp = torch.autocast(st.device.type, dtype=self.amp) if self.amp else contextlib.nullcontext()
            with amp:
                loss = self.model(x, y, generator=st.gen)
            scaled = loss / self.cfg.accum_steps
            (st.scaler.scale(scaled) if st.scaler is not None else scaled).backward()
        return loss.detach().float()

    def optimizer_step(self, loss_sum: torch.Tensor, stop_asked: bool,
                       over_budget: bool = False) -> tuple[float, float, bool]:
        """Reduce (loss, stop flag, over-budget flag) over ranks, refuse NaN, set the LR, clip, step, update the
        EMAs, advance the position. Returns (mean loss, LR, whether any rank asked to stop); ``over_budget``
        is then set on every rank when any rank asked for the budget stop."""
        st, cfg = self.state, self.cfg
        flag = torch.tensor(1.0 if stop_asked else 0.0, device=loss_sum.device)
        budget = torch.tensor(1.0 if over_budget else 0.0, device=loss_sum.device)
        buf = all_reduce_sum(torch.stack([loss_sum / cfg.accum_steps, flag, budget]))
        loss_total, flags, budgets = buf.tolist()  # the one host sync of the step
        self.over_budget = self.over_budget or budgets > 0
        loss, stop = loss_total / self.env.world_size, flags > 0 or budgets > 0
        if not math.isfinite(loss):
            raise TrainingDiverged(f"the loss is {loss} at step {st.step + 1} (epoch {st.epoch}); "
                                   f"lower the LR or check the data; last good checkpoint: {st.out / 'last.pt'}")
        lr = lr_at(st.epoch + st.epoch_step / st.steps_per_epoch, self.peak_lr, cfg.optim, cfg.epochs)
        for g in st.opt.param_groups:
            g["lr"] = lr
        if st.scaler is not None:
            st.scaler.unscale_(st.opt)
        if cfg.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(st.denoiser.parameters(), cfg.optim.grad_clip)
        if st.scaler is not None:
            st.scaler.step(st.opt)
            st.scaler.update()
        else:
            st.opt.step()
        st.opt.zero_grad(set_to_none=True)
        st.advance()
        every = cfg.memory.ema_every  # decays are d**every (jitmodel.ema_host.ema_decays)
        if st.step % every == 0:
            st.ema.update(st.denoiser, step=st.step // every - 1)  # 0-based update number (EMA warm-up)
        return loss, lr, stop
