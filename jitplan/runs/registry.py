"""The run registry: one SQLite file holding runs, their events and the cloud instances they rent.

The file and its connections are a :class:`jitplan.runs.db.Database` (safe under concurrent CLI calls;
a file that is not ours is refused, never migrated); the cloud rows are ``registry.cloud``. Nothing
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
import secrets as _pyrandom
import sqlite3
import time
from pathlib import Path
from typing import Any

from jitplan.errors import UsageError
from jitplan.runs.cloud_rows import CloudRows
from jitplan.runs.db import Database, json_text
from jitplan.runs.home import default_home  # noqa: F401  (re-exported: the registry's folder)
from jitplan.runs.schema import (
    ACTIVE_RUN_STATUSES,
    GONE_INSTANCE_STATUSES,
    KNOWN_HOSTS,
    RUN_STATUSES,
    EventRow,
    InstanceRow,
    InstanceStatus,
    IntentRow,
    RunMeta,
    RunRow,
    RunStatus,
    run_row,
)
from jitplan.secrets import redact

__all__ = ["Registry", "RunRow", "RunMeta", "EventRow", "InstanceRow", "IntentRow", "RunStatus", "InstanceStatus",
           "ACTIVE_RUN_STATUSES", "GONE_INSTANCE_STATUSES", "default_home", "default_path"]

MAX_NAME_SUFFIX = 1000


def default_path() -> Path:
    return default_home() / "runs.db"


def _new_id() -> str:
    return _pyrandom.token_hex(3)  # 6 hex digits, like a short git sha: "8f3c2a"


def _text(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


def _meta_json(meta: RunMeta) -> str:
    return json_text(meta.model_dump(mode="json", exclude_defaults=True))


def _free_name(con: sqlite3.Connection, name: str) -> str:
    """``name``, or ``name-2``, ``name-3`` ... when runs already carry it (runs launched in the same second)."""
    taken = {r[0] for r in con.execute("SELECT name FROM runs WHERE name=? OR name LIKE ?", (name, name + "-%"))}
    if name not in taken:
        return name
    for i in range(2, MAX_NAME_SUFFIX):
        if f"{name}-{i}" not in taken:
            return f"{name}-{i}"
    raise UsageError(f"more than {MAX_NAME_SUFFIX} runs are named {name!r}")


class Registry:
    """The run registry. ``Registry()`` opens (and creates) the default database.

    Runs and their events are here; the cloud rows (instances, intents) are a collaborator on the same
    database: ``registry.cloud`` (:class:`jitplan.runs.cloud_rows.CloudRows`)."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.db = Database(Path(path) if path is not None else default_path())
        self.path = self.db.path
        self.cloud = CloudRows(self.db)

    @property
    def known_hosts(self) -> str:
        """The known_hosts file a rented instance's host key goes into (a fresh key, trusted once)."""
        return str(self.path.parent / KNOWN_HOSTS)

    def close(self) -> None:
        """Close this thread's connection (others close when their thread's objects are collected)."""
        self.db.close()

    def journal_mode(self) -> str:
        return self.db.journal_mode()

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
        meta: RunMeta | None = None,
    ) -> str:
        """Record a new run and return its id (6 hex digits). A name already taken gets ``-2``, ``-3`` ..."""
        if status not in RUN_STATUSES:
            raise UsageError(f"unknown run status {status!r}; one of {', '.join(RUN_STATUSES)}")
        now = time.time()
        for _ in range(20):
            run_id = _new_id()
            try:
                with self.db.tx() as con:
                    unique = _free_name(con, _text(name))
                    con.execute(
                        "INSERT INTO runs (id, name, backend, status, plan_path, run_dir, log_path, host,"
                        " created_at, updated_at, meta) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                        (
                            run_id, unique, backend, status,
                            _text(str(plan_path)) if plan_path is not None else None,
                            _text(str(run_dir)) if run_dir is not None else None,
                            _text(str(log_path)) if log_path is not None else None,
                            _text(host), now, now, _meta_json(meta or RunMeta()),
                        ),
                    )
                    self.db.event(con, run_id, "created", f"{backend} run {unique!r} created", {}, now)
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
        with self.db.tx() as con:
            cur = con.execute(
                "UPDATE runs SET status=?, updated_at=?, ended_at=COALESCE(?, CASE WHEN ? THEN NULL"
                " ELSE ended_at END) WHERE id=?",
                (status, now, ended, status in ACTIVE_RUN_STATUSES, run_id),
            )
            if cur.rowcount == 0:
                raise UsageError(f"no run with id {run_id!r}")
            self.db.event(con, run_id, "status", message or status, {"status": status}, now)

    def update_run(
        self,
        run_id: str,
        *,
        log_path: str | Path | None = None,
        pid: int | None = None,
        host: str | None = None,
        run_dir: str | Path | None = None,
        meta: RunMeta | None = None,
    ) -> RunRow:
        """Set the given fields; the fields ``meta`` sets are merged into the stored meta. Returns the new row."""
        with self.db.tx() as con:
            row = con.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None:
                raise UsageError(f"no run with id {run_id!r}")
            merged = RunMeta.model_validate_json(row["meta"]).merged(meta or RunMeta())
            con.execute(
                "UPDATE runs SET log_path=COALESCE(?, log_path), pid=COALESCE(?, pid), host=COALESCE(?, host),"
                " run_dir=COALESCE(?, run_dir), meta=?, updated_at=? WHERE id=?",
                (
                    _text(str(log_path)) if log_path is not None else None, pid, _text(host),
                    _text(str(run_dir)) if run_dir is not None else None, _meta_json(merged), time.time(), run_id,
                ),
            )
            return run_row(con.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone())

    def get_run(self, run_id: str) -> RunRow:
        """The run with this id or unique id prefix (or exact name). UsageError when none or ambiguous."""
        key = (run_id or "").strip()
        if not key:
            raise UsageError("empty run id")
        with self.db.connect() as con:
            row = con.execute("SELECT * FROM runs WHERE id=?", (key,)).fetchone()
            if row is not None:
                return run_row(row)
            escaped = key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            rows = con.execute(
                "SELECT * FROM runs WHERE id LIKE ? ESCAPE '\\' ORDER BY created_at", (escaped + "%",)
            ).fetchall()
            if not rows:
                rows = con.execute("SELECT * FROM runs WHERE name=? ORDER BY created_at", (key,)).fetchall()
        if len(rows) == 1:
            return run_row(rows[0])
        if not rows:
            raise UsageError(f"no run matches {key!r}", hint="`jitplan runs` lists the recorded runs")
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
        with self.db.connect() as con:
            args = tuple(sorted(ACTIVE_RUN_STATUSES)) if active_only else ()
            return [run_row(r) for r in con.execute(sql, args).fetchall()]

    # ---------------------------------------------------------------- events
    def add_event(self, run_id: str, kind: str, message: str, **data: Any) -> None:
        """Append an event (``kind`` is a short word: restart, oom, provision, checkpoint ...)."""
        with self.db.tx() as con:
            if con.execute("SELECT 1 FROM runs WHERE id=?", (run_id,)).fetchone() is None:
                raise UsageError(f"no run with id {run_id!r}")
            self.db.event(con, run_id, kind, message, data, time.time())
            con.execute("UPDATE runs SET updated_at=? WHERE id=?", (time.time(), run_id))

    def events(self, run_id: str, *, kind: str | None = None) -> list[EventRow]:
        """Oldest first."""
        with self.db.connect() as con:
            if kind is None:
                rows = con.execute("SELECT * FROM events WHERE run_id=? ORDER BY id", (run_id,)).fetchall()
            else:
                rows = con.execute(
                    "SELECT * FROM events WHERE run_id=? AND kind=? ORDER BY id", (run_id, kind)
                ).fetchall()
        return [EventRow(**{**dict(r), "data": json.loads(r["data"])}) for r in rows]
