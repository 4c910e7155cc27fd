"""``rlvr report``: the sweep comparison table, from run folders written as the loop writes them."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rlvr_cli.errors import UserError
from rlvr_cli.report import (find_runs, format_split, markdown_table, order_stages, stage_shares, stage_split,
                              stage_table, summarize_run, trajectory)


def _run(folder, method, entropies, val, timings=None):
    """A run folder; ``timings``: one dict of ``timing_s/*`` keys per training step, merged into its row."""
    folder.mkdir(parents=True)
    (folder / "resolved_config.yaml").write_text(f"method:\n  name: {method}\n")
    rows = [{"step": 0, "val/arith/avg@2": val[0]}]
    for i, h in enumerate(entropies, start=1):
        rows.append({"step": i, "reward/mean": 0.5, "reward/accuracy": 0.25 * (i % 2), "actor/entropy": h,
                     "perf/step_s": 2.0})
    for row, t in zip(rows[1:], timings or []):
        row.update(t)
    rows[-1]["val/arith/avg@2"] = val[1]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_trajectory_means_over_fifths():
    assert trajectory([1, 1, 2, 2, 3, 3, 4, 4, 5, 5]) == [1, 2, 3, 4, 5]
    assert trajectory([1.0, 3.0]) == [1.0, 3.0]
    assert trajectory([]) == []


def test_summary_of_one_run(tmp_path):
    run = _run(tmp_path / "arith_grpo_siren_s0", "siren", [0.5, 0.4, 0.3, 0.2, 0.1], (0.30, 0.45))
    s = summarize_run(run)
    assert s["method"] == "siren" and s["steps"] == 5
    assert (s["val_start"], s["val_end"], s["val_best"]) == (0.30, 0.45, 0.45)
    assert (s["entropy_start"], s["entropy_end"]) == (0.5, 0.1)
    assert s["entropy_trajectory"] == pytest.approx([0.5, 0.4, 0.3, 0.2, 0.1])
    assert s["step_s_mean"] == 2.0


def test_sweep_folder_gives_one_row_per_run_from_the_cli(tmp_path):
    _run(tmp_path / "sweep" / "a_baseline", "baseline", [0.6, 0.5], (0.3, 0.4))
    _run(tmp_path / "sweep" / "b_clip_cov", "clip_cov", [0.6, 0.7], (0.3, 0.35))
    assert [p.name for p in find_runs([tmp_path / "sweep"])] == ["a_baseline", "b_clip_cov"]
    table = markdown_table([summarize_run(p) for p in find_runs([tmp_path / "sweep"])])
    assert "| a_baseline | baseline | 2 | 0.300 | 0.400 |" in table and "0.600 → 0.700" in table
    r = subprocess.run([sys.executable, "-m", "rlvr_cli.cli", "report", str(tmp_path / "sweep"), "--json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert [s["method"] for s in json.loads(r.stdout)] == ["baseline", "clip_cov"]


def test_no_runs_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="no metrics.jsonl"):
        find_runs([tmp_path])
    r = subprocess.run([sys.executable, "-m", "rlvr_cli.cli", "report", str(tmp_path / "nope")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no such run folder" in r.stderr and "Traceback" not in r.stderr


# run a: means gen 5, old_log_prob 1, update_actor 3, checkpoint 0.5 (every other step), other 0.5 = a 10 s step;
# ref logged as 0 (left out). run b: no other key, gen 2 + reward 1 + update_actor 1 = a 4 s step.
TIMINGS_A = [
    {"timing_s/gen": 4.0, "timing_s/old_log_prob": 1.0, "timing_s/ref": 0.0, "timing_s/update_actor": 3.0,
     "timing_s/other": 1.0, "timing_s/step": 9.0},
    {"timing_s/gen": 6.0, "timing_s/old_log_prob": 1.0, "timing_s/ref": 0.0, "timing_s/update_actor": 3.0,
     "timing_s/checkpoint": 1.0, "timing_s/other": 0.0, "timing_s/step": 11.0},
]
TIMINGS_B = [{"timing_s/update_actor": 1.0, "timing_s/gen": 2.0, "timing_s/reward": 1.0, "timing_s/step": 4.0}] * 2


def _timed_sweep(root):
    a = _run(root / "a_timed", "baseline", [0.6, 0.5], (0.3, 0.4), TIMINGS_A)
    _run(root / "b_timed", "clip_cov", [0.6, 0.7], (0.3, 0.35), TIMINGS_B)
    _run(root / "c_untimed", "siren", [0.6, 0.5], (0.3, 0.4))
    with (a / "metrics.jsonl").open("a") as f:  # a validation-only row with its own timing: not a training step
        f.write(json.dumps({"step": 3, "val/arith/avg@2": 0.5, "timing_s/val": 9.0, "timing_s/step": 9.0}) + "\n")
    return root


def test_stage_split_means_and_shares(tmp_path):
    root = _timed_sweep(tmp_path / "sweep")
    split = summarize_run(root / "a_timed")["stage_s"]
    assert list(split) == ["gen", "old_log_prob", "update_actor", "checkpoint", "other"]  # STAGE_ORDER, no ref / val
    assert split == pytest.approx({"gen": 5.0, "old_log_prob": 1.0, "update_actor": 3.0, "checkpoint": 0.5, "other": 0.5})
    assert stage_shares(split) == pytest.approx(
        {"gen": 0.5, "old_log_prob": 0.1, "update_actor": 0.3, "checkpoint": 0.05, "other": 0.05})
    assert format_split(split) == "gen 50% · old_log_prob 10% · update_actor 30% · checkpoint 5% · other 5%"
    b = summarize_run(root / "b_timed")["stage_s"]
    assert list(b) == ["gen", "reward", "update_actor"] and b == pytest.approx({"gen": 2.0, "reward": 1.0, "update_actor": 1.0})
    assert format_split(b) == "gen 50% · reward 25% · update_actor 25%"
    assert summarize_run(root / "c_untimed")["stage_s"] == {} and format_split({}) == "–"
    assert stage_split([{"step": 1, "reward/mean": 0.0, "perf/step_s": 2.0}]) == {}
    assert format_split({"gen": 999.0, "reward": 1.0}) == "gen 100% · reward <1%"
    assert order_stages({"other", "zzz", "val", "gen", "weight_sync"}) == ["gen", "weight_sync", "val", "zzz", "other"]


def test_report_shows_where_a_step_goes(tmp_path):
    root = _timed_sweep(tmp_path / "sweep")
    summaries = [summarize_run(p) for p in find_runs([root])]
    table = stage_table(summaries)
    assert "| a_timed | 10.00 | gen 50% · old_log_prob 10% · update_actor 30% · checkpoint 5% · other 5% |" in table
    assert "| b_timed | 4.00 | gen 50% · reward 25% · update_actor 25% |" in table
    assert "| c_untimed | – | – |" in table
    assert stage_table([summarize_run(root / "c_untimed")]) == ""  # no timings anywhere: no table
    r = subprocess.run([sys.executable, "-m", "rlvr_cli.cli", "report", str(root)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "where a step goes" in r.stdout and "| b_timed | 4.00 | gen 50% · reward 25% · update_actor 25% |" in r.stdout
    r = subprocess.run([sys.executable, "-m", "rlvr_cli.cli", "report", str(root), "--json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    stages = {s["run"]: s["stage_s"] for s in json.loads(r.stdout)}
    assert stages["a_timed"] == pytest.approx({"gen": 5.0, "old_log_prob": 1.0, "update_actor": 3.0, "checkpoint": 0.5,
                                               "other": 0.5})
    assert stages["c_untimed"] == {}


def test_report_of_untimed_runs_has_no_stage_table(tmp_path):
    _run(tmp_path / "old", "baseline", [0.6, 0.5], (0.3, 0.4))
    r = subprocess.run([sys.executable, "-m", "rlvr_cli.cli", "report", str(tmp_path / "old")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "| old | baseline |" in r.stdout and "where a step goes" not in r.stdout
