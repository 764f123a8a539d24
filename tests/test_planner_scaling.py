"""Batch splitting and hyper-parameter scaling rules."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jitplan.planner.scaling import choose_accumulation, scale_hparams, warmup_steps


def test_exact_split_preferred():
    assert choose_accumulation(1024, 2, 21) == (16, 32)
    assert choose_accumulation(1024, 8, 128) == (128, 1)
    assert choose_accumulation(1024, 8, 500) == (128, 1)  # never above the per-rank share


def test_overshoot_when_no_exact_split():
    b, a = choose_accumulation(1024, 3, 50)
    assert b <= 50 and b * a * 3 >= 1024 and b * a * 3 - 1024 < 3 * a


def test_nothing_fits():
    with pytest.raises(ValueError, match="no micro-batch"):
        choose_accumulation(1024, 2, 0)


@settings(max_examples=200, deadline=None)
@given(target=st.integers(1, 8192), world=st.integers(1, 64), bmax=st.integers(1, 2048))
def test_split_reaches_target(target, world, bmax):
    b, a = choose_accumulation(target, world, bmax)
    assert 1 <= b <= bmax
    assert b * a * world >= target
    assert b * a * world - target < world * a  # overshoot below one sample per rank per micro-step


@settings(max_examples=200, deadline=None)
@given(target=st.integers(1, 4096), world=st.integers(1, 32), bmax=st.integers(1, 1024), more=st.integers(0, 1024))
def test_more_room_never_smaller_micro_batch(target, world, bmax, more):
    assert choose_accumulation(target, world, bmax + more)[0] >= choose_accumulation(target, world, bmax)[0]


def test_sqrt_rule_malladi():
    hp = scale_hparams(2e-4, (0.9, 0.95), 1e-8, (0.9999, 0.9996), kappa=1 / 16, rule="sqrt")
    assert hp.lr == pytest.approx(5e-5)
    assert hp.betas == (0.99375, 0.996875)
    assert hp.eps == pytest.approx(4e-8)
    assert hp.ema_decays[0] == pytest.approx(0.9999 ** (1 / 16))
    assert hp.ema_decays[0] == pytest.approx(0.99999375, abs=1e-9)
    assert hp.ema_decays[1] == pytest.approx(0.999975, abs=1e-7)


def test_linear_rule_keeps_betas():
    hp = scale_hparams(2e-4, (0.9, 0.95), 1e-8, (0.9999, 0.9996), kappa=0.25, rule="linear")
    assert hp.lr == pytest.approx(5e-5) and hp.betas == (0.9, 0.95) and hp.eps == 1e-8


def test_kappa_one_changes_nothing():
    hp = scale_hparams(2e-4, (0.9, 0.95), 1e-8, (0.9999, 0.9996), kappa=1.0, rule="sqrt")
    assert (hp.lr, hp.betas, hp.ema_decays) == (2e-4, (0.9, 0.95), (0.9999, 0.9996))


def test_bad_rule_and_kappa():
    with pytest.raises(ValueError, match="rule"):
        scale_hparams(1e-4, (0.9, 0.95), 1e-8, (0.99,), 0.5, "cubic")
    with pytest.raises(ValueError, match="kappa"):
        scale_hparams(1e-4, (0.9, 0.95), 1e-8, (0.99,), 0.0, "linear")


def test_warmup_in_epochs():
    assert warmup_steps(5, 1251) == 6255
    assert math.isclose(warmup_steps(5, 40036), 200180)
