"""The actor's micro-batch packing (pure)."""
from __future__ import annotations

import torch

from rlvr_cli.trainer.actor import token_budget_splits


def test_token_budget_splits_by_hand():
    lengths = torch.tensor([3, 10, 2, 9, 1])
    # prompt 5: sorted 10, 9, 3, 2, 1 -> [10, 9] costs 2 x 15 = 30; +3 would be 45 > 40; [3, 2, 1] costs 3 x 8 = 24
    parts = token_budget_splits(lengths, prompt_len=5, budget=40)
    assert [p.tolist() for p in parts] == [[1, 3], [0, 2, 4]]
    # a row longer than the budget gets a micro-batch of its own
    assert [p.tolist() for p in token_budget_splits(lengths, 5, 12)] == [[1], [3], [0], [2], [4]]
    assert sorted(i for p in token_budget_splits(lengths, 0, 1000) for i in p.tolist()) == [0, 1, 2, 3, 4]
    assert len(token_budget_splits(lengths, 0, 1000)) == 1
