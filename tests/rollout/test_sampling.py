"""One decode step's sampling distribution: HF's top-p nucleus on temperature-scaled scores."""
from __future__ import annotations

import pytest
import torch

from rlvr_cli.rollout.sampling import sampling_scores, top_p_mask


@pytest.mark.parametrize("top_p", [0.3, 0.7, 0.95])
def test_top_p_mask_matches_hf_warper(top_p):
    from transformers.generation.logits_process import TopPLogitsWarper

    scores = torch.randn(16, 64, generator=torch.Generator().manual_seed(3)) * 2
    hf = TopPLogitsWarper(top_p)(None, scores.clone())
    assert torch.equal(top_p_mask(scores, top_p), torch.isfinite(hf))


def test_top_p_keeps_the_argmax_and_skips_masked_tokens():
    scores = torch.tensor([[5.0, 0.0, float("-inf"), 1.0]])
    assert top_p_mask(scores, 0.01).tolist() == [[True, False, False, False]]
    assert top_p_mask(scores, 1.0).tolist() == [[True, True, False, True]]


def test_sampling_scores_are_logits_over_temperature_inside_the_nucleus():
    logits = torch.tensor([[2.0, 1.0, 0.0, -3.0]])
    scores = sampling_scores(logits, 0.5, 0.9)
    assert scores[0, :2].tolist() == [4.0, 2.0] and torch.isinf(scores[0, 2:]).all()
    assert torch.equal(sampling_scores(logits, 0.0, 0.9), logits)  # greedy: the scores themselves
