"""A small, valid Plan built by hand for provider tests (independent of the planner's own choices).

    plan = make_plan("RTX 3060", gpus=2)
"""

from __future__ import annotations

from jitmodel.config import DataConfig, ModelConfig, TrainConfig
from jitplan.hardware.catalog import lookup
from jitplan.hardware.schema import HardwareSpec, HostSpec
from jitplan.schemas import Estimates, LaunchSpec, Plan, WorkerDecision

GIB = 1024**3


def make_plan(gpu: str = "RTX 3060", gpus: int = 2, *, nodes: int = 1, host_ram_gib: float = 20,
              cpus: int | None = None, workers: int = 4, num_images: int = 1_281_167) -> Plan:
    spec = lookup(gpu)
    hw = HardwareSpec(nodes=nodes, gpus_per_node=gpus, gpu=spec,
                      host=HostSpec(cpus=cpus) if cpus else HostSpec(), source="flags")
    ref = HardwareSpec(nodes=1, gpus_per_node=8, gpu=lookup("H200"), source="catalog")
    train = TrainConfig(model=ModelConfig(variant="JiT-B/16"),
                        data=DataConfig(path="/data/imagenet", num_images=num_images, num_workers=workers),
                        batch_per_gpu=32, accum_steps=16 // gpus, world_size=gpus * nodes, epochs=600)
    params = 131_000_000
    est = Estimates(
        memory_per_gpu_bytes=int(10.5 * GIB), memory_breakdown=[], memory_target_bytes=int(10.8 * GIB),
        gpu_memory_bytes=spec.memory_bytes, host_ram_needed_bytes=int(host_ram_gib * GIB),
        host_ram_per_worker_bytes=int(1.5 * GIB), shm_needed_bytes=2 * GIB,
        train_flops_per_image=3 * 25e9, mfu=0.25, step_time_s=10.0, images_per_s=100.0,
        epoch_time_s=num_images / 100.0, total_time_s=600 * num_images / 100.0, eval_time_s=600.0, num_evals=16,
        checkpoint_bytes=5 * 4 * params, params=params, steps_per_epoch=num_images // 1024,
    )
    return Plan(
        recipe="JiT-B/16 ImageNet-256", policy="keep-batch", hardware=hw, reference_hardware=ref, train=train,
        estimates=est,
        workers=WorkerDecision(per_rank=workers, total=workers * gpus, requested=12, bound_by="cpus", caps={},
                               reasons=[]),
        rows=[], launch=LaunchSpec(nnodes=nodes, nproc_per_node=gpus, rdzv_backend="static", rdzv_endpoint=None,
                                   rdzv_id=None, argv=["torchrun", "--nproc-per-node", str(gpus)]),
        provenance={},
    )
