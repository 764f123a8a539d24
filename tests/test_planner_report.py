"""`jitplan report RUN`: the data (plan vs measured with drift, series, events, images) and the page in Chromium."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from jitplan.hardware.spec import hardware_from_flags
from jitplan.planner.plan import make_plan
from jitplan.schemas import PlanOptions, load_recipe, save_plan

CHROMIUM = os.environ.get("JITMODEL_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("JITMODEL_TEST_ARTIFACTS", Path(__file__).parent / "artifacts"))


@pytest.fixture
def run(tmp_path, monkeypatch):
    """A registry run: the story plan, a metrics.jsonl as jitmodel.metrics writes it (slower than planned), a PNG."""
    from PIL import Image

    from jitplan.runs.registry import Registry

    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "home"))
    run_dir = tmp_path / "run"
    plan = make_plan(hardware_from_flags("2xRTX3060", host_ram="24GB"), load_recipe("JiT-B/16"),
                     PlanOptions(batch_per_gpu=16, policy="scale-lr", lr_scaling="linear"))
    out = run_dir / "runs" / "jit"
    out.mkdir(parents=True)
    save_plan(plan.model_copy(update={"train": plan.train.model_copy(update={"output_dir": "runs/jit"})}),
              run_dir / "plan.yaml")
    recs = [{"step": 20 * i, "loss": 1.0 / i, "lr": 1e-5, "img_per_s": 59.0 + i, "step_s": 0.54,
             "data_wait_s": 0.01, "compute_s": 0.41, "optimizer_s": 0.12, "peak_reserved_mib": 6000.0 + i,
             "nvml_used_mib": 6758.0, "host_rss_mib": 9000.0 + 10 * i, "host_rss_peak_mib": 9100.0}
            for i in range(1, 8)]
    (out / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    Image.new("RGB", (16, 16), (200, 30, 30)).save(out / "samples_step140.png")
    reg = Registry()
    rid = reg.create_run("story", "local", plan_path=str(run_dir / "plan.yaml"), run_dir=str(run_dir),
                         status="running")
    reg.add_event(rid, "started", "try 1: torchrun with 9 data workers per rank")
    return rid, run_dir, plan


def test_report_json_compares_plan_and_measured(run, cli):
    rid, _, plan = run
    r = cli("report", rid, "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    step = next(c for c in data["compared"] if c["quantity"] == "step time")
    assert step["planned"] == pytest.approx(plan.estimates.step_time_s) and step["measured"] == 0.54
    assert step["flagged"] and step["drift"] == pytest.approx(0.54 / plan.estimates.step_time_s - 1)
    mem = next(c for c in data["compared"] if c["quantity"] == "GPU memory per GPU")
    assert not mem["flagged"]  # 6758 MiB measured vs ~6.7 GiB planned
    assert {"loss", "images/s", "GPU reserved (MiB)", "host RAM (MiB)"} <= set(data["series"])
    assert "started" in [e["kind"] for e in data["events"]] and data["images"][0]["name"] == "samples_step140.png"


@pytest.mark.slow
def test_report_page_renders_in_headless_chromium(run, cli, tmp_path):
    rid, run_dir, _ = run
    r = cli("report", rid)
    page_path = run_dir / "report.html"
    assert r.code == 0 and str(page_path) in r.out
    text = page_path.read_text()
    assert "<script" not in text and "http" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip(f"chromium is not installed ({CHROMIUM})")
    sync_api = pytest.importorskip("playwright.sync_api")
    exe = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True,
                                    args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            requests: list[str] = []
            page.on("request", lambda q: requests.append(q.url))
            page.goto(page_path.as_uri())
            assert page.title().startswith("jitplan report: story")
            assert page.locator("svg.chart").count() >= 4
            assert "step time" in page.locator("#compared tr.flag").first.inner_text()
            assert page.locator("img").count() == 1
            assert all(u.startswith(("file:", "data:")) for u in requests)  # self-contained
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            for shot in (tmp_path / "report.png", ARTIFACTS / "report_page.png"):
                page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 10_000
        finally:
            browser.close()


def test_report_of_an_unknown_run_exits_2(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path))
    assert cli("report", "nope").code == 2


def test_report_shows_the_planned_split_and_lines(run):
    """Before: "-" for the planned data/compute/optimizer split the plan has, and no planned line on charts."""
    from jitplan.report.build import build_report
    from jitplan.report.html import render

    rid, run_dir, plan = run
    rep = build_report(run_id=rid, name="story", status="running", plan_path=str(run_dir / "plan.yaml"),
                       run_dir=run_dir)
    split = {c.quantity: c.planned for c in rep.compared}
    assert split["compute per step"] > 0 and split["optimizer per step"] > 0
    assert split["data wait per step"] is not None
    assert sum(split[q] for q in ("data wait per step", "compute per step", "optimizer per step")) == \
        pytest.approx(plan.estimates.step_time_s)
    assert rep.planned_lines["step time (s)"] == pytest.approx(plan.estimates.step_time_s)
    assert render(rep).count('class="planned"') >= 2


def test_report_names_big_samples_and_does_not_claim_a_missing_plan_or_a_cpu_calibration(run, tmp_path):
    """Before: "no sample images" beside a samples.png over 2 MB; "within 15% of the plan" for a run without
    a plan; `jitplan calibrate RUN` suggested for a CPU run (which then exits 2)."""
    import numpy as np
    from PIL import Image

    from jitplan.report.build import build_report
    from jitplan.report.html import render

    rid, run_dir, _ = run
    out = run_dir / "runs" / "jit"
    (out / "samples_step140.png").unlink()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)).save(
        out / "samples.png")
    rep = build_report(run_id=rid, name="story", status="running", plan_path=str(run_dir / "plan.yaml"),
                       run_dir=run_dir)
    page = render(rep)
    assert "no sample images" not in page and "samples.png" in page
    # no plan: nothing claimed about "the plan"
    bare = build_report(run_id=None, name="bare", status=None, plan_path=None, run_dir=run_dir)
    assert "within 15% of the plan" not in render(bare) and "no plan to compare with" in render(bare)
    # a CPU run (no GPU memory measured) drifting: no calibrate suggestion
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    for r in recs:
        r.pop("peak_reserved_mib"), r.pop("nvml_used_mib")
    (out / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    cpu = render(build_report(run_id=rid, name="story", status="running", plan_path=str(run_dir / "plan.yaml"),
                              run_dir=run_dir))
    assert "drift beyond 15%" in cpu and "jitplan calibrate" not in cpu and "ran on the CPU" in cpu
