"""Rollouts.concat: refill rounds joined into one batch."""
from __future__ import annotations

import torch

from rlvr_cli.types import Prompt, Rollouts


def _ro(p_lens, r_lens, prompt_len, resp_len, first_id, with_lp=True):
    n = len(p_lens)
    ids = torch.zeros(n, prompt_len + resp_len, dtype=torch.long)
    att = torch.zeros_like(ids)
    resp = torch.zeros(n, resp_len, dtype=torch.long)
    for i, (p, r) in enumerate(zip(p_lens, r_lens)):
        ids[i, prompt_len - p : prompt_len] = first_id + i
        att[i, prompt_len - p : prompt_len + r] = 1
        ids[i, prompt_len : prompt_len + r] = 100 + first_id + i
        resp[i, :r] = 1
    prompts = [Prompt(f"p{first_id}", "", "", "")]
    return Rollouts(ids, att, resp, prompt_len, torch.zeros(n, dtype=torch.long), [f"t{first_id + i}" for i in range(n)],
                    torch.zeros(n, dtype=torch.bool), prompts, torch.ones(n, resp_len) * resp if with_lp else None)


def test_concat_pads_prompts_left_and_responses_right_and_offsets_groups():
    a = _ro([2, 3], [1, 4], prompt_len=3, resp_len=4, first_id=1)
    b = _ro([5, 1], [2, 2], prompt_len=5, resp_len=2, first_id=10)
    c = Rollouts.concat([a, b], pad_id=0)
    assert c.prompt_len == 5 and c.response_mask.shape == (4, 4)
    assert c.group_ids.tolist() == [0, 0, 1, 1] and [p.id for p in c.prompts] == ["p1", "p10"]
    assert c.texts == ["t1", "t2", "t10", "t11"]
    # row 1 of a: prompt of 3 tokens now ends at position 5, its 4 response tokens follow
    assert c.input_ids[1].tolist() == [0, 0, 2, 2, 2, 102, 102, 102, 102]
    assert c.attention_mask[1].tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 1]
    assert c.input_ids[2].tolist() == [10] * 5 + [110, 110, 0, 0]
    assert c.response_mask.sum(-1).tolist() == [1, 4, 2, 2]
    assert c.rollout_logprobs.sum(-1).tolist() == [1, 4, 2, 2]
    assert Rollouts.concat([a, _ro([1], [1], 1, 1, 20, with_lp=False)], 0).rollout_logprobs is None
    assert Rollouts.concat([a], 0) is a
