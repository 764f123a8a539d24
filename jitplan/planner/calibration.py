"""Correct a plan's priors with measured runs (pure: the records are an argument).

A record matches when it was measured on the same GPU model; among those, the one with the same variant,
compile and attention wins, else the nearest (fewest of those three differing, then the closest batch). The
time model is run on the record's own configuration; the ratio measured / predicted scales the plan's step
(and its evaluation), and the difference measured - predicted memory is added to the plan's, so a record of
exactly this configuration reproduces its measurement. Every corrected number says where it came from:
"calibrated from 2 runs on RTX 3060 12GB (2025-11)", or "prior".

    >>> from jitplan.calibration.records import shipped_records
    >>> from jitplan.hardware.catalog import lookup
    >>> rec, exact = match(shipped_records(), gpu=lookup("RTX 3060").name, variant="JiT-B/16", compile=True,
    ...                    attention="exact", batch_per_gpu=32)
    >>> rec.batch_per_gpu, exact
    (16, True)
    >>> match(shipped_records(), gpu="H100 SXM", variant="JiT-B/16", compile=True, attention="exact") is None
    True
"""

from __future__ import annotations

from collections.abc import Sequence

from jitplan.calibration.records import CalibrationRecord
from jitplan.hardware.schema import GPUSpec
from jitplan.planner import memory, timing
from jitplan.schemas import Estimates, MemoryItem, TimeItem


def match(records: Sequence[CalibrationRecord], *, gpu: str, variant: str, compile: bool, attention: str,
          batch_per_gpu: int | None = None, world_size: int | None = None,
          ) -> tuple[CalibrationRecord, bool] | None:
    """(record, whether variant/compile/attention all match) or None when no record is of this GPU model."""
    same_gpu = [r for r in records if r.gpu == gpu]
    if not same_gpu:
        return None

    def distance(r: CalibrationRecord) -> tuple:
        differ = (r.variant != variant) + (r.compile != compile) + (r.attention != attention)
        return (differ, r.world_size != (world_size or r.world_size),
                abs(r.batch_per_gpu - (batch_per_gpu or r.batch_per_gpu)), -r.runs)

    best = min(same_gpu, key=distance)
    return best, distance(best)[0] == 0


def label(rec: CalibrationRecord, exact: bool) -> str:
    runs = f"{rec.runs} run{'s' if rec.runs != 1 else ''}"
    near = "" if exact else f", nearest: {rec.describe()}"
    return f"calibrated from {runs} on {rec.gpu} ({rec.date}{near})"


def time_factor(rec: CalibrationRecord, gpu: GPUSpec) -> float | None:
    """measured / predicted step time of the record's own configuration."""
    if rec.step_time_s is None:
        return None
    inp = timing.TimeInputs.for_model(rec.variant, gpu, img_size=rec.img_size, micro_batch=rec.batch_per_gpu,
                                      accum=rec.accum_steps, world_size=rec.world_size, nodes=rec.nodes,
                                      compile=rec.compile, attention=rec.attention,
                                      workers_per_rank=rec.workers_per_rank)
    return rec.step_time_s / timing.train_step_time(inp).total_s


def memory_offset(rec: CalibrationRecord, gpu: GPUSpec) -> int | None:
    """measured - predicted memory per GPU of the record's own configuration (bytes)."""
    if rec.memory_used_bytes is None:
        return None
    inp = memory.MemoryInputs.for_model(rec.variant, rec.img_size, world_size=rec.world_size,
                                        compile=rec.compile, attention=rec.attention, accum=rec.accum_steps,
                                        nvlink=gpu.nvlink)
    return rec.memory_used_bytes - memory.predict(inp, rec.batch_per_gpu).total


def apply(est: Estimates, records: Sequence[CalibrationRecord], *, gpu: GPUSpec, variant: str, compile: bool,
          attention: str, batch_per_gpu: int, world_size: int) -> Estimates:
    """The estimates corrected by the matching record (unchanged, "prior", when none matches)."""
    hit = match(records, gpu=gpu.name, variant=variant, compile=compile, attention=attention,
                batch_per_gpu=batch_per_gpu, world_size=world_size)
    if hit is None:
        return est
    rec, exact = hit
    said = label(rec, exact)
    upd: dict[str, object] = {}
    f = time_factor(rec, gpu)
    if f is not None:
        upd.update(step_time_s=est.step_time_s * f, images_per_s=est.images_per_s / f,
                   epoch_time_s=est.epoch_time_s * f, eval_time_s=est.eval_time_s * f,
                   total_time_s=est.total_time_s * f, mfu=round(est.mfu / f, 4), time_source=said,
                   cost_usd=None if est.cost_usd is None else est.cost_usd * f,
                   step_breakdown=[TimeItem(name=t.name, seconds=t.seconds * f, why=t.why)
                                   for t in est.step_breakdown]
                   + [TimeItem(name="calibration", seconds=0.0, why=f"every term x {f:.3f} = measured / predicted "
                               f"step of {rec.describe()}")])
    off = memory_offset(rec, gpu)
    if off is not None:
        upd.update(memory_per_gpu_bytes=est.memory_per_gpu_bytes + off, memory_calibration=said,
                   memory_breakdown=[*est.memory_breakdown, MemoryItem(
                       name="calibration", bytes=abs(off), why=f"{'+' if off >= 0 else '-'}{abs(off) / 2**20:.0f} MiB: "
                       f"measured - predicted on {rec.describe()}")])
    return est.model_copy(update=upd)


def known_gap(records: Sequence[CalibrationRecord]) -> tuple[float, CalibrationRecord] | None:
    """The largest measured / predicted step-time ratio among the records (each on its own GPU), or None.

    A plan on a GPU no record covers runs on priors; this is how far the priors have been off where they were
    checked, which such a plan states beside its time (it does not correct it: another GPU, another ratio)."""
    from jitplan.hardware.catalog import lookup

    worst: tuple[float, CalibrationRecord] | None = None
    for rec in records:
        try:
            f = time_factor(rec, lookup(rec.gpu))
        except (KeyError, ValueError):
            continue
        if f is not None and (worst is None or f > worst[0]):
            worst = (f, rec)
    return worst

