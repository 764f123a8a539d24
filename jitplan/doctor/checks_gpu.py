"""C4-C6: driver/NVML state and GPU count, per-GPU sanity (memory, PCIe, power, MIG), P2P readiness."""

from __future__ import annotations

from jitmodel.precision import BF16_MIN_CC, FP16_TENSOR_MIN_CC, parse_cc
from jitplan.doctor.context import DoctorContext
from jitplan.doctor.finding import Finding
from jitplan.hardware.nvml import P2P_MEANING

GIB = 2**30


def check_driver(ctx: DoctorContext) -> Finding:
    """C4: NVML answers, the GPU count matches the plan, torch sees what NVML sees."""
    title = "driver and GPU count"
    nv, plan, imp = ctx.probe.nvml, ctx.plan, ctx.torch_import
    if not nv.available:
        fatal = nv.error_kind in ("NVMLError_LibRmVersionMismatch", "NVMLError_DriverNotLoaded",
                                  "NVMLError_NoPermission")
        wants_gpu = plan is not None
        level = "fail" if fatal or wants_gpu else "warn"
        container = "" if "--gpus all" in (nv.error or "") else "; in a container start it with --gpus all (NVIDIA " \
            "Container Toolkit)"  # said once: the NVML message may already say it
        fix = ("reboot or reload the nvidia kernel module" if nv.error_kind == "NVMLError_LibRmVersionMismatch"
               else f"run on a GPU machine{container}")
        return Finding(id="C4", level=level, title=title, found=f"No NVIDIA GPU visible: {nv.error}", fix=fix)
    n = len(nv.gpus)
    found = f"driver {nv.driver_version}, {n} GPU(s) via NVML"
    if plan is not None and plan.topology.nproc_per_node != n:
        return Finding(id="C4", level="fail", title=title,
                       found=f"{found}, but the plan runs {plan.topology.nproc_per_node} ranks per node",
                       fix=f"re-plan for this machine (jitplan probe --out hardware.yaml; jitplan plan --hardware "
                           f"hardware.yaml), or run torchrun --nproc-per-node {n}")
    if imp is not None and imp.ok and imp.cuda:
        if not imp.cuda_available:
            return Finding(id="C4", level="fail", title=title,
                           found=f"{found}, but torch.cuda.is_available() is False"
                                 + (f": {imp.cuda_warning}" if imp.cuda_warning else ""),
                           fix="see C2 (a CUDA build newer than the driver) and CUDA_VISIBLE_DEVICES")
        if imp.device_count is not None and imp.device_count != n:
            return Finding(id="C4", level="warn", title=title,
                           found=f"{found}; torch sees {imp.device_count} (CUDA_VISIBLE_DEVICES="
                                 f"{ctx.env.get('CUDA_VISIBLE_DEVICES', 'unset')})",
                           fix="make CUDA_VISIBLE_DEVICES list the GPUs the run should use")
    here = ctx.probe.to_hardware_spec().gpu
    planned = plan.plan.hardware.gpu if plan is not None and plan.plan is not None else None
    if planned is not None and here is not None and here.name != planned.name:
        return Finding(id="C4", level="warn", title=title,
                       found=f"{found}; the plan was made for {planned.name}, this machine has {here.name}",
                       fix="re-plan for this machine: jitplan probe --out hardware.yaml && "
                           "jitplan plan --hardware hardware.yaml")
    return Finding(id="C4", level="pass", title=title, found=found)


def check_gpus(ctx: DoctorContext) -> Finding:
    """C5: each GPU's memory against the plan, PCIe link, power cap, MIG, compute mode, stray processes."""
    title = "per-GPU sanity"
    gpus, est = ctx.gpus, ctx.estimates
    if not gpus:
        return Finding(id="C5", level="skip", title=title, found="no GPU visible")
    fails, warns = [], []
    for g in gpus:
        tag = f"GPU{g.index} {g.name}"
        if est is not None and est.memory_per_gpu_bytes and g.memory_total_bytes:
            need = est.memory_per_gpu_bytes
            if need > g.memory_total_bytes:
                fails.append(f"{tag}: plan needs {need / GIB:.1f} GiB, card has {g.memory_total_bytes / GIB:.1f} GiB")
            elif g.memory_free_bytes is not None and need > g.memory_free_bytes:
                fails.append(f"{tag}: plan needs {need / GIB:.1f} GiB, only {g.memory_free_bytes / GIB:.1f} GiB free "
                             f"({len(g.processes)} process(es) hold the rest)")
        if len(gpus) > 1 and g.pcie_width_max is not None and (g.pcie_width_max < 8 or (g.pcie_gen_max or 9) < 3):
            warns.append(f"{tag}: PCIe link Gen{g.pcie_gen_max} x{g.pcie_width_max}: all-reduce traffic will be slow")
        if g.power_limit_w and g.power_default_limit_w and g.power_limit_w < 0.95 * g.power_default_limit_w:
            warns.append(f"{tag}: power capped at {g.power_limit_w:g} W (default {g.power_default_limit_w:g} W)")
        if g.mig_mode == "enabled":
            warns.append(f"{tag}: MIG is enabled; each instance is a fraction of the card")
        if g.compute_mode in ("prohibited", "exclusive_process"):
            warns.append(f"{tag}: compute mode {g.compute_mode}")
        if g.processes:
            used = sum(p.used_memory_bytes or 0 for p in g.processes)
            warns.append(f"{tag}: {len(g.processes)} process(es) already running, {used / GIB:.1f} GiB in use")
    if fails:
        return Finding(id="C5", level="fail", title=title, found="; ".join(fails + warns),
                       fix="lower batch_per_gpu (re-plan with jitplan plan) or stop the other processes")
    if warns:
        return Finding(id="C5", level="warn", title=title, found="; ".join(warns),
                       fix="ask the host for full PCIe links/default power, or expect slower steps")
    mem = gpus[0].memory_total_bytes
    return Finding(id="C5", level="pass", title=title,
                   found=f"{len(gpus)} x {gpus[0].name}" + (f", {mem / GIB:.1f} GiB each" if mem else ""))


def check_p2p(ctx: DoctorContext) -> Finding:
    """C6: P2P between GPUs; without it NCCL goes through /dev/shm (SHM transport)."""
    title = "multi-GPU P2P / NCCL"
    nv, host = ctx.probe.nvml, ctx.probe.host
    if len(nv.gpus) < 2:
        return Finding(id="C6", level="skip", title=title, found="fewer than 2 GPUs")
    pairs = [(i, j, s) for i, row in enumerate(nv.p2p) for j, s in enumerate(row) if i < j]
    bad = [(i, j, s) for i, j, s in pairs if s != "OK"]
    disabled = ctx.env.get("NCCL_P2P_DISABLE")
    if not bad:
        if disabled and disabled != "0":
            return Finding(id="C6", level="warn", title=title,
                           found="P2P is supported between all GPUs but NCCL_P2P_DISABLE is set",
                           fix="unset NCCL_P2P_DISABLE unless the first all_reduce hangs (then check PCIe ACS/IOMMU)")
        return Finding(id="C6", level="pass", title=title, found=f"P2P OK between all {len(nv.gpus)} GPUs")
    codes = sorted({s for _, _, s in bad})
    shm = host.shm_total_bytes
    meanings = ", ".join(f"{c} = {P2P_MEANING.get(c, c)}" for c in codes)
    found = (f"no P2P on {len(bad)} of {len(pairs)} GPU pairs ({meanings}); "
             f"NCCL will use the SHM transport through /dev/shm ({(shm or 0) / 2**20:.0f} MiB)")
    if shm is not None and shm < 512 * 2**20:
        return Finding(id="C6", level="fail", title=title,
                       found=found + ": too small, NCCL will fail to create segments",
                       fix="docker run --shm-size=8g --ulimit memlock=-1 (NCCL troubleshooting), or a host with "
                           "more shm")
    return Finding(id="C6", level="pass", title=title,
                   found=found + " (normal for GeForce cards; no NCCL_P2P_DISABLE needed)")


def check_precision(ctx: DoctorContext) -> Finding:
    """C14: the run's precision on these cards: bf16 needs compute capability 8.0 (Ampere) or newer; fp16
    (with the trainer's gradient scaler) needs 7.0 (Volta/Turing tensor cores) to be faster than fp32."""
    title = "precision vs GPU"
    gpus = ctx.gpus
    if ctx.plan is None or not gpus:
        return Finding(id="C14", level="skip", title=title, found="no plan or no GPU visible")
    precision = ctx.plan.train.precision

    caps = [(g, parse_cc(getattr(g, "compute_capability", None))) for g in gpus]
    if precision == "bf16":
        old = [f"GPU{g.index} {g.name} (sm {'.'.join(map(str, c))})" for g, c in caps
               if c is not None and c < BF16_MIN_CC]
        if old:
            return Finding(id="C14", level="fail", title=title,
                           found=f"the run asks for bf16 but {', '.join(old)} has no bf16 tensor cores",
                           fix="set precision: fp16 (autocast + gradient scaler) or re-plan for this machine: "
                               "jitplan plan --hardware hardware.yaml chooses fp16 on these cards")
    if precision == "fp16":
        slow = [f"GPU{g.index} {g.name}" for g, c in caps if c is not None and c < FP16_TENSOR_MIN_CC]
        if slow:
            return Finding(id="C14", level="warn", title=title,
                           found=f"fp16 on {', '.join(slow)}: no fp16 tensor cores, little faster than fp32",
                           fix="precision: fp32")
    return Finding(id="C14", level="pass", title=title, found=f"precision {precision} on {gpus[0].name}")
