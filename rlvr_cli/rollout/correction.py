"""Rollout–trainer mismatch: how far the sampling engine's log-probs are from the trainer's, and the
truncated importance-sampling (TIS) correction for it.

An engine such as vLLM samples from π_rollout (its own kernels, precision, batch shapes), while the
loss scores the same tokens under π_old (the trainer's forward before the update). With
d_t = log π_old(y_t) − log π_rollout(y_t) per token and r_t = exp(d_t):

- ``mismatch_metrics``: mean and max |d_t|, and KL(π_rollout ‖ π_old) estimated on the sampled tokens
  with the k3 estimator E[r − 1 − log r] (Schulman 2020; non-negative, low variance);
- ``importance_weights``: the detached factor that multiplies each token's policy loss (verl's
  ``rollout_correction`` / TRL's ``vllm_importance_sampling_correction``, Yao et al. 2025 "Your
  efficient RL framework secretly brings you off-policy RL training"), with cap C:

  ==================  =======================================================================
  token_truncate      w_t = min(r_t, C)                                     (TIS, the default)
  token_mask          w_t = r_t · 1[r_t ≤ C]                              (a token far off is dropped)
  sequence_truncate   w_t = min(R, C),  R = exp(Σ_t d_t) over the response
  sequence_mask       w_t = R · 1[R ≤ C]                                (a response far off is dropped)
  ==================  =======================================================================

  Weights are 0 on padding; a dropped token keeps its place in the loss normalisers (as Clip-Cov's
  detached tokens do). Computed in log space, so a long response never overflows.
"""
from __future__ import annotations

import math

import torch

from rlvr_cli.rollout.config import CORRECTION_MODES as MODES


@torch.no_grad()
def mismatch_metrics(train_lp: torch.Tensor, rollout_lp: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """[N, T] log-probs of the sampled tokens under trainer and engine, [N, T] mask -> scalars."""
    m = mask.float()
    n = m.sum().clamp(min=1.0)
    d = (train_lp - rollout_lp) * m
    k3 = (torch.exp(d) - 1.0 - d) * m
    return {
        "rollout/logprob_abs_diff_mean": float(d.abs().sum() / n),
        "rollout/logprob_abs_diff_max": float(d.abs().max()) if d.numel() else 0.0,
        "rollout/kl_rollout_train": float(k3.sum() / n),
    }


def _log_ratio(train_lp: torch.Tensor, rollout_lp: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """[N, T] log r_t (token modes) or log R broadcast over the response (sequence modes), 0 on padding."""
    d = (train_lp.float() - rollout_lp.float()) * mask.float()
    return d.sum(-1, keepdim=True).expand_as(d) * mask.float() if mode.startswith("sequence") else d


@torch.no_grad()
def importance_weights(train_lp: torch.Tensor, rollout_lp: torch.Tensor, mask: torch.Tensor, mode: str,
                       cap: float) -> torch.Tensor:
    """[N, T] weights for the per-token policy loss (see the module docstring); 1 where mode is off."""
    if mode not in MODES:
        raise ValueError(f"unknown rollout correction mode {mode!r}; valid: {', '.join(MODES)}")
    m = mask.float()
    if mode == "off":
        return m
    log_cap = math.log(cap)
    d = _log_ratio(train_lp, rollout_lp, mask, mode)  # [N, T]
    if mode.endswith("truncate"):
        w = torch.exp(d.clamp(max=log_cap))
    else:
        w = torch.where(d <= log_cap, torch.exp(d.clamp(max=log_cap)), torch.zeros_like(d))
    return w * m


def weight_metrics(weights: torch.Tensor, train_lp: torch.Tensor, rollout_lp: torch.Tensor, mask: torch.Tensor,
                   mode: str, cap: float) -> dict[str, float]:
    """Mean weight, and the share of tokens the cap touched (truncated or dropped)."""
    m = mask.float()
    n = m.sum().clamp(min=1.0)
    capped = (_log_ratio(train_lp, rollout_lp, mask, mode) > math.log(cap)).float() * m
    return {"rollout/is_weight_mean": float((weights * m).sum() / n), "rollout/is_capped_frac": float(capped.sum() / n)}
