"""Pure parts of the Vast provider: query from a plan, image choice, ranking, SDK-row translation, lifecycle
decisions (with scripted clients, no network), and the SSH banner probe."""

from __future__ import annotations

import math

import pytest
from fakes.plans import make_plan
from fakes.vast_server import BannerServer, VastFake, free_port, sample_offer

from jitplan.errors import UsageError
from jitplan.providers import Instance, InstanceFailed, LookupUnanswered, RateLimited, ReadyTimeout, Transient
from jitplan.providers.ranking import epoch_time_s, rank
from jitplan.providers.vast.client import first_line
from jitplan.providers.vast.instance import find_label, ssh_banner, wait_ready
from jitplan.providers.vast.offers import disk_gb, image_cuda, image_for, query_for
from jitplan.providers.vast.rows import build_search, read_state, to_instance, to_offer


# ------------------------------------------------------------------------------------------- image
@pytest.mark.parametrize(
    ("torch", "cuda", "cc", "image"),
    [
        ("2.4.1", None, "8.6", "pytorch/pytorch:2.4.1-cuda12.4-cudnn9-runtime"),
        ("2.8.0+cu128", "12.8", "8.6", "pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime"),
        ("2.5", None, "8.9", "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime"),
        ("2.5.1", None, "12.0", "pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime"),  # Blackwell: CUDA >= 12.8
        ("2.13.0", "13.0", "9.0", "pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime"),  # newer than the table
        (None, None, None, "pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime"),
    ],
)
def test_image_for(torch, cuda, cc, image) -> None:
    got, c = image_for(torch, cuda, cc)
    assert got == image and c == image_cuda(got)


def test_image_cuda() -> None:
    assert image_cuda("vastai/pytorch:2.7.1-cuda-12.8.1-py312") == 12.8
    assert image_cuda("ubuntu:22.04") is None


# ------------------------------------------------------------------------------------------- query
def test_query_from_hand_plan() -> None:
    plan = make_plan("RTX 3060", 2, host_ram_gib=20, workers=4)
    q, image = query_for(plan)
    assert "RTX 3060" in q.gpu_names and q.num_gpus == 2
    assert q.min_gpu_ram_mib == int(12288 * 0.97)
    assert q.min_cpu_ram_mb == math.ceil(20 * 1024**3 / 1e6)
    assert q.min_cpus == 2 * (4 + 1)
    assert q.min_compute_cap == 860 and q.min_cuda == image_cuda(image)
    # ImageNet (~141 GB of JPEG) + image + checkpoints kept, with headroom
    ckpts = plan.estimates.checkpoint_bytes * (2 + 1 + 6) / 1e9
    assert q.min_disk_gb == math.ceil((20 + 1_281_167 * 110_000 / 1e9 + ckpts) * 1.15)
    assert disk_gb(plan) == q.min_disk_gb
    assert not q.interruptible and q.bid is None
    qb, _ = query_for(plan, bid=0.2)
    assert qb.interruptible and qb.bid == 0.2


@pytest.mark.slow
def test_query_from_a_real_planner_plan(cli, tmp_path) -> None:
    from jitplan.schemas import load_plan

    out = tmp_path / "plan.yaml"
    r = cli("plan", "--gpus", "2xRTX3060", "--host-ram", "24GB", "--cpus", "8", "--out", str(out))
    assert r.code == 0, r.err  # a planner regression fails here instead of skipping
    plan = load_plan(out)
    q, image = query_for(plan)
    assert q.num_gpus == 2 and "RTX 3060" in q.gpu_names and q.min_cpus == 8
    assert q.min_cpu_ram_mb == math.ceil(plan.estimates.host_ram_needed_bytes / 1e6)
    assert image.startswith("pytorch/pytorch:")
    qa, _ = query_for(plan, any_gpu=True)
    assert qa.gpu_names is None and qa.min_gpu_ram_mib == int(plan.estimates.memory_per_gpu_bytes / 2**20)


def test_query_refuses_multinode_and_cpu_plans() -> None:
    with pytest.raises(UsageError, match="2 nodes"):
        query_for(make_plan("RTX 3060", 2, nodes=2))
    plan = make_plan("RTX 3060", 1)
    cpu = plan.model_copy(update={"hardware": plan.hardware.model_copy(update={"gpu": None, "gpus_per_node": 0})})
    with pytest.raises(UsageError, match="CPU-only"):
        query_for(cpu)
    with pytest.raises(UsageError, match="CUDA version of image"):
        query_for(plan, image="myorg/trainer:latest")


def test_build_search_units_and_shape() -> None:
    q, _ = query_for(make_plan("H100 SXM", 8))
    body = build_search(q, disk_gb=500)
    assert body["num_gpus"] == {"eq": 8} and body["disk_space"] == {"gte": 500}
    assert body["cuda_max_good"]["gte"] == q.min_cuda and body["compute_cap"] == {"gte": 900}  # sent together
    assert "H100 SXM" in body["gpu_name"]["in"]
    assert body["cpu_ram"] == {"gte": q.min_cpu_ram_mb}  # MB, as the data (the query language's GB x 1000)


# ------------------------------------------------------------------------------------------- ranking
def _offer(i: int, **kw):
    row = sample_offer(i, **kw)
    row["storage_total_cost"] = 0.01
    row["dph_total"] = row["dph_base"] + 0.01
    return to_offer(row)


def test_rank_by_cost_per_epoch_not_price() -> None:
    plan = make_plan("RTX 3060", 2)
    q, _ = query_for(plan, any_gpu=True)
    cheap_slow = _offer(1, num_gpus=2, dph_base=0.20)
    dear_fast = _offer(2, num_gpus=2, dph_base=0.55, gpu_name="RTX 4090", gpu_ram=24564)
    unknown = _offer(3, num_gpus=2, dph_base=0.05, gpu_name="Quadro Mystery", gpu_ram=49152)
    ranked = rank(plan, [cheap_slow, unknown, dear_fast], q)
    assert [r.offer.id for r in ranked] == [2, 1, 3]
    a, b = ranked[0], ranked[1]
    assert a.cost_per_epoch < b.cost_per_epoch and a.dph > b.dph
    # the epoch at the offer's price, plus the dataset's staging at its download speed spread over the run
    assert a.dph * a.epoch_time_s / 3600 < a.cost_per_epoch < 1.05 * a.dph * a.epoch_time_s / 3600
    assert ranked[2].cost_per_epoch is None and "not in the GPU catalog" in ranked[2].why
    # same GPUs: cost per epoch follows price
    r2 = rank(plan, [_offer(5, num_gpus=2, dph_base=0.3), _offer(6, num_gpus=2, dph_base=0.25)], q)
    assert [r.offer.id for r in r2] == [6, 5]
    assert r2[0].epoch_time_s == pytest.approx(r2[1].epoch_time_s)


def test_rank_uses_the_planners_estimate_on_each_offers_gpus() -> None:
    """On the plan's own GPUs the ranking's epoch time is the plan's: the planner is called, not re-derived."""
    from jitplan.hardware.catalog import match_nvml_name
    from jitplan.hardware.spec import hardware_from_flags
    from jitplan.planner.plan import make_plan as plan_for
    from jitplan.schemas import PlanOptions, load_recipe

    plan = plan_for(hardware_from_flags("2xRTX3060", host_ram="64GB", cpus=16), load_recipe("JiT-B/16"), PlanOptions())
    gpu = match_nvml_name("RTX 3060", 12288 * 2**20)
    assert epoch_time_s(plan, gpu, 2) == pytest.approx(plan.estimates.epoch_time_s, rel=1e-9)
    from jitplan.planner.step import plan_offer
    from jitplan.providers.ranking import offer_fields

    o = _offer(1, num_gpus=2)
    (r,) = rank(plan, [o], query_for(plan)[0])
    assert r.epoch_time_s == pytest.approx(plan_offer(plan, 2, offer_fields(o, r.dph)).epoch_s, rel=1e-9)
    bare = o.model_copy(update={"pcie_bandwidth_gbps": None, "pcie_lanes": None, "pcie_gen": None,
                                "disk_bandwidth_mbps": None, "download_mbps": None})
    (rb,) = rank(plan, [bare], query_for(plan)[0])  # nothing published beyond the plan's own host: the plan's time
    assert rb.epoch_time_s == pytest.approx(plan.estimates.epoch_time_s, rel=1e-9)


def test_a_x4_link_and_a_x16_link_rank_apart() -> None:
    """Issue 20: the same two RTX 3060 at the same price, one on PCIe 3.0 x4 and one on 4.0 x16 (the offers'
    published pcie_bw / gpu_lanes / pci_gen): different epochs, the x16 offer first, the x4 one bound by its bus."""
    from jitplan.hardware.spec import hardware_from_flags
    from jitplan.planner.plan import make_plan as plan_for
    from jitplan.schemas import PlanOptions, load_recipe

    story = PlanOptions(policy="scale-lr", lr_scaling="linear", batch_per_gpu=16)  # the real run's
    plan = plan_for(hardware_from_flags("2xRTX3060", host_ram="24GB"), load_recipe("JiT-B/16"), story)
    q, _ = query_for(plan)
    x4 = _offer(1, num_gpus=2, dph_base=0.20, pcie_bw=3.2, gpu_lanes=4, pci_gen=3.0, cpu_cores_effective=32.0)
    x16 = _offer(2, num_gpus=2, dph_base=0.20, pcie_bw=24.3, gpu_lanes=16, pci_gen=4.0, cpu_cores_effective=32.0)
    ranked = rank(plan, [x4, x16], q)
    assert [r.offer.id for r in ranked] == [2, 1]
    slow, fast = ranked[1], ranked[0]
    assert slow.epoch_time_s > 1.2 * fast.epoch_time_s
    assert slow.binding is not None and "all-reduce" in slow.binding and "3.2 GB/s host<->GPU" in slow.binding
    assert slow.binding in slow.why and fast.binding is not None and "all-reduce" not in fast.binding
    from rich.console import Console

    from jitplan.providers.ranking import offers_table

    console = Console(width=200, record=True)
    console.print(offers_table(ranked, provider="Vast.ai"))
    assert "3.2 GB/s: all-reduce 0.32 s of 0.63 s" in console.export_text()


def test_rank_filters_what_the_server_cannot() -> None:
    plan = make_plan("RTX 3060", 2, host_ram_gib=20)
    q, _ = query_for(plan, bid=0.15)
    ok = _offer(1, num_gpus=2)
    # 64 GB host but only 4 of 32 vCPUs: the instance's RAM share is 8 GB < 21.5 GB needed
    small_share = _offer(2, num_gpus=2, cpu_cores=32, cpu_cores_effective=4.0)
    floor_too_high = _offer(3, num_gpus=2, min_bid=0.30)
    wrong_count = _offer(4, num_gpus=1)
    assert small_share.ram_gb == pytest.approx(64218 * 4 / 32 / 1000)
    ranked = rank(plan, [ok, small_share, floor_too_high, wrong_count], q)
    assert [r.offer.id for r in ranked] == [1]
    assert ranked[0].dph == pytest.approx(0.15 + ok.storage_per_hour)


# ------------------------------------------------------------------------------------------- translation
@pytest.mark.parametrize(
    ("row", "state"),
    [
        ({"actual_status": None}, "pending"),
        ({"actual_status": "loading", "status_msg": "Downloading [==>  ]"}, "pending"),
        ({"actual_status": "created"}, "pending"),
        ({"actual_status": "created", "status_msg": "Error response from daemon: OCI runtime create failed: x"},
         "failed"),
        ({"actual_status": "running"}, "running"),
        ({"actual_status": "exited"}, "failed"),
        ({"actual_status": "offline"}, "failed"),
        ({"actual_status": "unknown"}, "failed"),
        ({"actual_status": "loading", "cur_state": "stopped", "intended_status": "stopped",
          "next_state": "stopped"}, "stopped"),
        ({"actual_status": "running", "cur_state": "unloaded"}, "gone"),
    ],
)
def test_read_state(row, state) -> None:
    assert read_state(row) == state


def test_to_instance_strips_and_parses_ports() -> None:
    inst = to_instance({
        "id": 7, "label": "jitplan-x-1 ", "actual_status": "running", "public_ipaddr": "203.0.113.57\n",
        "ports": {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": "41022"}]}, "ssh_host": "ssh5.vast.ai",
        "ssh_port": 37000, "dph_total": "0.42", "status_msg": "token=abcdefghijk leaked",
    })
    assert inst.label == "jitplan-x-1" and inst.public_ip == "203.0.113.57" and inst.direct_ssh_port == 41022
    assert inst.ssh_endpoints() == [("203.0.113.57", 41022), ("ssh5.vast.ai", 37000)]
    assert inst.dph == 0.42 and "abcdefghijk" not in inst.status_msg
    proxy = to_instance({"id": 8, "actual_status": "running", "ssh_host": "ssh5.vast.ai", "ssh_port": 37001,
                         "ports": {"8080/tcp": [{"HostPort": "1"}]}})
    assert proxy.ssh_endpoints() == [("ssh5.vast.ai", 37001)]


# ------------------------------------------------------------------------------------------- lifecycle
class Scripted:
    """A client whose show() replays a list of instances (or exceptions)."""

    def __init__(self, script, listing=()):
        self.script, self.listing, self.shows, self.lists = list(script), list(listing), 0, 0

    def show(self, iid):
        self.shows += 1
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(item, Exception):
            raise item
        return item

    def list(self, label=None):
        self.lists += 1
        item = self.listing.pop(0) if len(self.listing) > 1 else self.listing[0]
        if isinstance(item, Exception):
            raise item
        return item

    def destroy(self, iid):
        pass


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def _inst(state, status=None, **kw):
    return Instance(id=1, state=state, actual_status=status, **kw)


def test_wait_ready_skips_429_and_needs_ssh() -> None:
    up = _inst("running", "running", ssh_host="h", ssh_port=22)
    c = Scripted([_inst("pending"), RateLimited("slow down"), _inst("pending", "loading"), up, up, up])
    answers = iter([None, None, "SSH-2.0-x"])  # sshd answers on the third try
    clock = Clock()
    inst, ep = wait_ready(c, 1, timeout_s=100, poll_s=5, probe=lambda h, p: next(answers), clock=clock,
                          sleep=clock.sleep)
    assert ep == ("h", 22) and inst.state == "running" and c.shows == 6 and clock.t == 25


def test_wait_ready_fails_fast_and_times_out() -> None:
    clock = Clock()
    c = Scripted([_inst("pending", "loading"), _inst("failed", "exited")])
    with pytest.raises(InstanceFailed, match="did not start: instance 1 \\[exited\\]"):
        wait_ready(c, 1, timeout_s=1000, poll_s=5, clock=clock, sleep=clock.sleep)
    assert clock.t == 5
    with pytest.raises(InstanceFailed, match="outbid"):
        wait_ready(Scripted([_inst("stopped", "stopped")]), 1, timeout_s=10, clock=clock, sleep=clock.sleep)
    with pytest.raises(InstanceFailed, match="vanished"):
        wait_ready(Scripted([_inst("gone")]), 1, timeout_s=10, clock=clock, sleep=clock.sleep)
    clock = Clock()
    with pytest.raises(ReadyTimeout, match="not ready after 60 s: instance 1 \\[loading\\]") as e:
        wait_ready(Scripted([_inst("pending", "loading")]), 1, timeout_s=60, poll_s=7, clock=clock, sleep=clock.sleep)
    assert clock.t == 60 and e.value.instance_ids == (1,)


def test_find_label_waits_for_the_lag_and_never_guesses() -> None:
    mine = Instance(id=5, state="pending", label="L")
    c = Scripted([mine], listing=[[], [mine]])  # Vast lags after a create: found on the second read
    assert find_label(c, "L", sleep=lambda s: None) == [mine] and c.lists == 2
    c = Scripted([mine], listing=[[]])
    assert find_label(c, "L", sleep=lambda s: None) == [] and c.lists == 3  # "none" only after three answers
    dup = Scripted([mine], listing=[[mine, Instance(id=6, state="pending", label="L")]])
    assert [x.id for x in find_label(dup, "L", sleep=lambda s: None)] == [5, 6]
    # 429 and 5xx are retried with backoff; an answer after them counts
    flaky = Scripted([mine], listing=[RateLimited("429"), Transient("HTTP 502"), [mine]])
    clock = Clock()
    assert find_label(flaky, "L", clock=clock, sleep=clock.sleep) == [mine] and clock.t == 3.0
    # never answered before the deadline: LookupUnanswered, not []
    clock = Clock()
    with pytest.raises(LookupUnanswered, match="could not look up label L .*HTTP 503"):
        find_label(Scripted([mine], listing=[Transient("HTTP 503")]), "L", deadline_s=60, clock=clock,
                   sleep=clock.sleep)
    assert clock.t <= 60


def test_wait_ready_survives_transient_5xx() -> None:
    """Three 502s (after the SDK's own retries) while a healthy instance starts: still ready, nothing destroyed."""
    up = _inst("running", "running", ssh_host="h", ssh_port=22)
    c = Scripted([_inst("pending"), Transient("HTTP 502"), Transient("HTTP 502"), Transient("HTTP 502"), up])
    clock = Clock()
    inst, ep = wait_ready(c, 1, timeout_s=100, poll_s=5, probe=lambda h, p: "SSH-2.0-x", clock=clock,
                          sleep=clock.sleep)
    assert ep == ("h", 22) and c.shows == 5
    clock = Clock()
    with pytest.raises(ReadyTimeout, match="never answered .*HTTP 502"):
        wait_ready(Scripted([Transient("HTTP 502")]), 1, timeout_s=20, poll_s=5, clock=clock, sleep=clock.sleep)


def test_first_line_of_an_error_page() -> None:
    html = "<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body><center><h1>504</h1></center></body>"
    assert first_line(html) == "504 Gateway Time-out"
    assert first_line("<html><body>\n\n<h1>Bad gateway</h1><p>nginx</p></body></html>") == "Bad gateway"
    assert first_line("\n  plain text\nsecond") == "plain text"


@pytest.mark.net
def test_ssh_banner_probe() -> None:
    with BannerServer() as b:
        assert ssh_banner("127.0.0.1", b.port).startswith("SSH-2.0-")
    assert ssh_banner("127.0.0.1", free_port(), timeout_s=0.5) is None
    with VastFake("k-123456") as f:  # an HTTP server is not sshd: it never sends a banner
        port = int(f.url.rsplit(":", 1)[1])
        assert ssh_banner("127.0.0.1", port, timeout_s=0.3) is None


# ------------------------------------------------------------------------------------------- the interface
class MemProvider:
    """An in-memory Provider (not Vast: its own query, no bid): provision() needs nothing beyond the interface."""

    name, title, bid_range, ready_timeout_s = "mem", "MemCloud", (1.0, 2.0), 5.0

    def __init__(self, offers):
        self.offers, self.live, self.calls, self.next_id = offers, {}, [], 100

    def offer_query(self, plan, *, bid, any_gpu, image):
        from jitplan.providers import OfferQuery

        return OfferQuery(num_gpus=plan.hardware.gpus_per_node, min_disk_gb=30), "mem-image"

    def find_label(self, label):
        self.calls.append(f"find {label}")
        return [i for i in self.list(label) if i.label == label]

    def authorize(self, instance_id, public_key):
        self.calls.append(f"authorize {instance_id}")

    def search(self, query):
        self.calls.append("search")
        return list(self.offers)

    def create(self, spec):
        from jitplan.providers import OfferUnavailable

        self.calls.append(f"create {spec.offer_id}")
        if spec.offer_id == 1:
            raise OfferUnavailable("offer 1 is no longer available")
        self.next_id += 1
        self.live[self.next_id] = spec.label
        return self.next_id

    def wait_ready(self, instance_id, *, timeout_s):
        self.calls.append(f"wait {instance_id}")
        return Instance(id=instance_id, state="running", ssh_host="10.1.2.3", ssh_port=2200)

    def ssh_info(self, instance):
        from jitplan.transport.target import SSHTarget

        return SSHTarget(host=instance.ssh_host, port=instance.ssh_port)

    def destroy(self, instance_id):
        self.live.pop(instance_id, None)

    def list(self, label=None):
        return [Instance(id=i, state="running", label=lb) for i, lb in self.live.items() if label in (None, lb)]


def test_provision_runs_on_any_provider(tmp_path) -> None:
    from fakes.vast_server import sample_offer

    from jitplan.cloud.provision import Hooks, ProvisionRequest, provision
    from jitplan.providers import Provider
    from jitplan.runs.registry import Registry

    keyfile = tmp_path / "k"
    keyfile.write_text("private")
    (tmp_path / "k.pub").write_text("ssh-ed25519 AAAAtest me")
    offers = [to_offer({**sample_offer(i, num_gpus=2, dph_base=0.1 * i), "dph_total": 0.1 * i}) for i in (1, 2)]
    mem = MemProvider(offers)
    assert isinstance(mem, Provider)
    reg = Registry(tmp_path / "runs.db")
    rid = reg.create_run("x", "vast")
    req = ProvisionRequest(plan=make_plan(), run_id=rid, identity=str(keyfile), yes=True)
    res = provision(mem, req, Hooks(say=lambda m: None), registry=reg)
    assert mem.calls == ["search", "create 1", f"find jitplan-{rid}-1", "create 2", "wait 101"]
    assert reg.cloud.instances(run_id=rid)[0].provider == "mem"
    assert [(i.label, i.open) for i in reg.cloud.intents(open_only=False, run_id=rid)] == [
        (f"jitplan-{rid}-1", False), (f"jitplan-{rid}-2", False)]
    assert (res.instance_id, res.ssh.host, res.ssh.port, res.ssh.identity) == (101, "10.1.2.3", 2200, str(keyfile))
    assert [i.status for i in reg.cloud.instances(run_id=rid)] == ["running"]


@pytest.mark.slow
def test_vast_provider_satisfies_the_interface() -> None:
    from pydantic import SecretStr

    from jitplan.providers import Provider
    from jitplan.providers.vast import VastProvider
    from jitplan.providers.vast.client import VastClient

    pytest.importorskip("vastai")
    p = VastProvider(VastClient(SecretStr("k-0123456789"), server_url="http://127.0.0.1:9"))
    assert isinstance(p, Provider) and p.name == "vast"


def test_offer_is_neutral_and_keeps_the_published_per_offer_figures() -> None:
    """The Offer speaks no provider's names; PCIe, cores, RAM share, disk and network speed and DLPerf survive."""
    from jitplan.providers import Offer

    vast_names = {"dph_total", "min_bid", "cuda_max_good", "storage_dph", "cpu_ram_mb", "inet_down_mbps",
                  "disk_space_gb", "pcie_bw", "disk_bw", "dlperf", "cpus"}
    assert not vast_names & set(Offer.model_fields)
    o = to_offer({**sample_offer(7, num_gpus=2), "dph_total": 0.41, "min_bid": 0.2})
    assert (o.price_per_hour, o.min_bid_per_hour, o.max_cuda) == (0.41, 0.2, 12.8)
    assert (o.pcie_bandwidth_gbps, o.pcie_gen, o.pcie_lanes) == (24.3, 4.0, 16)
    assert o.ram_gb == pytest.approx(64.218 * 16 / 32)
    assert (o.cpu_cores_effective, o.disk_bandwidth_mbps, o.download_mbps, o.upload_mbps, o.dl_perf) == \
        (16.0, 3120.5, 850.0, 600.0, 18.7)
    bare = to_offer({"id": 1, "gpu_name": "X", "num_gpus": 1})  # a row without them: None, never a guess
    assert (bare.pcie_bandwidth_gbps, bare.pcie_lanes, bare.disk_bandwidth_mbps, bare.dl_perf) == (None,) * 4
