"""torchrun with a clean end on a stop signal: ``python -m jitmodel.run <torchrun arguments>``.

torchrun (``torch.distributed.run``) forwards a SIGTERM or SIGINT to its ranks (the trainer then finishes
its step, writes a checkpoint and exits 0), but then raises ``SignalException`` itself and exits 1 with a
traceback, so a preempted run looks like a crash. This entry point runs torchrun in-process with the same
arguments and turns that one case into a line on stderr and exit 0 (SIGTERM, SIGINT) or 128 + signal
(others, e.g. SIGHUP); ranks that all stopped over budget (exit 3, jitmodel.replan.BUDGET_EXIT) give exit 3
without torchrun's traceback. Everything else, the ranks' own failures included, is torchrun's behaviour unchanged.

    python -m jitmodel.run --standalone --nproc-per-node=2 -m jitmodel.train --config plan.yaml --resume auto
"""

from __future__ import annotations

import signal
import sys

from jitmodel.replan import BUDGET_EXIT


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun_main

    try:
        torchrun_main(sys.argv[1:] if argv is None else argv)
    except ChildFailedError as e:
        codes = {f.exitcode for f in e.failures.values()}
        # the ranks leave together (a barrier after the checkpoint), but torchrun SIGTERMs the others as soon as
        # the first exits 3: a rank already past its checkpoint may show -15 (seen with torch 2.13, 2 gloo ranks)
        if BUDGET_EXIT not in codes or not codes <= {BUDGET_EXIT, -signal.SIGTERM}:
            raise
        print(f"torchrun: the ranks stopped over budget with a checkpoint (exit {BUDGET_EXIT})", file=sys.stderr,
              flush=True)
        return BUDGET_EXIT
    except SignalException as e:
        sig = signal.Signals(e.sigval)
        clean = sig in (signal.SIGTERM, signal.SIGINT)
        print(f"torchrun: stopped by {sig.name}; the ranks were asked to checkpoint and stop"
              + ("" if clean else f" (exit {128 + sig.value})"), file=sys.stderr, flush=True)
        return 0 if clean else 128 + sig.value
    return 0


if __name__ == "__main__":
    sys.exit(main())
