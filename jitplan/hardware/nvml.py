"""The narrow seam over NVML: one function, ``query_nvml(nvml)``, that turns NVML answers into data.

``nvml`` is anything with the ``pynvml`` function names used below: the real module from nvidia-ml-py
(imported lazily by ``load_pynvml``), or ``FakeNvml`` replaying recorded answers (``tests/data/nvml/``),
so CI without a GPU exercises the same code. Every per-device field sits in its own try: a field the
driver does not support becomes ``None``, never a crash. No driver is an answer, not an error.

    >>> from jitplan.hardware.nvml_fake import FakeNvml
    >>> fake = FakeNvml.from_file("tests/data/nvml/2x_rtx3060.yaml")
    >>> report = query_nvml(fake)
    >>> (len(report.gpus), report.gpus[0].compute_capability, report.driver_cuda)
    (2, '8.6', '12.4')
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

NVML_CLOCK_GRAPHICS, NVML_CLOCK_SM, NVML_CLOCK_MEM = 0, 1, 2
NVML_P2P_CAPS_INDEX_READ = 0
NVML_DEVICE_MIG_ENABLE = 1
# nvmlGpuP2PStatus_t 0..6 as `nvidia-smi topo -p2p` prints them.
P2P_STATUS = ("OK", "CNS", "GNS", "TNS", "DR", "NS", "U")
P2P_MEANING = {
    "OK": "supported",
    "CNS": "chipset not supported",
    "GNS": "GPU not supported",
    "TNS": "topology not supported",
    "DR": "disabled by regkey",
    "NS": "not supported",
    "U": "unknown",
}
# nvmlGpuTopologyLevel_t -> nvidia-smi topo -m codes.
TOPOLOGY = {0: "SELF", 10: "PIX", 20: "PXB", 30: "PHB", 40: "NODE", 50: "SYS"}

# NVML init errors, by the class name nvidia-ml-py generates, with what they mean for the user.
INIT_ERRORS = {
    "NVMLError_LibraryNotFound": "NVML library (libnvidia-ml.so.1) not found: no NVIDIA driver visible. "
    "In a container, start it with --gpus all (NVIDIA Container Toolkit).",
    "NVMLError_DriverNotLoaded": "the NVIDIA kernel driver is not loaded",
    "NVMLError_LibRmVersionMismatch": "driver/library version mismatch: reboot or reload the nvidia kernel module",
    "NVMLError_NoPermission": "no permission to open the NVIDIA device nodes",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GpuProcess(_Strict):
    pid: int
    used_memory_bytes: int | None = None


class NvmlGpu(_Strict):
    """One GPU as NVML reports it (index = NVML/PCI order, not necessarily CUDA order)."""

    index: int
    name: str
    uuid: str | None = None
    pci_bus_id: str | None = None
    memory_total_bytes: int | None = None
    memory_free_bytes: int | None = None
    compute_capability: str | None = None  # "8.6"
    pcie_gen: int | None = None  # current (drops at idle)
    pcie_width: int | None = None
    pcie_gen_max: int | None = None
    pcie_width_max: int | None = None
    power_limit_w: float | None = None
    power_default_limit_w: float | None = None
    sm_clock_mhz: int | None = None
    sm_clock_max_mhz: int | None = None
    mem_clock_max_mhz: int | None = None
    utilization_pct: int | None = None
    mig_mode: str | None = None  # "enabled" | "disabled" | None (not a MIG GPU)
    compute_mode: str | None = None
    processes: list[GpuProcess] = Field(default_factory=list)


class NvmlReport(_Strict):
    """What NVML said. ``available`` False means no driver (``error`` says why); that is not a failure."""

    available: bool
    error: str | None = None
    error_kind: str | None = None  # e.g. NVMLError_LibraryNotFound, ImportError
    driver_version: str | None = None
    driver_cuda: str | None = None  # highest CUDA version the driver supports, "12.4"
    nvml_version: str | None = None
    gpus: list[NvmlGpu] = Field(default_factory=list)
    p2p: list[list[str]] = Field(default_factory=list)  # [i][j] READ status code; "X" on the diagonal
    topology: list[list[str]] = Field(default_factory=list)  # [i][j] PIX/PXB/PHB/NODE/SYS


def cuda_version_str(v: int) -> str:
    """NVML's integer CUDA version as "major.minor".

    >>> cuda_version_str(12040)
    '12.4'
    """
    return f"{v // 1000}.{(v % 1000) // 10}"


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def load_pynvml() -> Any:
    """Import nvidia-ml-py's ``pynvml`` (lazy: only when probing). Raises ImportError when absent."""
    import warnings

    with warnings.catch_warnings():
        # pynvml 13 (the deprecated dist) installs a finder that warns on every import of pynvml.
        warnings.simplefilter("ignore", FutureWarning)
        import pynvml
    return pynvml


def query_nvml(nvml: Any | None = None) -> NvmlReport:
    """Ask NVML everything ``probe`` reports. ``nvml=None`` uses the real pynvml module."""
    if nvml is None:
        try:
            nvml = load_pynvml()
        except ImportError:
            return NvmlReport(available=False, error_kind="ImportError",
                              error="nvidia-ml-py is not installed (pip install nvidia-ml-py)")
    err = nvml.NVMLError
    try:
        nvml.nvmlInit()
    except err as e:
        kind = type(e).__name__
        return NvmlReport(available=False, error_kind=kind, error=INIT_ERRORS.get(kind, f"NVML error: {e}"))
    except AttributeError:  # another package shadows nvidia-ml-py's pynvml module
        return NvmlReport(available=False, error_kind="AttributeError",
                          error="the pynvml module is not nvidia-ml-py's; pip uninstall pynvml nvidia-ml-py3 "
                          "&& pip install -U nvidia-ml-py")
    try:
        return _query_initialised(nvml)
    finally:
        try:
            nvml.nvmlShutdown()
        except err:
            pass


def _query_initialised(nvml: Any) -> NvmlReport:
    err = nvml.NVMLError

    def get(fn: str, *args: Any) -> Any:
        try:
            return getattr(nvml, fn)(*args)
        except (err, AttributeError):  # NotSupported, FunctionNotFound (old driver), missing binding
            return None

    driver_cuda = get("nvmlSystemGetCudaDriverVersion_v2")
    if driver_cuda is None:
        driver_cuda = get("nvmlSystemGetCudaDriverVersion")
    driver = get("nvmlSystemGetDriverVersion")
    nvml_version = get("nvmlSystemGetNVMLVersion")
    count = get("nvmlDeviceGetCount") or 0
    handles = [h for i in range(count) if (h := get("nvmlDeviceGetHandleByIndex", i)) is not None]
    gpus = [_query_gpu(i, h, get) for i, h in enumerate(handles)]
    p2p: list[list[str]] = []
    topo: list[list[str]] = []
    if count > 1:
        for i, hi in enumerate(handles):
            p2p.append([])
            topo.append([])
            for j, hj in enumerate(handles):
                if i == j:
                    p2p[i].append("X")
                    topo[i].append("X")
                    continue
                st = get("nvmlDeviceGetP2PStatus", hi, hj, NVML_P2P_CAPS_INDEX_READ)
                p2p[i].append(P2P_STATUS[st] if isinstance(st, int) and 0 <= st < len(P2P_STATUS) else "U")
                level = get("nvmlDeviceGetTopologyCommonAncestor", hi, hj)
                topo[i].append(TOPOLOGY.get(level, "?") if level is not None else "?")
    return NvmlReport(
        available=True,
        driver_version=_text(driver) if driver is not None else None,
        driver_cuda=cuda_version_str(driver_cuda) if driver_cuda else None,
        nvml_version=_text(nvml_version) if nvml_version is not None else None,
        gpus=gpus, p2p=p2p, topology=topo,
    )


def _query_gpu(index: int, h: Any, get: Any) -> NvmlGpu:
    mem = get("nvmlDeviceGetMemoryInfo", h)
    cc = get("nvmlDeviceGetCudaComputeCapability", h)
    pci = get("nvmlDeviceGetPciInfo", h)
    mig = get("nvmlDeviceGetMigMode", h)
    limit = get("nvmlDeviceGetPowerManagementLimit", h)
    default_limit = get("nvmlDeviceGetPowerManagementDefaultLimit", h)
    util = get("nvmlDeviceGetUtilizationRates", h)
    mode = get("nvmlDeviceGetComputeMode", h)
    procs = get("nvmlDeviceGetComputeRunningProcesses", h) or []
    return NvmlGpu(
        index=index,
        name=_text(get("nvmlDeviceGetName", h) or "unknown"),
        uuid=_text(u) if (u := get("nvmlDeviceGetUUID", h)) is not None else None,
        pci_bus_id=_text(pci.busId) if pci is not None else None,
        memory_total_bytes=int(mem.total) if mem is not None else None,
        memory_free_bytes=int(mem.free) if mem is not None else None,
        compute_capability=f"{cc[0]}.{cc[1]}" if cc else None,
        pcie_gen=get("nvmlDeviceGetCurrPcieLinkGeneration", h),
        pcie_width=get("nvmlDeviceGetCurrPcieLinkWidth", h),
        pcie_gen_max=get("nvmlDeviceGetMaxPcieLinkGeneration", h),
        pcie_width_max=get("nvmlDeviceGetMaxPcieLinkWidth", h),
        power_limit_w=limit / 1000 if limit is not None else None,
        power_default_limit_w=default_limit / 1000 if default_limit is not None else None,
        sm_clock_mhz=get("nvmlDeviceGetClockInfo", h, NVML_CLOCK_SM),
        sm_clock_max_mhz=get("nvmlDeviceGetMaxClockInfo", h, NVML_CLOCK_SM),
        mem_clock_max_mhz=get("nvmlDeviceGetMaxClockInfo", h, NVML_CLOCK_MEM),
        utilization_pct=int(util.gpu) if util is not None else None,
        mig_mode=("enabled" if mig[0] == NVML_DEVICE_MIG_ENABLE else "disabled") if mig else None,
        compute_mode={0: "default", 2: "prohibited", 3: "exclusive_process"}.get(mode) if mode is not None else None,
        processes=[GpuProcess(pid=p.pid, used_memory_bytes=getattr(p, "usedGpuMemory", None)) for p in procs],
    )
