"""One instance rented for a job that is not a training run of its own (``jitplan compare`` on a cloud): rent
it under a run of its own, and release it through the lifecycle when the job ends, however it ends.

    rental = rent_once(plan, "vast", "compare", Hooks(say=print), registry=Registry(), yes=True)
    ...                                            # every arm runs over SSH on rental.got.ssh
    rental.release(keep=False, status="finished")  # destroyed (or, kept, the exact command that stops it)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jitplan.cloud.lifecycle import Lifecycle, stop_hint
from jitplan.cloud.provision import Hooks, ProvisionRequest, ProvisionResult, provision
from jitplan.errors import CheckFailed
from jitplan.providers import CleanupFailed
from jitplan.providers.registry import make_provider

if TYPE_CHECKING:  # pragma: no cover
    from jitplan.providers import Provider
    from jitplan.runs.registry import Registry
    from jitplan.runs.schema import RunStatus
    from jitplan.schemas import Plan


@dataclass
class Rental:
    provider: Provider
    registry: Registry
    run_id: str
    got: ProvisionResult
    say: Callable[[str], None]

    def release(self, keep: bool, status: RunStatus) -> None:
        """Destroy the instance (``status`` is the job's outcome), or keep it and say how to stop it."""
        iid, dph, stop = self.got.instance_id, self.got.dph or 0.0, stop_hint(self.run_id)
        lc = Lifecycle(self.registry, self.provider, self.run_id, say=self.say)
        if keep:
            lc.mark(iid, "kept", f"the job ended; instance {iid} kept (--keep)")
            self.say(f"instance {iid} kept (--keep): it bills {dph:.3f} $/h until you run:\n  {stop}")
            return
        try:
            lc.destroy_all(f"the job ended ({status})")
        except CleanupFailed as e:
            self.say(f"Error: {e.message}; it bills {dph:.3f} $/h until you run:\n  {stop}")
            raise CheckFailed(e.message, hint=f"stop it with: {stop}") from None
        self.registry.set_status(self.run_id, status, f"{status}; instance {iid} destroyed")
        self.say(f"instance {iid} destroyed: nothing of this job is left billing")


def rent_once(plan: Plan, provider_name: str, name: str, hooks: Hooks, *, registry: Registry,
              bid: float | None = None, yes: bool = False, identity: str | None = None) -> Rental:
    """Rent one instance for ``plan`` under a new run called ``name`` (recorded before anything is rented)."""
    run_id = registry.create_run(name, provider_name, status="provisioning")
    provider = make_provider(provider_name, hooks.say)
    req = ProvisionRequest(plan=plan, run_id=run_id, bid=bid, yes=yes, identity=identity)
    got = provision(provider, req, hooks, registry=registry)
    return Rental(provider=provider, registry=registry, run_id=run_id, got=got, say=hooks.say)
