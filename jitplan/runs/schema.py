"""The run registry's tables, typed rows and migrations (the ``Registry`` class is in ``registry.py``).

Schema versions (``PRAGMA user_version``):

- 1: runs, events, instances; ``runs.meta`` an untyped JSON dict (``ssh_target`` or ``ssh`` or ``host``).
- 2: ``runs.meta`` holds a :class:`RunMeta` (one ``ssh`` field); ``intents`` records each label before the
  create that will carry it, so an instance whose create never answered can still be found.

    >>> RunMeta.from_stored({"ssh_target": "root@10.0.0.5:2222", "instance_id": 7}).ssh
    'root@10.0.0.5:2222'
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict

from jitplan.errors import UsageError

SCHEMA_VERSION = 2

KNOWN_HOSTS = "known_hosts"  # beside the database: host keys of rented instances, trusted the first time
RunStatus = Literal[
    "created", "provisioning", "starting", "running", "stopping", "stopped", "finished", "failed", "interrupted"
]
RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)
ACTIVE_RUN_STATUSES = frozenset({"created", "provisioning", "starting", "running", "stopping"})

# The cloud lifecycle's states as stored (jitplan.cloud.lifecycle draws the machine): creating/loading
# (created), running (ready), training, pulled, then destroying -> destroyed; the branches outbid, exited,
# offline, kept, stopped (stopped by the provider at a cap: its disk kept) and failed (never became ready).
InstanceStatus = Literal["creating", "loading", "running", "training", "pulled", "outbid", "exited", "offline",
                         "kept", "stopped", "failed", "destroying", "destroyed", "lost"]
INSTANCE_STATUSES: tuple[str, ...] = get_args(InstanceStatus)
# An instance in one of these states is no longer billed (or no longer ours to bill).
GONE_INSTANCE_STATUSES = frozenset({"destroyed", "lost"})

TABLES = """
CREATE TABLE IF NOT EXISTS runs (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    backend     TEXT NOT NULL,
    status      TEXT NOT NULL,
    plan_path   TEXT,
    run_dir     TEXT,
    log_path    TEXT,
    pid         INTEGER,
    host        TEXT,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    ended_at    REAL,
    meta        TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    ts          REAL NOT NULL,
    kind        TEXT NOT NULL,
    message     TEXT NOT NULL,
    data        TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_run ON events(run_id, id);
CREATE TABLE IF NOT EXISTS instances (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT REFERENCES runs(id) ON DELETE SET NULL,
    provider    TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    label       TEXT NOT NULL,
    dph         REAL NOT NULL,
    gpu_name    TEXT,
    num_gpus    INTEGER,
    status      TEXT NOT NULL,
    ssh_host    TEXT,
    ssh_port    INTEGER,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    ended_at    REAL,
    UNIQUE (provider, instance_id)
);
CREATE TABLE IF NOT EXISTS intents (
    label       TEXT PRIMARY KEY,
    run_id      TEXT REFERENCES runs(id) ON DELETE SET NULL,
    provider    TEXT NOT NULL,
    offer_id    TEXT,
    dph         REAL,
    created_at  REAL NOT NULL,
    resolved_at REAL,
    instance_id TEXT
);
"""


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LastPull(_Row):
    """The last verified pull of a remote run's checkpoint (written by ``jitplan pull``)."""

    step: int | None = None
    sha256: str | None = None
    at: float | None = None
    checkpoint: str | None = None


class RunMeta(_Row):
    """What a launcher records about where a run lives; what ``stop``, ``logs`` and ``pull`` read back."""

    ssh: str | None = None  # USER@HOST:PORT of the machine the trainer runs on
    identity: str | None = None  # SSH private key file
    known_hosts: str | None = None
    accept_new_host_key: bool = False
    remote_root: str | None = None  # the remote jitplan root (code/, runs/)
    remote_run_id: str | None = None  # the run folder's name under remote_root/runs
    provider: str | None = None  # a cloud provider's name ("vast") when the machine is rented
    instance_id: int | None = None
    label: str | None = None
    image: str | None = None
    attached: bool = False  # --instance: not ours, never destroyed by a failure
    nnodes: int | None = None
    nproc_per_node: int | None = None
    local_run_dir: str | None = None  # where `jitplan pull` brings a remote run's files home
    last_pull: LastPull | None = None
    launch: dict[str, Any] | None = None  # a cloud launch's request (paths and options, no secrets): `jitplan watch`

    @classmethod
    def from_stored(cls, raw: dict[str, Any]) -> RunMeta:
        """A v1 dict -> RunMeta: ``ssh_target``/``ssh``/``host`` become ``ssh``; unknown keys are dropped."""
        data = {k: v for k, v in raw.items() if k in cls.model_fields}
        ssh = raw.get("ssh") or raw.get("ssh_target") or raw.get("host")
        if ssh:
            data["ssh"] = str(ssh)
        return cls.model_validate(data)

    def merged(self, other: RunMeta) -> RunMeta:
        """This meta with the fields ``other`` set explicitly."""
        return self.model_copy(update={k: getattr(other, k) for k in other.model_fields_set})


class RunRow(_Row):
    id: str
    name: str
    backend: str
    status: RunStatus
    plan_path: str | None = None
    run_dir: str | None = None
    log_path: str | None = None
    pid: int | None = None
    host: str | None = None
    created_at: float
    updated_at: float
    ended_at: float | None = None
    meta: RunMeta = RunMeta()

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_RUN_STATUSES


class EventRow(_Row):
    id: int
    run_id: str
    ts: float
    kind: str
    message: str
    data: dict[str, Any] = {}


class InstanceRow(_Row):
    id: int
    run_id: str | None
    provider: str
    instance_id: str
    label: str
    dph: float  # $/hour while it exists
    gpu_name: str | None = None
    num_gpus: int | None = None
    status: InstanceStatus
    ssh_host: str | None = None
    ssh_port: int | None = None
    created_at: float
    updated_at: float
    ended_at: float | None = None

    @property
    def active(self) -> bool:
        return self.status not in GONE_INSTANCE_STATUSES

    def cost_so_far(self, now: float | None = None) -> float:
        """dph x hours from creation to destruction (or to ``now``)."""
        end = self.ended_at if self.ended_at is not None else (time.time() if now is None else now)
        return self.dph * max(end - self.created_at, 0.0) / 3600.0


class IntentRow(_Row):
    """A label written before the create that carries it: the key to find an instance we never heard of."""

    label: str
    run_id: str | None
    provider: str
    offer_id: str | None = None
    dph: float | None = None
    created_at: float
    resolved_at: float | None = None  # set once we know which instance (or that none) carries the label
    instance_id: str | None = None

    @property
    def open(self) -> bool:
        return self.resolved_at is None


def run_row(row: sqlite3.Row) -> RunRow:
    return RunRow(**{**dict(row), "meta": RunMeta.model_validate_json(row["meta"])})


def inst_row(row: sqlite3.Row) -> InstanceRow:
    return InstanceRow(**dict(row))


def migrate(con: sqlite3.Connection, version: int) -> None:
    """Bring a database at ``version`` to SCHEMA_VERSION (inside the caller's write transaction)."""
    for stmt in filter(str.strip, TABLES.split(";")):
        con.execute(stmt)
    if 0 < version < 2:  # v1 meta dicts -> RunMeta
        for rid, raw in con.execute("SELECT id, meta FROM runs").fetchall():
            meta = RunMeta.from_stored(json.loads(raw or "{}"))
            con.execute("UPDATE runs SET meta=? WHERE id=?", (meta.model_dump_json(exclude_defaults=True), rid))
    con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


# The columns a jitplan database's tables must have (what the code reads); anything else is not ours.
OUR_COLUMNS = {"runs": {"id", "name", "backend", "status", "meta", "created_at"},
               "events": {"run_id", "ts", "kind", "message", "data"},
               "instances": {"run_id", "provider", "instance_id", "label", "dph", "status"}}


def unusable(path: Path, why: str) -> UsageError:
    """The one line for a registry file that is not (or no longer) a jitplan database, with the fix; a full
    or failing disk is said as such (the file may be fine: moving it aside would lose the runs)."""
    if any(s in why for s in ("disk is full", "disk I/O error", "No space left")):
        return UsageError(f"run registry {path}: {why} (the disk holding it is full or failing); nothing was changed",
                          hint=f"free space on the disk of {path.parent}, or set JITPLAN_HOME to another folder")
    return UsageError(f"run registry {path} is not a usable jitplan database ({why}); nothing was changed",
                      hint=f"move it aside (mv {path} {path}.bad) and jitplan starts a new one, "
                      "or set JITPLAN_HOME to another folder")


def check_ours(con: sqlite3.Connection, path: Path) -> int:
    """The schema version of the database behind ``con``, read without writing. UsageError (naming the file
    and the fix) when it is newer than this jitplan or not ours: another program's tables, a version stamp
    without our tables. An empty file is ours to create (version 0)."""
    version = con.execute("PRAGMA user_version").fetchone()[0]
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    tables.discard("sqlite_sequence")
    if version > SCHEMA_VERSION:
        raise UsageError(f"run registry {path} has schema version {version}; this jitplan knows {SCHEMA_VERSION}",
                         hint="upgrade jitplan or set JITPLAN_HOME to another folder")
    if version == 0:
        if tables:
            raise unusable(path, f"it holds another program's tables: {', '.join(sorted(tables)[:5])}")
        return 0
    for table, need in OUR_COLUMNS.items():
        have = {r[1] for r in con.execute(f"PRAGMA table_info({table})")}
        if not need <= have:
            raise unusable(path, f"its table {table!r} is not jitplan's" if have else f"it has no {table!r} table")
    return version
