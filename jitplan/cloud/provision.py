"""Provision a cloud instance for a plan, on any ``Provider``: search, rank, confirm, create, wait, fail over.

    provider.offer_query(plan) -> search -> rank by the planner's cost per epoch on each offer's GPUs ->
    hooks.show_offers -> hooks.confirm (or request.yes) -> for each offer: intent (label) in the registry ->
    create -> (any error: look the label up) -> wait running + SSH with a deadline -> SSHTarget

A failed attempt destroys what it created and tries the next offer on another machine. Never a second
create for one label; never a rental after an unanswered lookup; never a retry after a failed cleanup.
Ctrl-C, SIGTERM (raised as KeyboardInterrupt by the caller) or any error destroys what was created. Every
step is a registry event. No CLI import: ``say`` and ``confirm`` come in ``hooks``.

    from jitplan.providers.registry import make_provider
    req = ProvisionRequest(plan=load_plan("plan.yaml"), run_id=run_id, yes=True)
    res = provision(make_provider("vast", print), req, Hooks(say=print), registry=Registry())
    res.ssh            # SSHTarget(user="root", host=..., port=..., identity="~/.ssh/id_ed25519")
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field

from jitplan.cloud.attempts import Attempts
from jitplan.cloud.lifecycle import label_for
from jitplan.envsettings import env_seconds
from jitplan.errors import CheckFailed, JitplanError, UsageError
from jitplan.providers import CleanupFailed, CreateSpec, Offer, ProviderError
from jitplan.providers.ranking import RankedOffer, rank
from jitplan.runs.schema import RunMeta, RunStatus
from jitplan.schemas import Plan
from jitplan.secrets import redact
from jitplan.templates import templates_dir
from jitplan.transport.target import SSHTarget

if TYPE_CHECKING:  # pragma: no cover
    from jitplan.providers import Provider
    from jitplan.runs.registry import Registry

DEFAULT_MAX_OFFERS = 3
# What onstart persists for SSH sessions; CONTAINER_* is the instance's own key and id (its self-stop at a cap).
ENV_EXPORT_PATTERN = ("JITPLAN_[A-Z0-9_]*|NCCL_[A-Z0-9_]*|OMP_NUM_THREADS|HF_HOME|TORCH_[A-Z0-9_]*|"
                      "CONTAINER_API_KEY|CONTAINER_ID")


class ProvisionRequest(BaseModel):
    """What to rent for which run. ``bid`` is $/h for the whole instance (interruptible), not per GPU."""

    model_config = ConfigDict(extra="forbid")

    plan: Plan
    run_id: str
    bid: Annotated[float, Field(gt=0)] | None = None
    max_offers: Annotated[int, Field(ge=1)] = DEFAULT_MAX_OFFERS
    instance_id: int | None = None  # attach to this existing instance instead of renting
    any_gpu: bool = False
    image: str | None = None
    identity: str | None = None  # SSH private key (its .pub is attached)
    env: dict[str, str] = Field(default_factory=dict)
    ready_timeout_s: Annotated[float, Field(gt=0)] | None = None  # else $JITPLAN_<PROVIDER>_READY_TIMEOUT_S
    top: Annotated[int, Field(ge=0)] = 5
    yes: bool = False
    budget_usd: Annotated[float, Field(gt=0)] | None = None  # --budget: refused before renting when it cannot
    reserve_s: Annotated[float, Field(ge=0)] = 600.0  # pay for checkpoint, pull and destroy at the best offer


@dataclass
class Hooks:
    """The caller's side: progress lines, the yes/no question (None: no terminal), the offers table."""

    say: Callable[[str], None]
    confirm: Callable[[str], bool] | None = None
    show_offers: Callable[[list[RankedOffer], int, str], None] = field(default=lambda ranked, top, title: None)


class ProvisionResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instance_id: int
    ssh: SSHTarget
    offer: Offer | None  # None when attached to an existing instance
    label: str | None
    image: str | None
    dph: float | None
    attached: bool = False  # --instance: not ours, never destroyed on failure


def render_onstart(run_id: str) -> str:
    """jitplan/templates/launch/vast_onstart.sh with this run's values."""

    text = (templates_dir() / "launch" / "vast_onstart.sh").read_text()
    return string.Template(text).substitute(run_id=run_id, env_pattern=ENV_EXPORT_PATTERN)


def find_ssh_key(identity: str | Path | None) -> tuple[Path, str]:
    """(private key path, public key text). Default: ~/.ssh/id_ed25519, then ~/.ssh/id_rsa."""
    candidates = [Path(identity).expanduser()] if identity else [
        Path.home() / ".ssh" / "id_ed25519", Path.home() / ".ssh" / "id_rsa"
    ]
    for key in candidates:
        pub = key.with_name(key.name + ".pub")
        if key.is_file() and pub.is_file():
            text = pub.read_text().strip()
            if not text.startswith(("ssh-", "ecdsa-", "sk-")):
                raise UsageError(f"{pub} does not look like an SSH public key")
            return key, text
    where = ", ".join(str(c) for c in candidates)
    raise UsageError(f"no SSH key pair found ({where} with its .pub)",
                     hint="create one with `ssh-keygen -t ed25519` or pass --identity KEY")


def ready_timeout_s(provider: Provider, given: float | None) -> float:
    """The argument, else ``$JITPLAN_<PROVIDER>_READY_TIMEOUT_S``, else the provider's default."""
    if given is not None:
        return given
    return env_seconds(f"JITPLAN_{provider.name.upper()}_READY_TIMEOUT_S", provider.ready_timeout_s)


def provision(provider: Provider, request: ProvisionRequest, hooks: Hooks, *, registry: Registry) -> ProvisionResult:
    """Rent (or attach to) an instance for ``request.plan`` and return its SSH endpoint. See the module doc.

    When it fails, the run is marked ``failed`` (``interrupted`` on Ctrl-C) with the reason.
    """
    try:
        return _provision(provider, request, hooks, registry)
    except JitplanError as e:
        _mark_run(registry, request.run_id, "failed", e.message)
        raise
    except KeyboardInterrupt:
        _mark_run(registry, request.run_id, "interrupted", "interrupted during provisioning")
        raise


def _mark_run(registry: Registry, run_id: str, status: RunStatus, message: str) -> None:
    try:
        registry.set_status(run_id, status, message)
    except UsageError:  # the caller's run id is not recorded: nothing to mark
        pass


def _provision(provider: Provider, req: ProvisionRequest, hooks: Hooks, registry: Registry) -> ProvisionResult:
    say, run_id, title = hooks.say, req.run_id, provider.title
    lo, hi = provider.bid_range
    if req.bid is not None and not lo <= req.bid <= hi:
        raise UsageError(f"--bid must be between {lo:g} and {hi:g} $/h for the whole instance, got {req.bid:g}")
    timeout = ready_timeout_s(provider, req.ready_timeout_s)
    key_path, pubkey = find_ssh_key(req.identity)
    if req.instance_id is None and not req.yes and hooks.confirm is None:
        raise UsageError(f"renting a {title} instance costs money; pass --yes to confirm without a terminal")

    def ready(iid: int) -> SSHTarget:
        inst = provider.wait_ready(iid, timeout_s=timeout)
        return provider.ssh_info(inst).model_copy(update={"identity": str(key_path)})

    if req.instance_id is not None:
        return _attach(provider, registry, req, pubkey, ready, say)

    query, image = provider.offer_query(req.plan, bid=req.bid, any_gpu=req.any_gpu, image=req.image)
    registry.add_event(run_id, "provision", f"searching {title} offers for image {image}",
                       query=query.model_dump(mode="json"))
    ranked = rank(req.plan, provider.search(query), query)
    if not ranked:
        raise CheckFailed(
            f"no {title} offer satisfies the plan ({query.num_gpus}x {', '.join(query.gpu_names or ['any GPU'])}, "
            f">= {query.min_cpu_ram_mb / 1000:.0f} GB RAM, >= {query.min_cpus:g} CPUs, >= {query.min_disk_gb:g} GB "
            f"disk, CUDA >= {query.min_cuda:g}, reliability >= {query.min_reliability})",
            hint="try a --bid, or a plan for another GPU (jitplan plan --gpus ...)",
        )
    hooks.show_offers(ranked, req.top, title)
    best = ranked[0]
    floor = best.dph * req.reserve_s / 3600.0
    if req.budget_usd is not None and req.budget_usd <= floor:
        registry.add_event(run_id, "provision", f"--budget {req.budget_usd:g} $ is below the teardown reserve; "
                           "nothing rented")
        raise UsageError(f"--budget {req.budget_usd:g} $ leaves no training time at {best.dph:.3f} $/h (the best "
                         f"offer): checkpoint, pull and destroy keep {req.reserve_s / 60:.0f} min ({floor:.3f} $) "
                         "back; nothing was rented", hint=f"raise it above {floor:.2f} (dollars)")
    question = (f"Rent offer {best.offer.id} ({best.offer.num_gpus}x {best.offer.gpu_name}, {best.dph:.3f} $/h"
                f"{', interruptible' if req.bid else ''}) and up to {req.max_offers - 1} fallbacks?")
    if not req.yes and hooks.confirm is not None and not hooks.confirm(question):
        registry.add_event(run_id, "provision", "declined at the confirmation prompt")
        raise CheckFailed("not confirmed; nothing was rented")

    att = Attempts(provider, registry, run_id, say, pubkey)
    bad_machines: set[int] = set()
    reasons: list[str] = []
    onstart = render_onstart(run_id)
    env = {**req.env, "JITPLAN_RUN_ID": run_id, "JITPLAN_SSH_PUBKEY": pubkey}
    tried = 0
    try:
        for r in ranked:
            if tried >= req.max_offers:
                break
            if r.offer.machine_id is not None and r.offer.machine_id in bad_machines:
                continue
            tried += 1
            label = label_for(run_id, tried)
            spec = CreateSpec(offer_id=r.offer.id, image=image, disk_gb=query.min_disk_gb, label=label, env=env,
                              onstart=onstart, ssh_public_key=pubkey, bid=req.bid)
            say(f"attempt {tried}/{req.max_offers}: renting offer {r.offer.id} ({r.offer.num_gpus}x "
                f"{r.offer.gpu_name}, {r.dph:.3f} $/h) as {label}")
            registry.add_event(run_id, "provision", f"create offer {r.offer.id} as {label}", offer_id=r.offer.id,
                               dph=r.dph, image=image)
            iid = att.create(spec, r.offer, r.dph)
            if iid is None:
                reasons.append(f"offer {r.offer.id}: {att.last_reason}")
                continue
            try:
                target = ready(iid)
            except CleanupFailed:
                raise
            except ProviderError as e:
                reasons.append(f"offer {r.offer.id}: {e.message}")
                registry.add_event(run_id, "provision-failed", e.message, instance_id=iid)
                say(f"  instance {iid}: {e.message}")
                if r.offer.machine_id is not None:
                    bad_machines.add(r.offer.machine_id)
                att.cleanup([iid, *[i for i in e.instance_ids if i != iid]], "failed attempt")
                continue
            row = registry.cloud.update_instance(provider.name, iid, status="running", ssh_host=target.host,
                                           ssh_port=target.port)
            registry.update_run(run_id, host=str(target), meta=RunMeta(
                provider=provider.name, instance_id=iid, label=row.label, image=image, ssh=str(target),
                identity=str(key_path)))
            registry.add_event(run_id, "provision", f"instance {iid} ready at {target}", instance_id=iid)
            say(f"instance {iid} is ready: ssh -p {target.port} root@{target.host}")
            return ProvisionResult(instance_id=iid, ssh=target, offer=r.offer, label=row.label, image=image,
                                   dph=row.dph)
    except CleanupFailed:
        raise  # already loud; trying again now could race the provider
    except BaseException as e:  # Ctrl-C, SIGTERM, an unanswered lookup, anything: leave nothing billing
        why = "interrupted" if isinstance(e, KeyboardInterrupt) else redact(
            getattr(e, "message", None) or f"{type(e).__name__}: {e}")[:300]
        say(f"provisioning stopped ({why}): destroying what this run created")
        registry.add_event(run_id, "interrupted", f"provisioning stopped: {why}")
        try:
            att.cleanup(att.pending(), "provisioning stopped")
        except CleanupFailed as ce:
            say(f"Error: {ce.message}")
        raise
    tail = "; ".join(reasons[-req.max_offers:]) or "no offer left to try"
    raise CheckFailed(f"no {title} instance became ready after {tried} attempt(s): {redact(tail)}",
                      hint="try again later, or plan for another GPU (jitplan plan --gpus ...)")


def _attach(provider: Provider, registry: Registry, req: ProvisionRequest, pubkey: str,
            ready: Callable[[int], SSHTarget], say: Callable[[str], None]) -> ProvisionResult:
    """``--instance ID``: use an existing instance. It is not ours, so a failure never destroys it."""
    if req.instance_id is None or req.run_id is None:
        raise UsageError("attaching needs an instance id and a run id")
    iid, run_id = int(req.instance_id), req.run_id
    found = [i for i in provider.list() if i.id == iid and i.state != "gone"]
    if not found:
        raise UsageError(f"no {provider.title} instance {iid} in this account")
    inst = found[0]
    registry.cloud.add_instance(run_id, provider.name, iid, inst.label or f"attached-{iid}", inst.dph or 0.0,
                          gpu_name=inst.gpu_name, num_gpus=inst.num_gpus, status="loading")
    try:
        provider.authorize(iid, pubkey)
        target = ready(iid)
    except ProviderError as e:
        registry.cloud.update_instance(provider.name, iid, status="failed")
        raise CheckFailed(f"instance {iid} is not usable: {e.message} (left as it is: it is not ours)") from None
    registry.cloud.update_instance(provider.name, iid, status="running", ssh_host=target.host, ssh_port=target.port)
    registry.update_run(run_id, host=str(target), meta=RunMeta(provider=provider.name, instance_id=iid, attached=True,
                                                               label=inst.label, ssh=str(target),
                                                               identity=target.identity))
    registry.add_event(run_id, "provision", f"attached to instance {iid} at {target}")
    say(f"attached to instance {iid}: ssh -p {target.port} {target.user}@{target.host}")
    return ProvisionResult(instance_id=iid, ssh=target, offer=None, label=inst.label, image=None, dph=inst.dph,
                           attached=True)
