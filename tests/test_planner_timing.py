"""The time model (jitplan.planner.timing): every term present and sourced, the right term moves with each knob."""

from __future__ import annotations

from dataclasses import replace

import pytest

from jitplan.hardware.catalog import lookup
from jitplan.hardware.spec import hardware_from_flags
from jitplan.planner import timeouts, timing
from jitplan.planner.plan import make_plan
from jitplan.planner.timing import TimeInputs, train_step_time
from jitplan.schemas import PlanOptions, load_recipe

RTX3060 = lookup("RTX 3060")
STORY = TimeInputs.for_model("JiT-B/16", RTX3060, micro_batch=16, world_size=2, compile=True, attention="exact",
                             workers_per_rank=9)


def test_terms_sum_to_the_step_and_each_names_its_rate():
    st = train_step_time(STORY)
    assert st.total_s == pytest.approx(sum(t.seconds for t in st.terms))
    names = [t.name for t in st.terms]
    assert names[:4] == ["tensor", "fp32 attention", "elementwise traffic", "optimizer + EMA"]
    assert "all-reduce" in names and all(t.seconds >= 0 and t.why for t in st.terms)
    assert "no P2P (through host memory): 12.9 GB/s bus" in next(t.why for t in st.terms if t.name == "all-reduce")


def test_exact_attention_pays_fp32_and_traffic_that_sdpa_does_not():
    exact, sdpa = train_step_time(STORY), train_step_time(replace(STORY, attention="sdpa"))
    assert exact.get("fp32 attention") > 0 and sdpa.get("fp32 attention") == 0
    assert exact.get("elementwise traffic") > sdpa.get("elementwise traffic")
    assert exact.total_s > sdpa.total_s


def test_compile_cuts_the_elementwise_traffic_only():
    compiled, eager = train_step_time(STORY), train_step_time(replace(STORY, compile=False))
    assert compiled.get("tensor") == eager.get("tensor")
    assert compiled.get("elementwise traffic") == pytest.approx(
        timing.COMPILE_TRAFFIC * eager.get("elementwise traffic"), rel=0.05)


def test_accumulation_pays_a_gradient_add_per_extra_micro_step():
    """Same images per GPU, split finer: each micro-step after the first adds 12 B/param of .grad traffic."""
    from jitmodel.counts import param_breakdown

    one, four = train_step_time(STORY), train_step_time(replace(STORY, micro_batch=4, accum=4))
    assert one.get("gradient accumulation") == 0 and "gradient accumulation" not in [t.name for t in one.terms]
    bw = RTX3060.mem_bw_gbs * 1e9 * timing.ETA_BW
    trainable = param_breakdown(STORY.variant, 256).trainable
    assert four.get("gradient accumulation") == pytest.approx(3 * 12 * trainable / bw)
    assert four.get("tensor") == pytest.approx(one.get("tensor")) and four.total_s > one.total_s


def test_tiny_eager_micro_steps_are_launch_bound_and_compiled_large_ones_are_not():
    """The host issues ~12.9k kernels per eager B/16 micro-step (5 us each, 64 ms): at micro-batch 1 the GPU
    work is shorter than that, so the step waits on launches; compiled at 16 it does not."""
    assert train_step_time(STORY).get("launch-bound") == 0
    tiny = replace(STORY, micro_batch=1, accum=16, compile=False)
    st = train_step_time(tiny)
    kernels = timing.KERNELS_PER_BLOCK["eager"] * STORY.variant.depth + timing.KERNELS_OUTSIDE
    gpu = sum(st.get(n) for n in ("tensor", "fp32 attention", "elementwise traffic", "gradient accumulation"))
    assert st.get("launch-bound") == pytest.approx(16 * (kernels * timing.LAUNCH_S - gpu / 16))
    assert st.get("launch-bound") > 0.2 * st.total_s
    # per image, splitting finer always costs: micro 1 x 16 > micro 4 x 4 > micro 16 x 1
    times = [train_step_time(replace(STORY, micro_batch=m, accum=16 // m, compile=False)).total_s for m in (1, 4, 16)]
    assert times[0] > times[1] > times[2]


def test_allreduce_by_link_kind_and_none_on_one_gpu():
    assert train_step_time(replace(STORY, world_size=1)).get("all-reduce") == 0
    pcie = train_step_time(STORY).get("all-reduce")
    h100 = train_step_time(replace(STORY, gpu=lookup("H100 SXM"))).get("all-reduce")
    assert pcie > 0.03 and h100 < pcie / 10
    assert timing.link_kind(RTX3060, nodes=2) == "network"


def test_a_starved_loader_bounds_the_step():
    slow = train_step_time(replace(STORY, gpu=lookup("H100 SXM"), workers_per_rank=2, micro_batch=64))
    assert slow.bound_by == "data" and slow.get("data wait") > 0
    assert train_step_time(STORY).bound_by == "gpu"
    inline = train_step_time(replace(STORY, workers_per_rank=0))
    assert inline.get("data (in process)") == pytest.approx(16 / timing.DECODE_IMG_PER_S)


def test_evaluation_uses_the_inference_rate_and_scales_with_images():
    one = timing.eval_time_s("JiT-B/16", RTX3060, num_images=1000, nfe=99, world_size=2, compile=True)
    assert timing.eval_time_s("JiT-B/16", RTX3060, num_images=2000, nfe=99, world_size=2, compile=True) == \
        pytest.approx(2 * one)
    # a forward is cheaper per image than a third of a training step (no optimizer, comm, host syncs)
    train_per_image = train_step_time(STORY).total_s / 16
    assert timing.forward_time_per_image("JiT-B/16", RTX3060, compile=True) < train_per_image / 3


def story_plan():
    return make_plan(hardware_from_flags("2xRTX3060", host_ram="24GB"), load_recipe("JiT-B/16"),
                     PlanOptions(batch_per_gpu=16, policy="scale-lr", lr_scaling="linear"))


def test_story_plan_memory_within_10_percent_of_the_measured_6_6_gib():
    plan = story_plan()  # uncalibrated: priors only
    assert plan.estimates.time_source == "prior"
    assert abs(plan.estimates.memory_per_gpu_bytes / 2**30 - 6.6) / 6.6 < 0.10


def test_story_plan_timeout_is_minutes_from_the_step_and_the_evaluation_chunks():
    """Before: 2.5 x the whole 7.7 h evaluation (~19 h; 1.2 d calibrated). Now: at most 60 min."""
    plan = story_plan()
    est = plan.estimates
    assert plan.train.dist_timeout_s == est.dist_timeout_s
    assert timeouts.DIST_TIMEOUT_MIN_S <= est.dist_timeout_s <= 3600
    assert est.dist_timeout_s >= timeouts.DIST_TIMEOUT_STEPS * est.step_time_s
    assert est.dist_timeout_s >= timeouts.DIST_TIMEOUT_MARGIN * est.eval_chunk_s
    assert est.eval_chunk_s <= timeouts.EVAL_CHUNK_S and est.eval_chunk_images % plan.train.eval.gen_batch == 0
    row = next(r for r in plan.rows if r.quantity == "process-group timeout")
    assert "chunks of" in row.why and "init_process_group" in row.why
    one = make_plan(hardware_from_flags("1xRTX3060", host_ram="24GB"), load_recipe("JiT-B/16"), PlanOptions())
    assert one.train.dist_timeout_s is None
