"""The analytic memory model: breakdown, regimes, monotonicity, the largest micro-batch that fits."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jitmodel.counts import param_count
from jitplan.planner import memory, strategy_memory
from jitplan.planner.memory import MemoryInputs, predict

B16 = MemoryInputs.for_model("JiT-B/16", 256)


def test_breakdown_sums_to_total():
    pred = predict(MemoryInputs.for_model("JiT-B/16", 256, world_size=2, accum=4), 16)
    assert sum(i.bytes for i in pred.items) == pred.total
    names = [i.name for i in pred.items]
    for name in ("weights", "adamw state", "ema", "gradients", "ddp buckets", "activations", "cuda context", "nccl",
                 "allocator headroom"):
        assert name in names


def test_fixed_state_is_24_bytes_per_param_with_accumulation():
    inp = MemoryInputs.for_model("JiT-L/16", 256, accum=2)
    core = sum(i.bytes for i in memory.fixed_items(inp) if i.name in ("weights", "gradients", "adamw state", "ema"))
    assert core / param_count("JiT-L/16") == pytest.approx(24, abs=0.02)
    assert core / 1e9 == pytest.approx(11.0, abs=0.1)


def test_gradients_only_under_the_peak_with_accumulation():
    one, many = predict(B16, 32), predict(MemoryInputs.for_model("JiT-B/16", 256, accum=8), 32)
    assert many.tensor_peak - one.tensor_peak == 4 * param_count("JiT-B/16")


def test_ddp_buckets_and_nccl_only_with_several_ranks():
    single, ddp = predict(B16, 8), predict(MemoryInputs.for_model("JiT-B/16", 256, world_size=2), 8)
    buckets = next(i.bytes for i in ddp.items if i.name == "ddp buckets")
    assert buckets == 4 * param_count("JiT-B/16")
    assert ddp.total - single.total == pytest.approx(
        memory.NCCL_BYTES["pcie"] + buckets * (1 + memory.ALLOCATOR_HEADROOM),
                                                     abs=2)
    nvl = predict(MemoryInputs.for_model("JiT-B/16", 256, world_size=2, nvlink=True), 8)
    assert nvl.total - ddp.total == memory.NCCL_BYTES["nvlink"] - memory.NCCL_BYTES["pcie"]
    view = MemoryInputs.for_model("JiT-B/16", 256, world_size=2, ddp_bucket_view=True)
    assert "ddp buckets" not in [i.name for i in predict(view, 8).items]


def test_compile_and_sdpa_save_activation_memory():
    eager = memory.activation_per_sample(B16)
    compiled = memory.activation_per_sample(MemoryInputs.for_model("JiT-B/16", 256, compile=True))
    sdpa = memory.activation_per_sample(MemoryInputs.for_model("JiT-B/16", 256, attention="sdpa"))
    assert compiled < 0.75 * eager and sdpa < eager


def test_optimizer_step_peak_at_tiny_batches_with_foreach():
    foreach = MemoryInputs.for_model("JiT-B/16", 256, fused_adamw=False)
    assert any(i.name == "optimizer step" for i in predict(foreach, 1).items)
    assert predict(foreach, 1).tensor_peak >= 28 * param_count("JiT-B/16") * 0.99


def test_batch_must_be_positive():
    with pytest.raises(ValueError, match="micro_batch"):
        predict(B16, 0)


def max_micro_batch(inp: MemoryInputs, target: int) -> int:
    """The planner's one solver, under no memory strategy (the plain model these tests check)."""
    return strategy_memory.max_micro_batch(inp, strategy_memory.parse("none"), target)


def test_l16_does_not_fit_a_3060():
    assert max_micro_batch(MemoryInputs.for_model("JiT-L/16", 256, world_size=2), int(0.9 * 12288 * 2**20)) == 0


variants = st.sampled_from(["JiT-B/16", "JiT-L/16", "JiT-H/16", "JiT-B/32"])
mems = st.integers(min_value=4 * 2**30, max_value=200 * 2**30)


@settings(max_examples=60, deadline=None)
@given(variant=variants, world=st.integers(1, 16), compile_=st.booleans(), accum=st.integers(1, 4), mem=mems)
def test_chosen_batch_fits_and_the_next_does_not(variant, world, compile_, accum, mem):
    img = 512 if variant.endswith("/32") else 256
    inp = MemoryInputs.for_model(variant, img, world_size=world, compile=compile_, accum=accum)
    b = max_micro_batch(inp, mem)
    if b > 0:
        assert predict(inp, b).total <= mem
    assert predict(inp, b + 1).total > mem


@settings(max_examples=60, deadline=None)
@given(variant=variants, mem=mems, extra=st.integers(0, 50 * 2**30))
def test_more_memory_never_gives_a_smaller_micro_batch(variant, mem, extra):
    img = 512 if variant.endswith("/32") else 256
    inp = MemoryInputs.for_model(variant, img, world_size=2)
    assert max_micro_batch(inp, mem + extra) >= max_micro_batch(inp, mem)


@settings(max_examples=40, deadline=None)
@given(b=st.integers(8, 512))  # from 8 on the end of the forward is the peak
def test_memory_is_affine_in_batch(b):
    d = predict(B16, b + 1).tensor_peak - predict(B16, b).tensor_peak
    assert d == pytest.approx(memory.activation_per_sample(B16), abs=2)


def test_headroom_is_5_percent_of_the_allocator_bytes_ddp_buckets_included():
    pred = predict(MemoryInputs.for_model("JiT-B/16", 256, world_size=2), 16)
    outside = ("allocator headroom", "cuda context", "nccl")
    allocator = sum(i.bytes for i in pred.items if i.name not in outside)
    headroom = next(i.bytes for i in pred.items if i.name == "allocator headroom")
    assert headroom == memory.headroom_bytes(allocator) == int(0.05 * allocator)


def test_step_phase_peak_does_not_keep_the_autocast_weight_cache():
    # H/16 compiled at batch 1: the optimizer step is the peak; the bf16 weight copies are freed by then.
    inp = MemoryInputs.for_model("JiT-H/16", 256, compile=True, fused_adamw=False)
    pred = predict(inp, 1)
    names = {i.name: i.bytes for i in pred.items}
    assert "optimizer step" in names
    p = param_count("JiT-H/16")
    fixed_no_cache = sum(i.bytes for i in memory.fixed_items(inp) if i.name != "autocast weight cache")
    # weights + AdamW + EMAs + gradients + the foreach copy, and nothing else, at the step
    assert pred.tensor_peak == fixed_no_cache + memory.step_phase_bytes(inp)
    assert pred.tensor_peak == pytest.approx(28 * p, rel=0.01)
