"""The registry's cloud rows: rented instances and the intents (labels) written before each create.

A collaborator of :class:`jitplan.runs.registry.Registry` on the same :class:`jitplan.runs.db.Database`:
``registry.cloud``.

    reg.cloud.record_intent(rid, "vast", f"jitplan-{rid}-1", offer_id=2001, dph=0.21)   # before the create
    reg.cloud.add_instance(rid, "vast", 31337001, f"jitplan-{rid}-1", 0.21)              # once its id is known
    reg.cloud.resolve_intent(f"jitplan-{rid}-1", 31337001)
"""

from __future__ import annotations

import time

from jitplan.errors import UsageError
from jitplan.runs.db import Database
from jitplan.runs.schema import (
    GONE_INSTANCE_STATUSES,
    INSTANCE_STATUSES,
    InstanceRow,
    InstanceStatus,
    IntentRow,
    inst_row,
)
from jitplan.secrets import redact


class CloudRows:
    """Instances and intents. Every write is one transaction; nothing secret is stored (labels are redacted)."""

    def __init__(self, db: Database) -> None:
        self.db = db

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
        started_at: float | None = None,
    ) -> InstanceRow:
        """Record a rented instance (billing starts now, or at ``started_at``). Recording it again updates it."""
        if status not in INSTANCE_STATUSES:
            raise UsageError(f"unknown instance status {status!r}; one of {', '.join(INSTANCE_STATUSES)}")
        if dph < 0:
            raise UsageError(f"instance price must be >= 0 $/h, got {dph}")
        now = time.time()
        with self.db.tx() as con:
            con.execute(
                "INSERT INTO instances (run_id, provider, instance_id, label, dph, gpu_name, num_gpus, status,"
                " ssh_host, ssh_port, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (provider, instance_id) DO UPDATE SET status=excluded.status,"
                " ended_at=CASE WHEN excluded.status IN ('destroyed', 'lost') THEN excluded.updated_at END,"
                " updated_at=excluded.updated_at, run_id=COALESCE(excluded.run_id, run_id)",
                (
                    run_id, provider, str(instance_id), redact(label), float(dph), gpu_name, num_gpus, status,
                    ssh_host, ssh_port, started_at or now, now,
                ),
            )
            if run_id is not None:
                self.db.event(
                    con, run_id, "instance", f"{provider} instance {instance_id} recorded ({status})",
                    {"instance_id": str(instance_id), "label": label, "dph": dph}, now,
                )
            return inst_row(
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
        with self.db.tx() as con:
            cur = con.execute(
                "UPDATE instances SET status=COALESCE(?, status), ssh_host=COALESCE(?, ssh_host),"
                " ssh_port=COALESCE(?, ssh_port), dph=COALESCE(?, dph), updated_at=?,"
                " ended_at=COALESCE(ended_at, ?) WHERE provider=? AND instance_id=?",
                (status, ssh_host, ssh_port, dph, now, ended, provider, str(instance_id)),
            )
            if cur.rowcount == 0:
                raise UsageError(f"no recorded {provider} instance {instance_id}")
            row = inst_row(
                con.execute(
                    "SELECT * FROM instances WHERE provider=? AND instance_id=?", (provider, str(instance_id))
                ).fetchone()
            )
            if status is not None and row.run_id is not None:
                self.db.event(
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
        with self.db.connect() as con:
            return [inst_row(r) for r in con.execute(sql + " ORDER BY id", args).fetchall()]

    # ---------------------------------------------------------------- intents (labels before creates)
    def record_intent(self, run_id: str | None, provider: str, label: str, *, offer_id: str | int | None = None,
                      dph: float | None = None) -> IntentRow:
        """Write ``label`` down before the create that will carry it (committed before this returns)."""
        now = time.time()
        with self.db.tx() as con:
            con.execute(
                "INSERT INTO intents (label, run_id, provider, offer_id, dph, created_at) VALUES (?,?,?,?,?,?)"
                " ON CONFLICT (label) DO UPDATE SET resolved_at=NULL, instance_id=NULL",
                (redact(label), run_id, provider, None if offer_id is None else str(offer_id), dph, now),
            )
            if run_id is not None:
                self.db.event(con, run_id, "intent", f"about to create {provider} instance {label}",
                            {"label": label, "offer_id": offer_id}, now)
            return IntentRow(**dict(con.execute("SELECT * FROM intents WHERE label=?", (label,)).fetchone()))

    def resolve_intent(self, label: str, instance_id: str | int | None) -> None:
        """We know now: ``instance_id`` carries ``label``, or (None) no instance does."""
        with self.db.tx() as con:
            con.execute("UPDATE intents SET resolved_at=?, instance_id=? WHERE label=?",
                        (time.time(), None if instance_id is None else str(instance_id), label))

    def intents(self, *, open_only: bool = True, run_id: str | None = None) -> list[IntentRow]:
        """Labels written down, oldest first; by default those whose outcome is not known yet."""
        sql, args = "SELECT * FROM intents WHERE 1=1", []
        if open_only:
            sql += " AND resolved_at IS NULL"
        if run_id is not None:
            sql += " AND run_id=?"
            args.append(run_id)
        with self.db.connect() as con:
            return [IntentRow(**dict(r)) for r in con.execute(sql + " ORDER BY created_at, label", args)]

    def intent(self, label: str) -> IntentRow | None:
        with self.db.connect() as con:
            row = con.execute("SELECT * FROM intents WHERE label=?", (label,)).fetchone()
        return IntentRow(**dict(row)) if row is not None else None
