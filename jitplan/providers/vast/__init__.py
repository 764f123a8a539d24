"""Vast.ai behind the provider interface (``jitplan.providers.Provider``).

``client.py`` translates to the ``vastai`` SDK (imported lazily, only there), ``instance.py`` holds the
lifecycle (wait ready, find a label, destroy and verify), ``offers.py`` turns a Plan into a query and picks
the image. :class:`VastProvider` puts them together behind the interface.

    p = VastProvider()                                 # key from VAST_API_KEY / the vastai key file; VAST_URL
    offers = p.search(query)
    iid = p.create(spec)                               # rents, and attaches spec.ssh_public_key
    target = p.ssh_info(p.wait_ready(iid, timeout_s=900))
    p.destroy(iid)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from jitplan.errors import UsageError
from jitplan.providers import (
    CleanupFailed,
    CreateFailed,
    CreateSpec,
    Instance,
    Offer,
    OfferQuery,
    ProviderError,
    SelfStop,
)
from jitplan.providers.vast import instance as lifecycle
from jitplan.providers.vast.client import DEFAULT_TIMEOUT_S, VastClient
from jitplan.providers.vast.instance import destroy_all, find_label, reachable_endpoint, wait_ready
from jitplan.providers.vast.offers import query_for
from jitplan.secrets import vast_api_key
from jitplan.transport.target import SSHTarget

if TYPE_CHECKING:  # pragma: no cover
    from jitplan.providers.vast.client import VastClient
    from jitplan.schemas import Plan


class VastProvider:
    """The Provider for Vast.ai. ``poll_s``, ``sleep`` and ``on_progress`` tune the wait (tests use tiny polls)."""

    name = "vast"
    title = "Vast.ai"
    bid_range = (0.001, 128.0)  # $/h for the whole instance, as `PUT /asks` accepts it

    def __init__(
        self,
        client: VastClient | None = None,
        *,
        poll_s: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        on_progress: Callable[[Instance], None] | None = None,
        lookup_deadline_s: float | None = None,
    ) -> None:

        self.client = client or VastClient.from_env()
        self.poll_s = lifecycle.POLL_INTERVAL_S if poll_s is None else poll_s
        self.ready_timeout_s = lifecycle.DEFAULT_READY_TIMEOUT_S
        self.lookup_deadline_s = lifecycle.LOOKUP_DEADLINE_S if lookup_deadline_s is None else lookup_deadline_s
        self.sleep, self.on_progress = sleep, on_progress
        self._endpoints: dict[int, tuple[str, int]] = {}

    @classmethod
    def from_env(cls, say: Callable[[str], None], *, http_timeout_s: float | None = None) -> VastProvider:
        """Configured from the environment: the key, ``VAST_URL``, ``JITPLAN_VAST_POLL_S``; progress to ``say``."""
        import os


        raw = os.environ.get("JITPLAN_VAST_POLL_S")
        try:
            poll = float(raw) if raw else None
        except ValueError:
            raise UsageError(f"JITPLAN_VAST_POLL_S must be a number of seconds, got {raw!r}") from None
        client = VastClient.from_env(timeout_s=http_timeout_s or DEFAULT_TIMEOUT_S)
        return cls(client, poll_s=poll,
                   on_progress=lambda i: say(f"  instance {i.id}: {i.actual_status or 'scheduling'}"))

    @staticmethod
    def has_credentials() -> bool:

        return vast_api_key() is not None

    def offer_query(self, plan: Plan, *, bid: float | None, any_gpu: bool,
                    image: str | None) -> tuple[OfferQuery, str]:

        return query_for(plan, bid=bid, any_gpu=any_gpu, image=image)

    def search(self, query: OfferQuery) -> list[Offer]:
        return self.client.search(query, disk_gb=query.min_disk_gb)

    def create(self, spec: CreateSpec) -> int:
        """Rent the offer, then attach the SSH key. A failed attach is a CreateFailed carrying the new id."""
        iid = self.client.create(spec)
        if spec.ssh_public_key:
            try:
                self.client.attach_ssh(iid, spec.ssh_public_key)
            except ProviderError as e:
                raise CreateFailed(f"instance {iid} was created but its SSH key was refused: {e.message}",
                                   new_contract=iid) from None
        return iid

    def find_label(self, label: str) -> list[Instance]:

        return find_label(self.client, label, sleep=self.sleep, deadline_s=self.lookup_deadline_s)

    def authorize(self, instance_id: int, public_key: str) -> None:
        """Attach a public key to an instance that already exists (``--instance``)."""
        self.client.attach_ssh(instance_id, public_key)

    def wait_ready(self, instance_id: int, *, timeout_s: float) -> Instance:

        inst, endpoint = wait_ready(self.client, instance_id, timeout_s=timeout_s, poll_s=self.poll_s,
                                    sleep=self.sleep, on_progress=self.on_progress)
        self._endpoints[instance_id] = endpoint
        return inst

    def ssh_info(self, instance: Instance) -> SSHTarget:
        """The endpoint that answered while waiting; else the first that answers now (direct, then proxy)."""

        endpoint = self._endpoints.get(instance.id) or reachable_endpoint(instance)
        if endpoint is None:
            raise ProviderError(f"no SSH endpoint of instance {instance.id} answers: {instance.summary()}")
        return SSHTarget(user="root", host=endpoint[0], port=endpoint[1])

    def destroy(self, instance_id: int) -> None:
        """Destroy and check it is gone (three tries); CleanupFailed when it survives."""

        failed = destroy_all(self.client, [instance_id], sleep=self.sleep)
        if failed:
            raise CleanupFailed(failed[0][1], instance_ids=(instance_id,))

    def list(self, label: str | None = None) -> list[Instance]:
        return self.client.list(label=label)

    def self_stop(self, instance_id: int) -> SelfStop:
        """Vast's stop, sent from the instance with its own ``CONTAINER_API_KEY`` (which Vast puts in every
        container; onstart persists it for SSH sessions): GPU billing stops, the disk is kept and bills."""
        import os

        return SelfStop(url=f"{self.client.server_url}/api/v0/instances/{instance_id}/", body={"state": "stopped"},
                        key_env="CONTAINER_API_KEY",
                        env_file=os.environ.get("JITPLAN_VAST_ENV_FILE") or "/etc/environment",
                        what=f"{self.title} stop: the GPU stops billing, the disk is kept (storage still bills "
                        "until it is destroyed)")
