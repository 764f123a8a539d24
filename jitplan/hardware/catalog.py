"""The GPU catalog (``catalog.yaml``, data with a source per row) and name matching.

The spec grammar (``--gpus 2xRTX3060``), the probe (NVML names) and the Vast provider (offer names)
all map names to catalog rows through this module.

    >>> from jitplan.hardware.catalog import lookup, match_nvml_name
    >>> lookup("rtx-3060").name
    'RTX 3060 12GB'
    >>> match_nvml_name("NVIDIA H100 80GB HBM3").name
    'H100 SXM'
    >>> match_nvml_name("NVIDIA GeForce RTX 3080", memory_bytes=12288 * 2**20).name
    'RTX 3080 12GB'
"""

from __future__ import annotations

import difflib
import functools
import re
from pathlib import Path

import yaml

from jitplan.errors import UsageError
from jitplan.hardware.schema import GPUSpec

CATALOG_PATH = Path(__file__).with_name("catalog.yaml")
_MIB = 2**20
_NOISE = re.compile(r"nvidia|geforce|[^a-z0-9]")
# Memory sizes and form factors as separate words: "A100 40GB SXM" -> family "a100".
_FAMILY_NOISE = re.compile(r"[\s_-]+(?:\d+\s*gi?b|sxm\d?|pcie|nvl|hbm\d?e?)(?=$|[\s_-])", re.IGNORECASE)
_MEM_GB = re.compile(r"(\d+)\s*gb", re.IGNORECASE)
_MEM_SUFFIX = re.compile(r"[\s_-]+\d+\s*(?:gb|gib|g)$", re.IGNORECASE)  # "RTX 3060 12GB" -> "RTX 3060"


def normalize(name: str) -> str:
    """Lower-case, drop vendor words, spaces, hyphens and punctuation: "NVIDIA GeForce RTX-3060" -> "rtx3060"."""
    return _NOISE.sub("", name.lower())


def _keys(name: str) -> list[str]:
    """The keys a name is found under: itself, without a memory suffix, each also without "rtx"."""
    keys = [normalize(name), normalize(_MEM_SUFFIX.sub("", name.strip()))]
    keys += [k[3:] for k in keys if k.startswith("rtx") and len(k) > 3]
    return list(dict.fromkeys(k for k in keys if k))


@functools.lru_cache(maxsize=1)
def catalog() -> list[GPUSpec]:
    """All catalog rows, in file order (cached: loaded once per process)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    rows = yaml.load(CATALOG_PATH.read_text(), Loader=loader)
    specs = []
    for row in rows:
        row = dict(row)
        row["memory_bytes"] = int(row.pop("memory_mib")) * _MIB
        specs.append(GPUSpec(**row))
    return specs


@functools.lru_cache(maxsize=1)
def _index() -> dict[str, list[GPUSpec]]:
    index: dict[str, list[GPUSpec]] = {}
    # Canonical names first, so that an exact name wins over another row's alias.
    for pass_aliases in (False, True):
        for spec in catalog():
            for name in (spec.aliases if pass_aliases else [spec.name]):
                for key in _keys(name):
                    bucket = index.setdefault(key, [])
                    if spec not in bucket:
                        bucket.append(spec)
    return index


def _family(name: str) -> str:
    return normalize(_FAMILY_NOISE.sub("", name.strip()))


@functools.lru_cache(maxsize=1)
def _families() -> dict[str, list[GPUSpec]]:
    fam: dict[str, list[GPUSpec]] = {}
    for spec in catalog():
        fam.setdefault(_family(spec.name), []).append(spec)
    return fam


def _pick(candidates: list[GPUSpec], memory_bytes: int | None) -> GPUSpec:
    if memory_bytes is None or len(candidates) == 1:
        return candidates[0]
    return min(candidates, key=lambda s: abs(s.memory_bytes - memory_bytes))


def match_nvml_name(name: str, memory_bytes: int | None = None) -> GPUSpec | None:
    """The catalog row for an NVML or Vast name ("NVIDIA GeForce RTX 3060", "H100 SXM"), or None.

    ``memory_bytes`` (what NVML reports) picks between rows that share a name (RTX 3080 10/12 GB).
    """
    index = _index()
    keys = _keys(name)
    gb = _MEM_GB.search(name)
    hint = memory_bytes if memory_bytes is not None else (int(gb.group(1)) * 2**30 if gb else None)
    if keys and keys[0] in index:
        return _pick(index[keys[0]], hint)
    family = _families().get(_family(name))
    if gb and family:  # "A100-40GB": the size in the name picks the row of its family
        return _pick(family, hint)
    for key in keys[1:]:
        if key in index:
            return _pick(index[key], hint)
    return None


def _edits(a: str, b: str) -> int:
    """Edits from ``a`` to ``b``: insert, delete, substitute, or swap two neighbours ("3600" -> "3060" is one)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def closest_names(name: str, n: int = 3) -> list[str]:
    """Catalog names closest to ``name`` (for error messages): fewest typing slips first (a swapped pair of
    digits is one), then the most shared characters.

        >>> closest_names("RTX3600")[0]
        'RTX 3060 12GB'
    """
    names = {normalize(s.name): s.name for s in catalog()}
    for s in catalog():
        for a in s.aliases:
            names.setdefault(normalize(a), s.name)
    key = normalize(name)
    hits = difflib.get_close_matches(key, list(names), n=len(names), cutoff=0.4)
    def slips(h: str) -> int:  # "4090" is "RTX 4090" less the "rtx" people leave out
        return min(_edits(key, h), _edits(key, h[3:]) if h.startswith("rtx") else len(h))

    hits.sort(key=lambda h: (slips(h), -difflib.SequenceMatcher(None, key, h).ratio()))
    out: list[str] = []
    for h in hits:
        if names[h] not in out:
            out.append(names[h])
    return out[:n]


def lookup(name: str, memory_bytes: int | None = None) -> GPUSpec:
    """The catalog row for ``name``; raises UsageError naming the closest rows when it is unknown."""
    spec = match_nvml_name(name, memory_bytes)
    if spec is None:
        close = closest_names(name)
        closest = f"closest: {', '.join(close)}; " if close else ""
        raise UsageError(
            f"unknown GPU {name!r} ({closest}all names: jitplan plan --list-gpus); for a card not in the catalog "
            "pass --gpu-mem and --gpu-tflops",
        )
    return spec
