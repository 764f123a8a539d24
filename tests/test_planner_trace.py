"""The tracer (FakeTensorMode + MemTracker over jitmodel's real training step) and the analytic model agree.

The constants were fitted on B/16, B/32 and L/16 traces (benchmarks/bench_memory_trace.py); a tiny variant
at another resolution is out of sample and must still agree.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from jitmodel.config import DataConfig, ModelConfig, TrainConfig  # noqa: E402
from jitplan.planner import memory  # noqa: E402
from jitplan.planner.plan import memory_inputs  # noqa: E402
from jitplan.planner.trace import trace_step  # noqa: E402


def tiny(attention: str) -> TrainConfig:
    return TrainConfig(model=ModelConfig(variant="JiT-Tiny/4", img_size=32, num_classes=10, attention=attention),
                       data=DataConfig(kind="digits"), compile=False)


@pytest.fixture(scope="module")
def exact_traces():
    cfg = tiny("exact")
    return cfg, {b: trace_step(cfg, b) for b in (8, 16, 24)}


@pytest.mark.slow
def test_analytic_within_3_percent_of_trace(exact_traces):
    cfg, traces = exact_traces
    for c, res in ((cfg, traces[24]), (tiny("sdpa"), trace_step(tiny("sdpa"), 24))):
        predicted = memory.predict(memory_inputs(c, world_size=1, accum=1), 24).tensor_peak
        assert abs(predicted - res.peak_bytes) / res.peak_bytes < 0.03, (c.model.attention, predicted, res.peak_bytes)


@pytest.mark.slow
def test_trace_is_affine_in_batch_and_sees_the_fixed_state(exact_traces):
    _, traces = exact_traces
    p8, p16, p24 = (traces[b].peak_bytes for b in (8, 16, 24))
    assert abs((p24 - p16) - (p16 - p8)) <= 0.01 * (p16 - p8)
    r = traces[8]
    # fp32 weights, AdamW m+v and two EMAs: 4 + 8 + 8 bytes per parameter.
    assert r.by_category["Optstate"] >= 2 * r.by_category["Parameter"] * 0.99
    assert r.by_category["Other"] >= 2 * r.by_category["Parameter"] * 0.99


def test_trace_rejects_bad_batch():
    with pytest.raises(ValueError, match="micro_batch"):
        trace_step(tiny("exact"), 0)
