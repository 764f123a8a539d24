"""Offers ranked by predicted cost per epoch (not only $/h), each planned on its own machine.

Pure: no SDK, no network, no printing. For each offer the plan's hardware is copied with the offer's GPU (from
the catalog) and the offer's published figures (PCIe bandwidth and lanes, effective cores, RAM, disk bandwidth,
download speed: ``offer_fields``), and :func:`jitplan.planner.step.plan_offer` gives the epoch time, the
dollars per epoch (dataset staging spread over the run included) and the term that binds the step, so a
0.30 $/h RTX 3060 pair on a x4 link can lose to the same pair on x16. An offer whose GPU is not in the catalog
is ranked by $/h after those that have an estimate.

    ranked = rank(plan, provider.search(query), query)
    ranked[0].offer.id, ranked[0].cost_per_epoch, ranked[0].why
    console.print(offers_table(ranked, provider="Vast.ai"))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from jitplan.hardware.catalog import match_nvml_name
from jitplan.planner.plan import step_time
from jitplan.planner.step import plan_offer
from jitplan.providers import Offer, OfferQuery

if TYPE_CHECKING:  # pragma: no cover
    from rich.table import Table

    from jitplan.hardware.schema import GPUSpec
    from jitplan.schemas import Plan

MIB = 1024 * 1024


class RankedOffer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    offer: Offer
    gpu: str | None  # catalog name, None when the model is not in the catalog
    dph: float  # what we would pay per hour
    epoch_time_s: float | None
    cost_per_epoch: float | None
    binding: str | None = None  # the step's largest term on this machine, e.g. "PCIe ...: all-reduce 0.32 s of 0.63 s"

    @property
    def why(self) -> str:
        if self.cost_per_epoch is None or self.epoch_time_s is None:
            return f"{self.offer.gpu_name} is not in the GPU catalog: ranked by $/h only"
        bound = f"; {self.binding}" if self.binding else ""
        return f"{self.epoch_time_s / 3600:.2f} h/epoch x {self.dph:.3f} $/h{bound}"


def offer_fields(o: Offer, dph: float) -> dict[str, object]:
    """An offer's published figures under the planner's neutral keys (jitplan.hardware.figures.KEYS)."""
    return {"id": o.id, "pcie_gbs": o.pcie_bandwidth_gbps, "pcie_lanes": o.pcie_lanes, "pcie_gen": o.pcie_gen,
            "cpus": o.cpu_cores_effective or None, "ram_mb": o.ram_gb * 1000 or None,
            "disk_read_mbs": o.disk_bandwidth_mbps, "download_mbps": o.download_mbps, "price_usd_hour": dph}


def epoch_time_s(plan: Plan, gpu: GPUSpec, num_gpus: int) -> float:
    """The planner's seconds per epoch of ``plan.train`` on ``num_gpus`` x ``gpu`` (one node, plan's host)."""

    hw = plan.hardware.model_copy(update={"gpu": gpu, "gpus_per_node": num_gpus, "nodes": 1})
    step, steps_per_epoch = step_time(hw, plan.train)
    return step.total_s * steps_per_epoch


def satisfies(o: Offer, query: OfferQuery) -> bool:
    """What the provider's filter cannot check exactly: the RAM share, CPUs, disk, CUDA, the bid floor."""
    if o.num_gpus != query.num_gpus or o.gpu_ram_mib < query.min_gpu_ram_mib:
        return False
    if o.ram_gb * 1000 < query.min_cpu_ram_mb or o.cpu_cores_effective < query.min_cpus:
        return False
    if o.max_cuda < query.min_cuda or o.disk_gb < query.min_disk_gb:
        return False
    return not (query.bid is not None and o.min_bid_per_hour is not None and o.min_bid_per_hour > query.bid)


def rank(plan: Plan, offers: list[Offer], query: OfferQuery) -> list[RankedOffer]:
    """Offers that really satisfy ``query``, cheapest predicted epoch first (then $/h, then reliability)."""

    out: list[RankedOffer] = []
    for o in offers:
        if not satisfies(o, query):
            continue
        spec = match_nvml_name(o.gpu_name, int(o.gpu_ram_mib * MIB))
        dph = o.price(query.bid)
        if spec is None:
            out.append(RankedOffer(offer=o, gpu=None, dph=dph, epoch_time_s=None, cost_per_epoch=None))
            continue
        on_it = plan.model_copy(update={"hardware": plan.hardware.model_copy(update={"gpu": spec})})
        est = plan_offer(on_it, o.num_gpus, offer_fields(o, dph))
        out.append(RankedOffer(offer=o, gpu=spec.name, dph=dph, epoch_time_s=est.epoch_s,
                               cost_per_epoch=est.usd_per_epoch, binding=est.binding))
    out.sort(key=lambda r: (r.cost_per_epoch is None, r.cost_per_epoch or 0.0, r.dph, -(r.offer.reliability or 0)))
    return out


def short_binding(binding: str | None) -> str:
    """ "3.2 GB/s host<->GPU copy (offer 1), no P2P ...: all-reduce 0.32 s of 0.63 s" -> "3.2 GB/s: all-reduce 0.32 s
    of 0.63 s" for the table (the whole text is in ``RankedOffer.why``)."""
    if not binding:
        return "?"
    if ": " not in binding:
        return binding
    head, tail = binding.rsplit(": ", 1)
    return f"{head.split(' host')[0].split(' (')[0]}: {tail}"


def offers_table(ranked: list[RankedOffer], *, provider: str, top: int = 5) -> Table:
    """The top offers as a rich table (the caller prints it, usually on stderr)."""
    from rich.table import Table

    t = Table(title=f"Top {min(top, len(ranked))} of {len(ranked)} {provider} offers (by predicted cost per epoch)")
    for col in ("#", "offer", "GPUs", "$/h", "h/epoch", "$/epoch", "bound by", "RAM GB", "CPUs", "CUDA", "reliab.",
                "where"):
        t.add_column(col, justify="right" if col not in ("GPUs", "bound by", "where") else "left")
    for i, r in enumerate(ranked[:top], 1):
        o = r.offer
        t.add_row(
            str(i), str(o.id), f"{o.num_gpus}x {o.gpu_name}", f"{r.dph:.3f}",
            f"{r.epoch_time_s / 3600:.2f}" if r.epoch_time_s is not None else "?",
            f"{r.cost_per_epoch:.3f}" if r.cost_per_epoch is not None else "?", short_binding(r.binding),
            f"{o.ram_gb:.0f}", f"{o.cpu_cores_effective:g}", f"{o.max_cuda:g}",
            f"{o.reliability:.3f}" if o.reliability is not None else "?", o.geolocation or "",
        )
    return t
