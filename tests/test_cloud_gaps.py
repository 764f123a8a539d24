"""Cloud, the last gaps (issue 22): each case against the Vast fake (the real vastai SDK) and, where a machine is
involved, a real sshd + rsync on 127.0.0.1. Each failed on the tree before the one cloud lifecycle."""

from __future__ import annotations

import json

import pytest
from fakes.sshd import sshd_available
from fakes.vast_server import VastFake
from test_pull import write_checkpoint
from test_recover import KEY, Cloud

from jitplan.cloud.watch import Watch, supervise_remote
from jitplan.runs.registry import Registry

pytest.importorskip("vastai", reason="the vastai SDK (jitplan[vast]) is not installed")
pytestmark = [pytest.mark.net]
needs_sshd = pytest.mark.skipif(not sshd_available(), reason="needs /usr/sbin/sshd, rsync, root")


@pytest.fixture
def reg(tmp_path, monkeypatch) -> Registry:
    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "jp"))
    monkeypatch.setenv("VAST_API_KEY", KEY)
    return Registry()


def _no_relaunch(n: int) -> None:
    raise AssertionError("no recovery was expected")


def _client(fake: VastFake):
    from pydantic import SecretStr

    from jitplan.providers.vast.client import VastClient

    return VastClient(SecretStr(KEY), server_url=fake.url)


def _create(fake: VastFake, label: str, offer: int = 2001) -> int:
    from jitplan.providers import CreateSpec

    fake.add_offer(offer, num_gpus=1)
    return _client(fake).create(CreateSpec(offer_id=offer, image="img", disk_gb=50, label=label))


# ------------------------------------------------------------------------------------------- sweep and stop
def test_the_orphan_sweep_touches_only_labels_jitplan_minted(cli, reg, monkeypatch) -> None:
    with VastFake(KEY) as fake:
        monkeypatch.setenv("VAST_URL", fake.url)
        mine = _create(fake, "jitplan-dev-box", 2001)  # the user's own box, named after the tool
        orphan = _create(fake, "jitplan-abcdef-1", 2002)
        reg.create_run("x", "vast")  # the registry has rented on Vast: `runs` asks it
        r = cli("runs", "--json")
        assert r.code == 0, r.err
        assert [o["instance_id"] for o in json.loads(r.out)["orphans"]] == [orphan]
        r = cli("runs", "--destroy-orphans", "--yes")
        assert r.code == 0, r.err
        assert [i["id"] for i in fake.live()] == [mine]  # never the user's


def test_stop_adopts_by_label_before_it_says_nothing_live(cli, reg, monkeypatch) -> None:
    """A create whose label lookup was never answered: the run has an open intent and no instance row."""
    with VastFake(KEY) as fake:
        monkeypatch.setenv("VAST_URL", fake.url)
        rid = reg.create_run("v", "vast", status="failed")
        label = f"jitplan-{rid}-1"
        reg.cloud.record_intent(rid, "vast", label, offer_id=2001, dph=0.2)
        iid = _create(fake, label)
        r = cli("stop", rid, "--destroy", "--yes")
        assert r.code == 0, r.err
        assert "has no live cloud instance" not in r.err and f"found instance {iid}" in r.err
        assert fake.live() == []
    (row,) = reg.cloud.instances(active_only=False, run_id=rid)
    assert (row.instance_id, row.status) == (str(iid), "destroyed")


def test_runs_and_stop_with_a_revoked_key_still_show_the_instance(cli, reg, monkeypatch) -> None:
    with VastFake(KEY) as fake:
        monkeypatch.setenv("VAST_URL", fake.url)
        iid = _create(fake, "jitplan-abc123-1")
        rid = reg.create_run("v", "vast", status="running")
        reg.cloud.add_instance(rid, "vast", iid, "jitplan-abc123-1", 0.2, status="training")
        fake.faults.bad_key = True
        r = cli("runs", "--json")
        assert r.code == 0, r.err
        data = json.loads(r.out)
        assert [v["row"]["instance_id"] for v in data["instances"]] == [str(iid)]
        assert any("refused the API key" in w and "orphans unknown" in w for w in data["warnings"])


# ------------------------------------------------------------------------------------------- caps
def test_a_cap_below_the_teardown_reserve_is_refused_before_renting(cli, tmp_path, monkeypatch) -> None:
    from fakes.plans import make_plan
    from fakes.sshd import keygen

    from jitplan.schemas import save_plan

    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "jp"))
    monkeypatch.setenv("VAST_API_KEY", KEY)
    monkeypatch.chdir(tmp_path)
    identity = keygen(tmp_path / "id_ed25519")
    save_plan(make_plan("RTX 3060", 2), tmp_path / "plan.yaml")
    with VastFake(KEY) as fake:
        monkeypatch.setenv("VAST_URL", fake.url)
        fake.add_offer(2001, num_gpus=2)
        base = ("launch", "plan.yaml", "--vast", "--yes", "--identity", str(identity), "--detach")
        r = cli(*base, "--max-hours", "0.01")
        assert r.code == 2 and "raise it above 0.17" in r.err and "Traceback" not in r.err, r.err
        r = cli(*base, "--budget", "0.01")
        assert r.code == 2 and "--budget 0.01" in r.err and "raise it above" in r.err, r.err
        assert fake.creates() == [] and fake.live() == []  # nothing rented either time
    runs = Registry().list_runs()
    assert [r.status for r in runs] == ["failed"]  # the budget run was recorded, then refused; max-hours never


# ------------------------------------------------------------------------------------------- the watcher
@needs_sshd
def test_a_lost_instance_is_read_before_it_is_destroyed(reg, remote, tmp_path) -> None:
    with VastFake(KEY) as fake:
        c = Cloud(fake, reg, remote, tmp_path / "local")
        write_checkpoint(c.rdir / "out", 4)
        polls = []

        def sleep(s: float) -> None:  # after the first poll pulled step 4: training goes on to 8, then it dies
            polls.append(s)
            if len(polls) == 1:
                write_checkpoint(c.rdir / "out", 8)
                fake.faults.mid_run[2001] = "exited"

        res = supervise_remote(reg, c.rid, c.provider, _no_relaunch, Watch(poll_s=0, pull_every_s=0, max_recoveries=0),
                               sleep=sleep)
        assert fake.live() == []
    assert res.step == 8 and (tmp_path / "local" / "out" / "ckpt" / "0000008.pt").is_file()  # not 4
    kinds = [e.kind for e in reg.events(c.rid)]
    assert kinds.index("instance-lost") < kinds.index("destroying")
    assert "gave up after 0 recoveries" in res.message and "nothing of this run is left billing" in res.message
    assert "exited" in res.message  # why


@needs_sshd
def test_gave_up_says_why_and_its_logs_hint_works(cli, reg, remote, tmp_path) -> None:
    with VastFake(KEY) as fake:
        c = Cloud(fake, reg, remote, tmp_path / "local")
        write_checkpoint(c.rdir / "out", 4)
        (c.rdir / "train.log").write_text("step 1\nstep 4\n")
        fake.faults.mid_run[2001] = "exited"
        res = supervise_remote(reg, c.rid, c.provider, _no_relaunch, Watch(poll_s=0, max_recoveries=0))
    assert res.status == "failed" and "exited" in res.message and "nothing of this run is left billing" in res.message
    import shutil

    shutil.rmtree(c.rdir.parent)  # a destroyed instance's disk is gone (the loopback sshd is not)
    r = cli("logs", c.rid)  # the instance is gone: the log its last read brought home
    assert r.code == 0 and "step 4" in r.out, r.err


@needs_sshd
def test_a_revoked_key_mid_run_keeps_watching_and_tears_down_once_it_works(reg, remote, tmp_path) -> None:
    said: list[str] = []
    with VastFake(KEY) as fake:
        c = Cloud(fake, reg, remote, tmp_path / "local")
        write_checkpoint(c.rdir / "out", 4)
        fake.faults.bad_key = True  # revoked while it trains
        polls = []

        def sleep(s: float) -> None:
            polls.append(s)
            if len(polls) == 2:  # training ends; the key is still refused: nothing can be destroyed yet
                write_checkpoint(c.rdir / "out", 6)
                (c.rdir / "watchdog-state.json").write_text(json.dumps({"state": "done", "reason": "finished"}))
            if len(polls) == 4:
                assert len(fake.live()) == 1  # still there, still watched
                fake.faults.bad_key = False  # the user fixed the key

        res = supervise_remote(reg, c.rid, c.provider, _no_relaunch, Watch(poll_s=1, pull_every_s=0),
                               sleep=sleep, say=said.append)
        assert fake.live() == []
    assert res.status == "finished" and res.step == 6
    assert polls[1] > polls[0]  # backing off while the key is refused
    (warn,) = [m for m in said if "refused the API key" in m]
    assert f"instance {c.iid} (0.200 $/h)" in warn and "VAST_API_KEY" in warn
    assert f"jitplan stop {c.rid} --destroy --yes" in warn
    assert [e.kind for e in reg.events(c.rid)].count("auth-failed") == 1


@needs_sshd
def test_teardown_through_a_storm_of_429s_ends_destroyed(reg, remote, tmp_path) -> None:
    with VastFake(KEY) as fake:
        c = Cloud(fake, reg, remote, tmp_path / "local")
        write_checkpoint(c.rdir / "out", 12)
        (c.rdir / "watchdog-state.json").write_text(json.dumps({"state": "done", "reason": "finished"}))
        fake.faults.rate_limit_next = 40
        res = supervise_remote(reg, c.rid, c.provider, _no_relaunch, Watch(poll_s=0))
        assert fake.live() == []
    assert (res.status, res.step) == ("finished", 12) and reg.get_run(c.rid).status == "finished"
    assert reg.cloud.instances() == []


@needs_sshd
def test_teardown_past_its_deadline_ends_in_a_true_state_with_the_run_id(reg, remote, tmp_path,
                                                                          monkeypatch) -> None:
    monkeypatch.setenv("JITPLAN_DESTROY_DEADLINE_S", "20")
    with VastFake(KEY) as fake:
        c = Cloud(fake, reg, remote, tmp_path / "local")
        write_checkpoint(c.rdir / "out", 12)
        (c.rdir / "watchdog-state.json").write_text(json.dumps({"state": "done", "reason": "finished"}))
        fake.faults.destroy_fails.add(c.iid)
        res = supervise_remote(reg, c.rid, c.provider, _no_relaunch, Watch(poll_s=0))
        assert len(fake.live()) == 1
    assert res.status == "failed" and f"jitplan stop {c.rid} --destroy --yes" in res.message
    assert "RUN" not in res.message and "training runs on it" not in res.message
    run = reg.get_run(c.rid)
    assert run.status == "finished"  # training did finish, and its checkpoint is home
    (row,) = reg.cloud.instances()
    assert row.status == "destroying"  # asked, not confirmed gone: `jitplan runs` keeps showing it


@needs_sshd
def test_stop_destroy_after_training_ended_exits_0(cli, reg, remote, tmp_path, monkeypatch) -> None:
    with VastFake(KEY) as fake:
        monkeypatch.setenv("VAST_URL", fake.url)
        c = Cloud(fake, reg, remote, tmp_path / "local")
        write_checkpoint(c.rdir / "out", 6)
        (c.rdir / "exit_code").write_text("0\n")  # training ended on its own; nothing runs there
        (c.rdir / "pid").write_text("999999\n")
        r = cli("stop", c.rid, "--destroy", "--yes")
        assert r.code == 0, r.err
        assert "stop training failed" not in r.err and "already ended (exit code 0)" in r.err
        assert fake.live() == []
    assert reg.get_run(c.rid).status == "stopped"
    assert (tmp_path / "local" / "out" / "ckpt" / "0000006.pt").is_file()


# ------------------------------------------------------------------------------------------- caps, detached
@needs_sshd
@pytest.mark.slow
def test_a_cap_holds_under_detach_without_a_watcher(cli, tmp_path, monkeypatch) -> None:
    """--detach --max-hours: nobody watches from here. At the cap the watchdog stops training (checkpoint), nobody
    claims the teardown, so the instance stops itself with its own key (Vast's stop: the disk is kept); the
    registry says so. Before: training stopped at the cap and the instance billed on, `runs` said running."""
    import sys
    import time

    from fakes.sshd import LoopbackSSHD, keygen
    from test_recover import _tiny_plan

    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "jp"))
    monkeypatch.setenv("VAST_API_KEY", KEY)
    monkeypatch.setenv("JITPLAN_VAST_POLL_S", "0.05")
    monkeypatch.setenv("JITPLAN_SELF_STOP_GRACE_S", "1")
    envfile = tmp_path / "instance-environment"  # what onstart persists on a real instance (/etc/environment)
    envfile.write_text("JITPLAN_RUN_ID=x\nCONTAINER_API_KEY=container-31337001\n")  # the fake's key for it
    monkeypatch.setenv("JITPLAN_VAST_ENV_FILE", str(envfile))
    monkeypatch.chdir(tmp_path)
    plan = _tiny_plan(tmp_path / "plan.yaml", max_steps=1_000_000)
    identity = keygen(tmp_path / "id_ed25519")
    with LoopbackSSHD(tmp_path / "sshd") as sshd, \
            VastFake(KEY, ssh_port=sshd.port, authorized_keys=sshd.authorized_keys) as fake:
        fake.add_offer(3001, num_gpus=1, dph_base=0.10, gpu_ram=12288)
        monkeypatch.setenv("VAST_URL", fake.url)
        r = cli("launch", str(plan), "--vast", "--yes", "--identity", str(identity), "--remote-dir",
                str(tmp_path / "remote"), "--remote-python", sys.executable, "--no-doctor", "--run-dir",
                str(tmp_path / "staged"), "--detach", "--max-hours", "0.19", "--json")  # 84 s of training
        assert r.code == 0, r.err
        rid = json.loads(r.out)["run_id"]
        assert "stops itself" in r.err  # said at launch, and recorded
        (iid,) = [i["id"] for i in fake.live()]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and fake.instances[iid]["cur_state"] != "stopped":
            time.sleep(0.5)
        assert fake.instances[iid]["cur_state"] == "stopped", (tmp_path / "remote").joinpath(
            "runs").glob("*/watchdog.log").__next__().read_text()
        (put,) = [q for q in fake.requests("PUT", f"/api/v0/instances/{iid}/")]
        assert put.auth == f"container-{iid}" and put.body == {"state": "stopped"}  # its own key, never ours
        rdir = next((tmp_path / "remote" / "runs").iterdir())
        state = json.loads((rdir / "watchdog-state.json").read_text())
        assert (state["reason"], state["self_stop"]) == ("max-hours", "requested")
        assert (rdir / "out" / "last.pt").is_file()  # training stopped with a checkpoint first, on the kept disk
        r = cli("runs", "--json")
        assert r.code == 0, r.err
        (view,) = json.loads(r.out)["instances"]
        assert view["row"]["status"] == "stopped"  # still listed: its disk bills storage
    reg = Registry()
    assert reg.get_run(rid).status == "stopped"
    assert any("stopped itself at its cap" in e.message for e in reg.events(rid))
    assert [e.kind for e in reg.events(rid)].count("cap") == 1
