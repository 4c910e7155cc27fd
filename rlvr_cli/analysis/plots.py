"""PNG figures for ``rlvr analyze`` (matplotlib, Agg backend: no display needed). One line per run,
colour = method, line style = seed (the timing figure: one stacked bar per run, colour = stage); every
axis labelled; a legend on every figure."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLES = ["-", "--", ":", "-."]
SMOOTH_ABOVE = 30  # series longer than this also get a moving mean


def moving_mean(values: list[float], window: int) -> list[float]:
    """Centred moving mean, the window shrinking at the ends (same length as ``values``)."""
    half = max(1, window) // 2
    return [sum(values[max(0, i - half) : i + half + 1]) / len(values[max(0, i - half) : i + half + 1])
            for i in range(len(values))]


def _colours(methods: list[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10")
    return {m: cmap(i % 10) for i, m in enumerate(dict.fromkeys(methods))}


def _style(runs: list[dict[str, Any]]) -> list[tuple[Any, str]]:
    colours = _colours([r["method"] for r in runs])
    seeds = list(dict.fromkeys(str(r["seed"]) for r in runs))
    return [(colours[r["method"]], STYLES[seeds.index(str(r["seed"])) % len(STYLES)]) for r in runs]


def line_plot(runs: list[dict[str, Any]], key: str, ylabel: str, title: str, path: Path) -> Path | None:
    """``run[key]`` = (steps, values) for each run. None if no run has the series."""
    have = [(r, s) for r, s in zip(runs, _style(runs)) if r.get(key) and r[key][0]]
    if not have:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    window = 1
    for r, (colour, ls) in have:
        steps, values = r[key]
        if len(steps) <= SMOOTH_ABOVE:
            ax.plot(steps, values, color=colour, linestyle=ls, marker="o", markersize=3, label=r["label"])
            continue
        # per-step values are noisy (a fresh batch of prompts each step): faint, with a centred moving mean
        window = max(window, len(steps) // 12)
        ax.plot(steps, values, color=colour, linestyle=ls, lw=0.8, alpha=0.3)
        ax.plot(steps, moving_mean(values, len(steps) // 12), color=colour, linestyle=ls, lw=1.8, label=r["label"])
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.set_title(title + (f"\n(faint: per step; solid: moving mean over {window} steps)" if window > 1 else ""),
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def law_plot(runs: list[dict[str, Any]], path: Path) -> Path | None:
    """Per run: the (entropy, validation accuracy) points and its fitted R = −a·e^H + b."""
    import torch

    have = [(r, s) for r, s in zip(runs, _style(runs)) if r.get("law_points")]
    if not have:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r, (colour, ls) in have:
        h = [p[1] for p in r["law_points"]]
        acc = [p[2] for p in r["law_points"]]
        ax.scatter(h, acc, color=colour, s=14)
        fit = r.get("law")
        if fit:
            lo, hi = min(h), max(h)
            grid = torch.linspace(lo - 0.1 * (hi - lo + 1e-9), hi + 0.1 * (hi - lo + 1e-9), 100, dtype=torch.float64)
            ax.plot(grid, -fit["a"] * torch.exp(grid) + fit["b"], color=colour, linestyle=ls,
                    label=f"{r['label']}: a={fit['a']:.3g}, b={fit['b']:.3g}, R²={fit['r2']:.2f}")
        else:
            ax.plot([], [], color=colour, label=f"{r['label']} (no fit)")
    ax.set_xlabel("policy entropy H of the training rollouts (nats/token)")
    ax.set_ylabel("validation accuracy R")
    ax.set_title("entropy–performance law R = −a·exp(H) + b (arXiv 2505.22617)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cov_scatter(runs: list[dict[str, Any]], path: Path) -> Path | None:
    """Per run: covariance term of step s−1 (x) against the measured entropy change at step s (y)."""
    have = [(r, s) for r, s in zip(runs, _style(runs)) if r.get("cov_pairs")]
    if not have:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r, (colour, _) in have:
        xs = [p[1] for p in r["cov_pairs"]]
        ys = [p[2] for p in r["cov_pairs"]]
        corr = r["cov_check"].get("pearson")
        ax.scatter(xs, ys, color=colour, s=10, alpha=0.7,
                   label=f"{r['label']} (r = {corr:.2f})" if corr is not None else r["label"])
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("cov/mean at step s−1: mean (A − Ā)(log π − mean)")
    ax.set_ylabel("entropy change H(s) − H(s−1)")
    ax.set_title("covariance check: ΔH ≈ −η·Cov(log π, A) (arXiv 2505.22617 §4)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def timing_plot(runs: list[dict[str, Any]], path: Path) -> Path | None:
    """Where a step goes: one horizontal bar per run with timings (``run["stage_s"]``, stage -> mean
    seconds per training step), stacked by stage in ``rlvr_cli.report.STAGE_ORDER``. None if no run has timing keys."""
    from rlvr_cli.report import STAGE_ORDER, order_stages

    have = [r for r in runs if r.get("stage_s")]
    if not have:
        return None
    stages = order_stages({n for r in have for n in r["stage_s"]})
    extra = [n for n in stages if n not in STAGE_ORDER]
    fig, ax = plt.subplots(figsize=(7, 1.6 + 0.45 * len(have)))
    ax.set_axisbelow(True)
    y = list(range(len(have)))
    left = [0.0] * len(have)
    for stage in stages:  # a stage keeps its colour across figures: tab10 by its place in STAGE_ORDER
        width = [r["stage_s"].get(stage, 0.0) for r in have]
        colour = ("lightgrey" if stage == "other" else plt.get_cmap("tab10")(STAGE_ORDER.index(stage))
                  if stage in STAGE_ORDER else plt.get_cmap("tab20")((2 * extra.index(stage) + 1) % 20))
        ax.barh(y, width, left=left, height=0.6, color=colour, label=stage)
        left = [a + b for a, b in zip(left, width)]
    for yi, total in zip(y, left):
        ax.text(total, yi, f" {total:.2f} s", va="center", fontsize=8)
    ax.set_yticks(y, [r["label"] for r in have], fontsize=8)
    ax.invert_yaxis()  # first run on top, as in the tables
    ax.set_xlim(0, max(left) * 1.15)
    ax.set_xlabel("mean seconds per training step")
    ax.set_title("where a step goes (timing_s/<stage>, mean over training steps)", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="stage", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def histogram(values, path: Path, xlabel: str, title: str, threshold: float | None = None) -> Path:
    """A density histogram with a log-scale y axis (the Δlog p figure of arXiv 2603.22117)."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.hist(values, bins=80, density=True, color="tab:blue", alpha=0.8, label=f"{len(values)} tokens")
    ax.set_yscale("log")
    if threshold is not None:
        for x in (-threshold, threshold):
            ax.axvline(x, color="tab:red", lw=1, linestyle="--")
        ax.plot([], [], color="tab:red", linestyle="--", label=f"±{threshold:g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density (log scale)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
