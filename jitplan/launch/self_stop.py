"""An instance stopping itself at a cap when nobody watches it from outside (``--detach``).

Run by the on-instance watchdog (``jitplan.launch.watchdog``) after it stopped training at ``--max-hours`` or
``--budget`` and the trainer exited with its checkpoint. It first gives a watcher (``jitplan watch``, a
launcher that stayed) ``grace_s`` to claim the teardown by writing ``teardown-claimed`` in the run folder:
a watcher pulls, then destroys, and a stop now would take the disk it is reading. Unclaimed, it sends the
provider's :class:`jitplan.providers.SelfStop` request with the instance's own key (Vast's
``CONTAINER_API_KEY``, from the environment or the file onstart persisted it to). Never the user's key.

    stop_self(run_dir, cfg.self_stop, grace_s=300, log=print)     # 'claimed' | 'requested' | 'failed: ...'
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from jitplan.providers import SelfStop

CLAIMED = "teardown-claimed"  # a watcher pulls and destroys: the instance must not stop itself


def env_file_value(path: str | None, name: str) -> str | None:
    """``NAME=value`` from an environment file (``/etc/environment``), quotes stripped; None when absent."""
    if not path:
        return None
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        k, sep, v = line.strip().partition("=")
        if sep and k.strip() == name:
            return v.strip().strip("'\"") or None
    return None


def stop_self(run_dir: Path, how: SelfStop, *, grace_s: float, log: Callable[[str], None],
              clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> str:
    """Wait ``grace_s`` for a claim, else send the stop. 'claimed' | 'requested' | 'failed: <why>' (no secret)."""
    deadline = clock() + grace_s
    while True:
        if (run_dir / CLAIMED).exists():
            log("a watcher claimed the teardown: not stopping the instance")
            return "claimed"
        if clock() >= deadline:
            break
        sleep(1.0)
    key = os.environ.get(how.key_env) or env_file_value(how.env_file, how.key_env)
    if not key:
        log(f"cannot stop the instance: no {how.key_env} here; it bills until stopped from outside")
        return f"failed: no {how.key_env} on the instance"
    import urllib.request  # lazy: start-up (only at a cap)

    req = urllib.request.Request(how.url, data=json.dumps(how.body).encode(), method=how.method,
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as res:
            status = res.status
    except OSError as e:  # URLError and HTTPError are OSErrors
        log(f"stopping the instance failed ({type(e).__name__}: {getattr(e, 'code', '') or e})")
        return f"failed: {type(e).__name__}"
    log(f"nobody claimed the teardown: stopped the instance ({how.what}); HTTP {status}")
    return "requested"
