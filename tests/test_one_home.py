"""Each fact derived once (issue 19): a second copy of any of them makes one of these tests fail.

The static checks read the source of jitplan/ and jitmodel/ (AST or a pattern), so a new copy written
anywhere is caught; the behavioural checks pin what the one home decides.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*ROOT.glob("jitplan/**/*.py"), *ROOT.glob("jitmodel/**/*.py")])


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def _trees():
    for p in SOURCES:
        yield p, ast.parse(p.read_text())


def _assigned(name: str) -> list[str]:
    """Module-level assignments of ``name`` anywhere in the tree."""
    return [_rel(p) for p, tree in _trees() for node in tree.body
            if isinstance(node, (ast.Assign, ast.AnnAssign))
            and any(isinstance(t, ast.Name) and t.id == name
                    for t in (node.targets if isinstance(node, ast.Assign) else [node.target]))]


def _defined(name: str) -> list[str]:
    return [_rel(p) for p, tree in _trees() for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name]


# ---- the drift threshold ------------------------------------------------------------------------------

def test_drift_threshold_lives_once():
    assert _assigned("DRIFT") == ["jitmodel/records.py"]


def test_trainer_and_planner_share_the_threshold():
    from jitmodel import metrics, records
    from jitplan.calibration import drift

    assert metrics.DRIFT is records.DRIFT and drift.DRIFT is records.DRIFT


# ---- the metrics.jsonl reader -------------------------------------------------------------------------

def test_only_the_records_module_parses_metrics_lines():
    """json.loads over the lines of a metrics.jsonl happens in jitmodel/records.py only."""
    parsers = []
    for p in SOURCES:
        text = p.read_text()
        if "metrics.jsonl" in text and re.search(r"json\.loads\(\s*line", text):
            parsers.append(_rel(p))
    assert parsers == ["jitmodel/records.py"]


def test_the_three_readers_agree(tmp_path):
    import json

    from jitmodel.records import last_step
    from jitplan.calibration.measured import read_records
    from jitplan.compare.results import read_metrics

    p = tmp_path / "metrics.jsonl"
    lines = [{"step": 10, "loss": 1.0}, {"event": "eval", "step": 10}, {"step": 20, "loss": 0.5}]
    p.write_text("\n".join(json.dumps(r) for r in lines) + '\n{"step": 30, "lo')  # a torn last line
    assert [r["step"] for r in read_records(p)] == [10, 20]
    assert len(read_metrics(p)) == 3 and last_step(p) == 20


# ---- effective batch ----------------------------------------------------------------------------------

_PRODUCT = re.compile(r"\b\w*(?:mb|micro|batch|b)\w*\s*\*\s*\w*accum\w*\s*\*\s*\w*world", re.I)


def test_effective_batch_is_one_product():
    hits = [f"{_rel(p)}:{i}" for p in SOURCES for i, line in enumerate(p.read_text().splitlines(), 1)
            if _PRODUCT.search(line) and not line.lstrip().startswith(("#", '"', "'", "f\"", ">>>"))]
    assert hits == ["jitmodel/config.py:206"] or (len(hits) == 1 and hits[0].startswith("jitmodel/config.py:")), hits
    assert _defined("effective_batch").count("jitmodel/config.py") == 2  # the function and the method


def test_effective_batch_value():
    from jitmodel.config import DataConfig, TrainConfig, effective_batch

    cfg = TrainConfig(data=DataConfig(kind="digits"), batch_per_gpu=16, accum_steps=32, world_size=2)
    assert cfg.effective_batch() == effective_batch(16, 32, 2) == 1024


# ---- the largest-micro-batch solver -------------------------------------------------------------------

def test_one_micro_batch_solver():
    assert _defined("max_micro_batch") == ["jitplan/planner/strategy_memory.py"]


# ---- "bf16 needs compute capability 8.0" --------------------------------------------------------------

_CC_LITERAL = re.compile(r"\(\s*[78]\s*,\s*0\s*\)|>=\s*8\.0\b|<\s*8\.0\b")
# Compute-capability thresholds that are other facts, each with its reason.
_OTHER_CC_FACTS = {"jitplan/planner/link.py": "the PCIe generation a card's architecture implies"}


def test_the_bf16_rule_is_written_once():
    hits = [f"{_rel(p)}:{i}: {line.strip()}" for p in SOURCES
            for i, line in enumerate(p.read_text().splitlines(), 1)
            if _CC_LITERAL.search(line) and "_MIN_CC = " not in line and _rel(p) not in _OTHER_CC_FACTS]
    assert hits == [], hits


@pytest.mark.parametrize(("cc", "bf16"), [("7.0", False), ("7.5", False), ("8.0", True), ("8.6", True),
                                          ("9.0", True), ("12.0", True)])
def test_bf16_follows_the_compute_capability(cc, bf16):
    from jitplan.hardware.schema import GPUSpec

    gpu = GPUSpec(name="x", memory_bytes=1, bf16_tflops=1.0, compute_capability=cc)
    assert gpu.bf16 is bf16


def test_a_file_that_contradicts_the_rule_is_refused():
    from pydantic import ValidationError

    from jitplan.hardware.schema import GPUSpec

    with pytest.raises(ValidationError, match="contradicts compute capability 7.5"):
        GPUSpec(name="x", memory_bytes=1, bf16_tflops=1.0, compute_capability="7.5", bf16=True)


def test_catalog_and_planner_precision_follow_the_one_rule():
    from jitmodel.precision import bf16_supported
    from jitplan.hardware.catalog import catalog
    from jitplan.planner.strategy import precision_for

    for gpu in catalog():
        known = bf16_supported(gpu.compute_capability)
        if gpu.backend == "cuda" and known is not None:
            assert gpu.bf16 is known, gpu.name
            want = "bf16" if known else ("fp16" if gpu.compute_capability >= "7" else "fp32")
            assert precision_for(gpu, "bf16") == want, gpu.name


# ---- the plan's estimates as the trainer reads them ------------------------------------------------------

def test_the_trainers_view_of_the_estimates_has_the_planners_names():
    """jitmodel cannot import jitplan, so the trainer reads a typed view (PlanExpectations) of the plan's
    estimates: every field it reads must be a field of the planner's Estimates, with a number's type."""
    from jitmodel.plan_view import PlanExpectations
    from jitplan.schemas import Estimates

    planner = Estimates.model_fields
    for name in PlanExpectations.model_fields:
        assert name in planner, f"the trainer reads estimates.{name}, which the planner does not write"
        assert re.search(r"\b(float|int)\b", str(planner[name].annotation)), (name, planner[name].annotation)


def test_the_trainer_reads_a_written_plan_typed(tmp_path):
    from jitmodel.metrics import plan_expectations
    from jitmodel.plan_view import PlanExpectations
    from jitplan.hardware.spec import hardware_from_flags
    from jitplan.planner.plan import make_plan
    from jitplan.schemas import PlanOptions, load_recipe, save_plan

    plan = make_plan(hardware_from_flags("2xRTX3060", host_ram="24GB"), load_recipe("JiT-B/16"), PlanOptions())
    save_plan(plan, tmp_path / "plan.yaml")
    seen = plan_expectations(tmp_path / "plan.yaml")
    assert isinstance(seen, PlanExpectations)
    assert seen.step_time_s == plan.estimates.step_time_s and seen.epoch_time_s == plan.estimates.epoch_time_s
    (tmp_path / "bad.yaml").write_text("kind: plan\nestimates: {step_time_s: fast}\ntrain: {}\n")
    assert plan_expectations(tmp_path / "bad.yaml") is None  # a garbled estimate is no estimate, not a crash
