import math

import pytest

from rlvr_cli.methods.schedule import Schedule, schedule_value, select_count


def test_constant_ignores_time():
    assert schedule_value("constant", 0.3, t=7, total=10) == 0.3


def test_linear_with_and_without_hold():
    # no hold: u = t/10 -> 1·(1 − u)
    assert [schedule_value("linear", 1.0, t, 10) for t in (0, 5, 10, 12)] == pytest.approx([1.0, 0.5, 0.0, 0.0])
    # hold t_w=2: u = (t−2)/8; t=6 -> u=0.5 -> 0.5; end 0.2: 0.2 + 0.8·0.5 = 0.6
    assert schedule_value("linear", 1.0, 2, 10, hold=2) == pytest.approx(1.0)
    assert schedule_value("linear", 1.0, 6, 10, hold=2) == pytest.approx(0.5)
    assert schedule_value("linear", 1.0, 6, 10, end=0.2, hold=2) == pytest.approx(0.6)


def test_cosine_midpoint_and_end():
    # u=0.5: ½(1 + cos π/2) = 0.5; u=1: ½(1 + cos π) = 0
    assert schedule_value("cosine", 1.0, 5, 10) == pytest.approx(0.5)
    assert schedule_value("cosine", 1.0, 10, 10) == pytest.approx(0.0, abs=1e-12)
    assert schedule_value("cosine", 2.0, 0, 10, end=1.0) == pytest.approx(2.0)


def test_inv_sqrt_and_exp():
    # 1/sqrt(1 + 12/4) = 1/2; with hold 4: 1/sqrt(1 + 8/4) = 1/sqrt(3)
    assert schedule_value("inv_sqrt", 1.0, 12, 100, tau=4) == pytest.approx(0.5)
    assert schedule_value("inv_sqrt", 1.0, 12, 100, hold=4, tau=4) == pytest.approx(1 / math.sqrt(3))
    # 0.5^(3−1) = 0.25; before the hold ends: λ_0
    assert schedule_value("exp", 1.0, 3, 100, hold=1, gamma=0.5) == pytest.approx(0.25)
    assert schedule_value("exp", 1.0, 1, 100, hold=1, gamma=0.5) == pytest.approx(1.0)


def test_schedule_object_uses_fractions_of_the_run():
    s = Schedule(kind="linear", hold_frac=0.1)  # T=10 -> t_w = 1
    assert s.value(1.0, step=1, total_steps=10) == pytest.approx(1.0)
    assert s.value(1.0, step=10, total_steps=10) == 0.0  # annealed to exactly 0 at the last step
    # exp with gamma null reaches 1% of λ_0 at the last step: 0.01^((10−1)/(10−1))
    assert Schedule(kind="exp").value(2.0, 10, 10) == pytest.approx(0.02)
    # inv_sqrt: τ = 0.1·100 = 10, t_w = 10: step 50 -> 1/sqrt(1 + 40/10) = 1/sqrt(5)
    assert Schedule(kind="inv_sqrt").value(1.0, 50, 100) == pytest.approx(1 / math.sqrt(5))


def test_schedule_from_config_nodes_and_errors():
    assert Schedule.from_any(None).kind == "constant"
    assert Schedule.from_any("cosine").kind == "cosine"
    assert Schedule.from_any({"kind": "exp", "gamma": 0.9}).gamma == 0.9
    with pytest.raises(ValueError, match="constant, linear, cosine, inv_sqrt, exp"):
        Schedule.from_any({"kind": "warmup"})
    with pytest.raises(ValueError, match="hold_frac"):
        Schedule.from_any({"kind": "linear", "hold": 3})


def test_select_count_floor_and_annealed_zero():
    assert select_count(2e-4, 100) == 1  # ratio·N = 0.02 < 1 -> still 1 token
    assert select_count(0.25, 10) == 2  # floor(2.5)
    assert select_count(0.0, 10_000) == 0  # annealed to exactly 0 -> none (floor bypassed)
    assert select_count(0.5, 0) == 0  # no valid token
    assert select_count(1.0, 7) == 7
