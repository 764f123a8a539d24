"""Vast.ai rows -> our models, and our query -> Vast's search filter. Pure: no SDK, no network.

    read_state({"actual_status": "loading"})    # "pending"
    to_instance(row).ssh_endpoints()              # [("203.0.113.57", 41022), ("ssh5.vast.ai", 31337)]
"""

from __future__ import annotations

from typing import Any

from jitplan.providers import Instance, InstanceState, Offer, OfferQuery
from jitplan.secrets import redact

# actual_status values that end an instance's life as far as a launch is concerned (vast.md §1.8).
_FAILED_STATUSES = frozenset({"exited", "unknown", "offline", "frozen"})
# seen 2026 in dstack/SkyPilot reports: an image/CUDA failure shows as actual_status "created" + this text.
_OCI_MARKERS = ("OCI runtime create failed", "Error response from daemon")


def read_state(row: dict[str, Any]) -> InstanceState:
    """Our reading of Vast's status fields (vast.md §1.8, §3.4).

    ``stopped`` when every state field says stopped (outbid or out of credit), ``failed`` on an OCI error
    or a terminal status, ``running`` when the container runs, otherwise ``pending`` (provisioning,
    loading the image, rebooting, scheduling).
    """
    actual = (row.get("actual_status") or "").strip().lower() or None
    msg = row.get("status_msg") or ""
    if row.get("cur_state") == "unloaded":  # released by a destroy (vast.md §1.8)
        return "gone"
    if actual == "stopped" or (
        row.get("cur_state") == row.get("intended_status") == row.get("next_state") == "stopped"
    ):
        return "stopped"
    if any(m in msg for m in _OCI_MARKERS):
        return "failed"
    if actual in _FAILED_STATUSES:
        return "failed"
    if actual == "running":
        return "running"
    return "pending"


def _num(v: Any, default: float | None = None) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


def to_offer(row: dict[str, Any]) -> Offer:
    """An offer row -> the neutral Offer: the one place Vast's names meet ours (``dph_total`` -> price_per_hour,
    ``min_bid`` -> min_bid_per_hour, ``cuda_max_good`` -> max_cuda, ``pcie_bw`` GB/s, ``gpu_lanes``,
    ``disk_bw`` MB/s, ``inet_down``/``inet_up`` Mbit/s, ``dlperf``). RAM is the share the instance gets:
    host RAM (MB) x effective/host vCPUs (gpuhunt)."""
    cores = _num(row.get("cpu_cores")) or 0.0
    eff = _num(row.get("cpu_cores_effective")) or cores
    ram = _num(row.get("cpu_ram")) or 0.0
    share = ram * eff / cores if cores > 0 and 0 < eff < cores else ram
    return Offer(
        id=int(row["id"]),
        machine_id=row.get("machine_id"),
        gpu_name=str(row.get("gpu_name") or "").strip(),
        num_gpus=int(row.get("num_gpus") or 0),
        gpu_ram_mib=_num(row.get("gpu_ram"), 0.0),
        ram_gb=share / 1000.0,
        cpu_cores_effective=eff,
        disk_gb=_num(row.get("disk_space"), 0.0),
        max_cuda=_num(row.get("cuda_max_good"), 0.0),
        compute_cap=int(row["compute_cap"]) if row.get("compute_cap") is not None else None,
        reliability=_num(row.get("reliability2", row.get("reliability"))),
        download_mbps=_num(row.get("inet_down")),
        upload_mbps=_num(row.get("inet_up")),
        price_per_hour=_num(row.get("dph_total"), 0.0),
        min_bid_per_hour=_num(row.get("min_bid")),
        storage_per_hour=_num(row.get("storage_total_cost"), 0.0),
        geolocation=row.get("geolocation"),
        pcie_bandwidth_gbps=_num(row.get("pcie_bw")),
        pcie_gen=_num(row.get("pci_gen")),
        pcie_lanes=int(lanes) if (lanes := _num(row.get("gpu_lanes"))) is not None else None,
        disk_bandwidth_mbps=_num(row.get("disk_bw")),
        dl_perf=_num(row.get("dlperf")),
    )


def to_instance(row: dict[str, Any]) -> Instance:
    """An instance row -> Instance. Strings are stripped (Vast sends "203.0.113.57\\n"); HostPort is a string."""
    def s(key: str) -> str | None:
        v = row.get(key)
        return v.strip() or None if isinstance(v, str) else None

    direct = None
    ports = row.get("ports") or {}
    if isinstance(ports, dict) and ports.get("22/tcp"):
        direct = int(ports["22/tcp"][0]["HostPort"])
    return Instance(
        id=int(row["id"]),
        label=s("label"),
        state=read_state(row),
        actual_status=s("actual_status"),
        status_msg=redact(s("status_msg") or "") or None,
        machine_id=row.get("machine_id"),
        gpu_name=s("gpu_name"),
        num_gpus=row.get("num_gpus"),
        dph=_num(row.get("dph_total")),
        ssh_host=s("ssh_host"),
        ssh_port=int(row["ssh_port"]) if row.get("ssh_port") else None,
        public_ip=s("public_ipaddr"),
        direct_ssh_port=direct,
        started_at=_num(row.get("start_date")),
    )


def build_search(query: OfferQuery, disk_gb: float | None = None) -> dict[str, Any]:
    """The dict-form filter sent to ``POST /bundles/`` (units: MB RAM, MiB GPU RAM, x100 compute cap).

    ``cuda_max_good`` is always sent together with ``compute_cap``: alone it hid H100/H200 offers
    (gpuhunt #142, 2025). Host RAM is filtered again client-side on the instance's share.
    """
    q: dict[str, Any] = {
        "num_gpus": {"eq": query.num_gpus},
        "gpu_ram": {"gte": query.min_gpu_ram_mib},
        "cpu_ram": {"gte": query.min_cpu_ram_mb},
        "cpu_cores_effective": {"gte": query.min_cpus},
        "disk_space": {"gte": max(query.min_disk_gb, disk_gb or 0)},
        "cuda_max_good": {"gte": query.min_cuda},
        "compute_cap": {"gte": query.min_compute_cap},
        "reliability": {"gte": query.min_reliability},
        "inet_down": {"gte": query.min_inet_down_mbps},
    }
    if query.gpu_names:
        q["gpu_name"] = {"in": list(query.gpu_names)}
    return q
