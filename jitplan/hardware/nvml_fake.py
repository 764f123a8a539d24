"""Recorded NVML answers for tests and GPU-less CI: ``FakeNvml`` has pynvml's function names.

``jitplan.hardware.nvml.query_nvml(FakeNvml.from_file(path))`` runs the same code as on a real driver;
``jitplan probe --replay-nvml`` and ``jitplan doctor --replay-nvml`` read these files too.

    >>> from jitplan.hardware.nvml import query_nvml
    >>> query_nvml(FakeNvml.from_file("tests/data/nvml/no_driver.yaml")).available
    False
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from jitplan.hardware.nvml import NVML_CLOCK_SM, P2P_STATUS


class _FakeError(Exception):
    pass


def _error_class(name: str) -> type[Exception]:
    return type(f"NVMLError_{name}", (_FakeError,), {})


_FAKE_ERRORS = {n: _error_class(n) for n in ("LibraryNotFound", "DriverNotLoaded", "LibRmVersionMismatch",
                                            "NoPermission", "NotSupported", "FunctionNotFound")}


class FakeNvml:
    """Replays a recorded NVML answer file with pynvml's function names (JSON or YAML).

    File keys: ``init_error`` (e.g. "LibraryNotFound"), ``driver_version``, ``cuda_driver_version`` (int),
    ``gpus`` (name, uuid, memory_total, memory_free, compute_capability [maj, min], pcie_gen, pcie_width,
    pcie_gen_max, pcie_width_max, power_limit_mw, power_default_limit_mw, sm_clock, sm_clock_max,
    mig_mode [cur, pending] or absent, processes [{pid, used_memory}], unsupported [function names]),
    ``p2p_read`` (matrix of ints or codes), ``topology`` (matrix of NVML levels).
    """

    NVMLError = _FakeError

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.gpus = data.get("gpus", [])
        self.calls: list[str] = []

    @classmethod
    def from_file(cls, path: str | Path) -> FakeNvml:
        text = Path(path).read_text()
        if str(path).endswith((".yaml", ".yml")):
            import yaml

            return cls(yaml.safe_load(text))
        return cls(json.loads(text))

    def _gpu(self, h: int, fn: str) -> dict[str, Any]:
        self.calls.append(fn)
        g = self.gpus[h]
        if fn in g.get("unsupported", ()):
            raise _FAKE_ERRORS["NotSupported"]("Not Supported")
        return g

    def _field(self, h: int, fn: str, key: str) -> Any:
        g = self._gpu(h, fn)
        if key not in g:
            raise _FAKE_ERRORS["NotSupported"]("Not Supported")
        return g[key]

    def nvmlInit(self) -> None:
        if self.data.get("init_error"):
            name = self.data["init_error"]
            raise _FAKE_ERRORS.get(name, _error_class(name))(name)

    def nvmlShutdown(self) -> None:
        pass

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.data["driver_version"]

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        if self.data.get("cuda_driver_version_v2") is False:  # an old driver without the _v2 entry point
            raise _FAKE_ERRORS["FunctionNotFound"]("Function Not Found")
        return int(self.data["cuda_driver_version"])

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return int(self.data["cuda_driver_version"])

    def nvmlSystemGetNVMLVersion(self) -> str:
        return self.data.get("nvml_version", "unknown")

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        if not 0 <= i < len(self.gpus):
            raise _FAKE_ERRORS["NotSupported"](f"no GPU {i}")
        return i

    def nvmlDeviceGetName(self, h: int) -> str:
        return self._field(h, "nvmlDeviceGetName", "name")

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return self._field(h, "nvmlDeviceGetUUID", "uuid")

    def nvmlDeviceGetPciInfo(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(busId=self._field(h, "nvmlDeviceGetPciInfo", "pci_bus_id"))

    def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:
        g = self._gpu(h, "nvmlDeviceGetMemoryInfo")
        total, free = g["memory_total"], g.get("memory_free", g["memory_total"])
        return SimpleNamespace(total=total, free=free, used=total - free)

    def nvmlDeviceGetCudaComputeCapability(self, h: int) -> tuple[int, int]:
        return tuple(self._field(h, "nvmlDeviceGetCudaComputeCapability", "compute_capability"))

    def nvmlDeviceGetCurrPcieLinkGeneration(self, h: int) -> int:
        return self._field(h, "nvmlDeviceGetCurrPcieLinkGeneration", "pcie_gen")

    def nvmlDeviceGetCurrPcieLinkWidth(self, h: int) -> int:
        return self._field(h, "nvmlDeviceGetCurrPcieLinkWidth", "pcie_width")

    def nvmlDeviceGetMaxPcieLinkGeneration(self, h: int) -> int:
        return self._field(h, "nvmlDeviceGetMaxPcieLinkGeneration", "pcie_gen_max")

    def nvmlDeviceGetMaxPcieLinkWidth(self, h: int) -> int:
        return self._field(h, "nvmlDeviceGetMaxPcieLinkWidth", "pcie_width_max")

    def nvmlDeviceGetPowerManagementLimit(self, h: int) -> int:
        return self._field(h, "nvmlDeviceGetPowerManagementLimit", "power_limit_mw")

    def nvmlDeviceGetPowerManagementDefaultLimit(self, h: int) -> int:
        return self._field(h, "nvmlDeviceGetPowerManagementDefaultLimit", "power_default_limit_mw")

    def nvmlDeviceGetClockInfo(self, h: int, clock: int) -> int:
        return self._field(h, "nvmlDeviceGetClockInfo", {NVML_CLOCK_SM: "sm_clock"}.get(clock, "mem_clock"))

    def nvmlDeviceGetMaxClockInfo(self, h: int, clock: int) -> int:
        return self._field(h, "nvmlDeviceGetMaxClockInfo",
                           {NVML_CLOCK_SM: "sm_clock_max"}.get(clock, "mem_clock_max"))

    def nvmlDeviceGetUtilizationRates(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(gpu=self._field(h, "nvmlDeviceGetUtilizationRates", "utilization"), memory=0)

    def nvmlDeviceGetComputeMode(self, h: int) -> int:
        return self._field(h, "nvmlDeviceGetComputeMode", "compute_mode")

    def nvmlDeviceGetMigMode(self, h: int) -> list[int]:
        return list(self._field(h, "nvmlDeviceGetMigMode", "mig_mode"))

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[SimpleNamespace]:
        g = self._gpu(h, "nvmlDeviceGetComputeRunningProcesses")
        return [SimpleNamespace(pid=p["pid"], usedGpuMemory=p.get("used_memory")) for p in g.get("processes", [])]

    def nvmlDeviceGetP2PStatus(self, h1: int, h2: int, idx: int) -> int:
        self.calls.append("nvmlDeviceGetP2PStatus")
        v = self.data.get("p2p_read", [[6] * len(self.gpus)] * len(self.gpus))[h1][h2]
        return P2P_STATUS.index(v) if isinstance(v, str) else int(v)

    def nvmlDeviceGetTopologyCommonAncestor(self, h1: int, h2: int) -> int:
        self.calls.append("nvmlDeviceGetTopologyCommonAncestor")
        if "topology" not in self.data:
            raise _FAKE_ERRORS["NotSupported"]("Not Supported")
        return int(self.data["topology"][h1][h2])
