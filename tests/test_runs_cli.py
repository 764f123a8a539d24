"""`jitplan runs | status | logs | stop` against a real registry, real processes and the fake Vast server."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from jitplan.runs.registry import Registry, RunMeta

KEY = "SENTINEL-runs-cli-key-0a9b8c7d6e5f"


@pytest.fixture
def reg(tmp_path: Path, monkeypatch) -> Registry:
    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "jp"))
    monkeypatch.setenv("VAST_API_KEY", KEY)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return Registry()


def _age_instance(reg: Registry, instance_id: str, hours: float) -> None:
    con = sqlite3.connect(reg.path)
    con.execute("UPDATE instances SET created_at = created_at - ? WHERE instance_id = ?", (hours * 3600, instance_id))
    con.commit()
    con.close()


def test_runs_empty(cli, reg: Registry) -> None:
    r = cli("runs")
    assert r.code == 0 and "no runs recorded yet" in r.out


@pytest.mark.slow
def test_runs_shows_runs_and_live_instances_with_cost(cli, reg: Registry) -> None:
    a = reg.create_run("JiT-B-16-local", "local", run_dir="runs/a")
    b = reg.create_run("JiT-B-16-vast", "vast", run_dir="runs/b")
    reg.set_status(b, "running")
    reg.cloud.add_instance(b, "vast", 31337001, f"jitplan-{b}-1", 0.36, gpu_name="RTX 3060", num_gpus=2,
                           status="running")
    reg.cloud.add_instance(b, "vast", 31337002, f"jitplan-{b}-2", 1.0, status="destroyed")
    _age_instance(reg, "31337001", 2.0)
    r = cli("runs", "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert [x["id"] for x in data["runs"]] == [b, a]
    (inst,) = data["instances"]  # the destroyed one is not live
    assert inst["row"]["instance_id"] == "31337001"
    assert inst["hours"] == pytest.approx(2.0, abs=0.01)
    assert inst["cost_so_far"] == pytest.approx(0.72, abs=0.01)
    assert data["total_dph"] == pytest.approx(0.36)
    r = cli("runs")
    assert r.code == 0 and b in r.out and "31337001" in r.out and "0.72" in r.out and "2x RTX 3060" in r.out
    r = cli("runs", "--active", "--json")
    assert [x["id"] for x in json.loads(r.out)["runs"]] == [b, a]  # "created" counts as active
    reg.set_status(a, "finished")
    assert [x["id"] for x in json.loads(cli("runs", "--active", "--json").out)["runs"]] == [b]


def test_status_by_prefix_and_errors(cli, reg: Registry, monkeypatch) -> None:
    ids = iter(["abc111", "abd222"])
    monkeypatch.setattr("jitplan.runs.registry._new_id", lambda: next(ids))
    a = reg.create_run("one", "local", run_dir="runs/one")
    reg.create_run("two", "local")
    reg.add_event(a, "restart", "worker OOM-killed; 2 -> 1 workers")
    r = cli("status", "abc")
    assert r.code == 0 and "one" in r.out and "worker OOM-killed" in r.out
    data = json.loads(cli("status", "abc1", "--json").out)
    assert data["run"]["id"] == a and [e["kind"] for e in data["events"]] == ["created", "restart"]
    r = cli("status", "ab")
    assert r.code == 2 and r.err.startswith("Error: 'ab' matches 2 runs") and "Traceback" not in r.err
    r = cli("status", "zzz")
    assert r.code == 2 and "no run matches 'zzz'" in r.err


def test_logs_print_tail_and_missing(cli, reg: Registry, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "train.log").write_text("".join(f"step {i}\n" for i in range(10)))
    rid = reg.create_run("x", "local", run_dir=run_dir)
    assert cli("logs", rid).out == "".join(f"step {i}\n" for i in range(10))
    assert cli("logs", rid, "--tail", "2").out == "step 8\nstep 9\n"
    other = reg.create_run("y", "local", run_dir=tmp_path / "nothing")
    r = cli("logs", other)
    assert r.code == 2 and "has no log" in r.err


@pytest.mark.slow
def test_logs_follow_until_the_run_ends(cli, reg: Registry, tmp_path: Path) -> None:
    log = tmp_path / "run" / "train.log"
    rid = reg.create_run("x", "local", log_path=log)
    reg.set_status(rid, "running")

    def writer() -> None:
        time.sleep(0.3)
        log.parent.mkdir(parents=True)
        with log.open("a") as f:  # the file appears late, then grows
            for i in range(5):
                f.write(f"line {i}\n")
                f.flush()
                time.sleep(0.1)
        Registry(reg.path).set_status(rid, "finished")

    t = threading.Thread(target=writer)
    t.start()
    t0 = time.monotonic()
    r = cli("logs", rid, "-f")
    t.join()
    assert r.code == 0
    assert r.out == "".join(f"line {i}\n" for i in range(5))
    assert time.monotonic() - t0 < 10


def test_stop_local_run_kills_the_process_group(cli, reg: Registry, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    (run_dir / "pid").write_text(f"{proc.pid}\n")
    rid = reg.create_run("x", "local", run_dir=run_dir)
    reg.set_status(rid, "running")
    reaper = threading.Thread(target=proc.wait)  # we are its parent here: reap it so the group really ends
    reaper.start()
    try:
        t0 = time.monotonic()
        r = cli("stop", rid)
        assert r.code == 0, r.err
        reaper.join(10)
        assert proc.returncode == -signal.SIGTERM
        assert time.monotonic() - t0 < 10  # SIGTERM sufficed: no wait for the SIGKILL grace
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert reg.get_run(rid).status == "stopped"
    assert any(e.kind == "stop" and e.message == "stopped" for e in reg.events(rid))
    r = cli("stop", rid)
    assert r.code == 0 and "already stopped" in r.err


@pytest.mark.net
def test_stop_destroy_vast_instance_through_vast_url(cli, reg: Registry, monkeypatch) -> None:
    pytest.importorskip("vastai", reason="the vastai SDK (jitplan[vast]) is not installed")
    from fakes.vast_server import VastFake
    from pydantic import SecretStr

    from jitplan.providers import CreateSpec
    from jitplan.providers.vast.client import VastClient

    with VastFake(KEY) as fake:
        fake.add_offer(2001, num_gpus=2)
        iid = VastClient(SecretStr(KEY), server_url=fake.url).create(
            CreateSpec(offer_id=2001, image="img", disk_gb=50, label="jitplan-t-1"))
        rid = reg.create_run("v", "vast")
        reg.set_status(rid, "running")
        reg.cloud.add_instance(rid, "vast", iid, "jitplan-t-1", 0.2, status="running")
        monkeypatch.setenv("VAST_URL", fake.url)  # how the CLI finds the fake: the documented variable
        r = cli("stop", rid, "--destroy")
        assert r.code == 2 and "pass --yes" in r.err and fake.deletes() == []
        r = cli("stop", rid, "--destroy", "--yes")
        assert r.code == 0, r.err
        assert [d.path for d in fake.deletes()] == [f"/api/v0/instances/{iid}/"] and fake.live() == []
        assert all(x.auth == "ok" for x in fake.log)
    assert reg.cloud.instances() == [] and reg.get_run(rid).status == "stopped"
    assert "destroyed Vast.ai instance" in r.err
    assert KEY not in r.out + r.err
    for p in reg.path.parent.iterdir():
        assert KEY.encode() not in p.read_bytes()


def test_runs_commands_do_not_import_vastai_or_torch() -> None:
    code = ("import sys; from jitplan.cli import run; run(['runs', '--help']); run(['stop', '--help']); "
            "bad = [m for m in ('vastai', 'torch', 'numpy') if m in sys.modules]; assert not bad, bad")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("backend", ["ssh", "vast"])
def test_logs_and_stop_remote_runs_use_what_the_launcher_recorded(cli, reg: Registry, monkeypatch, backend) -> None:
    from jitplan.launch.ssh import SSHLaunch

    rid = reg.create_run("jit-b16", backend, status="running", host="root@10.0.0.5:2222")
    reg.update_run(rid, run_dir="jitplan/runs/jit b16;x", log_path="jitplan/runs/jit b16;x/train.log",
                   meta=RunMeta(ssh="root@10.0.0.5:2222", remote_root="jitplan"))
    calls = []

    def fake_run(self, step, *, timeout_s=600):  # the one side effect: running ssh
        calls.append(step)
        stopped = any(c.name == "stop training" for c in calls)
        if step.name == "status":  # running until the stop lands, then exited with SIGTERM's code
            return "exited 143\n" if stopped else "running\n"
        return "line 1\nline 2\n"

    monkeypatch.setattr(SSHLaunch, "run", fake_run)
    r = cli("logs", rid)
    assert r.code == 0 and r.out == "line 1\nline 2\n"
    argv = calls[0].argv
    assert argv[:3] == ["ssh", "-p", "2222"] and "root@10.0.0.5" in argv
    assert argv[-1] == "sh -c 'cat '\"'\"'jitplan/runs/jit b16;x/train.log'\"'\"''"  # quoted: no injection
    if backend == "vast":  # the per-registry known_hosts that `launch --vast` trusts on first use
        assert f"UserKnownHostsFile={reg.path.parent / 'known_hosts'}" in argv
        assert "StrictHostKeyChecking=accept-new" in argv
    else:
        assert "StrictHostKeyChecking=yes" in argv
    r = cli("stop", rid)
    assert r.code == 0, r.err
    assert [c.name for c in calls[1:]] == ["status", "stop training", "status"]
    assert reg.get_run(rid).status == "stopped"
    assert [e.message for e in reg.events(rid, kind="stop")] == ["stopped (exit code 143)"]


@pytest.mark.slow
def test_docs_runs_examples_run(cli, reg: Registry, tmp_path: Path) -> None:
    """Every `$ jitplan ...` line and the Python block of docs/runs.md, against a real registry."""
    import re
    import shlex

    doc = (Path(__file__).parent.parent / "docs" / "runs.md").read_text()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "train.log").write_text("".join(f"step {i}\n" for i in range(30)))
    rid = reg.create_run("JiT-B-16", "local", run_dir=run_dir)
    reg.set_status(rid, "finished")  # so `logs -f` returns
    lines = [m.group(1).split("#")[0].strip() for m in re.finditer(r"^\$ jitplan (.+)$", doc, re.M)]
    assert len(lines) >= 7
    for line in lines:
        r = cli(*shlex.split(line.replace("RUN", rid)))
        assert r.code == 0, (line, r.err)
    assert "step 29" in cli("logs", rid, "-f", "--tail", "20").out
    (block,) = re.findall(r"```python\n(.*?)```", doc, re.S)
    ns: dict = {}
    exec(compile(block, "docs/runs.md", "exec"), ns)
    assert ns["reg"].path == reg.path and ns["reg"].get_run(ns["rid"]).status == "running"


def test_module_doctests() -> None:
    import doctest

    import jitplan.providers
    import jitplan.providers.vast.offers
    import jitplan.runs.registry
    import jitplan.secrets

    for mod in (jitplan.runs.registry, jitplan.secrets, jitplan.providers, jitplan.providers.vast.offers):
        res = doctest.testmod(mod)
        assert res.failed == 0 and res.attempted > 0, mod.__name__


@pytest.mark.net
def test_stop_destroy_when_the_host_is_unreachable(cli, reg: Registry, monkeypatch) -> None:
    pytest.importorskip("vastai", reason="the vastai SDK (jitplan[vast]) is not installed")
    import shutil

    if shutil.which("ssh") is None:
        pytest.skip("needs the ssh client")
    from fakes.vast_server import VastFake, free_port
    from pydantic import SecretStr

    from jitplan.providers import CreateSpec
    from jitplan.providers.vast.client import VastClient

    dead = f"root@127.0.0.1:{free_port()}"
    with VastFake(KEY) as fake:
        fake.add_offer(2001, num_gpus=2)
        iid = VastClient(SecretStr(KEY), server_url=fake.url).create(
            CreateSpec(offer_id=2001, image="img", disk_gb=50, label="jitplan-t-1"))
        rid = reg.create_run("v", "vast", status="running", host=dead)
        reg.update_run(rid, run_dir="jitplan/runs/v", meta=RunMeta(ssh=dead, remote_root="jitplan"))
        reg.cloud.add_instance(rid, "vast", iid, "jitplan-t-1", 0.2, status="running")
        monkeypatch.setenv("VAST_URL", fake.url)
        r = cli("stop", rid, "--destroy", "--yes")
        # nothing could be pulled from it: the instance (its disk holds the checkpoints) is kept
        assert r.code == 1 and "not destroying" in r.err and len(fake.live()) == 1
        r = cli("stop", rid, "--destroy", "--yes", "--discard")
        assert fake.live() == []  # told to, the instance goes even though training could not be reached
    assert r.code == 1 and "could not stop training" in r.err and "Traceback" not in r.err
    assert reg.get_run(rid).status == "stopped" and reg.cloud.instances() == []


def test_run_names_stay_whole_at_80_columns_and_a_local_only_list_has_no_host_column(cli, reg, monkeypatch):
    """A run name is one token (JiT-Tiny-4-16px-20261207-023447): at 80 columns it was folded at a hyphen over
    two lines; the host column (localhost on every row) took the room it needed."""
    monkeypatch.setenv("COLUMNS", "80")
    name = "JiT-Tiny-4-16px-20261207-023447"
    reg.create_run(name, "local", run_dir="runs/a")
    out = cli("runs").out
    assert any(name in line for line in out.splitlines()), out
    assert "host" not in out.splitlines()[2]
    reg.create_run("JiT-B-16-256px-20261207-023447", "ssh", run_dir="runs/b", host="gpu-box")
    out = cli("runs").out
    assert "host" in out and "gpu-box" in out and any(name in line for line in out.splitlines()), out
