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


# ---------------------------------------------------------------------------------- padding-free forwards

def test_pack_rows_layout_by_hand():
    """Two rows (P = 3, T = 3): each row's valid tokens less its last, positions restarting, and the
    places whose hidden states predict the response tokens, in row-major order."""
    from rlvr_cli.rollout.logprobs import pack_rows

    ids = torch.tensor([[0, 5, 6, 7, 8, 0], [1, 2, 3, 9, 0, 0]])
    attn = torch.tensor([[0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]])
    resp = torch.tensor([[1, 1, 0], [1, 0, 0]])
    bins = pack_rows(ids, attn, resp, 3)  # bins as long as the longest row: one row each
    assert bins.input_ids.tolist() == [[5, 6, 7], [1, 2, 3]]
    assert bins.position_ids.tolist() == [[0, 1, 2], [0, 1, 2]]
    assert bins.gather.tolist() == [1, 2, 5]  # 6 -> 7, 7 -> 8, 3 -> 9
    one = pack_rows(ids, attn, resp, 3, one_bin=True)
    assert one.input_ids.tolist() == [[5, 6, 7, 1, 2, 3]] and one.position_ids.tolist() == [[0, 1, 2, 0, 1, 2]]
    assert one.segments.tolist() == [[0, 0, 0, 1, 1, 1]] and one.gather.tolist() == [1, 2, 5]
    mask = one.block_mask()[0, 0]
    assert mask[2].tolist() == [True, True, True, False, False, False]  # causal within row 0
    assert mask[4].tolist() == [False, False, False, True, True, False]  # row 1 never sees row 0
    additive = one.block_mask(torch.float32)[0, 0]
    assert additive[4, 3] == 0 and additive[4, 0] == torch.finfo(torch.float32).min


def test_pack_rows_fills_bins_first_fit_decreasing():
    from rlvr_cli.rollout.logprobs import pack_rows

    lengths = [6, 2, 3, 1, 4]  # response lengths; prompts of 1 token: row lengths 6, 2, 3, 1, 4 (less the last)
    t = max(lengths)
    ids = torch.arange(1, 5 * (t + 1) + 1).view(5, t + 1)
    attn = torch.ones_like(ids)
    resp = torch.zeros(5, t, dtype=torch.long)
    for i, n in enumerate(lengths):
        resp[i, :n] = 1
        attn[i, 1 + n:] = 0
    packed = pack_rows(ids, attn, resp, 1)
    # capacity 6: [row0 (6)], [row4 (4), row1 (2)], [row2 (3), row3 (1)]
    assert packed.input_ids.shape == (3, 6)
    assert packed.segments.tolist() == [[0] * 6, [4] * 4 + [1] * 2, [2] * 3 + [3] + [-1] * 2]


def test_pack_rows_shares_a_prompt_by_hand():
    """Two rows of one prompt (2 tokens after a left pad) and a row of another: with ``share`` the first
    unit is the prompt once, then each row's response less its last token; a response sees its
    prompt and itself, never its sibling; token 0 of each sibling is predicted at the prompt's end."""
    from rlvr_cli.rollout.logprobs import pack_rows

    ids = torch.tensor([[0, 5, 6, 7, 8, 9], [0, 5, 6, 3, 4, 0], [1, 2, 3, 9, 0, 0]])
    attn = torch.tensor([[0, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]])
    resp = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0]])
    packed = pack_rows(ids, attn, resp, 3, share=torch.tensor([0, 0, 1]), cap=10)
    assert packed.input_ids.tolist() == [[5, 6, 7, 8, 3], [1, 2, 3, 0, 0]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 2], [0, 1, 2, 0, 0]]  # both responses continue at 2
    assert packed.segments.tolist() == [[0, 0, 0, 0, 0], [1, 1, 1, -1, -1]]
    assert packed.rows.tolist() == [[-1, -1, 0, 0, 1], [-1, -1, -1, -1, -1]]
    # row 0: 7, 8, 9 at places 1 (the prompt's 6), 2, 3; row 1: 3, 4 at 1 and 4; row 2: 9 at 7
    assert packed.gather.tolist() == [1, 2, 3, 1, 4, 7]
    mask = packed.block_mask()[0, 0]
    assert mask[3].tolist() == [True, True, True, True, False]  # row 0's response: prompt and itself
    assert mask[4].tolist() == [True, True, False, False, True]  # row 1's never sees row 0's
    # each row alone when units may hold one row only
    alone = pack_rows(ids, attn, resp, 3, share=torch.tensor([0, 0, 1]), cap=1)
    assert alone.input_ids.shape[0] == 3 and alone.rows.max() == 1


def _wide_batch(n_rows=8, p=10, t=200, seed=0, vocab=64):
    """Rows of very different lengths: responses of 1 to 200 tokens, prompts of 1 to 10 (left padding),
    right padding after each response; the last row has no response at all (a dummy row)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (n_rows, p + t), generator=g)
    attn = torch.ones(n_rows, p + t, dtype=torch.long)
    resp = torch.zeros(n_rows, t)
    prompt_lens = [10, 1, 4, 10, 7, 2, 9, 5][:n_rows]
    resp_lens = [1, 200, 3, 57, 120, 11, 199, 0][:n_rows]
    for i, (pl, rl) in enumerate(zip(prompt_lens, resp_lens)):
        attn[i, : p - pl] = 0
        attn[i, p + rl:] = 0
        resp[i, :rl] = 1
    return ids, attn, resp, p


def _stats_and_grads(model, ids, attn, resp, p, packing):
    model.zero_grad()
    out = policy_token_stats(model, ids, attn, resp, p, 0.8, ("logprobs", "entropy"), ("logprobs", "entropy"),
                             chunk_size=64, packing=packing)
    ((out["logprobs"] + 0.1 * out["entropy"]) * resp).sum().backward()
    return out, [q.grad.clone() for q in model.parameters()]


@pytest.mark.parametrize("attn_impl", ["sdpa", "eager"])
def test_packed_forward_equals_padded_forward(attn_impl):
    """Packed rows (block-diagonal mask, restarting positions) give the padded forward's per-token
    log-probs, entropy and gradients: within 1e-5 relative in fp32, exactly (1e-9) in float64."""
    ids, attn, resp, p = _wide_batch()
    # (eager's padded forward itself gives NaN on left-padded rows in float64: fp32 only there)
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-9))[: 2 if attn_impl == "sdpa" else 1]:
        model = tiny_qwen2(hidden=64, layers=2)
        model.config.max_position_embeddings = 256
        model.config._attn_implementation = attn_impl
        model = model.to(dtype).train()
        a, ga = _stats_and_grads(model, ids, attn, resp, p, "off")
        b, gb = _stats_and_grads(model, ids, attn, resp, p, "block_mask")
        for k in ("logprobs", "entropy"):
            diff = ((a[k] - b[k]).detach() * resp).abs()
            assert float((diff / (1 + a[k].detach().abs())).max()) <= tol, (k, float(diff.max()))
            assert float((b[k].detach() * (1 - resp)).abs().max()) == 0  # nothing outside the responses
        scale = max(float(g.abs().max()) for g in ga)
        assert max(float((x - y).abs().max()) for x, y in zip(ga, gb)) <= tol * scale


def test_one_sequence_varlen_layout_equals_padded_forward():
    """``varlen`` (flash-attention's layout: every row in one sequence, restarting position_ids, no
    mask) scores the same tokens: transformers 5 turns restarting positions into a block mask when no
    mask and no cache are given, so the layout (gather places, positions) is checked here on CPU."""
    ids, attn, resp, p = _wide_batch()
    model = tiny_qwen2(hidden=64, layers=2)
    model.config.max_position_embeddings = 256
    info = {}
    with torch.no_grad():
        a = policy_token_stats(model, ids, attn, resp, p, packing="off")["logprobs"]
        b = policy_token_stats(model, ids, attn, resp, p, packing="varlen", info=info)["logprobs"]
    assert info["mode"] == "varlen" and info["slots"] == int(attn.sum()) - int((resp.sum(-1) > 0).sum())
    assert float((((a - b) * resp).abs() / (1 + a.abs())).max()) <= 1e-5


def test_auto_packing_runs_padded_when_there_is_little_padding():
    ids, attn, resp, p = _wide_batch()
    model = tiny_qwen2(hidden=64, layers=2)
    model.config.max_position_embeddings = 256
    wide, full = {}, {}
    with torch.no_grad():
        policy_token_stats(model, ids, attn, resp, p, packing="auto", info=wide)
        same = torch.ones_like(attn)
        policy_token_stats(model, ids, same, torch.ones_like(resp), p, packing="auto", info=full)
    assert wide["mode"] == "block_mask" and wide["slots"] < 0.5 * ids.shape[0] * (ids.shape[1] - 1)
    assert full["mode"] == "off"
    with pytest.raises(ValueError, match="block_mask"):
        policy_token_stats(model, ids, attn, resp, p, packing="bogus")


def _grouped_batch(groups=3, g=4, p=10, t=40, seed=0, vocab=64):
    """GRPO's shape: ``groups`` prompts of different lengths (left padding), ``g`` responses each of
    1 to ``t`` tokens (right padding), every row's response different."""
    gen = torch.Generator().manual_seed(seed)
    n = groups * g
    ids = torch.randint(3, vocab, (n, p + t), generator=gen)
    prompt = torch.randint(3, vocab, (groups, p), generator=gen).repeat_interleave(g, 0)
    ids[:, :p] = prompt
    attn = torch.ones(n, p + t, dtype=torch.long)
    resp = torch.zeros(n, t)
    resp_lens = torch.randint(1, t + 1, (n,), generator=gen)
    for i in range(n):
        attn[i, : (i // g) * 3] = 0  # prompts of 10, 7, 4 tokens
        attn[i, p + int(resp_lens[i]):] = 0
        resp[i, : int(resp_lens[i])] = 1
    return ids, attn, resp, p


@pytest.mark.parametrize("attn_impl", ["sdpa", "eager"])
@pytest.mark.parametrize("mode", ["prefix", "prefix_block"])
def test_prompt_shared_forward_equals_padded_forward(attn_impl, mode):
    """Each group's prompt runs once: ``prefix`` runs its 4 rows' responses on its keys and values,
    ``prefix_block`` packs them after it under a mask where each sees the prompt and itself.
    Per-token log-probs, entropy and gradients are the padded forward's within 1e-5 relative in fp32.
    In float64 the forward is exact; gradients agree to 1e-6 only, because Qwen2's RMSNorm computes in
    float32 and the rows' gradients now meet before it rather than after."""
    ids, attn, resp, p = _grouped_batch()
    for dtype, tol, gtol in ((torch.float32, 1e-5, 1e-5), (torch.float64, 1e-12, 1e-6))[: 2 if attn_impl == "sdpa" else 1]:
        model = tiny_qwen2(hidden=64, layers=2)
        model.config._attn_implementation = attn_impl
        model = model.to(dtype).train()
        a, ga = _stats_and_grads(model, ids, attn, resp, p, "off")
        info = {}
        model.zero_grad()
        b = policy_token_stats(model, ids, attn, resp, p, 0.8, ("logprobs", "entropy"), ("logprobs", "entropy"),
                               chunk_size=64, packing=mode, info=info)
        ((b["logprobs"] + 0.1 * b["entropy"]) * resp).sum().backward()
        gb = [q.grad.clone() for q in model.parameters()]
        fed = int(attn[:, p:].sum()) - ids.shape[0]  # response tokens the rows feed in
        if mode == "prefix":
            assert info == {"mode": "prefix", "slots": 3 * p + ids.shape[0] * (ids.shape[1] - p - 1)}
        else:  # every prompt token at least once, every fed response token exactly once
            assert info["mode"] == "prefix_block" and info["slots"] >= 10 + 7 + 4 + fed
            assert info["slots"] < int(attn.sum()) - ids.shape[0]  # fewer than packing rows alone needs
        for k in ("logprobs", "entropy"):
            diff = ((a[k] - b[k]).detach() * resp).abs()
            assert float((diff / (1 + a[k].detach().abs())).max()) <= tol, (k, dtype)
            assert float((b[k].detach() * (1 - resp)).abs().max()) == 0
        scale = max(float(g.abs().max()) for g in ga)
        assert max(float((x - y).abs().max()) for x, y in zip(ga, gb)) <= gtol * scale


def test_auto_takes_the_cheapest_layout():
    """``auto``: groups sharing long prompts with short responses, no padding -> a shared-prompt layout
    (``prefix``: as few slots as whole groups packed, fewer attention pairs; ``prefix_block`` without
    ``share_prompts``); distinct prompts with a wide spread of response lengths -> ``block_mask``."""
    model = tiny_qwen2(hidden=64, layers=2)
    model.config.max_position_embeddings = 256
    ids, attn, resp, p = _grouped_batch(groups=2, g=8, p=30, t=12)
    attn[:, :] = 1  # no padding at all: only sharing the prompts saves slots
    resp[:, :] = 1
    seen = {}
    with torch.no_grad():
        for share in (True, False):
            info = {}
            policy_token_stats(model, ids, attn, resp, p, packing="auto", info=info, share_prompts=share)
            seen[share] = info["mode"]
        wide = {}
        w_ids, w_attn, w_resp, w_p = _wide_batch()
        policy_token_stats(model, w_ids, w_attn, w_resp, w_p, packing="auto", info=wide, share_prompts=True)
    assert seen == {True: "prefix", False: "prefix_block"}  # equal slots; prefix computes fewer attention pairs
    assert wide["mode"] == "block_mask"
