"""The no-orphans bookkeeping of one provisioning call: intent first, reconcile by label, clean up what it made.

Before each create the label is written to the registry (``record_intent``, committed). After a create error
of *any* kind the label is looked up (``Provider.find_label``, with backoff) before anything else is rented: an
instance found that way is recorded with its real label and price and, when the error named no instance of its
own, used (its SSH key attached) instead of renting a second one. A lookup that cannot be answered stops the
whole provisioning (LookupUnanswered): the intent stays open and ``jitplan runs`` asks again later.

    att = Attempts(provider, registry, run_id, say, public_key)
    iid = att.create(spec, offer, dph)    # the new id, or None (att.last_reason says why)
    att.cleanup(att.pending(), "Ctrl-C")  # destroy exactly what this call created
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from jitplan.cloud.lifecycle import Lifecycle
from jitplan.providers import (
    CleanupFailed,
    CreateSpec,
    Instance,
    LookupUnanswered,
    Offer,
    OfferUnavailable,
    ProviderError,
)

if TYPE_CHECKING:  # pragma: no cover
    from jitplan.providers import Provider
    from jitplan.runs.registry import Registry


class Attempts:
    """What this provisioning call created, and what it has destroyed."""

    def __init__(self, provider: Provider, registry: Registry, run_id: str, say: Callable[[str], None],
                 public_key: str | None = None) -> None:
        self.provider, self.registry, self.run_id, self.say = provider, registry, run_id, say
        self.public_key = public_key
        self.created: list[int] = []
        self.destroyed: set[int] = set()
        self.open_labels: list[str] = []  # written down, outcome unknown (a create in flight or unanswered)
        self.unanswered: set[str] = set()  # labels whose lookup already gave up: not asked again on the way out
        self.last_reason = ""

    # ------------------------------------------------------------------ create, made safe
    def create(self, spec: CreateSpec, offer: Offer, dph: float) -> int | None:
        """One create: the id to use (recorded), or None with ``last_reason`` set. Never two rentals for a label."""
        label = spec.label
        self.registry.cloud.record_intent(self.run_id, self.provider.name, label, offer_id=offer.id, dph=dph)
        self.open_labels.append(label)
        try:
            iid = self.provider.create(spec)
        except ProviderError as e:
            return self._after_error(e, spec, offer, dph)
        self.record(iid, label, dph, offer.gpu_name, offer.num_gpus)
        self._resolve(label, iid)
        return iid

    def _after_error(self, e: ProviderError, spec: CreateSpec, offer: Offer, dph: float) -> int | None:
        label = spec.label
        self.last_reason = e.message
        if isinstance(e, OfferUnavailable):
            self.say(f"  {e.message}; checking label {label} before the next offer")
        else:
            self.say(f"  {e.message}; looking for label {label} before renting anything else")
        try:
            found = self.provider.find_label(label)
        except LookupUnanswered as lu:
            self.unanswered.add(label)
            raise LookupUnanswered(
                f"{e.message}; then {lu.message}, so nothing else is rented (an instance may exist)",
                hint="`jitplan runs` asks the provider again and shows it; `jitplan runs --destroy-orphans` removes it",
            ) from None
        by_id: dict[int, Instance | None] = {x.id: x for x in found}
        for iid in e.instance_ids:
            by_id.setdefault(iid, None)
        ids = sorted(by_id)
        self._resolve(label, ids[0] if ids else None)
        if not ids:
            return None
        for iid in ids:
            inst = by_id[iid]
            real_dph = inst.dph if inst is not None and inst.dph is not None else dph
            self.record(iid, inst.label or label if inst else label, real_dph,
                        (inst.gpu_name if inst else None) or offer.gpu_name, offer.num_gpus)
        keep = ids[0]
        kept = by_id[keep]
        usable = not e.instance_ids and kept is not None and kept.state not in ("failed", "stopped", "gone")
        if not usable:
            self.cleanup(ids, "the failed create still made an instance")
            return None
        if len(ids) > 1:
            self.cleanup(ids[1:], f"duplicates of label {label}")
        try:
            if self.public_key:
                self.provider.authorize(keep, self.public_key)
        except ProviderError as ae:
            self.last_reason = ae.message
            self.cleanup([keep], "its SSH key was refused")
            return None
        self.say(f"  found instance {keep} with label {label}: using it (no second create)")
        return keep

    # ------------------------------------------------------------------ records
    def _resolve(self, label: str, iid: int | None) -> None:
        self.registry.cloud.resolve_intent(label, iid)
        if label in self.open_labels:
            self.open_labels.remove(label)

    def record(self, iid: int, label: str, dph: float, gpu_name: str | None, num_gpus: int | None) -> None:
        if iid not in self.created:
            self.created.append(iid)
        self.registry.cloud.add_instance(self.run_id, self.provider.name, iid, label, dph, gpu_name=gpu_name,
                                   num_gpus=num_gpus, status="creating")

    # ------------------------------------------------------------------ cleanup
    def pending(self) -> list[int]:
        """Ours and not destroyed, including what a create interrupted mid-flight made (looked up by label)."""
        ids = [i for i in self.created if i not in self.destroyed]
        for label in list(self.open_labels):
            if label in self.unanswered:
                continue
            try:
                found = self.provider.find_label(label)
            except ProviderError as e:
                self.say(f"could not check label {label} for a half-made instance: {e.message}; "
                         "`jitplan runs` asks again")
                continue
            for x in found:
                if x.id not in ids and x.id not in self.destroyed:
                    ids.append(x.id)
                    self.record(x.id, x.label or label, x.dph or 0.0, x.gpu_name, x.num_gpus)
            self._resolve(label, found[0].id if found else None)
        return ids

    def cleanup(self, ids: list[int] | tuple[int, ...], why: str) -> None:
        """Destroy ``ids`` (ours) through the lifecycle; CleanupFailed when any survives (nothing else is
        tried then: trying again now could race the provider)."""
        todo = [i for i in dict.fromkeys(ids) if i not in self.destroyed]
        if not todo:
            return
        self.say(f"destroying instance {', '.join(map(str, todo))} ({why})")
        lc = Lifecycle(self.registry, self.provider, self.run_id, say=self.say)
        try:
            self.destroyed.update(lc.destroy_all(why, todo))
        except CleanupFailed as e:
            self.destroyed.update(i for i in todo if i not in e.instance_ids)
            raise CleanupFailed(f"{e.message}; nothing else is tried", hint=e.hint,
                                instance_ids=e.instance_ids) from None
