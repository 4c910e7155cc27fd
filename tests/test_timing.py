"""StageTimer: seconds per stage, nested stages taken out of the outer one, the rest under `other`."""
from __future__ import annotations

import time

import pytest

from rlvr_cli.timing import StageTimer


def _sleep(s: float) -> None:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < s:
        pass


def test_stages_add_up_and_repeat_visits_accumulate():
    timer = StageTimer()
    t0 = time.perf_counter()
    for _ in range(2):  # DAPO's refill rounds alternate generation and reward
        with timer.stage("gen", tokens=100):
            _sleep(0.01)
        with timer.stage("reward"):
            _sleep(0.005)
    _sleep(0.01)  # outside every stage
    m = timer.metrics(time.perf_counter() - t0)
    assert set(m) == {"timing_s/gen", "timing_s/reward", "timing_s/other", "timing_s/step", "perf/tokens_per_s/gen"}
    assert m["timing_s/gen"] >= 0.02 and m["timing_s/reward"] >= 0.01 and m["timing_s/other"] >= 0.01
    assert m["timing_s/gen"] + m["timing_s/reward"] + m["timing_s/other"] == pytest.approx(m["timing_s/step"])
    assert m["perf/tokens_per_s/gen"] == pytest.approx(200 / m["timing_s/gen"])


def test_a_nested_stage_is_taken_out_of_the_outer_one():
    timer = StageTimer()
    with timer.stage("update_actor"):
        _sleep(0.01)
        with timer.stage("method"):  # a method's mini-batch statistics inside the update
            _sleep(0.02)
    total = timer.seconds["update_actor"] + timer.seconds["method"]
    assert timer.seconds["method"] >= 0.02 and timer.seconds["update_actor"] < total - 0.019


def test_move_books_seconds_under_another_stage_and_reset_clears():
    timer = StageTimer()
    timer.add("gen", 1.0)
    timer.move("gen", "weight_sync", 0.25)
    timer.move("gen", "weight_sync", 5.0)  # never more than the source has
    assert timer.seconds == {"gen": 0.0, "weight_sync": 1.0}
    timer.reset()
    assert timer.metrics(0.5) == {"timing_s/other": 0.5, "timing_s/step": 0.5}
