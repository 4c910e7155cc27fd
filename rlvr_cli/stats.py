"""Statistics shared by the loop's metrics and several methods (pure functions, tensors in and out).

- the centred log-prob/advantage covariance of Cui et al. 2025 (arXiv 2505.22617, §4): the
  entropy-dynamics metrics, Clip-Cov and KL-Cov;
- ``quantile_1d``: high-entropy selection, SIREN, Δlog p and RSI-S metrics.
"""
from __future__ import annotations

from collections.abc import Callable

import torch


def quantile_1d(x: torch.Tensor, q: float) -> torch.Tensor:
    """q-quantile of a 1-D tensor with linear interpolation (= ``torch.quantile``), for any size:
    ``torch.quantile`` refuses inputs above 2^24 elements, ``kthvalue`` does not. [M] -> scalar."""
    n = x.numel()
    if n == 0:
        return x.new_tensor(float("nan"))
    pos = q * (n - 1)
    lo = int(pos)  # floor for q >= 0
    hi = min(lo + 1, n - 1)
    v_lo = torch.kthvalue(x.float(), lo + 1).values
    v_hi = torch.kthvalue(x.float(), hi + 1).values if hi != lo else v_lo
    return v_lo + (pos - lo) * (v_hi - v_lo)


def token_covariance(logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """C[i,t] = (A[i,t] − Ā)·(lp[i,t] − l̄), means over valid tokens; 0 at padding. All [n, T], no grad."""
    m = mask.bool()
    n = m.sum().clamp(min=1)
    lp = logprobs.detach()
    a_bar = torch.where(m, advantages, 0).sum() / n
    l_bar = torch.where(m, lp, 0).sum() / n
    return torch.where(m, (advantages - a_bar) * (lp - l_bar), torch.zeros_like(lp))


def batch_covariance(
    logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
    gather: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
) -> torch.Tensor:
    """C = (A − Ā)(lp − l̄) (Cui et al. §4) with Ā, l̄ the means over the valid tokens of *every* rank
    (``token_covariance`` on one rank). [N, T] -> [N, T], 0 on padding."""
    m = mask.bool()
    lp = logprobs.detach().float()
    sums = gather(torch.stack([torch.where(m, advantages.float(), 0).sum(), torch.where(m, lp, 0).sum(),
                               m.sum().float()]))  # [3·world]
    a_sum, l_sum, n = sums.view(-1, 3).sum(0)
    n = n.clamp(min=1)
    return torch.where(m, (advantages - a_sum / n) * (lp - l_sum / n), torch.zeros_like(lp))


PROFILE_QUANTILES = (0.5, 0.8, 0.95)
PEAK_TOP1 = 0.8  # SIREN's top_p: at a token whose top-1 holds this much, its nucleus is empty


@torch.no_grad()
def entropy_profile(entropy: torch.Tensor, mask: torch.Tensor, top1: torch.Tensor | None = None) -> dict[str, float]:
    """The shape of the per-token entropy over the valid tokens: ``actor/entropy_p50|p80|p95`` and, with
    the top token's probability, ``actor/top1_ge_0.8_frac`` (the share of near-deterministic tokens).

    A reasoning model's profile is a heavy tail: most tokens near 0, ~20% forks above 0.672 nats for
    Qwen3-8B (Wang et al., "Beyond the 80/20 rule", arXiv 2506.01939). entropy, top1, mask: [N, T]."""
    m = mask.bool()
    h = entropy[m].float()
    if h.numel() == 0:
        return {}
    out = {f"actor/entropy_p{round(q * 100)}": float(quantile_1d(h, q)) for q in PROFILE_QUANTILES}
    if top1 is not None:
        out[f"actor/top1_ge_{PEAK_TOP1}_frac"] = float((top1[m] >= PEAK_TOP1).float().mean())
    return out


@torch.no_grad()
def entropy_dynamics(logprobs: torch.Tensor, entropy: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                     top1: torch.Tensor | None = None) -> dict[str, float]:
    """Per-step entropy and covariance metrics over the rollout batch (old policy), with the entropy
    profile (``entropy_profile``; ``top1``: the top token's probability [N, T]).

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
        **entropy_profile(entropy, mask, top1),
    }


def policy_covariance(logits: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Cov_{a∼π}(log π(a), values(a)) with π = softmax(logits), probability-weighted (Cui et al. §4).

    logits, values: [..., V] -> [...]. = E_π[log π · v] − E_π[log π]·E_π[v].
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    v = values.float()
    return (p * logp * v).sum(-1) - (p * logp).sum(-1) * (p * v).sum(-1)


def entropy_change_first_order(logits: torch.Tensor, logit_update: torch.Tensor) -> torch.Tensor:
    """First-order entropy change of a softmax policy under a logit update Δz (Cui et al. §4, spec §7):

        H(softmax(z + Δz)) − H(softmax(z)) ≈ −Cov_{a∼π}(log π(a), Δz(a)).       [..., V] -> [...]
    """
    return -policy_covariance(logits, logit_update)


def pg_entropy_change(logits: torch.Tensor, advantages: torch.Tensor, lr: float, kind: str = "natural") -> torch.Tensor:
    """ΔH to first order after one policy-gradient step with per-action advantages A(s, a) [..., V]:
    natural PG Δz = η·A gives ΔH ≈ −η·Cov(log π, A); tabular softmax (vanilla) PG Δz = η·π·A gives
    ΔH ≈ −η·Cov(log π, π·A) (Cui et al. §4). The loop's ``cov/mean`` is the sampled-token estimate of
    the natural-PG covariance (advantage of the sampled response as A)."""
    if kind == "natural":
        update = lr * advantages.float()
    elif kind == "tabular":
        update = lr * torch.softmax(logits.float(), -1) * advantages.float()
    else:
        raise ValueError(f"unknown policy-gradient kind {kind!r}; valid: natural, tabular")
    return entropy_change_first_order(logits, update)
