"""``jitplan demo`` on a machine whose CPUs are busy: it keeps going to its step target (no wall-clock cut),
then the independent classifier reads the samples. Two busy loops hold both cores for the whole run, as
in issue #15's acceptance check; the step target is reduced (300) to bound the test's cost.

The full claim (the default 1,400 steps under the same load: >= 80 % recognised) is measured by the
command in benchmarks/RESULTS.md ("jitplan demo under load"); at 300 steps the samples are already digits
(80 % at 280 steps in ``benchmarks/demo_recognition.py``), far above chance (10 %).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

STEPS = 300


@pytest.fixture
def busy_cpus():
    """Two processes spinning on the CPU (``while True: pass``) for the duration of the test."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    yield procs
    for p in procs:
        p.kill()
        p.wait()


@pytest.mark.slow
def test_the_demo_reaches_its_step_target_under_load_and_its_samples_are_digits(cli, tmp_path, monkeypatch,
                                                                                  busy_cpus):
    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "home"))
    out = tmp_path / "demo"
    r = cli("demo", "--steps", str(STEPS), "--samples", "2", "--out", str(out), "--json")
    assert all(p.poll() is None for p in busy_cpus)  # the load held to the end
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert res["status"] == "finished" and res["final_step"] == res["target_steps"] == STEPS
    assert res["of"] == 20 and len(res["predictions"]) == 20 and res["classifier_held_out"] > 0.95
    assert res["recognised"] == sum(p == d for p, d in zip(res["predictions"], [d for d in range(10) for _ in "ab"],
                                                            strict=True))
    assert res["recognised"] >= 12, res  # chance: 2 of 20
    assert f"step {STEPS}/{STEPS} (100 %)" in r.err  # the plain progress lines (stderr is not a terminal)
    page = out / "trajectory-7.html"
    assert page.is_file() and page.read_text()[:50].lower().startswith("<!doctype html")
