"""`jitplan launch --vast` end to end: the Vast fake (through the real SDK) rents an "instance" whose SSH is a
real sshd on 127.0.0.1 that only accepts the key jitplan attached; the code is uploaded with rsync, a tiny
CPU training starts detached, `jitplan runs` shows the instance and its cost, `jitplan stop --destroy`
stops training and destroys the instance. A sentinel API key appears in no output, file or registry row."""

from __future__ import annotations

import json
import secrets
import sys
import time
from pathlib import Path

import pytest
from fakes.sshd import LoopbackSSHD, keygen, sshd_available
from fakes.vast_server import VastFake

pytest.importorskip("vastai", reason="the vastai SDK (jitplan[vast]) is not installed")

KEY = "SENTINEL-e2e-" + secrets.token_hex(12)  # drawn at run time: the uploaded sources do not hold it


def _tiny_plan(path: Path) -> Path:
    from jitmodel.config import TrainConfig
    from jitplan.hardware.spec import hardware_from_flags
    from jitplan.planner.plan import make_plan
    from jitplan.schemas import PlanOptions, load_recipe, save_plan

    train = {"model": {"variant": "JiT-Tiny/4", "img_size": 16, "in_channels": 1, "num_classes": 10},
             "data": {"kind": "digits", "num_workers": 0, "persistent_workers": False, "prefetch_factor": None},
             "batch_per_gpu": 16, "max_steps": 5000, "optim": {"warmup_epochs": 0},
             "checkpoint": {"every_steps": 2}, "log_every": 1, "device": "cpu"}
    plan = make_plan(hardware_from_flags("1xRTX3060", host_ram="24GB"), load_recipe("JiT-B/16"), PlanOptions())
    save_plan(plan.model_copy(update={"train": TrainConfig.model_validate(train)}), path)
    return path


def _wait_for(cond, timeout_s: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.net
@pytest.mark.slow
@pytest.mark.skipif(not sshd_available(), reason="needs /usr/sbin/sshd, rsync and root (CI installs openssh-server)")
def test_launch_vast_end_to_end(cli, tmp_path: Path, monkeypatch) -> None:
    from jitplan.runs.registry import Registry

    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VAST_API_KEY", KEY)
    monkeypatch.setenv("JITPLAN_VAST_POLL_S", "0.05")
    monkeypatch.chdir(tmp_path)
    plan = _tiny_plan(tmp_path / "plan.yaml")
    identity = keygen(tmp_path / "id_ed25519")
    root = tmp_path / "remote"
    with LoopbackSSHD(tmp_path / "sshd") as sshd, \
            VastFake(KEY, ssh_port=sshd.port, authorized_keys=sshd.authorized_keys) as fake:
        fake.add_offer(3001, num_gpus=1, dph_base=0.12, gpu_ram=12288)
        fake.add_offer(3002, num_gpus=1, dph_base=0.10, gpu_ram=12288)
        fake.faults.offer_gone.add(3002)  # the cheapest offer is taken between search and create
        monkeypatch.setenv("VAST_URL", fake.url)
        r = cli("launch", str(plan), "--vast", "--yes", "--identity", str(identity), "--remote-dir", str(root),
                "--remote-python", sys.executable, "--no-doctor", "--detach", "--run-dir", str(tmp_path / "staged"),
                "--json")
        assert r.code == 0, r.err
        res = json.loads(r.out)
        rid = res["run_id"]
        outputs = r.out + r.err
        # the launcher ends with the instance, its $/h and the exact command that stops it
        assert res["stop_command"] == f"jitplan stop {rid} --destroy --yes" and res["dph"] > 0
        assert f"keeps billing {res['dph']:.3f} $/h until you stop it:\n  jitplan stop {rid} --destroy --yes" in r.err

        # rented the next offer, attached the key that sshd now accepts, uploaded, started
        assert [c.path for c in fake.creates()] == ["/api/v0/asks/3002/", "/api/v0/asks/3001/"]
        (iid,) = [i["id"] for i in fake.live()]
        assert sshd.authorized_keys.read_text().strip() == identity.with_suffix(".pub").read_text().strip()
        assert (root / "code" / "jitmodel" / "train.py").is_file()
        reg = Registry()
        (inst,) = reg.cloud.instances(run_id=rid)
        assert (inst.instance_id, inst.status, inst.ssh_port) == (str(iid), "training", sshd.port)
        run = reg.get_run(rid)
        assert run.backend == "vast" and run.status == "running"
        log = Path(run.log_path)
        assert _wait_for(lambda: log.exists() and "step 2" in log.read_text()), log.read_text()[-2000:]

        r = cli("runs", "--json")
        assert r.code == 0
        outputs += r.out + r.err
        assert [v["row"]["instance_id"] for v in json.loads(r.out)["instances"]] == [str(iid)]
        r = cli("logs", rid, "--tail", "3")
        assert r.code == 0 and "step" in r.out, r.err
        outputs += r.out + r.err

        r = cli("stop", rid, "--destroy", "--yes")
        assert r.code == 0, r.err
        outputs += r.out + r.err
        assert fake.live() == [] and [d.path for d in fake.deletes()] == [f"/api/v0/instances/{iid}/"]
        assert all(x.auth == "ok" for x in fake.log)
    assert reg.cloud.instances() == [] and reg.get_run(rid).status == "stopped"
    assert _wait_for(lambda: "SIGTERM" in log.read_text(), 60), log.read_text()[-2000:]

    # the sentinel key: nowhere in output, the registry, the plan, the staged or remote run files, sshd's log
    assert KEY not in outputs
    for p in [*tmp_path.rglob("*")]:
        if p.is_file() and p.stat().st_size < 50_000_000:
            assert KEY.encode() not in p.read_bytes(), p


@pytest.mark.net
def test_launch_vast_without_yes_and_without_a_terminal_is_refused(cli, tmp_path: Path, monkeypatch) -> None:
    from fakes.plans import make_plan

    from jitplan.runs.registry import Registry
    from jitplan.schemas import save_plan

    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VAST_API_KEY", KEY)
    monkeypatch.chdir(tmp_path)
    plan = tmp_path / "plan.yaml"
    save_plan(make_plan("RTX 3060", 2), plan)
    identity = keygen(tmp_path / "id_ed25519") if sshd_available() else None
    if identity is None:
        identity = tmp_path / "id_ed25519"
        identity.write_text("x")
        identity.with_suffix(".pub").write_text("ssh-ed25519 AAAAx test")
    with VastFake(KEY) as fake:
        monkeypatch.setenv("VAST_URL", fake.url)
        fake.add_offer(2001, num_gpus=2)
        r = cli("launch", str(plan), "--vast", "--identity", str(identity))
        assert r.code == 2 and "pass --yes" in r.err and "Traceback" not in r.err
        assert fake.log == []  # refused before any request
    (run,) = Registry().list_runs()
    assert run.backend == "vast" and run.status == "failed"
    assert KEY not in r.out + r.err
