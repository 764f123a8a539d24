"""Run folders: one run, one folder, always. Where a run's config, log, pid and checkpoints live on this machine.

A new folder is *claimed*: created with ``mkdir`` without ``exist_ok`` (atomic in the kernel, like
``O_EXCL``), so two launches in the same second never share one; the loser of a collision takes the next
free name (``NAME-2``, ``NAME-3`` ...). A folder the user names to continue a run is *reused* as it is.

    >>> import tempfile
    >>> from pathlib import Path
    >>> root = Path(tempfile.mkdtemp())
    >>> [claim_run_dir(root, "JiT-B-16-256px-19700101-000000").name for _ in range(3)]
    ['JiT-B-16-256px-19700101-000000', 'JiT-B-16-256px-19700101-000000-2', 'JiT-B-16-256px-19700101-000000-3']

The layout (docs/launch.md "The run folder"): ``plan.yaml`` or ``train.yaml`` (the run's config, its
``train.output_dir`` relative ``out``), ``train.log``, ``out/`` (checkpoints), ``pid``, ``stop``.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import Protocol, TypeVar

from jitmodel.atomic import atomic_write_text
from jitmodel.config import TrainConfig
from jitplan.errors import UsageError

LOG_NAME = "train.log"
PID_NAME = "pid"
STOP_NAME = "stop"
MAX_SUFFIX = 1000

_R = TypeVar("_R", bound="StagedRun")


class StagedRun(Protocol):
    """What a run folder needs of a run spec (``jitplan.runspec.RunSpec`` is one)."""

    @property
    def train(self) -> TrainConfig: ...  # noqa: E704

    @property
    def file_name(self) -> str: ...  # noqa: E704

    def with_train(self: _R, train: TrainConfig) -> _R: ...  # noqa: E704

    def to_yaml(self) -> str: ...  # noqa: E704


def run_name(variant: str, img_size: int, now: float | None = None) -> str:
    """Run folders are named by variant (or a factory's label, ``my_denoiser:make``), resolution and time:
    ``JiT-B-16-256px-20260101-120000``, ``my_denoiser-make-16px-20260101-120000``.

        >>> run_name("JiT-B/16", 256, now=0)
        'JiT-B-16-256px-19700101-000000'
    """
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    return f"{variant.replace('/', '-').replace(':', '-')}-{img_size}px-{stamp}"


def _why(e: OSError) -> str:
    return os.strerror(e.errno) if e.errno else str(e)


def claim_run_dir(parent: str | Path, name: str) -> Path:
    """Create ``parent/name`` exclusively and return it; ``name-2``, ``name-3`` ... when it exists already.

    A one-line UsageError when the folder cannot be created (a file in the way, no permission, a full disk).
    """
    parent = Path(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the runs folder {parent}: {_why(e)}") from None
    for i in range(1, MAX_SUFFIX + 1):
        cand = parent / (name if i == 1 else f"{name}-{i}")
        try:
            cand.mkdir()  # no exist_ok: the kernel gives the folder to exactly one caller
            return cand
        except FileExistsError:
            continue
        except OSError as e:
            raise UsageError(f"cannot create the run folder {cand}: {_why(e)}") from None
    raise UsageError(f"more than {MAX_SUFFIX} run folders are named {name!r} in {parent}")


def reuse_run_dir(run_dir: str | Path) -> Path:
    """A folder the user named (``--run-dir``): created when missing, kept when it is a folder (a run continued
    there resumes from its ``out/last.pt``); a one-line UsageError when it cannot be a folder."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"the run folder {run_dir} exists and is not a folder")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the run folder {run_dir}: {_why(e)}") from None
    return run_dir


def prepare_run_dir(run: StagedRun, run_dir: str | Path, *, data_path: str | None = None) -> Path:
    """Write the run's config into ``run_dir``: ``plan.yaml`` for a plan, ``train.yaml`` for a bare TrainConfig.

    ``train.output_dir`` becomes ``out`` (relative: the trainer runs in the run folder, here or remote);
    ``data_path`` replaces ``train.data.path`` (an uploaded dataset). Returns the written file. The write is
    atomic: a full disk leaves no half-written config (a one-line UsageError naming the folder).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    train = run.train
    data = train.data if data_path is None else train.data.model_copy(update={"path": data_path})
    staged = run.with_train(train.model_copy(update={"output_dir": "out", "data": data}))
    try:
        return atomic_write_text(run_dir / run.file_name, staged.to_yaml())
    except OSError as e:
        full = " (the disk is full)" if e.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        raise UsageError(f"cannot write the run's config into {run_dir}: {_why(e)}{full}") from None


def drop_if_empty(run_dir: Path) -> None:
    """Remove a claimed folder that a failed launch left empty (nothing else is ever deleted)."""
    try:
        run_dir.rmdir()
    except OSError:
        pass
