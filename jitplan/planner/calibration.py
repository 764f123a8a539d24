"""Correct a plan's priors with measured runs (pure: the records are an argument). A record applies to the
terms it measured.

- **The same configuration** (GPU model, variant, image size, compile, attention, micro-batch, accumulation,
  GPUs, nodes): the plan's step time and memory *are* the measurement, shown as "measured on ...", with the
  time model's own figure beside it. Evaluation (not measured by a training record) stays the model's.
- **Another configuration on the same GPU model**: the record transfers an efficiency to the compute terms
  only (tensor, fp32 attention, elementwise traffic, launches, gradient accumulation): measured compute /
  predicted compute of the record's own configuration. The measured compute is the record's own split
  (``compute_s``) when it has one, or, for a one-GPU record, its step minus the model's non-compute terms.
  The plan lists which terms moved and by how much. A multi-GPU record with no split is not transferred: its
  step mixes compute with an all-reduce over a link nobody measured, and the plan says so.

    >>> from jitplan.calibration.records import shipped_records
    >>> rec, how = match(shipped_records(), gpu="RTX 3060 12GB", variant="JiT-B/16", img_size=256, compile=True,
    ...                  attention="exact", batch_per_gpu=16, accum=1, world_size=2)
    >>> rec.batch_per_gpu, how
    (16, 'exact')
    >>> match(shipped_records(), gpu="H100 SXM", variant="JiT-B/16", img_size=256, compile=True, attention="exact",
    ...       batch_per_gpu=16, accum=1, world_size=2) is None
    True
"""

from __future__ import annotations

from collections.abc import Sequence

from jitplan.calibration.records import CalibrationRecord
from jitplan.hardware.catalog import lookup
from jitplan.hardware.schema import GPUSpec
from jitplan.planner import memory, timing
from jitplan.schemas import Estimates, MemoryItem, TimeItem

COMPUTE_TERMS = ("tensor", "fp32 attention", "elementwise traffic", "launch-bound", "gradient accumulation")
EFFICIENCY_BOUNDS = (0.25, 4.0)  # a transferred efficiency outside this is a broken record, not a GPU


def match(records: Sequence[CalibrationRecord], *, gpu: str, variant: str, img_size: int, compile: bool,
          attention: str, batch_per_gpu: int, accum: int, world_size: int, nodes: int = 1,
          ) -> tuple[CalibrationRecord, str] | None:
    """(record, "exact" | "transfer") or None when no record is of this GPU model. Among same-GPU records
    the exact configuration wins, then the one with the fewest differences (variant, compile, attention)."""
    same_gpu = [r for r in records if r.gpu == gpu]
    if not same_gpu:
        return None
    want = (gpu, variant, img_size, compile, attention, batch_per_gpu, accum, world_size, nodes)
    for r in same_gpu:
        if r.key() == want:
            return r, "exact"

    def distance(r: CalibrationRecord) -> tuple:
        differ = (r.variant != variant) + (r.compile != compile) + (r.attention != attention)
        return differ, r.world_size != world_size, abs(r.batch_per_gpu - batch_per_gpu), -r.runs

    return min(same_gpu, key=distance), "transfer"


def _where(rec: CalibrationRecord) -> str:
    runs = f"{rec.runs} run{'s' if rec.runs != 1 else ''}"
    return f"{rec.world_size} x {rec.gpu} ({rec.date}, {runs})"


def record_inputs(rec: CalibrationRecord, gpu: GPUSpec) -> timing.TimeInputs:
    return timing.TimeInputs.for_model(rec.variant, gpu, img_size=rec.img_size, micro_batch=rec.batch_per_gpu,
                                       accum=rec.accum_steps, world_size=rec.world_size, nodes=rec.nodes,
                                       compile=rec.compile, attention=rec.attention,
                                       workers_per_rank=rec.workers_per_rank)


def time_factor(rec: CalibrationRecord, gpu: GPUSpec) -> float | None:
    """measured / predicted step time of the record's own configuration (how far the priors were off)."""
    if rec.step_time_s is None:
        return None
    return rec.step_time_s / timing.train_step_time(record_inputs(rec, gpu)).total_s


def compute_efficiency(rec: CalibrationRecord, gpu: GPUSpec) -> tuple[float | None, str]:
    """(measured / predicted compute of the record's configuration, or None; why)."""
    st = timing.train_step_time(record_inputs(rec, gpu))
    predicted = sum(st.get(n) for n in COMPUTE_TERMS)
    if rec.compute_s is not None:
        measured, how = rec.compute_s, "its measured compute split"
    elif rec.world_size == 1 and rec.step_time_s is not None:
        measured, how = rec.step_time_s - (st.total_s - predicted), "its step minus the model's non-compute terms"
    elif rec.step_time_s is not None:
        return None, (f"not transferred: its {rec.step_time_s:.3f} s step on {rec.world_size} GPUs has no compute "
                      "split, and its all-reduce ran over a link nobody measured")
    else:
        return None, "not transferred: the record has no step time"
    if predicted <= 0 or measured <= 0:
        return None, "not transferred: no compute to compare"
    eff = measured / predicted
    lo, hi = EFFICIENCY_BOUNDS
    if not lo <= eff <= hi:
        return None, f"not transferred: compute x{eff:.2f} is outside [{lo}, {hi}] (a broken record?)"
    return eff, how


def apply(est: Estimates, records: Sequence[CalibrationRecord], *, gpu: GPUSpec, variant: str, img_size: int,
          compile: bool, attention: str, batch_per_gpu: int, accum: int, world_size: int, nodes: int = 1,
          epochs: float = 1) -> tuple[Estimates, str | None]:
    """(the estimates corrected by the matching record, a note when a record was found but not applied)."""
    hit = match(records, gpu=gpu.name, variant=variant, img_size=img_size, compile=compile, attention=attention,
                batch_per_gpu=batch_per_gpu, accum=accum, world_size=world_size, nodes=nodes)
    if hit is None:
        return est, None
    rec, how = hit
    if how == "exact":
        return _measured(est, rec, epochs), None
    eff, why = compute_efficiency(rec, gpu)
    if eff is None:
        return est, f"calibration record {rec.describe()} ({rec.date}): {why}; time stays the prior"
    return _transferred(est, rec, eff, why, epochs), None


def _retime(est: Estimates, step: float, epochs: float) -> dict[str, object]:
    epoch = est.steps_per_epoch * step
    f = est.step_time_s / step
    return dict(step_time_s=step, images_per_s=est.images_per_s * f, epoch_time_s=epoch,
                total_time_s=epochs * epoch + est.num_evals * est.eval_time_s, mfu=round(est.mfu * f, 4))


def _measured(est: Estimates, rec: CalibrationRecord, epochs: float) -> Estimates:
    said = f"measured on {_where(rec)}"
    upd: dict[str, object] = {}
    if rec.step_time_s is not None:
        upd.update(_retime(est, rec.step_time_s, epochs), time_source=said,
                   step_breakdown=[*est.step_breakdown, TimeItem(
                       name="measured", seconds=rec.step_time_s - est.step_time_s,
                       why=f"measured {rec.step_time_s:.3f} s per step ({rec.source.split(';')[0][:80]}); the "
                           f"time model above says {est.step_time_s:.3f} s")])
    if rec.memory_used_bytes is not None:
        off = rec.memory_used_bytes - est.memory_per_gpu_bytes
        upd.update(memory_per_gpu_bytes=rec.memory_used_bytes, memory_calibration=said, memory_source="measured",
                   memory_breakdown=[*est.memory_breakdown, MemoryItem(
                       name="measured", bytes=off, why=f"measured {rec.memory_used_bytes / 2**30:.2f} GiB - "
                                                      f"predicted on {rec.describe()}")])
    return est.model_copy(update=upd)


def _transferred(est: Estimates, rec: CalibrationRecord, eff: float, how: str, epochs: float) -> Estimates:
    moved = [(t.name, t.seconds * (eff - 1)) for t in est.step_breakdown if t.name in COMPUTE_TERMS and t.seconds]
    delta = sum(d for _, d in moved)
    step = est.step_time_s + delta
    terms = [TimeItem(name=t.name, seconds=t.seconds * eff if t.name in COMPUTE_TERMS else t.seconds, why=t.why)
             for t in est.step_breakdown]
    said = f"compute x{eff:.2f} from {rec.describe()} ({rec.date})"
    detail = ", ".join(f"{n} {d * 1e3:+.0f} ms" for n, d in moved)
    terms.append(TimeItem(name="calibration", seconds=0.0,
                          why=f"compute terms x{eff:.3f} ({how}, {rec.describe()}): {detail}; other terms are "
                              "the prior"))
    return est.model_copy(update={**_retime(est, step, epochs), "time_source": said, "step_breakdown": terms})


def known_gap(records: Sequence[CalibrationRecord]) -> tuple[float, CalibrationRecord] | None:
    """The largest measured / predicted step-time ratio among the records (each on its own GPU), or None.

    A plan on a GPU no record covers runs on priors; this is how far the priors have been off where they were
    checked, which such a plan states beside its time (it does not correct it: another GPU, another ratio)."""
    worst: tuple[float, CalibrationRecord] | None = None
    for rec in records:
        try:
            f = time_factor(rec, lookup(rec.gpu))
        except (KeyError, ValueError):
            continue
        if f is not None and (worst is None or f > worst[0]):
            worst = (f, rec)
    return worst


def memory_offset(rec: CalibrationRecord, gpu: GPUSpec) -> int | None:
    """measured - predicted memory per GPU of the record's own configuration (bytes)."""
    if rec.memory_used_bytes is None:
        return None
    inp = memory.MemoryInputs.for_model(rec.variant, rec.img_size, world_size=rec.world_size,
                                        compile=rec.compile, attention=rec.attention, accum=rec.accum_steps,
                                        nvlink=gpu.nvlink)
    return rec.memory_used_bytes - memory.predict(inp, rec.batch_per_gpu).total
