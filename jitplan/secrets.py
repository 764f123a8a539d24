"""API keys and the one redaction helper used wherever output is written.

The Vast.ai key is looked up the way the ``vastai`` SDK does it: ``$VAST_API_KEY``, then
``$XDG_CONFIG_HOME/vastai/vast_api_key`` (default ``~/.config/vastai/vast_api_key``), then the legacy
``~/.vast_api_key``. It comes back as a ``pydantic.SecretStr`` (its repr shows ``**********``) and is
registered, so :func:`redact` removes it from any text afterwards: log lines, registry rows, messages.

    >>> from jitplan.secrets import redact, register_secret
    >>> register_secret("sk-sentinel-123456")
    >>> redact("curl -H 'Authorization: Bearer sk-sentinel-123456' ...")
    "curl -H 'Authorization: Bearer ***' ..."
    >>> redact("VAST_API_KEY=abc123def456 python train.py")
    'VAST_API_KEY=*** python train.py'
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr

MASK = "***"
_MIN_SECRET_LEN = 6  # shorter values would mask ordinary words

_lock = threading.Lock()
_registered: set[str] = set()

# Environment variables whose values are secrets wherever they show up.
_SECRET_ENV_NAME = re.compile(r"(?i)(api_?key|token|secret|passw(or)?d|credential|auth)")
# "Bearer <x>", "api_key=<x>", '"password": "<x>"', "--api-key <x>" ...
_PATTERNS = (
    re.compile(r"(?i)(\bBearer\s+)([^\s'\"]+)"),
    re.compile(
        r"(?i)((?:api[_-]?key|(?:access|auth|api|bearer)?[_-]?token|secret|password|passwd)"
        r"[\"']?\s*[:=]\s*[\"']?)([^\s'\",}&]+)"
    ),
    re.compile(r"(?i)(--(?:api-key|token|password|secret)[ =])([^\s'\"]+)"),
)


def register_secret(value: str | SecretStr | None) -> None:
    """Remember ``value`` so that :func:`redact` masks it from now on (in this process)."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value and len(value) >= _MIN_SECRET_LEN:
        with _lock:
            _registered.add(value)


def _env_secrets(env: Mapping[str, str]) -> list[str]:
    return [v for k, v in env.items() if _SECRET_ENV_NAME.search(k) and v and len(v) >= _MIN_SECRET_LEN]


def redact(text: str, extra: tuple[str, ...] | list[str] = ()) -> str:
    """Mask every known secret in ``text``: registered values, secret-named env values, key patterns."""
    if not text:
        return text
    with _lock:
        values = set(_registered)
    values.update(v for v in extra if v and len(v) >= _MIN_SECRET_LEN)
    values.update(_env_secrets(os.environ))
    for v in sorted(values, key=len, reverse=True):  # longest first: a key containing another key
        text = text.replace(v, MASK)
    for pat in _PATTERNS:
        text = pat.sub(lambda m: m.group(1) + MASK if m.group(2) != MASK else m.group(0), text)
    return text


def redact_obj(obj: Any) -> Any:
    """:func:`redact` applied to every string inside dicts, lists and tuples (keys included)."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, Mapping):
        return {redact_obj(k): redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact_obj(x) for x in obj]
    return obj


def vast_key_files(env: Mapping[str, str] | None = None) -> list[Path]:
    """Where the vastai SDK and CLI keep the key, in lookup order."""
    env = os.environ if env is None else env
    home = Path(env.get("HOME") or Path.home())
    config = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else home / ".config"
    return [config / "vastai" / "vast_api_key", home / ".vast_api_key"]


def vast_api_key(env: Mapping[str, str] | None = None) -> SecretStr | None:
    """The Vast.ai API key from ``$VAST_API_KEY`` or the vastai key files; None when there is none.

    The value is registered for redaction before it is returned.
    """
    env = os.environ if env is None else env
    value = (env.get("VAST_API_KEY") or "").strip()
    if not value:
        for path in vast_key_files(env):
            try:
                value = path.read_text(encoding="utf-8").strip()
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                continue
            if value:
                break
    if not value:
        return None
    register_secret(value)
    return SecretStr(value)
