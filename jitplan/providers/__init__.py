"""The narrow cloud-provider interface (the shape of SkyPilot's ``sky/provision``).

A provider turns a plan into an ``offer_query`` (its filters, its image), does ``search``, ``create`` (with the
SSH key attached), ``find_label`` (the lookup after any create error: answered or raising, never a guessed
"none"), ``authorize`` a key on a live instance, ``wait_ready`` until running and SSH-reachable, gives its
``ssh_info``, ``destroy``s it, and ``list``s what exists. Inputs and outputs are the pydantic models below;
the orchestration (rank, confirm, intent first, fail over, clean up) lives in ``jitplan.cloud.provision``
and knows nothing about any one cloud. Vast.ai is the first provider (``jitplan.providers.vast``); its SDK is
imported only inside it.

    >>> q = OfferQuery(gpu_names=["RTX 3060"], num_gpus=2, min_gpu_ram_mib=11_000, min_cpu_ram_mb=24_000,
    ...                min_cpus=8, min_disk_gb=60, min_cuda=12.4, min_compute_cap=860)
    >>> q.interruptible
    False
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from jitplan.errors import CheckFailed, UsageError
from jitplan.transport.target import SSHTarget

if TYPE_CHECKING:  # pragma: no cover
    from jitplan.schemas import Plan

LABEL_PREFIX = "jitplan-"  # every instance jitplan rents carries jitplan-<run id>-<attempt>


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OfferQuery(_Model):
    """What an offer must satisfy. Sizes in the provider's units: MiB of GPU RAM, MB of host RAM, GB of disk."""

    gpu_names: list[str] | None = None  # None: any GPU model with enough memory
    num_gpus: Annotated[int, Field(gt=0)] = 1
    min_gpu_ram_mib: Annotated[int, Field(ge=0)] = 0  # per GPU
    min_cpu_ram_mb: Annotated[int, Field(ge=0)] = 0  # RAM share the instance gets
    min_cpus: Annotated[float, Field(ge=0)] = 0  # effective vCPUs the instance gets
    min_disk_gb: Annotated[float, Field(gt=0)] = 20  # what we will ask for at create
    min_cuda: Annotated[float, Field(ge=0)] = 0  # the image's CUDA: host driver must support it
    min_compute_cap: Annotated[int, Field(ge=0)] = 0  # x100: 860 = sm_86
    min_reliability: Annotated[float, Field(ge=0, le=1)] = 0.98
    min_inet_down_mbps: Annotated[float, Field(ge=0)] = 100
    interruptible: bool = False
    bid: Annotated[float, Field(gt=0)] | None = None  # $/h for the whole machine (interruptible only)
    limit: Annotated[int, Field(gt=0, le=1000)] = 64


class Offer(_Model):
    """One rentable machine (or a slice of one), in neutral names and units; each provider maps its own rows
    to it (Vast's API names live only in ``providers/vast/rows.py``). The published per-offer figures (PCIe,
    effective cores, RAM share, disk and network speed, a DL benchmark score) are kept so that the planner
    can predict a run on this offer, not only on its GPU model. None: the provider did not publish it."""

    id: int
    machine_id: int | None = None
    gpu_name: str
    num_gpus: int
    gpu_ram_mib: float  # per GPU
    ram_gb: float  # the host RAM share the instance gets, GB
    cpu_cores_effective: float  # the vCPUs the instance gets
    disk_gb: float  # the most disk the host can give
    max_cuda: float  # the newest CUDA the host driver supports
    compute_cap: int | None = None  # x100: 860 = sm_86
    reliability: float | None = None
    download_mbps: float | None = None  # Mbit/s into the instance
    upload_mbps: float | None = None
    price_per_hour: float  # on-demand $/h, storage for the searched disk size included
    min_bid_per_hour: float | None = None  # interruptible floor $/h for the whole instance
    storage_per_hour: float = 0.0  # $/h of the searched disk
    geolocation: str | None = None
    pcie_bandwidth_gbps: float | None = None  # host <-> GPU, GB/s as measured by the provider
    pcie_gen: float | None = None
    pcie_lanes: int | None = None  # per GPU
    disk_bandwidth_mbps: float | None = None  # disk read, MB/s
    dl_perf: float | None = None  # the provider's deep-learning benchmark score (relative)

    def price(self, bid: float | None = None) -> float:
        """$/h we would pay: on-demand total, or the bid plus storage."""
        return self.price_per_hour if bid is None else bid + self.storage_per_hour


class CreateSpec(_Model):
    """Everything needed to rent one offer."""

    offer_id: int
    image: str
    disk_gb: Annotated[float, Field(ge=8)]
    label: Annotated[str, Field(min_length=1, max_length=60)]  # unique per attempt: the idempotency key
    env: dict[str, str] = Field(default_factory=dict)
    onstart: str = ""
    ssh_public_key: str | None = None
    bid: Annotated[float, Field(gt=0)] | None = None


class SelfStop(_Model):
    """How an instance stops itself (a provider's optional capability, ``Provider.self_stop``): one HTTP request
    with the instance's own, instance-scoped key, read on the instance from ``key_env`` (or from ``env_file``,
    where the instance's start-up persisted its environment). No key of the user's travels: the provider put
    this one on the instance. ``what`` says, for people, what stopping means there (what still bills)."""

    method: Literal["PUT", "POST"] = "PUT"
    url: str
    body: dict[str, str] = Field(default_factory=dict)
    key_env: str
    env_file: str | None = None
    what: str


InstanceState = Literal["pending", "running", "failed", "stopped", "gone"]


class Instance(_Model):
    """A rented instance as the provider reports it (strings stripped, units normalised)."""

    id: int
    label: str | None = None
    state: InstanceState  # our reading of the provider's status fields
    actual_status: str | None = None  # the provider's raw status
    status_msg: str | None = None
    machine_id: int | None = None
    gpu_name: str | None = None
    num_gpus: int | None = None
    dph: float | None = None
    ssh_host: str | None = None  # proxy endpoint
    ssh_port: int | None = None
    public_ip: str | None = None  # direct endpoint
    direct_ssh_port: int | None = None
    started_at: float | None = None  # epoch seconds, as the provider reports it

    def cost_so_far(self, now: float) -> float | None:
        """dph x hours since the provider started it (None when either is unknown)."""
        if self.dph is None or self.started_at is None:
            return None
        return self.dph * max(now - self.started_at, 0.0) / 3600.0

    def ssh_endpoints(self) -> list[tuple[str, int]]:
        """Direct first (faster), then the proxy."""
        out: list[tuple[str, int]] = []
        if self.public_ip and self.direct_ssh_port:
            out.append((self.public_ip, self.direct_ssh_port))
        if self.ssh_host and self.ssh_port and (self.ssh_host, self.ssh_port) not in out:
            out.append((self.ssh_host, self.ssh_port))
        return out

    def summary(self) -> str:
        """A safe one-line description for messages."""
        where = ", ".join(f"{h}:{p}" for h, p in self.ssh_endpoints()) or "no ssh yet"
        # whole: the CUDA reason ends it
        msg = f" ({' '.join(self.status_msg.split())[:500]})" if self.status_msg else ""
        return f"instance {self.id} [{self.actual_status or 'null'}]{msg} machine {self.machine_id}, {where}"


# ------------------------------------------------------------------------------------------- errors
class ProviderError(CheckFailed):
    """A provider call failed. ``instance_ids`` are instances that may exist because of it."""

    def __init__(self, message: str, hint: str | None = None, instance_ids: tuple[int, ...] = ()) -> None:
        super().__init__(message, hint)
        self.instance_ids = tuple(instance_ids)


class AuthError(UsageError):
    """The API key is missing or refused. Exit 2."""


class OfferUnavailable(ProviderError):
    """The offer was taken between search and create; nothing was created."""


class CreateFailed(ProviderError):
    """The create call failed. ``new_contract`` is set when an instance was created anyway."""

    def __init__(self, message: str, new_contract: int | None = None, status: int | None = None) -> None:
        super().__init__(message, instance_ids=(new_contract,) if new_contract else ())
        self.new_contract = new_contract
        self.status = status


class CreateTimedOut(ProviderError):
    """No answer to the create call: the instance may or may not exist. Reconcile by label, never resend."""


class Transient(ProviderError):
    """A 5xx or a connection error: the provider may answer the same call a moment later."""


class RateLimited(Transient):
    """HTTP 429 (the provider sends no Retry-After)."""


class LookupUnanswered(ProviderError):
    """A label lookup got no answer before its deadline: whether an instance exists is unknown (never "none")."""


class InstanceFailed(ProviderError):
    """The instance reached a terminal state (exited, OCI error, outbid, host lost) or vanished."""


class ReadyTimeout(ProviderError):
    """The instance did not become running and SSH-reachable before the deadline."""


class CleanupFailed(ProviderError):
    """Destroying an instance we created failed: it may still be billing. Never retried past this."""


# ------------------------------------------------------------------------------------------- interface
@runtime_checkable
class Provider(Protocol):
    """What ``provision`` needs from a cloud. Every method may raise a ``ProviderError``."""

    name: str  # registry key: "vast"
    title: str  # for people: "Vast.ai"
    bid_range: tuple[float, float]  # accepted interruptible prices, $/h for the whole instance
    ready_timeout_s: float  # default deadline for wait_ready

    def offer_query(self, plan: Plan, *, bid: float | None, any_gpu: bool,
                    image: str | None) -> tuple[OfferQuery, str]:
        """The offers ``plan`` needs on this cloud, and the image to run (UsageError when it cannot run here)."""
        ...

    def search(self, query: OfferQuery) -> list[Offer]:
        """Offers satisfying ``query``, in no particular order."""
        ...

    def create(self, spec: CreateSpec) -> int:
        """Rent ``spec.offer_id`` and attach ``spec.ssh_public_key``; return the new id. Sent once, never retried."""
        ...

    def find_label(self, label: str) -> list[Instance]:
        """Live instances carrying exactly ``label``, read with backoff; LookupUnanswered when it cannot tell."""
        ...

    def authorize(self, instance_id: int, public_key: str) -> None:
        """Attach ``public_key`` to an instance that exists (found by label, or ``--instance``)."""
        ...

    def wait_ready(self, instance_id: int, *, timeout_s: float) -> Instance:
        """Block until running and SSH-reachable; InstanceFailed / ReadyTimeout otherwise."""
        ...

    def ssh_info(self, instance: Instance) -> SSHTarget:
        """The SSH endpoint of a ready instance."""
        ...

    def destroy(self, instance_id: int) -> None:
        """Release the instance (billing stops). Succeeds when it is already gone."""
        ...

    def list(self, label: str | None = None) -> list[Instance]:
        """Instances of this account, optionally only those with exactly this label."""
        ...


def self_stop_of(provider: Provider, instance_id: int) -> SelfStop | None:
    """The optional capability: ``provider.self_stop(instance_id)`` when the provider has it, else None."""
    fn = getattr(provider, "self_stop", None)
    return fn(instance_id) if callable(fn) else None
