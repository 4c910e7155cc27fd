"""Arms in ``rlvr analyze``: runs grouped by setting (seeds pooled), one colour per group, one law fit per arm."""
import json
import math

import numpy as np
import pytest

from rlvr_cli.analysis import plots
from rlvr_cli.analysis.analyze import analyze
from rlvr_cli.analysis.arms import arm_law_table, arm_laws, assign_groups, run_arm
from rlvr_cli.analysis.law import bootstrap_intervals
from tests.analysis.test_analyze import _run


@pytest.fixture
def figures(monkeypatch):
    """{file name: (figure's axes, legend labels of its first axes)} of every figure plots writes."""
    seen = {}
    save = plots._save

    def record(fig, path):
        legend = fig.axes[0].get_legend()
        seen[path.name] = (fig.axes, [t.get_text() for t in legend.get_texts()] if legend else [])
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", record)
    return seen


def test_run_arm_strips_the_seed():
    assert run_arm("runs/lab/entropy_bonus_small_s2") == "entropy_bonus_small"
    assert run_arm("runs/countdown_grpo_baseline_s10") == "countdown_grpo_baseline"
    assert run_arm("runs/sweep/clip_cov/seed3") == "clip_cov" and run_arm("runs/x/s1") == "x"
    assert run_arm("runs/r0") == "r0" and run_arm("runs/my_sweep_run") == "my_sweep_run"


def _lab(root, arms, seeds=(0, 1, 2), steps=12):
    for i, (arm, method) in enumerate(arms):
        for seed in seeds:
            _run(root, f"{arm}_s{seed}", method, seed, steps=steps, a=0.2 + 0.1 * i + 0.01 * seed, b=1.0)


LAB = [("baseline", "baseline"), ("entropy_bonus_small", "entropy_bonus"), ("entropy_bonus_large", "entropy_bonus"),
       ("entropy_bonus_xl", "entropy_bonus")]


def test_three_entropy_bonus_arms_get_three_groups_colours_and_law_fits(tmp_path, figures):
    _lab(tmp_path / "lab", LAB)
    result = analyze([str(tmp_path / "lab")])
    arms = ["baseline", "entropy_bonus_large", "entropy_bonus_small", "entropy_bonus_xl"]  # folder order
    assert [r["group"] for r in result["runs"]] == [a for a in arms for _ in range(3)]
    # every per-group figure: one line per arm (seeds pooled), legend outside the axes, titled "arm"
    for name in ("entropy.png", "val.png", "response_len.png", "method_frac.png", "cov.png", "law.png"):
        axes, labels = figures[name]
        assert [lab.split(":")[0] for lab in labels] == arms, name
        legend = axes[0].get_legend()
        assert legend.get_title().get_text() == "arm" and legend.get_bbox_to_anchor().x0 > axes[0].bbox.x1 - 1, name
    entropy_axes = figures["entropy.png"][0][0]
    colours = [tuple(line.get_color()) for line in entropy_axes.get_lines()]
    assert len(colours) == 4 and len(set(colours)) == 4
    assert len(entropy_axes.collections) == 4  # one ± std band per arm
    # the law: one fit per arm over its 3 seeds' 7 points each; the a / b panels name the arms
    laws = {g["group"]: g for g in result["arm_law"]}
    assert list(laws) == arms and all(g["n_points"] == 21 and g["law"]["n"] == 21 for g in laws.values())
    assert laws["entropy_bonus_small"]["runs"] == [f"entropy_bonus_small_s{s}" for s in range(3)]
    law_axes = figures["law.png"][0]
    assert len(law_axes) == 3
    assert [t.get_text() for t in law_axes[1].get_yticklabels()] == arms
    assert "fitted a" in law_axes[1].get_xlabel() and "fitted b" in law_axes[2].get_xlabel()
    assert sum(len(c.get_offsets()) for c in law_axes[0].collections) == 4 * 21  # the points, faint
    # the table, in the index and summary.json
    index = (tmp_path / "lab" / "analysis" / "index.md").read_text()
    assert "per arm, seeds pooled" in index and "| entropy_bonus_xl | 3 | 21 |" in index
    assert json.loads((tmp_path / "lab" / "analysis" / "summary.json").read_text())["arm_law"][0]["group"] == "baseline"


def test_one_arm_per_method_groups_by_method(tmp_path, figures):
    _run(tmp_path / "s", "arith_grpo_baseline_s0", "baseline", 0)
    _run(tmp_path / "s", "arith_grpo_clip_cov_s0", "clip_cov", 0)
    _run(tmp_path / "s", "arith_grpo_clip_cov_s1", "clip_cov", 1)
    result = analyze([str(tmp_path / "s")])
    assert [r["group"] for r in result["runs"]] == ["baseline", "clip_cov", "clip_cov"]
    axes, labels = figures["val.png"]
    assert labels == ["baseline (1 run)", "clip_cov (2 runs)"] and axes[0].get_legend().get_title().get_text() == "method"
    assert "band: ± 1 std" in axes[0].get_title() and "count in the legend" in axes[0].get_title()


def test_pooled_fit_equals_a_direct_least_squares_fit():
    rng = np.random.default_rng(0)
    runs = []
    for seed in range(3):
        h = rng.uniform(0.05, 0.6, size=5 + seed)
        r = -0.4 * np.exp(h) + 0.9 + rng.normal(0, 0.02, size=h.size)
        runs.append({"run": f"arm_s{seed}", "dir": f"/x/arm_s{seed}", "method": "m",
                     "law_points": [(10 * i, float(a), float(b)) for i, (a, b) in enumerate(zip(h, r))]})
    runs.append({"run": "other_s0", "dir": "/x/other_s0", "method": "m", "law_points": [(0, 0.1, 0.5), (10, 0.2, 0.4)]})
    assert assign_groups(runs) == ["arm", "other"]
    laws = arm_laws(runs)
    h = np.array([p[1] for r in runs[:3] for p in r["law_points"]])
    r = np.array([p[2] for r in runs[:3] for p in r["law_points"]])
    (a, b), *_ = np.linalg.lstsq(np.stack([-np.exp(h), np.ones_like(h)], 1), r, rcond=None)
    fit = laws[0]["law"]
    assert laws[0]["n_points"] == fit["n"] == 18
    assert fit["a"] == pytest.approx(a, rel=1e-9) and fit["b"] == pytest.approx(b, rel=1e-9)
    pred = -a * np.exp(h) + b
    assert fit["r2"] == pytest.approx(1 - ((r - pred) ** 2).sum() / ((r - r.mean()) ** 2).sum())
    assert fit["a_ci"][0] < fit["a"] < fit["a_ci"][1] and fit["b_ci"][0] < fit["b"] < fit["b_ci"][1]
    assert laws[1]["law"] is None and "at least 3" in laws[1]["law_refused"]
    table = arm_law_table(laws)
    assert f"| arm | 3 | 18 | {fit['a']:.3g} [" in table and "| other | 1 | 2 | – |" in table


def test_bootstrap_is_deterministic_and_collapses_on_exact_points():
    h = [0.1, 0.2, 0.35, 0.5, 0.7, 0.9]
    exact = [-0.5 * math.exp(x) + 1.2 for x in h]
    ci = bootstrap_intervals(h, exact)
    assert ci["a"] == pytest.approx((0.5, 0.5)) and ci["b"] == pytest.approx((1.2, 1.2))
    assert ci["ceiling"] == pytest.approx((0.7, 0.7)) and 0 < ci["resamples"] <= 2000
    noisy = [y + 0.03 * (-1) ** i for i, y in enumerate(exact)]
    assert bootstrap_intervals(h, noisy) == bootstrap_intervals(h, noisy)
    assert bootstrap_intervals(h, noisy, seed=1) != bootstrap_intervals(h, noisy)


def test_pool_means_over_the_runs_at_each_step():
    steps, mean, std, n = plots.pool([([0, 10, 20], [0.1, 0.2, 0.3]), ([0, 10], [0.3, 0.4])])
    assert steps == [0, 10, 20] and n == [2, 2, 1]
    assert mean == pytest.approx([0.2, 0.3, 0.3]) and std == pytest.approx([math.sqrt(0.02), math.sqrt(0.02), 0.0])


def test_band_stays_inside_the_runs_range_when_one_seed_explodes():
    # entropies 0.1, 0.1, 5.6 at one step: mean 1.933, std 3.175, so mean − std < 0 (no entropy is negative)
    lower, upper = plots.band([([1], [0.1]), ([1], [0.1]), ([1], [5.6])])
    assert lower == pytest.approx([0.1]) and upper == pytest.approx([1.9333 + 3.1754], abs=1e-3)
    assert plots.band([([1, 2], [0.2, 0.4]), ([1, 2], [0.4, 0.4])]) == (pytest.approx([0.2, 0.4]), pytest.approx([0.4, 0.4]))


def test_an_exploded_arm_gets_a_log_axis_and_the_bulk_of_the_points():
    assert plots.wants_log([0.1, 0.12, 5.6]) and not plots.wants_log([0.1, 0.2, 0.3])
    assert not plots.wants_log([0.0, 0.5, 30.0])  # a zero cannot go on a log axis
    bulk = [0.1 + 0.001 * i for i in range(100)]
    assert plots.bulk_range(bulk) is None  # nothing far out: the whole range reads well
    lo, hi = plots.bulk_range(bulk + [5.6])
    assert lo < 0.1 and 0.19 < hi < 0.25  # the 5.6 (one exploded seed) is left off the axis


def test_law_plot_limits_its_axes_to_the_bulk_and_says_how_many_points_it_left_out(tmp_path, monkeypatch):
    runs = [{"run": f"a_s{i}", "method": "baseline", "group": "a",
             "law_points": [(s, 0.1 + 0.002 * s + 0.001 * i, 0.5 - 0.001 * s) for s in range(20)]} for i in range(3)]
    runs[0]["law_points"][-1] = (19, 5.6, 0.0)  # one exploded validation
    captured = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: captured.setdefault("fig", fig) and path)
    plots.law_plot(runs, tmp_path / "law.png")
    ax = captured["fig"].axes[0]
    assert ax.get_xlim()[1] < 1.0 and ax.get_ylim()[0] > 0.3
    assert "1 of 60 points lie outside the axes" in ax.get_xlabel()
