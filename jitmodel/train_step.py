"""One optimizer step of the Trainer: micro-steps (autocast, gradient accumulation without sync, the
gradient scaler for fp16), then the reduced loss check, LR, clipping, the optimizer and the EMAs.

The memory strategy of the run (``jitmodel.strategy``) decides how the model is wrapped (DDP, FSDP2,
activation checkpointing) and where the EMAs live; this module only calls it.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING

import torch

from jitmodel.dist import all_reduce_sum
from jitmodel.optim import lr_at

if TYPE_CHECKING:  # pragma: no cover
    from jitmodel.train import Trainer


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf (exit 1)."""


def micro_step(tr: Trainer, x: torch.Tensor, y: torch.Tensor, last: bool) -> torch.Tensor:
    """Forward + backward of one micro-batch; gradients are synchronised only on the ``last`` one."""
    x = x.to(tr.device, non_blocking=True).float().div_(255).mul_(2).sub_(1)  # uint8 -> [-1, 1]
    y = y.to(tr.device, non_blocking=True)
    # DDP: all-reduce on the last micro-step only; FSDP2 reduce-scatters every micro-step (sharded grads)
    accumulate = tr.env.distributed and not last and not tr.cfg.memory.shard
    sync = tr.model.no_sync() if accumulate else contextlib.nullcontext()
    with sync:
        amp = torch.autocast(tr.device.type, dtype=tr.amp) if tr.amp else contextlib.nullcontext()
        with amp:
            loss = tr.model(x, y, generator=tr.gen)
        scaled = loss / tr.cfg.accum_steps
        (tr.scaler.scale(scaled) if tr.scaler is not None else scaled).backward()
    return loss.detach().float()


def optimizer_step(tr: Trainer, loss_sum: torch.Tensor) -> tuple[float, float, bool]:
    """Reduce (loss, stop flag) over ranks, refuse NaN, set the LR, clip, step, update the EMAs."""
    flag = torch.tensor(1.0 if tr.stop_signal else 0.0, device=loss_sum.device)
    buf = all_reduce_sum(torch.stack([loss_sum / tr.cfg.accum_steps, flag]))
    loss_total, flags = buf.tolist()  # the one host sync of the step
    loss, stop = loss_total / tr.env.world_size, flags > 0
    if not math.isfinite(loss):
        raise TrainingDiverged(f"the loss is {loss} at step {tr.step + 1} (epoch {tr.epoch}); "
                               f"lower the LR or check the data; last good checkpoint: {tr.out / 'last.pt'}")
    lr = lr_at(tr.epoch + tr.epoch_step / tr.steps_per_epoch, tr.peak_lr, tr.cfg.optim, tr.cfg.epochs)
    for g in tr.opt.param_groups:
        g["lr"] = lr
    if tr.scaler is not None:
        tr.scaler.unscale_(tr.opt)
    if tr.cfg.optim.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(tr.denoiser.parameters(), tr.cfg.optim.grad_clip)
    if tr.scaler is not None:
        tr.scaler.step(tr.opt)
        tr.scaler.update()
    else:
        tr.opt.step()
    tr.opt.zero_grad(set_to_none=True)
    tr.step += 1
    every = tr.cfg.memory.ema_every  # decays are d**every (jitmodel.ema_host.ema_decays)
    if tr.step % every == 0:
        tr.ema.update(tr.denoiser, step=tr.step // every - 1)  # 0-based update number (EMA warm-up)
    tr.epoch_step += 1
    return loss, lr, stop
