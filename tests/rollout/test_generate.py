"""Stage 2, rollout: HF ``generate`` samples from the whole distribution the loss later scores."""
from __future__ import annotations

import torch

from rlvr_cli.models import load_tokenizer
from rlvr_cli.rollout import generate_rollouts
from rlvr_cli.rollout.generate import eos_token_ids
from rlvr_cli.types import Prompt
from tests.conftest import tiny_qwen2


def test_sampling_is_not_truncated_to_a_top_k():
    """A random model is near-uniform over the vocabulary: the first sampled token of 256 responses to
    one prompt must spread over far more than 50 ids (transformers' default top_k=50 would cap it)."""
    tok = load_tokenizer({"path": "builtin:tiny_arith"})
    model = tiny_qwen2(vocab=len(tok), hidden=32)
    torch.manual_seed(0)
    ro = generate_rollouts(model, tok, [Prompt("p", "x", "1", "Start with 3.")], group_size=256, max_new_tokens=1)
    assert ro.responses[:, 0].unique().numel() > 80


def test_rollouts_are_prompt_major_with_masks_up_to_eos():
    tok = load_tokenizer({"path": "builtin:tiny_arith"})
    model = tiny_qwen2(vocab=len(tok), hidden=32)
    prompts = [Prompt(str(i), "x", "1", f"Start with {i}.") for i in range(3)]
    torch.manual_seed(0)
    ro = generate_rollouts(model, tok, prompts, group_size=4, max_new_tokens=6, batch_size=5)
    assert ro.group_ids.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert ro.response_mask.shape == ro.responses.shape and ro.responses.shape[1] <= 6
    eos = set(eos_token_ids(model, tok))
    for row, n, cut in zip(ro.responses, ro.response_mask.sum(-1).tolist(), ro.truncated.tolist()):
        assert cut == (int(row[n - 1]) not in eos)  # a finished response ends at its first EOS
    # the mask is a prefix: once 0 it stays 0
    assert bool((ro.response_mask[:, 1:] <= ro.response_mask[:, :-1]).all())
