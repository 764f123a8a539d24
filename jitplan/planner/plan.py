"""``make_plan``: HardwareSpec + Recipe + PlanOptions -> Plan. Pure (no I/O, no torch).

    >>> from jitplan.hardware.spec import hardware_from_flags
    >>> from jitplan.schemas import PlanOptions, load_recipe
    >>> plan = make_plan(hardware_from_flags("2xRTX3060", host_ram="24GB"), load_recipe("JiT-B/16"), PlanOptions())
    >>> plan.train.batch_per_gpu, plan.train.accum_steps, plan.train.effective_batch()
    (32, 16, 1024)
    >>> plan.workers.per_rank, plan.workers.bound_by
    (12, 'recipe')
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence

from jitmodel.config import TrainConfig, effective_batch
from jitmodel.counts import param_breakdown, train_flops_per_image
from jitplan.calibration.records import CalibrationRecord
from jitplan.errors import CheckFailed, UsageError
from jitplan.hardware.schema import HardwareSpec
from jitplan.hardware.spec import hardware_from_flags
from jitplan.planner import calibration as calib
from jitplan.planner import compute, goal, machine, memory, scaling, strategy, timing, workers
from jitplan.planner.rows import build_rows, provenance
from jitplan.planner.step import plain_step, plan_offer, step_time  # noqa: F401  (plan.step_time: providers)
from jitplan.schemas import (
    Estimates,
    LaunchSpec,
    MemoryItem,
    Plan,
    PlanOptions,
    PlanRow,
    Recipe,
    TimeItem,
    WorkerDecision,
    load_recipe,
)


def memory_inputs(train: TrainConfig, world_size: int, options: PlanOptions | None = None,
                  accum: int | None = None, nvlink: bool = False) -> memory.MemoryInputs:
    """The memory model's inputs for a TrainConfig run on ``world_size`` ranks."""
    m = train.model
    return memory.MemoryInputs.for_model(
        m.variant, m.img_size, world_size=world_size, in_channels=m.in_channels, num_classes=m.num_classes,
        compile=train.compile, attention=m.attention, fused_adamw=train.optim.fused is not False,
        ddp_bucket_view=bool(options and options.ddp_bucket_view), num_emas=len(train.diffusion.ema_decays),
        accum=train.accum_steps if accum is None else accum, nvlink=nvlink)


def _infeasible(hw: HardwareSpec, inp: memory.MemoryInputs, target: int) -> CheckFailed:
    pred = memory.predict(inp, 1)
    every = dataclasses.replace(inp, accum=2)  # gradients counted: the whole fixed state, 24 B/param
    core = sum(i.bytes for i in memory.fixed_items(every) if i.name in ("weights", "gradients", "adamw state", "ema"))
    params = param_breakdown(inp.variant, inp.img_size).total
    gpu = hw.gpu
    assert gpu is not None
    return CheckFailed(
        f"{inp.variant.name} does not fit {gpu.name} ({gpu.memory_bytes / 1e9:.1f} GB): its fixed state alone is "
        f"{core / 1e9:.1f} GB ({core / params:.0f} B/param x {params / 1e6:.0f}M params: fp32 weights, grads, "
        f"AdamW m and v, {inp.num_emas} EMAs) and batch 1 needs {pred.total / 1e9:.1f} GB with activations, "
        f"DDP buckets and overheads > target {target / 1e9:.1f} GB",
        hint="options: a smaller variant (--recipe JiT-B/16), EMA on the CPU, sharding the state across GPUs "
             "(FSDP/ZeRO), or a bigger card (e.g. --gpus 1xRTX4090, 1xA100-80GB)",
    )


def catalog_key(name: str) -> str:
    """A catalog name as --gpus takes it: "RTX 3060 12GB" -> "RTX3060"."""
    return "".join(name.split()[:2]) if name.split()[-1].lower().endswith("gb") else "".join(name.split())


def _choose_batch(recipe: Recipe, options: PlanOptions, world: int, bmax: int) -> tuple[int, int, str]:
    """(micro_batch, accum, why) for the policy and overrides."""
    ref_eff = recipe.train.effective_batch()
    if options.policy == "keep-batch" or options.effective_batch is not None:
        target = options.effective_batch or ref_eff
        if options.batch_per_gpu is not None:
            b = options.batch_per_gpu
            accum = options.accum or math.ceil(target / (world * b))
            return b, accum, "--batch-per-gpu"
        if options.accum is not None:
            b = min(bmax, math.ceil(target / (world * options.accum)))
            return b, options.accum, "--accum"
        b, accum = scaling.choose_accumulation(target, world, bmax)
        return b, accum, f"largest split of {target} under the memory target"
    b = options.batch_per_gpu or min(bmax, recipe.train.batch_per_gpu)
    return b, options.accum or 1, "largest micro-batch under the memory target, no accumulation"


def make_plan(hardware: HardwareSpec, recipe: Recipe, options: PlanOptions,
              calibration: Sequence[CalibrationRecord] = (), advise: bool = True) -> Plan:
    """Adapt ``recipe`` to ``hardware``. CheckFailed (exit 1) when even batch 1 does not fit. ``calibration``:
    measured records (jitplan.calibration.records) that correct the priors (jitplan.planner.calibration).
    With --hours / --budget-usd the run is cut to the epochs that fit (jitplan.planner.goal)."""
    plan = _plan_once(hardware, recipe, options, calibration)
    limit = goal.available_s(plan, options)
    if limit is not None:
        epochs = goal.fit_epochs(plan, limit[0])
        if epochs <= 0:
            raise CheckFailed(f"nothing fits {limit[1]}: staging and one evaluation alone take longer",
                              hint="a larger --hours or --budget-usd, or online evaluation off")
        plan = _plan_once(hardware, recipe, options.model_copy(update={"epochs": epochs}), calibration)
        rows = [PlanRow(quantity=q, reference=r, target=t, why=w)
                for q, r, t, w in goal.goal_rows(plan, options, recipe.train.epochs, limit[1])]
        return plan.model_copy(update={"rows": [*plan.rows, *rows]})
    if advise and options.epochs is None:
        def other(gpus: str, slug: str) -> Plan | None:
            try:
                return make_plan(hardware_from_flags(gpus), load_recipe(slug), options.model_copy(
                    update={"price_per_hour": None, "batch_per_gpu": None, "accum": None}), calibration,
                    advise=False)
            except (CheckFailed, UsageError):
                return None

        more = goal.too_long(plan, recipe.slug, recipe.train.model.variant, other)
        return plan.model_copy(update={"warnings": [*plan.warnings, *more]}) if more else plan
    return plan


def _plan_once(hardware: HardwareSpec, recipe: Recipe, options: PlanOptions,
               calibration: Sequence[CalibrationRecord]) -> Plan:
    if hardware.gpu is None or hardware.gpus_per_node < 1:
        raise UsageError("jitplan plan needs GPUs: give --gpus (e.g. 2xRTX3060) or a probed --hardware file")
    gpu, world = hardware.gpu, hardware.world_size
    ref = recipe.train
    compile_ = ref.compile if options.compile is None else options.compile
    attention = options.attention or ref.model.attention
    base = goal.adapt(ref.model_copy(update={
        "compile": compile_, "world_size": world,
        "model": ref.model.model_copy(update={"attention": attention}),
    }), recipe, options)
    target = int(options.memory_fraction * gpu.memory_bytes)
    n_img = base.data.planned_images
    if options.effective_batch is None and n_img < 2 * ref.effective_batch():  # a small dataset: a batch it holds
        options = options.model_copy(update={"effective_batch": max(world, 2 ** int(math.log2(max(n_img // 2, 1))))})
    # The memory strategy (#14): the fastest that fits, or --strategy; precision: fp16 where the card lacks bf16
    base = base.model_copy(update={"precision": strategy.precision_for(gpu, ref.precision)})
    choice, cands = strategy.choose_for(base, world, hardware, options, target,
                                        lambda a: memory_inputs(base, world, options, accum=a, nvlink=gpu.nvlink),
                                        lambda bm: _choose_batch(recipe, options, world, bm),
                                        lambda b, a: plain_step(hardware, base.model_copy(
                                            update={"batch_per_gpu": b, "accum_steps": a}), options))
    base = base.model_copy(update={"memory": choice.memory})
    # Two regimes: without accumulation the gradients are not under the forward peak; with it they are.
    inp1 = memory_inputs(base, world, options, accum=1, nvlink=gpu.nvlink)
    inp = memory_inputs(base, world, options, accum=2, nvlink=gpu.nvlink)
    bmax1 = strategy.max_micro_batch(inp1, base.memory, target)
    bmax = strategy.max_micro_batch(inp, base.memory, target)
    if bmax1 < 1:
        raise _infeasible(hardware, inp1, target)
    b, accum, batch_why = _choose_batch(recipe, options, world, bmax1)
    if accum > 1:
        if bmax < 1:
            raise _infeasible(hardware, inp, target)
        b, accum, batch_why = _choose_batch(recipe, options, world, bmax)
    else:
        bmax = bmax1
    inp = memory_inputs(base, world, options, accum=accum, nvlink=gpu.nvlink)
    pred = strategy.predict(inp, base.memory, b)
    if pred.total > target:
        raise CheckFailed(f"micro-batch {b} needs {pred.total / 1e9:.1f} GB per GPU > target {target / 1e9:.1f} GB "
                          f"({options.memory_fraction:.0%} of {gpu.memory_bytes / 1e9:.1f} GB); the largest that "
                          f"fits is {bmax}", hint=f"use --batch-per-gpu {bmax} or less")
    eff = effective_batch(b, accum, world)
    ref_eff = ref.effective_batch()
    kappa = eff / ref_eff

    # ---- hyper-parameters ----
    optim, diffusion = base.optim, base.diffusion
    if options.policy == "scale-lr":
        hp = scaling.scale_hparams(ref.lr, ref.optim.betas, ref.optim.eps, ref.diffusion.ema_decays, kappa,
                                   options.lr_scaling)
        optim = optim.model_copy(update={"lr": hp.lr, "betas": hp.betas, "eps": hp.eps})
        diffusion = diffusion.model_copy(update={"ema_decays": hp.ema_decays})

    # ---- workers ----
    params = param_breakdown(inp.variant, inp.img_size, inp.num_classes)
    num_images = base.data.planned_images
    wp = workers.decide_workers(
        requested=ref.data.num_workers, ranks_per_node=hardware.gpus_per_node, micro_batch=b,
        img_size=ref.model.img_size, num_images=num_images, ram_bytes=hardware.host.ram_bytes,
        cpus=hardware.host.cpus, shm_bytes=hardware.host.shm_bytes, params=params.total,
        prefetch=ref.data.prefetch_factor or workers.PREFETCH_DEFAULT, user_max=options.max_workers)
    short = workers.host_ram_shortfall(wp, ram_bytes=hardware.host.ram_bytes, ranks_per_node=hardware.gpus_per_node)
    if short:
        need = math.ceil(wp.host_ram_needed / workers.RAM_USABLE_FRACTION / 1e9)
        fewer = f" (--gpus {short[1]}x{catalog_key(gpu.name)})" if short[1] else ""
        raise CheckFailed(short[0], hint=f"options: a host or container limit of at least {need} GB (--host-ram "
                                         f"{need}GB), or fewer GPUs per node{fewer}")
    data = base.data.model_copy(update={"path": options.data_path or ref.data.path}).with_workers(wp.per_rank)

    train = TrainConfig.model_validate({
        **base.model_dump(), "batch_per_gpu": b, "accum_steps": accum, "world_size": world,
        "optim": optim.model_dump(), "diffusion": diffusion.model_dump(), "data": data.model_dump(),
    })

    est = estimate(hardware, train, pred, wp, options, target)
    est = strategy.adjust_estimates(est, inp, train.memory, plain_step(hardware, train, options)[0], accum=accum,
                                    epochs=train.epochs)
    calib_note = None
    if calibration:
        m = train.model
        est, calib_note = calib.apply(est, calibration, gpu=gpu, variant=m.variant, img_size=m.img_size,
                                      compile=train.compile, attention=m.attention, batch_per_gpu=b, accum=accum,
                                      world_size=world, nodes=hardware.nodes, epochs=train.epochs)
    est, machine_notes = machine.finish(est, hardware, train, options, lambda link: step_time(
        hardware, train, options, link=link)[0].total_s)
    # The trainer holds the timeout only because it evaluates in the chunks the timeout was sized for.
    train = train.model_copy(update={"dist_timeout_s": est.dist_timeout_s, "eval": train.eval.model_copy(
        update={"chunk_images": est.eval_chunk_images})})
    ref_est = reference_estimates(recipe)
    warnings = [*goal.dataset_notes(recipe, options), *machine_notes, *([calib_note] if calib_note else [])]
    gap = calib.known_gap(calibration) if calibration and est.time_source == "prior" else None
    if gap is not None and gap[0] > 1.15:
        warnings.append(f"time is a prior: where it was measured ({gap[1].describe()}) a step took "
                        f"{gap[0]:.2f}x what the priors predict; expect longer, and replace the prior with a short "
                        "run of your own (jitplan calibrate)")
    if est.memory_per_gpu_bytes > target:
        warnings.append(f"calibrated memory {est.memory_per_gpu_bytes / 2**30:.1f} GiB per GPU exceeds the target "
                        f"{target / 2**30:.1f} GiB ({est.memory_calibration}): lower --batch-per-gpu")
    if wp.per_rank < wp.requested:
        warnings.append(wp.reasons[0])
    if options.policy == "keep-batch" and eff != (options.effective_batch or ref_eff):
        warnings.append(f"effective batch {eff} is {eff - (options.effective_batch or ref_eff)} above the target "
                        f"{options.effective_batch or ref_eff} (no exact split); LR follows blr x {eff}/256")
    plan = Plan(
        recipe=recipe.slug, policy=options.policy,
        lr_scaling=options.lr_scaling if options.policy == "scale-lr" else None,
        hardware=hardware, reference_hardware=recipe.hardware, train=train, estimates=est,
        workers=WorkerDecision(per_rank=wp.per_rank, total=wp.total, requested=wp.requested,
                               bound_by=wp.bound_by, caps=wp.caps, reasons=wp.reasons),
        rows=[], launch=launch_spec(hardware, options, recipe.slug),
        provenance=provenance(hardware, recipe, options, est, batch_why, bmax), warnings=warnings,
    )
    extra = [PlanRow(quantity=q, reference=r, target=t, why=w)
             for q, r, t, w in strategy.rows(choice, cands, forced=options.strategy is not None,
                                                   precision=(ref.precision, train.precision, gpu.name))]
    return plan.model_copy(update={"rows": build_rows(plan, recipe, ref_est, kappa) + extra})


def estimate(hardware: HardwareSpec, train: TrainConfig, pred: memory.MemoryPrediction, wp: workers.WorkerPlan,
             options: PlanOptions, target: int) -> Estimates:
    """Time, memory, host and cost estimates of a TrainConfig on ``hardware`` (priors: jitplan.planner.timing)."""
    gpu = hardware.gpu
    assert gpu is not None
    m = train.model
    v = m.spec
    world = hardware.world_size
    params = param_breakdown(v, m.img_size, m.num_classes)
    flops = train_flops_per_image(v, m.img_size, m.in_channels, m.attention)
    st, spe = step_time(hardware, train, options)
    step = st.total_s
    images_per_gpu_step = effective_batch(train.batch_per_gpu, train.accum_steps, 1)
    ips = train.effective_batch(world) / step
    epoch_time = spe * step
    ev = train.eval
    eval_time = timing.eval_time_s(v, gpu, num_images=ev.num_images, nfe=timing.nfe(train.sample.steps,
                                   train.sample.method), world_size=world, img_size=m.img_size,
                                   attention=m.attention, compile=train.compile)
    n_evals = compute.num_evals(train.epochs, ev.every_epochs, ev.at_epoch0, ev.online)
    total = train.epochs * epoch_time + n_evals * eval_time
    items = [MemoryItem(name=i.name, bytes=i.bytes, why=i.why) for i in pred.items]
    return Estimates(
        memory_per_gpu_bytes=pred.total, memory_breakdown=items, memory_target_bytes=target,
        gpu_memory_bytes=gpu.memory_bytes, host_ram_needed_bytes=wp.host_ram_needed,
        host_ram_per_worker_bytes=wp.worker_bytes, shm_needed_bytes=wp.shm_needed,
        train_flops_per_image=flops, mfu=round(images_per_gpu_step * flops / (step * gpu.bf16_tflops * 1e12), 4),
        step_time_s=step, images_per_s=ips, epoch_time_s=epoch_time,
        total_time_s=total, eval_time_s=eval_time, num_evals=n_evals,
        checkpoint_bytes=compute.checkpoint_bytes(params.total, len(train.diffusion.ema_decays)),
        params=params.trainable, steps_per_epoch=spe,
        step_breakdown=[TimeItem(name=t.name, seconds=t.seconds, why=t.why) for t in st.terms],
        dist_timeout_s=train.dist_timeout_s,
    )


def reference_estimates(recipe: Recipe) -> Estimates:
    """The same estimates for the recipe on its own hardware (the table's reference column)."""
    hw, train = recipe.hardware, recipe.train
    assert hw.gpu is not None
    pred = memory.predict(memory_inputs(train, hw.world_size, nvlink=hw.gpu.nvlink), train.batch_per_gpu)
    n_img = train.data.planned_images
    wp = workers.decide_workers(requested=train.data.num_workers, ranks_per_node=hw.gpus_per_node,
                                micro_batch=train.batch_per_gpu, img_size=train.model.img_size, num_images=n_img,
                                ram_bytes=None, cpus=None, shm_bytes=None)
    assert hw.gpu is not None
    return estimate(hw, train, pred, wp, PlanOptions(), int(0.9 * hw.gpu.memory_bytes))


def launch_spec(hardware: HardwareSpec, options: PlanOptions, slug: str) -> LaunchSpec:
    """How the run starts, as data (nodes x processes, rendezvous, the config every rank reads); the
    command is rendered from it above the planner (``jitplan.launch.torchrun.plan_command``)."""
    n, g = hardware.nodes, hardware.gpus_per_node
    if n == 1:
        return LaunchSpec(nnodes=1, nproc_per_node=g, rdzv_backend="static", rdzv_endpoint=None, rdzv_id=None,
                          config=options.config_path)
    rid = "jit-" + hashlib.sha1(f"{slug}:{n}x{g}:{options.rdzv_endpoint}".encode()).hexdigest()[:8]
    return LaunchSpec(nnodes=n, nproc_per_node=g, rdzv_backend="c10d", rdzv_endpoint=options.rdzv_endpoint,
                      rdzv_id=rid, config=options.config_path)


