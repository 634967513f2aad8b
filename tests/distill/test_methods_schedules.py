"""Schedules' values at given steps (Guided-OPD decay, TCOD depth curricula)."""

import math

import pytest

from madopd_distill.schedules import (Constant, Cosine, Exponential, Linear, Step, b2f_replay_point, f2b_window,
                                      make_schedule)


def test_constant_linear_cosine_values():
    assert Constant(0.3)(0) == Constant(0.3)(10_000) == 0.3
    lin = Linear(1.0, 0.0, total_steps=10)
    assert [lin(s) for s in (0, 5, 10, 20)] == [1.0, 0.5, 0.0, 0.0]
    cos = Cosine(1.0, 0.0, total_steps=10)
    assert cos(0) == 1.0 and cos(10) == 0.0 and cos(30) == 0.0
    assert cos(5) == pytest.approx(0.5)
    assert cos(2) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.2)))
    assert cos(2) > lin(2)  # cosine keeps the teacher longer early on


def test_exponential_decays_to_zero_with_floor():
    exp = Exponential(1.0, gamma=0.5, floor=0.01)
    assert [exp(s) for s in range(4)] == [1.0, 0.5, 0.25, 0.125]
    assert exp(6) == 0.015625 and exp(7) == 0.0  # 0.0078 < floor -> exactly 0
    assert Exponential(1.0, gamma=0.5)(30) > 0  # the pure exponential never reaches 0


def test_tcod_depth_schedules():
    # F2B: W = 1 + step // k   (TCOD ALFWorld config: k = checkpoint_steps = 6)
    assert [f2b_window(s, 6) for s in (0, 5, 6, 11, 12, 249)] == [1, 1, 2, 2, 3, 42]
    # B2F: c = max(0, L - 1 - step // k)
    assert [b2f_replay_point(s, 6, expert_length=5) for s in (0, 6, 12, 24, 30, 1000)] == [4, 3, 2, 0, 0, 0]
    assert b2f_replay_point(0, 1, expert_length=0) == 0
    # general form: min(k_start + floor(n / eta), k_max)
    step = Step(k_start=2, eta=3, k_max=5)
    assert [step(n) for n in (0, 2, 3, 8, 9, 100)] == [2, 2, 3, 4, 5, 5]


def test_make_schedule_and_bad_input():
    assert make_schedule(0.25)(7) == 0.25
    assert make_schedule({"kind": "linear", "start": 1, "end": 0, "total_steps": 4})(2) == 0.5
    assert make_schedule({"kind": "step", "k_start": 1, "eta": 2, "k_max": 3})(4) == 3
    with pytest.raises(ValueError, match="unknown schedule kind 'cosin'"):
        make_schedule({"kind": "cosin"})
    with pytest.raises(ValueError, match="bad fields"):
        make_schedule({"kind": "linear", "start": 1})
    with pytest.raises(ValueError):
        Linear(1, 0, total_steps=0)
    with pytest.raises(ValueError):
        Exponential(1, gamma=1.5)
    with pytest.raises(ValueError):
        Step(k_start=3, eta=1, k_max=2)
    with pytest.raises(ValueError):
        Constant(1.0)(-1)
    with pytest.raises(ValueError):
        f2b_window(3, 0)
