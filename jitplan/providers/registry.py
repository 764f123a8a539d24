"""Cloud providers by name (as SkyPilot does): the one place that knows which clouds exist.

Everything above (launch, watch, stop, runs, compare, the CLI) names a provider by the string the registry
knows it by (``RunMeta.provider``, ``InstanceRow.provider``) and builds it here; no code outside
``jitplan/providers/`` names a cloud. A new cloud is one package implementing ``Provider`` plus one entry.
An entry names its package by its module path: the package (and its SDK) is imported when a provider is
built, so listing the clouds costs nothing and the interface never imports an implementation.

    p = make_provider("vast", say=print)          # key and URL from the environment
    [e.name for e in entries()]                    # ['vast']
    entry("vast").flag                             # '--vast': the CLI's shorthand flag for it
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jitplan.errors import UsageError
from jitplan.providers import Provider


@dataclass(frozen=True)
class ProviderEntry:
    name: str  # the key stored in the registry: RunMeta.provider, InstanceRow.provider, runs.backend
    title: str  # for people
    module: str  # the package implementing Provider
    cls: str  # its Provider class: ``from_env(say, http_timeout_s=None)``, ``has_credentials()``

    @property
    def flag(self) -> str:
        """The CLI's shorthand flag."""
        return "--" + self.name

    def provider_class(self) -> Any:
        cls = getattr(importlib.import_module(self.module), self.cls)
        if cls.name != self.name:
            raise UsageError(f"{self.module}.{self.cls} calls itself {cls.name!r}, registered as {self.name!r}")
        return cls

    def build(self, say: Callable[[str], None], *, http_timeout_s: float | None = None) -> Provider:
        """A configured provider (key and URL from the environment); AuthError without a key."""
        return self.provider_class().from_env(say, http_timeout_s=http_timeout_s)

    def has_credentials(self) -> bool:
        """Whether a key is set, without asking the network."""
        return bool(self.provider_class().has_credentials())


_ENTRIES: dict[str, ProviderEntry] = {
    "vast": ProviderEntry(name="vast", title="Vast.ai", module="jitplan.providers.vast", cls="VastProvider"),
}


def entries() -> list[ProviderEntry]:
    return list(_ENTRIES.values())


def names() -> list[str]:
    return list(_ENTRIES)


def is_provider(name: str | None) -> bool:
    """Whether ``name`` (a run's backend, say) is a cloud provider."""
    return name in _ENTRIES


def entry(name: str) -> ProviderEntry:
    try:
        return _ENTRIES[name]
    except KeyError:
        raise UsageError(f"unknown cloud provider {name!r} (known: {', '.join(_ENTRIES)})") from None


def by_flag(flag: str) -> ProviderEntry:
    """The provider a CLI shorthand flag (``--<name>``) stands for."""
    for e in _ENTRIES.values():
        if e.flag == flag:
            return e
    raise UsageError(f"no cloud provider has the flag {flag}")


def make_provider(name: str, say: Callable[[str], None], *, http_timeout_s: float | None = None) -> Provider:
    """The provider called ``name``, configured from the environment (key, URL, ``JITPLAN_<NAME>_POLL_S``)."""
    return entry(name).build(say, http_timeout_s=http_timeout_s)
