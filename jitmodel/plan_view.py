"""What the trainer reads of a jitplan plan beyond its ``train`` section: the envelope it checks, and the
predictions it compares its own measurements with. Pure pydantic: ``jitmodel`` never imports ``jitplan``, so
these are typed views whose names ``jitplan.schemas`` must keep (tests/test_one_home.py checks). And the one
rule that tells a plan from a bare TrainConfig (``file_kind``), which every reader uses.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from jitmodel.fieldtypes import PrintableText


class PlanEnvelope(BaseModel):
    """What the trainer checks of a jitplan plan around its ``train`` section (jitplan.schemas.Plan is the
    whole schema): a version it reads, a printable recipe name, and a ``train`` mapping. Plan-level garbage
    is refused, not ignored."""

    model_config = ConfigDict(extra="allow")

    schema_version: Literal[1]  # PLAN_SCHEMA_VERSION
    kind: Literal["plan"] = "plan"
    recipe: PrintableText | None = None
    train: dict


class PlanExpectations(BaseModel):
    """What a jitplan plan predicted, as the trainer reads it: the typed view of the plan's ``estimates``
    (``jitplan.schemas.Estimates`` carries the same fields; a test keeps the names equal). Read by
    ``jitmodel.metrics.plan_expectations``; drift lines and the re-plan use it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    step_time_s: float | None = None  # one optimizer step
    images_per_s: float | None = None
    memory_per_gpu_bytes: float | None = None
    eval_time_s: float | None = None  # one online evaluation
    epoch_time_s: float | None = None
    price_per_hour: float | None = None  # the offer's or the catalog's $/h


FileKind = Literal["plan", "train"]


def file_kind(raw: dict) -> FileKind:
    """What a YAML mapping holds: a jitplan plan (``kind: plan``) or a bare TrainConfig (``kind: train``).

    The one rule, for every reader. Files written before the ``kind:`` key: a mapping without a ``data``
    section that has a ``train`` section or a plan's own keys (hardware, estimates, ...) is a plan (so a
    plan that lost its ``train`` section is refused naming ``train``, not ``data``).

        >>> file_kind({"kind": "plan"}), file_kind({"train": {}, "hardware": {}}), file_kind({"data": {}})
        ('plan', 'plan', 'train')
        >>> file_kind({"hardware": {}, "estimates": {}})
        'plan'

    """
    kind = raw.get("kind")
    if kind in ("plan", "train"):
        return kind
    if kind is not None:
        raise ValueError(f"unknown kind {kind!r}: a config file holds kind: plan or kind: train")
    if "data" in raw:
        return "train"
    return "plan" if "train" in raw or any(k in raw for k in _PLAN_ONLY_KEYS) else "train"


_PLAN_ONLY_KEYS = ("hardware", "estimates", "recipe", "policy", "reference_hardware", "workers", "launch")
