"""The sampling distribution of one decode step: temperature, then HF's top-p nucleus, as scores
whose softmax it is. Shared by the lean sampler (``generate``) and lock-step extrapolated sampling."""
from __future__ import annotations

import torch


def top_p_mask(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus of softmax(scores): the smallest set of most likely tokens whose mass reaches ``top_p``
    (the argmax always kept, as HF's ``TopPLogitsWarper``). scores [B, V] (−inf allowed) -> bool [B, V]."""
    if top_p >= 1.0:
        return torch.isfinite(scores)
    sorted_scores, order = scores.sort(dim=-1, descending=True)  # [B, V]
    probs = sorted_scores.softmax(-1)
    mass_before = probs.cumsum(-1) - probs  # mass of the strictly more likely tokens
    keep_sorted = mass_before < top_p
    keep_sorted[..., 0] = True
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return keep & torch.isfinite(scores)


def sampling_scores(logprobs: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Scores whose softmax is the sampling distribution: logprobs (or logits) / T, outside the top-p nucleus
    set to −inf. Greedy (T ≤ 0): the inputs themselves (sampling then takes the argmax). [B, V] -> [B, V]."""
    if temperature <= 0:
        return logprobs
    scaled = logprobs / temperature
    return scaled.masked_fill(~top_p_mask(scaled, top_p), float("-inf"))
