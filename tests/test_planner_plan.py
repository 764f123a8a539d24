"""make_plan: the four must-show adaptations (golden plans), policies, overrides, infeasibility, properties.

Golden plans live in tests/data/plans/. After a deliberate change of the model's constants regenerate them
with ``JITPLAN_REGEN_GOLDEN=1 python -m pytest -q tests/test_planner_plan.py`` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jitmodel.config import load_train_config
from jitplan.errors import CheckFailed, UsageError
from jitplan.hardware.spec import hardware_from_flags
from jitplan.launch.torchrun import plan_command
from jitplan.planner import strategy
from jitplan.planner.plan import make_plan, memory_inputs
from jitplan.runspec import replan_workers
from jitplan.schemas import PlanOptions, load_plan, load_recipe, plan_to_yaml, save_plan

GOLDEN = Path(__file__).parent / "data" / "plans"
CASES = {"2xRTX3060": dict(host_ram="24GB"), "8xH100": {}, "1xRTX4090": {}, "2x8xH100": {}}
B16 = load_recipe("JiT-B/16")


def plan_for(spec: str, recipe=B16, **opts):
    return make_plan(hardware_from_flags(spec, **CASES.get(spec, {})), recipe, PlanOptions(**opts))


@pytest.mark.parametrize("spec", list(CASES))
def test_golden_plans(spec):
    path = GOLDEN / f"{spec}.yaml"
    text = plan_to_yaml(plan_for(spec))
    if os.environ.get("JITPLAN_REGEN_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"missing golden {path}; run with JITPLAN_REGEN_GOLDEN=1"
    assert text == path.read_text(), f"{spec}: plan changed; regenerate deliberately (see module docstring)"
    plan = load_plan(path)
    assert plan.train.effective_batch() == 1024
    assert load_train_config(path) == plan.train  # jitmodel.train reads the plan's train key


def test_seed_case_numbers():
    plan = plan_for("2xRTX3060")
    t, e = plan.train, plan.estimates
    assert t.batch_per_gpu * t.accum_steps * 2 == 1024
    assert t.lr == pytest.approx(2e-4) and t.optim.betas == (0.9, 0.95)
    assert e.memory_per_gpu_bytes <= e.memory_target_bytes
    assert plan.workers.per_rank == 12 and plan.workers.bound_by == "recipe"  # measured worker RAM: 12 fit 24 GB
    assert not any("refused" in w for w in plan.warnings)
    assert plan_command(plan.launch)[:2] == ["torchrun", "--standalone"]
    assert e.train_flops_per_image / 1e9 == pytest.approx(152.7, rel=0.01)
    quantities = [r.quantity for r in plan.rows]
    for q in ("total GPU memory", "batch per GPU", "gradient accumulation", "effective batch", "learning rate",
              "Adam betas", "EMA decays", "warmup steps", "memory per GPU", "model", "resolution", "dataset",
              "workers per GPU (total)", "images/s", "epoch time", "evaluation time", "checkpoint size", "cost"):
        assert q in quantities


def test_reference_hardware_reproduces_the_recipe():
    plan = plan_for("8xH200")
    assert (plan.train.batch_per_gpu, plan.train.accum_steps, plan.workers.per_rank) == (128, 1, 12)
    assert plan.estimates.steps_per_epoch == 1251


@pytest.mark.slow
def test_multi_node_launch_parses_with_torchrun():
    plan = plan_for("2x8xH100", rdzv_endpoint="10.0.0.1:29400")
    run = pytest.importorskip("torch.distributed.run")
    args = run.get_args_parser().parse_args(plan_command(plan.launch)[1:])
    assert (args.nnodes, args.nproc_per_node, args.rdzv_backend, args.rdzv_endpoint) == ("2", "8", "c10d",
                                                                                         "10.0.0.1:29400")
    assert args.module and args.training_script == "jitmodel.train"
    assert args.training_script_args == ["--config", "plan.yaml", "--resume", "auto"]


def test_scale_lr_sqrt_and_linear():
    sq = plan_for("1xRTX4090", policy="scale-lr", lr_scaling="sqrt")
    kappa = sq.train.effective_batch() / 1024
    assert sq.train.accum_steps == 1 and kappa < 1
    assert sq.train.lr == pytest.approx(2e-4 * kappa**0.5)
    assert sq.train.optim.betas[0] == pytest.approx(1 - kappa * 0.1)
    assert sq.train.diffusion.ema_decays[0] == pytest.approx(0.9999**kappa)
    lin = plan_for("1xRTX4090", policy="scale-lr", lr_scaling="linear")
    assert lin.train.lr == pytest.approx(2e-4 * kappa) and lin.train.optim.betas == (0.9, 0.95)
    assert lin.train.optim.warmup_epochs == 5  # warmup stays in epochs


def test_overrides():
    p = plan_for("2xRTX3060", batch_per_gpu=8)
    assert (p.train.batch_per_gpu, p.train.accum_steps) == (8, 64)
    p = plan_for("2xRTX3060", effective_batch=256)
    assert p.train.effective_batch() == 256 and p.train.lr == pytest.approx(5e-5)
    p = plan_for("2xRTX3060", accum=64)
    assert p.train.accum_steps == 64 and p.train.batch_per_gpu == 8
    p = plan_for("2xRTX3060", compile=False, attention="sdpa")
    assert p.train.compile is False and p.train.model.attention == "sdpa"
    with pytest.raises(CheckFailed, match="largest that fits"):
        plan_for("2xRTX3060", batch_per_gpu=512)


def test_infeasible_l16_on_a_3060_says_so():
    with pytest.raises(CheckFailed) as e:  # without a memory strategy (the default chooses one: test_strategy_plan)
        plan_for("2xRTX3060", recipe=load_recipe("JiT-L/16"), strategy="none")
    assert "24 B/param" in e.value.message and "11.0 GB" in e.value.message
    assert "EMA on the CPU" in e.value.hint and "smaller variant" in e.value.hint


def test_cpu_only_hardware_is_bad_usage():
    hw = hardware_from_flags("RTX3060").model_copy(update={"gpu": None, "gpus_per_node": 0})
    with pytest.raises(UsageError, match="needs GPUs"):
        make_plan(hw, B16, PlanOptions())


def test_replan_workers(tmp_path):
    plan = plan_for("8xH100")
    smaller = replan_workers(plan, 4)
    assert (smaller.workers.per_rank, smaller.workers.total, smaller.train.data.num_workers) == (4, 32, 4)
    assert replan_workers(plan, 64) is plan
    zero = replan_workers(plan, 0)
    assert zero.train.data.prefetch_factor is None
    save_plan(zero, tmp_path / "p.yaml")
    assert load_plan(tmp_path / "p.yaml") == zero


def test_cost_when_priced():
    p = plan_for("8xH100", price_per_hour=20.0)
    assert p.estimates.cost_usd == pytest.approx(p.estimates.total_time_s / 3600 * 20.0)


@settings(max_examples=25, deadline=None)
@given(mem_gb=st.integers(14, 160), extra=st.integers(0, 60), gpus=st.sampled_from([1, 2, 3, 4, 8]),
       recipe=st.sampled_from(["JiT-B/16", "JiT-L/16", "JiT-B/32"]))
@pytest.mark.slow
def test_plan_properties(mem_gb, extra, gpus, recipe):
    """More memory never gives a slower plan, nor a smaller micro-batch under the same memory strategy (with
    more memory a faster strategy may take a smaller micro-batch: JiT-L/16 on 2 x 15 GB drops checkpointing
    for micro 4 x accum 128); the chosen micro-batch fits the target; the split reaches the effective batch."""
    r = load_recipe(recipe)

    def plan(gb):
        hw = hardware_from_flags(f"{gpus}xCARD", gpu_mem=f"{gb}GB", gpu_tflops=100)
        return make_plan(hw, r, PlanOptions())

    try:
        small = plan(mem_gb)
    except CheckFailed:
        return
    big = plan(mem_gb + extra)
    assert big.estimates.epoch_time_s <= small.estimates.epoch_time_s * (1 + 1e-9)
    if big.train.memory == small.train.memory:
        assert big.train.batch_per_gpu >= small.train.batch_per_gpu
    for p in (small, big):
        t = p.train
        assert t.batch_per_gpu >= 1
        pred = strategy.predict(memory_inputs(t, gpus), t.memory, t.batch_per_gpu)  # under its memory strategy
        assert pred.total <= p.estimates.memory_target_bytes
        assert t.batch_per_gpu * t.accum_steps * gpus >= 1024
        assert t.batch_per_gpu * t.accum_steps * gpus - 1024 < gpus * t.accum_steps


def test_load_plan_errors(tmp_path):
    good = plan_to_yaml(plan_for("1xRTX4090"))
    cases = {
        "missing.yaml": None,
        "bad.yaml": "train: [unclosed",
        "list.yaml": "- 1\n",
        "v2.yaml": good.replace("schema_version: 1\nkind: plan", "schema_version: 2\nkind: plan", 1),
        "extra.yaml": good + "surprise: 1\n",
    }
    for name, content in cases.items():
        p = tmp_path / name
        if content is not None:
            p.write_text(content)
        with pytest.raises(UsageError) as e:
            load_plan(p)
        assert "\n" not in e.value.message
    assert "schema_version 2" in str(pytest.raises(UsageError, load_plan, tmp_path / "v2.yaml").value)


def test_host_ram_too_small_for_the_training_processes_exits_1_with_the_options(cli):
    with pytest.raises(CheckFailed, match="4 training processes need 14.3 GB") as e:
        make_plan(hardware_from_flags("4xRTX3060", host_ram="8GB"), B16, PlanOptions())
    assert "--host-ram 17GB" in e.value.hint and "--gpus 1xRTX3060" in e.value.hint
    r = cli("plan", "--gpus", "4xRTX3060", "--host-ram", "8GB")
    assert r.code == 1 and "1 would fit" in r.err and "hint: options:" in r.err and "Traceback" not in r.err


def test_a_size_without_a_unit_exits_2_with_a_hint(cli):
    r = cli("plan", "--gpus", "2xRTX3060", "--host-ram", "24")
    assert r.code == 2 and "'24' has no unit" in r.err and "--host-ram 24GB" in r.err
    assert hardware_from_flags("2xRTX3060", host_ram="1048576").host.ram_bytes == 2**20  # explicit bytes still read
