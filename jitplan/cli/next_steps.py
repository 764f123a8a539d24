"""What to run after a local training run, printed whole and copy-pasteable (``jitplan launch --local``).

    >>> after_training("9df843", "runs/tiny", digits=True)[2]
    'jitmodel sample --ckpt runs/tiny/out/last.pt --classes 0,1,2,3,4,5,6,7,8,9 --steps 20 --out runs/tiny/grid.png'
"""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console

from jitplan.cli._output import print_next


def _short(path: str | Path) -> str:
    """``path`` relative to the working folder when it is under it (shorter commands), else absolute."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def after_training(run_id: str, run_dir: str | Path, *, digits: bool, num_classes: int = 10) -> list[str]:
    """The commands that look at a finished run: its events, its report, samples and one trajectory."""
    rdir = _short(run_dir)
    ckpt = os.path.join(rdir, "out", "last.pt")
    classes = ",".join(str(c) for c in range(min(num_classes, 10)))
    one = 7 if digits and num_classes > 7 else 0
    return [f"jitplan status {run_id}",
            f"jitplan report {run_id} --out {os.path.join(rdir, 'report.html')}",
            f"jitmodel sample --ckpt {ckpt} --classes {classes} --steps 20 --out {os.path.join(rdir, 'grid.png')}",
            f"jitmodel trajectory --ckpt {ckpt} --class {one} --steps 10 --out {os.path.join(rdir, 'strip.png')} "
            f"--html {os.path.join(rdir, 'trajectory.html')}"]


def print_after_training(console: Console, run_id: str, run_dir: str | Path, *, digits: bool,
                         num_classes: int = 10) -> None:
    print_next(console, "look at the run, then draw samples and a trajectory from it:",
               after_training(run_id, run_dir, digits=digits, num_classes=num_classes))
