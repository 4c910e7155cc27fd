"""benchmarks/packing.py builds its rollout batches in the engines' layout."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import packing  # noqa: E402


def test_wide_batch_has_the_rollout_layout_and_a_wide_spread():
    b = packing.make_batch(64, 100, "wide", 80, 400, seed=0)
    ro, p = b.rollouts, b.rollouts.prompt_len
    lens = ro.response_mask.sum(-1)
    assert ro.input_ids.shape == (64, p + ro.response_mask.shape[1]) and int(lens.max()) <= 400
    assert int(lens.min()) < 40 and int(lens.max()) > 200  # tens of tokens to hundreds
    assert torch.equal(ro.attention_mask[:, p:], ro.response_mask)  # right-padded responses
    assert (ro.attention_mask[:, :p].sum(-1) >= 20).all() and (ro.attention_mask[:, p - 1] == 1).all()  # left padding
    assert torch.equal(b.advantages != 0, (b.advantages != 0) & ro.response_mask.bool())
    narrow = packing.make_batch(16, 100, "narrow", 80, 64, seed=0).rollouts.response_mask.sum(-1)
    assert int(narrow.min()) >= 44 and int(narrow.max()) <= 64
