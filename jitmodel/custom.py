"""A user's own model: the factory spec (``FILE.py:factory`` or ``package.module:factory``), its source
digest, and loading it. The adapter protocol is in docs/models.md.

A factory returns an ``nn.Module`` whose ``forward(x, t, y)`` takes images or latents ``x`` (B, C, H, W),
timesteps ``t`` (B,) float in [0, 1] and class labels ``y`` (B,) long in [0, num_classes] (``num_classes``
is the null class of classifier-free guidance) and returns a tensor of ``x``'s shape (the prediction the
objective reads as x, v or epsilon). The module says what it takes with three integer attributes:
``in_channels``, ``input_size`` (H = W) and ``num_classes``; an optional ``blocks`` (an ``nn.ModuleList``
of its repeated blocks) is what activation checkpointing and sharding wrap.

Parsing and digesting are pure Python (no torch): ``jitplan plan --model`` decides from the digest alone
whether its cached trace is still valid.

    >>> s = parse_spec("examples/models/dit.py:dit_s_2")
    >>> s.kind, s.target, s.factory
    ('file', 'examples/models/dit.py', 'dit_s_2')
    >>> parse_spec("jitmodel.archs:nope").kind
    'module'
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
PROTOCOL_ATTRS = ("in_channels", "input_size", "num_classes")


class ModelSpecError(ValueError):
    """A factory spec that cannot be read, found or built (one line: the CLI prints it and exits 2)."""


@dataclass(frozen=True)
class ModelSpec:
    kind: str  # "file" | "module"
    target: str  # the file path as given, or the dotted module name
    factory: str

    def __str__(self) -> str:
        return f"{self.target}:{self.factory}"


def looks_like_spec(text: str) -> bool:
    """Whether ``--model`` names a factory (``X:factory``) rather than a recipe (a slug or a YAML path)."""
    head, sep, tail = text.rpartition(":")
    return bool(sep) and bool(_IDENT.match(tail)) and (head.endswith(".py") or bool(_MODULE.match(head)))


def parse_spec(text: str) -> ModelSpec:
    """``FILE.py:factory`` or ``package.module:factory``; ModelSpecError otherwise."""
    head, sep, tail = text.strip().rpartition(":")
    if not sep or not head or not _IDENT.match(tail):
        raise ModelSpecError(f"--model {text!r}: expected FILE.py:factory or package.module:factory")
    if head.endswith(".py"):
        return ModelSpec("file", head, tail)
    if not _MODULE.match(head):
        raise ModelSpecError(f"--model {text!r}: {head!r} is neither a .py file nor a dotted module name")
    return ModelSpec("module", head, tail)


def resolved(text: str) -> str:
    """The spec with a file's path made absolute: what a plan or config records, so a run started from
    another folder (a run folder, a launcher's cwd) finds the same file."""
    spec = parse_spec(text)
    return f"{source_file(spec)}:{spec.factory}" if spec.kind == "file" else str(spec)


def parse_value(text: str) -> int | float | str | bool:
    """A factory argument from the command line: true/false, an int, a float, else the text itself (what
    ``jitplan plan --model-arg`` and ``jitplan compare --arm model=...,NAME=VALUE`` read).

        >>> [parse_value(v) for v in ("128", "0.5", "True", "gelu")]
        [128, 0.5, True, 'gelu']
    """
    v = text.strip()
    if v.lower() in ("true", "false"):
        return v.lower() == "true"
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            continue
    return v


def parse_kwargs(pairs: list[str] | None) -> dict[str, int | float | str | bool]:
    """``--model-arg depth=4 --model-arg act=gelu`` -> {"depth": 4, "act": "gelu"} (values by
    :func:`parse_value`); ModelSpecError on a pair without ``=`` or a key given twice.

        >>> parse_kwargs(["depth=4", "scale=0.5", "act=gelu", "qk_norm=true"])
        {'depth': 4, 'scale': 0.5, 'act': 'gelu', 'qk_norm': True}
    """
    out: dict[str, int | float | str | bool] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not _IDENT.match(key):
            raise ModelSpecError(f"--model-arg {pair!r}: expected NAME=VALUE (e.g. depth=4)")
        if key in out:
            raise ModelSpecError(f"--model-arg {key} is given twice")
        out[key] = parse_value(value)
    return out


def _module_file(name: str) -> Path | None:
    """The source file of a dotted module, found on sys.path without importing anything; then through the
    top-level package's own locations (an editable install's finder is on sys.meta_path, not sys.path)."""
    parts = name.split(".")
    roots = [Path(entry or ".") for entry in sys.path]
    try:
        top = importlib.util.find_spec(parts[0])  # a top-level name: found, not imported
    except (ImportError, ValueError):
        top = None
    if top is not None and top.submodule_search_locations:
        roots += [Path(loc).parent for loc in top.submodule_search_locations]
    for root in roots:
        base = root.joinpath(*parts)
        for cand in (base.with_suffix(".py"), base / "__init__.py"):
            if cand.is_file():
                return cand
    return None


def source_file(spec: ModelSpec) -> Path:
    """The file that defines the factory; ModelSpecError when it does not exist."""
    if spec.kind == "file":
        p = Path(spec.target).expanduser()
        if not p.is_file():
            raise ModelSpecError(f"--model {spec}: no such file {spec.target}")
        return p.resolve()
    found = _module_file(spec.target)
    if found is None:
        raise ModelSpecError(f"--model {spec}: module {spec.target} not found on the Python path")
    return found.resolve()


def source_files(spec: ModelSpec) -> list[Path]:
    """What the digest covers: the factory's file and every ``.py`` beside it (sibling modules it may import)."""
    main = source_file(spec)
    return sorted({main, *main.parent.glob("*.py")})


def source_digest(spec: ModelSpec, config: dict[str, Any] | None = None) -> str:
    """sha256 over the source files (names and bytes), the factory's name and the configuration (JSON)."""
    h = hashlib.sha256()
    for p in source_files(spec):
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    h.update(spec.factory.encode() + b"\0")
    h.update(json.dumps(config or {}, sort_keys=True, default=str).encode())
    return h.hexdigest()


def load_factory(spec: ModelSpec) -> Any:
    """Import the factory (executes the user's module)."""
    if spec.kind == "file":
        path = source_file(spec)
        name = "jitmodel_user_" + hashlib.sha1(str(path).encode()).hexdigest()[:10]
        mspec = importlib.util.spec_from_file_location(name, path)
        if mspec is None or mspec.loader is None:
            raise ModelSpecError(f"--model {spec}: cannot load {path}")
        module = importlib.util.module_from_spec(mspec)
        sys.modules[name] = module
        try:
            mspec.loader.exec_module(module)
        except Exception as e:  # the user's code: any error becomes one line
            raise ModelSpecError(f"--model {spec}: importing {path.name} failed: {type(e).__name__}: {e}") from None
    else:
        try:
            module = importlib.import_module(spec.target)
        except Exception as e:
            raise ModelSpecError(f"--model {spec}: importing {spec.target} failed: {type(e).__name__}: {e}") from None
    fn = getattr(module, spec.factory, None)
    if not callable(fn):
        raise ModelSpecError(f"--model {spec}: {spec.target} has no callable {spec.factory!r}")
    return fn


def build(spec: ModelSpec, kwargs: dict[str, Any] | None = None) -> Any:
    """Call the factory and check the adapter protocol's attributes; ModelSpecError with the reason."""
    fn = load_factory(spec)
    try:
        model = fn(**(kwargs or {}))
    except Exception as e:
        raise ModelSpecError(f"--model {spec}: the factory raised {type(e).__name__}: {e}") from None
    if not hasattr(model, "parameters") or not callable(getattr(model, "forward", None)):
        raise ModelSpecError(f"--model {spec}: the factory returned {type(model).__name__}, not an nn.Module")
    missing = [a for a in PROTOCOL_ATTRS if not isinstance(getattr(model, a, None), int)]
    if missing:
        raise ModelSpecError(f"--model {spec}: the module lacks the integer attribute(s) {', '.join(missing)} "
                             "(docs/models.md, the adapter protocol)")
    return model


# --------------------------------------------------------------------------- what a checkpoint records

def record(spec_text: str, kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a checkpoint of a user's model stores to rebuild it: the factory, its arguments, the source digest."""
    spec = parse_spec(spec_text)
    return {"factory": str(spec), "factory_kwargs": dict(kwargs or {}), "source_digest": source_digest(spec, kwargs)}


def check_same_model(saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse (ModelSpecError, one line) to load a checkpoint recorded by ``saved`` into the model ``current``."""
    if saved.get("factory") != current.get("factory"):
        raise ModelSpecError(f"the checkpoint holds {saved.get('factory') or 'a JiT variant'}, not "
                             f"{current.get('factory') or 'a JiT variant'}")
    if saved.get("factory_kwargs", {}) != current.get("factory_kwargs", {}):
        raise ModelSpecError(f"the checkpoint's {saved['factory']} was built with {saved.get('factory_kwargs')}, "
                             f"not {current.get('factory_kwargs')}")
    if saved.get("source_digest") != current.get("source_digest"):
        raise ModelSpecError(f"the source of {saved['factory']} changed since the checkpoint was written (digest "
                             f"{str(saved.get('source_digest'))[:12]} -> {str(current.get('source_digest'))[:12]})")


def build_recorded(saved: dict[str, Any]) -> Any:
    """Rebuild the model a checkpoint recorded, after checking that its source is still the one it was trained
    from (``jitmodel sample`` on a checkpoint of a user's model)."""
    current = record(saved["factory"], saved.get("factory_kwargs"))
    check_same_model(saved, current)
    return build(parse_spec(saved["factory"]), saved.get("factory_kwargs"))


def build_model(saved: dict[str, Any], device: Any = None, dtype: Any = None) -> Any:
    """The network of a ``ModelConfig`` that names a factory (``jitmodel.denoiser.Denoiser``): checked against
    its recorded source digest when it has one, built on ``device`` (``meta`` builds without memory)."""
    import torch  # lazy: start-up (parsing and digests stay torch-free)

    if saved.get("source_digest"):
        check_same_model(saved, record(saved["factory"], saved.get("factory_kwargs")))
    with torch.device(device or "cpu"):
        model = build(parse_spec(saved["factory"]), saved.get("factory_kwargs"))
    for attr, key in (("input_size", "img_size"), ("in_channels", "in_channels"), ("num_classes", "num_classes")):
        if key in saved and getattr(model, attr) != saved[key]:
            raise ModelSpecError(f"{saved['factory']} builds {attr} {getattr(model, attr)} but the config says "
                                 f"{key} {saved[key]}")
    return model.to(dtype=dtype) if dtype is not None else model
