"""Recovery on rented machines, against the Vast fake (through the real SDK) and a real sshd: an instance that
exits, goes offline or is outbid mid-run is noticed, destroyed and replaced by a new offer that resumes from
the last pulled checkpoint (bounded tries, each step an event); a run its watchdog ended is pulled, then
destroyed; a teardown whose pull fails keeps the instance."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from fakes.sshd import LoopbackSSHD, Remote, keygen, sshd_available
from fakes.vast_server import VastFake
from test_pull import write_checkpoint

from jitplan.cloud.watch import Watch, remote_state, supervise_remote, watch_settings
from jitplan.errors import CheckFailed
from jitplan.runs.registry import Registry
from jitplan.runs.schema import RunMeta

pytest.importorskip("vastai", reason="the vastai SDK (jitplan[vast]) is not installed")
pytestmark = [pytest.mark.net, pytest.mark.skipif(not sshd_available(), reason="needs /usr/sbin/sshd, rsync, root")]
KEY = "SENTINEL-recover-" + "7f3a9c1e5b"


@pytest.fixture
def reg(tmp_path, monkeypatch) -> Registry:
    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "jp"))
    monkeypatch.setenv("VAST_API_KEY", KEY)
    return Registry()


class Cloud:
    """The fake with one running instance of offer 2001 recorded for a run whose remote folder is ``remote``'s."""

    def __init__(self, fake: VastFake, reg: Registry, remote: Remote, local: Path) -> None:
        from pydantic import SecretStr

        from jitplan.providers import CreateSpec
        from jitplan.providers.vast import VastProvider
        from jitplan.providers.vast.client import VastClient

        self.fake = fake
        client = VastClient(SecretStr(KEY), server_url=fake.url)
        self.provider = VastProvider(client, poll_s=0.01, sleep=lambda s: None)
        fake.add_offer(2001, num_gpus=1)
        self.iid = client.create(CreateSpec(offer_id=2001, image="img", disk_gb=50, label="jitplan-t-1"))
        for _ in range(4):
            client.show(self.iid)  # null -> loading -> running
        self.job = remote.job("jit-tiny")
        self.rid = reg.create_run("jit-tiny", "vast", status="running", host=str(remote.target))
        reg.update_run(self.rid, run_dir=self.job.run_dir, meta=RunMeta(
            ssh=str(remote.target), remote_root=str(remote.root), remote_run_id="jit-tiny", identity=str(remote.key),
            known_hosts=str(remote.known_hosts), local_run_dir=str(local)))
        reg.cloud.add_instance(self.rid, "vast", self.iid, "jitplan-t-1", 0.2, status="running")
        self.rdir = Path(self.job.run_dir)


def _no_relaunch(n: int) -> None:
    raise AssertionError("no recovery was expected")


def test_watch_settings_from_the_environment() -> None:
    w = watch_settings(2, {"JITPLAN_WATCH_POLL_S": "0.5", "JITPLAN_PULL_EVERY_S": "60"})
    assert (w.poll_s, w.pull_every_s, w.max_recoveries) == (0.5, 60.0, 2)
    with pytest.raises(Exception, match="JITPLAN_WATCH_POLL_S must be"):
        watch_settings(1, {"JITPLAN_WATCH_POLL_S": "soon"})


@pytest.mark.slow
def test_remote_state_falls_back_to_the_exit_code_without_a_watchdog(reg, remote, tmp_path) -> None:
    job = remote.job("r")
    assert remote_state(job) == {}
    (Path(job.run_dir) / "exit_code").write_text("0\n")
    assert remote_state(job) == {"state": "done", "reason": "finished", "exit_code": 0}
    (Path(job.run_dir) / "watchdog-config.json").write_text("{}")  # a watchdog runs: its state decides
    assert remote_state(job) == {}
    remote.sshd.__exit__()
    with pytest.raises(CheckFailed):
        remote_state(job)


@pytest.mark.slow
def test_an_instance_that_exits_mid_run_is_destroyed_and_the_bounded_tries_give_up(reg, remote, tmp_path) -> None:
    with VastFake(KEY) as fake:
        c = Cloud(fake, reg, remote, tmp_path / "local")
        write_checkpoint(c.rdir / "out", 4)

        def sleep(s: float) -> None:  # after the first poll (which pulled step 4) the container dies
            fake.faults.mid_run[2001] = "exited"

        res = supervise_remote(reg, c.rid, c.provider, _no_relaunch, Watch(poll_s=0, pull_every_s=0, max_recoveries=0),
                               sleep=sleep)
        assert fake.live() == [] and [d.path for d in fake.deletes()] == [f"/api/v0/instances/{c.iid}/"]
    assert res.status == "failed" and res.step == 4 and "gave up after 0 recoveries" in res.message
    assert (tmp_path / "local" / "out" / "ckpt" / "0000004.pt").is_file()  # the checkpoint is home
    kinds = [e.kind for e in reg.events(c.rid)]
    assert kinds.index("pulled") < kinds.index("instance-lost") < kinds.index("gave-up")
    lost = reg.events(c.rid, kind="instance-lost")[0]
    assert "exited" in lost.message and lost.data["step"] == 4
    assert reg.get_run(c.rid).status == "failed" and reg.cloud.instances() == []


def test_an_offline_instance_counts_polls_then_a_failed_recovery_is_recorded(reg, remote, tmp_path) -> None:
    calls = []

    def relaunch(n: int) -> None:
        calls.append(n)
        raise CheckFailed("no Vast.ai offer satisfies the plan")

    with VastFake(KEY) as fake:
        c = Cloud(fake, reg, remote, tmp_path / "local")
        fake.faults.mid_run[2001] = "unknown"  # the host stops sending heartbeats
        res = supervise_remote(reg, c.rid, c.provider, relaunch, Watch(poll_s=0, max_recoveries=2, offline_after=3))
        assert fake.live() == []
    assert calls == [1] and res.status == "failed" and "recovery 1 failed" in res.message
    kinds = [e.kind for e in reg.events(c.rid)]
    assert kinds.count("instance-unhealthy") == 2 and kinds[-3:] == ["recover", "recover-failed", "status"]


@pytest.mark.slow
def test_a_run_the_watchdog_ended_is_pulled_then_destroyed(cli, reg, remote, tmp_path) -> None:
    with VastFake(KEY) as fake:
        c = Cloud(fake, reg, remote, tmp_path / "local")
        write_checkpoint(c.rdir / "out", 12)
        (c.rdir / "watchdog-state.json").write_text(json.dumps({"state": "done", "reason": "budget", "step": 12}))
        res = supervise_remote(reg, c.rid, c.provider, _no_relaunch, Watch(poll_s=0))
        assert fake.live() == []
    assert (res.status, res.step) == ("finished", 12)
    assert (tmp_path / "local" / "out" / "last.pt").is_file() and reg.get_run(c.rid).status == "finished"
    out = cli("status", c.rid).out
    assert "teardown" in out and "pulled" in out


@pytest.mark.slow
def test_a_teardown_whose_pull_fails_keeps_the_instance(reg, remote, tmp_path) -> None:
    with VastFake(KEY) as fake:
        c = Cloud(fake, reg, remote, tmp_path / "local")
        (c.rdir / "out" / "last.pt").write_bytes(b"not a checkpoint")
        (c.rdir / "watchdog-state.json").write_text(json.dumps({"state": "done", "reason": "finished"}))
        res = supervise_remote(reg, c.rid, c.provider, _no_relaunch, Watch(poll_s=0))
        assert len(fake.live()) == 1 and fake.deletes() == []
    assert res.status == "failed" and "instance is kept" in res.message and "not destroying" in res.message
    assert len(reg.cloud.instances()) == 1


# ------------------------------------------------------------------------------ end to end through the CLI
def _tiny_plan(path: Path, max_steps: int) -> Path:
    from conftest import plan_for_tiny_recipe

    from jitplan.schemas import save_plan

    train = {"model": {"variant": "JiT-Tiny/4", "img_size": 16, "in_channels": 1, "num_classes": 10},
             "data": {"kind": "digits", "num_workers": 0, "persistent_workers": False, "prefetch_factor": None},
             "batch_per_gpu": 16, "max_steps": max_steps, "optim": {"warmup_epochs": 0},
             "checkpoint": {"every_steps": 10}, "log_every": 1, "device": "cpu"}
    save_plan(plan_for_tiny_recipe(train), path)
    return path


def _kill_everything_under(root: Path, sig: int = signal.SIGKILL, only: str = "") -> None:
    """The container dies: every process running in, or started for, the remote folder (with ``only``: those
    whose command line contains it)."""
    me = os.getpid()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == me:
            continue
        try:
            cwd = os.readlink(d / "cwd")
            cmd = (d / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if (cwd.startswith(str(root)) or str(root) in cmd) and only in cmd:
            try:
                os.kill(int(d.name), sig)
            except ProcessLookupError:
                pass


class OutbidWorld:
    """A real sshd behind the Vast fake with two 1-GPU offers (3001 cheaper), a tiny 30-step plan, and a saboteur
    that pauses the trainer at its first checkpoint and, once a pull brought step >= 10 home, kills the first
    instance's processes, deletes its disk and has it outbid. Used by the recovery tests here and in test_watch.py."""

    def __init__(self, tmp_path: Path, monkeypatch) -> None:
        monkeypatch.setenv("JITPLAN_VAST_POLL_S", "0.05")
        monkeypatch.setenv("JITPLAN_WATCH_POLL_S", "0.3")
        monkeypatch.setenv("JITPLAN_PULL_EVERY_S", "0.5")
        monkeypatch.chdir(tmp_path)
        self.tmp, self.mp = tmp_path, monkeypatch
        self.plan = _tiny_plan(tmp_path / "plan.yaml", max_steps=30)
        self.identity = keygen(tmp_path / "id_ed25519")
        self.root, self.staged = tmp_path / "remote", tmp_path / "staged"
        self.seen: dict = {}

    def __enter__(self) -> OutbidWorld:
        self.sshd = LoopbackSSHD(self.tmp / "sshd").__enter__()
        self.fake = VastFake(KEY, ssh_port=self.sshd.port, authorized_keys=self.sshd.authorized_keys).__enter__()
        self.fake.add_offer(3001, num_gpus=1, dph_base=0.10, gpu_ram=12288)
        self.fake.add_offer(3002, num_gpus=1, dph_base=0.12, gpu_ram=12288)
        self.mp.setenv("VAST_URL", self.fake.url)
        return self

    def __exit__(self, *exc: object) -> None:
        self.fake.__exit__(*exc)
        self.sshd.__exit__(*exc)

    def launch_args(self, *extra: str) -> list[str]:
        return ["launch", str(self.plan), "--vast", "--yes", "--identity", str(self.identity), "--remote-dir",
                str(self.root), "--remote-python", sys.executable, "--no-doctor", "--run-dir", str(self.staged),
                "--max-restarts", "1", *extra, "--json"]

    def outbid_after_a_pull(self) -> threading.Thread:
        def outbid() -> None:  # once a checkpoint came home, the first instance loses its bid and its disk
            deadline = time.monotonic() + 600
            # The trainer is paused once it wrote a checkpoint, so that a pull brings one home before it could
            # finish (on a loaded box a tiny run outpaces the pulls); rsync and the watchdog keep running.
            while time.monotonic() < deadline and not any((self.root / "runs").glob("*/out/last.pt")):
                time.sleep(0.02)
            _kill_everything_under(self.root, signal.SIGSTOP, only="jitmodel")
            while time.monotonic() < deadline:
                p = self.staged / "pulled.json"
                if p.exists() and (json.loads(p.read_text()).get("step") or 0) >= 10:
                    break
                time.sleep(0.1)
            _kill_everything_under(self.root)
            shutil.rmtree(self.root / "runs", ignore_errors=True)
            self.seen["iid"] = self.fake.live()[0]["id"]
            self.fake.faults.outbid.add(3001)

        t = threading.Thread(target=outbid, daemon=True)
        t.start()
        return t

    def two_creates_two_deletes_none_live(self) -> None:
        f = self.fake
        assert f.live() == [] and [c.path for c in f.creates()] == ["/api/v0/asks/3001/", "/api/v0/asks/3002/"]
        assert len(f.deletes()) == 2


@pytest.mark.slow
def test_outbid_mid_run_resumes_on_a_new_offer_from_the_last_pull(cli, reg, tmp_path, monkeypatch) -> None:
    with OutbidWorld(tmp_path, monkeypatch) as world:
        saboteur = world.outbid_after_a_pull()
        r = cli(*world.launch_args())
        saboteur.join(10)
        assert r.code == 0, r.err[-3000:]
        world.two_creates_two_deletes_none_live()
    root, staged, seen = world.root, world.staged, world.seen
    rid = json.loads(r.out)["run_id"]
    (lost,) = reg.events(rid, kind="instance-lost")
    resumed = lost.data["step"]
    assert 10 <= resumed < 30 and str(seen["iid"]) in lost.message and "outbid" in lost.message
    log = (root / "runs").glob("*/train.log")
    assert any(f"resumed at step {resumed} " in p.read_text() for p in log)  # from the uploaded pulled checkpoint
    assert json.loads((staged / "pulled.json").read_text())["step"] == 30
    assert (staged / "out" / "ckpt" / "0000030.pt").samefile(staged / "out" / "last.pt")
    kinds = [e.kind for e in reg.events(rid)]
    order = [kinds.index(k) for k in ("instance-lost", "recover", "recovered", "teardown")]
    assert order == sorted(order) and reg.get_run(rid).status == "finished" and reg.cloud.instances() == []
    out = cli("status", rid).out
    assert "instance-lost" in out and "recovered" in out
