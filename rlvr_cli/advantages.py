"""Stage 4: outcome rewards -> group-relative advantages (GRPO / Dr.GRPO), as verl computes them.

Reference: verl ``core_algos.compute_grpo_outcome_advantage`` (spec: shared docs, methods-grpo-cov.md §2).
"""
from __future__ import annotations

import torch


@torch.no_grad()
def grpo_advantages(
    scores: torch.Tensor, group_ids: torch.Tensor, norm_by_std: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """Group-normalised outcome advantage, one scalar per response.

    Â_i = (s_i − mean_G s) / (std_G s + eps) with the unbiased (N−1) std, or s_i − mean_G s when
    ``norm_by_std`` is False (Dr.GRPO). A singleton group uses mean 0 and std 1, as verl does.

    Args:
        scores: [N] outcome score of each response.
        group_ids: [N] integer id of the prompt each response answers (any order).
    Returns:
        [N] advantages.
    """
    scores = scores.float()
    _, inverse, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    n_groups = counts.shape[0]
    sums = torch.zeros(n_groups, dtype=scores.dtype).index_add_(0, inverse, scores)
    mean = sums / counts
    sq = torch.zeros(n_groups, dtype=scores.dtype).index_add_(0, inverse, (scores - mean[inverse]) ** 2)
    std = torch.sqrt(sq / (counts - 1).clamp(min=1))
    singleton = counts == 1
    mean = torch.where(singleton, torch.zeros_like(mean), mean)
    std = torch.where(singleton, torch.ones_like(std), std)
    centred = scores - mean[inverse]
    return centred / (std[inverse] + eps) if norm_by_std else centred


@torch.no_grad()
def zero_std_groups(scores: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """[N] bool: the response belongs to a group whose scores are all equal (no learning signal).

    DAPO's dynamic sampling drops these groups (``filter_groups.metric=acc``); a singleton group counts
    as zero-variance.
    """
    _, inverse = torch.unique(group_ids, return_inverse=True)
    n_groups = int(inverse.max()) + 1 if inverse.numel() else 0
    lo = torch.full((n_groups,), float("inf")).scatter_reduce(0, inverse, scores.float(), "amin")
    hi = torch.full((n_groups,), float("-inf")).scatter_reduce(0, inverse, scores.float(), "amax")
    return (hi == lo)[inverse]
