"""A refused API key while an instance trains: keep going over SSH, say once what bills and how to fix it.

The watcher (cloud/watch.py) needs the provider's API only to see the instance and to destroy it; training,
pulls and the watchdog's state go over SSH. So a revoked or changed key does not end the watch: it is
recorded once (``auth-failed``: what still bills, the provider's hint to fix the key, the command that
stops it once fixed), the poll backs off up to ``AUTH_BACKOFF_MAX_S``, and teardown waits for a key that works.

    key = KeyWatch(registry, run_id, provider, say=print)
    key.bad(e, poll_s=30); sleep(key.poll(30)); key.good()
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from jitplan.cloud.lifecycle import stop_hint
from jitplan.providers import AuthError

if TYPE_CHECKING:  # pragma: no cover
    from jitplan.providers import Provider
    from jitplan.runs.registry import Registry

AUTH_BACKOFF_MAX_S = 600.0  # a refused key: poll at most this far apart


class KeyWatch:
    """Whether the provider takes our API key; says once, exactly, what bills and how to fix it."""

    def __init__(self, registry: Registry, run_id: str, provider: Provider, say: Callable[[str], None]) -> None:
        self.registry, self.run_id, self.provider, self.say = registry, run_id, provider, say
        self.refused: str | None = None
        self.wait_s = 0.0

    def bad(self, e: AuthError, poll_s: float) -> None:
        self.wait_s = min(max(self.wait_s * 2, poll_s, 1.0), AUTH_BACKOFF_MAX_S)
        if self.refused is None:
            live = self.registry.cloud.instances(active_only=True, run_id=self.run_id)
            bills = ", ".join(f"instance {i.instance_id} ({i.dph:.3f} $/h)" for i in live) or "nothing recorded"
            msg = (f"{self.provider.title} refused the API key ({e.message}); still billing: {bills}. Training and "
                   f"pulls go on over SSH and this watcher keeps asking (at most {AUTH_BACKOFF_MAX_S / 60:.0f} min "
                   f"apart); it tears down when training ends once the key works. Fix: {e.hint or 'set the key again'}"
                   f" (or, once it works, `{stop_hint(self.run_id)}`)")
            self.registry.add_event(self.run_id, "auth-failed", msg)
            self.say(f"Warning: {msg}")
        self.refused = e.message

    def good(self) -> None:
        if self.refused is not None:
            self.registry.add_event(self.run_id, "auth-ok", f"{self.provider.title} takes the API key again")
            self.say(f"{self.provider.title} takes the API key again")
        self.refused, self.wait_s = None, 0.0

    def poll(self, poll_s: float) -> float:
        return max(poll_s, self.wait_s) if self.refused else poll_s
