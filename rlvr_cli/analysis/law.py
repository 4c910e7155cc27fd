"""The entropy–performance law of Cui et al., *The Entropy Mechanism of RL for Reasoning LMs*
(arXiv 2505.22617, §3; spec methods-grpo-cov.md §7):

    R = −a·exp(H) + b

H = policy entropy of the training rollouts, R = validation performance. R is linear in e^H, so the
fit is ordinary least squares of R on the design [−e^H, 1] (exact, no iteration) — ours, the paper
says only "curve fit". At H = 0 the law forecasts the ceiling R* = b − a.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from rlvr_cli.errors import UserError

MIN_POINTS = 3  # two points fit any (a, b) exactly: R² = 1 says nothing


def refusal(reason: str | None) -> str:
    """A refused fit's reason for a table cell (``reason``: the UserError's text)."""
    return "constant entropy" if "vary" in (reason or "") else f"fewer than {MIN_POINTS} points"


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson's r of two equal-length series; None under 3 points or where either is constant."""
    n = len(xs)
    if n < 3:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else None


@dataclass(frozen=True)
class LawFit:
    a: float
    b: float
    r2: float  # on the fitted points
    rmse: float  # on the fitted points
    n: int  # points fitted
    ceiling: float  # R(H = 0) = b − a
    # fit on the first ``fit_first`` points only, predicting the rest (None: all points fitted)
    fit_first: int | None = None
    n_predicted: int = 0
    predict_rmse: float | None = None
    predict_max_abs_err: float | None = None

    def predict(self, entropy) -> torch.Tensor:
        return -self.a * torch.exp(torch.as_tensor(entropy, dtype=torch.float64)) + self.b

    def as_dict(self) -> dict:
        return asdict(self)


def fit_entropy_law(entropy: Sequence[float], reward: Sequence[float], fit_first: int | None = None) -> LawFit:
    """Least-squares fit of R = −a·e^H + b to (entropy, reward) pairs, in order of training steps.

    ``fit_first=k`` fits the first k points and reports the error of its forecast on the rest (C's
    "fit early, predict later"). Refuses (``UserError``) fewer than 3 points, or entropies that are all
    equal (the design is then singular).
    """
    h = torch.as_tensor(list(entropy), dtype=torch.float64)
    r = torch.as_tensor(list(reward), dtype=torch.float64)
    if h.numel() != r.numel():
        raise ValueError(f"{h.numel()} entropies but {r.numel()} rewards")
    k = h.numel() if fit_first is None else int(fit_first)
    if k < MIN_POINTS or k > h.numel():
        have = f"{h.numel()} point(s)" + (f", fit_first={fit_first}" if fit_first is not None else "")
        raise UserError(f"the entropy-performance fit needs at least {MIN_POINTS} (entropy, accuracy) points to fit "
                        f"(and fit_first <= the points there are); got {have}. Validate more often (val.every=...) "
                        "or train longer")
    x = -torch.exp(h[:k])
    if float(x.max() - x.min()) <= 1e-12 * max(1.0, float(x.abs().max())):
        raise UserError(f"the entropy-performance fit needs entropies that vary; all {k} are {float(h[0]):.6g}")
    design = torch.stack([x, torch.ones_like(x)], 1)  # [k, 2]
    sol = torch.linalg.lstsq(design, r[:k, None]).solution[:, 0]
    a, b = float(sol[0]), float(sol[1])
    fit = design @ sol
    res = r[:k] - fit
    ss_res, ss_tot = float((res**2).sum()), float(((r[:k] - r[:k].mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)
    out = dict(a=a, b=b, r2=r2, rmse=math.sqrt(ss_res / k), n=k, ceiling=b - a)
    if fit_first is not None:
        rest_h, rest_r = h[k:], r[k:]
        err = rest_r - (-a * torch.exp(rest_h) + b)
        out.update(fit_first=k, n_predicted=int(rest_h.numel()),
                   predict_rmse=float(err.pow(2).mean().sqrt()) if err.numel() else None,
                   predict_max_abs_err=float(err.abs().max()) if err.numel() else None)
    return LawFit(**out)


BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def bootstrap_intervals(entropy: Sequence[float], reward: Sequence[float], level: float = 0.95,
                        resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> dict:
    """Percentile bootstrap over the (H, R) points of the least-squares (a, b) and the ceiling b − a.

    Each resample draws ``len(points)`` points with replacement (a fixed ``seed``: the same points give
    the same intervals) and refits in closed form; resamples whose entropies are all equal (no fit) are
    dropped. Points are treated as independent: points of one run are serially correlated, so with few
    runs the intervals are, if anything, too narrow. Returns ``{"a": (lo, hi), "b": (lo, hi),
    "ceiling": (lo, hi), "level": level, "resamples": used}``."""
    h = torch.as_tensor(list(entropy), dtype=torch.float64)
    r = torch.as_tensor(list(reward), dtype=torch.float64)
    n = h.numel()
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(n, (resamples, n), generator=g)
    x, y = -torch.exp(h[idx]), r[idx]  # [B, n]; the design column is −e^H, so its slope is a
    xc, yc = x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
    sxx = (xc**2).sum(1)
    ok = sxx > 1e-12 * (x**2).sum(1).clamp_min(1e-300)
    a = (xc * yc).sum(1)[ok] / sxx[ok]
    b = y.mean(1)[ok] - a * x.mean(1)[ok]
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)

    def interval(v: torch.Tensor) -> tuple[float, float]:
        lo, hi = torch.quantile(v, q).tolist() if v.numel() else (math.nan, math.nan)
        return lo, hi

    return {"a": interval(a), "b": interval(b), "ceiling": interval(b - a), "level": level, "resamples": int(ok.sum())}
