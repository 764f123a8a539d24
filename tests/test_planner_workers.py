"""DataLoader workers: per rank and in total, capped by CPUs, host RAM and /dev/shm."""

from __future__ import annotations

import pytest

from jitplan.planner.workers import decide_workers, worker_ram_bytes

IMAGENET = 1_281_167


def seed(**kw):
    args = dict(requested=12, ranks_per_node=2, micro_batch=32, img_size=256, num_images=IMAGENET,
                ram_bytes=24 * 10**9, cpus=None, shm_bytes=None, params=131_320_000)
    args.update(kw)
    return decide_workers(**args)


def test_seed_case_refuses_twelve_per_gpu():
    d = seed()
    assert d.per_rank < 12 and d.bound_by == "host-ram"
    assert d.total == 2 * d.per_rank
    assert "24 workers refused" in d.reasons[0] and "host-ram" in d.reasons[0]
    assert d.host_ram_needed <= 24 * 10**9


def test_needed_ram_grows_with_workers_and_fits_the_cap():
    d = seed(ram_bytes=None)
    assert d.per_rank == 12 and d.bound_by == "recipe"
    assert seed(ram_bytes=None).host_ram_needed > seed().host_ram_needed


def test_cpu_cap():
    d = seed(ram_bytes=None, cpus=8)
    assert (d.per_rank, d.bound_by) == (3, "cpus")


def test_shm_cap_docker_default():
    d = seed(ram_bytes=None, shm_bytes=64 * 10**6)
    assert d.bound_by == "shm" and d.per_rank == 0


def test_user_cap_and_tightest_wins():
    d = seed(user_max=2)
    assert (d.per_rank, d.bound_by) == (2, "user")
    d = seed(cpus=4)
    assert (d.per_rank, d.bound_by) == (1, "cpus")


def test_dataset_index_is_copied_per_worker():
    assert worker_ram_bytes(32, 256, IMAGENET) - worker_ram_bytes(32, 256, 0) == 208 * IMAGENET


def test_bad_inputs():
    with pytest.raises(ValueError, match="ranks"):
        seed(ranks_per_node=0)
