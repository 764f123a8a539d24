"""The registry survives its file: a corrupt or foreign database is one line naming the file and the fix
(move it aside), exit 2, never a traceback, and never migrated in place unless it is ours (issue 22, item 5).
Each case goes through the CLI: ``runs``, ``status`` and ``launch``."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
import yaml

TINY_TRAIN = {
    "model": {"variant": "JiT-Tiny/4", "img_size": 16, "in_channels": 1, "num_classes": 10},
    "data": {"kind": "digits", "num_workers": 0, "persistent_workers": False, "prefetch_factor": None},
    "batch_per_gpu": 16, "max_steps": 2, "optim": {"warmup_epochs": 0}, "log_every": 1, "device": "cpu",
}


def _random_bytes(db: Path) -> None:
    db.write_bytes(os.urandom(4096))


def _a_directory(db: Path) -> None:
    db.mkdir()
    (db / "x").write_text("not a database")


def _foreign_sqlite(db: Path) -> None:
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE songs (title TEXT, artist TEXT)")
    con.execute("INSERT INTO songs VALUES ('a', 'b')")
    con.commit()
    con.close()


def _foreign_with_our_table_names(db: Path) -> None:  # a `runs` table of someone else's, version stamped
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE runs (lap INTEGER, seconds REAL)")
    con.execute("PRAGMA user_version=2")
    con.commit()
    con.close()


def _truncated_header(db: Path) -> None:
    db.write_bytes(b"SQLite format 3\x00" + b"\xff" * 84)


CASES = {"random-bytes": _random_bytes, "directory": _a_directory, "foreign-schema": _foreign_sqlite,
         "foreign-runs-table": _foreign_with_our_table_names, "bad-header": _truncated_header}


@pytest.fixture
def home(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "jp"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VAST_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "jp").mkdir()
    return tmp_path / "jp"


def _snapshot(db: Path) -> object:
    if db.is_dir():
        return sorted((p.name, p.read_bytes()) for p in db.iterdir())
    return db.read_bytes()


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("command", ["runs", "status", "launch"])
def test_a_database_that_is_not_ours_is_one_line_exit_2_and_left_untouched(cli, home: Path, tmp_path: Path,
                                                                           case: str, command: str) -> None:
    db = home / "runs.db"
    CASES[case](db)
    before = _snapshot(db)
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(TINY_TRAIN))
    argv = {"runs": ["runs"], "status": ["status", "abc123"],
            "launch": ["launch", "train.yaml", "--local", "--no-doctor", "--run-dir", "r"]}[command]
    r = cli(*argv)
    assert r.code == 2, (r.code, r.out, r.err)
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert lines[0].startswith("Error: ") and str(db) in lines[0], r.err
    assert "Traceback" not in r.err and len(lines) <= 2, r.err
    assert f"mv {db}" in r.err or "move it aside" in r.err, r.err
    assert _snapshot(db) == before  # never migrated in place, never written
    assert not (tmp_path / "r").exists()  # the launch stopped before anything ran


def test_our_own_older_database_is_still_migrated(home: Path) -> None:
    from jitplan.runs.registry import Registry
    from jitplan.runs.schema import SCHEMA_VERSION, TABLES

    db = home / "runs.db"
    con = sqlite3.connect(db)
    for stmt in filter(str.strip, TABLES.split(";")):
        if "intents" not in stmt:
            con.execute(stmt)
    con.execute("INSERT INTO runs (id, name, backend, status, created_at, updated_at, meta) VALUES "
                "('abc123', 'n', 'ssh', 'running', 1, 1, '{\"ssh_target\": \"root@h:22\"}')")
    con.execute("PRAGMA user_version=1")
    con.commit()
    con.close()
    reg = Registry(db)
    assert reg.get_run("abc123").meta.ssh == "root@h:22"
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_fresh_empty_file_is_ours_to_create(home: Path) -> None:
    from jitplan.runs.registry import Registry

    db = home / "runs.db"
    db.write_bytes(b"")  # touch: an empty file is an empty SQLite database
    Registry(db).create_run("x", "local")


def test_home_that_is_a_file_is_one_line(cli, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "jp-file").write_text("x")
    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "jp-file"))
    r = cli("runs")
    assert r.code == 2 and "Traceback" not in r.err and str(tmp_path / "jp-file") in r.err, r.err
