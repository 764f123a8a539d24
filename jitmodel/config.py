"""Configuration models of jitmodel: the one schema the planner writes and the trainer reads.

Pure Python (pydantic), no torch. Defaults are the official JiT recipe (LTH14/JiT main_jit.py, its README;
docs/training.md). ``jitplan plan --out`` saves ``TrainConfig``; ``python -m jitmodel.train --config`` reads it.

    >>> from jitmodel.config import DataConfig, ModelConfig, TrainConfig
    >>> cfg = TrainConfig(model=ModelConfig(variant="JiT-B/16"), data=DataConfig(path="/data/imagenet"))
    >>> cfg.optim.lr_for(cfg.effective_batch(world_size=8))  # blr * 1024 / 256
    0.0002
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from jitmodel.custom import parse_spec, source_digest
from jitmodel.dataconfig import IMAGENET_TRAIN_IMAGES, DataConfig  # noqa: F401  (re-exported: the one schema)
from jitmodel.fieldtypes import NonNegInt, PositiveInt, UnitFloat, float_in, int_in
from jitmodel.plan_view import FileKind, PlanEnvelope, file_kind  # noqa: F401  (file_kind: re-exported)
from jitmodel.safeyaml import read_yaml_mapping  # the one YAML file reader, re-exported here
from jitmodel.variants import Variant, get_variant

SCHEMA_VERSION: Literal[1] = 1
PLAN_SCHEMA_VERSION: Literal[1] = 1  # the plan files the trainer reads (jitplan.schemas writes this version)

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False, str_max_length=4096)


class ModelConfig(_Strict):
    """What network to build. A checkpoint stores this; models are rebuilt from it, never from flags."""

    variant: str = "JiT-B/16"
    img_size: Annotated[int, int_in(1, 4096)] = 256
    in_channels: Annotated[int, int_in(1, 16)] = 3
    num_classes: Annotated[int, int_in(1, 100_000)] = 1000
    attn_dropout: UnitFloat = 0.0
    proj_dropout: UnitFloat = 0.0
    attention: Literal["exact", "sdpa"] = "exact"  # exact = the official fp32 QK^T/softmax path
    # A user's own network instead of JiT (docs/models.md); a checkpoint refuses to load into another's source.
    factory: str | None = None
    factory_kwargs: dict[str, int | float | str | bool] = {}
    source_digest: str | None = None

    @field_validator("variant")
    @classmethod
    def _known_variant(cls, v: str) -> str:
        try:
            return get_variant(v).name
        except KeyError as e:
            raise ValueError(e.args[0]) from None

    @model_validator(mode="before")
    @classmethod
    def _digest_factory(cls, data: object) -> object:
        """A factory without a digest gets its source's now (what the run was started from)."""
        if isinstance(data, dict) and data.get("factory") and not data.get("source_digest"):
            spec = parse_spec(str(data["factory"]))
            data = {**data, "source_digest": source_digest(spec, data.get("factory_kwargs"))}
        return data

    @model_serializer(mode="wrap")
    def _jit_unchanged(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        """A JiT model's dump (plans, checkpoints) has no factory keys: files written before them stay the same;
        a factory's has no JiT keys."""
        out = handler(self)
        if self.factory is None:
            for key in ("factory", "factory_kwargs", "source_digest"):
                out.pop(key, None)
        else:  # a user's network: the JiT variant and its attention knobs mean nothing, so they are not written
            for key in ("variant", "attention", "attn_dropout", "proj_dropout"):
                out.pop(key, None)
        return out

    @model_validator(mode="after")
    def _grid_divides(self) -> ModelConfig:
        if self.factory is None:  # a user's network checks its own input size (jitmodel.custom.build)
            self.spec.grid(self.img_size)  # raises ValueError when img_size % patch != 0
        return self

    @property
    def spec(self) -> Variant:
        return get_variant(self.variant)

    @property
    def label(self) -> str:
        """What runs and tables call the network: the JiT variant, or the factory's module and name.

            >>> ModelConfig(variant="JiT-Tiny/4", img_size=16).label
            'JiT-Tiny/4'
            >>> ModelConfig(factory="jitmodel.archs.dit:dit", img_size=16, in_channels=4).label
            'dit:dit'
        """
        if self.factory is None:
            return self.variant
        head, _, fn = self.factory.rpartition(":")
        return f"{Path(head).stem if head.endswith('.py') else head.rpartition('.')[2]}:{fn}"


class OptimConfig(_Strict):
    """AdamW and the LR schedule. ``lr`` is absolute; when None it is blr * effective_batch / 256."""

    blr: Annotated[float, float_in(gt=0, le=1.0)] = 5e-5
    lr: Annotated[float, float_in(gt=0, le=1.0)] | None = None
    min_lr: Annotated[float, float_in(ge=0, le=1.0)] = 0.0
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_epochs: Annotated[float, float_in(ge=0, le=100_000)] = 5.0
    betas: tuple[UnitFloat, UnitFloat] = (0.9, 0.95)
    eps: Annotated[float, float_in(gt=0, le=1.0)] = 1e-8
    weight_decay: Annotated[float, float_in(ge=0, le=10.0)] = 0.0
    grad_clip: Annotated[float, float_in(gt=0, le=1e6)] | None = None  # official: none
    fused: bool | None = None  # None: fused AdamW where the device supports it

    def lr_for(self, effective_batch: int) -> float:
        return self.lr if self.lr is not None else self.blr * effective_batch / 256


class DiffusionConfig(_Strict):
    """The denoising objective (official: x-prediction, v-space loss)."""

    P_mean: Annotated[float, float_in(ge=-10, le=10)] = -0.8
    P_std: Annotated[float, float_in(gt=0, le=10)] = 0.8
    noise_scale: Annotated[float, float_in(gt=0, le=100)] = 1.0  # 1.0 at 256 px, 2.0 at 512 px
    t_eps: Annotated[float, Field(gt=0, lt=1)] = 0.05
    label_drop_prob: UnitFloat = 0.1
    prediction: Literal["x", "v", "eps"] = "x"  # what the network output is read as
    loss_space: Literal["v", "x", "eps"] = "v"  # where the L2 loss is taken
    ema_decays: tuple[UnitFloat, UnitFloat] = (0.9999, 0.9996)
    # Warm-up: decay min(d, (1+step)/(10+step)), so short runs are not averaged with the random init.
    # Off by default (the official recipe has none; parity tests); the digits demo turns it on.
    ema_warmup: bool = False


class SampleConfig(_Strict):
    """Sampler settings (official grid: linspace(0, 1, steps+1), Heun then a final Euler step)."""

    method: Literal["heun", "euler"] = "heun"
    steps: Annotated[int, int_in(1, 10_000)] = 50
    cfg: Annotated[float, float_in(ge=0, le=100)] = 1.0
    interval_min: UnitFloat = 0.0
    interval_max: UnitFloat = 1.0
    mode: Literal["exact", "fast"] = "fast"  # exact: the official sequence of network calls
    ema: Literal["ema1", "ema2", "raw"] = "ema1"


class EvalConfig(_Strict):
    """Online evaluation during training (filled in by jitmodel.evaluate)."""

    online: bool = False
    every_epochs: PositiveInt = 40
    at_epoch0: bool = False  # the official code evaluates at epoch 0 too
    num_images: PositiveInt = 50_000
    gen_batch: PositiveInt = 128
    ref_stats: str | None = None  # npz with mu/sigma (the format of jit_in256_stats.npz)
    # Images per rank between barriers (None: one stretch). The planner sets it so one chunk takes minutes:
    # no rank then waits at a collective for more than a chunk, and the process-group timeout stays short.
    chunk_images: PositiveInt | None = None


class CheckpointConfig(_Strict):
    every_steps: PositiveInt | None = None  # also save every N optimizer steps (None: per epoch only)
    every_epochs: PositiveInt = 1  # save last.pt every N epochs
    keep_last: PositiveInt = 2  # rolling step checkpoints kept
    keep_every_epochs: PositiveInt | None = 100  # permanent copies every N epochs


class MemoryConfig(_Strict):
    """Memory strategies (jitmodel.strategy; what each saves and costs: docs/planning.md). Any mix resumes
    from a checkpoint written by any other, at any world size."""

    checkpoint_every: NonNegInt = 0  # activation checkpointing: 0 off, 1 every block, k blocks 0, k, 2k, ...
    shard: bool = False  # FSDP2 fully_shard: params, grads, optimizer state and EMAs split across ranks
    ema_device: Literal["same", "cpu"] = "same"  # cpu: EMAs in pinned host memory, updated beside the step
    ema_every: PositiveInt = 1  # update the EMAs every k optimizer steps with decay**k (same horizon)
    # shard: the dtype FSDP2 all-gathers parameters in. auto: the autocast dtype (bf16/fp16: half the bytes on
    # the link and in the unsharded blocks; gradients still reduce-scattered in fp32), fp32 without autocast;
    # fp32: always fp32 (bitwise the arithmetic of plain DDP's weights). docs/planning.md "When it does not fit"
    shard_gather: Literal["auto", "fp32"] = "auto"


def effective_batch(micro_batch: int, accum_steps: int, world_size: int) -> int:
    """Images per optimizer step: micro-batch x accumulation x ranks (the one place it is computed).

        >>> effective_batch(16, 32, 2)
        1024
    """
    return micro_batch * accum_steps * world_size


class TrainConfig(_Strict):
    """Everything ``jitmodel.train`` needs. Batch sizes are per rank (GPU)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["train"] = "train"  # the file discriminator: a plan file says kind: plan
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig
    optim: OptimConfig = Field(default_factory=OptimConfig)
    diffusion: DiffusionConfig = Field(default_factory=DiffusionConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)

    batch_per_gpu: Annotated[int, int_in(1, 65_536)] = 128  # micro-batch per rank
    accum_steps: Annotated[int, int_in(1, 65_536)] = 1  # gradient accumulation (micro-steps per optimizer step)
    world_size: Annotated[int, int_in(1, 65_536)] | None = None  # planned ranks; the trainer checks it when set
    epochs: Annotated[float, float_in(gt=0, le=100_000)] = 600
    max_steps: PositiveInt | None = None  # stop after this many optimizer steps (tests, budgets)
    seed: Annotated[int, int_in(0, 2**31 - 1)] = 0  # numpy seeds must be < 2**32 (seed + rank)
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 autocast where supported
    compile: bool = False
    device: Literal["auto", "cuda", "cpu", "mps"] = "auto"
    output_dir: Annotated[str, Field(min_length=1, pattern=r"\S")] = "runs/jit"  # '' would write into the cwd
    log_every: PositiveInt = 20
    # Process-group (NCCL) timeout in seconds; None: 1800. jitplan sets it above the predicted online
    # evaluation, so a rank that waits for the others' generation does not hit the watchdog.
    dist_timeout_s: Annotated[float, float_in(gt=0, le=1e6)] | None = None
    # A money limit (``jitplan launch --budget``): after warm-up the run re-plans itself from its own steps
    # (jitmodel.replan) and stops with a checkpoint when the cost to the end at price_per_hour exceeds it.
    # price_per_hour None: the plan's estimates.price_per_hour (the offer's or the catalog's typical $/h).
    budget_usd: Annotated[float, float_in(gt=0, le=1e9)] | None = Field(None, exclude_if=lambda v: v is None)
    price_per_hour: Annotated[float, float_in(ge=0, le=1e6)] | None = Field(None, exclude_if=lambda v: v is None)

    @field_validator("model", mode="before")
    @classmethod
    def _variant_named(cls, m: object) -> object:
        """A model section names its network: no silent JiT-B/16 when model.variant is missing (a file
        with no model section at all is refused by load_train_config)."""
        if isinstance(m, dict) and m.get("variant") is None and m.get("factory") is None:
            raise ValueError("model.variant is required (e.g. model: {variant: JiT-B/16}), or model.factory")
        return m

    @model_validator(mode="after")
    def _no_online_fid_on_latents(self) -> TrainConfig:
        """Online FID reads the samples as pixels; a latent model's samples need its VAE's decoder first, which
        the evaluation does not run yet: refused rather than a wrong score."""
        if self.eval.online and self.data.kind == "latents":
            raise ValueError("eval.online with data.kind latents: online FID does not decode latents yet; set "
                             "eval.online: false and sample from a checkpoint (jitmodel sample decodes)")
        return self

    def effective_batch(self, world_size: int | None = None) -> int:
        return effective_batch(self.batch_per_gpu, self.accum_steps, world_size or self.world_size or 1)

    def eval_due(self, epoch: int) -> bool:
        """Online evaluation after (0-based) ``epoch``, the official cadence: every ``every_epochs``, the
        last epoch, and epoch 0 only with ``at_epoch0`` (the official code always evaluates at epoch 0).

        >>> cfg = TrainConfig(data=DataConfig(kind="digits"), epochs=100, eval=EvalConfig(online=True))
        >>> [e for e in range(100) if cfg.eval_due(e)]
        [40, 80, 99]
        """
        ev = self.eval
        if not ev.online:
            return False
        if epoch == 0:
            return ev.at_epoch0
        return epoch % ev.every_epochs == 0 or epoch + 1 >= math.ceil(self.epochs)

    @property
    def lr(self) -> float:
        """Absolute peak LR for the planned world size."""
        return self.optim.lr_for(self.effective_batch())

    def with_workers(self, num_workers: int) -> TrainConfig:
        """The same config with ``num_workers`` DataLoader workers per rank (normalised, see DataConfig)."""
        return self.model_copy(update={"data": self.data.with_workers(num_workers)})


def steps_per_epoch(num_images: int, world_size: int, micro_batch: int, accum: int) -> int:
    """Optimizer steps per epoch, the one formula (planner and trainer): the DistributedSampler pads to
    ceil(N / world) per rank, the loader drops the last partial micro-batch, a partial accumulation is dropped.

        >>> steps_per_epoch(1281167, 8, 128, 1)
        1251
    """
    return (math.ceil(num_images / world_size) // micro_batch) // accum


def validation_summary(e: ValidationError) -> str:
    """A pydantic error in one line, the project's one formatter: ``field.path: message (+N more)``.

        >>> try:
        ...     DataConfig(kind="imagefolder")
        ... except ValidationError as e:
        ...     print(validation_summary(e))
        value: Value error, data.path is required for an imagefolder dataset (a folder holding train/)
    """
    errors = e.errors()
    if not errors:
        return " ".join(str(e).split())
    first = errors[0]
    loc = ".".join(str(x) for x in first.get("loc", ())) or "value"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    msg = " ".join(str(first.get("msg", "invalid")).split())
    msg = msg if len(msg) <= 200 else msg[:200] + "..."  # a 1 MB value must not come back whole
    return f"{loc[:120]}: {msg}{more}"


def load_train_config(path: str | Path) -> TrainConfig:
    """Read a TrainConfig YAML (or a plan YAML holding one under ``train``).

    Raises ValueError with one line on a missing file, bad YAML or an invalid config.
    """
    raw = read_yaml_mapping(path)
    if file_kind(raw) == "plan":  # a jitplan plan file: its envelope checked, then its train section
        try:
            raw = PlanEnvelope.model_validate(raw).train
        except ValidationError as e:
            raise ValueError(f"{path}: invalid plan: {validation_summary(e)}") from None
    cfg = TrainConfig.model_validate(raw)
    if not isinstance(raw.get("model"), dict):
        raise ValueError(f"{path}: model.variant is required (e.g. model: {{variant: JiT-B/16}}); a config file "
                         "names the network it trains")
    return cfg


def dump_yaml(model: BaseModel) -> str:
    return yaml.safe_dump(model.model_dump(mode="json"), sort_keys=False)
