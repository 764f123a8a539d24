"""Cloud providers by name (as SkyPilot does): the one place that knows which clouds exist.

Everything above (launch, watch, stop, runs, compare, the CLI) names a provider by the string the registry
knows it by (``RunMeta.provider``, ``InstanceRow.provider``) and builds it here; no code outside
``jitplan/providers/`` names a cloud. A new cloud is one package implementing ``Provider`` plus one entry.

    p = make_provider("vast", say=print)          # key and URL from the environment
    [e.name for e in entries()]                    # ['vast']
    entry("vast").flag                             # '--vast': the CLI's shorthand flag for it
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from jitplan.errors import UsageError
from jitplan.providers import Provider
from jitplan.providers.vast import VastProvider


@dataclass(frozen=True)
class ProviderEntry:
    name: str  # the key stored in the registry: RunMeta.provider, InstanceRow.provider, runs.backend
    title: str  # for people
    flag: str  # the CLI's shorthand flag
    build: Callable[..., Provider]  # (say, http_timeout_s=None) -> a configured provider; AuthError without key
    has_credentials: Callable[[], bool]  # without asking the network


_ENTRIES: dict[str, ProviderEntry] = {
    VastProvider.name: ProviderEntry(name=VastProvider.name, title=VastProvider.title, flag="--" + VastProvider.name,
                                     build=VastProvider.from_env, has_credentials=VastProvider.has_credentials),
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
