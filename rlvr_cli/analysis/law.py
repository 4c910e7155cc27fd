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
