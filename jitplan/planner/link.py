"""The gradient all-reduce's link: bus bandwidth from the machine's PCIe (or NVLink) figures, each constant sourced.

Pure. ``link_for`` returns what the time model charges the all-reduce at, from (best first) a measured host
link (an offer's or a probe's host<->GPU copy bandwidth), the negotiated PCIe generation and lanes, or the
card's own slot (catalog) -- the last marked *assumed*, so a plan can state the range an unknown link spans.

Sources (docs/planning.md "The bus"):
- PCIe per-direction rates: 0.25 / 0.5 / 0.985 / 1.969 / 3.938 / 7.563 GB/s per lane for gen 1-6
  (PCI-SIG line rates after 8b/10b or 128b/130b encoding).
- Without P2P (GeForce cards: NCCL stages through host memory) both directions of each GPU's link carry the
  2-rank all-reduce at once. p2pBandwidthLatencyTest on RTX 4090s at PCIe 4.0 x16 measures 25.8 GB/s
  "Bidirectional P2P=Disabled" (github.com/tinygrad/open-gpu-kernel-modules/issues/6): 12.9 GB/s per
  direction = 0.41 of the link's 31.5 GB/s. With P2P the same cards reach 41.4 GB/s bidirectional: 0.66.
- NVLink: nccl-tests all_reduce busbw 208 GB/s over an NV12 A100 pair (github.com/NVIDIA/nccl-tests/issues/178);
  P2P writes 376 GB/s per H100 SXM pair (github.com/NVIDIA/nccl/issues/1264); a 2-way bridge on RTX 3090 /
  A6000 (112.5 GB/s bidirectional, datasheet) at the P2P fraction above [derived: 37 GB/s].
- Overlap: Lambda's 1 -> 2 GPU runs of BERT base and large on RTX 3090, RTX 4090 and RTX A6000
  (github.com/lambdal/deeplearning-benchmark, pytorch/pytorch-train-throughput-fp16.csv) lose the whole
  all-reduce at these rates, none of it hidden behind the backward (benchmarks/bench_bus.py): OVERLAP = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from jitplan.hardware.schema import GPUSpec, HostSpec

PCIE_LANE_GBS = {1: 0.25, 2: 0.5, 3: 0.985, 4: 1.969, 5: 3.938, 6: 7.563}
NO_P2P_OF_LINK = 12.9 / (16 * PCIE_LANE_GBS[4])  # 0.41: tinygrad/open-gpu-kernel-modules#6, RTX 4090 gen4 x16
P2P_OF_LINK = 20.7 / (16 * PCIE_LANE_GBS[4])  # 0.66: the same cards with P2P
# A measured host->GPU copy (Vast's pcie_bw, jitplan probe) reaches ~0.8 of the line rate (pinned memcpy at
# PCIe 4.0 x16: 24-26 GB/s of 31.5) [judgement]; it is converted back to a line rate before the fractions above.
COPY_OF_LINK = 0.8
NVLINK_BUS_GBS = {"8.0": 200.0, "9.0": 370.0, "10.0": 370.0}  # nccl-tests#178 (A100), nccl#1264 (H100)
NVLINK_BRIDGE_GBS = 37.0  # RTX 3090 / A6000 2-way bridge [derived above]
NETWORK_GBS = 12.5  # a 100 Gb/s link between nodes [judgement]
OVERLAP_BACKWARD = 0.0  # fraction of the backward that hides the all-reduce (Lambda 1 -> 2 GPU runs: none)


@dataclass(frozen=True)
class Link:
    kind: str  # "pcie-no-p2p" | "pcie-p2p" | "nvlink" | "network"
    bus_gbs: float  # nccl-tests busbw the all-reduce runs at
    known: bool  # False: assumed from the card's slot, the machine's link not measured
    why: str


def card_pcie_gen(gpu: GPUSpec) -> int:
    """The PCIe generation the card negotiates in a full slot (catalog, else by architecture)."""
    if gpu.pcie_gen:
        return gpu.pcie_gen
    cc = float(gpu.compute_capability or "8.0")
    return 5 if cc >= 9.0 else 4 if cc >= 8.0 else 3


def p2p(gpu: GPUSpec) -> bool:
    """GeForce cards have no PCIe peer-to-peer under NVIDIA's driver; workstation and datacenter parts do."""
    return gpu.gpu_class != "consumer"


def _bridge(gpu: GPUSpec) -> float:
    return NVLINK_BUS_GBS.get(gpu.compute_capability or "", NVLINK_BRIDGE_GBS if gpu.gpu_class != "datacenter"
                              else 100.0)


def pcie_link(gpu: GPUSpec, *, gen: int, lanes: int, measured_gbs: float | None = None,
              known: bool = True, source: str = "") -> Link:
    """The all-reduce over PCIe at ``gen`` x ``lanes`` (or a measured copy bandwidth)."""
    frac = P2P_OF_LINK if p2p(gpu) else NO_P2P_OF_LINK
    kind = "pcie-p2p" if p2p(gpu) else "pcie-no-p2p"
    if measured_gbs is not None:
        line = measured_gbs / COPY_OF_LINK
        what = f"{measured_gbs:g} GB/s host<->GPU copy{source}"
    else:
        line = PCIE_LANE_GBS.get(gen, PCIE_LANE_GBS[4]) * lanes
        what = f"PCIe {gen}.0 x{lanes}{source}"
    bus = line * frac
    return Link(kind, bus, known, f"{what}, {'P2P' if p2p(gpu) else 'no P2P (through host memory)'}: "
                                   f"{bus:.1f} GB/s bus")


def link_for(gpu: GPUSpec, nodes: int = 1, host: HostSpec | None = None) -> Link:
    """The link the gradients travel: network between nodes, NVLink, else the machine's (or the card's) PCIe."""
    if nodes > 1:
        return Link("network", NETWORK_GBS, False, f"between nodes: {NETWORK_GBS:g} GB/s (100 Gb/s, assumed)")
    h = host or HostSpec()
    if h.nvlink or (gpu.nvlink and h.nvlink is None and gpu.gpu_class == "datacenter"):
        bus = _bridge(gpu)
        return Link("nvlink", bus, h.nvlink is not None or gpu.gpu_class == "datacenter", f"NVLink: {bus:g} GB/s bus")
    src = f" ({h.figures_source})" if h.figures_source else ""
    gen = h.pcie_gen or card_pcie_gen(gpu)
    if h.pcie_gbs is not None:
        return pcie_link(gpu, gen=gen, lanes=h.pcie_lanes or 16, measured_gbs=h.pcie_gbs, source=src)
    if h.pcie_lanes is not None:
        return pcie_link(gpu, gen=gen, lanes=h.pcie_lanes, source=src)
    link = pcie_link(gpu, gen=gen, lanes=16, known=False, source=", assumed: the link was not measured")
    return link


def range_links(gpu: GPUSpec) -> tuple[Link, Link]:
    """(x16, x1) at the card's generation: what an unmeasured PCIe link can be on a rented machine."""
    gen = card_pcie_gen(gpu)
    return pcie_link(gpu, gen=gen, lanes=16), pcie_link(gpu, gen=gen, lanes=1)


def allreduce_s(grad_bytes: float, world: int, link: Link) -> float:
    """Ring all-reduce: 2 (n - 1) / n x bytes at the bus bandwidth (nccl-tests' busbw definition)."""
    return 0.0 if world < 2 else 2 * (world - 1) / world * grad_bytes / (link.bus_gbs * 1e9)
