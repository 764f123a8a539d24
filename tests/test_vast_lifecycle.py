# ruff: noqa: F811 - the fixtures imported from test_vast_provision are redefined as parameters
"""The cloud lifecycle under failure (issue 11): every failure path ends with no live instance that jitplan cannot
show and no duplicate, asserted on the fake's own state (``unknown_to(registry)``, ``duplicates()``).

Driven through the real ``vastai`` SDK against tests/fakes/vast_server.py; a real subprocess is killed with
SIGKILL / SIGTERM; failures after provisioning use a real sshd on 127.0.0.1. docs/vast.md's failure table
names the test that keeps each row true.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes.plans import make_plan
from fakes.sshd import LoopbackSSHD, keygen, sshd_available
from fakes.vast_server import NGINX_502, NGINX_504, BannerServer, Failure, VastFake
from pydantic import SecretStr
from test_vast_provision import KEY, PUBKEY, _provider, _run, banner, env, fake, reg  # noqa: F401 - fixtures

from jitplan.errors import CheckFailed
from jitplan.providers import AuthError, CleanupFailed, LookupUnanswered, ProviderError
from jitplan.providers.vast.client import VastClient
from jitplan.runs.registry import Registry

pytest.importorskip("vastai", reason="the vastai SDK (jitplan[vast]) is not installed")

pytestmark = pytest.mark.net


def _clean(fake: VastFake, reg: Registry) -> None:
    """The invariant of issue 11: nothing billing that the registry does not list, no label twice."""
    assert fake.unknown_to(reg) == [], fake.live()
    assert fake.duplicates() == []


# ------------------------------------------------------------------------------------------- create errors
@pytest.mark.parametrize(("status", "page"), [(502, NGINX_502), (504, NGINX_504)])
def test_create_error_that_the_server_carried_out_is_found_by_label(fake, reg, env, status, page) -> None:
    fake.faults.create_then_error[2001] = (status, page)
    rid, res, said = _run(fake, reg, env)
    assert len(fake.creates()) == 1 and fake.deletes() == []  # no second rental for that label
    assert res.offer.id == 2001 and [i["id"] for i in fake.live()] == [res.instance_id]
    assert fake.ssh_keys[res.instance_id] == [PUBKEY]  # found by label, then attach_ssh
    (inst,) = reg.cloud.instances(run_id=rid)
    assert (inst.label, inst.status) == (f"jitplan-{rid}-1", "running")
    text = "\n".join(said)
    assert f"HTTP {status} Bad Gateway" in text or f"HTTP {status} Gateway Time-out" in text
    assert "<html" not in text and "no second create" in text
    _clean(fake, reg)


def test_lookup_answering_429_and_5xx_is_retried_never_read_as_none(fake, reg, env) -> None:
    fake.faults.create_hang_s[2001] = 1.5  # the create reaches the server; the answer comes too late
    fake.faults.failures += [Failure("GET", "/api/v1/instances/", 429, "API requests too frequent", count=4),
                             Failure("GET", "/api/v1/instances/", 503, {"error": "unavailable"}, count=3)]
    rid, res, said = _run(fake, reg, env, http_timeout_s=0.4)
    assert len(fake.creates()) == 1 and res.offer.id == 2001 and fake.deletes() == []
    assert [f.count for f in fake.faults.failures] == [0, 0]  # every scripted error was met and waited out
    _clean(fake, reg)


def test_unanswered_lookup_stops_renting_and_runs_finds_the_instance_later(fake, reg, env) -> None:
    from jitplan.cloud.runs import overview

    fake.faults.create_hang_s[2001] = 1.5
    fake.faults.failures.append(Failure("GET", "/api/v1/instances/", 502, NGINX_502, count=None))
    client = VastClient(SecretStr(KEY), server_url=fake.url, timeout_s=0.4)
    from jitplan.providers.vast import VastProvider

    provider = VastProvider(client, poll_s=0.01, sleep=lambda s: time.sleep(min(s, 0.01)), lookup_deadline_s=0.5)
    rid = reg.create_run("x", "vast")
    with pytest.raises(LookupUnanswered, match="could not look up label .*HTTP 502 Bad Gateway") as e:
        _run(fake, reg, env, provider=provider, run_id=rid)
    assert "nothing else is rented" in e.value.message and "<html" not in e.value.message
    assert len(fake.creates()) == 1  # the next offer was NOT rented on a guess
    (intent,) = reg.cloud.intents(run_id=rid)  # the label stays written down, its outcome unknown
    assert intent.label == f"jitplan-{rid}-1" and reg.get_run(rid).status == "failed"
    fake.faults.failures.clear()  # the API answers again: `jitplan runs` settles it
    data = overview(reg, providers=[_provider(fake)])
    assert data.orphans == [] and [v.row.run_id for v in data.instances] == [rid]
    assert any(e.kind == "adopted" for e in reg.events(rid)) and reg.cloud.intents() == []
    _clean(fake, reg)


# ------------------------------------------------------------------------------------------- polling
def test_transient_502s_while_polling_do_not_destroy_a_healthy_instance(fake, reg, env) -> None:
    # 7 x 502 on show: two whole SDK calls (3 tries each) fail, the third call's retry succeeds
    fake.faults.failures.append(Failure("GET", "/api/v0/instances/", 502, NGINX_502, count=7))
    rid, res, said = _run(fake, reg, env, timeout_s=20)
    assert fake.faults.failures[0].count == 0
    assert res.offer.id == 2001 and fake.deletes() == [] and len(fake.creates()) == 1
    _clean(fake, reg)


# ------------------------------------------------------------------------------------------- messages
def test_api_errors_are_one_line_with_status_never_html(fake, reg, env) -> None:
    fake.faults.failures.append(Failure("POST", "/api/v0/bundles/", 502, NGINX_502, count=None))
    with pytest.raises(ProviderError) as e:
        _run(fake, reg, env)
    assert e.value.message == "Vast.ai could not search offers: HTTP 502 Bad Gateway"
    assert fake.creates() == []


def test_destroy_error_has_one_level_of_context(fake, reg, env) -> None:
    fake.faults.oci_error.add(2001)
    fake.faults.destroy_fails.add(31337001)
    with pytest.raises(CleanupFailed) as e:
        _run(fake, reg, env)
    msg = e.value.message
    assert msg.count("could not destroy") == 1 and "failed: failed" not in msg, msg
    assert "(last: Vast.ai could not destroy instance 31337001: HTTP 500 server_error: internal error)" in msg
    _clean(fake, reg)  # the survivor is still listed (status failed), with its stop command in the hint
    assert "jitplan stop" in (e.value.hint or "")


def test_status_text_keeps_the_cuda_reason(fake, reg, env) -> None:
    fake.faults.oci_error.add(2001)
    rid, res, said = _run(fake, reg, env)
    assert any("cuda>=12.8, please update your driver" in s for s in said)
    assert not any("failed: failed" in s for s in said)


def test_bad_key_is_reported_as_a_bad_key(fake, reg, env) -> None:
    fake.faults.bad_key = True
    with pytest.raises(AuthError) as e:
        _run(fake, reg, env)
    assert e.value.message == "Vast.ai refused the API key (HTTP 404: auth_error: Invalid user key)"


def test_bid_help_says_whole_instance(cli) -> None:
    out = " ".join(cli("launch", "--help").out.replace("│", " ").split())  # rich's help table, unwrapped
    assert "bidding this $/h for the whole instance" in out and "$/h per GPU" not in out


# ------------------------------------------------------------------------------------------- orphans
def test_runs_lists_orphans_with_cost_and_destroys_them(cli, fake, reg, env, monkeypatch) -> None:
    from jitplan.providers import CreateSpec

    client = VastClient(SecretStr(KEY), server_url=fake.url)
    orphan = client.create(CreateSpec(offer_id=2001, image="img", disk_gb=50, label="jitplan-abcdef-1"))
    foreign = client.create(CreateSpec(offer_id=2002, image="img", disk_gb=50, label="my-own-box"))
    fake.instances[orphan]["start_date"] = time.time() - 2 * 3600  # billing for two hours
    reg.create_run("earlier", "vast")  # this registry has rented on Vast: `jitplan runs` asks it
    monkeypatch.setenv("VAST_URL", fake.url)
    r = cli("runs", "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    (o,) = data["orphans"]
    assert (o["instance_id"], o["label"]) == (orphan, "jitplan-abcdef-1")
    assert o["cost_so_far"] == pytest.approx(2 * o["dph"], rel=0.01) and data["checked"] == ["vast"]
    r = cli("runs")
    assert "Orphans" in r.out and "--destroy-orphans" in r.out
    r = cli("runs", "--destroy-orphans", "--yes")
    assert r.code == 0 and f"destroyed orphan Vast.ai instance {orphan}" in r.err
    assert [i["id"] for i in fake.live()] == [foreign]  # not ours by label: never touched


def test_runs_says_when_the_provider_cannot_be_asked(cli, fake, reg, env, monkeypatch) -> None:
    reg.create_run("earlier", "vast")
    fake.faults.failures.append(Failure("GET", "/api/v1/instances/", 503, NGINX_502, count=None))
    monkeypatch.setenv("VAST_URL", fake.url)
    data = json.loads(cli("runs", "--json").out)
    assert data["checked"] == [] and "orphans unknown, not none" in data["warnings"][0]


# ------------------------------------------------------------------------------------------- killed launchers
def _launch_subprocess(tmp_path: Path, fake: VastFake, *extra: str) -> subprocess.Popen:
    from jitplan.schemas import save_plan

    plan = tmp_path / "plan.yaml"
    save_plan(make_plan("RTX 3060", 2), plan)
    identity = tmp_path / "id_ed25519"
    identity.write_text("x")
    identity.with_name("id_ed25519.pub").write_text(PUBKEY)
    env = {**os.environ, "VAST_URL": fake.url, "VAST_API_KEY": KEY, "JITPLAN_HOME": str(tmp_path / "jp"),
           "JITPLAN_VAST_POLL_S": "0.05", "PYTHONPATH": str(Path(__file__).parent.parent)}
    return subprocess.Popen([sys.executable, "-m", "jitplan", "launch", str(plan), "--vast", "--yes", "--no-doctor",
                             "--identity", str(identity), *extra], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(cond, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_kill_9_between_create_and_record_still_shows_the_instance(cli, fake, tmp_path, monkeypatch) -> None:
    fake.faults.create_hang_s[2001] = 60.0  # the instance exists at the server; the launcher never hears back
    proc = _launch_subprocess(tmp_path, fake)
    try:
        _wait(lambda: len(fake.creates()) == 1 and fake.live())
    finally:
        proc.kill()  # SIGKILL: no cleanup code runs
        proc.wait(30)
    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "jp"))
    monkeypatch.setenv("VAST_API_KEY", KEY)
    monkeypatch.setenv("VAST_URL", fake.url)
    reg = Registry()
    (run,) = reg.list_runs()
    assert [i.label for i in reg.cloud.intents()] == [f"jitplan-{run.id}-1"]  # written before the create
    r = cli("runs", "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    (iid,) = [i["id"] for i in fake.live()]
    assert [v["row"]["instance_id"] for v in data["instances"]] == [str(iid)] and data["orphans"] == []
    assert data["instances"][0]["row"]["run_id"] == run.id
    _clean(fake, reg)
    r = cli("stop", run.id, "--destroy", "--yes", "--discard")
    assert r.code == 0, r.err
    assert fake.live() == []


@pytest.mark.slow
def test_sigterm_during_provisioning_destroys_and_says_so(fake, tmp_path) -> None:
    fake.faults.loading_ticks[2001] = None  # loading forever
    proc = _launch_subprocess(tmp_path, fake)
    try:
        _wait(lambda: len(fake.requests("GET", "/api/v0/instances/31337001")) >= 2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert fake.live() == [] and len(fake.deletes()) == 1
    assert "SIGTERM" in err and "nothing of this run is left billing" in err and "Traceback" not in err
    reg = Registry(tmp_path / "jp" / "runs.db")
    assert reg.list_runs()[0].status == "interrupted"
    _clean(fake, reg)


# ------------------------------------------------------------------------------------------- after provisioning
def _launch_cli(cli, tmp_path: Path, fake: VastFake, identity: Path, monkeypatch, *extra: str):
    from jitplan.schemas import save_plan

    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "jp"))
    monkeypatch.setenv("VAST_API_KEY", KEY)
    monkeypatch.setenv("VAST_URL", fake.url)
    monkeypatch.setenv("JITPLAN_VAST_POLL_S", "0.02")
    monkeypatch.chdir(tmp_path)
    plan = tmp_path / "plan.yaml"
    save_plan(make_plan("RTX 3060", 2), plan)
    return cli("launch", str(plan), "--vast", "--yes", "--no-doctor", "--identity", str(identity),
               "--remote-dir", str(tmp_path / "remote"), "--run-dir", str(tmp_path / "staged"), "--detach", *extra)


@pytest.fixture
def keypair(tmp_path: Path) -> Path:
    return keygen(tmp_path / "id_ed25519")


def test_ssh_refused_after_provisioning_destroys_the_instance(cli, tmp_path, keypair, monkeypatch) -> None:
    with BannerServer() as b, VastFake(KEY, ssh_port=b.port) as f:  # answers like sshd, then hangs up
        f.add_offer(2001, num_gpus=2)
        r = _launch_cli(cli, tmp_path, f, keypair, monkeypatch)
        assert r.code == 1 and "Traceback" not in r.err
        assert "launch failed after provisioning" in r.err and "destroying instance 31337001" in r.err
        assert f.live() == [] and len(f.deletes()) == 1
        reg = Registry()
        assert reg.list_runs()[0].status == "failed"
        _clean(f, reg)


def test_ctrl_c_after_provisioning_destroys_and_prints(cli, tmp_path, keypair, monkeypatch) -> None:
    from jitplan.launch.ssh import SSHLaunch

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(SSHLaunch, "prepare", interrupted)
    with BannerServer() as b, VastFake(KEY, ssh_port=b.port) as f:
        f.add_offer(2001, num_gpus=2)
        r = _launch_cli(cli, tmp_path, f, keypair, monkeypatch)
        assert r.code == 130, r.err
        assert "Error: launch interrupted (Ctrl-C); instance 31337001 destroyed, nothing left billing" in r.err
        assert f.live() == []
        reg = Registry()
        assert reg.list_runs()[0].status == "interrupted"
        _clean(f, reg)


needs_sshd = pytest.mark.skipif(not sshd_available(), reason="needs /usr/sbin/sshd, rsync and root")


@needs_sshd
@pytest.mark.slow
@pytest.mark.parametrize("keep", [False, True])
def test_wrong_remote_python_after_provisioning(cli, tmp_path, keypair, monkeypatch, keep) -> None:
    with LoopbackSSHD(tmp_path / "sshd") as sshd, \
            VastFake(KEY, ssh_port=sshd.port, authorized_keys=sshd.authorized_keys) as f:
        f.add_offer(2001, num_gpus=2)
        extra = ("--remote-python", "/nonexistent/python3", *(["--keep"] if keep else []))
        r = _launch_cli(cli, tmp_path, f, keypair, monkeypatch, *extra)
        assert r.code == 1 and "Traceback" not in r.err
        reg = Registry()
        (run,) = reg.list_runs()
        if keep:  # kept, recorded, and the way to stop it printed
            assert len(f.live()) == 1 and f.deletes() == []
            assert "kept (--keep)" in r.err and f"jitplan stop {run.id} --destroy --yes" in r.err
            assert "$/h" in r.err
            assert [i.status for i in reg.cloud.instances(run_id=run.id)] == ["kept"]  # the lifecycle says why it lives
        else:
            assert f.live() == [] and "destroying instance 31337001" in r.err
            assert run.status == "failed"
        _clean(f, reg)


def test_sigterm_handler_is_scoped() -> None:
    from jitplan.launch.remote import Terminated, sigterm_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated), sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    assert signal.getsignal(signal.SIGTERM) == before


def test_check_failed_is_raised_for_a_plan_with_nothing_to_rent(fake, reg, env) -> None:
    with pytest.raises(CheckFailed, match="no Vast.ai offer satisfies"):
        _run(fake, reg, env, plan=make_plan("H200", 2))


def test_docs_failure_table_names_tests_that_exist() -> None:
    """docs/vast.md's failure -> behaviour table: every test it names exists (so the table stays kept)."""
    import fnmatch
    import importlib
    import re

    doc = (Path(__file__).parent.parent / "docs" / "vast.md").read_text()
    table = doc[doc.index("## Failure -> behaviour"):doc.index("## Costs")]
    names = re.findall(r"`(?:(test_\w+)::)?(test_[\w*]+)(?:\[\w+\])?`", table)
    assert len(names) >= 20
    for module, name in names:
        mod = importlib.import_module(module or "test_vast_lifecycle")
        assert fnmatch.filter(dir(mod), name), f"{module or 'test_vast_lifecycle'}::{name} is named in docs/vast.md"


def test_ctrl_c_while_following_a_started_run_keeps_the_instance_and_says_how_to_stop_it(cli, tmp_path, keypair,
                                                                                            monkeypatch) -> None:
    import jitplan.launch.remote as ssh  # launch_ssh as the remote launch calls it

    def started_then_ctrl_c(job, *, registry, run_id, **kw):  # training started, then Ctrl-C while following
        registry.set_status(run_id, "running", "training")
        raise KeyboardInterrupt

    monkeypatch.setattr(ssh, "launch_ssh", started_then_ctrl_c)
    with BannerServer() as b, VastFake(KEY, ssh_port=b.port) as f:
        f.add_offer(2001, num_gpus=2)
        r = _launch_cli(cli, tmp_path, f, keypair, monkeypatch)
        reg = Registry()
        (run,) = reg.list_runs()
        assert r.code == 130, r.err
        assert "kept (training runs on it)" in r.err and f"jitplan stop {run.id} --destroy --yes" in r.err
        assert "still bills" in r.err and "$/h" in r.err
        assert len(f.live()) == 1 and f.deletes() == [] and run.status == "running"
        _clean(f, reg)


def test_two_instances_with_one_label_keep_one_and_destroy_the_other(fake, reg, env) -> None:
    from jitplan.providers import CreateSpec

    rid = reg.create_run("x", "vast")
    # a duplicate made behind our back (an SDK that resent the PUT after a read timeout)
    dup = VastClient(SecretStr(KEY), server_url=fake.url).create(
        CreateSpec(offer_id=2003, image="img", disk_gb=50, label=f"jitplan-{rid}-1"))
    fake.faults.create_hang_s[2001] = 1.5
    _, res, said = _run(fake, reg, env, run_id=rid, http_timeout_s=0.4)
    assert len(fake.live()) == 1 and fake.duplicates() == []
    assert res.instance_id == dup and len(fake.deletes()) == 1  # the lowest id kept, the other destroyed
    assert any("duplicates of label" in s for s in said)
    _clean(fake, reg)
