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


def test_the_models_own_generation_config_never_changes_sampling():
    """A checkpoint's generation_config.json that sets every sampling knob (Qwen ships
    repetition_penalty and top_k; others min_p, no_repeat_ngram_size, suppressed tokens) must not
    reach sampling: the samples are those of plain temperature-1 sampling, seed for seed, and the
    model keeps its config afterwards."""
    from transformers import GenerationConfig

    tok = load_tokenizer({"path": "builtin:tiny_arith"})
    plain, loaded = tiny_qwen2(vocab=len(tok), hidden=32), tiny_qwen2(vocab=len(tok), hidden=32)
    own = GenerationConfig(do_sample=True, temperature=0.05, top_k=1, top_p=0.01, min_p=0.9, typical_p=0.1,
                           repetition_penalty=50.0, no_repeat_ngram_size=1, suppress_tokens=list(range(10, 200)),
                           min_new_tokens=8, epsilon_cutoff=0.2, bad_words_ids=[[5]])
    loaded.generation_config = own
    prompts = [Prompt("p", "x", "1", "Start with 3.")]
    torch.manual_seed(0)
    a = generate_rollouts(plain, tok, prompts, group_size=64, max_new_tokens=8)
    torch.manual_seed(0)
    b = generate_rollouts(loaded, tok, prompts, group_size=64, max_new_tokens=8)
    assert torch.equal(a.responses, b.responses) and torch.equal(a.response_mask, b.response_mask)
    assert b.responses[:, 0].unique().numel() > 20  # really sampled, not near-greedy
    assert loaded.generation_config is own
