"""The SSH job of a recorded remote run: what ``logs``, ``stop``, ``pull`` and the cloud watcher reach it by.

Built from what the launcher recorded (``RunMeta.ssh``, else the row's ``host``). A rented instance's host
key goes to the known_hosts file beside the registry (trusted the first time), as ``launch`` put it there.

    job = ssh_launch(Registry().get_run("8f3c"), registry_dir)     # SSHLaunch, or None for a local run
"""

from __future__ import annotations

from pathlib import Path

from jitplan.launch.ssh import SSHLaunch, SSHOptions, parse_target
from jitplan.providers.registry import is_provider
from jitplan.runs.schema import KNOWN_HOSTS, RunRow


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
