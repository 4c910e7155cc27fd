import pytest
import torch

from rlvr_cli.rollout.logprobs import entropy_from_logits, policy_token_stats, position_ids_from_mask
from tests.conftest import tiny_qwen2


def _batch():
    torch.manual_seed(1)
    ids = torch.randint(3, 64, (3, 9))
    attn = torch.ones_like(ids)
    attn[0, :2] = 0  # left padding in the prompt (P = 4)
    resp_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    attn[:, 4:] = resp_mask
    return ids, attn, resp_mask


def _reference(model, ids, attn, resp_mask, temperature):
    """Full-vocabulary log-probs/entropy the plain way, for comparison."""
    logits = model(input_ids=ids, attention_mask=attn, position_ids=position_ids_from_mask(attn)).logits.float()
    logits = logits[:, 3:-1] / temperature  # positions predicting the 5 response tokens
    logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 4:, None]).squeeze(-1)
    ent = entropy_from_logits(logits)
    return logp * resp_mask, ent * resp_mask


@pytest.mark.parametrize("chunk,checkpoint", [(1, False), (4, True), (1024, False)])
def test_chunked_stats_equal_full_vocab_computation(chunk, checkpoint):
    model = tiny_qwen2()
    ids, attn, mask = _batch()
    ref_lp, ref_ent = _reference(model, ids, attn, mask, 0.7)
    out = policy_token_stats(model, ids, attn, mask, 4, 0.7, ("logprobs", "entropy"), ("logprobs",), chunk_size=chunk, checkpoint=checkpoint)
    assert torch.allclose(out["logprobs"], ref_lp, atol=1e-5)
    assert torch.allclose(out["entropy"], ref_ent, atol=1e-5)
    assert out["logprobs"].requires_grad and not out["entropy"].requires_grad  # entropy only logged


def test_chunked_gradient_equals_full_gradient():
    ids, attn, mask = _batch()
    m1, m2 = tiny_qwen2(), tiny_qwen2()
    ref_lp, _ = _reference(m1, ids, attn, mask, 1.0)
    ref_lp.sum().backward()
    out = policy_token_stats(m2, ids, attn, mask, 4, 1.0, ("logprobs",), ("logprobs",), chunk_size=3, checkpoint=True)
    out["logprobs"].sum().backward()
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.allclose(p1.grad, p2.grad, atol=1e-5)


def test_custom_statistic_and_unknown_name():
    model = tiny_qwen2()
    ids, attn, mask = _batch()
    top1 = lambda logits, y: torch.softmax(logits, -1).max(-1).values  # noqa: E731
    out = policy_token_stats(model, ids, attn, mask, 4, stats=("top1",), extra_fns={"top1": top1})
    assert out["top1"].shape == (3, 5) and (out["top1"][mask.bool()] > 0).all() and (out["top1"][~mask.bool()] == 0).all()
    with pytest.raises(ValueError, match="entropy"):
        policy_token_stats(model, ids, attn, mask, 4, stats=("bogus",))
