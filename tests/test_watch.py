"""`jitplan watch RUN`: a run launched with --detach on the Vast fake (real SDK, real sshd, real trainer) is
followed from another command: pulled, recovered on a new offer from the recorded launch request when its
instance is outbid, pulled and destroyed when training ends. Nothing is left billing."""

from __future__ import annotations

import json

import pytest
from fakes.sshd import sshd_available
from fakes.vast_server import VastFake
from test_pull import write_checkpoint
from test_recover import KEY, Cloud, OutbidWorld

from jitplan.runs.registry import Registry

pytest.importorskip("vastai", reason="the vastai SDK (jitplan[vast]) is not installed")
pytestmark = [pytest.mark.net, pytest.mark.skipif(not sshd_available(), reason="needs /usr/sbin/sshd, rsync, root")]


@pytest.fixture
def reg(tmp_path, monkeypatch) -> Registry:
    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "jp"))
    monkeypatch.setenv("VAST_API_KEY", KEY)
    return Registry()


def test_watch_refuses_a_run_with_nothing_to_watch(cli, reg) -> None:
    rid = reg.create_run("local-one", "local", status="finished")
    r = cli("watch", rid)
    assert r.code == 2 and "nothing to watch" in r.err and "Traceback" not in r.err
    assert len(r.err.strip().splitlines()) <= 2  # the error and its hint


@pytest.mark.slow
def test_an_older_run_without_a_recorded_launch_is_still_pulled_and_torn_down(cli, reg, tmp_path) -> None:
    from test_pull import Remote

    remote = Remote(tmp_path)
    try:
        with VastFake(KEY) as fake:
            import os

            os.environ["VAST_URL"] = fake.url
            try:
                c = Cloud(fake, reg, remote, tmp_path / "local")
                write_checkpoint(c.rdir / "out", 7)
                (c.rdir / "watchdog-state.json").write_text(json.dumps({"state": "done", "reason": "finished"}))
                r = cli("watch", c.rid, "--json")
                live = fake.live()
            finally:
                del os.environ["VAST_URL"]
    finally:
        remote.sshd.__exit__()
    assert r.code == 0, r.err[-2000:]
    assert live == [] and json.loads(r.out)["status"] == "finished" and json.loads(r.out)["step"] == 7
    assert (tmp_path / "local" / "out" / "last.pt").is_file() and reg.cloud.instances() == []


@pytest.mark.slow
def test_a_detached_run_is_recovered_then_torn_down_by_watch(cli, reg, tmp_path, monkeypatch) -> None:
    with OutbidWorld(tmp_path, monkeypatch) as world:
        r = cli(*world.launch_args("--detach"))
        assert r.code == 0, r.err[-3000:]
        rid = json.loads(r.out)["run_id"]
        assert f"jitplan watch {rid}" in r.err and len(world.fake.live()) == 1  # detached: it bills until watched
        saboteur = world.outbid_after_a_pull()
        w = cli("watch", rid, "--json")
        saboteur.join(10)
        assert w.code == 0, w.err[-3000:]
        world.two_creates_two_deletes_none_live()
    root, plan, seen = world.root, world.plan, world.seen
    res = json.loads(w.out)
    assert res["status"] == "finished" and res["recoveries"] == 1 and res["step"] == 30
    (lost,) = reg.events(rid, kind="instance-lost")
    assert str(seen["iid"]) in lost.message and "outbid" in lost.message
    assert any(f"resumed at step {lost.data['step']} " in p.read_text() for p in (root / "runs").glob("*/train.log"))
    assert reg.get_run(rid).status == "finished" and reg.cloud.instances() == []
    assert KEY not in r.err + r.out + w.err + w.out
    meta = reg.get_run(rid).meta.launch
    assert meta is not None and KEY not in json.dumps(meta) and meta["plan_file"] == str(plan.resolve())
