"""benchmarks/entropy_lab.py --quick: every lab arm trains end to end on Countdown and lands in the table."""
from __future__ import annotations

import importlib.util
import json
import math

import pytest

from rlvr_cli.paths import REPO_ROOT

SPEC = importlib.util.spec_from_file_location("entropy_lab", REPO_ROOT / "benchmarks" / "entropy_lab.py")
lab = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(lab)


def test_every_lab_recipe_is_an_arm():
    assert set(lab.ARMS) == set(lab.available_arms())
    with pytest.raises(SystemExit):
        lab.parse_args(["--arms", "baseline,nope"])


def test_plots_come_from_rlvr_analyze_one_colour_per_arm(tmp_path):
    """No plotting of its own: rlvr analyze over the arms and seeds asked for (a stale arm in the folder is
    left out), the entropy_bonus arms apart although they share a method."""
    from tests.analysis.test_analyze import _run

    for arm, method in (("baseline", "baseline"), ("entropy_bonus_small", "entropy_bonus"),
                        ("entropy_bonus_xl", "entropy_bonus"), ("stale", "siren")):
        for seed in (0, 1):
            _run(tmp_path, f"{arm}_s{seed}", method, seed, steps=6)
    assert not hasattr(lab, "plot_arms")
    figures = lab.analyze_lab(tmp_path, ["baseline", "entropy_bonus_small", "entropy_bonus_xl"], [0, 1])
    for name in ("entropy", "val", "law"):
        assert figures[name] == str(tmp_path / "analysis" / f"{name}.png")
    summary = json.loads((tmp_path / "analysis" / "summary.json").read_text())
    assert [g["group"] for g in summary["arm_law"]] == ["baseline", "entropy_bonus_small", "entropy_bonus_xl"]
    assert [g["n_points"] for g in summary["arm_law"]] == [8, 8, 8]  # validations at 0, 2, 4, 6 of both seeds


def _arm(entropy_end, val_end, *, seeds=3, entropy_ratio=0.6, selective_ratio=None, fork_ratio=None, std=0.01):
    return {"seeds": seeds, "entropy_end": entropy_end, "entropy_end_std": std, "entropy_ratio": entropy_ratio,
            "val_end": val_end, "val_end_std": std, "selective_ratio": selective_ratio, "fork_ratio": fork_ratio,
            "grad_ratio_median": 0.004}


def test_aims_name_every_claim_with_its_measured_figure():
    methods = {"baseline": _arm(0.10, 0.50, entropy_ratio=0.45, fork_ratio=0.40),
               "clip_cov": _arm(0.20, 0.40), "kl_cov": _arm(0.12, 0.48, std=0.1),
               "siren": _arm(0.10, 0.49, selective_ratio=0.22, fork_ratio=0.38),
               "kl_cov_annealed": _arm(0.13, 0.47), "entropy_bonus_small": _arm(0.1, 0.55),
               "entropy_bonus_xl": _arm(2.0, 0.30, entropy_ratio=12.6)}
    lines = lab.aims(methods)
    assert lines[0] == "baseline entropy end / start = 0.45 (aim ≤ 0.5): met"
    assert lines[1].startswith("clip_cov entropy end / baseline's = 2.00 (aim ≥ 1.5): met; gap +0.100")
    assert lines[1].endswith(": larger") and lines[2].endswith(": not larger")
    assert lines[3].startswith("siren selective entropy H_sel (last 5 steps) / its anchor = 0.22")
    assert "not met; forks' entropy (p80) end / start: siren 0.38, baseline 0.40" in lines[3]
    assert lines[4] == ("kl_cov_annealed val end = 0.470 vs baseline's 0.500 (aim: at or above): "
                        "not met (beyond the seed spread 0.010)")
    # only the bonus that keeps entropy up (end / start ≥ 1) is held to being biased below GRPO
    assert len(lines) == 6 and lines[5].startswith("entropy_bonus_xl (a constant bonus keeping entropy up")
    assert lines[5].endswith("val end = 0.300 (aim: below baseline's 0.500): met")


@pytest.mark.slow
def test_quick_mode_runs_every_arm_and_writes_the_json(tmp_path, capsys):
    out = tmp_path / "lab.json"
    result = lab.main(["--quick", "--out", str(tmp_path / "runs"), "--json", str(out), "--no-plots"])
    saved = json.loads(out.read_text())
    assert saved["methods"].keys() == set(lab.ARMS) and saved["quick"] is True
    for arm, m in saved["methods"].items():
        assert m["seeds"] == 1 and m["steps"] == 3, arm
        for key in ("entropy_start", "entropy_end", "val_start", "val_end", "pass_at_k_end"):
            assert m[key] is not None and math.isfinite(m[key]), (arm, key)
        assert 0 <= m["val_end"] <= m["pass_at_k_end"] <= 1 and m["entropy_start"] > 0
    # each arm ran its own method: the run's resolved config names it
    for arm in lab.ARMS:
        cfg = (tmp_path / "runs" / f"{arm}_s0" / "resolved_config.yaml").read_text()
        method = "entropy_bonus" if arm.startswith("entropy_bonus") else "kl_cov" if arm.startswith("kl_cov") else arm
        assert f"name: {method}\n" in cfg, arm
    table = capsys.readouterr().out
    assert all(f"| {arm} |" in table for arm in lab.ARMS) and "aim: baseline entropy end / start" in table
    # a second call reuses the finished runs instead of training again
    again = lab.main(["--quick", "--out", str(tmp_path / "runs"), "--no-plots"])
    assert "reused" in capsys.readouterr().out
    assert again["methods"]["baseline"]["entropy_end"] == result["methods"]["baseline"]["entropy_end"]
