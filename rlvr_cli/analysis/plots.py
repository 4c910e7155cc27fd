"""PNG figures for ``rlvr analyze`` (matplotlib, Agg backend: no display needed).

One colour per group of runs (``rlvr_cli.analysis.arms``: the arm, i.e. the run folder without its seed
suffix, whenever one method appears with several settings; the method otherwise), the seeds of a group
pooled: curves against the step are the mean over its runs with a band of ± one sample std; the law is
fitted per group over the pooled points. Every axis carries its quantity and unit, every figure a title,
and legends sit outside the axes (right), so no legend covers data.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rlvr_cli.analysis.arms import group_of, groups  # noqa: E402
from rlvr_cli.analysis.law import pearson  # noqa: E402

SMOOTH_ABOVE = 30  # series longer than this are drawn as a centred moving mean (per run, before pooling)
DPI = 150
RC = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9, "legend.title_fontsize": 9,
      "xtick.labelsize": 9, "ytick.labelsize": 9, "axes.spines.top": False, "axes.spines.right": False,
      "axes.grid": True, "grid.alpha": 0.3, "savefig.dpi": DPI, "savefig.bbox": "tight"}
STYLES = ["-", "--", ":", "-."]  # beyond 20 groups, colours repeat with another line style


def moving_mean(values: list[float], window: int) -> list[float]:
    """Centred moving mean, the window shrinking at the ends (same length as ``values``)."""
    half = max(1, window) // 2
    return [sum(values[max(0, i - half) : i + half + 1]) / len(values[max(0, i - half) : i + half + 1])
            for i in range(len(values))]


def group_styles(runs: list[dict[str, Any]]) -> dict[str, tuple[Any, str]]:
    """{group: (colour, line style)} over all runs, so a group keeps its colour in every figure."""
    names = list(groups(runs))
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {g: (cmap(i % cmap.N), STYLES[(i // cmap.N) % len(STYLES)]) for i, g in enumerate(names)}


def _legend_title(runs: list[dict[str, Any]]) -> str:
    return "arm" if any(group_of(r) != str(r["method"]) for r in runs) else "method"


def _legend(ax, runs, **kw) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, borderaxespad=0.0,
              title=_legend_title(runs), **kw)


def _save(fig, path: Path) -> Path:
    fig.savefig(path)
    plt.close(fig)
    return path


def _by_step(curves: list[tuple[list[int], list[float]]]) -> dict[int, list[float]]:
    at: dict[int, list[float]] = {}
    for steps, values in curves:
        for s, v in zip(steps, values):
            at.setdefault(s, []).append(v)
    return dict(sorted(at.items()))


def pool(curves: list[tuple[list[int], list[float]]]) -> tuple[list[int], list[float], list[float], list[int]]:
    """Curves (steps, values) of one group's runs -> (steps, mean, sample std, runs counted), at every step
    any run logged (mean and std over the runs that logged it; std 0 where only one did)."""
    at = _by_step(curves)
    steps = list(at)
    mean = [sum(at[s]) / len(at[s]) for s in steps]
    std = [math.sqrt(sum((v - m) ** 2 for v in at[s]) / (len(at[s]) - 1)) if len(at[s]) > 1 else 0.0
           for s, m in zip(steps, mean)]
    return steps, mean, std, [len(at[s]) for s in steps]


def band(curves: list[tuple[list[int], list[float]]]) -> tuple[list[float], list[float]]:
    """The ± 1 std band of ``pool``, kept inside the range the runs span at each step: one seed that
    explodes (0.1, 0.1, 5.6) would otherwise draw an entropy band below zero."""
    at = _by_step(curves)
    _, mean, std, _ = pool(curves)
    return ([max(m - d, min(v)) for m, d, v in zip(mean, std, at.values())],
            [min(m + d, max(v)) for m, d, v in zip(mean, std, at.values())])


def bulk_range(values: list[float], q: float = 0.98, far: float = 1.5) -> tuple[float, float] | None:
    """Axis limits that show the bulk of ``values`` (their ``1 − q`` to ``q`` quantiles, 15% margin), where
    some lie more than ``far`` × that span beyond it: one exploded run must not squash every other arm's
    points into a corner. None where the whole range reads well."""
    if len(values) < 10:
        return None
    ranked = sorted(values)
    lo, hi = ranked[int((1 - q) * (len(ranked) - 1))], ranked[int(q * (len(ranked) - 1))]
    span = hi - lo
    if span <= 0 or (ranked[-1] <= hi + far * span and ranked[0] >= lo - far * span):
        return None
    return lo - 0.15 * span, hi + 0.15 * span


def _clip_axes(ax, xs: list[float], ys: list[float], what: str) -> str:
    """Limit both axes to the bulk of the points (``bulk_range``); a note of the points left out, for the
    axis label ('' where none are)."""
    xr, yr = bulk_range(xs), bulk_range(ys)
    if xr is None and yr is None:
        return ""
    xr = xr or (min(xs), max(xs))
    inside = [y for x, y in zip(xs, ys) if xr[0] <= x <= xr[1]]
    yr = yr or (min(inside), max(inside))
    pad = 0.05 * ((xr[1] - xr[0]) or 1.0), 0.05 * ((yr[1] - yr[0]) or 1.0)
    ax.set_xlim(xr[0] - pad[0], xr[1] + pad[0])
    ax.set_ylim(yr[0] - pad[1], yr[1] + pad[1])
    out = sum(not (xr[0] <= x <= xr[1] and yr[0] <= y <= yr[1]) for x, y in zip(xs, ys))
    return f"; {out} of {len(xs)} {what} lie outside the axes, not drawn (the fits use them)" if out else ""


LOG_SPAN = 20.0  # a figure whose positive values span more than this factor is drawn on a log axis


def wants_log(values: list[float]) -> bool:
    """Whether a series set needs a log axis: all positive and spanning more than ``LOG_SPAN``×."""
    return bool(values) and min(values) > 0 and max(values) / min(values) > LOG_SPAN


def _counts_note(sizes: list[int], what: str = "seeds") -> tuple[str, bool]:
    """The subtitle's pooling note, and whether the legend must give each group's run count."""
    if len(set(sizes)) == 1:
        n = sizes[0]
        return ("one run per group" if n == 1 else f"line: mean over {n} {what}, band: ± 1 std within the runs' range"), False
    return "line: mean over the group's runs (count in the legend), band: ± 1 std within the runs' range", True


def line_plot(runs: list[dict[str, Any]], key: str, ylabel: str, title: str, path: Path) -> Path | None:
    """``run[key]`` = (steps, values) for each run; one line per group (mean over its runs) with a ± 1 std
    band. Series longer than ``SMOOTH_ABOVE`` points are smoothed per run first (centred moving mean over
    a twelfth of the series). None if no run has the series."""
    have = [r for r in runs if r.get(key) and r[key][0]]
    if not have:
        return None
    styles = group_styles(runs)
    grouped = groups(have)
    longest = max(len(r[key][0]) for r in have)
    window = longest // 12 if longest > SMOOTH_ABOVE else 1
    note, show_n = _counts_note([len(m) for m in grouped.values()])
    with plt.rc_context(RC):
        fig, ax = plt.subplots(figsize=(8.5, 4.6))
        drawn: list[float] = []
        for g, members in grouped.items():
            colour, ls = styles[g]
            curves = [(r[key][0], moving_mean(r[key][1], window) if len(r[key][0]) > SMOOTH_ABOVE else r[key][1])
                      for r in members]
            steps, mean, std, _ = pool(curves)
            drawn += [v for _, vs in curves for v in vs]
            label = g + (f" ({len(members)} run{'s' if len(members) > 1 else ''})" if show_n else "")
            short = len(steps) <= SMOOTH_ABOVE
            ax.plot(steps, mean, color=colour, linestyle=ls, lw=1.8, marker="o" if short else None, markersize=3.5,
                    label=label)
            if len(members) > 1:
                ax.fill_between(steps, *band(curves), color=colour, alpha=0.13, lw=0)
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        sub = note + (f"; moving mean over {window} steps" if window > 1 else "")
        if wants_log(drawn):  # one exploding run would flatten every other line on a linear axis
            ax.set_yscale("log")
            sub += "; log axis"
        ax.set_title(f"{title}\n{sub}", fontsize=10.5)
        _legend(ax, runs)
        return _save(fig, path)


def law_plot(runs: list[dict[str, Any]], path: Path, laws: list[dict[str, Any]] | None = None,
             ylabel: str = "validation accuracy R (fraction correct)") -> Path | None:
    """Top: per group, its runs' (entropy, validation accuracy) points pooled (faint) and the law
    R = −a·e^H + b fitted on them (``arms.arm_laws``). Bottom: each group's a and b with their 95%
    bootstrap intervals. None if no run has law points."""
    import torch

    from rlvr_cli.analysis.arms import arm_laws

    grouped = {g: m for g, m in groups(runs).items() if any(r.get("law_points") for r in m)}
    if not grouped:
        return None
    laws = {g["group"]: g for g in (laws if laws is not None else arm_laws(runs))}
    styles = group_styles(runs)
    fitted = [g for g in grouped if (laws.get(g) or {}).get("law")]
    with plt.rc_context(RC):
        fig = plt.figure(figsize=(9.5, 4.4 + (0.9 + 0.28 * len(fitted) if fitted else 0)))
        gs = fig.add_gridspec(2 if fitted else 1, 2, height_ratios=[4.4, 0.9 + 0.28 * len(fitted)] if fitted else [1],
                              hspace=0.42, wspace=0.08)
        ax = fig.add_subplot(gs[0, :])
        for g, members in grouped.items():
            colour, ls = styles[g]
            h = [p[1] for r in members for p in r.get("law_points") or []]
            acc = [p[2] for r in members for p in r.get("law_points") or []]
            ax.scatter(h, acc, color=colour, s=14, alpha=0.35, lw=0)
            fit = (laws.get(g) or {}).get("law")
            if fit:
                lo, hi = min(h), max(h)
                grid = torch.linspace(lo, hi, 100, dtype=torch.float64)
                ax.plot(grid, -fit["a"] * torch.exp(grid) + fit["b"], color=colour, linestyle=ls, lw=2,
                        label=f"{g}: R² = {fit['r2']:.2f}, n = {fit['n']}")
            else:
                ax.scatter([], [], color=colour, s=14, label=f"{g}: no fit ({len(h)} points)")
        every = [p for m in grouped.values() for r in m for p in r.get("law_points") or []]
        clipped = _clip_axes(ax, [p[1] for p in every], [p[2] for p in every], "points")
        ax.set_xlabel("policy entropy H of the training rollouts (nats/token)" + clipped)
        ax.set_ylabel(ylabel)
        runs_per = {len(m) for m in grouped.values()}
        pooled = f"{runs_per.pop()} seeds pooled per {_legend_title(runs)}" if len(runs_per) == 1 else "seeds pooled"
        ax.set_title("entropy–performance law R = −a·exp(H) + b (arXiv 2505.22617), least squares\n"
                     f"one fit per {_legend_title(runs)} ({pooled}); points: validations paired with the entropy "
                     "of the same weights", fontsize=10.5)
        _legend(ax, runs)
        if fitted:
            ax_a = fig.add_subplot(gs[1, 0])
            ax_b = fig.add_subplot(gs[1, 1], sharey=ax_a)
            y = list(range(len(fitted)))
            for panel, k in ((ax_a, "a"), (ax_b, "b")):
                for yi, g in zip(y, fitted):
                    f = laws[g]["law"]
                    lo, hi = f[k + "_ci"]
                    panel.errorbar([f[k]], [yi], xerr=[[max(0.0, f[k] - lo)], [max(0.0, hi - f[k])]], fmt="o",
                                   color=styles[g][0], ms=5, capsize=3, lw=1.5)
                if k == "a":
                    panel.axvline(0, color="grey", lw=0.8)
                panel.set_xlabel(f"fitted {k} (accuracy units), 95% bootstrap CI")
                panel.grid(axis="y", alpha=0)
            ax_a.set_yticks(y, fitted)
            ax_a.set_ylim(len(fitted) - 0.5, -0.5)  # first group on top, half a row of margin
            plt.setp(ax_b.get_yticklabels(), visible=False)
            ax_a.set_title("a: accuracy lost per unit of e^H", fontsize=10)
            ax_b.set_title("b: accuracy offset (ceiling R(H=0) = b − a)", fontsize=10)
        return _save(fig, path)


def cov_scatter(runs: list[dict[str, Any]], path: Path) -> Path | None:
    """Per group (its runs' pairs pooled, faint): the covariance term of step s−1 (x) against the
    measured entropy change at step s (y), with the least-squares line and the pooled Pearson r."""
    grouped = {g: m for g, m in groups(runs).items() if any(r.get("cov_pairs") for r in m)}
    if not grouped:
        return None
    styles = group_styles(runs)
    with plt.rc_context(RC):
        fig, ax = plt.subplots(figsize=(8.5, 4.8))
        for g, members in grouped.items():
            colour, ls = styles[g]
            xs = [p[1] for r in members for p in r.get("cov_pairs") or []]
            ys = [p[2] for r in members for p in r.get("cov_pairs") or []]
            corr = pearson(xs, ys)
            ax.scatter(xs, ys, color=colour, s=10, alpha=0.3, lw=0)
            label = f"{g}: r = {corr:+.2f}, n = {len(xs)}" if corr is not None else f"{g}: n = {len(xs)}"
            mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
            sxx = sum((x - mx) ** 2 for x in xs)
            if corr is not None and sxx > 0:
                slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
                lo, hi = min(xs), max(xs)
                ax.plot([lo, hi], [my + slope * (lo - mx), my + slope * (hi - mx)], color=colour, linestyle=ls, lw=1.8,
                        label=label)
            else:
                ax.scatter([], [], color=colour, s=10, label=label)
        ax.axhline(0, color="grey", lw=0.8)
        ax.axvline(0, color="grey", lw=0.8)
        every = [p for m in grouped.values() for r in m for p in r.get("cov_pairs") or []]
        clipped = _clip_axes(ax, [p[1] for p in every], [p[2] for p in every], "pairs")
        ax.set_xlabel("covariance term cov/mean at step s−1: mean (A − Ā)(log π − mean log π) (nats × advantage)"
                      + clipped.replace("; ", "\n", 1))
        ax.set_ylabel("entropy change H(s) − H(s−1) (nats/token)")
        ax.set_title("covariance check: ΔH ≈ −η·Cov(log π, A) predicts r < 0 (arXiv 2505.22617 §4)\n"
                     "points: consecutive steps, runs pooled; line: least squares; r: Pearson over the pooled pairs",
                     fontsize=10.5)
        _legend(ax, runs)
        return _save(fig, path)


def timing_plot(runs: list[dict[str, Any]], path: Path) -> Path | None:
    """Where a step goes: one horizontal bar per group with timings (``run["stage_s"]``, stage -> mean
    seconds per training step, averaged over the group's timed runs), stacked by stage in
    ``rlvr_cli.report.STAGE_ORDER``. None if no run has timing keys."""
    from rlvr_cli.report import STAGE_ORDER, order_stages

    grouped = {g: [r for r in m if r.get("stage_s")] for g, m in groups(runs).items()}
    grouped = {g: m for g, m in grouped.items() if m}
    if not grouped:
        return None
    split = {g: {n: sum(r["stage_s"].get(n, 0.0) for r in m) / len(m) for n in {n for r in m for n in r["stage_s"]}}
             for g, m in grouped.items()}
    stages = order_stages({n for s in split.values() for n in s})
    extra = [n for n in stages if n not in STAGE_ORDER]
    names = list(grouped)
    with plt.rc_context(RC):
        fig, ax = plt.subplots(figsize=(8.5, 1.5 + 0.4 * len(names)))
        ax.set_axisbelow(True)
        y = list(range(len(names)))
        left = [0.0] * len(names)
        for stage in stages:  # a stage keeps its colour across figures: tab10 by its place in STAGE_ORDER
            width = [split[g].get(stage, 0.0) for g in names]
            colour = ("lightgrey" if stage == "other" else plt.get_cmap("tab10")(STAGE_ORDER.index(stage))
                      if stage in STAGE_ORDER else plt.get_cmap("tab20")((2 * extra.index(stage) + 1) % 20))
            ax.barh(y, width, left=left, height=0.6, color=colour, label=stage)
            left = [a + b for a, b in zip(left, width)]
        for yi, total in zip(y, left):
            ax.text(total, yi, f" {total:.2f} s", va="center", fontsize=8)
        counts = [len(grouped[g]) for g in names]
        ax.set_yticks(y, [g + (f" ({k} runs)" if k > 1 else "") for g, k in zip(names, counts)])
        ax.invert_yaxis()  # first group on top, as in the tables
        ax.set_xlim(0, max(left) * 1.15)
        ax.set_xlabel("seconds per training step (mean over steps" + (" and the group's runs)" if max(counts) > 1 else ")"))
        ax.set_title("where a step goes (timing_s/<stage>)", fontsize=10.5)
        ax.grid(alpha=0.3, axis="x")
        ax.grid(False, axis="y")
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, title="stage")
        return _save(fig, path)


def histogram(values, path: Path, xlabel: str, title: str, threshold: float | None = None) -> Path:
    """A density histogram with a log-scale y axis (the Δlog p figure of arXiv 2603.22117)."""
    with plt.rc_context(RC):
        return _histogram(values, path, xlabel, title, threshold)


def _histogram(values, path: Path, xlabel: str, title: str, threshold: float | None) -> Path:
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
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, borderaxespad=0.0)
    return _save(fig, path)
