"""The host as the training processes see it: container limits, not the host's totals.

``psutil.virtual_memory()`` and ``free`` read /proc/meminfo, which inside a container shows the *host's*
RAM (psutil#2100); the limit that OOM-kills DataLoader workers is the cgroup's. So this module reads the
cgroup files (v2 ``memory.max``/``cpu.max``, v1 ``memory.limit_in_bytes``/``cpu.cfs_quota_us``) under an
injectable root, walking from this process's cgroup up to the root and keeping the smallest limit.
Every path is injectable (``HostPaths``) so tests plant cgroup trees and a tiny /dev/shm.

    >>> info = read_host(HostPaths.under("tests/data/cgroup/v2_24g"), affinity=16, host_ram_bytes=256 << 30)
    >>> (info.cgroup_version, info.ram_bytes >> 30, info.cpus_usable)
    ('v2', 24, 8)
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from jitplan.secrets import redact

# A limit this large means "no limit" (v1 writes PAGE_COUNTER_MAX rounded to a page, ~9.2e18).
_UNLIMITED = 1 << 60
ENV_KNOBS = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "PYTORCH_CUDA_ALLOC_CONF", "CUDA_MODULE_LOADING",
             "OMP_NUM_THREADS", "LD_LIBRARY_PATH", "CONDA_PREFIX", "PYTORCH_NVML_BASED_CUDA_CHECK")
ENV_PREFIXES = ("NCCL_", "TORCH_NCCL_")


@dataclass(frozen=True)
class HostPaths:
    """Where host facts are read from. ``HostPaths.under(dir)`` re-roots all of them (tests)."""

    cgroup_root: Path = Path("/sys/fs/cgroup")
    proc_self_cgroup: Path = Path("/proc/self/cgroup")
    proc_1_cgroup: Path = Path("/proc/1/cgroup")
    shm: Path = Path("/dev/shm")
    root: Path = Path("/")  # for /.dockerenv, /run/.containerenv

    @classmethod
    def under(cls, base: str | Path) -> HostPaths:
        b = Path(base)
        return cls(cgroup_root=b / "sys/fs/cgroup", proc_self_cgroup=b / "proc/self/cgroup",
                   proc_1_cgroup=b / "proc/1/cgroup", shm=b / "dev/shm", root=b)


class DiskInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str  # the path asked about
    mount_probe: str  # the existing ancestor actually measured
    total_bytes: int
    free_bytes: int


class HostInfo(BaseModel):
    """Host facts. ``ram_bytes``/``cpus_usable`` are what the processes may use (limits applied)."""

    model_config = ConfigDict(extra="forbid")
    os: str
    kernel: str
    python: str
    container: str | None = None  # "docker", "podman", "kubernetes", "lxc", "container" or None
    cgroup_version: str | None = None  # "v1" | "v2" | None
    cpus_host: int
    cpus_affinity: int
    cpu_quota: float | None = None  # cgroup CPUs (quota / period), None when unlimited
    cpus_usable: int
    ram_host_bytes: int
    ram_limit_bytes: int | None = None  # cgroup memory limit, None when unlimited
    ram_bytes: int  # min(host, limit)
    ram_used_bytes: int | None = None  # cgroup usage (includes page cache and /dev/shm)
    oom_kills: int | None = None
    shm_path: str
    shm_total_bytes: int | None = None
    shm_free_bytes: int | None = None
    disks: list[DiskInfo] = Field(default_factory=list)
    nofile_limit: int | None = None
    memlock_limit: int | None = None  # -1: unlimited
    env: dict[str, str] = Field(default_factory=dict)


def _read(p: Path) -> str | None:
    try:
        return p.read_text().strip()
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    if text is None or text == "max":
        return None
    try:
        v = int(text.split()[0])
    except (ValueError, IndexError):
        return None
    return None if v >= _UNLIMITED or v < 0 else v


def _cgroup_dirs(paths: HostPaths, controller: str | None) -> list[Path]:
    """This process's cgroup dir and its ancestors, deepest first (v2 when controller is None)."""
    base = paths.cgroup_root if controller is None else paths.cgroup_root / controller
    rel = "/"
    for line in (_read(paths.proc_self_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        ctrls = parts[1].split(",")
        if (controller is None and parts[0] == "0" and parts[1] == "") or (controller in ctrls):
            rel = parts[2]
            break
    dirs = []
    cur = base / rel.lstrip("/")
    while True:
        if cur.is_dir():
            dirs.append(cur)
        if cur == base or base not in cur.parents:
            break
        cur = cur.parent
    return dirs or [base]


def _min_limit(dirs: list[Path], name: str) -> int | None:
    vals = [v for d in dirs if (v := _int(_read(d / name))) is not None]
    return min(vals) if vals else None


def _events(text: str | None, key: str) -> int | None:
    for line in (text or "").splitlines():
        k, _, v = line.partition(" ")
        if k == key:
            return int(v)
    return None


def cgroup_limits(paths: HostPaths) -> tuple[str | None, int | None, int | None, float | None, int | None]:
    """(version, memory limit, memory usage, CPU quota in CPUs, OOM kills) from the cgroup files."""
    root = paths.cgroup_root
    if (root / "cgroup.controllers").exists():
        dirs = _cgroup_dirs(paths, None)
        quota = None
        for d in dirs:
            parts = (_read(d / "cpu.max") or "max").split()
            if parts[0] != "max" and len(parts) == 2:
                q = int(parts[0]) / int(parts[1])
                quota = q if quota is None else min(quota, q)
        return ("v2", _min_limit(dirs, "memory.max"), _int(_read(dirs[0] / "memory.current")), quota,
                _events(_read(dirs[0] / "memory.events"), "oom_kill"))
    if (root / "memory").is_dir() or (root / "cpu").is_dir() or (root / "cpu,cpuacct").is_dir():
        mdirs = _cgroup_dirs(paths, "memory")
        cpu_ctrl = "cpu" if (root / "cpu").is_dir() else "cpu,cpuacct"
        quota = None
        for d in _cgroup_dirs(paths, cpu_ctrl):
            qt, pt = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
            if qt and pt and int(qt) > 0 and int(pt) > 0:
                quota = int(qt) / int(pt) if quota is None else min(quota, int(qt) / int(pt))
        return ("v1", _min_limit(mdirs, "memory.limit_in_bytes"), _int(_read(mdirs[0] / "memory.usage_in_bytes")),
                quota, _events(_read(mdirs[0] / "memory.oom_control"), "oom_kill"))
    return None, None, None, None, None


def detect_container(paths: HostPaths, env: Mapping[str, str]) -> str | None:
    """Best-effort container kind from marker files, PID 1's cgroup and the environment."""
    if "KUBERNETES_SERVICE_HOST" in env:
        return "kubernetes"
    if (paths.root / ".dockerenv").exists():
        return "docker"
    if (paths.root / "run/.containerenv").exists():
        return "podman"
    cg = _read(paths.proc_1_cgroup) or ""
    for marker, kind in (("kubepods", "kubernetes"), ("docker", "docker"), ("containerd", "docker"),
                         ("lxc", "lxc"), ("libpod", "podman")):
        if marker in cg:
            return kind
    return env.get("container") or None


def disk_info(path: str | Path) -> DiskInfo:
    """Free space where ``path`` will live (its nearest existing ancestor)."""
    p = Path(path).absolute()
    probe = p
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    u = shutil.disk_usage(probe)
    return DiskInfo(path=str(path), mount_probe=str(probe), total_bytes=u.total, free_bytes=u.free)


def shm_size(shm: Path) -> tuple[int | None, int | None]:
    """(total, free) bytes of the shm mount; (None, None) when it does not exist."""
    try:
        st = os.statvfs(shm)
    except OSError:
        return None, None
    return st.f_frsize * st.f_blocks, st.f_frsize * st.f_bavail


def _host_ram() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def _rlimits() -> tuple[int | None, int | None]:
    try:
        import resource
    except ImportError:  # Windows
        return None, None
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    memlock = resource.getrlimit(resource.RLIMIT_MEMLOCK)[0]
    inf = resource.RLIM_INFINITY
    return (None if nofile == inf else nofile), (-1 if memlock == inf else memlock)


def env_knobs(env: Mapping[str, str]) -> dict[str, str]:
    """The environment variables that change how CUDA/NCCL/torch behave (doctor C13); secrets masked."""

    return {k: redact(v) for k, v in sorted(env.items()) if k in ENV_KNOBS or k.startswith(ENV_PREFIXES)}


def read_host(
    paths: HostPaths | None = None,
    *,
    disk_paths: list[str] | None = None,
    env: Mapping[str, str] | None = None,
    affinity: int | None = None,
    host_ram_bytes: int | None = None,
    cpus_host: int | None = None,
) -> HostInfo:
    """Collect host facts. Keyword overrides exist for tests; the defaults read this machine."""
    paths = paths or HostPaths()
    env = os.environ if env is None else env
    version, mem_limit, mem_used, quota, ooms = cgroup_limits(paths)
    ram_host = host_ram_bytes or _host_ram()
    aff = affinity or _affinity()
    if mem_limit is not None and mem_limit >= ram_host:
        mem_limit = None  # a limit above the host's RAM does not bind
    usable = aff if quota is None else max(1, min(aff, math.floor(quota + 1e-9)))
    shm_total, shm_free = shm_size(paths.shm)
    nofile, memlock = _rlimits()
    return HostInfo(
        os=f"{platform.system()} {platform.release()}" if not (d := _distro()) else d,
        kernel=platform.release(),
        python=f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})",
        container=detect_container(paths, env),
        cgroup_version=version,
        cpus_host=cpus_host or os.cpu_count() or 1,
        cpus_affinity=aff,
        cpu_quota=quota,
        cpus_usable=usable,
        ram_host_bytes=ram_host,
        ram_limit_bytes=mem_limit,
        ram_bytes=min(ram_host, mem_limit) if mem_limit else ram_host,
        ram_used_bytes=mem_used,
        oom_kills=ooms,
        shm_path=str(paths.shm),
        shm_total_bytes=shm_total,
        shm_free_bytes=shm_free,
        disks=[disk_info(p) for p in (disk_paths or ["."])],
        nofile_limit=nofile,
        memlock_limit=memlock,
        env=env_knobs(env),
    )


def _distro() -> str | None:
    try:
        info = platform.freedesktop_os_release()
    except OSError:
        return None
    return info.get("PRETTY_NAME")
