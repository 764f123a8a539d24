"""The hardware a plan is made for. ``jitplan probe --out hardware.yaml`` writes a HardwareSpec;
``jitplan plan --hardware hardware.yaml`` reads it. Sizes are bytes; rates are decimal units (TFLOPS, GB/s).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from jitmodel.precision import BF16_MIN_CC, bf16_supported

HARDWARE_SCHEMA_VERSION: Literal[1] = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GPUSpec(_Strict):
    """One GPU model. Catalog rows and probed cards share this shape.

    ``backend="mps"`` marks an Apple silicon GPU: ``memory_bytes`` is the unified memory (RAM) the CPU and the
    GPU share, of which Metal lets the GPU use only part (jitplan.planner.inference.usable_memory), and there
    are no tensor cores, so ``bf16_tflops`` is the half-precision ALU rate (the FP32 rate on M1-M4).
    """

    name: str  # canonical catalog name, e.g. "RTX 3060 12GB"
    memory_bytes: Annotated[int, Field(gt=0)]  # total memory as NVML reports it (mps: the unified RAM)
    bf16_tflops: Annotated[float, Field(gt=0)]  # dense bf16 tensor-core peak with fp32 accumulate
    fp32_tflops: Annotated[float, Field(gt=0)] | None = None
    mem_bw_gbs: Annotated[float, Field(gt=0)] | None = None  # GB/s
    compute_capability: str | None = None  # "8.6"
    bf16: bool = True  # native bf16 support: derived from compute_capability when that is known
    nvlink: bool = False
    gpu_class: Literal["consumer", "workstation", "datacenter", "apple", "custom"] = "custom"
    # Apple silicon only; left out of a CUDA card's dump, so plan files written before them stay byte-identical.
    backend: Literal["cuda", "mps"] = Field("cuda", exclude_if=lambda v: v == "cuda")  # mps: one GPU, no NCCL
    gpu_cores: Annotated[int, Field(gt=0)] | None = Field(None, exclude_if=lambda v: v is None)  # Apple GPU cores
    aliases: list[str] = Field(default_factory=list)
    source: str = ""  # where the numbers come from
    # The card's own host link (what it negotiates in a full slot) and a dated typical market price; a rented
    # machine's measured link (HostSpec.pcie_gbs / pcie_lanes) replaces the link, an offer's price the price.
    pcie_gen: Annotated[int, Field(ge=1, le=6)] | None = Field(None, exclude_if=lambda v: v is None)
    pcie_lanes: Annotated[int, Field(ge=1, le=16)] | None = Field(None, exclude_if=lambda v: v is None)
    price_usd_hour: Annotated[float, Field(ge=0)] | None = Field(None, exclude_if=lambda v: v is None)
    price_source: str | None = Field(None, exclude_if=lambda v: v is None)  # "vast.ai median, 2026-12-01"


    @model_validator(mode="before")
    @classmethod
    def _bf16_from_cc(cls, raw: Any) -> Any:
        """A known compute capability decides ``bf16`` (BF16_MIN_CC); a file that states it anyway must agree."""
        if isinstance(raw, dict) and raw.get("backend", "cuda") == "cuda":
            derived = bf16_supported(raw.get("compute_capability"))
            if derived is not None:
                if "bf16" in raw and bool(raw["bf16"]) != derived:
                    raise ValueError(f"bf16: {raw['bf16']} contradicts compute capability "
                                     f"{raw['compute_capability']} (bf16 needs {'.'.join(map(str, BF16_MIN_CC))}+)")
                raw = {**raw, "bf16": derived}
        return raw


def _unset(v: object) -> bool:
    return v is None


class HostSpec(_Strict):
    """Per node. ``ram_bytes`` is what the processes may use: the container's limit when there is one.

    The link and I/O figures are what a rented machine publishes (a Vast offer: PCIe bandwidth and lanes,
    effective cores, disk bandwidth, download speed; jitplan.hardware.figures.figures_from_offer) or what
    ``jitplan probe`` measures; None means unknown, and the plan then states the range the unknown spans.
    """

    ram_bytes: Annotated[int, Field(gt=0)] | None = None
    cpus: Annotated[int, Field(gt=0)] | None = None  # usable CPUs (affinity, cgroup quota; an offer's effective)
    shm_bytes: Annotated[int, Field(gt=0)] | None = None  # /dev/shm size
    disk_free_bytes: Annotated[int, Field(ge=0)] | None = None
    pcie_gbs: Annotated[float, Field(gt=0)] | None = Field(None, exclude_if=_unset)  # host<->GPU copy, GB/s
    pcie_lanes: Annotated[int, Field(ge=1, le=16)] | None = Field(None, exclude_if=_unset)
    pcie_gen: Annotated[int, Field(ge=1, le=6)] | None = Field(None, exclude_if=_unset)
    nvlink: bool | None = Field(None, exclude_if=_unset)  # None: the GPU's catalog row decides
    disk_read_mbs: Annotated[float, Field(gt=0)] | None = Field(None, exclude_if=_unset)  # MB/s
    download_mbps: Annotated[float, Field(gt=0)] | None = Field(None, exclude_if=_unset)  # Mbit/s
    figures_source: str | None = Field(None, exclude_if=_unset)  # "vast offer 123 (2026-12-07)", "probe"


class SoftwareSpec(_Strict):
    torch_version: str | None = None
    torch_cuda: str | None = None  # CUDA version torch was built with, None for a CPU build
    driver_version: str | None = None
    driver_cuda: str | None = None  # highest CUDA the driver supports
    arch_list: list[str] = Field(default_factory=list)  # torch.cuda.get_arch_list()
    nccl: str | None = None


class HardwareSpec(_Strict):
    """What a plan targets: nodes x GPUs per node of one GPU model, and each node's host."""

    schema_version: Literal[1] = HARDWARE_SCHEMA_VERSION
    nodes: Annotated[int, Field(gt=0)] = 1
    gpus_per_node: Annotated[int, Field(ge=0)] = 1  # 0: CPU only
    gpu: GPUSpec | None = None  # None for a CPU-only machine
    host: HostSpec = Field(default_factory=HostSpec)
    software: SoftwareSpec | None = None
    source: Literal["catalog", "probe", "file", "flags"] = "catalog"

    @property
    def world_size(self) -> int:
        return self.nodes * max(self.gpus_per_node, 1)
