"""The entropy lab: every entropy-control method on Countdown, 3 seeds each, one table (README "Entropy lab").

    .venv/bin/python benchmarks/entropy_lab.py --json runs/benchmarks/entropy_lab.json   # ~27 min on 2 cores
    .venv/bin/python benchmarks/entropy_lab.py --quick                                   # smoke run, ~3 min

Each arm is a recipe of ``conf/recipes/lab/`` (the same setting, one method switched on), trained with
``rlvr train +recipes=lab/<arm> seed=<s>`` in its own process, ``--jobs`` at a time with one torch thread
each (on 2 cores two single-threaded runs finish sooner than one run on both). Runs land in
``--out/<arm>_s<seed>``; a finished run is reused unless ``--fresh``. Then, per arm over seeds (mean ± sample
std): entropy start / end (``actor/entropy`` of the first and the last step), validation accuracy start / end
(avg@n on held-out problems), pass@n at the end, response length at the end, the forks' entropy
(``actor/entropy_p80``, last 5 steps over the first 5), SIREN's selective entropy over its anchor, each run's
median ``method/grad_ratio``; the entropy-performance law R = −a·e^H + b fitted on baseline's validation
points; the issue's aims checked (baseline's fall, Clip-Cov / KL-Cov against baseline, SIREN's hold, the
annealed coefficient and the biased bonus against baseline's accuracy); ``rlvr analyze`` over the
lab's runs for the plots (``--out/analysis``; one colour per arm, the seeds pooled: ``entropy.png`` and
``val.png``, mean ± std against the step, ``law.png``, the law fitted per arm with its a and b, and the rest of
``rlvr analyze``'s figures). ``--json FILE`` writes ``{"methods": {arm: {...}}, ...}``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from rlvr_cli.report import read_rows, summarize_run  # noqa: E402

ARMS = ("baseline", "entropy_bonus_small", "entropy_bonus_large", "entropy_bonus_xl", "clip_cov", "kl_cov", "siren",
        "rsi_s", "dlogp", "kl_cov_annealed")
QUICK = ["trainer.max_steps=3", "val.every=3", "val.size=16", "val.n=4", "rollout.prompts_per_step=4",
         "algo.mini_batch_size=8", "algo.micro_batch_size=8"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="every arm, one seed, 3 tiny steps: a smoke run (~3 min)")
    p.add_argument("--arms", default=",".join(ARMS), help="comma-separated recipes of conf/recipes/lab/")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2; --quick: 0)")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time, one torch thread each")
    p.add_argument("--out", default=None, help="run folders (default runs/lab, --quick: runs/lab_quick)")
    p.add_argument("--json", default=None, help="write the table as JSON here")
    p.add_argument("--fresh", action="store_true", help="retrain runs that already finished")
    p.add_argument("--no-plots", action="store_true", help="skip rlvr analyze")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run (e.g. trainer.max_steps=40)")
    args = p.parse_args(argv)
    args.seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1,2")).split(",")]
    args.arms = [a for a in args.arms.split(",") if a]
    unknown = sorted(set(args.arms) - set(available_arms()))
    if unknown:
        p.error(f"unknown arm(s) {', '.join(unknown)}; valid: {', '.join(available_arms())}")
    args.out = Path(args.out or REPO / "runs" / ("lab_quick" if args.quick else "lab"))
    return args


def available_arms() -> list[str]:
    return sorted(f.stem for f in (REPO / "conf" / "recipes" / "lab").glob("*.yaml"))


def finished(run: Path) -> bool:
    """A run whose metrics reach its configured last step (a crashed run is trained again, from scratch)."""
    from omegaconf import OmegaConf

    if not (run / "metrics.jsonl").is_file() or not (run / "resolved_config.yaml").is_file():
        return False
    last = max((r.get("step", 0) for r in read_rows(run) if "reward/mean" in r), default=0)
    return last >= int(OmegaConf.load(run / "resolved_config.yaml").trainer.max_steps)


def train(arm: str, seed: int, args) -> tuple[str, int, float, int]:
    """One ``rlvr train`` in a subprocess -> (arm, seed, seconds, return code); its log is ``<run>/train.log``."""
    run = args.out / f"{arm}_s{seed}"
    if finished(run) and not args.fresh:
        return arm, seed, 0.0, 0
    run.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "rlvr_cli.cli", "train", f"+recipes=lab/{arm}", f"seed={seed}", f"out_dir={run}",
           "trainer.resume=never", "trainer.progress=false", *(QUICK if args.quick else []), *args.overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    t0 = time.time()
    with open(run / "train.log", "w") as log:
        rc = subprocess.call(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    return arm, seed, time.time() - t0, rc


def pass_key(rows: list[dict]) -> str | None:
    """The largest-k pass@k the validation logged."""
    keys = {k for r in rows for k in r if k.startswith("val/") and "/pass@" in k}
    return max(keys, key=lambda k: int(k.rpartition("@")[2]), default=None)


EDGE = 5  # the forks' and SIREN's selective entropy are noisy step to step: means over the first / last 5 steps


def _edge_means(rows: list[dict], key: str) -> tuple[float | None, float | None]:
    """(mean of ``key`` over the first EDGE training steps that log it, over the last EDGE)."""
    vals = [float(r[key]) for r in rows if r.get("step", 0) > 0 and r.get(key) is not None
            and math.isfinite(float(r[key]))]
    if not vals:
        return None, None
    return statistics.fmean(vals[:EDGE]), statistics.fmean(vals[-EDGE:])


def run_figures(run: Path) -> dict:
    from rlvr_cli.analysis.binding import run_binding

    s = summarize_run(run)
    rows = read_rows(run)
    key = pass_key(rows)
    val_rows = [r for r in rows if key and r.get(key) is not None]
    fork_start, fork_end = _edge_means(rows, "actor/entropy_p80")
    _, selective_end = _edge_means(rows, "method/siren/H_sel")
    anchor = next((r["method/siren/H_anchor"] for r in rows if r.get("method/siren/H_anchor") is not None), None)
    return {"entropy_start": s["entropy_start"], "entropy_end": s["entropy_end"], "val_start": s["val_start"],
            "val_end": s["val_end"], "pass_at_k_end": val_rows[-1][key] if val_rows else None,
            "pass_at_k": key.rpartition("/")[2] if key else None, "response_len_end": s["response_len_end"],
            "steps": s["steps"], "val_points": _val_points(rows),
            "fork_entropy_start": fork_start, "fork_entropy_end": fork_end,  # actor/entropy_p80
            "selective_end": selective_end, "anchor": anchor,  # SIREN's H_sel and its anchor
            "grad_ratio_median": run_binding(rows)["grad_ratio_median"]}


def _val_points(rows: list[dict]) -> list[tuple[float, float]]:
    """(entropy, val accuracy) pairs as ``rlvr analyze`` pairs them: the validation after step s with the
    rollout entropy of the same weights, logged by step s+1 (the last step's own value at the end)."""
    from rlvr_cli.report import _val_key

    key = _val_key(rows)
    entropy = {r["step"]: r["actor/entropy"] for r in rows if r.get("step", 0) > 0 and "actor/entropy" in r}
    last = max(entropy, default=None)
    out = []
    for r in rows:
        if key and r.get(key) is not None and entropy:
            h = entropy.get(r["step"] + 1, entropy[last] if r["step"] >= last else None)
            if h is not None:
                out.append((float(h), float(r[key])))
    return out


def analyze_lab(out: Path, arms: list[str], seeds: list[int]) -> dict[str, str]:
    """``rlvr analyze`` over the lab's runs (the arms and seeds asked for, in that order) into ``out/analysis``
    -> {figure: path}. It colours by arm (the run folder without ``_s<seed>``) as soon as one method has
    several arms, so ``entropy.png`` and ``val.png`` show one line per arm, the mean over seeds with a
    band of ± one std, and ``law.png`` one law fit per arm over its seeds' points pooled."""
    from rlvr_cli.analysis.analyze import analyze

    result = analyze([str(out / f"{arm}_s{seed}") for arm in arms for seed in seeds], out / "analysis")
    return result["figures"]


def mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


FIELDS = ("entropy_start", "entropy_end", "val_start", "val_end", "pass_at_k_end", "response_len_end",
          "fork_entropy_start", "fork_entropy_end", "selective_end", "anchor", "grad_ratio_median")


def aggregate(per_seed: dict[str, list[dict]]) -> dict[str, dict]:
    out = {}
    for arm, runs in per_seed.items():
        row: dict = {"seeds": len(runs)}
        for f in FIELDS:
            row[f], row[f + "_std"] = mean_std([r[f] for r in runs])
        ratios = [r["entropy_end"] / r["entropy_start"] for r in runs if r["entropy_start"] and r["entropy_end"] is not None]
        row["entropy_ratio"], row["entropy_ratio_std"] = mean_std(ratios)
        forks = [r["fork_entropy_end"] / r["fork_entropy_start"] for r in runs
                 if r.get("fork_entropy_start") and r.get("fork_entropy_end") is not None]
        row["fork_ratio"], row["fork_ratio_std"] = mean_std(forks)
        held = [r["selective_end"] / r["anchor"] for r in runs if r.get("anchor") and r.get("selective_end") is not None]
        row["selective_ratio"], row["selective_ratio_std"] = mean_std(held)
        row["pass_at_k"] = runs[0]["pass_at_k"] if runs else None
        row["steps"] = runs[0]["steps"] if runs else None
        row["per_seed"] = [{f: r[f] for f in FIELDS} for r in runs]
        out[arm] = row
    return out


def _pm(mean: float | None, std: float | None, spec: str = ".3f") -> str:
    if mean is None:
        return "–"
    return f"{mean:{spec}} ± {std:{spec}}" if std else f"{mean:{spec}}"


def _ratio(v: float | None) -> str:
    return "–" if v is None else f"{v:.3g}"


def table(methods: dict[str, dict]) -> str:
    k = next((m["pass_at_k"] for m in methods.values() if m["pass_at_k"]), "pass@k")
    head = (f"| arm | seeds | entropy start | entropy end | end / start | val start | val end | {k} end | response len "
            "| forks' entropy (p80) end / start | grad ratio (median) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for arm, m in methods.items():
        lines.append(
            f"| {arm} | {m['seeds']} | {_pm(m['entropy_start'], m['entropy_start_std'])} | "
            f"{_pm(m['entropy_end'], m['entropy_end_std'])} | {_pm(m['entropy_ratio'], m['entropy_ratio_std'], '.2f')} | "
            f"{_pm(m['val_start'], m['val_start_std'])} | {_pm(m['val_end'], m['val_end_std'])} | "
            f"{_pm(m['pass_at_k_end'], m['pass_at_k_end_std'])} | {_pm(m['response_len_end'], m['response_len_end_std'], '.1f')} | "
            f"{_pm(m['fork_ratio'], m['fork_ratio_std'], '.2f')} | {_ratio(m['grad_ratio_median'])} |")
    return "\n".join(lines)


def law_fit(per_seed: dict[str, list[dict]], arm: str = "baseline") -> dict | None:
    """R = −a·e^H + b over every seed's (entropy, val) points of ``arm`` (Cui et al. eq. 1)."""
    from rlvr_cli.analysis.law import MIN_POINTS, fit_entropy_law

    points = [p for r in per_seed.get(arm, []) for p in r["val_points"]]
    if len(points) < MIN_POINTS:
        return None
    return fit_entropy_law([h for h, _ in points], [v for _, v in points]).as_dict()


def aims(methods: dict[str, dict]) -> list[str]:
    """The issue's aims, each as a line with its measured figure (never asserted: a benchmark reports)."""
    out = []
    base = methods.get("baseline")
    if base and base["entropy_ratio"] is not None:
        out.append(f"baseline entropy end / start = {base['entropy_ratio']:.2f} (aim ≤ 0.5): "
                   f"{'met' if base['entropy_ratio'] <= 0.5 else 'not met'}")
    for arm in ("clip_cov", "kl_cov"):
        m = methods.get(arm)
        if base and m and base["entropy_end"] and m["entropy_end"] is not None:
            ratio = m["entropy_end"] / base["entropy_end"]
            gap = m["entropy_end"] - base["entropy_end"]
            spread = max(m["entropy_end_std"] or 0.0, base["entropy_end_std"] or 0.0)
            versus = ("no spread with one seed" if min(m["seeds"], base["seeds"]) < 2 else
                      f"seed spread (std) {spread:.3f}: {'larger' if abs(gap) > spread else 'not larger'}")
            out.append(f"{arm} entropy end / baseline's = {ratio:.2f} (aim ≥ 1.5): {'met' if ratio >= 1.5 else 'not met'}; "
                       f"gap {gap:+.3f}, {versus}")
    siren = methods.get("siren")
    if siren and siren["selective_ratio"] is not None:
        held = siren["selective_ratio"]
        forks = ", ".join(f"{arm} {methods[arm]['fork_ratio']:.2f}" for arm in ("siren", "baseline")
                          if arm in methods and methods[arm]["fork_ratio"] is not None)
        out.append(f"siren selective entropy H_sel (last {EDGE} steps) / its anchor = {held:.2f} (aim: held near the "
                   f"anchor, ≥ 0.8): {'met' if held >= 0.8 else 'not met'}; forks' entropy (p80) end / start: {forks}; "
                   f"grad ratio (median) {_ratio(siren['grad_ratio_median'])}")
    annealed = methods.get("kl_cov_annealed")
    if base and annealed and annealed["val_end"] is not None and base["val_end"] is not None:
        spread = max(annealed["val_end_std"] or 0.0, base["val_end_std"] or 0.0)
        gap = annealed["val_end"] - base["val_end"]
        verdict = "met" if gap >= 0 else f"not met ({'within' if -gap <= spread else 'beyond'} the seed spread {spread:.3f})"
        out.append(f"kl_cov_annealed val end = {annealed['val_end']:.3f} vs baseline's {base['val_end']:.3f} "
                   f"(aim: at or above): {verdict}")
        for arm, m in methods.items():  # the constant bonuses that keep entropy up: biased below GRPO?
            if arm.startswith("entropy_bonus") and (m["entropy_ratio"] or 0) >= 1.0 and m["val_end"] is not None:
                below = m["val_end"] < base["val_end"]
                out.append(f"{arm} (a constant bonus keeping entropy up, end / start {m['entropy_ratio']:.2f}) val end = "
                           f"{m['val_end']:.3f} (aim: below baseline's {base['val_end']:.3f}): "
                           f"{'met' if below else 'not met'}")
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(arm, seed) for seed in args.seeds for arm in args.arms]
    t0 = time.time()
    print(f"entropy lab: {len(args.arms)} arms x {len(args.seeds)} seeds = {len(jobs)} runs, {args.jobs} at a time, "
          f"in {args.out}", flush=True)
    failed = []
    with ThreadPoolExecutor(args.jobs) as pool:
        for arm, seed, secs, rc in pool.map(lambda j: train(*j, args), jobs):
            status = "reused" if secs == 0 and rc == 0 else (f"{secs:.0f} s" if rc == 0 else f"FAILED (rc {rc})")
            print(f"  {arm} seed {seed}: {status}", flush=True)
            if rc != 0:
                failed.append(f"{args.out / f'{arm}_s{seed}' / 'train.log'}")
    if failed:
        raise SystemExit("runs failed; see " + ", ".join(failed))
    per_seed = {arm: [run_figures(args.out / f"{arm}_s{s}") for s in args.seeds] for arm in args.arms}
    methods = aggregate(per_seed)
    law = law_fit(per_seed)
    result = {"methods": methods, "law_fit_baseline": law, "aims": aims(methods), "seeds": args.seeds,
              "quick": args.quick, "overrides": args.overrides, "wall_s": round(time.time() - t0, 1),
              "runs": str(args.out)}
    print()
    print(table(methods))
    if law:
        print(f"\nbaseline law fit R = -a e^H + b: a={law['a']:.3f} b={law['b']:.3f} R²={law['r2']:.2f} "
              f"(ceiling R(H=0) = {law['ceiling']:.3f}, {law['n']} points)")
    for line in result["aims"]:
        print("aim:", line)
    if not args.no_plots:
        figures = analyze_lab(args.out, args.arms, args.seeds)
        result["figures"] = figures
        print(f"plots: {args.out / 'analysis'} ({', '.join(Path(p).name for p in figures.values())}; "
              "one colour per arm, seeds pooled; index.html shows them with the tables)")
    print(f"wall {result['wall_s']:.0f} s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
