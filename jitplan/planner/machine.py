"""The machine you rent, after the step is timed: the range an unmeasured link spans, staging the dataset from
its download speed, the price per hour (given, an offer's, or the catalog's dated market price) and the cost,
and the process-group timeout from the step time and the evaluation chunks. Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from jitmodel.config import TrainConfig
from jitplan.hardware.figures import figures_from_offer
from jitplan.hardware.schema import HardwareSpec
from jitplan.planner import link as links
from jitplan.planner import timeouts, timing
from jitplan.schemas import Estimates, PlanOptions

STEP_WITH_LINK = Callable[[links.Link], float]  # the plan's step time over another link


def price(hardware: HardwareSpec, options: PlanOptions) -> tuple[float | None, str]:
    """(USD per hour for all nodes, where it comes from)."""
    gpu = hardware.gpu
    if options.price_per_hour is not None:
        return options.price_per_hour * hardware.nodes, "--price-per-hour x nodes"
    if gpu is not None and gpu.price_usd_hour is not None:
        n = hardware.nodes * hardware.gpus_per_node
        return gpu.price_usd_hour * n, f"typical market price {n} x ${gpu.price_usd_hour:.2f}/h ({gpu.price_source})"
    return None, f"no sourced market price for {gpu.name if gpu else 'this GPU'} in the catalog: give --price-per-hour"


def staging_s(hardware: HardwareSpec, num_images: int) -> float | None:
    """Downloading the dataset once at the machine's published download speed (JPEGs of timing.JPEG_BYTES)."""
    mbps = hardware.host.download_mbps
    return None if not mbps else num_images * timing.JPEG_BYTES * 8 / (mbps * 1e6)


def finish(est: Estimates, hardware: HardwareSpec, train: TrainConfig, options: PlanOptions,
           step_with: STEP_WITH_LINK) -> tuple[Estimates, list[str]]:
    """Link range, staging, price, cost and timeout on top of the timed estimates; (estimates, warnings)."""
    gpu = hardware.gpu
    assert gpu is not None
    warnings: list[str] = []
    upd: dict[str, object] = {}
    world = hardware.world_size
    if world > 1:
        link = links.link_for(gpu, hardware.nodes, hardware.host)
        upd["link"] = link.why
        if not link.known and link.kind.startswith("pcie") and est.time_source == "prior":
            x16, x1 = links.range_links(gpu)
            here = step_with(link)  # the plain step: only the link's share moves (strategies add on top of it)
            lo, hi = (est.epoch_time_s + est.steps_per_epoch * (step_with(k) - here) for k in (x16, x1))
            upd["epoch_range_s"] = (lo, hi)
            warnings.append(f"the PCIe link is not measured: an epoch takes {lo / 3600:.1f} h at x16 ... "
                            f"{hi / 3600:.1f} h at x1 (the all-reduce: {x16.why} ... {x1.why}); give an offer "
                            "(--offer), a probe (--hardware) or --pcie-lanes / --pcie-gbs")
    stage = staging_s(hardware, train.data.planned_images)
    total = est.total_time_s + (stage or 0.0)
    if stage is not None:
        upd["staging_s"] = stage
    pph, src = price(hardware, options)
    upd.update(total_time_s=total, price_per_hour=pph, price_source=src,
               cost_usd=None if pph is None else total / 3600 * pph)
    ev = train.eval
    chunk = timeouts.eval_chunks(est.eval_time_s, ev.num_images, world, ev.gen_batch) if ev.online else None
    timeout = timeouts.timeout_for(est.step_time_s, chunk, world)
    upd["dist_timeout_s"] = timeout
    if chunk is not None and world > 1:
        upd.update(eval_chunk_images=chunk.images, eval_chunk_s=chunk.seconds)
        if chunk.chunks > 1 and timeout is not None and est.eval_time_s > timeout:
            warnings.append(f"one online evaluation takes {est.eval_time_s / 3600:.1f} h; the {timeout / 60:.0f} min "
                            f"process-group timeout holds when ranks meet after every {chunk.images} images per rank "
                            f"(~{chunk.seconds / 60:.0f} min; the trainer's evaluation in chunks)")
    return est.model_copy(update=upd), warnings


@dataclass(frozen=True)
class OfferEstimate:
    epoch_s: float
    staging_s: float | None  # downloading the dataset once at the offer's speed
    usd_per_epoch: float | None  # (epoch + staging spread over the run's epochs) x price per hour
    binding: str  # the largest term, e.g. "PCIe 3.2 GB/s host copy: all-reduce 0.13 s of 0.49 s"


def offer_estimate(hardware: HardwareSpec, train: TrainConfig, fields: Mapping[str, object],
                   step_for: Callable[[HardwareSpec], tuple[float, int, str, float]]) -> OfferEstimate:
    """One offer planned with its own published figures (``fields``: neutral keys or Vast's, see
    jitplan.hardware.figures). ``step_for(hw)`` -> (step s, steps per epoch, largest term's name, its seconds):
    jitplan.planner.plan.offer_step. The provider layer maps its Offer to ``fields`` and calls
    jitplan.planner.plan.plan_offer; nothing here imports a provider."""
    figs = figures_from_offer(fields, offer_id=fields.get("id"), base=hardware.host)
    hw = hardware.model_copy(update={"host": figs.host})
    step, spe, name, secs = step_for(hw)
    epoch = step * spe
    stage = staging_s(hw, train.data.planned_images)
    spread = (stage or 0.0) / max(train.epochs, 1.0)
    cost = None if figs.price_usd_hour is None else (epoch + spread) * figs.price_usd_hour / 3600
    link = links.link_for(hw.gpu, hw.nodes, hw.host) if hw.gpu is not None and hw.world_size > 1 else None
    what = f"{link.why.split(':')[0]}: " if link is not None and name == "all-reduce" else ""
    return OfferEstimate(epoch_s=epoch, staging_s=stage, usd_per_epoch=cost,
                         binding=f"{what}{name} {secs:.2f} s of {step:.2f} s")
