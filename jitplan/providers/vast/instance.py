"""Instance lifecycle on Vast.ai: wait until ready, reconcile an unanswered create, clean up.

"Ready" means running *and* SSH-reachable: Vast shows ``ssh_port`` before sshd accepts connections and
while ``onstart`` still runs (vast.md §3.9), so we read the SSH banner on the port. Waiting uses a
``time.monotonic()`` deadline and fails fast on terminal states (exited, OCI error, outbid, host lost,
vanished) instead of waiting them out; a flaky API (429, 5xx) is waited out. ``destroy_all`` destroys exactly
the ids it is given and says which could not be destroyed (``VastProvider.destroy``, called only by
``jitplan.cloud.lifecycle``, which retries it within its deadline).

    inst = wait_ready(client, 31337001, timeout_s=900)      # Instance, state "running", SSH answered
    find_label(client, "jitplan-8f3c2a-1")                  # [Instance] | [] ; LookupUnanswered if unknown
    host, port = reachable_endpoint(inst)                   # direct first, then the proxy
    failed = destroy_all(client, [31337001])                # [] when every instance is gone
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Protocol

from jitplan.providers import (
    Instance,
    InstanceFailed,
    LookupUnanswered,
    ProviderError,
    ReadyTimeout,
    Transient,
)

POLL_INTERVAL_S = 5.0  # Vast's show-instance threshold is 2 s (vast.md §1.5); poll slower than that
DEFAULT_READY_TIMEOUT_S = 20 * 60.0  # image pulls on slow hosts take minutes (SkyPilot 30 min, dstack 10)
SSH_PROBE_TIMEOUT_S = 3.0
RECONCILE_READS = 3  # read-after-create lag: SkyPilot retries the read 3 x 1 s and never resends the create
LOOKUP_DEADLINE_S = 120.0  # how long a label lookup keeps asking through 429/5xx before it says "unknown"
LOOKUP_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)


class _Reads(Protocol):
    def show(self, instance_id: int) -> Instance: ...

    def list(self, label: str | None = None) -> list[Instance]: ...

    def destroy(self, instance_id: int) -> None: ...


def ssh_banner(host: str, port: int, timeout_s: float = SSH_PROBE_TIMEOUT_S) -> str | None:
    """The SSH server's identification line (``SSH-2.0-...``), or None when nothing answers like sshd."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as s:
            s.settimeout(timeout_s)
            data = b""
            while b"\n" not in data and len(data) < 256:
                chunk = s.recv(256)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    line = data.split(b"\n", 1)[0].strip().decode("ascii", errors="replace")
    return line if line.startswith("SSH-") else None


def reachable_endpoint(
    inst: Instance, probe: Callable[[str, int], str | None] = ssh_banner
) -> tuple[str, int] | None:
    """The first SSH endpoint that answers with an SSH banner: direct (public IP) first, then the proxy."""
    for host, port in inst.ssh_endpoints():
        if probe(host, port):
            return host, port
    return None


def wait_ready(
    client: _Reads,
    instance_id: int,
    *,
    timeout_s: float = DEFAULT_READY_TIMEOUT_S,
    poll_s: float = POLL_INTERVAL_S,
    probe: Callable[[str, int], str | None] = ssh_banner,
    on_progress: Callable[[Instance], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[Instance, tuple[str, int]]:
    """Poll until the instance runs and answers on SSH; return it with the endpoint that answered.

    Pending (keep polling): null/provisioning, loading, rebooting, scheduling, "created" without an error.
    Failed (raise InstanceFailed at once): exited, unknown/offline, frozen, an OCI error, stopped (outbid),
    gone. A 429, a 5xx or a connection error skips one poll (after the SDK's own retries): a healthy instance
    is never given up for a flaky API. ReadyTimeout when the deadline passes.
    """
    deadline = clock() + timeout_s
    last: Instance | None = None
    flaky = ""
    while True:
        try:
            inst = client.show(instance_id)
        except Transient as e:  # seen 2026: bursts of 502 from Vast's nginx while instances are fine
            inst, flaky = None, e.message
        if inst is not None:
            last = inst
            if on_progress is not None:
                on_progress(inst)
            if inst.state == "gone":
                raise InstanceFailed(f"instance {instance_id} vanished while starting", instance_ids=(instance_id,))
            if inst.state in ("failed", "stopped"):
                why = "stopped (outbid or out of credit)" if inst.state == "stopped" else "did not start"
                raise InstanceFailed(f"{why}: {inst.summary()}", instance_ids=(instance_id,))
            if inst.state == "running":
                endpoint = reachable_endpoint(inst, probe)
                if endpoint is not None:
                    return inst, endpoint
        remaining = deadline - clock()
        if remaining <= 0:
            where = last.summary() if last else f"instance {instance_id} never answered ({flaky or 'no reply'})"
            ssh = " (running, but SSH did not answer)" if last and last.state == "running" else ""
            raise ReadyTimeout(
                f"not ready after {timeout_s:.0f} s{ssh}: {where}", instance_ids=(instance_id,)
            )
        sleep(min(poll_s, remaining))


def find_label(
    client: _Reads,
    label: str,
    *,
    reads: int = RECONCILE_READS,
    wait_s: float = 1.0,
    deadline_s: float = LOOKUP_DEADLINE_S,
    backoff_s: tuple[float, ...] = LOOKUP_BACKOFF_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Instance]:
    """The live instances carrying ``label`` (after a create error of any kind).

    An empty answer is read ``reads`` times (Vast lags after a create) before it counts as "none". A 429, 5xx
    or connection error is retried with backoff until ``deadline_s``; then LookupUnanswered -- an unanswered
    lookup is never read as "none", so the caller never rents again on a guess.
    """
    deadline = clock() + deadline_s
    empty, tries, last = 0, 0, ""
    while True:
        try:
            found = [x for x in client.list(label=label) if x.state != "gone"]
        except Transient as e:
            last = e.message
            wait = backoff_s[min(tries, len(backoff_s) - 1)]
            tries += 1
            if clock() + wait > deadline:
                raise LookupUnanswered(
                    f"could not look up label {label} ({tries} tries in {deadline_s:g} s; last: {last})"
                ) from None
            sleep(wait)
            continue
        if found:
            return found
        empty += 1
        if empty >= reads:
            return []
        sleep(wait_s)


def destroy_all(
    client: _Reads, instance_ids: list[int] | tuple[int, ...], *, tries: int = 3,
    sleep: Callable[[float], None] = time.sleep
) -> list[tuple[int, str]]:
    """Destroy each id (a few tries each, 429 and 5xx happen) and check it is gone; return the failures."""
    failed: list[tuple[int, str]] = []
    for iid in dict.fromkeys(instance_ids):  # each once, in order
        reason = ""
        for attempt in range(tries):
            try:
                client.destroy(iid)
                inst = client.show(iid)
                if inst.state == "gone":
                    reason = ""
                    break
                reason = f"Vast.ai instance {iid} is still {inst.actual_status or inst.state} after a destroy"
            except ProviderError as e:
                reason = e.message
            sleep(1.0 * (attempt + 1))
        if reason:
            failed.append((iid, reason))
    return failed
