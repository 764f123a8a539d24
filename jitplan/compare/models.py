"""The network of an arm: the config's own, a JiT variant, or a factory (``FILE.py:factory`` or
``package.module:factory``, docs/models.md), resolved against the base config and checked against its data.

Parsing and resolving are pure (no torch); ``count_params`` builds the network on ``meta`` (torch, no memory)
to count its parameters and to check that it takes the data's image size, channels and classes.

    >>> parse_model("jitmodel.archs.dit:dit_digits").factory, parse_model("jit").kind
    ('jitmodel.archs.dit:dit_digits', 'jit')
    >>> parse_model("jit-tiny/4").variant
    'JiT-Tiny/4'
    >>> parse_model("jitmodel.archs.dit:dit_digits", {"hidden": 128}).label
    'dit_digits(hidden=128)'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from jitmodel.config import ModelConfig, validation_summary
from jitmodel.custom import ModelSpecError, looks_like_spec, parse_spec, source_file
from jitmodel.variants import get_variant
from jitplan.errors import UsageError
from jitplan.launch.ssh import project_root

if TYPE_CHECKING:
    from collections.abc import Iterable

KwargValue = int | float | str | bool
_FACTORY_KEYS = ("factory", "factory_kwargs", "source_digest")
MODEL_FORMS = "base, jit, a JiT variant (JiT-Tiny/4), FILE.py:factory or package.module:factory"


class ModelChoice(BaseModel):
    """What an arm trains: ``base`` (the config's own network), ``jit`` (the config's JiT variant), a JiT
    variant by name, or a factory with its keyword arguments."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["base", "jit", "variant", "factory"]
    variant: str | None = None
    factory: str | None = None
    kwargs: dict[str, KwargValue] = {}

    @property
    def label(self) -> str:
        """What tables call it when models differ: the variant, or the factory's name (with its file's for a
    ``FILE.py`` factory) and its arguments."""
        if self.kind == "variant":
            return str(self.variant)
        if self.kind != "factory":
            return self.kind
        spec = parse_spec(str(self.factory))
        name = f"{Path(spec.target).name}:{spec.factory}" if spec.kind == "file" else spec.factory  # my_model.py:make
        args = ",".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"{name}({args})" if args else name


def parse_model(text: str, kwargs: dict[str, KwargValue] | None = None) -> ModelChoice:
    """``base``, ``jit``, a JiT variant, or a factory spec whose file or module exists; UsageError otherwise."""
    t = text.strip()
    if t.lower() in ("base", "jit"):
        if kwargs:
            raise UsageError(f"model {t}: arguments ({', '.join(kwargs)}) are for a factory, not {t}")
        return ModelChoice(kind="base" if t.lower() == "base" else "jit")
    if looks_like_spec(t):
        try:
            spec = parse_spec(t)
            source_file(spec)
        except ModelSpecError as e:
            raise UsageError(str(e).replace("--model ", "model ", 1)) from None
        return ModelChoice(kind="factory", factory=str(spec), kwargs=dict(kwargs or {}))
    try:
        variant = get_variant(t).name
    except KeyError:
        raise UsageError(f"unknown model {t!r}: expected {MODEL_FORMS}") from None
    if kwargs:
        raise UsageError(f"model {variant}: arguments ({', '.join(kwargs)}) are for a factory, not a JiT variant")
    return ModelChoice(kind="variant", variant=variant)


def resolve(choice: ModelChoice, base: ModelConfig, *, remote: bool = False) -> ModelConfig:
    """The arm's ModelConfig: the base's image size, channels and classes with this network. Pure.

    A ``FILE.py`` factory is made absolute (the trainer runs in the arm's folder); over SSH it is refused,
    since only the project's code is uploaded: a module inside the project works there.
    """
    if choice.kind == "base":
        return base
    if choice.kind == "jit" and base.factory is not None:
        raise UsageError(f"model jit: the config trains {base.factory}, not a JiT variant; name one (e.g. "
                         "JiT-Tiny/4) or use base for the config's own network")
    bare = {k: v for k, v in base.model_dump().items() if k not in _FACTORY_KEYS}
    if choice.kind == "jit":
        return ModelConfig.model_validate(bare)
    if choice.kind == "variant":
        raw = {**bare, "variant": choice.variant}
    else:
        spec = parse_spec(str(choice.factory))
        factory = str(choice.factory)
        if spec.kind == "file":
            path = source_file(spec)
            if remote:
                raise UsageError(f"model {factory}: a FILE.py factory runs on this machine only (--local); over "
                                 "SSH or a cloud name it as a module inside the project, which is uploaded",
                                 hint=_module_hint(path))
            factory = f"{path}:{spec.factory}"
        raw = {**bare, "factory": factory, "factory_kwargs": dict(choice.kwargs)}
    try:
        return ModelConfig.model_validate(raw)
    except ValidationError as e:
        raise UsageError(f"model {choice.label}: {validation_summary(e)}") from None


def _module_hint(path: Path) -> str:
    try:
        rel = path.relative_to(project_root())
    except (ValueError, UsageError):
        return "move it into the project folder and name it as package.module:factory"
    return f"e.g. --model {'.'.join(rel.with_suffix('').parts)}:FACTORY"


def labels(choices: Iterable[ModelChoice], configs: Iterable[ModelConfig]) -> list[str]:
    """A distinct name per network: the JiT variant or the factory's name (with its arguments); the whole
    spec where two factories share a name. Pure.

        >>> a = parse_model("jit")
        >>> base = ModelConfig(variant="JiT-Tiny/8", img_size=32, num_classes=10)
        >>> labels([a], [base])
        ['JiT-Tiny/8']
    """
    configs = list(configs)
    names = []
    for ch, mc in zip(choices, configs, strict=True):
        if mc.factory is None:
            names.append(mc.variant)
        elif ch.kind == "factory":
            names.append(ch.label)
        else:  # the config's own factory
            names.append(ModelChoice(kind="factory", factory=mc.factory).label)
    keys = [model_key(mc) for mc in configs]
    out = list(names)
    for i, n in enumerate(names):
        if any(n == m and keys[i] != keys[j] for j, m in enumerate(names)):
            mc = configs[i]
            args = ",".join(f"{k}={v}" for k, v in mc.factory_kwargs.items())
            out[i] = f"{mc.factory}({args})" if args else str(mc.factory)
    return out


def model_key(mc: ModelConfig) -> str:
    """What makes two networks the same (the digest aside: it follows from the factory and its arguments)."""
    return json.dumps({k: v for k, v in mc.model_dump(mode="json").items() if k != "source_digest"},
                      sort_keys=True)


def count_params(mc: ModelConfig, label: str) -> int:
    """Trainable parameters of the network, built on ``meta`` (no memory); a one-line UsageError when the
    factory cannot be loaded or built, or builds a network for other data than the config's."""
    from jitmodel.config import DiffusionConfig  # lazy: torch below
    from jitmodel.denoiser import Denoiser  # lazy: torch

    try:
        net = Denoiser(mc, DiffusionConfig(), device="meta").net
    except ModelSpecError as e:
        msg = " ".join(str(e).split()).removeprefix("--model ")
        if " builds " in msg:  # jitmodel.custom.build_model: its attributes against the config's
            raise UsageError(f"model {label} does not take the data: {msg}") from None
        raise UsageError(f"model {msg}") from None
    except ValueError as e:
        raise UsageError(f"model {label}: {' '.join(str(e).split())[:200]}") from None
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
