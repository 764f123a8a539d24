"""The published figures of a rented machine as the planner's neutral host model (pure, no provider import).

A marketplace offer (Vast.ai publishes, per offer, its measured PCIe bandwidth and lanes, effective CPU cores,
RAM, disk bandwidth and download speed) or a probe of this machine becomes a ``HostFigures``: a HostSpec (what
the time model reads: link, cores, disk, RAM, download) and the price per hour of the whole machine. The
provider layer maps its own offer object to the neutral keys below and calls ``figures_from_offer``; the
planner never imports a provider.

    >>> f = figures_from_offer({"pcie_gbs": 3.2, "pcie_lanes": 4, "cpus": 12, "ram_mb": 64000,
    ...                         "disk_read_mbs": 1500, "download_mbps": 800, "price_usd_hour": 0.31}, offer_id=7)
    >>> f.host.pcie_gbs, f.host.pcie_lanes, f.host.cpus, f.host.ram_bytes, f.price_usd_hour
    (3.2, 4, 12, 64000000000, 0.31)
    >>> figures_from_offer({"pcie_bw": 24.5, "cpu_cores_effective": 31.7, "inet_down": 2000}).host.cpus
    31
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from jitplan.errors import UsageError
from jitplan.hardware.schema import HostSpec

# Neutral key -> the names it may arrive under (the neutral name first; then Vast's raw search fields).
KEYS: dict[str, tuple[str, ...]] = {
    "pcie_gbs": ("pcie_gbs", "pcie_bw"),  # measured host<->GPU copy bandwidth, GB/s, per GPU
    "pcie_lanes": ("pcie_lanes", "gpu_lanes"),
    "pcie_gen": ("pcie_gen", "pci_gen"),
    "nvlink_gbs": ("nvlink_gbs", "bw_nvlink"),
    "cpus": ("cpus", "cpu_cores_effective"),  # effective cores the instance gets
    "ram_mb": ("ram_mb", "cpu_ram_mb", "cpu_ram"),  # the RAM share the instance gets, MB
    "disk_read_mbs": ("disk_read_mbs", "disk_bw"),  # MB/s
    "download_mbps": ("download_mbps", "inet_down_mbps", "inet_down"),  # Mbit/s
    "price_usd_hour": ("price_usd_hour", "dph_total"),  # the whole machine, $/h
}


@dataclass(frozen=True)
class HostFigures:
    host: HostSpec
    price_usd_hour: float | None = None


def _get(fields: Mapping[str, object], key: str) -> float | None:
    for name in KEYS[key]:
        v = fields.get(name)
        if v is None or isinstance(v, bool):
            continue
        try:
            x = float(v)  # type: ignore[arg-type]  # checked: numbers and numeric strings
        except (TypeError, ValueError):
            raise UsageError(f"offer field {name}: {v!r} is not a number") from None
        if not math.isfinite(x) or x < 0:
            raise UsageError(f"offer field {name}: {v!r} must be a finite number >= 0")
        return x if x > 0 else None  # 0 means "not measured" in marketplace listings
    return None


def figures_from_offer(fields: Mapping[str, object], *, offer_id: object = None, date: str | None = None,
                       base: HostSpec | None = None) -> HostFigures:
    """A HostFigures from an offer's published numbers (neutral or Vast keys; missing keys stay unknown).

    ``base``: host values to keep where the offer says nothing (e.g. the --shm flag)."""
    g = {k: _get(fields, k) for k in KEYS}
    lanes = g["pcie_lanes"]
    gen = g["pcie_gen"]
    ram = g["ram_mb"]
    where = f"offer {offer_id}" if offer_id is not None else "offer"
    host = (base or HostSpec()).model_copy(update={
        k: v for k, v in {
            "pcie_gbs": g["pcie_gbs"], "pcie_lanes": min(16, max(1, int(lanes))) if lanes else None,
            "pcie_gen": min(6, max(1, int(gen))) if gen else None,
            "nvlink": True if g["nvlink_gbs"] else None,
            "cpus": max(1, int(g["cpus"])) if g["cpus"] else None,
            "ram_bytes": int(ram * 1e6) if ram else None,
            "disk_read_mbs": g["disk_read_mbs"], "download_mbps": g["download_mbps"],
            "figures_source": where + (f" ({date})" if date else ""),
        }.items() if v is not None})
    return HostFigures(host=HostSpec.model_validate(host.model_dump()), price_usd_hour=g["price_usd_hour"])
