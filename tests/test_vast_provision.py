"""Provisioning on Vast.ai through the REAL vastai SDK against the stateful loopback fake.

Every fault knob of ../shared/reference/vast.md §5.3 ends with no orphan instance, no duplicate create and
a clear message; the fake's request log is asserted.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fakes.plans import make_plan
from fakes.vast_server import BannerServer, VastFake, free_port
from pydantic import SecretStr

from jitplan.cloud.lifecycle import Lifecycle
from jitplan.cloud.provision import Hooks, ProvisionRequest, provision, render_onstart
from jitplan.errors import CheckFailed, UsageError
from jitplan.providers import AuthError, CleanupFailed
from jitplan.providers.vast import VastProvider
from jitplan.providers.vast.client import VastClient
from jitplan.runs.registry import Registry

pytest.importorskip("vastai", reason="the vastai SDK (jitplan[vast]) is not installed")

pytestmark = pytest.mark.net

KEY = "SENTINEL-vastkey-4f1e2d3c4b5a69788796"
PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFake jitplan-test"


@pytest.fixture
def env(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "jp"))
    monkeypatch.setenv("VAST_API_KEY", KEY)
    keydir = tmp_path / "keys"
    keydir.mkdir()
    (keydir / "id_ed25519").write_text("not a real private key\n")
    (keydir / "id_ed25519.pub").write_text(PUBKEY + "\n")
    return keydir / "id_ed25519"


@pytest.fixture
def banner():
    with BannerServer() as b:
        yield b


@pytest.fixture
def fake(banner):
    with VastFake(KEY, ssh_port=banner.port) as f:
        # Three 2x RTX 3060 offers: 2001 cheapest, then 2002, then 2003; one 4090 pair (not the plan's GPU).
        f.add_offer(2001, num_gpus=2, dph_base=0.20, machine_id=1)
        f.add_offer(2002, num_gpus=2, dph_base=0.24, machine_id=2)
        f.add_offer(2003, num_gpus=2, dph_base=0.30, machine_id=3)
        f.add_offer(2004, num_gpus=2, dph_base=0.50, machine_id=4, gpu_name="RTX 4090", gpu_ram=24564,
                    compute_cap=890)
        yield f


@pytest.fixture
def reg(env) -> Registry:
    return Registry()


def _provider(fake: VastFake, http_timeout_s: float = 5.0, client: VastClient | None = None) -> VastProvider:
    client = client or VastClient(SecretStr(KEY), server_url=fake.url, timeout_s=http_timeout_s)
    return VastProvider(client, poll_s=0.01, sleep=lambda s: time.sleep(min(s, 0.01)))


def _run(fake: VastFake, reg: Registry, identity: Path, *, timeout_s: float = 1.0, **kw):
    rid = kw.pop("run_id", None) or reg.create_run("JiT-B-16", "vast", plan_path="plan.yaml", run_dir="runs/x")
    provider = kw.pop("provider", None) or _provider(fake, kw.pop("http_timeout_s", 5.0), kw.pop("client", None))
    said: list[str] = []
    say = kw.pop("say", said.append)
    confirm = kw.pop("confirm", None)
    shown = kw.pop("show_offers", lambda ranked, top, title: None)
    kw.setdefault("yes", True)
    req = ProvisionRequest(plan=kw.pop("plan", None) or make_plan("RTX 3060", 2), run_id=rid, identity=str(identity),
                           ready_timeout_s=timeout_s, **kw)
    res = provision(provider, req, Hooks(say=say, confirm=confirm, show_offers=shown), registry=reg)
    return rid, res, said


def _live_ids(fake: VastFake) -> list[int]:
    return [i["id"] for i in fake.live()]


def test_happy_path(fake: VastFake, reg: Registry, env: Path, banner: BannerServer, capsys) -> None:
    rid, res, said = _run(fake, reg, env)
    # search: the plan's GPU, count, CUDA with compute capability, RAM, disk, reliability, bandwidth
    (search,) = fake.requests("POST", "/api/v0/bundles/")
    q = search.body
    assert "RTX 3060" in q["gpu_name"]["in"] and q["num_gpus"] == {"eq": 2}
    assert q["cuda_max_good"]["gte"] >= 12.4 and q["compute_cap"] == {"gte": 860}
    assert q["cpu_ram"]["gte"] >= 20 * 1024**3 / 1e6 and q["disk_space"]["gte"] >= 100
    assert q["reliability"]["gte"] == 0.98 and q["inet_down"]["gte"] == 200
    assert q["type"] == "on-demand" and q["allocated_storage"] == q["disk_space"]["gte"]
    # one create, for the cheapest epoch, with a unique label, the image, onstart and env
    (create,) = fake.creates()
    assert create.path == "/api/v0/asks/2001/"
    body = create.body
    assert body["label"] == f"jitplan-{rid}-1"
    assert body["image"].startswith("pytorch/pytorch:") and "-cuda12" in body["image"]
    assert body["price"] is None and body["runtype"] == "ssh_direc ssh_proxy"
    assert body["env"]["JITPLAN_RUN_ID"] == rid and body["env"]["JITPLAN_SSH_PUBKEY"] == PUBKEY
    assert "/etc/environment" in body["onstart"] and rid in body["onstart"]
    assert KEY not in str(body)
    # key attached, ready = running and the SSH banner answered
    assert fake.ssh_keys[res.instance_id] == [PUBKEY]
    assert banner.connections >= 1
    assert (res.ssh.host, res.ssh.port, res.ssh.user) == ("127.0.0.1", banner.port, "root")
    assert res.ssh.identity == str(env) and res.offer.id == 2001
    assert fake.deletes() == [] and _live_ids(fake) == [res.instance_id]
    assert all(r.auth == "ok" for r in fake.log)
    # registry: the instance, running, with its endpoint and price; the run knows its host
    (inst,) = reg.cloud.instances(run_id=rid)
    assert (inst.instance_id, inst.status, inst.ssh_port) == (str(res.instance_id), "running", banner.port)
    assert inst.dph == pytest.approx(res.dph)
    assert reg.get_run(rid).meta.instance_id == res.instance_id
    assert any("ready" in e.message for e in reg.events(rid))
    out = capsys.readouterr()
    assert KEY not in out.out + out.err + " ".join(said)


def test_the_offers_are_shown_before_anything_is_rented(fake: VastFake, reg: Registry, env: Path) -> None:
    shown: list = []

    def show(ranked, top, title):
        shown.append(([r.offer.id for r in ranked], top, title, len(fake.creates())))

    _run(fake, reg, env, show_offers=show, top=2)
    assert shown == [([2001, 2002, 2003], 2, "Vast.ai", 0)]  # the plan's GPU only, cheapest epoch first


def test_ranking_uses_cost_per_epoch_not_dph(fake: VastFake, reg: Registry, env: Path) -> None:
    fake.faults.offer_gone.update({2001, 2002, 2003})  # only the 4090 pair (any-gpu) can be rented
    _, res, _ = _run(fake, reg, env, any_gpu=True, max_offers=4)
    assert res.offer.gpu_name == "RTX 4090"
    # with any-gpu, the faster 4090 pair (0.50 $/h) was ranked first: fewer $ per epoch than 0.20 $/h 3060s
    assert [c.path for c in fake.creates()][0] == "/api/v0/asks/2004/"


@pytest.mark.parametrize("knob", ["offer_gone", "offer_gone_410"])
def test_offer_gone_tries_next(fake: VastFake, reg: Registry, env: Path, knob: str) -> None:
    getattr(fake.faults, knob).add(2001)
    rid, res, said = _run(fake, reg, env)
    assert [c.path for c in fake.creates()] == ["/api/v0/asks/2001/", "/api/v0/asks/2002/"]
    assert [c.body["label"] for c in fake.creates()] == [f"jitplan-{rid}-1", f"jitplan-{rid}-2"]
    assert res.offer.id == 2002 and _live_ids(fake) == [res.instance_id]
    assert fake.deletes() == []
    assert any("no longer available" in s for s in said)


def test_create_error_with_new_contract_is_destroyed(fake: VastFake, reg: Registry, env: Path) -> None:
    fake.faults.create_error_with_contract.add(2001)
    rid, res, said = _run(fake, reg, env)
    orphan = fake.creates()[0]
    assert orphan.status == 400
    (delete,) = fake.deletes()
    orphan_id = int(delete.path.rstrip("/").rsplit("/", 1)[1])
    assert orphan_id in fake.destroyed and orphan_id != res.instance_id
    assert _live_ids(fake) == [res.instance_id]
    statuses = {i.instance_id: i.status for i in reg.cloud.instances(active_only=False, run_id=rid)}
    assert statuses == {str(orphan_id): "destroyed", str(res.instance_id): "running"}
    assert any("made instance" in s for s in said)


def test_create_timeout_is_reconciled_by_label_never_resent(fake: VastFake, reg: Registry, env: Path) -> None:
    fake.faults.create_hang_s[2001] = 1.5  # the instance exists; the answer comes after the client gave up
    rid, res, said = _run(fake, reg, env, http_timeout_s=0.4)
    assert len(fake.creates()) == 1  # never a second PUT /asks (the SDK's own retry is off for creates)
    lists = fake.requests("GET", "/api/v1/instances/")
    assert lists and lists[0].query["select_filters"] == {"label": {"eq": f"jitplan-{rid}-1"}}
    assert res.offer.id == 2001 and _live_ids(fake) == [res.instance_id]
    assert any("no second create" in s for s in said)
    assert fake.ssh_keys[res.instance_id] == [PUBKEY]  # found by label, and its key attached
    (inst,) = reg.cloud.instances(run_id=rid)
    assert (inst.label, inst.dph) == (f"jitplan-{rid}-1", fake.live()[0]["dph_total"])  # its real label and price


def test_stuck_loading_times_out_destroys_and_moves_on(fake: VastFake, reg: Registry, env: Path) -> None:
    fake.faults.loading_ticks[2001] = None  # loading forever
    rid, res, said = _run(fake, reg, env, timeout_s=0.3)
    first = fake.creates()[0]
    assert first.path == "/api/v0/asks/2001/"
    assert len(fake.deletes()) == 1 and res.offer.id == 2002
    assert _live_ids(fake) == [res.instance_id]
    assert any("not ready after" in s for s in said)


def test_stuck_loading_last_offer_fails_cleanly(fake: VastFake, reg: Registry, env: Path) -> None:
    for o in (2001, 2002):
        fake.faults.loading_ticks[o] = None
    with pytest.raises(CheckFailed, match=r"no Vast.ai instance became ready after 2 attempt\(s\)"):
        _run(fake, reg, env, timeout_s=0.2, max_offers=2)
    assert len(fake.creates()) == 2 and len(fake.deletes()) == 2 and fake.live() == []
    (run,) = reg.list_runs()
    assert run.status == "failed" and run.ended_at is not None


@pytest.mark.parametrize(
    ("knob", "message"),
    [("oci_error", "OCI runtime create failed"), ("exited", "exited"), ("lost", "unknown"), ("outbid", "outbid")],
)
def test_terminal_states_fail_fast(fake: VastFake, reg: Registry, env: Path, knob: str, message: str) -> None:
    getattr(fake.faults, knob).add(2001)
    rid, res, said = _run(fake, reg, env, timeout_s=30.0)  # fail fast: never waits out the deadline
    reads_of_first = [r for r in fake.requests("GET") if r.path.startswith("/api/v0/instances/31337001")]
    assert len(reads_of_first) <= 6
    assert [d.path for d in fake.deletes()] == ["/api/v0/instances/31337001/"]
    assert res.offer.id == 2002 and _live_ids(fake) == [res.instance_id]
    assert any(message in s for s in said)
    assert any(e.kind == "provision-failed" and message in e.message for e in reg.events(rid))


def test_outbid_interruptible(fake: VastFake, reg: Registry, env: Path) -> None:
    fake.faults.outbid.add(2001)
    rid, res, said = _run(fake, reg, env, bid=0.15)
    assert fake.requests("POST", "/api/v0/bundles/")[0].body["type"] == "bid"
    assert [c.body["price"] for c in fake.creates()] == [0.15, 0.15]
    assert len(fake.deletes()) == 1 and _live_ids(fake) == [res.instance_id]
    assert res.dph == pytest.approx(0.15 + res.offer.storage_per_hour)


def test_bid_below_every_floor_finds_nothing(fake: VastFake, reg: Registry, env: Path) -> None:
    with pytest.raises(CheckFailed, match="no Vast.ai offer satisfies the plan"):
        _run(fake, reg, env, bid=0.01)  # min_bid of every offer is 0.08
    assert fake.creates() == []


def test_proxy_only_uses_ssh_host_port(fake: VastFake, reg: Registry, env: Path, banner: BannerServer) -> None:
    fake.faults.proxy_only.add(2001)
    _, res, _ = _run(fake, reg, env)
    assert res.offer.id == 2001 and res.ssh.port == banner.port
    assert fake.live()[0]["ports"].get("22/tcp") is None


def test_ssh_never_answers_is_not_ready(env: Path, reg: Registry) -> None:
    with VastFake(KEY, ssh_port=free_port()) as f:
        f.add_offer(2001, num_gpus=2)
        with pytest.raises(CheckFailed, match="SSH did not answer"):
            _run(f, reg, env, timeout_s=0.3, max_offers=1)
        assert len(f.deletes()) == 1 and f.live() == []


def test_rate_limit_and_503_are_retried_reads(fake: VastFake, reg: Registry, env: Path) -> None:
    fake.faults.rate_limit_next = 2
    _, res, _ = _run(fake, reg, env)
    assert [r.status for r in fake.log[:3]] == [429, 429, 200]  # the SDK retried the search itself
    fake.faults.unavailable_next = 1
    rid2 = reg.create_run("again", "vast")
    _, res2, _ = _run(fake, reg, env, run_id=rid2)
    assert len(fake.live()) == 2 and len(fake.creates()) == 2


def test_bad_key_is_usage_error_without_the_key(fake: VastFake, reg: Registry, env: Path) -> None:
    fake.faults.bad_key = True
    with pytest.raises(AuthError) as e:
        _run(fake, reg, env)
    assert e.value.exit_code == 2 and "refused the API key" in e.value.message
    assert "list instances" not in e.value.message and "search" not in e.value.message
    assert KEY not in e.value.message and fake.creates() == []


def test_failed_cleanup_stops_loudly(fake: VastFake, reg: Registry, env: Path) -> None:
    fake.faults.oci_error.add(2001)
    fake.faults.destroy_fails.add(31337001)
    with pytest.raises(CleanupFailed, match="may still be billing") as e:
        rid, _, _ = _run(fake, reg, env)
    assert "stop" in (e.value.hint or "")
    assert len(fake.creates()) == 1  # no other offer tried after a failed cleanup
    assert len(fake.deletes()) > 3  # retried through the destroy deadline (minutes of backoff), not three tries
    assert "min" in e.value.message and "tries" in e.value.message
    assert _live_ids(fake) == [31337001]
    (row,) = reg.cloud.instances()  # still listed as live: `jitplan runs` shows it and its cost
    assert row.instance_id == "31337001" and row.status == "destroying"  # the true state: asked, not gone


def test_ctrl_c_while_loading_destroys(fake: VastFake, reg: Registry, env: Path) -> None:
    fake.faults.loading_ticks[2001] = None

    def say(msg: str) -> None:
        if "loading" in msg:
            raise KeyboardInterrupt

    rid = reg.create_run("x", "vast")
    with pytest.raises(KeyboardInterrupt):
        _run(fake, reg, env, say=say, run_id=rid)
    assert len(fake.creates()) == 1 and len(fake.deletes()) == 1 and fake.live() == []
    assert [i.status for i in reg.cloud.instances(active_only=False, run_id=rid)] == ["destroyed"]
    assert any(e.kind == "interrupted" for e in reg.events(rid))
    assert reg.get_run(rid).status == "interrupted"


def test_ctrl_c_during_create_finds_the_instance_by_label(fake: VastFake, reg: Registry, env: Path) -> None:
    client = VastClient(SecretStr(KEY), server_url=fake.url, timeout_s=5)
    real_create = client.create

    def create_then_interrupt(spec):
        real_create(spec)  # the instance exists, but Ctrl-C lands before we learn its id
        raise KeyboardInterrupt

    client.create = create_then_interrupt  # type: ignore[method-assign]
    rid = reg.create_run("x", "vast")
    with pytest.raises(KeyboardInterrupt):
        _run(fake, reg, env, client=client, run_id=rid, say=lambda m: None)
    assert len(fake.creates()) == 1 and fake.live() == [] and len(fake.deletes()) == 1


def test_cuda_too_old_offers_are_filtered(env: Path, reg: Registry, banner: BannerServer) -> None:
    with VastFake(KEY, ssh_port=banner.port) as f:
        f.add_offer(2001, num_gpus=2, cuda_max_good=12.2)
        with pytest.raises(CheckFailed, match=r"CUDA >= 12\.\d"):
            _run(f, reg, env)
        assert f.creates() == []


def test_non_interactive_without_yes_is_refused_before_any_request(fake: VastFake, reg: Registry, env) -> None:
    with pytest.raises(UsageError, match="pass --yes"):
        _run(fake, reg, env, yes=False)
    assert fake.log == []


def test_declined_confirmation_rents_nothing(fake: VastFake, reg: Registry, env: Path) -> None:
    asked: list[str] = []
    with pytest.raises(CheckFailed, match="not confirmed"):
        _run(fake, reg, env, yes=False, confirm=lambda q: asked.append(q) or False)
    assert "2001" in asked[0] and fake.creates() == []


def test_attach_to_existing_instance(fake: VastFake, reg: Registry, env: Path, banner: BannerServer) -> None:
    client = VastClient(SecretStr(KEY), server_url=fake.url, timeout_s=5)
    from jitplan.providers import CreateSpec

    iid = client.create(CreateSpec(offer_id=2003, image="img", disk_gb=50, label="mine"))
    n_creates = len(fake.creates())
    rid, res, _ = _run(fake, reg, env, instance_id=iid, yes=False)  # attaching rents nothing: no prompt
    assert res.instance_id == iid and res.offer is None and res.ssh.port == banner.port
    assert len(fake.creates()) == n_creates and fake.requests("POST", "/api/v0/bundles/") == []
    assert reg.cloud.instances(run_id=rid)[0].status == "running"


def test_attach_failure_leaves_foreign_instance(fake: VastFake, reg: Registry, env: Path) -> None:
    client = VastClient(SecretStr(KEY), server_url=fake.url, timeout_s=5)
    from jitplan.providers import CreateSpec

    fake.faults.exited.add(2003)
    iid = client.create(CreateSpec(offer_id=2003, image="img", disk_gb=50, label="mine"))
    with pytest.raises(CheckFailed, match="left as it is"):
        _run(fake, reg, env, instance_id=iid)
    assert fake.deletes() == [] and _live_ids(fake) == [iid]
    with pytest.raises(UsageError, match="no Vast.ai instance 999"):
        _run(fake, reg, env, instance_id=999)


def test_destroy_by_run(fake: VastFake, reg: Registry, env: Path) -> None:
    rid, res, _ = _run(fake, reg, env)
    said: list[str] = []
    lc = Lifecycle(reg, _provider(fake), rid, say=said.append)
    assert lc.destroy_all("test") == [res.instance_id]
    assert fake.live() == [] and reg.cloud.instances() == []
    assert "cost so far" in said[0]
    assert lc.destroy_all("test") == []  # nothing left
    kinds = [e.kind for e in reg.events(rid)]
    assert kinds.index("destroying") < len(kinds) - 1  # written before the call, then the outcome


def test_sentinel_key_appears_nowhere(fake: VastFake, reg: Registry, env: Path, capsys, tmp_path: Path) -> None:
    fake.faults.create_error_with_contract.add(2001)
    rid, res, said = _run(fake, reg, env)
    out = capsys.readouterr()
    assert KEY not in out.out and KEY not in out.err and KEY not in "\n".join(said)
    for p in reg.path.parent.iterdir():
        assert KEY.encode() not in p.read_bytes(), p
    for r in fake.log:  # the key only ever travels in the Authorization header, which is not stored
        assert KEY not in str(r.query) + str(r.body)
    assert KEY not in render_onstart(rid)


def test_v0_list_is_gone_like_the_real_api(fake: VastFake) -> None:
    import requests

    r = requests.get(f"{fake.url}/api/v0/instances/", headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
    assert r.status_code == 410 and r.json()["error"] == "deprecated_endpoint"


def test_unexpected_error_after_create_still_destroys(fake: VastFake, reg: Registry, env: Path) -> None:
    client = VastClient(SecretStr(KEY), server_url=fake.url, timeout_s=5)

    def boom(iid, key):
        raise RuntimeError("something nobody planned for")

    client.attach_ssh = boom  # type: ignore[method-assign]
    rid = reg.create_run("x", "vast")
    said: list[str] = []
    with pytest.raises(RuntimeError, match="nobody planned"):
        _run(fake, reg, env, client=client, run_id=rid, say=said.append)
    assert len(fake.creates()) == 1 and len(fake.deletes()) == 1 and fake.live() == []
    assert any("RuntimeError" in e.message for e in reg.events(rid, kind="interrupted"))
