"""The life of one rented instance: a state machine whose state is written to the registry before each side
effect, and the one place that destroys an instance (the only ``provider.destroy`` call in jitplan).

::

    intent --create--> creating/loading --ready--> running --start--> training --pull--> pulled
       |                   |                          |                  |  ^              |
       |                   +--- failed                +------------------+--+--------------+
       |                                                  |         |          |
       |                                   outbid / exited / offline (lost: read the disk first)
       |                                                  |                    |
       +-- (no instance)                 destroying --> destroyed      kept / stopped (at a cap)

- **intent**: the label ``jitplan-<run id>-<n>`` is committed (``registry.cloud.record_intent``) before the
  create that will carry it, so a create whose answer never came is found by label, never re-sent.
- **creating/loading -> running**: the provider reports it up and SSH answers (``provision``).
- **training -> pulled**: training started; each verified pull of its checkpoint (``launch/pull.py``).
- **outbid / exited / offline**: the provider stopped it, it exited, or it stopped answering. Its disk is read
  (a last pull while reachable) before it is destroyed.
- **kept**: a launch left it running on purpose (``--keep``, attached, training runs on it); it bills.
- **stopped**: stopped at a cap by the provider's stop, which keeps the disk (storage still bills).
- **destroying -> destroyed**: written before the destroy call; ``destroyed`` only once the provider says the
  instance is gone. A destroy that keeps failing past its deadline leaves ``destroying`` (it may bill) and
  says the exact command that finishes the job.

    lc = Lifecycle(registry, provider, run_id, say=print)
    lc.mark(iid, "training", "training started on instance 31337001")
    lc.destroy(iid, "training finished and its checkpoint is home")     # CleanupFailed when it survives
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from jitplan.envsettings import env_seconds
from jitplan.providers import LABEL_PREFIX, AuthError, CleanupFailed, ProviderError
from jitplan.runs.schema import INSTANCE_STATUSES, InstanceStatus

if TYPE_CHECKING:  # pragma: no cover
    from jitplan.providers import Provider
    from jitplan.runs.registry import Registry

_MINTED = re.compile(re.escape(LABEL_PREFIX) + r"[0-9a-f]{6}-[1-9][0-9]{0,3}")
DESTROY_DEADLINE_S = 600.0  # keep trying a destroy through 429s and 5xx for this long (JITPLAN_DESTROY_DEADLINE_S)
_LOST = ("outbid", "exited", "offline")
_UP = ("running", "training", "pulled")
# Which state may follow which. Anything may be destroyed; "lost" is the provider forgetting it on its own.
TRANSITIONS: dict[str, frozenset[str]] = {
    "creating": frozenset({"loading", "running", "failed", *_LOST, "kept"}),
    "loading": frozenset({"running", "failed", *_LOST, "kept"}),
    "running": frozenset({"training", *_LOST, "kept", "failed"}),
    "training": frozenset({"training", "pulled", *_LOST, "kept", "stopped"}),
    "pulled": frozenset({"training", "pulled", *_LOST, "kept", "stopped"}),
    "outbid": frozenset({"pulled", "training", "offline", "exited", "outbid", "kept"}),
    "exited": frozenset({"pulled", "exited", "kept"}),
    "offline": frozenset({"pulled", "training", "running", "offline", "outbid", "exited", "kept"}),
    "kept": frozenset({"training", "pulled", "kept", "stopped", *_LOST}),
    "stopped": frozenset({"stopped", "kept", "pulled"}),
    "failed": frozenset({"failed"}),
    "destroying": frozenset({"destroying"}),  # until the provider confirms it gone
    "destroyed": frozenset(),
    "lost": frozenset(),
}
for _s in INSTANCE_STATUSES:  # every live state may be torn down, or vanish
    if _s not in ("destroyed", "lost"):
        TRANSITIONS[_s] = TRANSITIONS[_s] | {"destroying", "lost"}
TRANSITIONS["destroying"] = TRANSITIONS["destroying"] | {"destroyed"}


def label_for(run_id: str, attempt: int) -> str:
    """The label of a run's ``attempt``-th create: the idempotency key, and the mark of an instance jitplan
    minted (the orphan sweep touches no other)."""
    return f"{LABEL_PREFIX}{run_id}-{attempt}"


def is_minted(label: str | None) -> bool:
    """Whether jitplan minted ``label`` (``jitplan-<6 hex run id>-<n>``), not a user's ``jitplan-dev-box``.

        >>> is_minted("jitplan-8f3c2a-1"), is_minted("jitplan-dev-box"), is_minted("jitplan-8f3c2a-1x")
        (True, False, False)
    """
    return bool(label) and _MINTED.fullmatch(label or "") is not None


def past_its_cap(registry: Registry, run_id: str | None, now: float | None = None) -> bool:
    """Whether the run's watchdog was told to stop the instance itself at a cap (a ``cap`` event) and that time
    has come: a ``stopped`` instance is then the cap holding (its disk kept), not an outbid one."""
    if run_id is None:
        return False
    caps = registry.events(run_id, kind="cap")
    at = caps[-1].data.get("stop_at") if caps else None
    return isinstance(at, (int, float)) and (time.time() if now is None else now) >= at


def stop_hint(run_id: str) -> str:
    """The one spelling of the command that stops a run and destroys its instances (the run id filled in)."""
    if not run_id or run_id.upper() == "RUN":
        raise ValueError("stop_hint needs the real run id")
    return f"jitplan stop {run_id} --destroy --yes"


def allowed(old: str, new: str) -> bool:
    """Whether the machine above lets ``old`` become ``new``. Pure.

        >>> allowed("training", "pulled"), allowed("destroyed", "training")
        (True, False)
    """
    return new in TRANSITIONS.get(old, frozenset())


def destroy_deadline_s(env: dict[str, str] | None = None) -> float:
    """``$JITPLAN_DESTROY_DEADLINE_S``, else 10 minutes: how long teardown retries through 429s and 5xx."""
    return env_seconds("JITPLAN_DESTROY_DEADLINE_S", DESTROY_DEADLINE_S, env)


class Lifecycle:
    """The instances of one run (``run_id`` None: an orphan's) on one provider."""

    def __init__(self, registry: Registry, provider: Provider, run_id: str | None, *,
                 say: Callable[[str], None] = lambda m: None, sleep: Callable[[float], None] | None = None,
                 deadline_s: float | None = None) -> None:
        self.registry, self.provider, self.run_id, self.say = registry, provider, run_id, say
        self.sleep = sleep or getattr(provider, "sleep", None) or time.sleep  # the provider's: tests make it instant
        self.deadline_s = destroy_deadline_s() if deadline_s is None else deadline_s

    def status(self, iid: int | str) -> str | None:
        rows = [r for r in self.registry.cloud.instances(active_only=False, provider=self.provider.name)
                if r.instance_id == str(iid)]
        return rows[0].status if rows else None

    def mark(self, iid: int | str, new: InstanceStatus, why: str | None = None, *, label: str | None = None,
             dph: float | None = None) -> None:
        """Record that instance ``iid`` is now ``new`` (before acting on it). A move the machine does not
        allow is recorded as an event and written anyway: the registry follows what happened. An instance
        the registry does not know yet (an orphan, one found by label) is recorded with ``label``."""
        old = self.status(iid)
        if old is None:
            self.registry.cloud.add_instance(self.run_id, self.provider.name, iid, label or f"unknown-{iid}",
                                             dph or 0.0, status=new)
            if why and self.run_id is not None:
                self.registry.add_event(self.run_id, new, why, instance_id=str(iid))
            return
        if old == new and not why:
            return
        if old != new and not allowed(old, new) and self.run_id is not None:
            self.registry.add_event(self.run_id, "lifecycle", f"instance {iid}: {old} -> {new} is not in the "
                                    "state machine; recorded as it happened", instance_id=str(iid))
        self.registry.cloud.update_instance(self.provider.name, iid, status=new)
        if why and self.run_id is not None:
            self.registry.add_event(self.run_id, new, why, instance_id=str(iid))

    def live(self) -> list[int]:
        """This run's instances on this provider that are not gone."""
        if self.run_id is None:
            return []
        return [int(i.instance_id) for i in self.registry.cloud.instances(active_only=True, run_id=self.run_id,
                                                                           provider=self.provider.name)]

    def destroy(self, iid: int, why: str, *, label: str | None = None, dph: float | None = None) -> None:
        """THE destroy: ``destroying`` is written first, then the provider is asked, through 429s and 5xx until
        the deadline; ``destroyed`` once it is gone. CleanupFailed (it may still bill; the row stays
        ``destroying`` and the message names the command that finishes it) otherwise."""
        self.mark(iid, "destroying", f"destroying instance {iid}: {why}", label=label, dph=dph)
        waited, tries, last, ok = 0.0, 0, "", False
        while not ok:
            tries += 1
            try:
                self.provider.destroy(iid)  # the only call of Provider.destroy in jitplan
                ok = True
                continue
            except AuthError as e:  # waiting cannot fix a key: the caller decides (the watcher waits for a fix)
                msg = (f"{self.provider.title} instance {iid} was not destroyed: {e.message}; it may still be billing")
                if self.run_id is not None:
                    self.registry.add_event(self.run_id, "cleanup-failed", msg, instance_id=str(iid))
                fix = f"fix the key ({e.hint or 'set it again'}), then `{self._finish()}`"
                raise AuthError(msg, hint=fix) from None
            except ProviderError as e:  # 429, 5xx, or it survived the provider's own checks: again, later
                last = e.message
            wait = min(2.0 ** min(tries, 5), 30.0)
            if waited + wait > self.deadline_s:
                break
            self.sleep(wait)
            waited += wait
        if not ok and not self._gone_after(iid):
            where = f"run {self.run_id}" if self.run_id else f"instance {iid}"
            fix = f"wait a minute, then `{self._finish()}`"
            msg = (f"{self.provider.title} instance {iid} of {where} was not destroyed after {tries} tries over "
                   f"{waited / 60:.1f} min (last: {last}); it may still be billing")
            if self.run_id is not None:
                self.registry.add_event(self.run_id, "cleanup-failed", msg, instance_id=str(iid))
            raise CleanupFailed(msg, hint=f"{fix}, or destroy it in the provider's console",
                                instance_ids=(iid,))
        row = self.registry.cloud.update_instance(self.provider.name, iid, status="destroyed")
        self.say(f"destroyed {self.provider.title} instance {iid} (cost so far {row.cost_so_far():.2f} $)")

    def _finish(self) -> str:
        """The command that finishes this teardown later."""
        return stop_hint(self.run_id) if self.run_id else "jitplan runs --destroy-orphans --yes"

    def _gone_after(self, iid: int) -> bool:
        """After failed destroys: the provider may have released it anyway (a lost answer). Ask once."""
        try:
            return not [i for i in self.provider.list() if i.id == iid and i.state != "gone"]
        except ProviderError:
            return False

    def destroy_all(self, why: str, ids: list[int] | None = None) -> list[int]:
        """Destroy ``ids`` (default: every live instance of the run on this provider); the ids destroyed.
        Every one is tried; CleanupFailed names those that survive."""
        todo = self.live() if ids is None else list(dict.fromkeys(ids))
        done, failed = [], []
        for iid in todo:
            try:
                self.destroy(iid, why)
            except CleanupFailed as e:
                failed.append(e)
                continue
            done.append(iid)
        if failed:
            left = tuple(i for e in failed for i in e.instance_ids)
            raise CleanupFailed("; ".join(e.message for e in failed), hint=failed[0].hint, instance_ids=left)
        return done
