"""What a checkpoint holds of a run, both ways: restore a Trainer from one, save one from a Trainer.

The checkpoint is always ONE self-describing file (``jitmodel.checkpoint.make_checkpoint``) whatever the
memory strategy of the run that wrote it: sharded weights, optimizer state and EMAs are gathered into full
state dicts before saving (``jitmodel.strategy``), and a restore scatters them into whatever strategy and
world size the resuming run uses. Every rank's RNG state is gathered into the file; a run with the same
world size continues each rank's random streams exactly, another world size re-seeds them (data order kept).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jitmodel import checkpoint as ckpt_io
from jitmodel import strategy
from jitmodel.dist import all_gather, barrier
from jitmodel.ema_host import full_ema_state, load_ema_state

if TYPE_CHECKING:  # pragma: no cover
    from jitmodel.train import Trainer


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def restore(tr: Trainer, ck: dict[str, Any]) -> None:
    """Load weights, EMAs, optimizer, scaler, position and random streams of ``ck`` into ``tr``."""
    # the weights were loaded before the strategy was applied (Trainer.__init__)
    if ck.get("ema1") is not None and ck.get("ema2") is not None:
        load_ema_state(tr.ema, ck["ema1"], ck["ema2"])
    official = ck["format"] == ckpt_io.OFFICIAL
    tr.resume_note = ""
    if ck.get("optimizer") is not None:
        try:
            tr.opt.load_state_dict(strategy.optimizer_state_like(ck["optimizer"], tr.opt))
        except (ValueError, KeyError) as e:
            if not official:
                raise ValueError(f"the checkpoint's optimizer state does not fit: {_first_line(e)}") from None
            tr.resume_note = f"official optimizer state not used ({_first_line(e)})"
    tr._seed_rank()
    if official:  # saved at the end of epoch `epoch`; its random streams are not recorded
        tr.epoch = int(ck.get("epoch") or 0) + 1
        tr.step = tr.epoch * tr.steps_per_epoch
        return
    if tr.scaler is not None and ck.get("scaler"):
        tr.scaler.load_state_dict(ck["scaler"])
    tr.step, tr.epoch = int(ck["step"]), int(ck["epoch"])
    consumed = int(ck.get("epoch_samples", 0))
    per_step = tr.eff_batch
    tr.epoch_step = consumed // per_step
    if tr.epoch_step >= tr.steps_per_epoch:  # saved at an epoch's end (or the epoch got shorter)
        tr.epoch, tr.epoch_step = tr.epoch + 1, 0
    rng = ck.get("rng") or {}
    ranks = rng.get("per_rank", [])
    if int(ck.get("world_size", 0)) == tr.env.world_size and len(ranks) == tr.env.world_size:
        ckpt_io.restore_rng(ranks[tr.env.rank], tr.gen)
    else:
        tr.resume_note = (f"world size changed ({ck.get('world_size')} -> {tr.env.world_size}): data order "
                          "kept, random streams re-seeded")
    if consumed % per_step:
        tr.resume_note += f"; {consumed % per_step} image(s) of the epoch are seen again"


def save(tr: Trainer, permanent: bool = False) -> None:
    """Checkpoint on rank 0 (every rank's RNG state gathered into it), then a barrier."""
    if tr.step == tr._saved_step and not permanent:
        return  # e.g. the end of an epoch that was also the last step
    tr._saved_step = tr.step
    ranks = all_gather(ckpt_io.capture_rng(tr.gen))
    if tr.env.is_main or tr.cfg.memory.shard:  # gathering shards is a collective: every rank takes part
        model, ema1, ema2, opt = full_state(tr)
    if tr.env.is_main:
        ck = ckpt_io.make_checkpoint(
            model=model, ema1=ema1, ema2=ema2,
            optimizer=opt, scaler=tr.scaler.state_dict() if tr.scaler else None,
            model_config=tr.cfg.model, train_config=tr.cfg, classes=tr.classes, epoch=tr.epoch,
            step=tr.step, epoch_step=tr.epoch_step, epoch_samples=tr.epoch_step * tr.eff_batch,
            rng_per_rank=ranks)
        ckpt_io.save_checkpoint(ck, tr.out, keep_last=tr.cfg.checkpoint.keep_last,
                                permanent_epoch=tr.epoch if permanent else None)
    barrier()


def full_state(tr: Trainer) -> tuple[dict, dict, dict, dict]:
    """(model, ema1, ema2, optimizer) as full state dicts on the CPU, whatever the strategy: the one
    checkpoint format that any strategy and world size resumes from and ``jitmodel sample`` reads."""
    model = {k: strategy.full(v) for k, v in tr.denoiser.state_dict().items()}
    return (model, full_ema_state(tr.ema, "ema1"), full_ema_state(tr.ema, "ema2"),
            strategy.full_optimizer_state(tr.opt))


def check_replicas(tr: Trainer, log: Any) -> int:
    """Every rank must hold the same weights (DDP keeps them in lockstep; sharded runs compare the gathered
    weights, which says every rank took part in the same steps); 1 if they drifted apart."""
    sd = {k: strategy.full(v) for k, v in tr.denoiser.state_dict().items()} if tr.cfg.memory.shard \
        else tr.denoiser.state_dict()
    fps = all_gather(ckpt_io.state_fingerprint(sd))
    log.log({"step": tr.step, "event": "replicas", "fingerprints": fps, "consistent": len(set(fps)) == 1})
    if len(set(fps)) != 1:
        log.note(f"Error: the {len(fps)} ranks ended with different weights: {fps}")
        return 1
    return 0
