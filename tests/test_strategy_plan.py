"""The planner's memory strategies (jitplan.planner.strategy): the issue's plans, --strategy, precision on
cards without bf16, doctor C14, and the memory model of each strategy against a traced step."""

from __future__ import annotations

import pytest

from jitmodel.config import DataConfig, ModelConfig, TrainConfig
from jitmodel.counts import param_breakdown
from jitplan.errors import CheckFailed, UsageError
from jitplan.hardware.catalog import lookup
from jitplan.hardware.spec import hardware_from_flags
from jitplan.planner import memory, strategy, strategy_memory
from jitplan.planner.plan import make_plan
from jitplan.schemas import PlanOptions, load_recipe

B16, L16, H16 = (load_recipe(r) for r in ("JiT-B/16", "JiT-L/16", "JiT-H/16"))


def plan(gpus: str, recipe, **opts):
    return make_plan(hardware_from_flags(gpus), recipe, PlanOptions(**opts))


@pytest.mark.parametrize("gpus,recipe,precision", [("2xRTX3060", L16, "bf16"), ("1xRTX4090", H16, "bf16"),
                                                   ("2xT4", B16, "fp16")])
def test_the_issue_plans_fit_with_a_strategy_and_an_epoch_time(gpus, recipe, precision):
    p = plan(gpus, recipe)
    e, t = p.estimates, p.train
    assert e.memory_per_gpu_bytes <= e.memory_target_bytes and e.epoch_time_s > 0
    assert t.precision == precision and t.effective_batch() == 1024
    chosen = next(r for r in p.rows if r.quantity == "memory strategy")
    assert chosen.target == strategy.name_of(t.memory)
    # the plan's memory is the strategy's prediction at the chosen batch, and the others are costed in rows
    inp_mem = strategy.predict(__import__("jitplan.planner.plan", fromlist=["x"]).memory_inputs(
        t, p.hardware.world_size, nvlink=p.hardware.gpu.nvlink), t.memory, t.batch_per_gpu).total
    assert inp_mem == e.memory_per_gpu_bytes
    assert len([r for r in p.rows if r.quantity.startswith("  ")]) >= 2
    if recipe is not B16:
        with pytest.raises(CheckFailed):  # it needs the strategy: without one it does not fit
            plan(gpus, recipe, strategy="none")


def test_a_strategy_is_chosen_only_when_it_pays():
    p = plan("8xH100", B16)
    assert strategy.name_of(p.train.memory) == "none"
    forced = plan("2xRTX3060", B16, strategy="shard+ckpt")
    assert forced.train.memory.shard and forced.train.memory.checkpoint_every == 1
    assert forced.estimates.epoch_time_s > plan("2xRTX3060", B16).estimates.epoch_time_s  # it costs time
    assert forced.estimates.memory_per_gpu_bytes < plan("2xRTX3060", B16).estimates.memory_per_gpu_bytes


@pytest.mark.parametrize("bad", ["zero3", "none+ckpt", "", "shard+foo"])
def test_bad_strategy_names_are_usage_errors(bad):
    with pytest.raises(UsageError):
        strategy.parse(bad)


def test_sharding_on_one_gpu_is_refused():
    with pytest.raises(UsageError, match="at least 2 GPUs"):
        plan("1xRTX4090", B16, strategy="shard")


def test_precision_follows_the_card():
    assert strategy.precision_for(lookup("T4"), "bf16") == "fp16"
    assert strategy.precision_for(lookup("V100 32GB"), "auto") == "fp16"
    assert strategy.precision_for(lookup("RTX 3060"), "bf16") == "bf16"
    assert strategy.precision_for(lookup("T4"), "fp32") == "fp32"
    pascal = lookup("T4").model_copy(update={"compute_capability": "6.1"})
    assert strategy.precision_for(pascal, "auto") == "fp32"


def test_each_strategy_saves_what_it_says():
    inp = memory.MemoryInputs.for_model("JiT-L/16", 256, world_size=2, accum=2)
    none = strategy.predict(inp, strategy.parse("none"), 16)
    assert none == memory.predict(inp, 16)  # "none" is the plain model, untouched
    by = {n: {i.name: i.bytes for i in strategy.predict(inp, strategy.parse(n), 16).items} for n in strategy.NAMES}
    plain = {i.name: i.bytes for i in none.items}
    assert by["ema-cpu"]["ema"] == 0 and by["ema-cpu"]["weights"] == plain["weights"]
    assert by["ckpt"]["activations"] < 0.25 * plain["activations"]
    assert by["shard"]["adamw state"] == plain["adamw state"] // 2 and "ddp buckets" not in by["shard"]
    totals = {n: strategy.predict(inp, strategy.parse(n), 16).total for n in strategy.NAMES}
    assert totals["shard+ckpt+ema-cpu"] == min(totals.values()) and totals["none"] == max(totals.values())


def test_bf16_gathers_halve_the_gathered_bytes_and_the_gather_traffic():
    inp = memory.MemoryInputs.for_model("JiT-L/16", 256, world_size=2, accum=4)
    auto, fp32 = strategy.parse("shard"), strategy.parse("shard").model_copy(update={"shard_gather": "fp32"})
    a, f = ({i.name: i.bytes for i in strategy.predict(inp, m, 8).items} for m in (auto, fp32))
    pb = param_breakdown(inp.variant, 256)
    block = pb.blocks // inp.variant.depth  # the blocks gathered at 2 B instead of 4 (the root stays at 4)
    assert f["fsdp gathered"] - a["fsdp gathered"] == 2 * strategy_memory.GATHER_PREFETCH * block
    assert a["autocast weight cache"] < 0.02 * f["autocast weight cache"]  # only the root's weights are cast
    assert a["weights"] == f["weights"] and a["adamw state"] == f["adamw state"]  # the sharded state stays fp32
    plain = strategy.PlainStep(total_s=10.0, compute_s=9.0, allreduce_s=0.0, bus_gbs=10.0)
    ta, tf = (strategy.step_cost(inp, m, plain, accum=4).extra_s for m in (auto, fp32))
    # 2 all-gathers of the blocks at 2 B (the root's at 4), 1 reduce-scatter at 4
    assert ta / tf == pytest.approx((2 * (2 * pb.blocks + 4 * (pb.trainable - pb.blocks)) + 4 * pb.trainable)
                                    / (12 * pb.trainable))


def test_the_plan_gathers_in_fp32_only_when_the_run_is_fp32():
    assert plan("2xRTX3060", L16).train.memory.shard_gather == "auto"
    fp32 = L16.model_copy(update={"train": L16.train.model_copy(update={"precision": "fp32"})})
    forced = plan("2xRTX3060", fp32, strategy="shard")
    assert forced.train.memory.shard and forced.train.memory.shard_gather == "fp32"
    bf16 = plan("2xRTX3060", L16, strategy="shard")
    assert bf16.estimates.epoch_time_s < forced.estimates.epoch_time_s  # half the all-gather bytes


def test_doctor_c14_catches_bf16_on_a_card_without_it():
    from types import SimpleNamespace

    from jitplan.doctor.checks_gpu import check_precision
    from jitplan.runspec import RunSpec

    train = TrainConfig(world_size=2, batch_per_gpu=8, precision="bf16", data=DataConfig(kind="digits", num_workers=0))
    facts = RunSpec.from_train(train)
    gpus = [SimpleNamespace(index=i, name="Tesla T4", compute_capability="7.5") for i in range(2)]  # as NVML says
    f = check_precision(SimpleNamespace(plan=facts, gpus=gpus))
    assert f.level == "fail" and "Tesla T4" in f.found and "fp16" in f.fix
    fp16 = train.model_copy(update={"precision": "fp16"})
    ctx16 = SimpleNamespace(plan=facts.with_train(fp16), gpus=gpus)
    assert check_precision(ctx16).level == "pass"


# --------------------------------------------------------------------------- against a traced step

def _train(variant: str, img: int) -> TrainConfig:
    return TrainConfig(model=ModelConfig(variant=variant, img_size=img), data=DataConfig(kind="digits"))


@pytest.mark.slow
@pytest.mark.parametrize(("name", "world", "batch", "gather"), [
    ("ckpt", 1, 16, "auto"), ("ema-cpu", 1, 16, "auto"),
    ("shard", 2, 16, "fp32"), ("shard+ckpt", 2, 16, "fp32"), ("shard", 4, 16, "fp32"),
    ("shard+ckpt+ema-cpu", 2, 2, "fp32"),
    ("shard", 2, 16, "auto"), ("shard+ckpt", 2, 16, "auto"), ("shard+ckpt+ema-cpu", 2, 2, "auto")])
def test_memory_model_matches_a_traced_step(name, world, batch, gather):
    """MemTracker on FakeTensorMode (nothing allocated; FSDP2's FSDPMemTracker on rank 0 of a fake process group
    for sharding): the step's peak tensor bytes within 5%. The sharded cases peak in different phases (the
    forward's end; the backward's tail with checkpointing), so each term of the sharded model is exercised, with
    fp32 gathers and with bf16 gathers (``shard_gather: auto`` under bf16 autocast: no autocast weight cache)."""
    from jitplan.planner.strategy_trace import trace_strategy

    m = strategy.parse(name).model_copy(update={"shard_gather": gather})
    traced = trace_strategy(_train("JiT-B/16", 64), m, micro_batch=batch, world=world)
    inp = memory.MemoryInputs.for_model("JiT-B/16", 64, accum=1, world_size=world)
    assert strategy.predict(inp, m, batch).tensor_peak == pytest.approx(traced, rel=0.05)


@pytest.mark.slow
def test_the_traced_step_refuses_what_it_cannot_build():
    pytest.importorskip("torch")
    from jitplan.planner.traced_step import TrainingStep

    cfg = _train("JiT-Tiny/4", 16)
    with pytest.raises(ValueError, match="micro_batch"):
        TrainingStep(cfg, 0)
    with pytest.raises(ValueError, match="device mesh"):  # a sharded step needs its ranks
        TrainingStep(cfg, 2, memory=strategy.parse("shard"))
