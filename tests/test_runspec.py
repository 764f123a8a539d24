"""The run spec: one loader with a ``kind:`` discriminator, old files without it, the derived facts' one
function each (worker normalisation, steps per epoch, the validation-error line)."""

from __future__ import annotations

import doctest
import importlib

import pytest
import yaml
from pydantic import ValidationError

from jitmodel.config import (
    DataConfig,
    TrainConfig,
    dump_yaml,
    file_kind,
    load_train_config,
    steps_per_epoch,
    validation_summary,
)
from jitplan.errors import UsageError
from jitplan.hardware.spec import hardware_from_flags
from jitplan.planner.plan import make_plan
from jitplan.runspec import RunSpec, load_run_spec, save_run_spec
from jitplan.schemas import PlanOptions, load_recipe, plan_to_yaml


@pytest.fixture(scope="module")
def plan():
    return make_plan(hardware_from_flags("2xRTX3060", host_ram="24GB", cpus=16), load_recipe("JiT-B/16"),
                     PlanOptions())


def _digits(**kw) -> TrainConfig:
    return TrainConfig(data=DataConfig(kind="digits"), **kw)


def test_plan_and_train_files_say_their_kind_and_load_typed(tmp_path, plan):
    p, t = tmp_path / "plan.yaml", tmp_path / "train.yaml"
    save_run_spec(RunSpec.from_plan(plan), p)
    save_run_spec(RunSpec.from_train(_digits(world_size=2)), t)
    assert yaml.safe_load(p.read_text())["kind"] == "plan" and yaml.safe_load(t.read_text())["kind"] == "train"
    rp, rt = load_run_spec(p), load_run_spec(t)
    assert (rp.kind, rp.plan, rp.train, rp.workers) == ("plan", plan, plan.train, plan.workers)
    assert (rp.topology.nnodes, rp.topology.nproc_per_node, rp.topology.cpus_per_node) == (1, 2, 16)
    assert (rt.kind, rt.plan, rt.workers, rt.topology.world_size) == ("train", None, None, 2)
    assert rt.file_name == "train.yaml" and rp.file_name == "plan.yaml"
    assert "topology" in rp.provenance and "topology" in rt.provenance


def test_files_without_kind_still_load(tmp_path, plan):
    old_plan = yaml.safe_load(plan_to_yaml(plan))
    del old_plan["kind"], old_plan["train"]["kind"]
    old_train = _digits().model_dump(mode="json")
    del old_train["kind"]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(old_plan))
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(old_train))
    assert load_run_spec(tmp_path / "p.yaml").plan == plan
    assert load_run_spec(tmp_path / "t.yaml").train == _digits()
    assert load_train_config(tmp_path / "p.yaml") == plan.train  # what jitmodel.train reads


@pytest.mark.parametrize("text,fragment", [
    ("kind: recipe\ndata: {kind: digits}\n", "unknown kind 'recipe'"),
    ("kind: train\ndata: {kind: digits}\nbatch_per_gpu: 0\n", "neither a plan nor a TrainConfig: batch_per_gpu"),
    ("kind: plan\nschema_version: 1\n", "invalid plan"),
    ("- a\n- b\n", "does not hold a plan mapping"),
])
def test_bad_files_give_one_line(tmp_path, text, fragment):
    p = tmp_path / "x.yaml"
    p.write_text(text)
    with pytest.raises(UsageError) as e:
        load_run_spec(p)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_zero_workers_means_no_prefetch_and_no_persistent_workers_everywhere():
    d = DataConfig(kind="digits", num_workers=0, prefetch_factor=4, persistent_workers=True)
    assert (d.prefetch_factor, d.persistent_workers) == (None, False)
    cfg = _digits()
    cfg.data.num_workers = 0  # assignment is validated too
    assert (cfg.data.prefetch_factor, cfg.data.persistent_workers) == (None, False)
    back = _digits().with_workers(0).with_workers(3)  # more workers again: the fields are explicit now
    assert back.data.num_workers == 3 and back.data.prefetch_factor is None


def test_with_workers_follows_the_planners_decision(plan):
    run = RunSpec.from_plan(plan).with_workers(0)
    assert run.workers is not None and run.workers.per_rank == 0 and run.workers.bound_by == "user"
    assert run.train.data.num_workers == 0 and run.train.data.persistent_workers is False
    assert run.plan is not None and run.plan.train == run.train


def test_steps_per_epoch_is_one_formula_for_planner_and_trainer(plan):
    from jitplan.planner import compute

    assert steps_per_epoch(1281167, 8, 128, 1) == compute.steps_per_epoch(1281167, 8, 128, 1) == 1251
    assert steps_per_epoch(10, 3, 2, 1) == 2  # ceil(10 / 3) = 4 per rank, 2 micro-batches
    assert steps_per_epoch(100, 2, 8, 3) == 2  # 6 micro-batches, accumulation 3
    t = plan.train
    assert plan.estimates.steps_per_epoch == steps_per_epoch(t.data.planned_images, 2, t.batch_per_gpu, t.accum_steps)


def test_validation_summary_is_one_line_with_the_count():
    with pytest.raises(ValidationError) as e:
        TrainConfig.model_validate({"data": {"kind": "digits"}, "batch_per_gpu": 0, "epochs": -1})
    assert validation_summary(e.value) == "batch_per_gpu: Input should be greater than 0 (+1 more)"


def test_file_kind_rule():
    assert file_kind({"train": {"data": {}}, "hardware": {}}) == "plan"
    assert file_kind({"data": {"kind": "digits"}}) == "train"
    assert file_kind({"kind": "train", "train": {}}) == "train"  # an explicit kind wins over the shape


def test_old_recipes_with_the_unread_worker_field_still_load(tmp_path):
    from jitplan.schemas import Recipe

    raw = load_recipe("JiT-B/16").model_dump(mode="json")
    legacy = Recipe.model_validate({**raw, "dataloader_workers_per_gpu": 12})
    assert legacy == load_recipe("JiT-B/16") and not hasattr(legacy, "dataloader_workers_per_gpu")


def test_bare_config_round_trips_through_dump_yaml(tmp_path):
    cfg = _digits(world_size=2)
    (tmp_path / "t.yaml").write_text(dump_yaml(cfg))
    assert load_run_spec(tmp_path / "t.yaml").train == cfg


@pytest.mark.parametrize("module", ["jitplan.runspec", "jitmodel.config"])
def test_module_docstring_examples_pass(module):
    failed, _ = doctest.testmod(importlib.import_module(module), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert failed == 0
