"""``rlvr analyze``'s "does the method act?" table, from each run's ``metrics.jsonl``.

Per run: the median over its training steps of ``method/active_frac`` (the share of response tokens the
method changes anything on), and over its diagnosed steps (``trainer.diagnose_every``) of
``method/grad_ratio`` (‖∇ of the method's term‖ / ‖∇ of plain GRPO's loss‖ on one micro-batch) and
``method/grad_cos``, with a plain verdict:

- ``inert``: the ratio is below ``INERT_RATIO`` at every diagnosed step (plain GRPO: exactly 0);
- ``acts``: at some diagnosed step it is not (a null ratio, logged where the micro-batch had no policy
  gradient while the method's term had one, counts as acting);
- ``not diagnosed``: no ratio was logged (``trainer.diagnose_every=0``, the default).

See ``rlvr_cli.diagnostics`` for how the metrics are computed.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from rlvr_cli.report import train_rows

INERT_RATIO = 1e-3
RATIO, COS, ACTIVE = "method/grad_ratio", "method/grad_cos", "method/active_frac"


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def run_binding(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The binding summary of one run's metric rows (see the module docstring)."""
    train = train_rows(rows)
    diagnosed = [r for r in train if RATIO in r]
    ratios = [r[RATIO] for r in diagnosed]
    finite = _finite(ratios)
    acting = sum(1 for v in ratios if v is None or not math.isfinite(float(v)) or float(v) >= INERT_RATIO)
    if not diagnosed:
        verdict = "not diagnosed (trainer.diagnose_every=0)"
    elif acting == 0:
        verdict = f"inert: grad ratio < {INERT_RATIO:g} at every diagnosed step"
    else:
        verdict = f"acts: grad ratio ≥ {INERT_RATIO:g} at {acting} of {len(diagnosed)} diagnosed steps"
    return {
        "active_frac_median": _median(_finite(r.get(ACTIVE) for r in train)),
        "grad_ratio_median": _median(finite),
        "grad_cos_median": _median(_finite(r.get(COS) for r in diagnosed)),
        "diagnosed_steps": len(diagnosed),
        "acting_steps": acting,
        "verdict": verdict,
    }


def binding_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per analysed run (``analyze_run``'s dicts: ``run``, ``method`` and ``binding``, its
    ``run_binding``)."""
    return [{"run": r["run"], "method": r["method"], **r["binding"]} for r in runs]


def binding_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: does the method act?"""
    def fmt(v: Any, spec: str) -> str:
        return "–" if v is None else format(v, spec)

    lines = ["| run | method | active frac (median) | grad ratio (median) | grad cos (median) | diagnosed steps | verdict |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['method']} | {fmt(r['active_frac_median'], '.3f')} | "
                     f"{fmt(r['grad_ratio_median'], '.3g')} | {fmt(r['grad_cos_median'], '.3f')} | "
                     f"{r['diagnosed_steps']} | {r['verdict']} |")
    return "\n".join(lines)


def write_binding(runs: list[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
    """The rows for ``summary.json``, with the table written to ``<out>/binding.md``."""
    rows = binding_rows(runs)
    (Path(out) / "binding.md").write_text("# Does the method act?\n\n" + binding_table(rows) + "\n")
    return rows
