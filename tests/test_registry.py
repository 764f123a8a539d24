"""The SQLite run registry: schema, lookups, instance costs, redaction and concurrent writers."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import threading
from pathlib import Path

import pytest

from jitplan.errors import UsageError
from jitplan.runs.registry import Registry, RunMeta, default_home


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "runs.db")


def test_wal_mode_and_schema_version(reg: Registry) -> None:
    assert reg.journal_mode() == "wal"
    con = sqlite3.connect(reg.path)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"runs", "events", "instances", "intents"} <= tables
    assert con.execute("PRAGMA user_version").fetchone()[0] == 2
    con.close()
    Registry(reg.path)  # reopening an existing file is fine


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    Registry(path)
    con = sqlite3.connect(path)
    con.execute("PRAGMA user_version=99")
    con.commit()
    con.close()
    with pytest.raises(UsageError, match="schema version 99"):
        Registry(path)


def test_default_home_order(tmp_path: Path) -> None:
    assert default_home({"JITPLAN_HOME": "/a", "XDG_DATA_HOME": "/b", "HOME": "/h"}) == Path("/a")
    assert default_home({"XDG_DATA_HOME": "/b", "HOME": "/h"}) == Path("/b/jitplan")
    assert default_home({"HOME": "/h"}) == Path("/h/.local/share/jitplan")


def test_default_registry_lands_in_jitplan_home(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "home"))
    reg = Registry()
    assert reg.path == tmp_path / "home" / "runs.db"
    assert reg.path.exists()


def test_run_lifecycle_and_events(reg: Registry) -> None:
    rid = reg.create_run("JiT-B-16", "local", plan_path="plan.yaml", run_dir="runs/x", log_path="runs/x/log")
    assert len(rid) == 6 and int(rid, 16) >= 0
    run = reg.get_run(rid)
    assert (run.name, run.backend, run.status, run.log_path) == ("JiT-B-16", "local", "created", "runs/x/log")
    assert run.active and run.ended_at is None
    reg.set_status(rid, "running")
    reg.add_event(rid, "restart", "OOM: 4 -> 2 workers", workers=2)
    reg.update_run(rid, pid=4242, meta=RunMeta(ssh="root@h:22", remote_root="/srv"))
    reg.update_run(rid, meta=RunMeta(nproc_per_node=2, remote_root="/other"))
    reg.set_status(rid, "finished")
    run = reg.get_run(rid)
    assert run.status == "finished" and run.ended_at is not None and not run.active
    assert run.pid == 4242 and run.meta == RunMeta(ssh="root@h:22", remote_root="/other", nproc_per_node=2)
    kinds = [(e.kind, e.message) for e in reg.events(rid)]
    assert kinds[0][0] == "created"
    assert ("restart", "OOM: 4 -> 2 workers") in kinds
    assert [e.data for e in reg.events(rid, kind="restart")] == [{"workers": 2}]
    assert [e.data["status"] for e in reg.events(rid, kind="status")] == ["running", "finished"]


def test_unknown_status_and_run_are_usage_errors(reg: Registry) -> None:
    rid = reg.create_run("a", "local")
    with pytest.raises(UsageError, match="unknown run status 'bogus'"):
        reg.set_status(rid, "bogus")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="no run with id"):
        reg.set_status("ffffff0", "running")
    with pytest.raises(UsageError, match="no run with id"):
        reg.add_event("nope", "x", "y")


def test_prefix_lookup_unique_and_ambiguous(reg: Registry, monkeypatch) -> None:
    ids = iter(["abc123", "abd456", "ffff00"])
    monkeypatch.setattr("jitplan.runs.registry._new_id", lambda: next(ids))
    a = reg.create_run("first", "local")
    b = reg.create_run("second", "ssh")
    assert (a, b) == ("abc123", "abd456")
    assert reg.get_run("abc").id == a
    assert reg.get_run("abd4").id == b
    assert reg.get_run("second").id == b  # by exact name
    with pytest.raises(UsageError, match="'ab' matches 2 runs"):
        reg.get_run("ab")
    with pytest.raises(UsageError, match="no run matches"):
        reg.get_run("zz")
    with pytest.raises(UsageError, match="no run matches"):
        reg.get_run("%")  # LIKE wildcards are escaped
    assert [r.id for r in reg.list_runs()] == [b, a]


def test_id_collision_draws_again(reg: Registry, monkeypatch) -> None:
    ids = iter(["aaaaaa", "aaaaaa", "bbbbbb"])
    monkeypatch.setattr("jitplan.runs.registry._new_id", lambda: next(ids))
    assert reg.create_run("x", "local") == "aaaaaa"
    assert reg.create_run("y", "local") == "bbbbbb"


def test_instances_active_and_cost(reg: Registry) -> None:
    rid = reg.create_run("v", "vast")
    row = reg.cloud.add_instance(rid, "vast", 31337001, "jitplan-" + rid, dph=0.36, gpu_name="RTX 3060", num_gpus=2)
    assert row.status == "creating" and row.active
    assert row.cost_so_far(now=row.created_at + 1800) == pytest.approx(0.18)
    reg.cloud.update_instance("vast", 31337001, status="running", ssh_host="127.0.0.1", ssh_port=2222)
    assert [i.ssh_port for i in reg.cloud.instances()] == [2222]
    gone = reg.cloud.update_instance("vast", "31337001", status="destroyed")
    assert gone.ended_at is not None and not gone.active
    assert reg.cloud.instances() == []
    assert len(reg.cloud.instances(active_only=False)) == 1
    # cost stops at destruction
    assert gone.cost_so_far(now=gone.ended_at + 10_000) == pytest.approx(
        0.36 * (gone.ended_at - gone.created_at) / 3600
    )
    with pytest.raises(UsageError, match="no recorded vast instance 9"):
        reg.cloud.update_instance("vast", 9, status="running")
    with pytest.raises(UsageError, match=">= 0"):
        reg.cloud.add_instance(rid, "vast", 2, "l", dph=-1)


def test_secrets_never_reach_the_file(reg: Registry, monkeypatch) -> None:
    sentinel = "SENTINEL-vast-key-9f8e7d6c5b4a"
    monkeypatch.setenv("VAST_API_KEY", sentinel)
    rid = reg.create_run(f"run {sentinel}", "vast", plan_path=f"/p/{sentinel}.yaml", meta=RunMeta(label=sentinel))
    reg.add_event(rid, "provision", f"curl -H 'Authorization: Bearer {sentinel}'", env={"VAST_API_KEY": sentinel})
    reg.add_event(rid, "x", "token=abcdef123456 in a message")
    reg.cloud.add_instance(rid, "vast", 1, f"label-{sentinel}", 0.1)
    for p in reg.path.parent.glob("runs.db*"):
        data = p.read_bytes()
        assert sentinel.encode() not in data, p
        assert b"abcdef123456" not in data, p
    assert "***" in reg.events(rid, kind="provision")[0].message


def _writer(path: str, worker: int, n: int) -> None:
    reg = Registry(Path(path))
    for i in range(n):
        rid = reg.create_run(f"w{worker}-{i}", "local")
        reg.set_status(rid, "running")
        reg.add_event(rid, "step", f"worker {worker} step {i}", i=i)
        reg.cloud.add_instance(rid, "vast", f"{worker}-{i}", f"jitplan-{rid}", 0.1)


@pytest.mark.slow
def test_concurrent_processes_and_threads(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    Registry(path)
    n, procs_n, threads_n = 15, 3, 3
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), w, n)) for w in range(procs_n)]
    for p in procs:
        p.start()
    threads = [threading.Thread(target=_writer, args=(str(path), 100 + w, n)) for w in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    reg = Registry(path)
    runs = reg.list_runs()
    writers = procs_n + threads_n
    assert len(runs) == writers * n
    assert len({r.id for r in runs}) == writers * n
    assert all(r.status == "running" for r in runs)
    assert sum(len(reg.events(r.id)) for r in runs) == writers * n * 4  # created, status, step, instance
    assert len(reg.cloud.instances()) == writers * n
    assert reg.journal_mode() == "wal"


def test_old_database_is_migrated(tmp_path: Path) -> None:
    """tests/data/registry-v1.db was written by the v1 code (untyped meta: ssh_target | ssh | host)."""
    import shutil

    db = tmp_path / "runs.db"
    shutil.copy(Path(__file__).parent / "data" / "registry-v1.db", db)
    reg = Registry(db)
    runs = {r.backend + r.id: r for r in reg.list_runs()}
    vast = reg.get_run("8271c6")
    assert vast.meta == RunMeta(ssh="root@10.0.0.5:2222", provider="vast", instance_id=31337001,
                                label="jitplan-8271c6-1", identity="/k/id",
                                image="pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime")
    ssh = reg.get_run("dce5a3").meta
    assert (ssh.ssh, ssh.remote_root, ssh.known_hosts, ssh.accept_new_host_key) == ("u@h:22", "/srv/j", "/kh", True)
    assert reg.get_run("a8b29d").meta.nproc_per_node == 2
    assert reg.get_run("d678ac").meta == RunMeta() and len(runs) == 4
    (inst,) = reg.cloud.instances()
    assert (inst.instance_id, inst.run_id) == ("31337001", "8271c6")
    assert reg.cloud.intents() == []
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == 2
    assert "ssh_target" not in con.execute("SELECT meta FROM runs WHERE id='8271c6'").fetchone()[0]
    con.close()
    Registry(db)  # migrating twice is a no-op


def test_runs_created_in_the_same_second_get_unique_names(reg: Registry) -> None:
    ids = [reg.create_run("JiT-B-16-256-20260101-120000", "local") for _ in range(3)]
    names = [reg.get_run(i).name for i in ids]
    assert names == ["JiT-B-16-256-20260101-120000", "JiT-B-16-256-20260101-120000-2",
                     "JiT-B-16-256-20260101-120000-3"]


def test_intent_is_durable_before_the_create(reg: Registry) -> None:
    rid = reg.create_run("x", "vast")
    reg.cloud.record_intent(rid, "vast", f"jitplan-{rid}-1", offer_id=2001, dph=0.2)
    other = Registry(reg.path)  # another process would see it: the write is committed
    (row,) = other.cloud.intents()
    assert (row.label, row.run_id, row.offer_id, row.open) == (f"jitplan-{rid}-1", rid, "2001", True)
    reg.cloud.resolve_intent(f"jitplan-{rid}-1", 31337001)
    assert other.cloud.intents() == [] and other.cloud.intent(f"jitplan-{rid}-1").instance_id == "31337001"
    assert any(e.kind == "intent" for e in reg.events(rid))
