"""``rlvr analyze``'s "does the method act?" table (rlvr_cli/analysis/binding.py) on hand-made metric rows."""
import html
import json

import pytest

from rlvr_cli.analysis.binding import INERT_RATIO, binding_table, run_binding
from rlvr_cli.cli import main


def _rows(values, active=0.25, cos=-0.5):
    """Training rows of steps 1..len(values): ``method/grad_ratio`` where the value is not ``"-"``
    (a step that was not diagnosed), ``None`` as the metrics file writes an infinite ratio."""
    rows = [{"step": 0, "val/arith/avg@2": 0.1}]  # validation-only row: not a training step
    for s, v in enumerate(values, 1):
        row = {"step": s, "reward/mean": 0.5, "method/active_frac": active + 0.01 * s}
        if v != "-":
            row.update({"method/grad_ratio": v, "method/grad_cos": cos})
        rows.append(row)
    return rows


def test_verdicts_and_medians():
    inert = run_binding(_rows([0.0, "-", 0.0, "-"], active=0.0, cos=0.0))
    assert inert["verdict"] == "inert: grad ratio < 0.001 at every diagnosed step"
    assert inert["diagnosed_steps"] == 2 and inert["grad_ratio_median"] == 0.0 and inert["grad_cos_median"] == 0.0
    assert inert["active_frac_median"] == pytest.approx(0.025)  # median of 0.01..0.04 over all 4 steps
    small = run_binding(_rows([1e-4, 5e-4, 9.9e-4]))
    assert small["verdict"].startswith("inert") and small["grad_ratio_median"] == 5e-4
    acts = run_binding(_rows([0.2, 1e-5, 0.4, INERT_RATIO]))
    assert acts["verdict"] == "acts: grad ratio ≥ 0.001 at 3 of 4 diagnosed steps"
    assert acts["grad_ratio_median"] == pytest.approx((0.2 + INERT_RATIO) / 2) and acts["grad_cos_median"] == -0.5
    assert acts["active_frac_median"] == pytest.approx(0.275)
    # a null ratio (no policy gradient in the micro-batch, the method's term alone): not inert
    alone = run_binding(_rows([0.0, None]))
    assert alone["verdict"] == "acts: grad ratio ≥ 0.001 at 1 of 2 diagnosed steps" and alone["grad_ratio_median"] == 0.0
    off = run_binding(_rows(["-", "-"]))
    assert off["verdict"] == "not diagnosed (trainer.diagnose_every=0)"
    assert off["grad_ratio_median"] is None and off["diagnosed_steps"] == 0 and off["active_frac_median"] is not None
    table = binding_table([{"run": "a_s0", "method": "siren", **acts}, {"run": "b_s0", "method": "baseline", **off}])
    assert "| a_s0 | siren | 0.275 | 0.101 | -0.500 | 4 | acts: grad ratio ≥ 0.001 at 3 of 4 diagnosed steps |" in table
    assert "| b_s0 | baseline | 0.265 | – | – | 0 | not diagnosed (trainer.diagnose_every=0) |" in table


def test_analyze_prints_writes_and_summarises_the_table(tmp_path, capsys):
    for name, method, values in (("lab_baseline_s0", "baseline", [0.0, 0.0]), ("lab_siren_s0", "siren", [0.3, 0.5]),
                                 ("lab_dlogp_s0", "dlogp", ["-", "-"])):
        d = tmp_path / "sweep" / name
        d.mkdir(parents=True)
        (d / "resolved_config.yaml").write_text(f"seed: 0\nmethod:\n  name: {method}\nalgo:\n  name: grpo\n")
        rows = _rows(values, active=0.0 if method == "baseline" else 0.3, cos=0.0 if method == "baseline" else 0.2)
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    main(["analyze", str(tmp_path / "sweep")])
    printed = capsys.readouterr().out
    assert "does the method act?" in printed
    for line in ("| lab_baseline_s0 | baseline | 0.015 | 0 | 0.000 | 2 | inert: grad ratio < 0.001 at every diagnosed step |",
                 "| lab_siren_s0 | siren | 0.315 | 0.4 | 0.200 | 2 | acts: grad ratio ≥ 0.001 at 2 of 2 diagnosed steps |",
                 "| lab_dlogp_s0 | dlogp | 0.315 | – | – | 0 | not diagnosed (trainer.diagnose_every=0) |"):
        for page in ("binding.md", "index.md"):
            assert line in (tmp_path / "sweep" / "analysis" / page).read_text(), page
        assert html.escape(line) in (tmp_path / "sweep" / "analysis" / "index.html").read_text()
        assert line in printed
    summary = json.loads((tmp_path / "sweep" / "analysis" / "summary.json").read_text())
    verdicts = {r["run"]: r["verdict"].split(":")[0] for r in summary["binding"]}
    assert verdicts == {"lab_baseline_s0": "inert", "lab_siren_s0": "acts", "lab_dlogp_s0": "not diagnosed (trainer.diagnose_every=0)"}
