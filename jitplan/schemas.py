"""jitplan's data at its boundaries: Recipe (the reference run), PlanOptions, Plan (what ``jitplan plan``
writes and the launcher, doctor and ``jitmodel.train`` read). pydantic, ``extra="forbid"``, versioned.

    >>> r = load_recipe("JiT-B/16")
    >>> r.hardware.world_size, r.train.batch_per_gpu, r.train.effective_batch()
    (8, 128, 1024)

``load_plan``/``save_plan`` round-trip a Plan through YAML (atomic write); ``jitmodel.train --config
plan.yaml`` reads the plan's ``train`` key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from jitmodel.atomic import atomic_write_text
from jitmodel.config import TrainConfig, read_yaml_mapping, validation_summary
from jitmodel.fieldtypes import PrintableText
from jitplan.errors import UsageError
from jitplan.hardware.schema import HardwareSpec
from jitplan.hardware.spec import hardware_from_flags
from jitplan.templates import templates_dir

PLAN_SCHEMA_VERSION: Literal[1] = 1
RECIPE_SCHEMA_VERSION: Literal[1] = 1

Bytes = Annotated[int, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------------------------------
# Recipe
# --------------------------------------------------------------------------------------------------


class RecipeEval(_Strict):
    """Guidance values the official README uses (online evaluation vs released checkpoints)."""

    cfg_online: Annotated[float, Field(ge=0)]  # CFG scale of the online FID during training
    cfg_release: Annotated[float, Field(ge=0)]  # CFG scale used to evaluate the released checkpoint
    gen_batch_release: Annotated[int, Field(gt=0)] = 256


class Recipe(_Strict):
    """A reference training run: the hardware it was made for and its exact TrainConfig."""

    schema_version: Literal[1] = RECIPE_SCHEMA_VERSION
    name: str  # "JiT-B/16 ImageNet-256"
    slug: str  # file stem: "jit-b-16"
    description: str
    source: str  # where the values come from
    hardware: HardwareSpec  # the reference hardware (8xH200)
    train: TrainConfig  # batch_per_gpu=128, world_size=8, data.num_images=1281167, ...
    eval_cfg: RecipeEval

    @model_validator(mode="before")
    @classmethod
    def _drop_unread(cls, raw: object) -> object:
        # Recipes written before 2026-12 carry dataloader_workers_per_gpu, which nothing read (the
        # planner starts from train.data.num_workers); they still load.
        if isinstance(raw, dict) and "dataloader_workers_per_gpu" in raw:
            raw = {k: v for k, v in raw.items() if k != "dataloader_workers_per_gpu"}
        return raw


def recipes_dir() -> Path:

    return templates_dir() / "recipes"


def recipe_names() -> list[str]:
    return sorted(p.stem for p in recipes_dir().glob("*.yaml"))


def _recipe_slug(name: str) -> str:
    s = name.strip().lower().replace("/", "-").replace("_", "-").replace(" ", "-")
    if not s.startswith("jit-"):
        s = "jit-" + s.removeprefix("jit")
    return s


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A recipe by name ("JiT-B/16", "jit-b-16", "B/32") or a YAML path; UsageError when unknown/invalid."""
    p = Path(name_or_path)
    if not (p.suffix in (".yaml", ".yml") and p.exists()):
        p = recipes_dir() / f"{_recipe_slug(str(name_or_path))}.yaml"
        if not p.exists():
            raise UsageError(f"unknown recipe {str(name_or_path)!r}; known: {', '.join(recipe_names())}")
    raw = _read_yaml(p, "recipe")
    if isinstance(raw.get("hardware"), str):  # "8xH200": resolved through the GPU catalog

        raw["hardware"] = hardware_from_flags(raw["hardware"])
    try:
        return Recipe.model_validate(raw)
    except ValidationError as e:
        raise UsageError(f"{p}: invalid recipe: {validation_summary(e)}") from None


# --------------------------------------------------------------------------------------------------
# Plan options (the user's choices) and the plan
# --------------------------------------------------------------------------------------------------

Policy = Literal["keep-batch", "scale-lr"]
LrScaling = Literal["linear", "sqrt"]


class PlanOptions(_Strict):
    """What the user may override; None means "derive it"."""

    policy: Policy = "keep-batch"
    lr_scaling: LrScaling = "sqrt"
    batch_per_gpu: Annotated[int, Field(gt=0)] | None = None
    accum: Annotated[int, Field(gt=0)] | None = None
    effective_batch: Annotated[int, Field(gt=0)] | None = None
    compile: bool | None = None  # None: the recipe's setting
    attention: Literal["exact", "sdpa"] | None = None  # None: the recipe's setting
    memory_fraction: Annotated[float, Field(gt=0.1, le=1.0)] = 0.9  # target = fraction x GPU memory
    max_workers: Annotated[int, Field(ge=0)] | None = None  # cap DataLoader workers per rank
    data_path: str | None = None
    price_per_hour: Annotated[float, Field(ge=0)] | None = None  # one node, USD per hour
    rdzv_endpoint: str = "HEAD_NODE_IP:29400"  # multi-node only
    config_path: str = "plan.yaml"  # what torchrun's --config points at
    ddp_bucket_view: bool = False  # DDP(gradient_as_bucket_view=True) saves 4 B/param
    strategy: str | None = None  # memory strategy (none, ckpt, shard, ema-cpu, a+b); None: the fastest that fits
    # Goals (jitplan.planner.goal): what to fit the run to. epochs replaces the recipe's; hours / budget_usd
    # cut the run to what fits (the LR schedule's epochs scaled with it).
    epochs: Annotated[float, Field(gt=0)] | None = None
    hours: Annotated[float, Field(gt=0)] | None = None
    budget_usd: Annotated[float, Field(gt=0)] | None = None
    # The real dataset (jitplan.planner.dataset): images and classes counted from --data.
    num_images: Annotated[int, Field(gt=0)] | None = None
    num_classes: Annotated[int, Field(gt=0)] | None = None
    dataset_note: str | None = None  # how they were counted


class MemoryItem(_Strict):
    name: str
    bytes: int  # signed: a measured - predicted correction may be negative; the items sum to the total
    why: str


class TimeItem(_Strict):
    name: str
    seconds: float
    why: str


class Estimates(_Strict):
    memory_per_gpu_bytes: Bytes  # predicted peak reserved per GPU at the chosen micro-batch
    memory_breakdown: list[MemoryItem]
    memory_target_bytes: Bytes
    gpu_memory_bytes: Bytes
    memory_source: Literal["analytic", "trace", "measured"] = "analytic"
    host_ram_needed_bytes: Bytes  # per node
    host_ram_per_worker_bytes: Bytes
    shm_needed_bytes: Bytes  # per node
    train_flops_per_image: float
    mfu: float
    step_time_s: float  # one optimizer step (all micro-steps)
    images_per_s: float  # all GPUs
    epoch_time_s: float
    total_time_s: float  # all epochs, evaluations included
    eval_time_s: float  # one online evaluation
    num_evals: int
    checkpoint_bytes: Bytes
    cost_usd: float | None = None
    params: int  # trainable
    steps_per_epoch: int  # optimizer steps
    step_breakdown: list[TimeItem] = Field(default_factory=list)  # the time model's terms of one step
    time_source: str = "prior"  # "prior" | "calibrated from N runs on GPU (date)" (jitplan.planner.calibration)
    memory_calibration: str = "prior"  # the same for memory
    dist_timeout_s: float | None = None  # the process-group timeout the trainer uses (minutes: steps, eval chunks)
    eval_chunk_images: int | None = Field(None, exclude_if=lambda v: v is None)  # per rank, a barrier after each
    eval_chunk_s: float | None = Field(None, exclude_if=lambda v: v is None)
    link: str | None = Field(None, exclude_if=lambda v: v is None)  # the all-reduce's link, as the model took it
    epoch_range_s: tuple[float, float] | None = Field(None, exclude_if=lambda v: v is None)  # unmeasured link x16..x1
    staging_s: float | None = Field(None, exclude_if=lambda v: v is None)  # downloading the dataset once
    price_per_hour: float | None = Field(None, exclude_if=lambda v: v is None)  # the whole run's $/h (all nodes)
    price_source: str | None = Field(None, exclude_if=lambda v: v is None)


class WorkerDecision(_Strict):
    per_rank: Annotated[int, Field(ge=0)]
    total: Annotated[int, Field(ge=0)]  # per node: ranks x per_rank
    requested: Annotated[int, Field(ge=0)]  # the recipe's (or the user's) value
    bound_by: Literal["recipe", "cpus", "host-ram", "shm", "user"]
    caps: dict[str, int]  # each cap that applied, per rank
    reasons: list[str]


class PlanRow(_Strict):
    quantity: str
    reference: str
    target: str
    why: str


class LaunchSpec(_Strict):
    """How the run starts, as data: the command itself is rendered from it by ``jitplan.launch.torchrun``
    (``plan_command``), the one place that knows torchrun's flags."""

    nnodes: Annotated[int, Field(gt=0)]
    nproc_per_node: Annotated[int, Field(gt=0)]
    rdzv_backend: Literal["c10d", "static"]
    rdzv_endpoint: str | None
    rdzv_id: str | None
    config: str = "plan.yaml"  # the file every rank reads (--config)
    env: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _drop_rendered_argv(cls, raw: Any) -> Any:
        """Plans written before the launch became data stored the rendered command (``argv``): its
        ``--config`` is kept, the rest is derived again."""
        if isinstance(raw, dict) and "argv" in raw:
            raw = dict(raw)
            argv = raw.pop("argv")
            if isinstance(argv, list) and "--config" in argv[:-1] and "config" not in raw:
                raw["config"] = str(argv[argv.index("--config") + 1])
        return raw


class Plan(_Strict):
    """A hardware adaptation of a recipe. ``train`` is what ``jitmodel.train --config plan.yaml`` reads."""

    schema_version: Literal[1] = PLAN_SCHEMA_VERSION
    kind: Literal["plan"] = "plan"  # the file discriminator (a bare TrainConfig says kind: train)
    recipe: PrintableText
    policy: Policy
    lr_scaling: LrScaling | None = None  # only for policy scale-lr
    hardware: HardwareSpec
    reference_hardware: HardwareSpec
    train: TrainConfig
    estimates: Estimates
    workers: WorkerDecision
    rows: list[PlanRow]
    launch: LaunchSpec
    provenance: dict[str, str]  # field -> where it came from (flag, catalog, recipe, derived, default)
    warnings: list[str] = Field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


def _read_yaml(p: Path, what: str) -> dict:
    try:
        return read_yaml_mapping(p, what)
    except ValueError as e:
        raise UsageError(str(e)) from None


def load_plan(path: str | Path) -> Plan:
    """Read and validate a plan; UsageError (one line) on a missing file, bad YAML, other schema, bad content."""
    p = Path(path)
    raw = _read_yaml(p, "plan")
    version = raw.get("schema_version")
    if version != PLAN_SCHEMA_VERSION:
        raise UsageError(f"{p} has plan schema_version {version!r}; this jitplan reads version "
                         f"{PLAN_SCHEMA_VERSION} (re-run `jitplan plan --out {p}`)")
    try:
        return Plan.model_validate(raw)
    except ValidationError as e:
        raise UsageError(f"{p}: invalid plan: {validation_summary(e)}") from None


def plan_to_yaml(plan: Plan) -> str:
    header = ("# jitplan plan: `python -m jitmodel.train --config THIS_FILE` reads the `train` key.\n"
              "# Regenerate with `jitplan plan ... --out THIS_FILE` rather than editing derived numbers.\n")
    return header + yaml.safe_dump(plan.model_dump(mode="json"), sort_keys=False, width=120)


def save_plan(plan: Plan, path: str | Path) -> None:
    """Save a plan as YAML, atomically."""
    atomic_write_text(path, plan_to_yaml(plan))
