"""The arms of a comparison from the command line: objectives, models, or both crossed. Pure but ``with_params``.

``--objectives x,v,eps`` and ``--arm PRED[:LOSS]`` compare objectives of the config's network (as before
models). ``--model`` (repeat it, or a comma list) compares networks, each with the config's objective, or
crossed with ``--objectives`` when both are given. ``--arm model=SPEC[,pred=P][,loss=L][,ARG=VALUE...]`` adds
one arm: that network (ARG=VALUE are its factory's arguments) with that objective (the config's when neither
is given; LOSS defaults to v when PRED is given, as everywhere).

    >>> from jitmodel.config import DataConfig, ModelConfig, TrainConfig
    >>> base = TrainConfig(model=ModelConfig(variant="JiT-Tiny/8", img_size=32, num_classes=10),
    ...                    data=DataConfig(kind="digits"))
    >>> [a.name for a in plan_arms(base, None, None, ["jit,jitmodel.archs.dit:dit_digits"])]
    ['JiT-Tiny/8', 'dit_digits']
    >>> [a.name for a in plan_arms(base, ["model=jitmodel.archs.dit:dit_digits,pred=v"], "x", ["jit"])]
    ['JiT-Tiny/8 x:v', 'dit_digits v:v']
"""

from __future__ import annotations

from jitmodel.config import ModelConfig, TrainConfig
from jitmodel.custom import parse_value
from jitplan.compare.models import (
    KwargValue,
    ModelChoice,
    count_params,
    labels,
    model_key,
    parse_model,
    resolve,
)
from jitplan.compare.settings import KINDS, Arm, parse_arm, parse_arms
from jitplan.errors import UsageError

ARM_KEYS = ("model", "pred", "loss")


def parse_arm_text(text: str) -> tuple[ModelChoice | None, str | None, str | None]:
    """One ``--arm``: ``PRED[:LOSS]`` or ``model=SPEC,pred=P,loss=L,ARG=VALUE`` -> (network or None for the
    config's, prediction or None, loss space or None)."""
    if "=" not in text:
        a = parse_arm(text)
        return None, a.prediction, a.loss_space
    fields: dict[str, str] = {}
    kwargs: dict[str, KwargValue] = {}
    for item in (i.strip() for i in text.split(",")):
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key or not value:
            raise UsageError(f"--arm {text!r}: {item!r} is not KEY=VALUE; expected model=SPEC[,pred=P][,loss=L]"
                             "[,ARG=VALUE...]")
        if key in fields or key in kwargs:
            raise UsageError(f"--arm {text!r}: {key} is given twice")
        if key in ARM_KEYS:
            fields[key] = value
        elif key.isidentifier():
            kwargs[key] = parse_value(value)
        else:
            raise UsageError(f"--arm {text!r}: {key!r} is neither model, pred, loss nor a factory argument name")
    for k in ("pred", "loss"):
        if k in fields and fields[k].lower() not in KINDS:
            raise UsageError(f"--arm {text!r}: unknown {k} {fields[k]!r}; expected one of {', '.join(KINDS)}")
    if kwargs and "model" not in fields:
        raise UsageError(f"--arm {text!r}: factory arguments ({', '.join(kwargs)}) need model=FACTORY")
    choice = parse_model(fields["model"], kwargs) if "model" in fields else None
    pred = fields.get("pred", "").lower() or None
    loss = fields.get("loss", "").lower() or ("v" if pred else None)
    return choice, pred, loss


def plan_arms(base: TrainConfig, arms: list[str] | None, objectives: str | None, models: list[str] | None, *,
              remote: bool = False) -> list[Arm]:
    """The arms to train, named by what varies: the objective (``x:v``), the network (``dit_digits``), or
    both (``dit_digits x:v``). UsageError for bad or duplicated arms and for fewer than two."""
    model_texts = [m.strip() for t in (models or []) for m in t.split(",") if m.strip()]
    if not model_texts and not any("=" in t for t in arms or []):
        return parse_arms(arms, objectives)  # objectives of the config's network
    own = (base.diffusion.prediction, base.diffusion.loss_space)
    objs = [(a.prediction, a.loss_space) for a in
            (parse_arm(o) for o in (objectives or "").split(",") if o.strip())]
    combos: list[tuple[ModelChoice, str, str]] = []
    if model_texts or objs:  # every --model with every --objective (the config's network / objective if none)
        for choice in [parse_model(m) for m in model_texts] or [ModelChoice(kind="base")]:
            combos += [(choice, p, lo) for p, lo in objs or [own]]
    for text in arms or []:
        named, pred, loss = parse_arm_text(text)
        combos.append((named or ModelChoice(kind="base"), pred or own[0], loss or own[1]))
    configs = [resolve(c, base.model, remote=remote) for c, _, _ in combos]
    names = labels([c for c, _, _ in combos], configs)
    keys = [model_key(mc) for mc in configs]
    seen: set[tuple[str, str, str]] = set()
    for (_, p, lo), key, name in zip(combos, keys, names, strict=True):
        if (key, p, lo) in seen:
            raise UsageError(f"arm {name} {p}:{lo} is given twice")
        seen.add((key, p, lo))
    if len(combos) < 2:
        raise UsageError(f"a comparison needs at least two arms, got {len(combos)}",
                         hint="e.g. --model jit --model jitmodel.archs.dit:dit_digits, or add --objectives x,v")
    vary_models, vary_objs = len(set(keys)) > 1, len({(p, lo) for _, p, lo in combos}) > 1
    out = []
    for (_, p, lo), mc, name in zip(combos, configs, names, strict=True):
        label = f"{name} {p}:{lo}" if vary_models and vary_objs else name if vary_models else None
        out.append(Arm.model_validate({"prediction": p, "loss_space": lo, "model": mc.model_dump(),
                                       "model_label": name, "label": label}))
    slugs = [a.slug for a in out]
    for a in out:
        if slugs.count(a.slug) > 1:
            raise UsageError(f"two arms would share the folder {a.slug!r}; give them different models or objectives")
    return out


def with_params(arms: list[Arm], base: TrainConfig) -> list[Arm]:
    """The arms with their network's name and trainable parameters, each network built once on ``meta``:
    a one-line UsageError when a factory cannot be built or does not take the data (torch)."""
    counted: dict[str, int] = {}
    out = []
    for a in arms:
        mc: ModelConfig = a.model or base.model
        key = model_key(mc)
        name = a.model_label or labels([ModelChoice(kind="base")], [mc])[0]
        if key not in counted:
            counted[key] = count_params(mc, name)
        out.append(a.model_copy(update={"params": counted[key], "model_label": name}))
    return out
