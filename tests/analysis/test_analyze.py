"""``rlvr analyze`` on run folders laid out as ``rlvr train`` writes them (metrics.jsonl + resolved_config.yaml)."""
import json
import math

import pytest

from rlvr_cli.analysis.analyze import analyze, cov_pairs, law_points
from rlvr_cli.cli import main


def _run(root, name, method, seed, steps=12, val_every=2, a=0.4, b=1.0, slope=-2.0, timing=None):
    """A run whose entropy decays, validation follows R = −a·e^H + b, and ΔH(s) = slope·cov(s−1);
    ``timing``: ``timing_s/*`` keys logged on every training step."""
    d = root / name
    d.mkdir(parents=True)
    (d / "resolved_config.yaml").write_text(f"seed: {seed}\nmethod:\n  name: {method}\nalgo:\n  name: grpo\n")
    entropy = {s: 1.0 * math.exp(-0.15 * (s - 1)) for s in range(1, steps + 2)}
    rows = [{"step": 0, "val/arith/avg@2": -a * math.exp(entropy[1]) + b, "perf/val_s": 1.0}]
    cov = {}
    for s in range(1, steps + 1):
        cov[s] = (entropy[s + 1] - entropy[s]) / slope  # the term that predicts the next change
        row = {"step": s, "reward/mean": 0.5, "reward/accuracy": 0.5, "actor/entropy": entropy[s],
               "cov/mean": cov[s], "rollout/response_len_mean": 30.0 + s, "perf/step_s": 2.0,
               "ppo/clipfrac": 0.01, f"method/{method}/selected_frac": 0.002}
        row.update(timing or {})
        if s > 1:
            row["entropy/delta"] = entropy[s] - entropy[s - 1]
        if s % val_every == 0:
            # the entropy of these weights is logged by step s+1; the last validation has only its own step's
            row["val/arith/avg@2"] = -a * math.exp(entropy[s + 1 if s < steps else s]) + b
            row["perf/val_s"] = 1.0
        rows.append(row)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def test_table_plots_law_and_covariance_check(tmp_path):
    sweep = tmp_path / "sweep"
    _run(sweep, "arith_grpo_baseline_s0", "baseline", 0)
    _run(sweep, "arith_grpo_clip_cov_s0", "clip_cov", 0, a=0.3, b=0.9)
    _run(sweep, "arith_grpo_clip_cov_s1", "clip_cov", 1, steps=3, val_every=5)  # too few points for a law
    for step, acc in ((4, 0.2), (12, 0.5)):  # scripts/eval_checkpoints.sh output on the baseline
        d = sweep / "arith_grpo_baseline_s0" / "eval" / f"step_{step:06d}"
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps({"benchmarks": {"aime24": {"metrics": {"avg@4": acc, "pass@4": 1.0}}}}))
    result = analyze([str(sweep)])
    out = sweep / "analysis"
    runs = {r["run"]: r for r in result["runs"]}
    base = runs["arith_grpo_baseline_s0"]
    assert base["steps"] == 12 and base["seed"] == 0 and base["method"] == "baseline"
    assert base["entropy_start"] == pytest.approx(1.0) and base["entropy_end"] < 0.25
    assert base["response_len_start"] == 31.0 and base["response_len_end"] == 42.0
    assert base["wall_s"] == pytest.approx(12 * 2.0 + 7 * 1.0)
    # the law: each validation paired with the entropy of the same weights -> exact recovery
    assert base["law"]["a"] == pytest.approx(0.4) and base["law"]["b"] == pytest.approx(1.0)
    assert base["law"]["r2"] == pytest.approx(1.0) and base["law"]["ceiling"] == pytest.approx(0.6) and base["law"]["n"] == 7
    assert runs["arith_grpo_clip_cov_s0"]["law"]["a"] == pytest.approx(0.3)
    short = runs["arith_grpo_clip_cov_s1"]
    assert short["law"] is None and "at least 3" in short["law_refused"]
    # ΔH(s) = −2·cov(s−1) exactly: correlation −1
    assert base["cov_check"]["n"] == 11 and base["cov_check"]["pearson"] == pytest.approx(-1.0)
    assert base["method_frac_key"] == "ppo/clipfrac" and runs["arith_grpo_clip_cov_s0"]["method_frac_key"] == "method/clip_cov/selected_frac"
    assert base["evals"] == {"aime24/avg@4": {"steps": [4, 12], "accuracy": [0.2, 0.5]}}
    assert "aime24/avg@4 | 2 | 4: 0.200, 12: 0.500" in (out / "index.md").read_text()
    for name in ("entropy", "val", "response_len", "method_frac", "law", "cov", "eval"):
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000, name
        assert f"({name}.png)" in (out / "index.md").read_text() and f'src="{name}.png"' in (out / "index.html").read_text()
    assert json.loads((out / "summary.json").read_text())["runs"][0]["run"] == "arith_grpo_baseline_s0"
    # no run logs timing_s/*: no timing figure, no stage table
    assert not (out / "timing.png").exists() and "timing" not in result["figures"]
    assert base["stage_s"] == {} and "Where a step goes" not in (out / "index.md").read_text()


def test_timing_figure_and_stage_means(tmp_path):
    sweep = tmp_path / "sweep"
    _run(sweep, "a_s0", "baseline", 0, steps=4, timing={
        "timing_s/gen": 3.0, "timing_s/old_log_prob": 0.5, "timing_s/update_actor": 1.0, "timing_s/other": 0.5,
        "timing_s/step": 5.0})
    _run(sweep, "b_s0", "clip_cov", 0, steps=4, timing={
        "timing_s/gen": 1.0, "timing_s/ref": 0.4, "timing_s/update_actor": 2.0, "timing_s/weight_sync": 0.6,
        "timing_s/step": 4.0})
    _run(sweep, "c_s0", "siren", 0, steps=4)  # an older run: perf/step_s only
    result = analyze([str(sweep)])
    out = sweep / "analysis"
    png = out / "timing.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert result["figures"]["timing"] == str(png)
    assert "(timing.png)" in (out / "index.md").read_text() and 'src="timing.png"' in (out / "index.html").read_text()
    stages = {r["run"]: r["stage_s"] for r in json.loads((out / "summary.json").read_text())["runs"]}
    assert stages["a_s0"] == pytest.approx({"gen": 3.0, "old_log_prob": 0.5, "update_actor": 1.0, "other": 0.5})
    assert list(stages["b_s0"]) == ["gen", "ref", "update_actor", "weight_sync"]
    assert stages["c_s0"] == {}
    index = (out / "index.md").read_text()
    assert "| a_s0 | 5.00 | gen 60% · old_log_prob 10% · update_actor 20% · other 10% |" in index
    assert "| b_s0 | 4.00 | gen 25% · ref 10% · update_actor 50% · weight_sync 15% |" in index
    assert "| c_s0 | – | – |" in index


def test_pairing_rules():
    rows = [{"step": 0, "val/x/avg@1": 0.1}, {"step": 1, "reward/mean": 0, "actor/entropy": 0.9, "cov/mean": 0.2},
            {"step": 2, "reward/mean": 0, "actor/entropy": 0.7, "cov/mean": 0.1, "entropy/delta": -0.2, "val/x/avg@1": 0.3}]
    # val at step 0 <-> entropy of step 1 (the same weights); the last val falls back to its own step
    assert law_points(rows, "val/x/avg@1") == [(0, 0.9, 0.1), (2, 0.7, 0.3)]
    assert cov_pairs(rows) == [(2, 0.2, -0.2)]


def test_cli_json_and_bad_input(tmp_path, capsys):
    _run(tmp_path / "s", "r0", "baseline", 0)
    main(["analyze", str(tmp_path / "s"), "--json", "--fit-first", "4", "--out", str(tmp_path / "o")])
    data = json.loads(capsys.readouterr().out)
    law = data["runs"][0]["law"]
    assert law["fit_first"] == 4 and law["n_predicted"] == 3 and law["predict_rmse"] == pytest.approx(0.0, abs=1e-6)
    assert (tmp_path / "o" / "law.png").is_file()
    for args, msg in ((["analyze"], "usage"), (["analyze", str(tmp_path / "nope")], "no such run folder"),
                      (["analyze", str(tmp_path), "--bins"], "unknown option --bins"),
                      (["analyze", "dlogp", "rl=x"], "needs base=..., data=...")):
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == 2 and msg in capsys.readouterr().err
