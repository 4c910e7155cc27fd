"""Stage 2, rollout: HF ``generate`` samples from the whole distribution the loss later scores."""
from __future__ import annotations

import pytest
import torch

from rlvr_cli.models import load_model, load_tokenizer
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


# ------------------------------------------------------------------------------ the lean sampler
def _prompts(n: int) -> list[Prompt]:
    # different lengths, so the batch is left-padded
    return [Prompt(str(i), "x", "1", "Start with " + "3 + " * i + f"{i}.") for i in range(n)]


def test_lean_sampling_is_generate_seed_for_seed_while_no_row_ends():
    """With a stop id the model cannot sample, every row runs the whole budget and both samplers draw
    one multinomial over the same [n, V] probabilities per step: the same tokens, seed for seed, at
    T = 0.7 and top-p 0.9, with and without prompts shared by a group."""
    from rlvr_cli.rollout.stopping import StopCriteria

    tok = load_tokenizer({"path": "builtin:tiny_arith"})
    model = tiny_qwen2(vocab=len(tok), hidden=32)
    never = StopCriteria((len(tok) + 7,))
    for group in (1, 4):
        out = {}
        for sampler in ("hf", "lean"):
            torch.manual_seed(3)
            out[sampler] = generate_rollouts(model, tok, _prompts(5), group, 12, 0.7, 0.9, stop=never, sampler=sampler)
        assert out["lean"].responses.shape == (5 * group, 12)
        assert torch.equal(out["hf"].input_ids, out["lean"].input_ids), group
        assert torch.equal(out["hf"].attention_mask, out["lean"].attention_mask)


def test_lean_greedy_equals_generate_when_rows_end_at_different_steps():
    """Greedy decoding of a model trained to stop is deterministic: lean (finished rows dropped from the
    batch, the cache with them) must give generate's responses and masks exactly, in chunks too."""
    tok = load_tokenizer({"path": "builtin:tiny_arith"})
    model = load_model({"path": "builtin:tiny_arith", "dtype": "float32"}, torch.device("cpu"))
    # not in the sorted order of their tokens: the prefill's distinct prompts must map back to their rows
    prompts = [Prompt(str(i), "x", "1", f"Compute {i} + {2 * i} - 1.") for i in (5, 1, 4, 0, 3, 2)]
    for group in (1, 2):
        a = generate_rollouts(model, tok, prompts, group, 48, 0.0, 1.0, batch_size=5, sampler="hf")
        b = generate_rollouts(model, tok, prompts, group, 48, 0.0, 1.0, batch_size=5, sampler="lean")
        lengths = a.response_mask.sum(-1)
        assert lengths.unique().numel() > 1 and not bool(a.truncated.all())  # rows really end apart
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.response_mask, b.response_mask), group
        assert a.texts == b.texts


def test_lean_prefills_each_prompt_once_and_drops_finished_rows():
    """The forwards the lean loop runs: one prefill over the distinct prompts (not all G copies), then
    decode steps whose batch shrinks as rows end; never more rows than are still writing."""
    tok = load_tokenizer({"path": "builtin:tiny_arith"})
    model = load_model({"path": "builtin:tiny_arith", "dtype": "float32"}, torch.device("cpu"))
    rows: list[tuple[int, int]] = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: rows.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    torch.manual_seed(0)
    ro = generate_rollouts(model, tok, _prompts(3), 8, 48, 1.0, 1.0, sampler="lean")
    hook.remove()
    assert rows[0][0] == 3 and rows[0][1] == ro.prompt_len  # 3 distinct prompts prefilled, not 24 rows
    decode = [r for r, _ in rows[1:]]
    assert decode[0] == 24 and decode == sorted(decode, reverse=True) and decode[-1] < 24
    lengths = ro.response_mask.sum(-1)
    for t, live in enumerate(decode, start=1):  # the forward after token t runs the rows not ended by t
        assert live == int((lengths > t).sum())


def test_sampler_auto_falls_back_to_generate_for_stop_strings_and_lean_says_why():
    from rlvr_cli.errors import UserError
    from rlvr_cli.rollout.generate import resolve_sampler
    from rlvr_cli.rollout.stopping import StopCriteria

    model = tiny_qwen2(vocab=64)
    assert resolve_sampler("auto", model, StopCriteria((2,)))[0] == "lean"
    assert resolve_sampler("auto", model, StopCriteria((2,), ("\n\n",)))[0] == "hf"
    assert resolve_sampler("hf", model, StopCriteria((2,)))[0] == "hf"
    with pytest.raises(UserError, match="stop strings"):
        resolve_sampler("lean", model, StopCriteria((2,), ("\n\n",)))
