"""Arms: runs of one setting that differ only in the seed, for ``rlvr analyze``'s figures and law fit.

A run's arm is its folder name without the seed suffix (``entropy_bonus_small_s2`` -> ``entropy_bonus_small``;
a folder named ``s2`` / ``seed2`` takes its parent's name): the entropy lab writes ``<recipe>_s<seed>``, and
``rlvr train`` writes ``runs/<exp_name>`` with ``exp_name = <data>_<algo>_<method>_s<seed>``. The
resolved config's ``exp_name`` cannot tell arms apart (the three ``lab/entropy_bonus_*`` recipes all
resolve to ``countdown_grpo_entropy_bonus_s<seed>``) and the recipe is only in Hydra's
``.hydra/overrides.yaml``, which misses settings given as other overrides, so the folder name decides.

Runs are grouped by (arm, method). A group is named by its method while every method has a single arm
(as before: colour = method); as soon as one method appears in several arms (``entropy_bonus`` at three
coefficients), every group is named by its arm. Figures draw one colour per group, the seeds pooled.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rlvr_cli.analysis.law import bootstrap_intervals, fit_entropy_law, refusal
from rlvr_cli.errors import UserError

_SEED_SUFFIX = re.compile(r"[_-]s(?:eed)?[_-]?\d+$")
_SEED_ONLY = re.compile(r"^s(?:eed)?[_-]?\d+$")


def run_arm(run_dir: str | Path) -> str:
    """The arm of a run folder: its name without a trailing ``_s<seed>`` (see the module doc)."""
    p = Path(run_dir)
    if _SEED_ONLY.match(p.name) and p.parent.name:
        return p.parent.name
    return _SEED_SUFFIX.sub("", p.name) or p.name


def assign_groups(runs: list[dict[str, Any]]) -> list[str]:
    """Set ``run["arm"]`` and ``run["group"]`` (the name figures and the per-arm law use) on each run;
    returns the group names in order of first appearance."""
    for r in runs:
        r["arm"] = run_arm(r.get("dir") or r["run"])
    arms_of: dict[str, set[str]] = {}
    for r in runs:
        arms_of.setdefault(r["method"], set()).add(r["arm"])
    by_arm = any(len(a) > 1 for a in arms_of.values())
    methods_of: dict[str, set[str]] = {}
    for r in runs:
        methods_of.setdefault(r["arm"], set()).add(r["method"])
    for r in runs:
        if not by_arm:
            r["group"] = str(r["method"])
        else:  # an arm holding several methods (odd folder names) keeps them apart
            r["group"] = r["arm"] if len(methods_of[r["arm"]]) == 1 else f"{r['arm']} ({r['method']})"
    return list(dict.fromkeys(r["group"] for r in runs))


def group_of(run: dict[str, Any]) -> str:
    """A run's group: ``run["group"]`` (``assign_groups``), the method where unset."""
    return str(run.get("group") or run["method"])


def groups(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """{group: its runs}, in order of first appearance (``group_of``)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        out.setdefault(group_of(r), []).append(r)
    return out


def arm_laws(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The law R = −a·e^H + b per group, over the (H, R) points of all its seeds pooled, with 95%
    percentile-bootstrap intervals of a, b and the ceiling (``law.bootstrap_intervals``: resampling the
    pooled points, fixed seed). One dict per group: group, method, runs, n_points, law (or None) and
    law_refused."""
    out = []
    for name, members in groups(runs).items():
        pts = [p for r in members for p in r.get("law_points") or []]
        h, acc = [p[1] for p in pts], [p[2] for p in pts]
        row: dict[str, Any] = {"group": name, "method": members[0]["method"], "runs": [r["run"] for r in members],
                               "n_points": len(pts), "law": None, "law_refused": None}
        try:
            fit = fit_entropy_law(h, acc).as_dict()
            ci = bootstrap_intervals(h, acc)
            row["law"] = {k: fit[k] for k in ("a", "b", "r2", "rmse", "n", "ceiling")} | {
                "a_ci": list(ci["a"]), "b_ci": list(ci["b"]), "ceiling_ci": list(ci["ceiling"]),
                "ci": f"{ci['level']:.0%} percentile bootstrap over the pooled points, {ci['resamples']} resamples"}
        except UserError as e:
            row["law_refused"] = str(e)
        out.append(row)
    return out


def arm_law_table(laws: list[dict[str, Any]]) -> str:
    """Markdown: one row per arm (seeds pooled), a and b with their 95% bootstrap intervals."""
    what = "method" if all(g["group"] == g["method"] for g in laws) else "arm"
    lines = [f"| {what} | runs | points | a [95% CI] | b [95% CI] | R² | ceiling b − a [95% CI] | RMSE |",
             "|---|---|---|---|---|---|---|---|"]
    for g in laws:
        f = g["law"]
        if f is None:
            lines.append(f"| {g['group']} | {len(g['runs'])} | {g['n_points']} | – | – | – | – | "
                         f"refused: {refusal(g['law_refused'])} |")
            continue
        ci = lambda k: f"{f[k]:.3g} [{f[k + '_ci'][0]:.3g}, {f[k + '_ci'][1]:.3g}]"  # noqa: E731
        lines.append(f"| {g['group']} | {len(g['runs'])} | {f['n']} | {ci('a')} | {ci('b')} | {f['r2']:.3f} | "
                     f"{ci('ceiling')} | {f['rmse']:.4f} |")
    return "\n".join(lines)
