"""Provision a Vast.ai instance for a plan: search, rank, confirm, create, wait ready, fail over, clean up.

    search offers satisfying the plan -> rank by predicted cost per epoch -> show the top offers ->
    confirm (--yes) -> create with a unique label (jitplan-<run>-<attempt>) and an image matching the
    plan's torch/CUDA -> attach the SSH key -> wait for running + SSH with a deadline -> SSHTarget

On a failed attempt (offer gone, create error, OCI error, exited, outbid, stuck loading past the
deadline) the instance this attempt created is destroyed and the next offer (on another machine) is
tried. Never a second create for one attempt: an unanswered create is reconciled by its label first.
Never a retry after a failed cleanup. Ctrl-C destroys what was created. Every step is a registry event.

    from jitplan.launch.registry import Registry
    from jitplan.schemas import load_plan
    reg = Registry()
    run_id = reg.create_run("JiT-B-16", "vast", plan_path="plan.yaml", run_dir="runs/b16")
    res = provision_vast(load_plan("plan.yaml"), registry=reg, run_id=run_id, yes=True)
    res.ssh            # SSHTarget(user="root", host=..., port=..., identity="~/.ssh/id_ed25519")
    destroy(registry=reg, run_id=run_id)
"""

from __future__ import annotations

import os
import string
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from jitplan.errors import CheckFailed, JitplanError, UsageError
from jitplan.launch.target import SSHTarget
from jitplan.providers import (
    CleanupFailed,
    CreateFailed,
    CreateSpec,
    CreateTimedOut,
    Offer,
    OfferUnavailable,
    ProviderError,
)
from jitplan.secrets import redact

if TYPE_CHECKING:  # pragma: no cover
    from jitplan.launch.registry import Registry
    from jitplan.providers import Provider
    from jitplan.providers.vast.client import VastClient
    from jitplan.schemas import Plan

PROVIDER = "vast"
DEFAULT_MAX_OFFERS = 3
ENV_EXPORT_PATTERN = "JITPLAN_[A-Z0-9_]*|NCCL_[A-Z0-9_]*|OMP_NUM_THREADS|HF_HOME|TORCH_[A-Z0-9_]*"


class ProvisionResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instance_id: int
    ssh: SSHTarget
    offer: Offer | None  # None when attached to an existing instance
    label: str | None
    image: str | None
    dph: float | None


def render_onstart(run_id: str) -> str:
    """templates/launch/vast_onstart.sh with this run's values."""
    from templates import templates_dir

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


def _env_seconds(name: str, default: float, given: float | None) -> float:
    """An argument, else ``$name``, else the default (provenance: CLI > JITPLAN_* env > default)."""
    if given is not None:
        return given
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise UsageError(f"{name} must be > 0 seconds, got {value}")
    return value


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


def _default_say(msg: str) -> None:
    from jitplan.cli._output import note

    note(msg)


class _Attempts:
    """What this provisioning call created, and what it has destroyed: the no-orphans bookkeeping."""

    def __init__(self, provider: Provider, registry: Registry, run_id: str, say: Callable[[str], None]) -> None:
        self.provider, self.registry, self.run_id, self.say = provider, registry, run_id, say
        self.created: list[int] = []
        self.destroyed: set[int] = set()
        self.last_reason = ""
        self.current_label: str | None = None  # the label of a create that may be in flight

    def record(self, iid: int, label: str, offer: Offer, dph: float) -> None:
        if iid not in self.created:
            self.created.append(iid)
        self.registry.add_instance(self.run_id, PROVIDER, iid, label, dph, gpu_name=offer.gpu_name,
                                   num_gpus=offer.num_gpus, status="creating")

    def cleanup(self, ids: list[int] | tuple[int, ...], why: str) -> None:
        """Destroy ``ids`` (ours); CleanupFailed when any survives. Registry rows follow the outcome."""
        todo = [i for i in dict.fromkeys(ids) if i not in self.destroyed]
        if not todo:
            return
        self.say(f"destroying instance {', '.join(map(str, todo))} ({why})")
        failed: dict[int, str] = {}
        for iid in todo:
            try:
                self.provider.destroy(iid)
            except ProviderError as e:
                failed[iid] = e.message
                self._mark(iid, "failed")
                continue
            self.destroyed.add(iid)
            self._mark(iid, "destroyed")
        if failed:
            lines = "; ".join(f"{i}: {r}" for i, r in failed.items())
            self.registry.add_event(self.run_id, "cleanup-failed", f"could not destroy {lines}")
            raise CleanupFailed(
                f"could not destroy Vast.ai instance(s) {', '.join(map(str, failed))} ({lines}); "
                "they may still be billing, so no other offer is tried",
                hint=f"destroy them in the Vast.ai console or run `jitplan stop {self.run_id} --destroy`",
                instance_ids=tuple(failed),
            )

    def _mark(self, iid: int, status: str) -> None:
        try:
            self.registry.update_instance(PROVIDER, iid, status=status)  # type: ignore[arg-type]
        except UsageError:  # created outside this run's records (a duplicate found by label)
            self.registry.add_instance(self.run_id, PROVIDER, iid, "unknown", 0.0, status=status)  # type: ignore[arg-type]

    def pending(self) -> list[int]:
        """Ours and not destroyed, including an instance a create interrupted mid-flight made (by label)."""
        ids = [i for i in self.created if i not in self.destroyed]
        if self.current_label is not None:
            try:
                ids += [x.id for x in self.provider.list(label=self.current_label)
                        if x.state != "gone" and x.id not in ids and x.id not in self.destroyed]
            except ProviderError as e:
                self.say(f"could not check label {self.current_label} for a half-made instance: {e.message}")
        return ids


def provision_vast(plan: Plan, *, registry: Registry, run_id: str, **kw: Any) -> ProvisionResult:
    """Rent (or attach to) a Vast.ai instance for ``plan`` and return its SSH endpoint. See the module doc.

    Keyword arguments: ``bid``, ``yes``, ``max_offers``, ``instance_id``, ``any_gpu``, ``image``, ``identity``,
    ``env``, ``ready_timeout_s``, ``poll_s``, ``top``; ``provider`` (any ``jitplan.providers.Provider``) or
    ``client`` (a VastClient to wrap) replace the Vast provider built from the environment (tests pass one
    pointed at the fake); ``confirm``, ``say``, ``sleep`` replace the prompt, the progress printer, the clock.
    When it fails, the run is marked ``failed`` (``interrupted`` on Ctrl-C) with the reason.
    """
    try:
        return _provision(plan, registry=registry, run_id=run_id, **kw)
    except JitplanError as e:
        _mark_run(registry, run_id, "failed", e.message)
        raise
    except KeyboardInterrupt:
        _mark_run(registry, run_id, "interrupted", "Ctrl-C during provisioning")
        raise


def _mark_run(registry: Registry, run_id: str, status: str, message: str) -> None:
    try:
        registry.set_status(run_id, status, message)  # type: ignore[arg-type]
    except UsageError:  # the caller's run id is not recorded: nothing to mark
        pass


def _provision(
    plan: Plan,
    *,
    registry: Registry,
    run_id: str,
    bid: float | None = None,
    yes: bool = False,
    max_offers: int = DEFAULT_MAX_OFFERS,
    instance_id: int | None = None,
    any_gpu: bool = False,
    image: str | None = None,
    identity: str | Path | None = None,
    env: dict[str, str] | None = None,
    ready_timeout_s: float | None = None,
    poll_s: float | None = None,
    top: int = 5,
    provider: Provider | None = None,
    client: VastClient | None = None,
    confirm: Callable[[str], bool] | None = None,
    say: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> ProvisionResult:
    import time

    from jitplan.providers.vast import VastProvider
    from jitplan.providers.vast import instance as lifecycle
    from jitplan.providers.vast import offers as offers_mod

    if max_offers < 1:
        raise UsageError(f"max_offers must be >= 1, got {max_offers}")
    if bid is not None and not 0.001 <= bid <= 128:
        raise UsageError(f"--bid must be between 0.001 and 128 $/h (Vast's range), got {bid}")
    say = say or _default_say
    sleep = sleep or time.sleep
    timeout = _env_seconds("JITPLAN_VAST_READY_TIMEOUT_S", lifecycle.DEFAULT_READY_TIMEOUT_S, ready_timeout_s)
    poll = _env_seconds("JITPLAN_VAST_POLL_S", lifecycle.POLL_INTERVAL_S, poll_s)
    key_path, pubkey = find_ssh_key(identity)
    if instance_id is None and not yes and confirm is None and not _interactive():
        raise UsageError("renting a Vast.ai instance costs money; pass --yes to confirm without a terminal")
    progress = lambda i: say(f"  instance {i.id}: {i.actual_status or 'scheduling'}")  # noqa: E731
    if provider is None:
        provider = VastProvider(client, poll_s=poll, sleep=sleep, on_progress=progress)

    def ready(iid: int) -> SSHTarget:
        inst = provider.wait_ready(iid, timeout_s=timeout)
        return provider.ssh_info(inst).model_copy(update={"identity": str(key_path)})

    if instance_id is not None:
        return _attach(provider, registry, run_id, instance_id, pubkey, ready, say)

    query, chosen_image = offers_mod.query_for(plan, bid=bid, any_gpu=any_gpu, image=image)
    disk = query.min_disk_gb
    registry.add_event(run_id, "provision", f"searching Vast.ai offers for image {chosen_image}",
                       query=query.model_dump(mode="json"))
    ranked = offers_mod.rank(plan, provider.search(query), query)
    if not ranked:
        raise CheckFailed(
            f"no Vast.ai offer satisfies the plan ({query.num_gpus}x {', '.join(query.gpu_names or ['any GPU'])}, "
            f">= {query.min_cpu_ram_mb / 1000:.0f} GB RAM, >= {query.min_cpus:g} CPUs, >= {disk:g} GB disk, "
            f"CUDA >= {query.min_cuda:g}, reliability >= {query.min_reliability})",
            hint="try a --bid, or a plan for another GPU (jitplan plan --gpus ...)",
        )
    from jitplan.cli._output import err as err_console

    offers_mod.render(ranked, err_console, top=top)
    best = ranked[0]
    question = (f"Rent offer {best.offer.id} ({best.offer.num_gpus}x {best.offer.gpu_name}, {best.dph:.3f} $/h"
                f"{', interruptible' if bid else ''}) and up to {max_offers - 1} fallbacks?")
    if not yes:
        if confirm is None:
            import typer

            confirm = lambda q: typer.confirm(q, default=False, err=True)  # noqa: E731
        if not confirm(question):
            registry.add_event(run_id, "provision", "declined at the confirmation prompt")
            raise CheckFailed("not confirmed; nothing was rented")

    att = _Attempts(provider, registry, run_id, say)
    bad_machines: set[int] = set()
    reasons: list[str] = []
    onstart = render_onstart(run_id)
    base_env = {**(env or {}), "JITPLAN_RUN_ID": run_id, "JITPLAN_SSH_PUBKEY": pubkey}
    tried = 0
    try:
        for r in ranked:
            if tried >= max_offers:
                break
            if r.offer.machine_id is not None and r.offer.machine_id in bad_machines:
                continue
            tried += 1
            label = f"jitplan-{run_id}-{tried}"
            spec = CreateSpec(offer_id=r.offer.id, image=chosen_image, disk_gb=disk, label=label, env=base_env,
                              onstart=onstart, ssh_public_key=pubkey, bid=bid)
            say(f"attempt {tried}/{max_offers}: renting offer {r.offer.id} ({r.offer.num_gpus}x {r.offer.gpu_name}, "
                f"{r.dph:.3f} $/h) as {label}")
            registry.add_event(run_id, "provision", f"create offer {r.offer.id} as {label}", offer_id=r.offer.id,
                               dph=r.dph, image=chosen_image)
            att.current_label = label
            iid = _create(provider, spec, r.offer, r.dph, att, lifecycle, sleep, say)
            if iid is None:
                reasons.append(f"offer {r.offer.id}: {att.last_reason}")
                continue
            try:
                target = ready(iid)
            except ProviderError as e:
                if isinstance(e, CleanupFailed):
                    raise
                reasons.append(f"offer {r.offer.id}: {e.message}")
                registry.add_event(run_id, "provision-failed", e.message, instance_id=iid)
                say(f"  failed: {e.message}")
                if r.offer.machine_id is not None:
                    bad_machines.add(r.offer.machine_id)
                att.cleanup([iid, *[i for i in e.instance_ids if i != iid]], "failed attempt")
                continue
            att.current_label = None
            host, port = target.host, target.port
            registry.update_instance(PROVIDER, iid, status="running", ssh_host=host, ssh_port=port)
            registry.update_run(run_id, host=str(target), meta={"provider": PROVIDER, "instance_id": iid,
                                                                  "label": label, "image": chosen_image,
                                                                  "ssh_target": str(target), "identity": str(key_path)})
            registry.add_event(run_id, "provision", f"instance {iid} ready at {target}", instance_id=iid)
            say(f"instance {iid} is ready: ssh -p {port} root@{host}")
            return ProvisionResult(instance_id=iid, ssh=target, offer=r.offer, label=label, image=chosen_image,
                                   dph=r.dph)
    except CleanupFailed:
        raise  # already loud; trying again now could race the provider
    except BaseException as e:  # Ctrl-C, a refused key mid-way, anything unexpected: leave nothing billing
        why = "Ctrl-C" if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {redact(str(e))[:200]}"
        say(f"provisioning stopped ({why}): destroying what this run created")
        registry.add_event(run_id, "interrupted", f"provisioning stopped: {why}")
        try:
            att.cleanup(att.pending(), "provisioning stopped")
        except CleanupFailed as ce:
            say(f"Error: {ce.message}")
        raise
    tail = "; ".join(reasons[-max_offers:]) or "no offer left to try"
    raise CheckFailed(f"no Vast.ai instance became ready after {tried} attempt(s): {redact(tail)}",
                      hint="try again later, or plan for another GPU (jitplan plan --gpus ...)")


def _create(provider: Provider, spec: CreateSpec, offer: Offer, dph: float, att: _Attempts, lifecycle,
            sleep: Callable[[float], None], say: Callable[[str], None]) -> int | None:
    """One create, made safe: the new id (recorded), or None with ``att.last_reason`` set."""
    try:
        iid = provider.create(spec)
    except OfferUnavailable as e:
        att.last_reason = e.message
        say(f"  {e.message}")
        return None
    except CreateFailed as e:
        att.last_reason = e.message
        say(f"  {e.message}")
        if e.new_contract:
            att.record(e.new_contract, spec.label, offer, dph)
            att.cleanup([e.new_contract], "the failed create still made an instance")
        return None
    except CreateTimedOut as e:
        say(f"  {e.message}; looking for label {spec.label} before anything else")
        try:
            found = lifecycle.reconcile_create(provider, spec.label, sleep=sleep)
        except CreateTimedOut as dup:
            for i in dup.instance_ids:
                att.record(i, spec.label, offer, dph)
            att.cleanup(list(dup.instance_ids), "duplicates of one create")
            att.last_reason = dup.message
            return None
        if found is None:
            att.last_reason = "create timed out and no instance carries its label"
            return None
        say(f"  found instance {found} with label {spec.label}: using it (no second create)")
        iid = found
    att.record(iid, spec.label, offer, dph)
    return iid


def _attach(provider: Provider, registry: Registry, run_id: str, instance_id: int, pubkey: str,
            ready: Callable[[int], SSHTarget], say: Callable[[str], None]) -> ProvisionResult:
    """``--instance ID``: use an existing instance. It is not ours, so a failure never destroys it."""
    found = [i for i in provider.list() if i.id == instance_id and i.state != "gone"]
    if not found:
        raise UsageError(f"no Vast.ai instance {instance_id} in this account")
    inst = found[0]
    registry.add_instance(run_id, PROVIDER, instance_id, inst.label or f"attached-{instance_id}", inst.dph or 0.0,
                          gpu_name=inst.gpu_name, num_gpus=inst.num_gpus, status="loading")
    authorize = getattr(provider, "authorize", None)  # optional capability: attach a key to a live instance
    try:
        if authorize is not None:
            authorize(instance_id, pubkey)
        target = ready(instance_id)
    except ProviderError as e:
        registry.update_instance(PROVIDER, instance_id, status="failed")
        raise CheckFailed(f"instance {instance_id} is not usable: {e.message} (left as it is: it is not ours)") from None
    registry.update_instance(PROVIDER, instance_id, status="running", ssh_host=target.host, ssh_port=target.port)
    registry.update_run(run_id, host=str(target), meta={"provider": PROVIDER, "instance_id": instance_id,
                                                          "attached": True, "ssh_target": str(target),
                                                          "identity": target.identity})
    registry.add_event(run_id, "provision", f"attached to instance {instance_id} at {target}")
    say(f"attached to instance {instance_id}: ssh -p {target.port} {target.user}@{target.host}")
    return ProvisionResult(instance_id=instance_id, ssh=target, offer=None, label=inst.label, image=None,
                           dph=inst.dph)


def destroy(
    *,
    registry: Registry,
    run_id: str | None = None,
    instance_id: int | None = None,
    provider: Provider | None = None,
    client: VastClient | None = None,
    say: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> list[int]:
    """Destroy a run's live Vast.ai instances (or one instance by id); return the ids destroyed."""
    import time

    from jitplan.providers.vast import VastProvider

    if (run_id is None) == (instance_id is None):
        raise UsageError("destroy needs exactly one of run_id or instance_id")
    say = say or _default_say
    if run_id is not None:
        ids = [int(i.instance_id) for i in registry.instances(active_only=True, run_id=run_id, provider=PROVIDER)]
    else:
        ids = [int(instance_id)]  # type: ignore[arg-type]
    if not ids:
        return []
    provider = provider or VastProvider(client, sleep=sleep or time.sleep)
    failed: dict[int, str] = {}
    done: list[int] = []
    for iid in ids:
        try:
            provider.destroy(iid)
        except ProviderError as e:
            failed[iid] = e.message
            continue
        done.append(iid)
        try:
            row = registry.update_instance(PROVIDER, iid, status="destroyed")
            say(f"destroyed Vast.ai instance {iid} (cost so far {row.cost_so_far():.2f} $)")
        except UsageError:
            say(f"destroyed Vast.ai instance {iid} (not in the registry)")
    if failed:
        lines = "; ".join(f"{i}: {r}" for i, r in failed.items())
        raise CleanupFailed(f"could not destroy Vast.ai instance(s) {lines}; they may still be billing",
                            hint="retry `jitplan stop RUN --destroy` or use the Vast.ai console",
                            instance_ids=tuple(failed))
    return done
