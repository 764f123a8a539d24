"""Calibration records: what a run measured, keyed by GPU model, variant, compile and attention.

Shipped records (``shipped.yaml``, with their sources) are always read; ``jitplan calibrate`` adds local ones
to ``$JITPLAN_HOME/calibration.yaml`` (the registry's folder). A record of the same configuration folds into
the existing one (averages weighted by runs).

    >>> [r.gpu for r in shipped_records()]
    ['RTX 3060 12GB']
    >>> r = shipped_records()[0]
    >>> (r.variant, r.batch_per_gpu, r.world_size, r.compile, r.attention, r.runs)
    ('JiT-B/16', 16, 2, True, 'exact', 1)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jitmodel.atomic import atomic_write_text
from jitmodel.safeyaml import load_text, read_text
from jitplan.errors import UsageError
from jitplan.runs.home import default_home

SHIPPED_PATH = Path(__file__).with_name("shipped.yaml")
STORE_NAME = "calibration.yaml"


class CalibrationRecord(BaseModel):
    """One measured configuration (per GPU; times per optimizer step)."""

    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = 1
    gpu: str  # catalog name, e.g. "RTX 3060 12GB"
    variant: str
    img_size: Annotated[int, Field(gt=0)] = 256
    compile: bool
    attention: Literal["exact", "sdpa"]
    batch_per_gpu: Annotated[int, Field(gt=0)]
    accum_steps: Annotated[int, Field(gt=0)] = 1
    world_size: Annotated[int, Field(gt=0)] = 1
    nodes: Annotated[int, Field(gt=0)] = 1
    workers_per_rank: Annotated[int, Field(ge=0)] | None = None
    step_time_s: Annotated[float, Field(gt=0)] | None = None
    memory_used_bytes: Annotated[int, Field(gt=0)] | None = None  # per GPU, as nvidia-smi shows it
    peak_allocated_bytes: Annotated[int, Field(gt=0)] | None = None
    peak_reserved_bytes: Annotated[int, Field(gt=0)] | None = None
    data_wait_s: float | None = None
    compute_s: float | None = None
    optimizer_s: float | None = None
    runs: Annotated[int, Field(gt=0)] = 1
    date: str  # YYYY-MM-DD of the (last) measurement
    source: str  # where the numbers come from

    def key(self) -> tuple:
        return (self.gpu, self.variant, self.img_size, self.compile, self.attention, self.batch_per_gpu,
                self.accum_steps, self.world_size, self.nodes)

    def describe(self) -> str:
        return (f"{self.variant} {'compiled' if self.compile else 'eager'} {self.attention}, {self.world_size} x "
                f"{self.gpu}, batch {self.batch_per_gpu}")


def _read(path: Path) -> list[CalibrationRecord]:
    try:
        raw = load_text(read_text(path)) or []
    except FileNotFoundError:
        return []
    except (OSError, yaml.YAMLError) as e:
        raise UsageError(f"calibration store {path}: cannot read it ({type(e).__name__})") from None
    except ValueError as e:  # past a limit of safeyaml: not UTF-8, too deep, too big, a key twice
        raise UsageError(f"calibration store {path}: {e}") from None
    if not isinstance(raw, list):
        raise UsageError(f"calibration store {path}: expected a list of records")
    try:
        return [CalibrationRecord.model_validate(r) for r in raw]
    except ValidationError as e:
        raise UsageError(f"calibration store {path}: invalid record ({e.errors()[0]['msg']})") from None


def shipped_records() -> list[CalibrationRecord]:
    return _read(SHIPPED_PATH)


def store_path(home: Path | None = None) -> Path:

    return (home or default_home()) / STORE_NAME


def local_records(home: Path | None = None) -> list[CalibrationRecord]:
    return _read(store_path(home))


def all_records(home: Path | None = None) -> list[CalibrationRecord]:
    """Shipped + local; a local record of a shipped configuration wins."""
    local = local_records(home)
    keys = {r.key() for r in local}
    return [r for r in shipped_records() if r.key() not in keys] + local


def _avg(a: float | None, na: int, b: float | None, nb: int) -> float | None:
    if a is None or b is None:
        return b if a is None else a
    return (a * na + b * nb) / (na + nb)


def fold(old: CalibrationRecord, new: CalibrationRecord) -> CalibrationRecord:
    """Two records of one configuration -> one, averages weighted by their runs; the later date and sources.

        >>> a = shipped_records()[0]
        >>> b = a.model_copy(update={"step_time_s": 0.64, "date": "2027-01-01", "source": "run x"})
        >>> f = fold(a, b)
        >>> f.runs, round(f.step_time_s, 2), f.date
        (2, 0.59, '2027-01-01')
    """
    na, nb = old.runs, new.runs
    upd: dict[str, object] = {"runs": na + nb, "date": max(old.date, new.date),
                              "source": old.source if new.source in old.source else f"{old.source}; {new.source}"}
    for f in ("step_time_s", "data_wait_s", "compute_s", "optimizer_s"):
        upd[f] = _avg(getattr(old, f), na, getattr(new, f), nb)
    for f in ("memory_used_bytes", "peak_allocated_bytes", "peak_reserved_bytes"):
        v = _avg(getattr(old, f), na, getattr(new, f), nb)
        upd[f] = None if v is None else int(v)
    return old.model_copy(update=upd)


def add_record(rec: CalibrationRecord, home: Path | None = None) -> CalibrationRecord:
    """Fold ``rec`` into the local store (atomically); returns the stored record."""
    path = store_path(home)
    records = local_records(home)
    for i, r in enumerate(records):
        if r.key() == rec.key():
            records[i] = rec = fold(r, rec)
            break
    else:
        records.append(rec)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, yaml.safe_dump([r.model_dump(mode="json", exclude_none=True) for r in records],
                                           sort_keys=False))
    return rec
