"""``JITPLAN_*`` environment settings: the layer between a hardware file and the defaults.

Precedence, highest first: command-line flag > plan/hardware file > ``JITPLAN_*`` variable > probe >
default. A value taken from the environment is named in the plan's provenance, so a plan never depends
on an invisible setting. Pure: takes the environment as a mapping.

    >>> s = read_env({"JITPLAN_HOST_RAM": "24GB", "JITPLAN_CPUS": "8", "HOME": "/root"})
    >>> s.take("host_ram", None), s.take("cpus", 16)  # a flag's 16 wins over the environment's 8
    ('24GB', 16)
    >>> s.provenance({})
    {'host.ram_bytes': 'env JITPLAN_HOST_RAM=24GB'}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from jitplan.errors import UsageError

#: option name -> environment variable
ENV_VARS: dict[str, str] = {
    "gpus": "JITPLAN_GPUS",
    "hardware": "JITPLAN_HARDWARE",
    "recipe": "JITPLAN_RECIPE",
    "host_ram": "JITPLAN_HOST_RAM",
    "cpus": "JITPLAN_CPUS",
    "shm": "JITPLAN_SHM",
    "disk": "JITPLAN_DISK",
    "price_per_hour": "JITPLAN_PRICE_PER_HOUR",
}

#: option name -> the plan's provenance key it feeds
PROVENANCE_KEYS: dict[str, str] = {
    "gpus": "gpu", "hardware": "gpu", "recipe": "recipe", "host_ram": "host.ram_bytes", "cpus": "host.cpus",
    "shm": "host.shm_bytes", "disk": "host.disk_free_bytes", "price_per_hour": "price_per_hour",
}


@dataclass
class EnvSettings:
    values: dict[str, str] = field(default_factory=dict)  # option -> raw text from the environment
    names: set[str] = field(default_factory=set)  # options actually used (filled a gap)

    def take(self, option: str, current: object) -> object:
        """``current`` when set (a flag or a file wins), else the environment's value (recorded as used)."""
        if current is not None or option not in self.values:
            return current
        self.names.add(option)
        return self.values[option]

    def provenance(self, existing: Mapping[str, str]) -> dict[str, str]:
        """Provenance entries for the settings taken from the environment. Where the value only names
        something (a GPU model, a recipe), what it resolved to is kept after an arrow."""
        out = {}
        for o in sorted(self.names):
            key, said = PROVENANCE_KEYS[o], f"env {ENV_VARS[o]}={self.values[o]}"
            out[key] = f"{said} -> {existing[key]}" if o in ("gpus", "hardware", "recipe") and key in existing else said
        return out


def read_env(environ: Mapping[str, str]) -> EnvSettings:
    return EnvSettings(values={o: environ[v].strip() for o, v in ENV_VARS.items() if environ.get(v, "").strip()})


def env_int(option: str, text: object) -> int | None:
    """An integer setting that may come from the environment (text); one-line UsageError when malformed."""
    if text is None or isinstance(text, int):
        return text
    try:
        n = int(str(text))
    except ValueError:
        raise UsageError(f"{ENV_VARS[option]}: {text!r} is not an integer") from None
    if n <= 0:
        raise UsageError(f"{ENV_VARS[option]}: {text!r} must be positive")
    return n


def env_float(option: str, text: object) -> float | None:
    if text is None or isinstance(text, float | int):
        return text
    try:
        x = float(str(text))
    except ValueError:
        raise UsageError(f"{ENV_VARS[option]}: {text!r} is not a number") from None
    if x < 0:
        raise UsageError(f"{ENV_VARS[option]}: {text!r} must not be negative")
    return x


def env_seconds(name: str, default: float, env: Mapping[str, str] | None = None) -> float:
    """A positive number of seconds from ``$name``, else ``default``; one-line UsageError when malformed.

        >>> env_seconds("JITPLAN_X_S", 5.0, {}), env_seconds("JITPLAN_X_S", 5.0, {"JITPLAN_X_S": "2.5"})
        (5.0, 2.5)
    """
    raw = (os.environ if env is None else env).get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise UsageError(f"{name} must be > 0 seconds, got {value}")
    return value
