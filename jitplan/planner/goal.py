"""Plan to a goal: the dataset you have, the epochs you ask for, or what fits in H hours or D dollars. Pure.

``adapt`` changes the *target* run only (the reference column stays the recipe): the images and classes
counted from --data (steps, time and the class embedding follow), and the epochs, with the LR warmup scaled
in proportion (the recipe's warmup is 5 of its 600 epochs). ``fit_epochs`` turns hours or a budget into the
epochs (or, under one epoch, the images) that fit. ``too_long`` says when the run as given takes more than a
few days, with the options that would fit.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from jitmodel.config import TrainConfig
from jitplan.planner import compute
from jitplan.schemas import Plan, PlanOptions, Recipe

FEW_DAYS_S = 3 * 86400.0


def adapt(base: TrainConfig, recipe: Recipe, options: PlanOptions, epochs: float | None = None) -> TrainConfig:
    """The target's TrainConfig with the real dataset and the goal's epochs (warmup scaled with them)."""
    data, model, optim = base.data, base.model, base.optim
    if options.num_images is not None:
        data = data.model_copy(update={"num_images": options.num_images})
    if options.num_classes is not None:
        model = model.model_copy(update={"num_classes": options.num_classes})
    upd: dict[str, object] = {"data": data, "model": model}
    want = epochs if epochs is not None else options.epochs
    if want is not None and want != recipe.train.epochs:
        frac = want / recipe.train.epochs
        optim = optim.model_copy(update={"warmup_epochs": round(recipe.train.optim.warmup_epochs * frac, 4)})
        upd.update(epochs=want, optim=optim)
    return base.model_copy(update=upd)


def dataset_notes(recipe: Recipe, options: PlanOptions) -> list[str]:
    """A sentence when the dataset differs from the recipe's."""
    r = recipe.train
    n, c = options.num_images, options.num_classes
    if n is None and c is None:
        return [options.dataset_note] if options.dataset_note else []
    rn, rc = r.data.planned_images, r.model.num_classes
    if (n or rn) == rn and (c or rc) == rc:
        return []
    src = f" ({options.dataset_note})" if options.dataset_note else ""
    return [f"dataset differs from the recipe's: {n or rn:,} images in {c or rc:,} classes{src} instead of "
            f"{rn:,} in {rc:,}; steps, time, evaluation and the class embedding follow it (FID against ImageNet "
            "statistics no longer measures this data)"]


def available_s(plan: Plan, options: PlanOptions) -> tuple[float, str] | None:
    """(seconds the goal allows, why) for --hours / --budget-usd, or None."""
    est = plan.estimates
    limits = []
    if options.hours is not None:
        limits.append((options.hours * 3600, f"{options.hours:g} h"))
    if options.budget_usd is not None and est.price_per_hour:
        limits.append((options.budget_usd / est.price_per_hour * 3600,
                       f"${options.budget_usd:,.0f} at ${est.price_per_hour:.2f}/h"))
    return min(limits) if limits else None


def fit_epochs(plan: Plan, allowed_s: float) -> float:
    """The most epochs whose run (staging and every online evaluation included) fits ``allowed_s``; whole
    epochs when at least one fits, else a fraction (2 decimals)."""
    est, ev = plan.estimates, plan.train.eval

    def total(e: float) -> float:
        evals = compute.num_evals(e, ev.every_epochs, ev.at_epoch0, ev.online)
        return (est.staging_s or 0.0) + e * est.epoch_time_s + evals * est.eval_time_s

    e = math.floor(max(0.0, allowed_s - (est.staging_s or 0.0)) / est.epoch_time_s)
    while e >= 1 and total(e) > allowed_s:
        e -= 1
    if e >= 1:
        return float(e)
    frac = math.floor(max(0.0, allowed_s - total(0.01) + 0.01 * est.epoch_time_s) / est.epoch_time_s * 100) / 100
    return max(0.0, min(frac, 0.99))


def goal_rows(plan: Plan, options: PlanOptions, recipe_epochs: float, why: str) -> list[tuple[str, str, str, str]]:
    t, est = plan.train, plan.estimates
    images = t.epochs * t.data.planned_images
    return [("goal", f"{recipe_epochs:g} epochs", f"{t.epochs:g} epochs ({images:,.0f} images seen)",
             f"what fits {why}; LR warmup {t.optim.warmup_epochs:g} epochs (scaled with the epochs), total "
             f"{est.total_time_s / 3600:.1f} h")]


Alternative = Callable[[str, str], Plan | None]  # (gpus, recipe) -> a plan on that hardware, or None


def too_long(plan: Plan, recipe_slug: str, variant: str, other: Alternative) -> list[str]:
    """When the run takes more than a few days: the options that fit (fewer epochs, a smaller variant, other
    GPUs at their typical price)."""
    est, t = plan.estimates, plan.train
    if est.total_time_s <= FEW_DAYS_S:
        return []
    per_epoch = est.epoch_time_s + (est.eval_time_s / t.eval.every_epochs if t.eval.online else 0.0)
    fit = max(0.0, FEW_DAYS_S - est.eval_time_s) / per_epoch
    opts = [f"--epochs {math.floor(fit)}" if fit >= 1 else f"--hours 72 ({fit:.2f} epochs, "
            f"{fit * t.data.planned_images:,.0f} images)"]
    if not variant.startswith("JiT-B"):
        alt = other(_gpus(plan), "JiT-B/16")
        if alt is not None:
            opts.append(f"--recipe JiT-B/16 ({alt.estimates.total_time_s / 86400:.1f} d)")
    for gpus in ("1xRTX4090", "1xH100", "8xH100"):
        if gpus == _gpus(plan).replace(" ", ""):
            continue
        alt = other(gpus, recipe_slug)
        if alt is not None:
            e = alt.estimates
            cost = f", ${e.cost_usd:,.0f}" if e.cost_usd is not None else ""
            opts.append(f"--gpus {gpus} ({e.total_time_s / 86400:.1f} d{cost})")
    return [f"{t.epochs:g} epochs take {est.total_time_s / 86400:.1f} days here; options: " + "; ".join(opts)]


def _gpus(plan: Plan) -> str:
    hw = plan.hardware
    assert hw.gpu is not None
    words = hw.gpu.name.split()
    name = "".join(words[:2]) if words[-1].lower().endswith("gb") else "".join(words).replace("SXM", "")
    return f"{hw.nodes}x{hw.gpus_per_node}x{name}" if hw.nodes > 1 else f"{hw.gpus_per_node}x{name}"
