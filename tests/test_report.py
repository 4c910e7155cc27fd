"""``rlvr report``: the sweep comparison table, from run folders written as the loop writes them."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rlvr_cli.errors import UserError
from rlvr_cli.report import find_runs, markdown_table, summarize_run, trajectory


def _run(folder, method, entropies, val):
    folder.mkdir(parents=True)
    (folder / "resolved_config.yaml").write_text(f"method:\n  name: {method}\n")
    rows = [{"step": 0, "val/arith/avg@2": val[0]}]
    for i, h in enumerate(entropies, start=1):
        rows.append({"step": i, "reward/mean": 0.5, "reward/accuracy": 0.25 * (i % 2), "actor/entropy": h,
                     "perf/step_s": 2.0})
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
