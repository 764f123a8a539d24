"""A traced model's plan as a run: ``TracedPlan`` (what the trace and the strategy search chose) -> ``Plan``, the
file ``jitplan launch`` runs and ``jitmodel.train --config`` reads. Pure (no I/O, no torch).

The plan's ``train`` names the factory (``model.factory``, its arguments, the module's own sizes) and carries the
traced choice: micro-batch x accumulation x GPUs, the memory strategy, the card's precision; its ``estimates``
are the traced memory and the prior step time (what the trainer's re-plan compares its measured steps with);
the data loader workers are capped by the host as for JiT (``planner.workers``). A published family recipe
(``dit-xl-2``) adds its reference run's optimiser, objective and length.

    >>> from jitplan.hardware.spec import hardware_from_flags
    >>> from jitplan.planner.model_profile import ModelProfile
    >>> from jitplan.planner.traced_plan import plan_traced
    >>> p = ModelProfile(spec="jitmodel.archs.dit:dit", digest="d" * 64, in_channels=4, input_size=32,
    ...                  num_classes=1000, params=130_000_000, trainable=130_000_000, matmul_params=129_000_000,
    ...                  largest_block_params=7_000_000, root_params=2_000_000, blocks=12, buffer_bytes=0,
    ...                  fixed_bytes=3_000_000_000, act_per_sample=120e6, act_per_sample_ckpt=20e6,
    ...                  step_peak_bytes=3_200_000_000, flops_per_image=1.4e11, traffic_per_image=3e9,
    ...                  batches=(8, 16), trace_s=3.0, torch="2.13.0")
    >>> hw = hardware_from_flags("2xRTX4090", host_ram="64GB", cpus=16)
    >>> tp = plan_traced(p, hw, effective_batch=256)
    >>> plan = traced_run_plan(tp, p, hw, spec="jitmodel.archs.dit:dit", kwargs={})
    >>> plan.train.model.factory, plan.train.effective_batch() == tp.effective_batch, plan.launch.nproc_per_node
    ('jitmodel.archs.dit:dit', True, 2)
    >>> plan.estimates.memory_source, plan.estimates.step_time_s == tp.step_time_s
    ('trace', True)
"""

from __future__ import annotations

import math
from typing import Any

from jitmodel.config import IMAGENET_TRAIN_IMAGES, TrainConfig
from jitplan.errors import CheckFailed
from jitplan.hardware.schema import HardwareSpec
from jitplan.planner import compute, strategy_memory, workers
from jitplan.planner.family import FamilyRecipe
from jitplan.planner.model_profile import ModelProfile
from jitplan.planner.plan import catalog_key, launch_spec
from jitplan.planner.traced_plan import TracedPlan
from jitplan.schemas import Estimates, MemoryItem, Plan, PlanOptions, PlanRow, TimeItem, WorkerDecision

DEFAULT_DATA = "./data/imagenet"
DEFAULT_LATENTS = "./data/imagenet-latents"  # a latent recipe reads what `jitplan data encode` wrote
REQUESTED_WORKERS = 12  # as JiT's recipes: capped by the host below


def _train(tp: TracedPlan, prof: ModelProfile, *, spec: str, kwargs: dict[str, Any], rec: FamilyRecipe | None,
           latent: bool, data_path: str, num_images: int, workers_per_rank: int) -> TrainConfig:
    data: dict[str, Any] = {"kind": "latents" if latent else "imagefolder", "path": data_path,
                            "num_images": num_images, "num_workers": workers_per_rank}
    if latent:  # the mirror images are encoded (data encode --hflip), never flipped latents
        data["hflip"] = False
    raw: dict[str, Any] = {
        "model": {"factory": spec, "factory_kwargs": kwargs, "img_size": prof.input_size,
                  "in_channels": prof.in_channels, "num_classes": prof.num_classes},
        "data": data,
        "batch_per_gpu": tp.micro_batch, "accum_steps": tp.accum_steps, "world_size": tp.world_size,
        "precision": tp.precision, "memory": strategy_memory.parse(tp.strategy).model_dump(),
        "eval": {"online": False},
    }
    if rec is not None:  # the published run's optimiser, objective and length
        r, o = rec.reference, rec.objective
        raw["optim"] = {"lr": r.lr, "betas": list(r.betas), "weight_decay": r.weight_decay, "warmup_epochs": 0.0}
        raw["diffusion"] = {"prediction": o.prediction, "loss_space": o.prediction, "ema_decays": [r.ema, 0.9996]}
        raw["epochs"] = round(r.steps * r.batch / num_images, 2)
    return TrainConfig.model_validate(raw)


def _estimates(tp: TracedPlan, prof: ModelProfile, hw: HardwareSpec, train: TrainConfig,
               wp: workers.WorkerPlan, price_per_hour: float | None) -> Estimates:
    gpu = hw.gpu
    assert gpu is not None
    spe = max(1, math.ceil(train.data.planned_images / tp.effective_batch))
    epoch_s = spe * tp.step_time_s
    total = train.epochs * epoch_s
    per_gpu_step = tp.micro_batch * tp.accum_steps
    return Estimates(
        memory_per_gpu_bytes=tp.memory_per_gpu_bytes,
        memory_breakdown=[MemoryItem(name=p.name, bytes=int(p.value), why=p.why) for p in tp.memory_breakdown],
        memory_target_bytes=tp.memory_target_bytes, gpu_memory_bytes=tp.gpu_memory_bytes, memory_source="trace",
        host_ram_needed_bytes=wp.host_ram_needed, host_ram_per_worker_bytes=wp.worker_bytes,
        shm_needed_bytes=wp.shm_needed, train_flops_per_image=tp.train_flops_per_image,
        mfu=round(per_gpu_step * tp.train_flops_per_image / (tp.step_time_s * gpu.bf16_tflops * 1e12), 4),
        step_time_s=tp.step_time_s, images_per_s=tp.images_per_s, epoch_time_s=epoch_s, total_time_s=total,
        eval_time_s=0.0, num_evals=0, checkpoint_bytes=compute.checkpoint_bytes(prof.params,
                                                                                len(train.diffusion.ema_decays)),
        cost_usd=compute.cost_usd(total, price_per_hour, hw.nodes), params=prof.trainable, steps_per_epoch=spe,
        step_breakdown=[TimeItem(name=p.name, seconds=p.value, why=p.why) for p in tp.step_breakdown],
        time_source="prior", dist_timeout_s=train.dist_timeout_s)


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def _rows(tp: TracedPlan, ref: TracedPlan | None, rec: FamilyRecipe | None, train: TrainConfig) -> list[PlanRow]:
    def col(p: TracedPlan | None, f: Any) -> str:
        return "-" if p is None else f(p)

    why_batch = (f"the reference's batch {rec.reference.batch} kept: micro-batch x accumulation x GPUs"
                 if rec else "the effective batch asked for, split under the memory target")
    rows = [
        ("GPUs", col(ref, lambda p: f"{p.world_size} x {p.gpu}"), f"{tp.world_size} x {tp.gpu}", "--gpus"),
        ("memory strategy", col(ref, lambda p: p.strategy), tp.strategy,
         "the fastest that fits the target (within 2% the simpler one)"),
        ("micro-batch x accum", col(ref, lambda p: f"{p.micro_batch} x {p.accum_steps}"),
         f"{tp.micro_batch} x {tp.accum_steps}", f"largest that fits: {tp.max_micro_batch}"),
        ("effective batch", col(ref, lambda p: str(p.effective_batch)), str(tp.effective_batch), why_batch),
        ("lr", f"{rec.reference.lr:g}" if rec else "-", f"{train.lr:g}",
         "the reference's (same batch)" if rec else "blr x batch / 256 (jitmodel's default)"),
        ("memory per GPU", col(ref, lambda p: _gb(p.memory_per_gpu_bytes)), _gb(tp.memory_per_gpu_bytes),
         "traced on fake tensors + the analytic overheads"),
        ("step time", col(ref, lambda p: f"{p.step_time_s:.3f} s"), f"{tp.step_time_s:.3f} s",
         "a prior: traced FLOPs and traffic at the card's rates"),
        ("images/s", col(ref, lambda p: f"{p.images_per_s:,.0f}"), f"{tp.images_per_s:,.0f}", "all GPUs"),
    ]
    return [PlanRow(quantity=q, reference=r, target=t, why=w) for q, r, t, w in rows]


def traced_run_plan(tp: TracedPlan, prof: ModelProfile, hw: HardwareSpec, *, spec: str, kwargs: dict[str, Any],
                    rec: FamilyRecipe | None = None, ref: TracedPlan | None = None,
                    options: PlanOptions | None = None, data_path: str | None = None,
                    num_images: int | None = None, reference_hw: HardwareSpec | None = None) -> Plan:
    """The launchable plan of a traced model; CheckFailed when the host cannot hold even the fewest workers."""
    options = options or PlanOptions()
    n_img = num_images or IMAGENET_TRAIN_IMAGES  # the family recipes' dataset, unless --data says
    wp = workers.decide_workers(
        requested=REQUESTED_WORKERS, ranks_per_node=hw.gpus_per_node, micro_batch=tp.micro_batch,
        img_size=prof.input_size, num_images=n_img, ram_bytes=hw.host.ram_bytes, cpus=hw.host.cpus,
        shm_bytes=hw.host.shm_bytes, params=prof.params, user_max=options.max_workers)
    short = workers.host_ram_shortfall(wp, ram_bytes=hw.host.ram_bytes, ranks_per_node=hw.gpus_per_node)
    if short:
        need = math.ceil(wp.host_ram_needed / workers.RAM_USABLE_FRACTION / 1e9)
        fewer = f" (--gpus {short[1]}x{catalog_key(hw.gpu.name)})" if short[1] and hw.gpu else ""
        raise CheckFailed(short[0], hint=f"options: a host or container limit of at least {need} GB (--host-ram "
                                         f"{need}GB), or fewer GPUs per node{fewer}")
    latent = rec is not None and rec.space.kind == "latent"
    train = _train(tp, prof, spec=spec, kwargs=kwargs, rec=rec, latent=latent,
                   data_path=data_path or (DEFAULT_LATENTS if latent else DEFAULT_DATA), num_images=n_img,
                   workers_per_rank=wp.per_rank)
    est = _estimates(tp, prof, hw, train, wp, options.price_per_hour)
    warnings = list(tp.warnings)
    if rec is not None and rec.objective.path == "ddpm":
        warnings.append(f"{rec.name} was published on DDPM's noise schedule; jitmodel trains the linear (flow "
                        f"matching) path with the same {rec.objective.prediction}-prediction")
    if wp.per_rank < wp.requested:
        warnings.append(wp.reasons[0])
    if latent and rec is not None and rec.space.autoencoder is not None:
        warnings.append(f"the run reads latents at {train.data.path}: encode the images once first, jitplan data "
                        f"encode IMAGES --out {train.data.path} --vae PATH ({rec.space.autoencoder.name}'s weights; "
                        f"--hflip for the mirrors), or plan with --data pointing at an encoded folder")
    warnings.append("online FID evaluation is off for a traced model (its time is not planned); sample from a "
                    "checkpoint with jitmodel sample")
    slug = rec.slug if rec else spec
    return Plan(recipe=rec.slug if rec else f"model {spec}", policy="keep-batch", hardware=hw,
                reference_hardware=reference_hw or hw, train=train, estimates=est,
                workers=WorkerDecision(per_rank=wp.per_rank, total=wp.total, requested=wp.requested,
                                       bound_by=wp.bound_by, caps=wp.caps, reasons=wp.reasons),
                rows=_rows(tp, ref, rec, train), launch=launch_spec(hw, options, slug),
                provenance={"model": "--model" if rec is None else f"recipe {rec.slug}",
                            "batch_per_gpu": "traced memory (strategy search)", "accum_steps": "derived",
                            "memory": "traced memory (strategy search)", "step_time_s": "prior (traced FLOPs)",
                            "num_workers": f"capped by {wp.bound_by}"},
                warnings=warnings)
