"""C1-C3: does torch import, does its CUDA build fit the driver, does its arch list cover the GPUs.

Facts and tables: ../shared/reference/doctor.md (C1-C3); NVIDIA CUDA compatibility guide.

    >>> driver_meets("550.54.15", "550.54.14")
    True
    >>> arch_covers(["sm_80", "sm_86", "sm_90"], "8.9")
    True
    >>> arch_covers(["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"], "12.0")
    False
"""

from __future__ import annotations

import re

from jitplan.doctor.context import DoctorContext
from jitplan.doctor.finding import Finding

# CUDA toolkit -> minimum Linux x86_64 driver (GA), and the minor-version-compatibility floor per major.
MIN_DRIVER = {"11.8": "520.61.05", "12.0": "525.60.13", "12.1": "530.30.02", "12.2": "535.54.03",
              "12.3": "545.23.06", "12.4": "550.54.14", "12.5": "555.42.02", "12.6": "560.28.03",
              "12.8": "570.26", "12.9": "575.51.03", "13.0": "580.65.06", "13.1": "590.44.01",
              "13.2": "595.45.04"}
MVC_FLOOR = {11: "450.80.02", 12: "525.60.13", 13: "580"}
# TORCH_CUDA_ARCH_LIST of the PyPI/download.pytorch.org Linux builds, by CUDA version (doctor.md Table 3);
# used only when the arch list could not be read from torch itself.
ARCH_BY_CUDA = {
    "11.8": "sm_50 sm_60 sm_70 sm_75 sm_80 sm_86 sm_90",
    "12.1": "sm_50 sm_60 sm_70 sm_75 sm_80 sm_86 sm_90",
    "12.4": "sm_50 sm_60 sm_70 sm_75 sm_80 sm_86 sm_90",
    "12.6": "sm_50 sm_60 sm_70 sm_75 sm_80 sm_86 sm_90",
    "12.8": "sm_70 sm_75 sm_80 sm_86 sm_90 sm_100 sm_120",
    "12.9": "sm_70 sm_75 sm_80 sm_86 sm_90 sm_100 sm_120 compute_120",
    "13.0": "sm_75 sm_80 sm_86 sm_90 sm_100 sm_120 compute_120",
}
WHEEL_FIX = ("pip install torch==<version> --index-url https://download.pytorch.org/whl/cuXYZ "
             "(cuXYZ <= the driver's max CUDA, e.g. cu124 for driver 550, cu128 for 570)")


def _ver(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v))


def driver_meets(driver: str, minimum: str) -> bool:
    return _ver(driver) >= _ver(minimum)


def _cc(s: str) -> tuple[int, int]:
    """'8.6' -> (8, 6); 'sm_120a' -> (12, 0); 'compute_90' -> (9, 0)."""
    if "." in s:
        a, b = s.split(".", 1)
        return int(a), int(re.sub(r"\D", "", b) or 0)
    digits = re.sub(r"\D", "", s.split("_", 1)[-1])
    return int(digits[:-1] or 0), int(digits[-1])


def arch_covers(arch_list: list[str], cc: str) -> bool:
    """torch's own rule: a cubin runs on the same major with a higher or equal minor; PTX JITs upward."""
    dev = _cc(cc)
    for a in arch_list:
        maj, mnr = _cc(a)
        if a.startswith("sm_") and maj == dev[0] and mnr <= dev[1]:
            return True
        if a.startswith("compute_") and (maj, mnr) <= dev:
            return True
    return False


# --------------------------------------------------------------------------------------------------
def check_torch_import(ctx: DoctorContext) -> Finding:
    """C1: ``import torch`` in a child process; classify the known failures."""
    title = "import torch"
    meta, imp = ctx.probe.torch, ctx.torch_import
    if not meta.installed and (imp is None or not imp.ok):
        return Finding(id="C1", level="fail", title=title, found="torch is not installed in this Python",
                       fix="pip install 'jitplan[train]' (or " + WHEEL_FIX + ")")
    if imp is None:
        return Finding(id="C1", level="skip", title=title, found="import not attempted")
    if imp.ok:
        return Finding(id="C1", level="pass", title=title,
                       found=f"torch {imp.version} imports in {imp.seconds} s"
                             f"{' (cached: unchanged since)' if imp.cached else ''} (CUDA build {imp.cuda or 'none'})")
    err = imp.error or ""
    evidence = f"installer {meta.installer or '?'}"
    if mkl := meta.packages.get("mkl"):
        evidence += f", mkl {mkl}"
    if prefix := ctx.env.get("CONDA_PREFIX"):
        evidence += f", CONDA_PREFIX={prefix}"
    if "iJIT_NotifyEvent" in err or "iJIT_" in (imp.stderr_tail or ""):
        return Finding(
            id="C1", level="fail", title=title,
            found=f"import torch fails: undefined symbol iJIT_NotifyEvent ({evidence}). MKL >= 2024.1 removed "
                  "this symbol; conda-channel PyTorch links MKL dynamically (pytorch#123097).",
            fix='conda install "mkl<2024.1" "intel-openmp<2024.1", or use the pip wheels, which link MKL '
                "statically: " + WHEEL_FIX)
    if "nvJitLink" in err or "nvJitLink" in (imp.stderr_tail or ""):
        ld = ctx.env.get("LD_LIBRARY_PATH", "")
        return Finding(
            id="C1", level="fail", title=title,
            found=f"import torch fails: {err} (a system CUDA on LD_LIBRARY_PATH={ld or '(unset)'} shadows the "
                  "pip nvidia-nvjitlink wheel)",
            fix="unset LD_LIBRARY_PATH (or drop the /usr/local/cuda*/lib64 entries) so the pip nvidia/*/lib "
                "folders win; pip install -U nvidia-nvjitlink-cu12")
    if meta.installed and meta.location and meta.version is None:
        return Finding(id="C1", level="fail", title=title,
                       found=f"import torch fails: {err or 'no output'}; {meta.location} has no readable version.py "
                             "(a half-finished install?)",
                       fix="pip install --force-reinstall torch (or " + WHEEL_FIX + ")")
    if imp.timed_out:
        return Finding(id="C1", level="fail", title=title,
                       found=f"{err}: a healthy import takes 1-10 s (20-30 s from a cold network disk), so it hangs",
                       fix="check for a hung driver or a slow network file system holding site-packages; "
                           "jitplan doctor --import-timeout SECONDS waits longer")
    if "MiB of output" in err and err.startswith("stopped:"):  # jitmodel.bounded_io stopped a flood
        return Finding(id="C1", level="fail", title=title, found=f"import torch fails: {err}",
                       fix="--python must name a Python interpreter with torch installed; this program kept "
                           "printing instead of importing torch")
    if "cannot open shared object file" in err:
        return Finding(id="C1", level="fail", title=title, found=f"import torch fails: {err}",
                       fix="the torch wheel and the installed nvidia-* wheels do not match: reinstall torch "
                           "with its own index, " + WHEEL_FIX)
    return Finding(id="C1", level="fail", title=title, found=f"import torch fails: {err}",
                   fix="reinstall torch from the pip wheels: " + WHEEL_FIX)


def check_cuda_driver(ctx: DoctorContext) -> Finding:
    """C2: the CUDA version torch was built with against the driver's maximum."""
    title = "torch CUDA build vs driver"
    nv, tcuda, tver = ctx.probe.nvml, ctx.torch_cuda, ctx.torch_version
    if not ctx.gpus:
        return Finding(id="C2", level="skip", title=title, found="no GPU visible")
    if tver is None:
        return Finding(id="C2", level="skip", title=title, found="torch version unknown (see C1)")
    if tcuda is None:
        return Finding(id="C2", level="fail", title=title,
                       found=f"torch {tver} is a CPU build on a machine with {len(ctx.gpus)} GPU(s)",
                       fix=WHEEL_FIX)
    t_major, t_minor = _ver(tcuda)[:2]
    dcuda = nv.driver_cuda
    need = MIN_DRIVER.get(f"{t_major}.{t_minor}")
    if dcuda is None:
        if nv.driver_version and need and not driver_meets(nv.driver_version, need):
            return Finding(id="C2", level="fail", title=title,
                           found=f"torch {tver} (CUDA {tcuda}) needs driver >= {need}; driver is {nv.driver_version}",
                           fix=WHEEL_FIX)
        return Finding(id="C2", level="warn", title=title, found="the driver's CUDA version is unknown")
    d_major, d_minor = _ver(dcuda)[:2]
    found = f"torch {tver} built with CUDA {tcuda}; driver {nv.driver_version} supports CUDA {dcuda}"
    if t_major > d_major:
        return Finding(id="C2", level="fail", title=title,
                       found=f"{found}: the driver is too old (needs >= {need or f'CUDA {tcuda}'}); "
                             "torch.cuda.is_available() will be False",
                       fix=f"{WHEEL_FIX}; or pick a host whose driver supports CUDA {tcuda}")
    if t_major == d_major and t_minor > d_minor:
        floor = MVC_FLOOR.get(t_major)
        if floor and nv.driver_version and driver_meets(nv.driver_version, floor):
            return Finding(id="C2", level="warn", title=title,
                           found=f"{found}: runs through minor-version compatibility (no PTX JIT, newer CUDA "
                                 "APIs fail)",
                           fix=f"prefer a cu{d_major}{d_minor} build: {WHEEL_FIX}")
        return Finding(id="C2", level="fail", title=title, found=f"{found}: below the compatibility floor {floor}",
                       fix=WHEEL_FIX)
    return Finding(id="C2", level="pass", title=title, found=found)


def check_arch(ctx: DoctorContext) -> Finding:
    """C3: every GPU's compute capability is covered by the build's arch list."""
    title = "GPU arch vs torch arch list"
    imp, tcuda = ctx.torch_import, ctx.torch_cuda
    caps = sorted({(g.name, g.compute_capability) for g in ctx.gpus if g.compute_capability})
    if not caps:
        return Finding(id="C3", level="skip", title=title, found="no GPU with a known compute capability")
    if tcuda is None:
        return Finding(id="C3", level="skip", title=title, found="no CUDA build of torch (see C2)")
    source = "torch"
    archs = imp.arch_list if imp is not None and imp.ok else []
    if not archs:
        archs = ARCH_BY_CUDA.get(".".join(map(str, _ver(tcuda)[:2])), "").split()
        source = f"the release table for CUDA {tcuda}"
    if not archs:
        return Finding(id="C3", level="warn", title=title, found=f"arch list of CUDA {tcuda} builds unknown")
    missing = [f"{name} (sm_{cc.replace('.', '')})" for name, cc in caps if not arch_covers(archs, cc)]
    found = f"arch list ({source}): {' '.join(archs)}"
    if missing:
        return Finding(id="C3", level="fail", title=title,
                       found=f"{', '.join(missing)} not covered; {found}. Kernels will fail with 'no kernel image "
                             "is available for execution on the device'",
                       fix="install a build that ships the GPU's arch (Blackwell sm_120: cu128+ with torch >= 2.7; "
                           "Pascal sm_61: a cu126 build): " + WHEEL_FIX)
    caps_s = ", ".join(f"{n} sm_{c.replace('.', '')}" for n, c in caps)
    return Finding(id="C3", level="pass", title=title, found=f"{caps_s} covered; {found}")
