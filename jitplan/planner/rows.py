"""The side-by-side rows of a plan: quantity, reference, target, why. Pure formatting of numbers.

    >>> fmt_duration(3600 * 30), fmt_bytes(12.9e9), fmt_duration(95), fmt_bytes(525e6)
    ('1.2 d', '12.9 GB (12.0 GiB)', '1.6 min', '525 MB (501 MiB)')
"""

from __future__ import annotations

from jitplan.hardware.schema import HardwareSpec
from jitplan.planner.scaling import warmup_steps
from jitplan.schemas import Estimates, Plan, PlanOptions, PlanRow, Recipe


def fmt_bytes(n: float) -> str:
    """Decimal units beside binary ones: plans say GB, nvidia-smi and torch say MiB/GiB."""
    if n >= 1e9:
        return f"{n / 1e9:.1f} GB ({n / 2**30:.1f} GiB)"
    return f"{n / 1e6:.0f} MB ({n / 2**20:.0f} MiB)"


def fmt_duration(s: float) -> str:
    if s < 120:
        return f"{s / 60:.1f} min" if s >= 60 else f"{s:.1f} s"
    if s < 2 * 3600:
        return f"{s / 60:.0f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h" if s < 86400 else f"{s / 86400:.1f} d"
    return f"{s / 86400:.1f} d"


def _hw(hw: HardwareSpec) -> str:
    assert hw.gpu is not None
    count = f"{hw.nodes}x{hw.gpus_per_node}" if hw.nodes > 1 else f"{hw.gpus_per_node}"
    return f"{count} x {hw.gpu.name}"


def _mem(est: Estimates) -> str:
    return f"{fmt_bytes(est.memory_per_gpu_bytes)}, {est.memory_per_gpu_bytes / est.gpu_memory_bytes:.0%}"


def build_rows(plan: Plan, recipe: Recipe, ref: Estimates, kappa: float) -> list[PlanRow]:
    t, r = plan.train, recipe.train
    est, hw, rhw = plan.estimates, plan.hardware, recipe.hardware
    assert hw.gpu is not None and rhw.gpu is not None
    rows: list[tuple[str, str, str, str]] = []
    add = rows.append
    add(("GPUs", _hw(rhw), _hw(hw), plan.provenance.get("gpu", "")))
    add(("total GPU memory", fmt_bytes(rhw.world_size * rhw.gpu.memory_bytes),
         fmt_bytes(hw.world_size * hw.gpu.memory_bytes), "memory as NVML reports it x GPUs"))
    add(("model", r.model.variant, t.model.variant,
         f"{est.params / 1e6:.2f}M trainable params; {est.train_flops_per_image / 1e9:.1f} GFLOP per training image"))
    add(("resolution", f"{r.model.img_size} px", f"{t.model.img_size} px", "from the recipe"))
    add(("dataset", f"{r.data.num_images or 0:,} images", f"{t.data.num_images or 0:,} images",
         f"{t.data.kind} at {t.data.path}"))
    add(("compile / attention", f"{r.compile} / {r.model.attention}", f"{t.compile} / {t.model.attention}",
         plan.provenance.get("compile", "") + " / " + plan.provenance.get("attention", "")))
    add(("batch per GPU", str(r.batch_per_gpu), str(t.batch_per_gpu), plan.provenance.get("batch_per_gpu", "")))
    add(("gradient accumulation", str(r.accum_steps), str(t.accum_steps), plan.provenance.get("accum_steps", "")))
    eff, reff = t.effective_batch(), r.effective_batch()
    eff_why = (f"{t.batch_per_gpu} x {t.accum_steps} x {hw.world_size} GPUs = {eff}"
               + (" (kept exactly)" if eff == reff else f" ({kappa:.3g} x the reference)"))
    add(("effective batch", str(reff), str(eff), eff_why))
    add(("learning rate", f"{r.lr:.3g}", f"{t.lr:.3g}", plan.provenance.get("lr", "")
         + ("" if plan.policy == "keep-batch" else f"; linear would give {r.lr * kappa:.3g}")))
    add(("Adam betas", _pair(r.optim.betas), _pair(t.optim.betas),
         "unchanged" if t.optim.betas == r.optim.betas else "sqrt rule: 1 - kappa(1 - beta) (Malladi et al. 2022)"))
    add(("EMA decays", _pair(r.diffusion.ema_decays), _pair(t.diffusion.ema_decays),
         "one update per optimizer step, unchanged" if t.diffusion.ema_decays == r.diffusion.ema_decays
         else "rho^kappa keeps the EMA horizon in images (Busbridge et al. 2023)"))
    ref_spe = ref.steps_per_epoch
    add(("warmup steps", f"{warmup_steps(r.optim.warmup_epochs, ref_spe):,}",
         f"{warmup_steps(t.optim.warmup_epochs, est.steps_per_epoch):,}",
         f"{t.optim.warmup_epochs:g} epochs x {est.steps_per_epoch:,} optimizer steps/epoch"))
    add(("memory per GPU", _mem(ref), _mem(est),
         f"predicted peak as nvidia-smi shows it; target {fmt_bytes(est.memory_target_bytes)}; see the breakdown; "
         f"{est.memory_calibration}"))
    add(("step time", f"{ref.step_time_s:.2f} s", f"{est.step_time_s:.2f} s", _split(est)))
    add(("workers per GPU (total)", f"{r.data.num_workers} ({r.data.num_workers * rhw.gpus_per_node})",
         f"{plan.workers.per_rank} ({plan.workers.total})", plan.workers.reasons[0]))
    add(("host RAM needed per node", "-", fmt_bytes(est.host_ram_needed_bytes),
         f"{fmt_bytes(est.host_ram_per_worker_bytes)} per worker (docs/planning.md \"DataLoader workers\")"))
    add(("images/s", f"{ref.images_per_s:,.0f}", f"{est.images_per_s:,.0f}",
         f"{est.time_source}; implied MFU {est.mfu:.0%} of {hw.gpu.bf16_tflops:g} dense bf16 TFLOPS per GPU"))
    add(("epoch time", fmt_duration(ref.epoch_time_s), fmt_duration(est.epoch_time_s),
         f"{est.steps_per_epoch:,} steps x {est.step_time_s:.2f} s; {est.time_source}"))
    add((f"time to {t.epochs:g} epochs", fmt_duration(ref.total_time_s), fmt_duration(est.total_time_s),
         f"training + {est.num_evals} online evaluations"))
    add(("evaluation time", fmt_duration(ref.eval_time_s), fmt_duration(est.eval_time_s),
         f"{t.eval.num_images:,} images x Heun {t.sample.steps} (NFE {2 * t.sample.steps - 1}) x 2 forwards (CFG); "
         "the time model (a training record does not measure it)"))
    if est.link:
        rng = (f"; unmeasured: epoch {fmt_duration(est.epoch_range_s[0])} (x16) ... "
               f"{fmt_duration(est.epoch_range_s[1])}"
               " (x1)" if est.epoch_range_s else "")
        add(("all-reduce link", "NVLink", est.link.split(":")[0], est.link + rng))
    if est.staging_s is not None:
        add(("dataset download", "-", fmt_duration(est.staging_s), f"{t.data.planned_images:,} JPEGs x 108 KB at "
             f"{hw.host.download_mbps:g} Mbit/s ({hw.host.figures_source or 'given'}); counted in time and cost"))
    if hw.world_size > 1:
        timeout = est.dist_timeout_s or 1800
        chunk = (f"; online evaluation in chunks of {est.eval_chunk_images:,} images per rank (~"
                 f"{fmt_duration(est.eval_chunk_s or 0)}), a barrier after each" if est.eval_chunk_images else "")
        add(("process-group timeout", "30 min", fmt_duration(timeout),
             f"max(20 x the {est.step_time_s:.2f} s step, 2.5 x one evaluation chunk, 10 min), at most 60 min: a "
             f"hung collective is caught in minutes (train.dist_timeout_s -> init_process_group){chunk}"))
    add(("checkpoint size", fmt_bytes(ref.checkpoint_bytes), fmt_bytes(est.checkpoint_bytes),
         "model + 2 EMAs + AdamW moments, fp32"))
    add(("cost", "-", f"${est.cost_usd:,.0f}" if est.cost_usd is not None else "-",
         f"{est.price_source}; ${est.price_per_hour:.2f}/h x total time" if est.cost_usd is not None
         and est.price_per_hour is not None else f"{est.price_source or 'no price'}"))
    return [PlanRow(quantity=q, reference=a, target=b, why=w) for q, a, b, w in rows]


def _split(est: Estimates) -> str:
    """The biggest terms of the step, e.g. "tensor 159 ms + elementwise traffic 102 ms + ...; prior"."""
    terms = sorted(est.step_breakdown, key=lambda t: -t.seconds)
    shown = " + ".join(f"{t.name} {t.seconds * 1e3:.0f} ms" for t in terms[:4] if t.seconds > 0)
    more = " + ..." if len([t for t in terms if t.seconds > 0]) > 4 else ""
    return f"{shown}{more}; {est.time_source}"


def _pair(p: tuple[float, ...]) -> str:
    return ", ".join(f"{x:g}" for x in p)


def provenance(hw: HardwareSpec, recipe: Recipe, options: PlanOptions, est: Estimates, batch_why: str,
               bmax: int) -> dict[str, str]:
    gpu = hw.gpu
    assert gpu is not None
    src = {"catalog": "catalog", "flags": "flags", "file": "hardware file", "probe": "probe"}[hw.source]
    host = hw.host

    def host_src(value: object, flag: str) -> str:
        return f"{src} ({flag})" if value is not None else "unknown (not given; the cap is not applied)"

    return {
        "recipe": f"jitplan/templates/recipes/{recipe.slug}.yaml ({recipe.source})",
        "gpu": f"{src}: {gpu.name}; {gpu.source}",
        "host.ram_bytes": host_src(host.ram_bytes, "--host-ram"),
        "host.cpus": host_src(host.cpus, "--cpus"),
        "host.shm_bytes": host_src(host.shm_bytes, "--shm"),
        "memory": f"analytic model (jitplan.planner.memory), constants calibrated against a traced step; "
                  f"target {options.memory_fraction:.0%} of GPU memory",
        "batch_per_gpu": f"{'flag' if options.batch_per_gpu else 'derived'}: {batch_why}; largest that fits {bmax}",
        "accum_steps": "flag --accum" if options.accum else "derived: micro x accum x GPUs reaches the effective batch",
        "compile": "flag" if options.compile is not None else "recipe",
        "attention": "flag" if options.attention is not None else "recipe",
        "time": f"{est.time_source}: the time model's terms (jitplan.planner.timing; docs/planning.md "
                "\"Time model\"); implied MFU {est.mfu:.3f}",
        "lr": ("recipe: lr = blr x effective batch / 256" if options.policy == "keep-batch"
               else f"scale-lr ({options.lr_scaling}) from the reference lr"),
        "price_per_hour": est.price_source or "not given",
    }
