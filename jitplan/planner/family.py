"""Recipes of the transformer-diffusion family beyond JiT (DiT, SiT, U-ViT): the schema and its loader.

A family recipe describes the network (patch, depth, width, heads, MLP kind and ratio, conditioning), the
space it works in (pixels, or an autoencoder's latents with its downsampling and channels), the objective,
and the published reference run (GPUs, batch, LR, steps) with its source. ``jitplan plan --recipe dit-xl-2``
traces the network the recipe names (``factory`` + the arguments derived here) and plans it on your GPUs
beside the reference run. Pure: no torch. The JiT recipes (``schemas.Recipe``) are unchanged.

    >>> r = load_family("dit-xl-2")
    >>> r.factory_kwargs()["input_size"], r.factory_kwargs()["in_channels"], r.reference.batch
    (32, 4, 256)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from jitmodel.safeyaml import read_yaml_mapping
from jitplan.errors import UsageError
from jitplan.schemas import recipes_dir

# Which conditioning each shipped network implements (jitmodel.archs); a recipe that asks another is refused.
FACTORIES = {"adaln-zero": "jitmodel.archs.dit:DiT", "in-context": "jitmodel.archs.uvit:UViT",
             "cross-attn": "jitmodel.archs.crossattn:CrossDiT"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Mlp(_Strict):
    kind: Literal["gelu", "swiglu"] = "gelu"
    ratio: float = Field(4.0, gt=0)


class Arch(_Strict):
    patch: int = Field(ge=1)
    depth: int = Field(ge=1)
    hidden: int = Field(ge=8)
    heads: int = Field(ge=1)
    mlp: Mlp = Mlp()
    conditioning: Literal["adaln-zero", "in-context", "cross-attn"]
    long_skip: bool = False  # U-ViT: deep blocks fuse their mirror shallow block's output

    @model_validator(mode="after")
    def _shape(self) -> Arch:
        if self.hidden % self.heads:
            raise ValueError(f"hidden {self.hidden} is not a multiple of heads {self.heads}")
        if self.long_skip != (self.conditioning == "in-context"):
            raise ValueError("long skips come with in-context conditioning (U-ViT) in the shipped networks")
        if self.mlp.kind != "gelu":
            raise ValueError("the shipped networks use a GELU MLP; swiglu needs your own factory (--model)")
        return self


class Autoencoder(_Strict):
    name: str  # e.g. stabilityai/sd-vae-ft-ema (diffusers AutoencoderKL)
    downsample: int = Field(ge=1)
    channels: int = Field(ge=1)
    scale: float = 0.18215


class Space(_Strict):
    kind: Literal["pixel", "latent"]
    image_size: int = Field(ge=8)
    channels: int = 3  # pixel space
    autoencoder: Autoencoder | None = None

    @model_validator(mode="after")
    def _latent_has_ae(self) -> Space:
        if (self.kind == "latent") != (self.autoencoder is not None):
            raise ValueError("a latent space names its autoencoder; a pixel space has none")
        return self

    @property
    def input_size(self) -> int:
        return self.image_size // (self.autoencoder.downsample if self.autoencoder else 1)

    @property
    def input_channels(self) -> int:
        return self.autoencoder.channels if self.autoencoder else self.channels


class Objective(_Strict):
    path: Literal["ddpm", "linear"]  # DDPM's noise schedule, or SiT's / flow matching's linear interpolant
    prediction: Literal["eps", "v", "x"]
    learn_sigma: bool = False  # DiT learns the variance too (2C outputs); the planned network predicts C


class Reference(_Strict):
    hardware: str  # a catalog spec: 8xA100-80GB-SXM
    hardware_note: str = ""
    batch: int = Field(ge=1)  # global
    lr: float = Field(gt=0)
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    steps: int = Field(ge=1)
    ema: float = 0.9999
    source: str


class FamilyRecipe(_Strict):
    schema_version: Literal[1] = 1
    name: str
    slug: str
    description: str
    source: str
    num_classes: int = 1000
    arch: Arch
    space: Space
    objective: Objective
    reference: Reference

    @property
    def factory(self) -> str:
        return FACTORIES[self.arch.conditioning]

    def factory_kwargs(self) -> dict[str, int | float]:
        a, s = self.arch, self.space
        if s.input_size % a.patch:
            raise ValueError(f"input {s.input_size} is not a multiple of the patch {a.patch}")
        return dict(input_size=s.input_size, patch=a.patch, in_channels=s.input_channels, depth=a.depth,
                    hidden=a.hidden, heads=a.heads, mlp_ratio=a.mlp.ratio, num_classes=self.num_classes)


def family_dir() -> Path:
    return recipes_dir() / "family"


def family_slugs() -> list[str]:
    return sorted(p.stem for p in family_dir().glob("*.yaml"))


def _slug(text: str) -> str:
    return text.strip().lower().replace("/", "-").replace("_", "-")


def is_family(text: str) -> bool:
    """Whether ``text`` names a shipped family recipe (dit-xl-2, DiT-XL/2) or a YAML file holding one."""
    if _slug(text) in family_slugs():
        return True
    p = Path(text)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        try:
            raw = read_yaml_mapping(p, "recipe")
        except ValueError:  # not a family file: the JiT recipe reader says what is wrong with it
            return False
        return "arch" in raw
    return False


def load_family(text: str) -> FamilyRecipe:
    """A shipped family recipe by slug or name, or a YAML path; UsageError with the reason otherwise."""
    p = family_dir() / f"{_slug(text)}.yaml"
    if not p.is_file():
        p = Path(text)
    if not p.is_file():
        raise UsageError(f"no family recipe {text!r}; shipped: {', '.join(family_slugs())}")
    try:
        return FamilyRecipe.model_validate(read_yaml_mapping(p, "family recipe"))
    except ValueError as e:
        first = str(e).splitlines()
        raise UsageError(f"{p}: not a family recipe: {' '.join(first[:3])}") from None
