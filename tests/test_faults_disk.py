"""A full disk is one line, exit 2, and nothing half-written (issue 22): `plan --out`, the run registry, and
jitmodel's commands. A real 64 KiB tmpfs, filled; skipped where this process cannot mount one."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest


@pytest.fixture
def full_disk(tmp_path):
    mnt = tmp_path / "full"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        (mnt / "jp").mkdir()
        with open(mnt / "fill", "wb", buffering=0) as f:  # fill it to the last block
            try:
                while True:
                    f.write(b"\0" * 1024)
            except OSError:
                pass
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_plan_out_on_a_full_disk_is_one_line_and_leaves_nothing(full_disk):
    out = full_disk / "plan.yaml"
    r = _run("jitplan", "plan", "--gpus", "2xRTX3060", "--host-ram", "24GB", "--out", str(out))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.startswith(f"Error: No space left on device: {out}")
    assert "free some space" in r.stderr
    assert sorted(p.name for p in full_disk.iterdir()) == ["fill", "jp"]  # no temp file left behind


def test_the_registry_on_a_full_disk_says_so_and_keeps_the_file(full_disk):
    r = _run("jitplan", "runs", env={"JITPLAN_HOME": str(full_disk / "jp")})
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "full or failing" in r.stderr and "move it aside" not in r.stderr  # moving it would lose the runs


def test_jitmodel_says_a_full_disk_in_one_line(monkeypatch, capsys):
    """jitmodel's error map: an OSError from a write (a full disk while saving samples) is one line, exit 2."""
    import errno

    from jitmodel import cli

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", f"/tmp/{uuid.uuid4().hex}/grid.png")

    monkeypatch.setattr(cli.app, "registered_commands", cli.app.registered_commands)
    monkeypatch.setattr("jitmodel.cli.plain_help", full)
    assert cli.run(["--help"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: No space left on device: /tmp/") and err.count("\n") == 1


def test_atomic_write_names_the_file_a_failed_write_did_not_make(tmp_path):
    import errno

    from jitmodel.atomic import atomic_write

    def fail(f):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as e:
        atomic_write(tmp_path / "x.yaml", fail)
    assert e.value.filename == str(tmp_path / "x.yaml") and list(Path(tmp_path).iterdir()) == []
