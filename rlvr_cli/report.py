"""``rlvr report PATH...``: one comparison table over finished runs (a sweep folder or run folders).

Each run folder holds ``resolved_config.yaml`` and ``metrics.jsonl`` (stage 8). Per run the table gives
the method, steps, validation accuracy before and after training, policy entropy (``actor/entropy``,
mean over response tokens of the rollout batch) at the start and the end, the entropy trajectory
(means over equal fifths of the run) and the mean step time. Runs that log per-stage timings
(``timing_s/<stage>``, ``timing_s/other`` and their total ``timing_s/step``) get a second table, "where a
step goes": each stage's share of the mean step (``--json``: ``stage_s``, stage -> mean seconds per
training step). Reads files only, so it runs anywhere.

    rlvr report runs/sweeps/2026-12-02_02-30-00          # after rlvr train -m +method=...
    rlvr report runs/arith_grpo_baseline_s0 runs/arith_grpo_siren_s0 --json
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rlvr_cli.errors import UserError

TRAJECTORY_POINTS = 5
# the per-stage timing keys (``timing_s/<stage>``) in display order; ``other`` = the step outside every
# stage, so the stages and ``other`` add up to ``timing_s/step``. Stages not listed go before ``other``.
TIMING_PREFIX = "timing_s/"
STAGE_ORDER = ("gen", "reward", "old_log_prob", "ref", "method", "update_actor", "weight_sync", "checkpoint",
               "val", "other")


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run folders (those with a ``metrics.jsonl``) at or below each path, in path then name order."""
    runs: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise UserError(f"no such run folder: {p}")
        found = [p] if (p / "metrics.jsonl").is_file() else sorted(m.parent for m in p.rglob("metrics.jsonl"))
        runs += [r for r in found if r not in runs]
    if not runs:
        raise UserError(f"no metrics.jsonl under {', '.join(map(str, paths))}")
    return runs


def _val_key(rows: list[dict[str, Any]]) -> str | None:
    """The main validation metric: the first ``val/<name>/avg@n`` logged."""
    for row in rows:
        for key in row:
            if key.startswith("val/") and "/avg@" in key:
                return key
    return None


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def trajectory(values: list[float], points: int = TRAJECTORY_POINTS) -> list[float]:
    """Means over ``points`` consecutive, (nearly) equal slices of ``values`` (fewer if it is shorter)."""
    n = len(values)
    if n == 0:
        return []
    k = min(points, n)
    bounds = [round(i * n / k) for i in range(k + 1)]
    return [sum(values[a:b]) / (b - a) for a, b in zip(bounds, bounds[1:])]


def read_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl`` (one per logged step; step 0 = validation before training)."""
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def train_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The training steps' rows (step > 0 with rollout rewards; not the validation-only rows)."""
    return [r for r in rows if r.get("step", 0) > 0 and "reward/mean" in r]


def _seconds(row: dict[str, Any], key: str) -> float:
    """``row[key]`` as seconds; 0 where it is missing or not finite."""
    v = _finite([row.get(key)])
    return v[0] if v else 0.0


def order_stages(names) -> list[str]:
    """Stage names in ``STAGE_ORDER``; names it does not list go, alphabetically, just before ``other``."""
    rank = {n: i for i, n in enumerate(STAGE_ORDER)}
    return sorted(names, key=lambda n: (rank.get(n, rank["other"] - 0.5), n))


def stage_split(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean seconds per training step of each stage, {stage: s} in ``STAGE_ORDER``, zero stages left out.

    Over the training rows that carry any ``timing_s/`` key; a stage missing from such a row counts 0 s
    there (no ref model, checkpoint only every N steps), so the means add up to the mean ``timing_s/step``.
    Empty for runs without timing keys (older runs log only ``perf/step_s``)."""
    timed = [r for r in train_rows(rows) if any(k.startswith(TIMING_PREFIX) for k in r)]
    if not timed:
        return {}
    names = {k.removeprefix(TIMING_PREFIX) for r in timed for k in r if k.startswith(TIMING_PREFIX)} - {"step"}
    means = {n: sum(_seconds(r, TIMING_PREFIX + n) for r in timed) / len(timed) for n in order_stages(names)}
    return {n: v for n, v in means.items() if v > 0}


def stage_shares(split: dict[str, float]) -> dict[str, float]:
    """Each stage's fraction of the step: its mean seconds over the sum of all (stages + other = step)."""
    total = sum(split.values())
    return {n: v / total for n, v in split.items()} if total > 0 else {}


def format_split(split: dict[str, float]) -> str:
    """``gen 47% · update_actor 30% · other 3%`` (``–`` without timings; ``<1%`` for a sliver)."""
    parts = [f"{n} {'<1' if 0 < f < 0.005 else format(100 * f, '.0f')}%" for n, f in stage_shares(split).items()]
    return " · ".join(parts) or "–"


def summarize_run(run_dir: Path) -> dict[str, Any]:
    """The figures of one run folder (see the module docstring)."""
    from omegaconf import OmegaConf

    rows = read_rows(run_dir)
    cfg_path = run_dir / "resolved_config.yaml"
    cfg = OmegaConf.load(cfg_path) if cfg_path.is_file() else OmegaConf.create({})
    train = train_rows(rows)
    entropy = _finite(r.get("actor/entropy") for r in train)
    key = _val_key(rows)
    val = [(r["step"], float(r[key])) for r in rows if key and r.get(key) is not None]
    length = _finite(r.get("rollout/response_len_mean") for r in train)
    wall = _finite(r.get("perf/step_s") for r in train) + _finite(r.get("perf/val_s") for r in rows)
    return {
        "run": run_dir.name,
        "method": OmegaConf.select(cfg, "method.name", default="?"),
        "algo": OmegaConf.select(cfg, "algo.name", default="?"),
        "seed": OmegaConf.select(cfg, "seed", default=None),
        "steps": max((r["step"] for r in train), default=0),
        "val_metric": key,
        "val_start": val[0][1] if val and val[0][0] == 0 else None,
        "val_end": val[-1][1] if val else None,
        "val_best": max(v for _, v in val) if val else None,
        "entropy_start": entropy[0] if entropy else None,
        "entropy_end": entropy[-1] if entropy else None,
        "entropy_trajectory": trajectory(entropy),
        "response_len_start": length[0] if length else None,
        "response_len_end": length[-1] if length else None,
        "train_acc_last10": _mean(_finite(r.get("reward/accuracy") for r in train[-10:])),
        "step_s_mean": _mean(_finite(r.get("perf/step_s") for r in train)),
        "wall_s": sum(wall) if wall else None,  # training steps + validations (resume-safe)
        "stage_s": stage_split(rows),  # stage -> mean seconds per training step ({} without timing keys)
    }


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "–" if v is None else format(v, spec)


def markdown_table(summaries: list[dict[str, Any]]) -> str:
    """The summaries as a Markdown table (one row per run)."""
    head = ("| run | method | steps | val start | val end | val best | train acc (last 10) | entropy start | "
            "entropy end | entropy trajectory (fifths) | step s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for s in summaries:
        traj = " → ".join(_fmt(v) for v in s["entropy_trajectory"]) or "–"
        lines.append(
            f"| {s['run']} | {s['method']} | {s['steps']} | {_fmt(s['val_start'])} | {_fmt(s['val_end'])} | "
            f"{_fmt(s['val_best'])} | {_fmt(s['train_acc_last10'])} | {_fmt(s['entropy_start'])} | "
            f"{_fmt(s['entropy_end'])} | {traj} | {_fmt(s['step_s_mean'], '.2f')} |")
    metric = next((s["val_metric"] for s in summaries if s["val_metric"]), None)
    if metric:
        lines.append(f"\nval = {metric}; entropy = actor/entropy (rollout batch, mean over response tokens)")
    return "\n".join(lines)


def stage_table(summaries: list[dict[str, Any]]) -> str:
    """Where a step goes, one row per run: the mean timed step and each stage's share ("" if no run has
    timing keys; a run without them shows ``–``)."""
    if not any(s.get("stage_s") for s in summaries):
        return ""
    lines = ["| run | timed step s | where a step goes |", "|---|---|---|"]
    for s in summaries:
        split = s.get("stage_s") or {}
        lines.append(f"| {s['run']} | {_fmt(sum(split.values()) if split else None, '.2f')} | {format_split(split)} |")
    return "\n".join(lines)


USAGE = ("usage: rlvr report RUN_OR_SWEEP_DIR... [--json]\n"
         "Compare finished runs: accuracy, entropy trajectory, step time and where a step goes "
         "(--json: the summaries as JSON).")


def report_main(args: list[str]) -> None:
    """Entry of ``rlvr report``: paths, optionally ``--json``."""
    as_json = "--json" in args
    paths = [a for a in args if a != "--json"]
    if not paths:
        raise UserError(USAGE.splitlines()[0])
    summaries = [summarize_run(r) for r in find_runs(paths)]
    if as_json:
        print(json.dumps(summaries, indent=2))
        return
    stages = stage_table(summaries)
    print(markdown_table(summaries))
    if stages:
        print(f"\nwhere a step goes (mean over training steps)\n\n{stages}")
