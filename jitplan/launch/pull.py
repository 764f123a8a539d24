"""Pull a remote run home: its latest checkpoint, metrics and logs, verified, into the local run folder.

Nothing is lost at teardown: ``jitplan stop RUN --destroy`` and every automatic teardown call
:func:`pull_before_destroy` first, which refuses (``PullFailed``, exit 1) when the pull or its check fails,
unless the user said ``--discard``. ``jitplan pull RUN`` runs the same pull while the run trains.

One pull, in order:

1. On the remote (one ssh call): hard-link ``out/last.pt`` to ``.pull/last.pt`` (a snapshot: the trainer
   replaces ``last.pt`` atomically, so the link keeps the file we hash even if a newer one lands), and
   print its sha256 and size, computed there.
2. One rsync (real rsync over the same ssh options) of exactly ``.pull/last.pt``, ``out/metrics.jsonl``,
   ``train.log``, ``watchdog.log``, ``watchdog-state.json`` and ``exit_code`` into the local run folder.
3. Here: the sha256 of the received file must equal the remote one; the checkpoint must load with
   ``torch.load(weights_only=True)`` in a child process (so the CLI stays torch-free), which also checks
   its per-tensor digests (``jitmodel.integrity``) when it carries them: the one load check doctor uses too
   (``jitplan.doctor.ckpt.load_check``).
4. Only then is it promoted: hard links ``out/last.pt`` and ``out/ckpt/{step:07d}.pt``, and ``pulled.json``
   (step, sha256, size, when). A failed pull never replaces an earlier good one.

    from jitplan.runs.registry import Registry
    res = pull_run(Registry(), "8f3c")          # PullResult: local checkpoint, step, sha256, files
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from jitmodel.atomic import atomic_write_text
from jitmodel.integrity import sha256_file
from jitplan.doctor.ckpt import load_check
from jitplan.errors import CheckFailed, JitplanError, UsageError
from jitplan.launch.remote_job import ssh_launch
from jitplan.runs.schema import LastPull, RunMeta
from jitplan.transport.sshcmd import Step, remote_sh, rsync_pull_argv

if TYPE_CHECKING:  # pragma: no cover
    from jitplan.launch.ssh import SSHLaunch
    from jitplan.runs.registry import Registry, RunRow

SNAPSHOT = ".pull/last.pt"
PULLED_FILES = ("train.log", "watchdog.log", "watchdog-state.json", "exit_code", "out/metrics.jsonl")
MANIFEST = "pulled.json"

class PullFailed(CheckFailed):
    """A pull or its verification failed. ``not_saved`` names what exists only on the remote."""

    def __init__(self, message: str, hint: str | None = None, not_saved: tuple[str, ...] = ()) -> None:
        super().__init__(message, hint)
        self.not_saved = tuple(not_saved)


class PullResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    local_dir: str
    remote: str
    checkpoint: str | None  # the local, verified checkpoint (out/last.pt); None when the remote had none
    step: int | None = None
    sha256: str | None = None
    size: int | None = None
    tensor_digests: str | None = None  # verified | absent
    files: list[str]  # the other files now here (relative to local_dir)
    seconds: float
    message: str


def snapshot_script(run_dir: str) -> str:
    """The remote half of a pull: snapshot the checkpoint by hard link, print ``ckpt SHA SIZE`` or
    ``ckpt none``; ``nofolder`` when the run folder is missing. Pure.

        >>> "ln -f out/last.pt .pull/last.pt" in snapshot_script("/r/runs/a b")
        True
    """
    q = shlex.quote
    return (f"cd {q(run_dir)} 2>/dev/null || {{ echo nofolder; exit 0; }}; mkdir -p .pull && "
            f"if [ -f out/last.pt ]; then "
            f"{{ ln -f out/last.pt {SNAPSHOT} 2>/dev/null || {{ cp -p out/last.pt {SNAPSHOT}.tmp && "
            f"mv {SNAPSHOT}.tmp {SNAPSHOT}; }}; }} && "
            f"echo ckpt $(sha256sum {SNAPSHOT} | cut -d' ' -f1) $(wc -c < {SNAPSHOT}); "
            f"else rm -f {SNAPSHOT}; echo ckpt none; fi")


def parse_snapshot(text: str) -> tuple[str, int] | None:
    """``ckpt SHA SIZE`` -> (sha, size); ``ckpt none`` -> None. ValueError on anything else. Pure.

        >>> parse_snapshot("ckpt " + "a" * 64 + " 12\\n")
        ('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 12)
    """
    lines = [ln.split() for ln in text.splitlines() if ln.strip()]
    last = lines[-1] if lines else []
    if last == ["nofolder"]:
        raise ValueError("the remote run folder does not exist")
    if last == ["ckpt", "none"]:
        return None
    if len(last) == 3 and last[0] == "ckpt" and len(last[1]) == 64 and last[2].isdigit():
        return last[1], int(last[2])
    raise ValueError(f"unexpected answer from the remote: {' '.join(' '.join(x) for x in lines)[:200]!r}")


def verify_loads(path: Path, *, python: str = sys.executable, timeout_s: float = 900) -> dict[str, Any]:
    """The one checkpoint load check (:func:`jitplan.doctor.ckpt.load_check`): its step and digest verdict
    (``tensor_digests``: verified | absent). ValueError when it does not load."""
    try:
        got = load_check(path, python, timeout_s)
    except UsageError as e:
        raise ValueError(f"it does not load: {e.message}") from None
    return {"format": got.format, "step": got.step,
            "tensor_digests": "verified" if got.integrity == "verified" else "absent"}


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.link(src, tmp)
    os.replace(tmp, dst)


def _verified_before(local: Path, sha: str) -> dict[str, Any] | None:
    """What the last pull recorded, when it verified a file with this sha256 (its file still has it)."""
    try:
        prev = json.loads((local / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(prev, dict):  # a tampered manifest: verify again
        return None
    last = local / "out" / "last.pt"
    if prev.get("sha256") != sha or not last.is_file() or sha256_file(last) != sha:
        return None
    return {"step": prev.get("step"), "tensor_digests": prev.get("tensor_digests")}


def _drop_stale_snapshot(local: Path, snap: tuple[str, int] | None) -> None:
    """Unlink the previous pull's snapshot unless it is the remote one: rsync's quick check skips a file whose
    size and mtime match, and two checkpoints of one model have the same size and may share a second (the
    promoted copies are other links to it, so nothing verified is lost)."""
    got = local / SNAPSHOT
    if not got.is_file():
        return
    try:
        raw = json.loads((local / MANIFEST).read_text())
        prev = raw.get("sha256") if isinstance(raw, dict) else None
    except (OSError, ValueError):
        prev = None
    if snap is None or prev != snap[0] or got.stat().st_size != snap[1]:
        got.unlink()


def pull(job: SSHLaunch, local_dir: str | Path, *, timeout_s: float = 6 * 3600) -> PullResult:
    """Pull the run of ``job`` into ``local_dir`` and verify it (see the module doc). PullFailed otherwise."""

    t0 = time.monotonic()
    local = Path(local_dir).resolve()
    where = f"{job.target}:{job.run_dir}"
    everything = ("the checkpoint", "metrics.jsonl", "train.log")
    try:
        snap = parse_snapshot(job.run(Step(name="snapshot checkpoint", argv=job.ssh(remote_sh(
            snapshot_script(job.run_dir)))), timeout_s=timeout_s))
    except ValueError as e:
        raise PullFailed(f"pull from {where}: {e}", not_saved=everything) from None
    except CheckFailed as e:
        raise PullFailed(f"pull from {where}: {e.message}", hint=e.hint, not_saved=everything) from None
    local.mkdir(parents=True, exist_ok=True)
    _drop_stale_snapshot(local, snap)
    includes = ["/.pull/", f"/{SNAPSHOT}" if snap else "/.pull/none", "/out/",
                *(f"/{f}" for f in PULLED_FILES)]
    argv = rsync_pull_argv(job.target, job.opts, job.run_dir + "/", str(local) + "/", includes=includes)
    try:
        job.run(Step(name="pull files", argv=argv), timeout_s=timeout_s)
    except CheckFailed as e:
        raise PullFailed(f"pull from {where}: {e.message}", not_saved=everything) from None
    files = [f for f in PULLED_FILES if (local / f).is_file()]
    if snap is None:
        return PullResult(local_dir=str(local), remote=where, checkpoint=None, files=files,
                          seconds=time.monotonic() - t0, message=f"no checkpoint on {where} yet; pulled "
                          f"{', '.join(files) or 'nothing else'}")
    sha, size = snap
    got = local / SNAPSHOT
    not_ckpt = ("the checkpoint",)
    if not got.is_file():
        raise PullFailed(f"pull from {where}: rsync brought no checkpoint", not_saved=not_ckpt)
    local_sha = sha256_file(got)
    if local_sha != sha or got.stat().st_size != size:
        raise PullFailed(f"pulled checkpoint from {where} differs from the remote file (sha256 {local_sha[:12]} "
                         f"here, {sha[:12]} there; {got.stat().st_size} vs {size} bytes)", not_saved=not_ckpt)
    info = _verified_before(local, sha)  # the same bytes were verified by an earlier pull: not again
    try:
        info = info or verify_loads(got)
    except ValueError as e:
        raise PullFailed(f"pulled checkpoint from {where} is not usable: {e}", not_saved=not_ckpt) from None
    step = info.get("step")
    _link(got, local / "out" / "last.pt")
    if isinstance(step, int):
        _link(got, local / "out" / "ckpt" / f"{step:07d}.pt")
    manifest = {"step": step, "sha256": sha, "size": size, "remote": where, "pulled_at": time.time(),
                "tensor_digests": info.get("tensor_digests")}
    atomic_write_text(local / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    secs = time.monotonic() - t0
    return PullResult(local_dir=str(local), remote=where, checkpoint=str(local / "out" / "last.pt"), step=step,
                      sha256=sha, size=size, tensor_digests=info.get("tensor_digests"), files=files, seconds=secs,
                      message=f"pulled step {step} ({size / 2**20:.1f} MiB, sha256 {sha[:12]} matches, loads) "
                      f"and {', '.join(files) or 'no other files'} into {local} in {secs:.1f} s")


# ------------------------------------------------------------------------------- runs in the registry
def remote_job(run: RunRow, registry_dir: Path | None = None) -> SSHLaunch | None:
    """An SSHLaunch for a remote run, from what the launcher recorded (``meta.ssh``, else ``host``)."""
    return ssh_launch(run, registry_dir)


def local_run_dir(run: RunRow, registry_dir: Path) -> Path:
    """Where a remote run's files come home: the staged run folder the launcher recorded, else
    ``<registry folder>/runs/<run id>``."""
    return Path(run.meta.local_run_dir or registry_dir / "runs" / run.id)


def pull_run(registry: Registry, run_id: str) -> PullResult:
    """Pull a recorded remote run (events ``pull`` / ``pulled`` / ``pull-failed``; ``meta.last_pull``)."""
    run = registry.get_run(run_id)
    job = remote_job(run, registry.path.parent)
    if job is None:
        raise UsageError(f"run {run.id} ({run.backend}) has no remote to pull from; its files are in {run.run_dir}")
    local = local_run_dir(run, registry.path.parent)
    registry.add_event(run.id, "pull", f"pulling {job.run_dir} from {job.target} into {local}")
    try:
        res = pull(job, local)
    except PullFailed as e:
        registry.add_event(run.id, "pull-failed", e.message, not_saved=list(e.not_saved))
        raise
    last = LastPull(step=res.step, sha256=res.sha256, at=time.time(), checkpoint=res.checkpoint)
    registry.update_run(run.id, meta=RunMeta(local_run_dir=str(local), last_pull=last) if res.checkpoint
                        else RunMeta(local_run_dir=str(local)))
    registry.add_event(run.id, "pulled", res.message, step=res.step, sha256=res.sha256)
    return res


def pull_before_destroy(registry: Registry, run_id: str, *, discard: bool = False,
                        say: Callable[[str], None] = lambda m: None) -> PullResult | None:
    """The teardown guard: pull and verify, or refuse (PullFailed, naming what would be lost).

    With ``discard`` a failed pull is recorded and teardown goes on (returns None)."""
    run = registry.get_run(run_id)
    live = [i.instance_id for i in registry.cloud.instances(active_only=True, run_id=run.id)]
    if remote_job(run, registry.path.parent) is None:  # training starts only after its endpoint is recorded
        registry.add_event(run.id, "pull", "no SSH endpoint was ever recorded: no training ran, nothing to pull")
        say(f"run {run.id} never reached its instance over SSH: nothing to pull")
        return None
    try:
        return pull_run(registry, run.id)
    except JitplanError as e:
        prev = run.meta.last_pull
        kept = (f"the last verified pull is step {prev.step} in {prev.checkpoint}" if prev
                else "nothing was ever pulled")
        remote = f"{run.meta.ssh or run.host}:{run.run_dir}"
        lost = (f"not saved: the newest checkpoint, metrics.jsonl and train.log in {remote}"
                f"{' on instance ' + ', '.join(live) if live else ''}; {kept}")
        if discard:
            registry.add_event(run.id, "discard", f"teardown without a verified pull (--discard): {lost}")
            say(f"pull failed ({e.message}); --discard given, so going on: {lost}")
            return None
        # what is lost first: a long cause may be cut
        raise PullFailed(f"not destroying run {run.id}: {lost}; the pull failed: {e.message}",
                         hint=f"fix the connection and `jitplan pull {run.id}`, or pass --discard to destroy "
                         "anyway and lose what is listed") from None
