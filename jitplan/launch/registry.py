"""The run registry: one SQLite file holding runs, their events and the cloud instances they rent.

Safe under concurrent CLI calls: WAL journal, a busy timeout, every write in its own ``BEGIN IMMEDIATE``
transaction, one short-lived connection per call (so threads and processes never share one). Nothing
secret is stored: every text and JSON value passes through :func:`jitplan.secrets.redact` first.

The file lives in the user's data directory: ``$JITPLAN_HOME``, else ``$XDG_DATA_HOME/jitplan``, else
``~/.local/share/jitplan`` (``runs.db``).

    >>> import tempfile, pathlib
    >>> reg = Registry(pathlib.Path(tempfile.mkdtemp()) / "runs.db")
    >>> rid = reg.create_run("JiT-B-16-demo", "local", plan_path="plan.yaml", run_dir="runs/demo")
    >>> reg.set_status(rid, "running")
    >>> reg.add_event(rid, "restart", "worker OOM-killed; 2 -> 1 workers", workers=1)
    >>> reg.get_run(rid[:4]).status
    'running'
    >>> [e.kind for e in reg.events(rid)]
    ['created', 'status', 'restart']
"""

from __future__ import annotations

import json
import os
import secrets as _pyrandom
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict

from jitplan.errors import UsageError
from jitplan.secrets import redact, redact_obj

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0

RunStatus = Literal[
    "created", "provisioning", "starting", "running", "stopping", "stopped", "finished", "failed", "interrupted"
]
RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)
ACTIVE_RUN_STATUSES = frozenset({"created", "provisioning", "starting", "running", "stopping"})

InstanceStatus = Literal["creating", "loading", "running", "stopped", "failed", "destroying", "destroyed", "lost"]
INSTANCE_STATUSES: tuple[str, ...] = get_args(InstanceStatus)
# An instance in one of these states is no longer billed (or no longer ours to bill).
GONE_INSTANCE_STATUSES = frozenset({"destroyed", "lost"})

_SCHEMA = """
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
"""


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    meta: dict[str, Any] = {}

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


def default_home(env: dict[str, str] | None = None) -> Path:
    """``$JITPLAN_HOME``, else ``$XDG_DATA_HOME/jitplan``, else ``~/.local/share/jitplan``."""
    env = dict(os.environ) if env is None else env
    if env.get("JITPLAN_HOME"):
        return Path(env["JITPLAN_HOME"]).expanduser()
    if env.get("XDG_DATA_HOME"):
        return Path(env["XDG_DATA_HOME"]).expanduser() / "jitplan"
    return Path(env.get("HOME") or Path.home()) / ".local" / "share" / "jitplan"


def default_path() -> Path:
    return default_home() / "runs.db"


def _new_id() -> str:
    return _pyrandom.token_hex(3)  # 6 hex digits, like a short git sha: "8f3c2a"


def _json(data: dict[str, Any] | None) -> str:
    return json.dumps(redact_obj(data or {}), sort_keys=True, default=str)


def _text(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class Registry:
    """The run registry. ``Registry()`` opens (and creates) the default database."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as con:
            mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise UsageError(f"cannot use WAL journal for the run registry at {self.path} (got {mode!r})")
            version = con.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise UsageError(
                    f"run registry {self.path} has schema version {version}; this jitplan knows {SCHEMA_VERSION}",
                    hint="upgrade jitplan or set JITPLAN_HOME to another folder",
                )
            if version < SCHEMA_VERSION:
                with self._write(con):
                    for stmt in filter(str.strip, _SCHEMA.split(";")):
                        con.execute(stmt)
                    con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    # ---------------------------------------------------------------- connections
    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection (one per thread and process: sqlite3 connections are not shareable).

        Kept open: when the last connection to a WAL database closes, SQLite checkpoints and fsyncs, which
        made every call of a lone CLI command wait for the disk (benchmarks/bench_registry.py).
        """
        key = (os.getpid(), threading.get_ident())
        con = self._local.__dict__.get("con")
        if con is None or self._local.__dict__.get("key") != key:
            con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            con.row_factory = sqlite3.Row
            con.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            con.execute("PRAGMA foreign_keys=ON")
            # WAL + NORMAL: no fsync per commit (the database cannot corrupt; a power cut may lose the last
            # commits). FULL made each write wait ~40 ms for the disk here (benchmarks/bench_registry.py).
            con.execute("PRAGMA synchronous=NORMAL")
            self._local.con, self._local.key = con, key
        yield con

    def close(self) -> None:
        """Close this thread's connection (others close when their thread's objects are collected)."""
        con = self._local.__dict__.pop("con", None)
        if con is not None:
            con.close()

    @contextmanager
    def _write(self, con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        con.execute("BEGIN IMMEDIATE")  # take the write lock now: no upgrade deadlocks between writers
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as con, self._write(con):
            yield con

    def journal_mode(self) -> str:
        with self._connect() as con:
            return con.execute("PRAGMA journal_mode").fetchone()[0]

    # ---------------------------------------------------------------- runs
    def create_run(
        self,
        name: str,
        backend: str,
        plan_path: str | Path | None = None,
        run_dir: str | Path | None = None,
        *,
        log_path: str | Path | None = None,
        host: str | None = None,
        status: RunStatus = "created",
        meta: dict[str, Any] | None = None,
    ) -> str:
        """Record a new run and return its id (6 hex digits)."""
        if status not in RUN_STATUSES:
            raise UsageError(f"unknown run status {status!r}; one of {', '.join(RUN_STATUSES)}")
        now = time.time()
        for _ in range(20):
            run_id = _new_id()
            try:
                with self._tx() as con:
                    con.execute(
                        "INSERT INTO runs (id, name, backend, status, plan_path, run_dir, log_path, host,"
                        " created_at, updated_at, meta) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                        (
                            run_id, _text(name), backend, status,
                            _text(str(plan_path)) if plan_path is not None else None,
                            _text(str(run_dir)) if run_dir is not None else None,
                            _text(str(log_path)) if log_path is not None else None,
                            _text(host), now, now, _json(meta),
                        ),
                    )
                    self._event(con, run_id, "created", f"{backend} run {name!r} created", {}, now)
                return run_id
            except sqlite3.IntegrityError:
                continue  # id collision: draw again
        raise RuntimeError("could not draw a free run id after 20 tries")

    def set_status(self, run_id: str, status: RunStatus, message: str | None = None) -> None:
        """Set a run's status and record it as a ``status`` event."""
        if status not in RUN_STATUSES:
            raise UsageError(f"unknown run status {status!r}; one of {', '.join(RUN_STATUSES)}")
        now = time.time()
        ended = now if status not in ACTIVE_RUN_STATUSES else None
        with self._tx() as con:
            cur = con.execute(
                "UPDATE runs SET status=?, updated_at=?, ended_at=COALESCE(?, CASE WHEN ? THEN NULL"
                " ELSE ended_at END) WHERE id=?",
                (status, now, ended, status in ACTIVE_RUN_STATUSES, run_id),
            )
            if cur.rowcount == 0:
                raise UsageError(f"no run with id {run_id!r}")
            self._event(con, run_id, "status", message or status, {"status": status}, now)

    def update_run(
        self,
        run_id: str,
        *,
        log_path: str | Path | None = None,
        pid: int | None = None,
        host: str | None = None,
        run_dir: str | Path | None = None,
        meta: dict[str, Any] | None = None,
    ) -> RunRow:
        """Set the given fields; ``meta`` is merged into the stored dict. Returns the new row."""
        with self._tx() as con:
            row = con.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None:
                raise UsageError(f"no run with id {run_id!r}")
            merged = json.loads(row["meta"])
            merged.update(meta or {})
            con.execute(
                "UPDATE runs SET log_path=COALESCE(?, log_path), pid=COALESCE(?, pid), host=COALESCE(?, host),"
                " run_dir=COALESCE(?, run_dir), meta=?, updated_at=? WHERE id=?",
                (
                    _text(str(log_path)) if log_path is not None else None, pid, _text(host),
                    _text(str(run_dir)) if run_dir is not None else None, _json(merged), time.time(), run_id,
                ),
            )
            return _run_row(con.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone())

    def get_run(self, run_id: str) -> RunRow:
        """The run with this id or unique id prefix (or exact name). UsageError when none or ambiguous."""
        key = (run_id or "").strip()
        if not key:
            raise UsageError("empty run id")
        with self._connect() as con:
            row = con.execute("SELECT * FROM runs WHERE id=?", (key,)).fetchone()
            if row is not None:
                return _run_row(row)
            escaped = key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            rows = con.execute(
                "SELECT * FROM runs WHERE id LIKE ? ESCAPE '\\' ORDER BY created_at", (escaped + "%",)
            ).fetchall()
            if not rows:
                rows = con.execute("SELECT * FROM runs WHERE name=? ORDER BY created_at", (key,)).fetchall()
        if len(rows) == 1:
            return _run_row(rows[0])
        if not rows:
            raise UsageError(f"no run matches {key!r}", hint="`jitplan runs --all` lists the recorded runs")
        ids = ", ".join(r["id"] for r in rows[:8])
        raise UsageError(f"{key!r} matches {len(rows)} runs ({ids}); give more of the id")

    def list_runs(self, *, active_only: bool = False, limit: int | None = None) -> list[RunRow]:
        """Newest first."""
        sql = "SELECT * FROM runs"
        if active_only:
            sql += " WHERE status IN ({})".format(",".join("?" * len(ACTIVE_RUN_STATUSES)))
        sql += " ORDER BY created_at DESC, rowid DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._connect() as con:
            args = tuple(sorted(ACTIVE_RUN_STATUSES)) if active_only else ()
            return [_run_row(r) for r in con.execute(sql, args).fetchall()]

    # ---------------------------------------------------------------- events
    def _event(
        self, con: sqlite3.Connection, run_id: str, kind: str, message: str, data: dict[str, Any], ts: float
    ) -> None:
        con.execute(
            "INSERT INTO events (run_id, ts, kind, message, data) VALUES (?,?,?,?,?)",
            (run_id, ts, kind, redact(message), _json(data)),
        )

    def add_event(self, run_id: str, kind: str, message: str, **data: Any) -> None:
        """Append an event (``kind`` is a short word: restart, oom, provision, checkpoint ...)."""
        with self._tx() as con:
            if con.execute("SELECT 1 FROM runs WHERE id=?", (run_id,)).fetchone() is None:
                raise UsageError(f"no run with id {run_id!r}")
            self._event(con, run_id, kind, message, data, time.time())
            con.execute("UPDATE runs SET updated_at=? WHERE id=?", (time.time(), run_id))

    def events(self, run_id: str, *, kind: str | None = None) -> list[EventRow]:
        """Oldest first."""
        with self._connect() as con:
            if kind is None:
                rows = con.execute("SELECT * FROM events WHERE run_id=? ORDER BY id", (run_id,)).fetchall()
            else:
                rows = con.execute(
                    "SELECT * FROM events WHERE run_id=? AND kind=? ORDER BY id", (run_id, kind)
                ).fetchall()
        return [EventRow(**{**dict(r), "data": json.loads(r["data"])}) for r in rows]

    # ---------------------------------------------------------------- instances
    def add_instance(
        self,
        run_id: str | None,
        provider: str,
        instance_id: str | int,
        label: str,
        dph: float,
        *,
        gpu_name: str | None = None,
        num_gpus: int | None = None,
        status: InstanceStatus = "creating",
        ssh_host: str | None = None,
        ssh_port: int | None = None,
    ) -> InstanceRow:
        """Record a rented instance (billing starts now). Recording the same one again updates it."""
        if status not in INSTANCE_STATUSES:
            raise UsageError(f"unknown instance status {status!r}; one of {', '.join(INSTANCE_STATUSES)}")
        if dph < 0:
            raise UsageError(f"instance price must be >= 0 $/h, got {dph}")
        now = time.time()
        with self._tx() as con:
            con.execute(
                "INSERT INTO instances (run_id, provider, instance_id, label, dph, gpu_name, num_gpus, status,"
                " ssh_host, ssh_port, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (provider, instance_id) DO UPDATE SET status=excluded.status,"
                " updated_at=excluded.updated_at, run_id=COALESCE(excluded.run_id, run_id)",
                (
                    run_id, provider, str(instance_id), _text(label), float(dph), gpu_name, num_gpus, status,
                    ssh_host, ssh_port, now, now,
                ),
            )
            if run_id is not None:
                self._event(
                    con, run_id, "instance", f"{provider} instance {instance_id} recorded ({status})",
                    {"instance_id": str(instance_id), "label": label, "dph": dph}, now,
                )
            return _inst_row(
                con.execute(
                    "SELECT * FROM instances WHERE provider=? AND instance_id=?", (provider, str(instance_id))
                ).fetchone()
            )

    def update_instance(
        self,
        provider: str,
        instance_id: str | int,
        *,
        status: InstanceStatus | None = None,
        ssh_host: str | None = None,
        ssh_port: int | None = None,
        dph: float | None = None,
    ) -> InstanceRow:
        if status is not None and status not in INSTANCE_STATUSES:
            raise UsageError(f"unknown instance status {status!r}; one of {', '.join(INSTANCE_STATUSES)}")
        now = time.time()
        ended = now if status in GONE_INSTANCE_STATUSES else None
        with self._tx() as con:
            cur = con.execute(
                "UPDATE instances SET status=COALESCE(?, status), ssh_host=COALESCE(?, ssh_host),"
                " ssh_port=COALESCE(?, ssh_port), dph=COALESCE(?, dph), updated_at=?,"
                " ended_at=COALESCE(ended_at, ?) WHERE provider=? AND instance_id=?",
                (status, ssh_host, ssh_port, dph, now, ended, provider, str(instance_id)),
            )
            if cur.rowcount == 0:
                raise UsageError(f"no recorded {provider} instance {instance_id}")
            row = _inst_row(
                con.execute(
                    "SELECT * FROM instances WHERE provider=? AND instance_id=?", (provider, str(instance_id))
                ).fetchone()
            )
            if status is not None and row.run_id is not None:
                self._event(
                    con, row.run_id, "instance", f"{provider} instance {instance_id}: {status}",
                    {"instance_id": str(instance_id), "status": status}, now,
                )
            return row

    def instances(
        self, active_only: bool = True, *, run_id: str | None = None, provider: str | None = None
    ) -> list[InstanceRow]:
        """Recorded instances, oldest first; by default only those not yet destroyed."""
        sql, args = "SELECT * FROM instances WHERE 1=1", []
        if active_only:
            sql += " AND status NOT IN ({})".format(",".join("?" * len(GONE_INSTANCE_STATUSES)))
            args += sorted(GONE_INSTANCE_STATUSES)
        if run_id is not None:
            sql += " AND run_id=?"
            args.append(run_id)
        if provider is not None:
            sql += " AND provider=?"
            args.append(provider)
        with self._connect() as con:
            return [_inst_row(r) for r in con.execute(sql + " ORDER BY id", args).fetchall()]


def _run_row(row: sqlite3.Row) -> RunRow:
    return RunRow(**{**dict(row), "meta": json.loads(row["meta"])})


def _inst_row(row: sqlite3.Row) -> InstanceRow:
    return InstanceRow(**dict(row))
