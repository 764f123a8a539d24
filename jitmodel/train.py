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
micro-steps), fused AdamW, optional clipping and torch.compile, exact mid-epoch resume,
SIGTERM/SIGINT/SIGHUP = finish the step, checkpoint, exit 0 (while starting: stop at once, nothing to
checkpoint). After warm-up, rank 0 re-plans the run from its own steps after each log window
(``replan.json``, one "replan:" line in the log; jitmodel.replanner); with ``budget_usd`` set, a re-planned cost
over it stops every rank after the next step with a checkpoint. Exit codes: 0 done or stopped by a signal,
1 the run failed (e.g. the loss became NaN), 2 bad config or input (one line on stderr), 3 stopped over budget
(checkpoint written), 130 a second Ctrl-C. See docs/training.md.
This module is the entry point; the run itself is ``jitmodel.trainer.Trainer``.
"""

from __future__ import annotations

# isort: off
import jitmodel.early_signals as early_signals  # first: SIGTERM is noted before the slow imports below
# isort: on
import argparse
import faulthandler
import os
import signal
import sys
from typing import Any

from jitmodel import checkpoint as ckpt_io
from jitmodel import data as data_mod
from jitmodel.config import TrainConfig, load_train_config
from jitmodel.dist import DistEnv, barrier, destroy_process_group
from jitmodel.metrics import plan_expectations
from jitmodel.train_step import TrainingDiverged
from jitmodel.trainer import Trainer, one_line

__all__ = ["Trainer", "TrainingDiverged", "main"]


# --------------------------------------------------------------------------- entry point

ALLOW_UNVERIFIED_ENV = "JITMODEL_ALLOW_UNVERIFIED"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jitmodel.train", description="Train JiT from a TrainConfig YAML.")
    p.add_argument("--config", required=True, help="TrainConfig YAML, or a jitplan plan YAML holding one")
    p.add_argument("--resume", default=None, help="checkpoint file or folder, or 'auto' (<output_dir>/last.pt)")
    p.add_argument("--output-dir", default=None, help="override output_dir of the config")
    p.add_argument("--max-steps", type=int, default=None, help="override max_steps of the config")
    p.add_argument("--allow-unverified", action="store_true", default=os.environ.get(ALLOW_UNVERIFIED_ENV) == "1",
                   help=f"resume from a checkpoint without digests (also {ALLOW_UNVERIFIED_ENV}=1)")
    return p.parse_args(argv)


STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, n))


def _install_signal_handlers(trainer: Trainer) -> dict[int, Any]:
    """SIGTERM/SIGINT/SIGHUP ask for a clean stop after the current optimizer step; returns the old handlers.
    A second SIGINT (Ctrl-C twice) stops at once, without a checkpoint (``main`` says so in one line)."""
    def handler(signum: int, frame: Any) -> None:
        if trainer.stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        trainer.stop_signal = signum

    if hasattr(signal, "SIGUSR1"):  # a stall watchdog (jitplan's) asks for every thread's stack in the log
        try:
            faulthandler.register(signal.SIGUSR1, all_threads=True)
        except (OSError, ValueError, AttributeError):  # stderr without a file descriptor (captured, in-process)
            pass
    return {s: signal.signal(s, handler) for s in STOP_SIGNALS}


def _setup(args: argparse.Namespace) -> Trainer:
    """Config and Trainer; ValueError/OSError for bad input, StartupStop on a stop signal meanwhile."""
    if early_signals.caught() is not None:  # noted while the modules were imported (e.g. by `jitmodel train`)
        raise early_signals.StartupStop(early_signals.caught() or signal.SIGTERM)
    env = DistEnv.from_env()
    cfg = load_train_config(args.config)
    over = {k: v for k, v in (("output_dir", args.output_dir), ("max_steps", args.max_steps)) if v is not None}
    if over:
        cfg = TrainConfig.model_validate({**cfg.model_dump(), **over})
    trainer = Trainer(cfg, env, resume=args.resume, allow_unverified=args.allow_unverified)
    trainer.expect = plan_expectations(args.config)  # a plan's predictions: drift is reported in the log
    return trainer


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m jitmodel.train`` / ``torchrun -m jitmodel.train`` / ``jitmodel train``."""
    args = parse_args(argv)
    early_signals.install(mode="raise")  # a stop signal now unwinds the set-up at once
    old: dict[int, Any] = {}
    try:
        trainer = _setup(args)
        old = _install_signal_handlers(trainer)  # from here on: finish the step, checkpoint, exit 0
    except early_signals.StartupStop as e:
        print(early_signals.stopped_line(e.signum), file=sys.stderr)
        return _leave(old, 0)
    except (ValueError, OSError) as e:
        print(f"Error: {one_line(e)}", file=sys.stderr)
        return _leave(old, 2)
    try:
        rc = trainer.fit()
        barrier()  # leave together: a gloo rank torn down while its peer still works can abort at exit
        return rc
    except KeyboardInterrupt:  # a second Ctrl-C
        print(f"interrupted again at step {trainer.step}: stopped without a checkpoint; the last one is "
              f"{trainer.out / 'last.pt'}", file=sys.stderr)
        data_mod.close_loader(trainer.loader)
        return 130
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
        _leave(old, 0)


def _leave(old: dict[int, Any], rc: int) -> int:
    """Put the signal handlers back (the trainer's, then those from before main) and leave the group."""
    for s, h in old.items():
        signal.signal(s, h)
    old.clear()
    early_signals.restore()
    destroy_process_group()
    return rc


def _entry() -> int:
    from torch.distributed.elastic.multiprocessing.errors import record

    return record(main)() or 0


if __name__ == "__main__":
    sys.exit(_entry())
