"""benchmarks/vs_trl.py: the figures it reads from a run and how it sums rounds up (no training here)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import vs_trl  # noqa: E402


def test_rlvr_figures_skip_the_warmup_step_and_split_the_step_by_stage():
    rows = [{"step": 0, "val/arith/avg@2": 0.5},  # validation before training: not a step
            {"step": 1, "timing_s/step": 9.0, "timing_s/gen": 8.0, "timing_s/update_actor": 1.0},
            {"step": 2, "timing_s/step": 1.0, "timing_s/gen": 0.5, "timing_s/update_actor": 0.4, "timing_s/other": 0.1},
            {"step": 3, "timing_s/step": 1.2, "timing_s/gen": 0.6, "timing_s/update_actor": 0.5, "timing_s/other": 0.1},
            {"step": 4, "timing_s/step": 1.4, "timing_s/gen": 0.7, "timing_s/update_actor": 0.6, "timing_s/other": 0.1}]
    fig = vs_trl.rlvr_figures(rows)
    assert fig["s_per_step"] == pytest.approx(1.2)
    assert fig["split"] == pytest.approx({"gen": 0.6, "update_actor": 0.5, "other": 0.1})
    old = vs_trl.rlvr_figures([{"step": 1, "perf/step_s": 2.0}, {"step": 2, "perf/step_s": 1.0}])
    assert old["s_per_step"] == 1.0 and old["split"] == {}  # a run from before the timings


def test_summary_ratios_and_a_missing_trl_column():
    rounds = {"rlvr": [{"s_per_step": 0.6, "split": {"gen": 0.3}}, {"s_per_step": 0.8, "split": {"gen": 0.5}},
                       {"s_per_step": 0.7, "split": {"gen": 0.4, "other": 0.1}}],
              "trl": [], "bare": [{"s_per_step": 1.0}, {"s_per_step": 0.7}, {"s_per_step": 0.8}]}
    res = vs_trl.summarize(rounds)
    assert res["s_per_step"] == pytest.approx({"rlvr": 0.7, "bare": 0.8}) and "rlvr_over_trl" not in res
    assert res["rlvr_over_bare"] == pytest.approx(0.875)
    assert res["rlvr_split"] == pytest.approx({"gen": 0.4, "other": 0.0})
    rounds["trl"] = [{"s_per_step": 1.4}]
    assert vs_trl.summarize(rounds)["rlvr_over_trl"] == pytest.approx(0.5)
