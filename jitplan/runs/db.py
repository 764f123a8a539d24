"""The registry's database file: open it (only when it is ours), one connection per thread, write transactions.

Safe under concurrent CLI calls: WAL journal, a busy timeout, every write in its own ``BEGIN IMMEDIATE``
transaction, one connection per thread and process (never shared). A file that is not a jitplan database
(random bytes, a directory, another program's SQLite) is one UsageError naming it and the fix, checked
read-only before anything writes (:func:`jitplan.runs.schema.check_ours`). The runs and the cloud rows
(``registry.py``, ``cloud_rows.py``) both write through one :class:`Database`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jitplan.errors import UsageError
from jitplan.runs.schema import SCHEMA_VERSION, check_ours, migrate, unusable
from jitplan.secrets import redact, redact_obj

BUSY_TIMEOUT_S = 30.0


def json_text(data: dict[str, Any] | None) -> str:
    """A JSON value as stored: secrets redacted, keys sorted."""
    return json.dumps(redact_obj(data or {}), sort_keys=True, default=str)


class Database:
    """The SQLite file at ``path``, created or migrated when it is ours, refused (exit 2) when it is not."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"cannot make the run registry's folder {self.path.parent}: {e.strerror}",
                             hint="set JITPLAN_HOME to a folder you can write") from None
        self._local = threading.local()
        with self.connect() as con:
            version = check_ours(con, self.path)  # before anything writes: a foreign file is never touched
            mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise UsageError(f"cannot use WAL journal for the run registry at {self.path} (got {mode!r})")
            if version < SCHEMA_VERSION:
                with self.write(con):
                    migrate(con, version)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection (one per thread and process: sqlite3 connections are not shareable).

        Kept open: when the last connection to a WAL database closes, SQLite checkpoints and fsyncs, which
        made every call of a lone CLI command wait for the disk (benchmarks/bench_registry.py).
        """
        key = (os.getpid(), threading.get_ident())
        con = self._local.__dict__.get("con")
        try:
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
        except sqlite3.IntegrityError:
            raise  # a constraint: the caller's business (an id collision draws again)
        except sqlite3.DatabaseError as e:  # not a database, a directory, corrupt pages
            raise unusable(self.path, str(e)) from None

    def close(self) -> None:
        """Close this thread's connection (others close when their thread's objects are collected)."""
        con = self._local.__dict__.pop("con", None)
        if con is not None:
            con.close()

    @contextmanager
    def write(self, con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        con.execute("BEGIN IMMEDIATE")  # take the write lock now: no upgrade deadlocks between writers
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on this thread's connection."""
        with self.connect() as con, self.write(con):
            yield con

    def journal_mode(self) -> str:
        with self.connect() as con:
            return con.execute("PRAGMA journal_mode").fetchone()[0]

    def event(self, con: sqlite3.Connection, run_id: str, kind: str, message: str, data: dict[str, Any],
              ts: float) -> None:
        """Append an event inside the caller's transaction (message and data redacted)."""
        con.execute("INSERT INTO events (run_id, ts, kind, message, data) VALUES (?,?,?,?,?)",
                    (run_id, ts, kind, redact(message), json_text(data)))
