"""``jitplan compare``: objective settings, budgets, metrics, plots, and one real run of two arms on the CPU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from jitplan import compare as core
from jitplan.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "jitplan" / "templates" / "compare" / "digits.yaml"


def _tiny_config(tmp_path: Path) -> Path:
    """The shipped digits study, shrunk: JiT-Tiny/4 at 16 px, batch 32."""
    raw = yaml.safe_load(TEMPLATE.read_text())
    raw["model"].update(variant="JiT-Tiny/4", img_size=16)
    raw["batch_per_gpu"] = 32
    raw["log_every"] = 1
    path = tmp_path / "digits_tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _folder_config(tmp_path: Path, per_class: int = 3) -> Path:
    """An image folder of two classes of 12 px pictures, JiT-Tiny/4 at 8 px, batch 2: no classifier to train."""
    from PIL import Image

    for c in ("cat", "dog"):
        (tmp_path / "data" / "train" / c).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (12, 12), (40 * i, 90 if c == "cat" else 10, 200)).save(
                tmp_path / "data" / "train" / c / f"{i}.png")
    raw = yaml.safe_load(TEMPLATE.read_text())
    raw["model"].update(variant="JiT-Tiny/4", img_size=8, num_classes=2)
    raw["data"].update(kind="imagefolder", path=str(tmp_path / "data"))
    raw.update(batch_per_gpu=2, log_every=1)
    cfg = tmp_path / "folder.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    return cfg


# ------------------------------------------------------------------------------------------- settings
def test_arms_parse_pairs_and_default_v_loss():
    arms = core.parse_arms(["eps:eps", "V:x"], "x")
    assert [(a.prediction, a.loss_space) for a in arms] == [("eps", "eps"), ("v", "x"), ("x", "v")]
    assert [a.slug for a in core.parse_arms(None, "x,v,eps")] == ["x-v", "v-v", "eps-v"]


@pytest.mark.parametrize("arms,objectives,fragment", [
    (["x:v", "y:v"], None, "unknown prediction 'y'"),
    (["x:q", "v"], None, "unknown loss space 'q'"),
    (["x"], None, "at least two objectives, got 1"),
    (["x:v"], "x", "x:v is given twice"),
    (None, None, "got 0"),
])
def test_bad_arms_are_usage_errors(arms, objectives, fragment):
    with pytest.raises(UsageError, match=fragment.replace("(", r"\(")):
        core.parse_arms(arms, objectives)


def test_budget_rules():
    assert core.make_budget(None, 1000, None).max_steps(effective_batch=64) == 16  # ceil(1000 / 64)
    assert core.make_budget(7, None, None).max_steps(effective_batch=64) == 7
    assert core.make_budget(None, None, 1.5).max_steps(effective_batch=64) is None
    for bad in ((0, None, None), (None, -5, None), (None, None, 0.0)):
        with pytest.raises(UsageError, match="must be > 0"):
            core.make_budget(*bad)
    with pytest.raises(UsageError, match="exactly one budget"):
        core.make_budget(10, 100, None)
    with pytest.raises(UsageError, match="got none"):
        core.make_budget(None, None, None)


def test_arm_config_changes_only_the_objective_seed_and_cap():
    run = core.load_base(TEMPLATE)
    assert run.kind == "train" and run.topology.world_size == 1
    base = run.train
    a = core.arm_train_config(base, core.parse_arm("eps:x"), core.Budget(images=640), seed=3, world_size=1)
    assert (a.diffusion.prediction, a.diffusion.loss_space, a.max_steps, a.seed) == ("eps", "x", 10, 3)
    same = {"diffusion": {"prediction", "loss_space"}, "max_steps": None, "seed": None, "log_every": None}
    da, db = a.model_dump(), base.model_dump()
    for key in db:
        if key == "diffusion":
            assert {k for k in db[key] if db[key][k] != da[key][k]} == same[key]
        elif key not in same:
            assert da[key] == db[key], key  # model, data, optimizer, batch, sampler: shared by every arm
    m = core.arm_train_config(base, core.parse_arm("x"), core.Budget(minutes=2), seed=None, world_size=1)
    assert m.max_steps == base.max_steps and m.seed == base.seed


def test_arm_keeps_the_templates_log_every():
    # issue 23: the template says log_every: 10 and compare logged every step of a short run
    base = core.load_base(TEMPLATE).train
    assert "log_every" in base.model_fields_set and base.log_every == 10
    a = core.arm_train_config(base, core.parse_arm("x"), core.Budget(steps=120), seed=0, world_size=1)
    assert a.log_every == 10
    unset = base.model_validate({k: v for k, v in base.model_dump().items() if k != "log_every"})
    assert core.arm_train_config(unset, core.parse_arm("x"), core.Budget(steps=120), seed=0,
                                 world_size=1).log_every == 2  # unset: about 60 points on the curve


def test_metrics_summary_skips_torn_lines_and_startup_window(tmp_path):
    p = tmp_path / "metrics.jsonl"
    recs = [{"step": 10, "loss": 3.0, "img_per_s": 1.0, "peak_mem_mib": 100.0, "mem_kind": "rss"},
            {"step": 20, "event": "replicas"},
            {"step": 20, "loss": 2.0, "img_per_s": 50.0, "peak_mem_mib": 120.0, "mem_kind": "rss"},
            {"step": 30, "loss": 1.0, "img_per_s": 70.0, "peak_mem_mib": 110.0, "mem_kind": "rss"},
            {"step": 40, "loss": 0.5, "img_per_s": 60.0, "peak_mem_mib": 115.0, "mem_kind": "rss"}]
    p.write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"step": 50, "lo')
    s = core.summarize_metrics(core.read_metrics(p))
    assert s["loss_curve"] == [(10, 3.0), (20, 2.0), (30, 1.0), (40, 0.5)]
    assert s["images_per_s"] == 60.0  # median of 50, 70, 60: the first (start-up) window left out
    assert (s["peak_mem_mib"], s["final_loss"]) == (120.0, 0.5)
    assert core.read_metrics(tmp_path / "missing.jsonl") == []


def test_minutes_budget_waits_for_the_trainer_to_start(tmp_path):
    """The budget's clock starts at the trainer's start-up line, not at the launch: ordering, not wall time."""
    seen: list[bool] = []
    timer = core._StopOnTime(tmp_path, 0.0, lambda: seen.append(timer.started.is_set()), poll_s=0.01)
    for _ in range(20):  # the watcher reads the (absent) log many times and never starts the clock
        assert not timer.started.wait(0.01) and seen == [] and not timer.fired
    (tmp_path / "train.log").write_text("JiT-Tiny/8 at 32px ... | 28 steps/epoch, 100 steps | cpu\n")
    timer.join(timeout=30)
    assert timer.started.is_set() and timer.fired and seen == [True]  # stopped once, after the start
    never = core._StopOnTime(tmp_path, 10, lambda: seen.append(False), poll_s=0.01)
    assert never.started.wait(30)  # the line is there: the clock runs at once
    never.cancel()
    assert not never.fired and seen == [True]
    late = core._StopOnTime(tmp_path / "nothing", 0.0, lambda: seen.append(True), startup_limit_s=0.0)
    late.join(timeout=30)  # no start-up line within the limit: the clock starts anyway
    assert late.started.is_set() and late.fired and seen == [True, True]


# ------------------------------------------------------------------------------------------- scoring
@pytest.mark.slow
def test_common_v_loss_is_zero_for_an_oracle_of_every_prediction_type():
    """The common metric converts each prediction type to v: a perfect network scores 0 whatever it predicts,
    and a wrong one scores the same whichever type it is read as, once converted."""
    import torch

    from jitmodel.config import TrainConfig

    train = TrainConfig.model_validate({**yaml.safe_load(TEMPLATE.read_text()),
                                        "model": {"variant": "JiT-Tiny/4", "img_size": 8, "num_classes": 10}})
    scorer = core.Scorer.__new__(core.Scorer)  # the fixed batch without the classifier (scored below)
    scorer.device = torch.device("cpu")
    g = torch.Generator().manual_seed(0)
    scorer.x = torch.rand(6, 3, 8, 8, generator=g) * 2 - 1
    scorer.e = torch.randn(6, 3, 8, 8, generator=g)
    scorer.y = torch.arange(6)
    scorer.t = torch.tensor([0.02, 0.3, 0.7, 0.99])

    class Oracle:
        def __init__(self, kind: str, err: float = 0.0):
            self.kind, self.err, self.diff_cfg = kind, err, train.diffusion

        def net(self, z, t, y):
            from jitmodel import objectives

            return objectives.target(scorer.x, scorer.e, self.kind) + self.err

    for kind in ("x", "v", "eps"):
        rows = scorer.common_v_loss(Oracle(kind), kind)
        assert [t for t, _ in rows] == pytest.approx([0.02, 0.3, 0.7, 0.99])
        assert max(v for _, v in rows) < 1e-10, kind
    # an x error d is a v error d / max(1 - t, t_eps): (0.1 / 0.05)^2 = 4 at t = 0.99
    assert scorer.common_v_loss(Oracle("x", 0.1), "x")[-1][1] == pytest.approx(4.0, rel=1e-4)


# ------------------------------------------------------------------------------------------- plots
def _result(**arm) -> core.CompareResult:
    arms = [core.ArmResult(arm=n, prediction=n[0] if n[0] != "e" else "eps", loss_space="v", status="finished",
                           run_dir="r", wall_s=1.0, loss_curve=[(1, 2.0 * k), (2, 1.0 * k), (3, 0.7 * k)],
                           v_loss_by_t=[(0.1, 3.0 / k), (0.5, 1.0), (0.9, 0.5 * k)], **arm)
            for k, n in ((1, "x:v"), (3, "eps:v"))]
    return core.CompareResult(variant="JiT-Tiny/8", img_size=32, patch_dim=192, hidden=96, data="digits",
                              budget=core.Budget(steps=3), seed=0, effective_batch=64, backend="local",
                              weights="ema1", sample_steps=5, arms=arms)


def test_pil_plot_when_matplotlib_is_missing(tmp_path):
    from PIL import Image

    path = core._plot_pil(_result(), tmp_path / "loss.png")
    with Image.open(path) as im:
        assert im.size == (900, 360)
        colors = {c for _, c in im.getcolors(maxcolors=100000)}
    assert core._COLORS[0] in colors and core._COLORS[1] in colors  # both curves drawn


def test_summary_table_has_one_row_per_arm_and_the_caveats():
    r = _result(accuracy=0.5, final_loss=0.7)
    r.notes = ["Training losses are each in their own loss space"]
    md = core.summary_markdown(r)
    rows = [line for line in md.splitlines() if line.startswith("| x:v") or line.startswith("| eps:v")]
    assert len(rows) == 2 and all(row.count("|") == 12 for row in rows)  # arm, params, status, ... FID
    assert "| 0.7 |" in rows[0] and "0.500" in rows[0] and "own loss space" in md


# ------------------------------------------------------------------------------------------- CLI
@pytest.mark.parametrize("args,fragment", [
    (["TEMPLATE", "--arm", "x:v", "--arm", "q:v", "--steps", "2"], "unknown prediction 'q'"),
    (["TEMPLATE", "--objectives", "x,v", "--steps", "0"], "--steps must be > 0"),
    (["TEMPLATE", "--objectives", "x,v", "--minutes", "0"], "--minutes must be > 0"),
    (["TEMPLATE", "--objectives", "x,v"], "exactly one budget"),
    (["TEMPLATE", "--objectives", "x", "--steps", "2"], "at least two objectives"),
    (["missing.yaml", "--objectives", "x,v", "--steps", "2"], "plan file not found: missing.yaml"),
    (["--objectives", "x,v", "--steps", "2"], "give a PLAN file or --gpus"),
    (["TEMPLATE", "--objectives", "x,v", "--steps", "2", "--local", "--ssh", "a@b"], "choose one of"),
    (["TEMPLATE", "--objectives", "x,v", "--steps", "2", "--ema", "ema3"], "--ema must be ema1, ema2 or raw"),
    (["TEMPLATE", "--objectives", "x,v", "--steps", "2", "--ref-stats", "nope.npz"], "--ref-stats nope.npz"),
])
def test_bad_input_is_one_line_and_exit_2(cli, tmp_path, monkeypatch, args, fragment):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "home"))
    if fragment.startswith(("--ema", "--ref")):  # checked before any training: give it a runner that must not run
        monkeypatch.setattr(core.LocalRunner, "run", lambda *a, **k: pytest.fail("an arm was started"))
    argv = [str(TEMPLATE) if a == "TEMPLATE" else a for a in args]
    r = cli("compare", *argv)
    assert r.code == 2, (r.out, r.err)
    assert fragment in r.err and "Traceback" not in r.err
    assert len([line for line in r.err.splitlines() if line.startswith("Error:")]) == 1


def test_ssh_download_fetches_the_run_output_only(tmp_path):
    from jitplan.launch.ssh import SSHOptions, parse_target

    runner = core.SSHRunner(core.load_base(TEMPLATE), parse_target("root@10.0.0.5:2222", None),
                            SSHOptions(known_hosts="/kh"))
    argv = runner.download_argv("/home/root/jitplan/runs/cmp-x-v", tmp_path / "x-v")
    assert argv[0] == "rsync" and "-azL" in argv and "--exclude=ckpt/" in argv
    assert argv[-2:] == ["root@10.0.0.5:/home/root/jitplan/runs/cmp-x-v/out/", f"{tmp_path}/x-v/out/"]
    assert "2222" in argv[argv.index("-e") + 1]


@pytest.mark.slow
def test_compare_two_objectives_end_to_end(cli, tmp_path, monkeypatch):
    """Two arms through the real launch path (torchrun, supervisor, registry), scored and plotted."""
    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("JITMODEL_NO_PROGRESS", "1")
    import torch

    torch.set_num_threads(2)
    out = tmp_path / "cmp"
    r = cli("compare", str(_tiny_config(tmp_path)), "--arm", "x:v", "--arm", "eps:eps", "--steps", "3",
            "--out", str(out), "--sample-steps", "2", "--per-class", "2", "--threads", "1", "--seed", "5", "--json")
    assert r.code == 0, r.err[-3000:]
    assert torch.get_num_threads() == 2  # --threads 1 held while scoring only
    res = json.loads(r.out)
    saved = json.loads((out / "results.json").read_text())
    assert saved["arms"] == res["arms"] and [a["arm"] for a in res["arms"]] == ["x:v", "eps:eps"]
    assert res["budget"] == {"steps": 3, "images": None, "minutes": None} and res["seed"] == 5
    for a in res["arms"]:
        assert a["status"] == "finished" and a["steps"] == 3 and a["images"] == 3 * 32
        assert [s for s, _ in a["loss_curve"]] == [1, 2, 3]
        assert all(math.isfinite(v) and v > 0 for _, v in a["loss_curve"])
        assert math.isfinite(a["v_loss_common"]) and len(a["v_loss_by_t"]) == 16
        assert 0.0 <= a["accuracy"] <= 1.0 and math.isfinite(a["fd_digits"]) and a["samples"] == 20
        assert a["images_per_s"] > 0 and a["peak_mem_mib"] > 50 and a["mem_kind"] == "rss"
        train = yaml.safe_load((Path(a["run_dir"]) / "train.yaml").read_text())
        assert train["diffusion"]["prediction"] == a["prediction"] and train["seed"] == 5
    # both arms started from the same weights with the same data and draws: the v-loss of step 0 would be equal;
    # after 3 different updates the two objectives must have moved apart
    assert res["arms"][0]["v_loss_common"] != res["arms"][1]["v_loss_common"]
    from PIL import Image

    with Image.open(out / "loss.png") as im:
        assert im.size[0] >= 800 and im.size[1] >= 300
    for a in res["arms"]:
        with Image.open(a["grid"]) as im:  # 2 rows x 10 digits of 16 px with 2 px padding
            assert im.size == (10 * 18 + 2, 2 * 18 + 2)
    md = (out / "summary.md").read_text()
    assert md.count("| finished |") == 2 and "not comparable" in md and "grids/eps-eps.png" in md
    from jitplan.runs.registry import Registry

    names = {row.name for row in Registry().list_runs()}
    assert {"compare-cmp-x-v", "compare-cmp-eps-eps"} <= names


def test_hardware_flags_and_ssh_reach_the_core(cli, tmp_path, monkeypatch):
    """--gpus/--recipe build the plan with the planner; --ssh picks the SSH runner; nothing is trained here."""
    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "home"))
    seen = {}

    def fake_run_compare(base, arms, budget, out, **kw):
        seen.update(base=base, arms=arms, budget=budget, out=out, **kw)
        raise UsageError("stop here")

    monkeypatch.setattr(core, "run_compare", fake_run_compare)
    r = cli("compare", "--gpus", "2xRTX3060", "--recipe", "JiT-B/16", "--data", str(tmp_path), "--objectives",
            "x,eps", "--images", "5000", "--ssh", "me@127.0.0.1:2201", "--seed", "4", "--out", str(tmp_path / "o"))
    assert r.code == 2 and "stop here" in r.err
    run = seen["base"]
    plan = run.plan
    assert run.kind == "plan" and run.topology.world_size == 2
    assert plan.hardware.world_size == 2 and plan.train.model.variant == "JiT-B/16"
    assert plan.train.data.path == str(tmp_path)
    assert [a.name for a in seen["arms"]] == ["x:v", "eps:v"] and seen["budget"].images == 5000
    runner = seen["runner"]
    assert isinstance(runner, core.SSHRunner) and runner.backend == "ssh"
    assert (runner.target.user, runner.target.host, runner.target.port) == ("me", "127.0.0.1", 2201)
    assert seen["seed"] == 4
    # the images budget becomes whole steps of the plan's effective batch (2 GPUs x micro x accum)
    eff = plan.train.effective_batch(2)
    cfg = core.arm_train_config(plan.train, seen["arms"][0], seen["budget"], seed=4, world_size=2)
    assert cfg.max_steps == -(-5000 // eff)


@pytest.mark.slow
def test_a_failed_arm_is_reported_and_exits_1(cli, tmp_path, monkeypatch):
    """An arm whose trainer fails leaves no checkpoint: it is listed as failed, the others' files are still
    written, and the command exits 1 with one line. Imagefolder data without --ref-stats: no quality metric."""
    cfg = _folder_config(tmp_path)
    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(core.LocalRunner, "run", lambda self, run_dir, config, **kw: ("failed", "trainer exit 1"))
    out = tmp_path / "cmp"
    r = cli("compare", str(cfg), "--objectives", "x,v", "--steps", "2", "--out", str(out), "--json")
    assert r.code == 1 and "2 of 2 arm(s) failed: x:v, v:v" in r.err and "Traceback" not in r.err
    res = json.loads((out / "results.json").read_text())
    assert [a["status"] for a in res["arms"]] == ["failed", "failed"]
    assert all(a["v_loss_common"] is None and a["grid"] is None for a in res["arms"])
    assert any("No quality metric" in n for n in res["notes"]) and any("Failed arm" in n for n in res["notes"])
    assert (out / "summary.md").read_text().count("| failed |") == 2 and (out / "loss.png").is_file()
    # the arms' run folders were prepared through the launch path: one config each, objective set
    for slug, pred in (("x-v", "x"), ("v-v", "v")):
        assert yaml.safe_load((out / "arms" / slug / "train.yaml").read_text())["diffusion"]["prediction"] == pred
    # a second run into the same folder is refused before anything starts
    r2 = cli("compare", str(cfg), "--objectives", "x,v", "--steps", "2", "--out", str(out))
    assert r2.code == 2 and "already holds a run" in r2.err


def test_notes_name_the_caveats_that_apply():
    from types import SimpleNamespace

    arms = _result().arms
    arms[0].steps, arms[1].steps = 165, 113
    arms[1].loss_space, arms[1].status = "eps", "failed"
    bare = SimpleNamespace(x=None, digits=None, ref=None, notes=["FID skipped: no weights"])
    notes = " ".join(core._notes(arms, bare, core.Budget(minutes=0.25)))
    for part in ("x:v 165, eps:v 113", "not comparable across spaces", "No quality metric", "FID skipped",
                 "Failed arm(s): eps:v"):
        assert part in notes
    arms[1].loss_space, arms[1].status = "v", "finished"
    notes = " ".join(core._notes(arms, bare, core.Budget(steps=3)))
    assert "different numbers of steps" not in notes and "not comparable" not in notes


def test_chance_level_samples_are_called_noise_with_the_fix():
    # issue 23: compare reported 0.100 for every objective and grey grids without a word
    from types import SimpleNamespace

    arms = _result().arms
    bare = SimpleNamespace(x=None, digits=object(), n_real=1797, ref=None, notes=[])
    for a in arms:
        a.accuracy, a.steps = 0.1, 120
    notes = " ".join(core._notes(arms, bare, core.Budget(steps=120)))
    assert "every arm is at chance" in notes and "--steps 3000" in notes
    arms[0].accuracy = 0.62
    assert "at chance" not in " ".join(core._notes(arms, bare, core.Budget(steps=120)))


def compare_over_ssh(cli, tmp_path, monkeypatch, *arms: str):
    """``jitplan compare`` of ``arms`` on the folder config, 2 steps each, over a loopback sshd (tests/test_ssh.py's):
    (the CLI result, the remote root, the results folder). Skips where no sshd can run."""
    import sys

    from test_ssh import LoopbackSSH, needs_sshd

    if needs_sshd.args[0]:
        pytest.skip(needs_sshd.kwargs["reason"])
    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("JITMODEL_NO_PROGRESS", "1")
    (tmp_path / "sshd").mkdir()
    server = LoopbackSSH(tmp_path / "sshd")
    root, out = tmp_path / "remote", tmp_path / "cmp"
    try:
        server.trust()
        r = cli("compare", str(_folder_config(tmp_path)), *arms, "--steps", "2", "--out", str(out),
                "--ssh", f"root@127.0.0.1:{server.port}", "--identity", str(server.client_key), "--known-hosts",
                str(server.known_hosts), "--remote-dir", str(root), "--remote-python", sys.executable,
                "--sample-steps", "2", "--per-class", "1", "--threads", "1", "--json")
    finally:
        server.close()
    return r, root, out


@pytest.mark.net
@pytest.mark.slow
def test_compare_over_ssh_fetches_each_arm_back_and_scores_it(cli, tmp_path, monkeypatch):
    """Two arms through the SSH launch path against a loopback sshd (tests/test_ssh.py's), then scored here
    (image-folder data, readable on both sides of the loopback)."""
    r, root, out = compare_over_ssh(cli, tmp_path, monkeypatch, "--objectives", "x,eps")
    assert r.code == 0, r.err[-3000:]
    res = json.loads(r.out)
    assert res["backend"] == "ssh" and [a["arm"] for a in res["arms"]] == ["x:v", "eps:v"]
    for a in res["arms"]:
        slug = a["arm"].replace(":", "-")
        remote = root / "runs" / f"compare-cmp-{slug}"
        assert (remote / "out" / "last.pt").is_file()  # trained there...
        assert (out / "arms" / slug / "out" / "last.pt").is_file()  # ...fetched here, rolling checkpoints left
        assert not (out / "arms" / slug / "out" / "ckpt").exists()
        assert a["status"] == "finished" and a["steps"] == 2 and math.isfinite(a["v_loss_common"])
        assert [s for s, _ in a["loss_curve"]] == [1, 2] and a["grid"]


@pytest.mark.net
@pytest.mark.parametrize("keep", [False, True])
@pytest.mark.slow
def test_vast_rents_one_instance_for_all_arms_and_releases_it(cli, tmp_path, monkeypatch, keep):
    """--vast provisions once (the real SDK against the Vast fake), every arm goes over SSH to that instance with
    the new host key trusted in jitplan's own known_hosts, and when the comparison ends (here: it fails after
    renting) the instance is destroyed, or kept and its stop command printed with --keep; a bare TrainConfig
    cannot say what to rent."""
    pytest.importorskip("vastai")
    from fakes.vast_server import BannerServer, VastFake

    key = "SENTINEL-compare-" + "5c2e9a"
    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HOME", str(tmp_path / "userhome"))
    monkeypatch.setenv("VAST_API_KEY", key)
    monkeypatch.setenv("JITPLAN_VAST_POLL_S", "0.01")
    ident = tmp_path / "id_ed25519"
    ident.write_text("not a real private key\n")
    Path(str(ident) + ".pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFake jitplan-test\n")
    r = cli("compare", str(TEMPLATE), "--objectives", "x,v", "--steps", "2", "--vast", "--yes")
    assert r.code == 2 and "--vast needs a plan" in r.err
    seen = {}

    def fake_run_compare(*args, **kw):
        seen.update(kw)
        raise UsageError("stop here")

    monkeypatch.setattr(core, "run_compare", fake_run_compare)
    plan = tmp_path / "plan.yaml"
    assert cli("plan", "--gpus", "1xRTX3060", "--data", str(tmp_path), "--out", str(plan)).code == 0
    with BannerServer() as banner, VastFake(key, ssh_port=banner.port) as fake:
        fake.add_offer(2001, num_gpus=1, dph_base=0.20)
        monkeypatch.setenv("VAST_URL", fake.url)
        r = cli("compare", str(plan), "--objectives", "x,v", "--steps", "2", "--vast", "--bid", "0.2", "--yes",
                "--identity", str(ident), *(["--keep"] if keep else []))
        live, creates = fake.live(), fake.creates()
    assert r.code == 2 and "stop here" in r.err and key not in r.err + r.out
    assert len(creates) == 1
    runner = seen["runner"]
    assert isinstance(runner, core.SSHRunner) and runner.target.port == banner.port
    assert runner.opts.accept_new_host_key and runner.opts.known_hosts.startswith(str(tmp_path / "home"))
    if keep:
        assert len(live) == 1 and "jitplan stop" in r.err and "--destroy" in r.err
    else:
        assert live == [] and "destroyed" in r.err


def test_module_docstring_examples_run():
    import doctest

    import jitplan.compare
    import jitplan.compare.results
    import jitplan.compare.settings

    for mod in (jitplan.compare, jitplan.compare.settings, jitplan.compare.results):
        res = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert res.attempted > 0 and res.failed == 0, mod.__name__


def test_an_arm_shows_an_eta_not_a_line_per_logged_step():
    # issue 23: compare echoed every logged step of every arm; now a progress line per tenth (piped)
    import io

    from jitmodel.progress import TrainLogProgress

    out = io.StringIO()
    echo = TrainLogProgress("arm x", 600, stream=out, tty=False)
    echo.write("JiT-Tiny/8 at 32px, 1797 images in 10 classes\n")
    for step in range(10, 601, 10):
        echo.write(f"step {step}  epoch 0.1  loss 0.5  lr 0.001\n")
    echo.write("step 600  event replicas  consistent True\ndone: 600 steps; checkpoint out/last.pt\n")
    echo.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("JiT-Tiny/8") and lines[-1].startswith("done: 600 steps")
    progress = [ln for ln in lines if ln.startswith("arm x: ")]
    assert len(progress) == 10 and "eta" in progress[0] and progress[-1].endswith("in all")
    assert not any(ln.startswith("step ") and "loss" in ln for ln in lines)  # events (replicas) still pass
