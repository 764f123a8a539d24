"""Arms (prediction:loss pairs, and the network when models are compared), budgets and the per-arm TrainConfig.
Pure: no torch, no I/O.

    >>> [a.name for a in parse_arms(["x:v", "eps"], None)]
    ['x:v', 'eps:v']
    >>> Budget(steps=100).max_steps(effective_batch=64), Budget(images=1000).max_steps(effective_batch=64)
    (100, 16)
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from jitmodel.config import ModelConfig, TrainConfig
from jitplan.errors import UsageError

KINDS = ("x", "v", "eps")  # the same names as jitmodel.objectives.KINDS (kept here: no torch import)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Arm(_Strict):
    """One setting compared: what the network output is read as, where the L2 loss is taken, and (when the
    comparison has models) which network: ``model`` None is the base config's."""

    prediction: Literal["x", "v", "eps"]
    loss_space: Literal["x", "v", "eps"] = "v"
    model: ModelConfig | None = None
    model_label: str | None = None  # the network's name in tables (the JiT variant, the factory)
    params: int | None = None  # its trainable parameters (counted on meta, jitplan.compare.models)
    label: str | None = None  # the arm's name when it is not the objective alone (jitplan.compare.arms)

    @property
    def objective(self) -> str:
        return f"{self.prediction}:{self.loss_space}"

    @property
    def name(self) -> str:
        return self.label or self.objective

    @property
    def slug(self) -> str:
        """Path-safe: ``x-v``, ``JiT-Tiny-8``, ``dit_digits-x-v``."""
        return safe_name(self.name) or "arm"


def safe_name(text: str) -> str:
    """Letters, digits, ``_ . -`` only (a folder, a run name, torchrun's rendezvous id).

        >>> safe_name("dit_digits(hidden=128) x:v"), safe_name("cmp 2")
        ('dit_digits-hidden-128-x-v', 'cmp-2')
    """
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")


def parse_arm(text: str) -> Arm:
    """``x`` (v loss, as JiT), ``eps:eps``, ``v:x`` -> Arm; UsageError on anything else."""
    pred, _, loss = text.strip().lower().partition(":")
    loss = loss or "v"
    for what, k in (("prediction", pred), ("loss space", loss)):
        if k not in KINDS:
            raise UsageError(f"unknown {what} {k!r} in objective {text!r}; expected PRED[:LOSS] with each of "
                             f"{', '.join(KINDS)} (e.g. x:v, eps:eps)")
    return Arm.model_validate({"prediction": pred, "loss_space": loss})


def parse_arms(arms: list[str] | None, objectives: str | None) -> list[Arm]:
    """``--arm`` values and/or ``--objectives x,v,eps`` (each with the v loss) -> at least two distinct arms."""
    texts = list(arms or []) + [o for o in (objectives or "").split(",") if o.strip()]
    out: list[Arm] = []
    for t in texts:
        a = parse_arm(t)
        if a in out:
            raise UsageError(f"objective {a.name} is given twice")
        out.append(a)
    if len(out) < 2:
        raise UsageError(f"a comparison needs at least two objectives, got {len(out)}",
                         hint="e.g. --objectives x,v,eps or --arm x:v --arm eps:eps")
    return out


class Budget(_Strict):
    """Exactly one of: optimizer steps, training images, or wall-clock minutes per arm."""

    steps: Annotated[int, Field(gt=0)] | None = None
    images: Annotated[int, Field(gt=0)] | None = None
    minutes: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _one(self) -> Budget:
        given = [k for k in ("steps", "images", "minutes") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one budget (steps, images or minutes), got {given or 'none'}")
        return self

    def max_steps(self, effective_batch: int) -> int | None:
        """The step cap of a steps or images budget (images rounded up to whole steps); None for minutes."""
        if self.steps is not None:
            return self.steps
        if self.images is not None:
            return math.ceil(self.images / effective_batch)
        return None

    def describe(self) -> str:
        if self.steps is not None:
            return f"{self.steps} optimizer steps"
        if self.images is not None:
            return f"{self.images} training images"
        return f"{self.minutes:g} wall-clock minutes of training"


def make_budget(steps: int | None, images: int | None, minutes: float | None) -> Budget:
    """Budget from CLI values; UsageError (exit 2) for zero, negative or several budgets."""
    for flag, v in (("--steps", steps), ("--images", images), ("--minutes", minutes)):
        if v is not None and v <= 0:
            raise UsageError(f"{flag} must be > 0, got {v:g}")
    given = [f for f, v in (("--steps", steps), ("--images", images), ("--minutes", minutes)) if v is not None]
    if len(given) != 1:
        raise UsageError("give exactly one budget: --steps N, --images N or --minutes M "
                         f"(got {', '.join(given) or 'none'})")
    return Budget(steps=steps, images=images, minutes=minutes)


def arm_train_config(base: TrainConfig, arm: Arm, budget: Budget, *, seed: int | None, world_size: int,
                     log_every: int | None = None) -> TrainConfig:
    """The TrainConfig of one arm: the base with this objective (and network), the seed and the budget's step
    cap. Pure.

    With a minutes budget the step cap of the base config stays (the launcher stops the run on time). A
    ``log_every`` the template sets is kept; unset, it gives about 60 points on the loss curve.
    """
    diffusion = base.diffusion.model_copy(update={"prediction": arm.prediction, "loss_space": arm.loss_space})
    cap = budget.max_steps(base.effective_batch(world_size))
    upd: dict[str, Any] = {"diffusion": diffusion, "max_steps": cap if cap is not None else base.max_steps}
    if arm.model is not None:
        upd["model"] = arm.model.model_dump()
    if seed is not None:
        upd["seed"] = seed
    if log_every is not None:
        upd["log_every"] = log_every
    elif cap is not None and "log_every" not in base.model_fields_set:  # unset: about 60 points on the curve
        upd["log_every"] = max(1, min(base.log_every, cap // 60))
    return TrainConfig.model_validate({**base.model_dump(), **upd})


