"""The hardware spec grammar (``2x8xH100``), human byte units (``24GB``) and HardwareSpec assembly.

    >>> nodes, per_node, gpu = parse_gpu_spec("2x8xH100")
    >>> (nodes, per_node, gpu.name)
    (2, 8, 'H100 SXM')
    >>> parse_gpu_spec("rtx-3060")[:2]
    (1, 1)
    >>> parse_bytes("24GB"), parse_bytes("24GiB"), parse_bytes("512m")
    (24000000000, 25769803776, 512000000)

Grammar: ``[NODES x] [GPUS x] NAME`` where NAME is a catalog name or alias, forgiving case, spaces and
hyphens (``RTX3060``, ``rtx-3060``, ``RTX 3060 12GB``, ``8 x H200``, ``"2x RTX 3060"`` quoted);
``cpu`` is no GPU at all (a laptop). An Apple silicon name may carry the
Mac's unified memory (``M4-24GB``, ``M4 Pro 48GB``: Apple's GB, which are GiB). Byte sizes: a number with an
optional unit; decimal units (KB, MB, GB, TB, also K/M/G/T) are powers of 1000, binary units
(KiB, MiB, GiB, TiB) powers of 1024; a bare number is bytes, and one under 1 MiB is refused as a
forgotten unit (``--host-ram 24``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from jitmodel.config import file_kind, read_yaml_mapping, validation_summary
from jitplan.errors import UsageError
from jitplan.hardware.catalog import lookup
from jitplan.hardware.schema import GPUSpec, HardwareSpec, HostSpec

_SPEC = re.compile(r"^\s*(?:(\d+)\s*[x×*]\s*)?(?:(\d+)\s*[x×*]\s*)?(.*?)\s*$", re.IGNORECASE)
_UNIFIED_SIZE = re.compile(r"(\d+)\s*(?:gb|gib|g)\s*$", re.IGNORECASE)
_BYTES = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+)\s*([a-z]*)\s*$", re.IGNORECASE)
_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40,
}


def parse_bytes(text: str | int, what: str = "size") -> int:
    """Parse a human size ("24GB", "24 GiB", "1.5T", "1048576") into bytes; UsageError when malformed."""
    if isinstance(text, bool):
        raise UsageError(f"{what}: cannot read {text!r} as a size")
    if isinstance(text, int):
        value, unit = float(text), ""
    else:
        m = _BYTES.match(str(text))
        if not m:
            raise UsageError(f"{what}: cannot read {text!r} as a size (examples: 24GB, 24GiB, 512MB)")
        value, unit = float(m.group(1)), m.group(2).lower()
    if unit not in _UNITS:
        raise UsageError(f"{what}: unknown unit {unit!r} in {text!r} (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)")
    n = int(round(value * _UNITS[unit]))
    if unit == "" and not isinstance(text, int) and 0 < n < 2**20:  # "--host-ram 24": a forgotten unit
        raise UsageError(f"{what}: {text!r} has no unit and would mean {n} bytes",
                         hint=f"give a unit: {what} {text}GB (10^9 bytes) or {text}GiB (2^30)")
    if n <= 0:
        raise UsageError(f"{what}: {text!r} must be a positive size")
    return n


def parse_gpu_spec(text: str, memory_bytes: int | None = None) -> tuple[int, int, GPUSpec]:
    """``"2x8xH100"`` -> (nodes=2, gpus_per_node=8, the H100 SXM row). UsageError on bad input.

    ``N x NAME`` is one node with N GPUs; ``M x N x NAME`` is M nodes with N GPUs each.
    """
    if text.strip().startswith("-"):
        raise UsageError(f"bad GPU spec {text!r}: counts must be positive (examples: 2xRTX3060, 8xH200, 2x8xH100)")
    m = _SPEC.match(text)
    if not m or not m.group(3):
        raise UsageError(f"bad GPU spec {text!r} (examples: RTX3060, 2xRTX3060, 8xH200, 2x8xH100)")
    a, b, name = m.group(1), m.group(2), m.group(3)
    if a is not None and b is not None:
        nodes, per_node = int(a), int(b)
    else:
        nodes, per_node = 1, int(a) if a is not None else 1
    if nodes < 1 or per_node < 1:
        raise UsageError(f"bad GPU spec {text!r}: node and GPU counts must be at least 1")
    gpu = lookup(name, memory_bytes)
    size = _UNIFIED_SIZE.search(name)
    if gpu.backend == "mps" and size:  # "M4-24GB": the Mac's unified memory, in Apple's GB (= GiB)
        gpu = gpu.model_copy(update={"memory_bytes": int(size.group(1)) * 2**30})
    return nodes, per_node, gpu


def custom_gpu(name: str, memory_bytes: int, tflops: float, mem_bw_gbs: float | None = None) -> GPUSpec:
    """A GPU that is not in the catalog, from ``--gpu-mem``/``--gpu-tflops``/``--gpu-bw``."""
    if tflops <= 0:
        raise UsageError(f"--gpu-tflops must be positive, got {tflops}")
    if mem_bw_gbs is not None and mem_bw_gbs <= 0:
        raise UsageError(f"--gpu-bw must be positive, got {mem_bw_gbs}")
    return GPUSpec(name=name, memory_bytes=memory_bytes, bf16_tflops=tflops, mem_bw_gbs=mem_bw_gbs,
                   gpu_class="custom", source="flags (--gpu-mem/--gpu-tflops)")


def hardware_from_flags(gpus: str, *, gpu_mem: str | None = None, gpu_tflops: float | None = None,
                        gpu_bw: float | None = None, host_ram: str | None = None, cpus: int | None = None,
                        shm: str | None = None, disk: str | None = None) -> HardwareSpec:
    """Assemble a HardwareSpec from ``--gpus`` and the host flags (catalog values, flags override).

        >>> hw = hardware_from_flags("2xRTX3060", host_ram="24GB")
        >>> hw.world_size, hw.gpu.name, hw.host.ram_bytes
        (2, 'RTX 3060 12GB', 24000000000)
    """
    mem = parse_bytes(gpu_mem, "--gpu-mem") if gpu_mem is not None else None
    if is_cpu_spec(gpus):  # no GPU: the CPU path (a laptop); the host flags still count
        if gpu_mem is not None or gpu_tflops is not None or gpu_bw is not None:
            raise UsageError(f"--gpus {gpus} has no GPU: --gpu-mem, --gpu-tflops and --gpu-bw do not apply")
        return HardwareSpec(nodes=1, gpus_per_node=0, gpu=None, host=_host(host_ram, cpus, shm, disk), source="flags")
    try:
        nodes, per_node, gpu = parse_gpu_spec(gpus, mem)
        source: Literal["catalog", "flags"] = "catalog"
    except UsageError:
        if mem is None or gpu_tflops is None:
            raise
        m = _SPEC.match(gpus)
        nodes = int(m.group(1)) if m and m.group(1) and m.group(2) else 1
        per_node = int(m.group(2) or m.group(1) or 1) if m else 1
        if nodes < 1 or per_node < 1:
            raise UsageError(f"bad GPU spec {gpus!r}: node and GPU counts must be at least 1") from None
        gpu = custom_gpu(m.group(3) if m else gpus, mem, gpu_tflops, gpu_bw)
        source = "flags"
    else:
        updates: dict[str, object] = {}
        if mem is not None:
            updates["memory_bytes"] = mem
        if gpu_tflops is not None:
            updates["bf16_tflops"] = custom_gpu(gpu.name, gpu.memory_bytes, gpu_tflops).bf16_tflops
        if gpu_bw is not None:
            updates["mem_bw_gbs"] = custom_gpu(gpu.name, gpu.memory_bytes, 1.0, gpu_bw).mem_bw_gbs
        if updates:
            gpu = gpu.model_copy(update=updates)
            source = "flags"
    return HardwareSpec(nodes=nodes, gpus_per_node=per_node, gpu=gpu, host=_host(host_ram, cpus, shm, disk),
                        source=source)


def is_cpu_spec(gpus: str) -> bool:
    """``--gpus cpu`` (also ``1xCPU``, ``none``): plan for this machine's CPU, no GPU.

        >>> is_cpu_spec("cpu"), is_cpu_spec("1x CPU"), is_cpu_spec("2xRTX3060")
        (True, True, False)
    """
    return re.sub(r"[\s_-]+", "", gpus.lower()) in ("cpu", "1xcpu", "none")


def _host(host_ram: str | None, cpus: int | None, shm: str | None, disk: str | None) -> HostSpec:
    if cpus is not None and cpus < 1:
        raise UsageError(f"--cpus must be at least 1, got {cpus}")
    return HostSpec(
        ram_bytes=parse_bytes(host_ram, "--host-ram") if host_ram is not None else None,
        cpus=cpus,
        shm_bytes=parse_bytes(shm, "--shm") if shm is not None else None,
        disk_free_bytes=parse_bytes(disk, "--disk") if disk is not None else None,
    )


def load_hardware(path: str | Path) -> HardwareSpec:
    """Read a HardwareSpec YAML (what ``jitplan probe --out`` writes); UsageError with one line when bad."""
    from pydantic import ValidationError


    p = Path(path)
    try:
        raw = read_yaml_mapping(p, "hardware")
        if "gpus_per_node" not in raw and file_kind(raw) == "plan" and isinstance(raw.get("hardware"), dict):
            raw = raw["hardware"]  # a plan file: use its hardware
    except ValueError as e:
        raise UsageError(str(e)) from None
    version = raw.get("schema_version", 1)
    if version != 1:
        raise UsageError(f"{p} has hardware schema_version {version!r}; this jitplan reads version 1")
    try:
        hw = HardwareSpec.model_validate(raw)
    except ValidationError as e:
        raise UsageError(f"{p}: invalid hardware spec: {validation_summary(e)}") from None
    return hw.model_copy(update={"source": "probe" if hw.source == "probe" else "file"})
