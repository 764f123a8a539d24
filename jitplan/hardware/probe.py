"""``jitplan probe``: what this machine is, as data. NVML + cgroup/host + torch metadata, no torch import.

The full report (``ProbeReport``) is richer than what a plan needs; ``to_hardware_spec()`` derives the
``HardwareSpec`` that ``jitplan plan --hardware`` reads, with the GPU model matched to the catalog.

    >>> from jitplan.hardware.nvml_fake import FakeNvml
    >>> from jitplan.hardware.host import HostPaths
    >>> r = run_probe(nvml=FakeNvml.from_file("tests/data/nvml/2x_rtx3060.yaml"),
    ...               paths=HostPaths.under("tests/data/cgroup/v2_24g"),
    ...               host_kwargs={"host_ram_bytes": 256 << 30})  # a 24 GiB container on a 256 GiB host
    >>> spec = r.to_hardware_spec()
    >>> (spec.gpus_per_node, spec.gpu.compute_capability, spec.host.ram_bytes >> 30)
    (2, '8.6', 24)
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jitplan.hardware.host import HostInfo, HostPaths, read_host
from jitplan.hardware.measure import Figures, measure
from jitplan.hardware.nvml import NvmlGpu, NvmlReport, query_nvml
from jitplan.hardware.schema import GPUSpec, HardwareSpec, HostSpec, SoftwareSpec
from jitplan.hardware.software import TorchImport, TorchMetadata, torch_import_check, torch_metadata

PROBE_SCHEMA_VERSION = 1


class ProbeReport(BaseModel):
    """Everything ``probe`` found. ``notes`` are plain sentences for people (no driver, guesses made)."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = PROBE_SCHEMA_VERSION
    nvml: NvmlReport
    host: HostInfo
    torch: TorchMetadata
    torch_import: TorchImport | None = None  # only with --deep (a subprocess)
    figures: Figures | None = None  # measured link and disk (jitplan.hardware.measure), what offers publish
    notes: list[str] = Field(default_factory=list)

    @property
    def gpus(self) -> list[NvmlGpu]:
        return self.nvml.gpus

    def to_hardware_spec(self) -> HardwareSpec:
        """The plan-facing summary: one node, its GPU model (catalog row when known), host limits."""
        gpu, _ = _gpu_spec(self.nvml.gpus)
        imp = self.torch_import
        sw = SoftwareSpec(
            torch_version=(imp.version if imp and imp.ok else None) or self.torch.version,
            torch_cuda=(imp.cuda if imp and imp.ok else None) or self.torch.cuda,
            driver_version=self.nvml.driver_version,
            driver_cuda=self.nvml.driver_cuda,
            arch_list=imp.arch_list if imp and imp.ok else [],
            nccl=imp.nccl if imp and imp.ok else None,
        )
        disk_free = min((d.free_bytes for d in self.host.disks), default=None)
        return HardwareSpec(
            nodes=1,
            gpus_per_node=len(self.nvml.gpus),
            gpu=gpu,
            host=HostSpec(ram_bytes=self.host.ram_bytes, cpus=self.host.cpus_usable,
                          shm_bytes=self.host.shm_total_bytes or None, disk_free_bytes=disk_free,
                          **self._link_and_disk()),
            software=sw,
            source="probe",
        )


    def _link_and_disk(self) -> dict[str, Any]:
        """The host link (the slowest GPU's measured copy, NVML's negotiated lanes) and the disk read."""
        out: dict[str, Any] = {}
        widths = [g.pcie_width for g in self.nvml.gpus if g.pcie_width]
        gens = [g.pcie_gen_max for g in self.nvml.gpus if g.pcie_gen_max]
        if widths:
            out["pcie_lanes"] = min(widths)
        if gens:
            out["pcie_gen"] = min(gens)
        f = self.figures
        if f is not None and f.pcie_gbs:
            out["pcie_gbs"] = min(f.pcie_gbs)
        if f is not None and f.disk_read_mbs:
            out["disk_read_mbs"] = round(f.disk_read_mbs, 1)
        if out:
            out["figures_source"] = "probe"
        return out


def _gpu_spec(gpus: list[NvmlGpu]) -> tuple[GPUSpec | None, list[str]]:
    """The GPUSpec for the (most common) GPU model, and notes about guesses."""
    if not gpus:
        return None, []
    notes: list[str] = []
    names = Counter(g.name for g in gpus)
    name = names.most_common(1)[0][0]
    if len(names) > 1:
        notes.append(f"mixed GPU models {dict(names)}: the plan uses {name}; DDP runs at the slowest card's pace")
    g = next(x for x in gpus if x.name == name)
    match = None
    try:
        from jitplan.hardware.catalog import match_nvml_name  # lazy: start-up
    except ImportError:  # the catalog is optional for probing
        match_nvml_name = None  # type: ignore[assignment]  # the fallback: a probe without the catalog names no card
    if match_nvml_name is not None:
        match = match_nvml_name(name, g.memory_total_bytes)
    if match is not None:
        upd: dict[str, Any] = {"source": f"catalog row matched from NVML name {name!r}"}
        if g.memory_total_bytes:
            upd["memory_bytes"] = g.memory_total_bytes
        if g.compute_capability:
            upd["compute_capability"] = g.compute_capability
        return match.model_copy(update=upd), notes
    notes.append(f"{name!r} is not in the GPU catalog: bf16_tflops is a placeholder (1.0); "
                 "edit hardware.yaml before planning")
    cc = g.compute_capability
    return GPUSpec(
        name=name, memory_bytes=g.memory_total_bytes or 1, bf16_tflops=1.0, compute_capability=cc,
        gpu_class="custom",  # bf16 follows from the compute capability (hardware.schema.bf16_supported)
        source="probe (NVML); bf16_tflops unknown, placeholder 1.0",
    ), notes


def run_probe(
    *,
    nvml: Any | None = None,
    paths: HostPaths | None = None,
    disk_paths: list[str] | None = None,
    deep: bool = False,
    python: str | None = None,
    host_kwargs: dict[str, Any] | None = None,
    figures: bool = True,
) -> ProbeReport:
    """Probe this machine. ``nvml``/``paths`` are seams for tests; ``deep`` also imports torch in a child;
    ``figures`` measures the disk (a 64 MB read) and, with GPUs, a host->GPU copy per GPU (a child Python)."""
    nv = query_nvml(nvml)
    host = read_host(paths, disk_paths=disk_paths, **(host_kwargs or {}))
    meta = torch_metadata()
    imp = torch_import_check(python) if deep else None
    notes: list[str] = []
    if not nv.available:
        notes.append(f"No NVIDIA GPU visible: {nv.error}")
    _, gnotes = _gpu_spec(nv.gpus)
    notes += gnotes
    if host.ram_limit_bytes:
        notes.append(f"RAM is the container's cgroup limit ({host.ram_limit_bytes / 2**30:.1f} GiB), "
                     f"not the host's {host.ram_host_bytes / 2**30:.1f} GiB")
    if not meta.installed:
        notes.append("torch is not installed in this Python")
    figs = None
    if figures:
        where = disk_paths[0] if disk_paths else "."
        figs = measure(where, len(nv.gpus) if nv.available and nvml is None else 0, python)
        notes += figs.notes
    return ProbeReport(nvml=nv, host=host, torch=meta, torch_import=imp, notes=notes, figures=figs)
