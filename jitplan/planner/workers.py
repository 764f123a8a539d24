"""DataLoader workers per rank and in total, capped by CPUs, host RAM (the container's limit) and /dev/shm.

Pure functions. The per-worker RAM model (docs/planning.md "DataLoader workers", docs/doctor.md C8): each worker
grows to its private base pages plus a copy-on-read copy of the dataset index (ImageFolder's list of (path, class)
tuples, 181 B/image after a whole pass), plus decode scratch (all measured); in-flight batches sit in
/dev/shm, which is RAM (tmpfs) and counts toward the container's limit (C7). Every rank of a node runs
its own DataLoader: total = ranks x workers.

    >>> d = decide_workers(requested=12, ranks_per_node=2, micro_batch=16, img_size=256, num_images=1281167,
    ...                    ram_bytes=16 * 10**9, cpus=None, shm_bytes=None)
    >>> d.per_rank, d.bound_by
    (10, 'host-ram')
"""

from __future__ import annotations

from dataclasses import dataclass, field

GB = 1e9
# Measured by benchmarks/bench_workers.py (2026-12-07, this 2-core box, jitmodel's own DataLoader over 1,281,167
# hard-linked JPEGs, micro-batch 16, prefetch 2; benchmarks/RESULTS.md "Measured worker RAM"): a forked worker's
# private memory (USS) right after start is 11-13 MB; a whole pass over the index grows it to 239 MB
# (copy-on-read of ImageFolder.samples: refcount writes dirty the pages the parent shares) = 181 B per image;
# 2,096 decoded images grow a worker by a further 41 MB (decode buffers, allocator arenas, its window's share of
# the index). Prefetched batches live in /dev/shm (2 x 3.1 MB per worker measured), not in the worker.
WORKER_BASE_BYTES = int(0.012 * GB)  # private pages of a freshly forked worker [measured]
INDEX_BYTES_PER_IMAGE = 181  # copy-on-read of ImageFolder.samples per image after a whole pass [measured]
DECODE_SCRATCH_BYTES = int(0.041 * GB)  # JPEG decode + crop buffers and arenas [measured, 2,096 images]
# python + torch + CUDA host-side libraries per rank [judgement: no GPU here; without CUDA the training process
# measured 0.61 GB RSS with the 1.28M-image index]
MAIN_PROCESS_BYTES = int(3.0 * GB)
BYTES_PER_PARAM_HOST = 4  # the model is built on the CPU in fp32 before .to(device)
RAM_USABLE_FRACTION = 0.85  # leave the rest to the OS, page cache, the shell
PLAN_HEADROOM = 0.9  # plan to 90% of that: doctor C8 warns above it (one or two workers of margin)
NCCL_SHM_BYTES = int(0.032 * GB)  # NCCL shared-memory segments per rank
PREFETCH_DEFAULT = 2


def batch_bytes(micro_batch: int, img_size: int, channels: int = 3) -> int:
    """One collated batch as the loader ships it: uint8 images (PILToTensor) + int64 labels."""
    return micro_batch * (channels * img_size * img_size + 8)


def worker_ram_bytes(micro_batch: int, img_size: int, num_images: int, prefetch: int = PREFETCH_DEFAULT) -> int:
    """Steady-state private memory (USS) of one worker after a whole pass; its shm batches are counted apart.
    (``micro_batch``, ``prefetch`` kept for the callers: the batches live in /dev/shm, shm_per_worker.)"""
    return WORKER_BASE_BYTES + INDEX_BYTES_PER_IMAGE * num_images + DECODE_SCRATCH_BYTES


def shm_per_worker(micro_batch: int, img_size: int, prefetch: int = PREFETCH_DEFAULT) -> int:
    return prefetch * batch_bytes(micro_batch, img_size)


def worker_host_bytes(micro_batch: int, img_size: int, num_images: int, prefetch: int = PREFETCH_DEFAULT) -> int:
    """Host RAM one worker costs, the one formula (planner and doctor): its RSS plus its batches in /dev/shm."""
    return (worker_ram_bytes(micro_batch, img_size, num_images, prefetch)
            + shm_per_worker(micro_batch, img_size, prefetch))


def node_host_bytes(ranks: int, workers: int, *, params: int, micro_batch: int, img_size: int, num_images: int,
                    prefetch: int = PREFETCH_DEFAULT) -> int:
    """Host RAM of one node: per rank its training process, ``workers`` workers and NCCL's shm segments."""
    per_worker = worker_host_bytes(micro_batch, img_size, num_images, prefetch)
    main = main_process_bytes(params, micro_batch, img_size, prefetch)
    return ranks * (main + workers * per_worker + NCCL_SHM_BYTES)


def main_process_bytes(params: int, micro_batch: int, img_size: int, prefetch: int = PREFETCH_DEFAULT) -> int:
    """Per rank: the training process on the host, incl. pinned buffers for prefetched batches."""
    return MAIN_PROCESS_BYTES + BYTES_PER_PARAM_HOST * params + prefetch * batch_bytes(micro_batch, img_size)


@dataclass(frozen=True)
class WorkerPlan:
    per_rank: int
    total: int
    requested: int
    bound_by: str
    caps: dict[str, int]
    reasons: list[str] = field(default_factory=list)
    worker_bytes: int = 0
    host_ram_needed: int = 0  # per node at the chosen count
    shm_needed: int = 0  # per node at the chosen count


def decide_workers(*, requested: int, ranks_per_node: int, micro_batch: int, img_size: int, num_images: int,
                   ram_bytes: int | None, cpus: int | None, shm_bytes: int | None, params: int = 0,
                   prefetch: int = PREFETCH_DEFAULT, user_max: int | None = None) -> WorkerPlan:
    """Workers per rank = min(requested, CPU cap, RAM cap, shm cap, user cap); says which cap bound."""
    if ranks_per_node < 1 or micro_batch < 1 or requested < 0:
        raise ValueError(f"ranks ({ranks_per_node}) and micro-batch ({micro_batch}) must be >= 1, "
                         f"requested workers ({requested}) >= 0")
    r = ranks_per_node
    w_bytes = worker_ram_bytes(micro_batch, img_size, num_images, prefetch)
    w_shm = shm_per_worker(micro_batch, img_size, prefetch)
    main = main_process_bytes(params, micro_batch, img_size, prefetch)
    caps: dict[str, int] = {}
    reasons: list[str] = []
    if cpus is not None:
        caps["cpus"] = max(0, cpus // r - 1)
        reasons.append(f"cpus: {cpus} CPUs / {r} ranks, one core kept for each training process -> "
                       f"{caps['cpus']} per rank")
    else:
        reasons.append("cpus: unknown (pass --cpus or a probed --hardware file)")
    if ram_bytes is not None:  # below doctor C8's 90%-of-usable warning line, so the plan passes its own doctor
        usable = PLAN_HEADROOM * RAM_USABLE_FRACTION * ram_bytes - r * main - r * NCCL_SHM_BYTES
        caps["host-ram"] = max(0, int(usable // (r * (w_bytes + w_shm))))
        reasons.append(
            f"host-ram: {PLAN_HEADROOM * RAM_USABLE_FRACTION:.1%} of {ram_bytes / GB:.1f} GB minus {r} x "
            f"{main / GB:.1f} GB training processes leaves {max(usable, 0) / GB:.1f} GB; each worker needs "
            f"{(w_bytes + w_shm) / GB:.2f} GB (base {WORKER_BASE_BYTES / GB:.2f} + dataset index "
            f"{INDEX_BYTES_PER_IMAGE * num_images / GB:.2f} copied on read + decode "
            f"{DECODE_SCRATCH_BYTES / GB:.3f}, measured + {prefetch} prefetched batches in shm) -> "
            f"{caps['host-ram']} per rank; not measured here: CUDA host memory per rank, pinned buffers, page cache "
            "charged to the container (a 24 GB run of the official code died at 12 per rank: these terms do not "
            "explain it)")
    else:
        reasons.append("host-ram: unknown (pass --host-ram: the container's limit, not the host's)")
    if shm_bytes is not None:
        caps["shm"] = max(0, int((shm_bytes - r * NCCL_SHM_BYTES) // (r * w_shm)))
        one = batch_bytes(micro_batch, img_size) / 1e6
        reasons.append(f"shm: {shm_bytes / GB:.2f} GB /dev/shm holds {prefetch} x {one:.1f} MB "
                       f"batches per worker -> {caps['shm']} per rank")
    if user_max is not None:
        caps["user"] = user_max
    chosen, bound = requested, "recipe"
    for name, cap in caps.items():
        if cap < chosen:
            chosen, bound = cap, name
    if chosen < requested:
        reasons.insert(0, f"{requested} per rank x {r} ranks = {requested * r} workers refused: "
                          f"bound by {bound}, {chosen} per rank ({chosen * r} in total)")
    else:
        reasons.insert(0, f"{requested} per rank as the recipe asks ({requested * r} in total)")
    need = node_host_bytes(r, chosen, params=params, micro_batch=micro_batch, img_size=img_size,
                           num_images=num_images, prefetch=prefetch)
    shm_need = r * (chosen * w_shm + NCCL_SHM_BYTES)
    return WorkerPlan(per_rank=chosen, total=chosen * r, requested=requested, bound_by=bound, caps=caps,
                      reasons=reasons, worker_bytes=worker_host_bytes(micro_batch, img_size, num_images, prefetch),
                      host_ram_needed=int(need),
                      shm_needed=int(shm_need))


def host_ram_shortfall(wp: WorkerPlan, *, ram_bytes: int | None, ranks_per_node: int) -> tuple[str, int] | None:
    """(why, ranks that would fit) when the training processes alone do not fit the host's RAM (even with
    0 workers), else None.

        >>> wp = decide_workers(requested=12, ranks_per_node=4, micro_batch=16, img_size=256, num_images=1281167,
        ...                     ram_bytes=8 * 10**9, cpus=None, shm_bytes=None, params=131_000_000)
        >>> why, fit = host_ram_shortfall(wp, ram_bytes=8 * 10**9, ranks_per_node=4)
        >>> fit, why[:80]
        (1, '4 training processes need 14.2 GB of host RAM with 0 DataLoader workers; 85% of ')
    """
    if ram_bytes is None or wp.per_rank > 0:
        return None
    usable = RAM_USABLE_FRACTION * ram_bytes
    if wp.host_ram_needed <= usable:
        return None
    per_rank = wp.host_ram_needed / ranks_per_node
    fit = int(usable // per_rank)
    return (f"{ranks_per_node} training processes need {wp.host_ram_needed / GB:.1f} GB of host RAM with 0 "
            f"DataLoader workers; {RAM_USABLE_FRACTION:.0%} of {ram_bytes / GB:.1f} GB is {usable / GB:.1f} GB "
            f"({per_rank / GB:.1f} GB per process: Python, torch, CUDA host libraries, the fp32 model, pinned "
            f"batches); {fit} would fit"), fit
