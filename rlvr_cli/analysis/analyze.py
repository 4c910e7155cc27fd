"""``rlvr analyze RUN_DIR... | SWEEP_DIR [--json] [--out DIR] [--fit-first K]``.

Reads finished (or running) run folders — ``metrics.jsonl`` + ``resolved_config.yaml`` — and writes
to ``--out`` (default ``<first path>/analysis``):

- ``summary.json`` and one comparison table (method, seed, validation accuracy start / end / best,
  entropy start / end, response length, steps, wall time), printed as Markdown (``--json``: the JSON);
- ``entropy.png``, ``val.png``, ``response_len.png``, ``method_frac.png`` against the training step,
  one line per group of runs with the seeds pooled (mean ± one std band). A group is an arm (the run
  folder without ``_s<seed>``, ``rlvr_cli.analysis.arms``) as soon as one method appears in several arms
  (the lab's ``entropy_bonus_small/large/xl``), else a method; one colour per group in every figure;
- with per-stage timings (``timing_s/<stage>``): where a step goes, per run (``stage_s`` in
  ``summary.json``: stage -> mean seconds per training step, ``rlvr_cli.report.stage_split``), as a table
  and ``timing.png`` (one stacked bar per group);
- the entropy–performance law (``rlvr_cli.analysis.law``) per run (table) and per group over its seeds'
  points pooled, with 95% percentile-bootstrap intervals of a, b and the ceiling (table, ``arm_law`` in
  ``summary.json``, and ``law.png``: the pooled points and one fit per group, and each group's a and b);
- the covariance check: Pearson correlation between the logged covariance term ``cov/mean`` of step
  s−1 and the measured entropy change ``entropy/delta`` of step s (the update of step s−1 moved the
  policy from H(s−1) to H(s); Cui et al. §4 predict ΔH ≈ −η·Cov, i.e. a negative correlation), per run in
  the table; ``cov.png`` pools each group's pairs (its r and least-squares line). ``cov/mean`` is the
  sampled-token estimate of ``stats.policy_covariance`` under natural PG;
- with ``rlvr eval`` results under ``<run>/eval/step_N/results.json`` (``scripts/eval_checkpoints.sh``):
  each checkpoint's benchmark accuracies in the table (last checkpoint) and ``eval.png``;
- does the method act? per run, the median ``method/active_frac``, ``method/grad_ratio`` and
  ``method/grad_cos`` and a verdict (``rlvr_cli.analysis.binding``: printed, ``binding`` in
  ``summary.json``, ``binding.md``);
- ``index.md`` and ``index.html`` showing all of it together.

Law pairs: the validation after step s is paired with the rollout entropy of the same weights, which
the next step logs (``actor/entropy`` of step s+1; step s's own value for the last one).
"""
from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from rlvr_cli.analysis import plots
from rlvr_cli.analysis.arms import arm_law_table, arm_laws, assign_groups
from rlvr_cli.analysis.binding import binding_table, run_binding, write_binding
from rlvr_cli.analysis.law import fit_entropy_law, pearson, refusal
from rlvr_cli.errors import UserError
from rlvr_cli.report import _fmt, _val_key, find_runs, read_rows, stage_table, summarize_run
from rlvr_cli.report import train_rows as _train_rows

# the fraction of tokens a method acts on, by method (first key present wins); baseline: the PPO clip
METHOD_FRACTION = {
    "clip_cov": "method/clip_cov/selected_frac", "kl_cov": "method/kl_cov/selected_frac",
    "rsi_s": "method/rsi_s/keep_frac", "siren": "method/siren/peak_frac",
    "high_entropy": "method/high_entropy/kept_frac",
}
FALLBACK_FRACTION = ("ppo/clipfrac", "actor/pg_clipfrac")


def series(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], float(r[key])) for r in rows if r.get(key) is not None and math.isfinite(float(r[key]))]
    return [s for s, _ in pts], [v for _, v in pts]


def fraction_key(method: str, rows: list[dict[str, Any]]) -> str | None:
    keys = [METHOD_FRACTION[method]] if method in METHOD_FRACTION else []
    for key in [*keys, *FALLBACK_FRACTION]:
        if any(key in r for r in rows):
            return key
    return None


def law_points(rows: list[dict[str, Any]], val_key: str | None) -> list[tuple[int, float, float]]:
    """(step, H, R): each validation with the rollout entropy of the same weights (see module doc)."""
    if not val_key:
        return []
    entropy = dict(zip(*series(_train_rows(rows), "actor/entropy")))
    out = []
    for step, acc in zip(*series(rows, val_key)):
        h = entropy.get(step + 1, entropy.get(step))
        if h is not None:
            out.append((step, h, acc))
    return out


def cov_pairs(rows: list[dict[str, Any]]) -> list[tuple[int, float, float]]:
    """(s, cov/mean at s−1, entropy/delta at s) over consecutive logged training steps."""
    train = _train_rows(rows)
    cov = dict(zip(*series(train, "cov/mean")))
    delta = dict(zip(*series(train, "entropy/delta")))
    return [(s, cov[s - 1], d) for s, d in sorted(delta.items()) if s - 1 in cov]


def checkpoint_evals(run_dir: Path) -> dict[str, tuple[list[int], list[float]]]:
    """{benchmark: (checkpoint steps, avg@n)} from ``<run>/eval/step_N/results.json``."""
    out: dict[str, list[tuple[int, float]]] = {}
    for res in sorted(run_dir.glob("eval/step_*/results.json")):
        step = int(res.parent.name.removeprefix("step_"))
        for bench, rec in json.loads(res.read_text()).get("benchmarks", {}).items():
            key = next((k for k in rec.get("metrics", {}) if k.startswith("avg@")), None)
            if key:
                out.setdefault(f"{bench}/{key}", []).append((step, float(rec["metrics"][key])))
    return {k: ([s for s, _ in sorted(v)], [a for _, a in sorted(v)]) for k, v in out.items()}


def analyze_run(run_dir: Path, fit_first: int | None = None) -> dict[str, Any]:
    rows = read_rows(run_dir)
    summary = summarize_run(run_dir)
    train = _train_rows(rows)
    key = _val_key(rows)
    frac = fraction_key(summary["method"], rows)
    run: dict[str, Any] = {
        **summary, "dir": str(run_dir), "label": f"{summary['method']} s{summary['seed']}",
        "entropy": series(train, "actor/entropy"), "val": series(rows, key) if key else ([], []),
        "response_len": series(train, "rollout/response_len_mean"),
        "method_frac": series(train, frac) if frac else ([], []), "method_frac_key": frac,
    }
    evals = checkpoint_evals(run_dir)
    run["evals"] = {k: {"steps": v[0], "accuracy": v[1]} for k, v in evals.items()}
    if evals:  # the mean over benchmarks, per checkpoint evaluated on all of them
        steps = sorted(set.intersection(*(set(v[0]) for v in evals.values())))
        run["eval"] = (steps, [sum(dict(zip(*v))[s] for v in evals.values()) / len(evals) for s in steps])
    run["law_points"] = law_points(rows, key)
    try:
        fit = fit_entropy_law([p[1] for p in run["law_points"]], [p[2] for p in run["law_points"]], fit_first)
        run["law"], run["law_refused"] = fit.as_dict(), None
    except UserError as e:
        run["law"], run["law_refused"] = None, str(e)
    pairs = cov_pairs(rows)
    run["cov_pairs"] = pairs
    run["cov_check"] = {"n": len(pairs), "pearson": pearson([p[1] for p in pairs], [p[2] for p in pairs])}
    run["binding"] = run_binding(rows)  # does the method act? (binding.md)
    return run


def table(runs: list[dict[str, Any]]) -> str:
    head = ("| run | method | seed | steps | val start | val end | val best | entropy start | entropy end | "
            "response len start → end | wall s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in runs:
        lines.append(
            f"| {r['run']} | {r['method']} | {r['seed']} | {r['steps']} | {_fmt(r['val_start'])} | {_fmt(r['val_end'])} | "
            f"{_fmt(r['val_best'])} | {_fmt(r['entropy_start'])} | {_fmt(r['entropy_end'])} | "
            f"{_fmt(r['response_len_start'], '.1f')} → {_fmt(r['response_len_end'], '.1f')} | {_fmt(r['wall_s'], '.0f')} |")
    return "\n".join(lines)


def eval_table(runs: list[dict[str, Any]]) -> str:
    """Benchmark accuracy per evaluated checkpoint (empty when no run has any)."""
    lines = ["| run | benchmark | checkpoints | accuracy per checkpoint |", "|---|---|---|---|"]
    for r in runs:
        for bench, e in r.get("evals", {}).items():
            pts = ", ".join(f"{s}: {a:.3f}" for s, a in zip(e["steps"], e["accuracy"]))
            lines.append(f"| {r['run']} | {bench} | {len(e['steps'])} | {pts} |")
    return "\n".join(lines) if len(lines) > 2 else ""


LAW_CI = "intervals: 95% percentile bootstrap over the pooled points, 2000 resamples, fixed seed"


def law_table(runs: list[dict[str, Any]]) -> str:
    lines = ["| run | points | a | b | R² | ceiling b − a | RMSE | forecast RMSE (rest) |", "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        f = r["law"]
        if f is None:
            lines.append(f"| {r['run']} | {len(r['law_points'])} | – | – | – | – | – | refused: {refusal(r['law_refused'])} |")
            continue
        fc = "–" if f["predict_rmse"] is None else f"{f['predict_rmse']:.4f} on {f['n_predicted']} (fit on first {f['fit_first']})"
        lines.append(f"| {r['run']} | {f['n']} | {f['a']:.4g} | {f['b']:.4g} | {f['r2']:.3f} | {f['ceiling']:.4f} | "
                     f"{f['rmse']:.4f} | {fc} |")
    return "\n".join(lines)


def cov_table(runs: list[dict[str, Any]]) -> str:
    lines = ["| run | step pairs | Pearson r (cov/mean of s−1, ΔH of s) |", "|---|---|---|"]
    for r in runs:
        c = r["cov_check"]
        lines.append(f"| {r['run']} | {c['n']} | {_fmt(c['pearson'])} |")
    return "\n".join(lines)


FIGURES = {  # name: (run key, y label, title); one line per group (arms.assign_groups), seeds pooled
    "entropy": ("entropy", "policy entropy (nats/token)", "policy entropy of the training rollouts (actor/entropy)"),
    "val": ("val", "validation accuracy (fraction correct)", "held-out validation accuracy"),
    "response_len": ("response_len", "mean response length (tokens)", "response length of the training rollouts"),
    "method_frac": ("method_frac", "fraction of response tokens",
                    "tokens the method acts on (selected / kept fraction; baseline: PPO clip fraction)"),
    "eval": ("eval", "benchmark accuracy (fraction correct, mean avg@n)", "rlvr eval of each checkpoint"),
}


def write_figures(runs: list[dict[str, Any]], out: Path, laws: list[dict[str, Any]] | None = None) -> dict[str, str]:
    made = {}
    val_key = next((r["val_metric"] for r in runs if r["val_metric"]), None)
    for name, (key, ylabel, title) in FIGURES.items():
        if name == "val" and val_key:
            ylabel, title = f"validation {val_key.rpartition('/')[2]} (fraction correct)", f"{title} ({val_key})"
        if plots.line_plot(runs, key, ylabel, title, out / f"{name}.png"):
            made[name] = f"{name}.png"
    law_y = f"validation {val_key.rpartition('/')[2]} R (fraction correct)" if val_key else "validation accuracy R"
    if plots.law_plot(runs, out / "law.png", laws, law_y):
        made["law"] = "law.png"
    if plots.cov_scatter(runs, out / "cov.png"):
        made["cov"] = "cov.png"
    if plots.timing_plot(runs, out / "timing.png"):
        made["timing"] = "timing.png"
    return made


def write_index(runs: list[dict[str, Any]], figures: dict[str, str], out: Path,
                laws: list[dict[str, Any]] | None = None, binding: list[dict[str, Any]] | None = None) -> None:
    keys = {r["method"]: r["method_frac_key"] for r in runs}
    arm_law = arm_law_table(laws) if laws else ""
    acts = binding_table(binding) if binding else ""
    md = ["# rlvr analyze", "", table(runs), "", *(["## Does the method act?", "", acts, ""] if acts else []),
          *([f"## Entropy–performance law R = −a·exp(H) + b per arm, seeds pooled ({LAW_CI})", "", arm_law, ""]
            if arm_law else []),
          "## Entropy–performance law R = −a·exp(H) + b per run", "", law_table(runs), "",
          "## Covariance check", "", cov_table(runs), "", *(["## Checkpoint evals", "", eval_table(runs), ""] if eval_table(runs) else []),
          *(["## Where a step goes", "", stage_table(runs), ""] if stage_table(runs) else []),
          "## Figures", "",
          "method fraction keys: " + ", ".join(f"{m}: `{k}`" for m, k in keys.items()), ""]
    md += [f"![{name}]({path})" for name, path in figures.items()]
    (out / "index.md").write_text("\n".join(md) + "\n")
    body = "".join(f'<figure><img src="{html.escape(p)}" width="640"><figcaption>{html.escape(n)}</figcaption></figure>'
                   for n, p in figures.items())
    tables = "".join(f"<h2>{html.escape(t)}</h2><pre>{html.escape(x)}</pre>" for t, x in (
        ("runs", table(runs)), ("does the method act?", acts), (f"entropy-performance law per arm, seeds pooled ({LAW_CI})", arm_law),
        ("entropy-performance law per run", law_table(runs)), ("covariance check", cov_table(runs)),
        ("checkpoint evals", eval_table(runs)), ("where a step goes", stage_table(runs))) if x)
    (out / "index.html").write_text(f"<!doctype html><meta charset='utf-8'><title>rlvr analyze</title>"
                                    f"<h1>rlvr analyze</h1>{tables}<h2>figures</h2>{body}\n")


def analyze(paths: list[str], out: str | Path | None = None, fit_first: int | None = None) -> dict[str, Any]:
    run_dirs = find_runs(paths)
    out = Path(out) if out else Path(paths[0]) / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    runs = [analyze_run(d, fit_first) for d in run_dirs]
    assign_groups(runs)  # run["arm"], run["group"]: one colour per group in every figure, seeds pooled
    laws = arm_laws(runs)
    figures = write_figures(runs, out, laws)
    binding = write_binding(runs, out)  # does the method act? (binding.md)
    write_index(runs, figures, out, laws, binding)
    drop = ("entropy", "val", "response_len", "method_frac", "cov_pairs", "entropy_trajectory", "eval", "binding")
    result = {"out": str(out), "figures": {k: str(out / v) for k, v in figures.items()},
              "runs": [{k: v for k, v in r.items() if k not in drop} for r in runs], "arm_law": laws,
              "binding": binding}
    (out / "summary.json").write_text(json.dumps(result, indent=2))
    return result


USAGE = ("usage: rlvr analyze RUN_OR_SWEEP_DIR... [--json] [--out DIR] [--fit-first K]\n"
         "       rlvr analyze dlogp base=MODEL rl=MODEL data=NAME|FILE.jsonl [key=value ...]\n"
         "Runs: a table, PNG plots and index.html (in --out, default <first folder>/analysis), the entropy-performance "
         "law R = -a·exp(H) + b (on the first K points with --fit-first), the covariance check and whether the "
         "method acts. dlogp: Δlog p of two models on a dataset.")


def analyze_main(args: list[str]) -> None:
    if args and args[0] == "dlogp":
        from rlvr_cli.analysis.dlogp import dlogp_main

        dlogp_main(args[1:])
        return
    as_json, out, fit_first, paths = False, None, None, []
    it = iter(args)
    for a in it:
        if a == "--json":
            as_json = True
        elif a in ("--out", "--fit-first"):
            value = next(it, None)
            if value is None:
                raise UserError(f"{a} needs a value\n{USAGE.splitlines()[0]}")
            if a == "--out":
                out = value
            else:
                if not value.isdigit():
                    raise UserError(f"--fit-first takes a number of points, got {value!r}")
                fit_first = int(value)
        elif a.startswith("-"):
            raise UserError(f"unknown option {a}; valid: --json, --out, --fit-first\n{USAGE.splitlines()[0]}")
        else:
            paths.append(a)
    if not paths:
        raise UserError("\n".join(USAGE.splitlines()[:2]))
    result = analyze(paths, out, fit_first)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    runs = result["runs"]
    print(table(runs) + "\n\n" + f"entropy-performance law R = -a e^H + b per arm, seeds pooled ({LAW_CI})\n\n"
          + arm_law_table(result["arm_law"]) + "\n\nper run\n\n" + law_table(runs) + "\n\n" + cov_table(runs))
    if eval_table(runs):
        print("\n" + eval_table(runs))
    if stage_table(runs):
        print("\n" + stage_table(runs))
    print("\ndoes the method act?\n\n" + binding_table(result["binding"]))
    refused = [r for r in runs if r["law_refused"]]
    for r in refused:
        print(f"law fit refused for {r['run']}: {r['law_refused']}")
    print(f"\nplots and index: {result['out']}/index.html (index.md)")
