"""The SSH job of a recorded remote run: what ``logs``, ``stop``, ``pull`` and the cloud watcher reach it by.

Built from what the launcher recorded (``RunMeta.ssh``, else the row's ``host``). A rented instance's host
key goes to the known_hosts file beside the registry (trusted the first time), as ``launch`` put it there.

    job = ssh_launch(Registry().get_run("8f3c"), registry_dir)     # SSHLaunch, or None for a local run
    remote_state(job)       # the on-instance watchdog's state: {"state": "done", "reason": "max-hours", ...}
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from jitplan.launch.ssh import SSHLaunch, SSHOptions, parse_target
from jitplan.launch.watchdog import STATE
from jitplan.providers.registry import is_provider
from jitplan.runs.schema import KNOWN_HOSTS, RunRow
from jitplan.transport.sshcmd import Step, remote_sh


def is_remote(run: RunRow) -> bool:
    """Whether the run's trainer runs on another machine (over SSH, or on a rented instance)."""
    return run.backend == "ssh" or is_provider(run.backend) or run.meta.provider is not None or bool(run.meta.ssh)


def ssh_launch(run: RunRow, registry_dir: Path | None = None) -> SSHLaunch | None:
    """An SSHLaunch for a remote run, from what the launcher recorded (``meta.ssh``, else ``host``)."""
    meta = run.meta
    target = meta.ssh or (run.host if is_remote(run) else None)
    if not target:
        return None
    known_hosts, accept_new = meta.known_hosts, meta.accept_new_host_key
    if (meta.provider or is_provider(run.backend)) and known_hosts is None and registry_dir is not None:
        known_hosts, accept_new = str(registry_dir / KNOWN_HOSTS), True  # where a cloud launch keeps them
    remote_id = meta.remote_run_id or (Path(run.run_dir).name if run.run_dir else run.name)
    return SSHLaunch(parse_target(target, meta.identity), SSHOptions(known_hosts=known_hosts,
                                                                     accept_new_host_key=accept_new),
                     root=meta.remote_root or "jitplan", run_id=remote_id)


def remote_state(job: SSHLaunch) -> dict:
    """The watchdog's state on the remote; ``{"state": "done", "reason": finished|failed}`` from ``exit_code``
    when no watchdog runs there; ``{}`` while nothing is known. CheckFailed when SSH does not answer."""
    q = shlex.quote
    d = job.run_dir
    script = (f"cat {q(d + '/' + STATE)} 2>/dev/null; echo; echo ---; cat {q(d + '/exit_code')} 2>/dev/null; "
              f"echo; [ -s {q(d + '/watchdog-config.json')} ] && echo watchdog; true")
    text = job.run(Step(name="read watchdog state", argv=job.ssh(remote_sh(script))), timeout_s=120)
    state_text, _, rest = text.partition("---")
    try:
        state = json.loads(state_text.strip() or "{}")
    except ValueError:
        state = {}  # half-written is impossible (atomic), but a foreign file is not our business
    code = rest.split()[0] if rest.split() and rest.split()[0].lstrip("-").isdigit() else None
    if state.get("state") != "done" and code is not None and "watchdog" not in rest:
        return {"state": "done", "reason": "finished" if code == "0" else "failed", "exit_code": int(code)}
    return state
