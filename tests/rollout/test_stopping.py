"""Where a response ends: EOS, extra stop tokens, stop strings (one rule for every engine)."""
from __future__ import annotations

import pytest
import torch

from rlvr_cli.errors import UserError
from rlvr_cli.models import load_tokenizer
from rlvr_cli.rollout import generate_rollouts
from rlvr_cli.rollout.stopping import StopCriteria, resolve_stop, response_mask
from rlvr_cli.types import Prompt
from tests.conftest import tiny_qwen2


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer({"path": "builtin:tiny_arith"})


def test_mask_keeps_up_to_the_first_stop_token():
    ids = torch.tensor([[5, 6, 9, 7, 9], [5, 6, 7, 8, 4], [8, 5, 5, 5, 5]])
    mask, truncated = response_mask(ids, StopCriteria((9, 8)))
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 0, 0, 0, 0]]
    assert truncated.tolist() == [False, False, False]
    mask, truncated = response_mask(ids, StopCriteria((99,)))
    assert mask.sum().item() == 15 and truncated.all()


def test_a_stop_string_ends_at_the_token_that_completes_it(tok):
    text = "x = 3 + 4 = 7. Answer: 7\nmore text after"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    mask, truncated = response_mask(torch.tensor([ids]), StopCriteria((2,), ("Answer: 7",)), tok)
    n = int(mask.sum())
    assert "Answer: 7" in tok.decode(ids[:n]) and "Answer: 7" not in tok.decode(ids[: n - 1])
    assert not truncated.item()


def test_resolve_stop_reads_token_strings_and_rejects_unknown_ones(tok):
    model = tiny_qwen2(vocab=len(tok))
    stop = resolve_stop(model, tok, ["<|im_end|>", "<|endoftext|>", 7], ["\n\n"])
    im_end, eot = tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    assert tok.eos_token == "<|im_end|>" and stop.token_ids == (im_end, eot, 7)  # EOS first, no duplicates
    assert stop.strings == ("\n\n",)
    with pytest.raises(UserError, match="not a single token"):
        resolve_stop(model, tok, ["<|nope|>"])


def test_generation_stops_at_extra_stop_ids_and_strings(tok):
    """A random model rarely emits EOS: with every digit as a stop token, responses end at their first
    digit; with a stop string, the decoded text ends where the string is completed."""
    model = tiny_qwen2(vocab=len(tok), hidden=32)
    digits = [tok.convert_tokens_to_ids(d) for d in "0123456789"]
    prompts = [Prompt("p", "x", "1", "Start with 3.")]
    torch.manual_seed(0)
    ro = generate_rollouts(model, tok, prompts, group_size=32, max_new_tokens=24,
                           stop=resolve_stop(model, tok, digits))
    for row, n, cut in zip(ro.responses, ro.response_mask.sum(-1).tolist(), ro.truncated.tolist()):
        inside = row[:n].tolist()
        assert not any(t in digits for t in inside[:-1])  # nothing after the first stop token
        assert cut == (inside[-1] not in digits and inside[-1] not in resolve_stop(model, tok).token_ids)
    assert (~ro.truncated).sum() > 5
    torch.manual_seed(0)
    ro = generate_rollouts(model, tok, prompts, group_size=32, max_new_tokens=24,
                           stop=resolve_stop(model, tok, stop_strings=["1"]))
    ended = [t for t, cut in zip(ro.texts, ro.truncated.tolist()) if not cut and "1" in t]
    assert ended and all(t.endswith("1") or t.rstrip().endswith("1") for t in ended)
