"""C7-C9, C12, C13: /dev/shm, host RAM against DataLoader workers, CPUs, long phases vs the NCCL
timeout, environment knobs. RAM and shm use the planner's worker model (``jitplan.planner.workers``)
against the *measured* machine, so plan and doctor agree on what fits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jitmodel import bounds
from jitmodel.counts import param_count
from jitplan.doctor.context import DEFAULT_NCCL_TIMEOUT_S, DoctorContext, prefetch
from jitplan.doctor.finding import Finding
from jitplan.planner import workers as w
from jitplan.planner.workers import RAM_USABLE_FRACTION, decide_workers

if TYPE_CHECKING:
    from jitplan.planner.workers import WorkerPlan
    from jitplan.runspec import RunSpec

GB = 1e9
MIB = 2**20
DOCKER_DEFAULT_SHM = 64 * MIB


def _gb(n: float | None) -> str:
    return "?" if n is None else f"{n / GB:.1f} GB"


def _params(run: RunSpec) -> int:
    if run.plan is not None and run.plan.estimates.params:
        return run.plan.estimates.params

    m = run.train.model
    if m.factory is not None:  # a user's network without a traced plan: its size is not known here
        return 0
    return param_count(m.variant, m.img_size, m.num_classes)


def _images(run: RunSpec) -> int:
    return run.train.data.planned_images


def worker_budget(run: RunSpec, ram_bytes: int | None, cpus: int | None, shm_bytes: int | None) -> WorkerPlan:
    """The planner's worker decision for this run's ranks and batch on this machine's limits."""

    t = run.train
    return decide_workers(requested=t.data.num_workers, ranks_per_node=run.topology.nproc_per_node,
                          micro_batch=t.batch_per_gpu, img_size=t.model.img_size,
                          num_images=_images(run), ram_bytes=ram_bytes, cpus=cpus,
                          shm_bytes=shm_bytes, params=_params(run), prefetch=prefetch(t))


def ram_needed(run: RunSpec, workers: int) -> tuple[int, int, int]:
    """(node RAM, per-worker RAM incl. its shm batches, one rank's main process) at ``workers`` per rank."""

    t = run.train
    mb, img, pf, n = t.batch_per_gpu, t.model.img_size, prefetch(t), _images(run)
    node = w.node_host_bytes(run.topology.nproc_per_node, workers, params=_params(run), micro_batch=mb,
                             img_size=img, num_images=n, prefetch=pf)
    return node, w.worker_host_bytes(mb, img, n, pf), w.main_process_bytes(_params(run), mb, img, pf)


def start_floor(run: RunSpec, device: str) -> bounds.StartMemory:
    """The floor of one rank's memory at its first step (``jitmodel.bounds``, what the trainer checks)."""
    t, m = run.train, run.train.model
    if m.factory is not None:  # a user's network: its floor is the traced plan's (the trainer skips it too)
        return bounds.StartMemory(device=device, dataset_bytes=0, state_bytes=0, ema_host_bytes=0,
                                  activation_bytes=0)
    return bounds.start_memory(m.variant, m.img_size, t.batch_per_gpu, data_kind=t.data.kind, device=device,
                               in_channels=m.in_channels, num_classes=m.num_classes, attention=m.attention,
                               num_emas=len(t.diffusion.ema_decays), ema_on_host=t.memory.ema_device == "cpu")


def check_shm(ctx: DoctorContext) -> Finding:
    """C7: /dev/shm holds the in-flight batches of every worker of every rank (and NCCL's segments)."""
    title = "/dev/shm"
    host, plan = ctx.probe.host, ctx.plan
    total, free = host.shm_total_bytes, host.shm_free_bytes
    if total is None:
        return Finding(id="C7", level="fail", title=title, found=f"{host.shm_path} does not exist",
                       fix="mount a tmpfs at /dev/shm (docker run --shm-size=8g)")
    have = f"{host.shm_path}: {total / MIB:.0f} MiB total, {(free or 0) / MIB:.0f} MiB free"
    fix = ("docker run --shm-size=8g (or --ipc=host; Kubernetes: an emptyDir medium Memory at /dev/shm); on Vast.ai "
           "shm follows the GPU fraction, so rent the whole machine or lower num_workers/prefetch_factor")
    if plan is not None and plan.train.data.num_workers > 0:

        t, r = plan.train, plan.topology.nproc_per_node
        nw, pf, mb, img = t.data.num_workers, prefetch(t), t.batch_per_gpu, t.model.img_size
        need = r * (nw * w.shm_per_worker(mb, img, pf) + w.NCCL_SHM_BYTES)
        found = f"{have}; {r} ranks x {nw} workers x {pf} batches of {mb} x {img}px need {need / MIB:.0f} MiB"
        if need > (free if free is not None else total):
            cap = worker_budget(plan, None, None, total).caps.get("shm", 0)
            return Finding(id="C7", level="fail", title=title,
                           found=found + f" (DataLoader workers die with 'Bus error'); fits {cap} workers per rank",
                           fix=f"{fix}; or set data.num_workers <= {cap}")
        if need > 0.5 * total:
            return Finding(id="C7", level="warn", title=title, found=found + " (more than half of it)", fix=fix)
        return Finding(id="C7", level="pass", title=title, found=found)
    if total <= DOCKER_DEFAULT_SHM:
        return Finding(id="C7", level="fail", title=title,
                       found=f"{have}: Docker's 64 MB default; DataLoader workers and NCCL's SHM transport will fail",
                       fix=fix)
    if total < 1 << 30:
        return Finding(id="C7", level="warn", title=title, found=f"{have}: small for multi-worker loading",
                       fix=fix)
    return Finding(id="C7", level="pass", title=title, found=have)


def check_ram(ctx: DoctorContext) -> Finding:
    """C8: ranks x (main process + workers x per-worker RAM) against the container's memory limit."""
    title = "host RAM vs DataLoader workers"
    host, plan = ctx.probe.host, ctx.plan
    limit = (f"cgroup limit {_gb(host.ram_limit_bytes)}; the host's {_gb(host.ram_host_bytes)} is not usable"
             if host.ram_limit_bytes else f"host RAM {_gb(host.ram_bytes)}, no cgroup limit")
    ooms = f"; {host.oom_kills} OOM kill(s) already in this cgroup" if host.oom_kills else ""
    if plan is None:
        return Finding(id="C8", level="skip", title=title, found=f"{limit}{ooms} (pass --plan to check workers)")

    r, nw = plan.topology.nproc_per_node, plan.train.data.num_workers
    need, per_worker, main = ram_needed(plan, nw)
    start = start_floor(plan, "cuda" if ctx.gpus else "cpu")
    held = start.host_bytes - start.runtime_bytes  # beyond the training process the worker model counts
    need += r * held
    measured = ""
    lm = ctx.loader
    if lm is not None and lm.ok and lm.workers:
        measured = (f"; measured ({lm.batches} batches, {lm.workers} workers): {lm.per_worker_bytes / GB:.2f} GB "
                    f"PSS per worker, /dev/shm peak {lm.shm_peak_bytes / 2**20:.0f} MiB")
        if lm.per_worker_bytes > per_worker:
            need += r * nw * (lm.per_worker_bytes - per_worker)
            per_worker = lm.per_worker_bytes
            measured += " (above the model: used)"
    elif lm is not None and not lm.ok:
        measured = f"; the DataLoader measurement failed: {lm.error}"
    usable = RAM_USABLE_FRACTION * host.ram_bytes
    at_start = f" + {r} x {_gb(held)} held at start ({start.parts()}, jitmodel.bounds)" if held >= 0.05 * GB else ""
    found = (f"{r} ranks x {nw} workers = {r * nw} workers; estimated {_gb(need)} ({r} x {_gb(main)} training "
             f"process + {r * nw} x {per_worker / GB:.2f} GB per worker{at_start}) vs {_gb(usable)} usable "
             f"({RAM_USABLE_FRACTION:.0%} of {limit}){ooms}{measured}")
    if r * held > usable:
        return Finding(id="C8", level="fail", title=title,
                       found=found + ": the trainer refuses to start (it checks the same floor, jitmodel.bounds)",
                       fix="lower model.img_size or batch_per_gpu (or memory.ema_device: same), or a host with "
                           "more RAM")
    if need > usable:
        cap = worker_budget(plan, host.ram_bytes, None, None).caps.get("host-ram", 0)
        return Finding(id="C8", level="fail", title=title,
                       found=found + ": workers will be OOM-killed ('DataLoader worker ... killed by signal: Killed')",
                       fix=f"set data.num_workers <= {cap} per rank (jitplan plan --workers {cap}), "
                           "prefetch_factor 1, or a host with more RAM")
    if need > 0.9 * usable or host.oom_kills:
        return Finding(id="C8", level="warn", title=title, found=found,
                       fix="leave headroom: one or two fewer workers per rank")
    return Finding(id="C8", level="pass", title=title, found=found)


def check_cpus(ctx: DoctorContext) -> Finding:
    """C9: DataLoader workers + trainers against usable CPUs (affinity and cgroup quota)."""
    title = "CPU budget"
    host, plan = ctx.probe.host, ctx.plan
    quota = f", cgroup quota {host.cpu_quota:g}" if host.cpu_quota else ""
    have = f"{host.cpus_usable} usable CPUs (affinity {host.cpus_affinity}{quota}, host {host.cpus_host})"
    if plan is None:
        return Finding(id="C9", level="pass", title=title, found=have)
    r, nw = plan.topology.nproc_per_node, plan.train.data.num_workers
    procs = r * (nw + 1)
    found = f"{r * nw} DataLoader workers + {r} trainers on {have}"
    if procs > 2 * host.cpus_usable:
        suggest = max(0, host.cpus_usable // r - 1)
        return Finding(id="C9", level="warn", title=title, found=found + ": workers will contend for CPUs",
                       fix=f"num_workers ~ {suggest} per rank (cpus // ranks - 1), capped by C8")
    return Finding(id="C9", level="pass", title=title, found=found)


def check_phases(ctx: DoctorContext) -> Finding:
    """C12: a rank-0-only or long collective phase (online evaluation) against the NCCL timeout."""
    title = "long phases vs NCCL timeout"
    plan, timeout, est = ctx.plan, ctx.nccl_timeout_s, ctx.estimates
    if plan is None or est is None:
        return Finding(id="C12", level="skip", title=title, found="needs a plan with an evaluation estimate (--plan)")
    if not plan.train.eval.online:
        return Finding(id="C12", level="pass", title=title, found="online evaluation is off")
    if timeout is None:
        timeout = plan.train.dist_timeout_s or DEFAULT_NCCL_TIMEOUT_S
    chunk = plan.train.eval.chunk_images
    if chunk and est.eval_chunk_s is not None:  # ranks meet at a barrier after each chunk (jitmodel.evaluate)
        t = est.eval_chunk_s
        found = (f"online evaluation in chunks of {chunk:,} images per rank, ~{t / 60:.1f} min each, against a "
                 f"{timeout / 60:.0f} min NCCL timeout")
    else:
        t = est.eval_time_s
        found = f"one online evaluation ~{t / 60:.0f} min against a {timeout / 60:.0f} min NCCL timeout"
    if plan.topology.world_size < 2:
        return Finding(id="C12", level="pass", title=title, found=found + " (single rank: no collective waits)")
    if t > timeout:
        return Finding(id="C12", level="fail", title=title,
                       found=found + ": ranks waiting at a barrier hit the watchdog, and with one tqdm tick per "
                                     "batch it looks hung",
                       fix="re-plan (jitplan plan sets eval.chunk_images and a timeout that covers a chunk), "
                           "eval.num_images smaller (e.g. 5,000 for a smoke FID), eval.online false, or "
                           "train.dist_timeout_s above the estimate")
    if t > 0.5 * timeout:
        return Finding(id="C12", level="warn", title=title, found=found, fix="raise the timeout for margin")
    return Finding(id="C12", level="pass", title=title, found=found)


def check_env(ctx: DoctorContext) -> Finding:
    """C13: environment knobs that change CUDA/NCCL behaviour, open-file and memlock limits."""
    title = "environment knobs"
    host, env = ctx.probe.host, ctx.env
    knobs = host.env
    warns = []
    multi = len(ctx.gpus) > 1
    if multi and host.memlock_limit not in (None, -1):
        warns.append(f"memlock limit {host.memlock_limit} B (NCCL recommends --ulimit memlock=-1)")
    if host.nofile_limit is not None and host.nofile_limit < 4096:
        warns.append(f"open files limit {host.nofile_limit} ('Too many open files' with many workers)")
    for k in ("NCCL_P2P_DISABLE", "NCCL_SHM_DISABLE", "NCCL_IB_DISABLE"):
        if env.get(k, "0") not in ("0", ""):
            warns.append(f"{k}={env[k]} (a debugging switch; slower collectives)")
    ld = env.get("LD_LIBRARY_PATH", "")
    if "cuda" in ld.lower():
        warns.append(f"LD_LIBRARY_PATH has a system CUDA ({ld}); it can shadow the pip nvidia-* libraries")
    shown = ", ".join(f"{k}={v}" for k, v in knobs.items() if k != "LD_LIBRARY_PATH") or "none set"
    if warns:
        return Finding(id="C13", level="warn", title=title, found="; ".join(warns) + f" [{shown}]",
                       fix="unset the debugging NCCL variables; raise limits (docker run --ulimit memlock=-1 "
                           "--ulimit nofile=65536)")
    return Finding(id="C13", level="pass", title=title, found=shown)
