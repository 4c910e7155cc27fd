"""The centred log-prob/advantage covariance of Cui et al. 2025 (arXiv 2505.22617, §4), shared by the
entropy-dynamics metrics, Clip-Cov and KL-Cov."""
from __future__ import annotations

import torch


def token_covariance(logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """C[i,t] = (A[i,t] − Ā)·(lp[i,t] − l̄), means over valid tokens; 0 at padding. All [n, T], no grad."""
    m = mask.bool()
    n = m.sum().clamp(min=1)
    lp = logprobs.detach()
    a_bar = torch.where(m, advantages, 0).sum() / n
    l_bar = torch.where(m, lp, 0).sum() / n
    return torch.where(m, (advantages - a_bar) * (lp - l_bar), torch.zeros_like(lp))


@torch.no_grad()
def entropy_dynamics(logprobs: torch.Tensor, entropy: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Per-step entropy and covariance metrics over the rollout batch (old policy).

    ``cov/mean`` is (1/N)Σ(A−Ā)(lp−l̄), the term whose sign predicts the entropy change
    (ΔH ≈ −η·Cov(log π, A) under natural PG, Cui et al. §4).
    """
    m = mask.bool()
    n_valid = int(m.sum())
    if n_valid == 0:
        return {}
    cov = token_covariance(logprobs, advantages, mask)[m]
    row_tokens = mask.sum(-1)
    rows = row_tokens > 0
    seq_mean = ((entropy * mask).sum(-1)[rows] / row_tokens[rows]).mean()
    return {
        "actor/entropy": float(entropy[m].mean()),
        "entropy/seq_mean_token_mean": float(seq_mean),
        "cov/mean": float(cov.mean()),
        "cov/pos_frac": float((cov > 0).float().mean()),
        "cov/max": float(cov.max()),
    }
