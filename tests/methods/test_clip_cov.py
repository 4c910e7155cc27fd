import torch

from rlvr_cli.losses import ClipSpec
from rlvr_cli.methods.clip_cov import (
    DETACH_KEY, batch_covariance, clip_cov_candidates, clip_cov_weights, select_by_priority,
)
from rlvr_cli.stats import token_covariance
from tests.methods.test_registry import build_from_yaml, ctx, policy_batch, synthetic_batch

# Two responses of 3 tokens, A = +2 / −2 (Ā = 0), old lp with l̄ = −12/6 = −2:
#   C row 0 = 2·(lp + 2)  = [ 3,  2, −4]
#   C row 1 = −2·(lp + 2) = [−3,  3,  1]
# band (1, 5), strict: candidates (0,0), (0,1), (1,1) — (1,2) has C = 1, not > 1. N = 6.
LP = torch.tensor([[-0.5, -1.0, -4.0], [-0.5, -3.5, -2.5]])
ADV = [2.0, -2.0]


def _batch(**kw):
    return synthetic_batch((3, 3), adv=ADV, old_logprobs=LP, **kw)


def test_covariance_by_hand_and_nan_padding():
    b = _batch()
    cov = batch_covariance(b.old_logprobs, b.advantages, b.response_mask)
    assert torch.allclose(cov, torch.tensor([[3.0, 2.0, -4.0], [-3.0, 3.0, 1.0]]))
    # padding with NaN never enters the means: same values as the shared single-rank helper
    b2 = synthetic_batch((3, 2), adv=ADV, old_logprobs=LP)
    cov2 = batch_covariance(b2.old_logprobs, b2.advantages, b2.response_mask)
    assert torch.isfinite(cov2).all() and cov2[1, 2] == 0
    assert torch.allclose(cov2, token_covariance(b2.old_logprobs, b2.advantages, b2.response_mask))


def test_candidates_strict_band_excludes_clipped_and_padding():
    cov = torch.tensor([[0.5, 1.0, 2.0, 5.0, 4.9, 3.0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    clipped = torch.tensor([[False, False, False, False, True, False]])
    cand = clip_cov_candidates(cov, mask, clipped, 1.0, 5.0)
    # 1.0 and 5.0 sit on the (open) bounds, 4.9 is PPO-clipped, 3.0 is padding
    assert cand.tolist() == [[False, False, True, False, False, False]]


def test_select_by_priority_smallest_keys_win():
    cand = torch.tensor([[True, False, True], [True, True, False]])  # 4 candidates, row-major
    keys = torch.tensor([0.9, 0.1, 0.5, 0.3])  # -> (0,0) (0,2) (1,0) (1,1)
    assert select_by_priority(cand, keys, 2).tolist() == [[False, False, True], [False, True, False]]
    assert select_by_priority(cand, keys, 0).sum() == 0
    assert torch.equal(select_by_priority(cand, keys, 10), cand)  # |Ω| ≤ n: every candidate


def test_select_by_priority_is_global_over_ranks():
    cand = torch.tensor([[True, True]])
    # rank 0 holds keys [0.9, 0.1]; rank 1 holds [0.05, 0.6]: the 2 smallest globally are 0.05 (rank 1), 0.1
    gather = lambda x: torch.cat([x, torch.tensor([0.05, 0.6])])  # noqa: E731
    assert select_by_priority(cand, torch.tensor([0.9, 0.1]), 2, gather).tolist() == [[False, True]]


def test_weights_zero_on_selected():
    assert clip_cov_weights(torch.tensor([[True, False]])).tolist() == [[0.0, 1.0]]


def test_yaml_method_prepare_and_loss():
    method = build_from_yaml("clip_cov", ratio=0.34, stats_scope="batch")  # floor(0.34·6) = 2 of the 3 candidates
    assert method.clip_overrides == {"clip_ratio_low": 1.0, "clip_ratio_high": 1.0, "clip_ratio_c": None}
    b = _batch()
    metrics = method.prepare(b, ctx(step=1))
    sel = b.method[DETACH_KEY]
    assert sel.shape == (2, 3) and sel.sum() == 2 and metrics["n_selected"] == 2 and metrics["n_candidates"] == 3
    assert {tuple(ij) for ij in sel.nonzero().tolist()} <= {(0, 0), (0, 1), (1, 1)}
    assert metrics["selected_frac"] == 2 / 6
    out = method.loss(policy_batch(b))
    assert torch.equal(out.token_weights, 1 - sel) and out.token_loss is None and out.extra_loss is None


def test_ratio_below_one_token_selects_one_and_annealed_zero_selects_none():
    method = build_from_yaml("clip_cov", stats_scope="batch")  # 2e-4 · 6 < 1
    b = _batch()
    assert method.prepare(b, ctx())["n_selected"] == 1 and b.method[DETACH_KEY].sum() == 1
    annealed = build_from_yaml("clip_cov", ratio_schedule={"kind": "linear", "end": 0.0}, stats_scope="batch")
    b = _batch()
    m = annealed.prepare(b, ctx(step=10, total=10))  # the last step of a linear anneal: ratio exactly 0
    assert m["ratio"] == 0.0 and m["n_selected"] == 0 and b.method[DETACH_KEY].sum() == 0


def test_all_tokens_masked():
    method = build_from_yaml("clip_cov", stats_scope="batch")
    b = synthetic_batch((0, 0))
    m = method.prepare(b, ctx())
    assert m["n_selected"] == 0 and m["selected_frac"] == 0.0
    out = method.loss(policy_batch(b))
    assert torch.equal(out.token_weights, torch.ones(2, 1))


def test_draws_are_seeded_reproducible_and_checkpointed():
    def draw(method, step, seed=0):
        b = _batch()
        method.prepare(b, ctx(step=step, seed=seed))
        return b.method[DETACH_KEY]

    a, b = build_from_yaml("clip_cov", ratio=0.2, stats_scope="batch"), build_from_yaml("clip_cov", ratio=0.2, stats_scope="batch")
    torch.manual_seed(123)  # the global generator is not used
    assert [draw(a, s).tolist() for s in range(1, 6)] == [draw(b, s).tolist() for s in range(1, 6)]
    picks = {tuple(draw(a, s).flatten().tolist()) for s in range(1, 30)}
    assert len(picks) == 3  # over many steps each of the 3 candidates gets drawn
    state = a.state_dict()
    c = build_from_yaml("clip_cov", ratio=0.2, stats_scope="batch")
    c.load_state_dict(state)
    assert c.draws == a.draws and torch.equal(c.generator.get_state(), a.generator.get_state())
    assert torch.equal(draw(c, 31), draw(a, 31))


def test_micro_batch_scope_uses_current_logprobs_and_skips_clipped_tokens():
    method = build_from_yaml("clip_cov", ratio=1.0, stats_scope="micro_batch")
    b = _batch()
    method.prepare(b, ctx())
    assert DETACH_KEY not in b.method
    # current lp = old except token (0,0), pushed to r = e^1 > 2 with A > 0: PPO-clipped, so not a candidate.
    # Current means: l̄ = (−12 + 1)/6; C(0,0) = 2·(0.5 + 11/6) = 4.67 would otherwise be in the band.
    lp = LP.clone()
    lp[0, 0] += 1.0
    out = method.loss(policy_batch(b, logprobs=lp, clip=ClipSpec(1.0, 1.0, None)))
    cov = token_covariance(lp, b.advantages, b.response_mask)
    expected = (cov > 1) & (cov < 5)
    expected[0, 0] = False
    assert torch.equal(out.token_weights, 1 - expected.float())
    assert out.metrics["n_selected"] == expected.sum()


def test_default_scope_is_the_mini_batch_with_current_logprobs_and_clipped_tokens_excluded():
    """Spec §1, §8, §12.6: per optimizer step over its mini-batch, from the current log-probs, PPO-clipped
    tokens excluded. The old default (rollout log-probs once per step) selects a different set here."""
    method = build_from_yaml("clip_cov", ratio=1.0)  # every candidate selected: the set is deterministic
    assert method.cfg.stats_scope == "mini_batch" and method.needs.minibatch == ("logprobs",)
    b = _batch()
    method.prepare(b, ctx())
    assert DETACH_KEY not in b.method  # nothing chosen from the rollout pass
    # an off-policy mini-batch: token (0,0) moved to r = e > 2 with A > 0 -> PPO-clipped (ε = 1, 1)
    lp = LP.clone()
    lp[0, 0] += 1.0
    # current l̄ = −11/6: C row 0 = 2·(lp + 11/6) = [4.67, 1.67, −4.33]; row 1 = −2·(lp + 11/6) = [−2.67, 3.33, 1.33]
    m = method.prepare_minibatch(b, {"logprobs": lp}, ctx(clip=ClipSpec(1.0, 1.0, None)), (0, 1))
    expected = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 1.0]])  # (0,0) is in the band but clipped
    assert torch.equal(b.method[DETACH_KEY], expected) and m["n_candidates"] == 3 and m["n_selected"] == 3
    out = method.loss(policy_batch(b, logprobs=lp))
    assert torch.equal(out.token_weights, 1 - expected)
    assert out.reference_metrics["actor/pg_clipfrac"] == 3 / 6  # verl logs |S|/N under the PPO name
    old_default = build_from_yaml("clip_cov", ratio=1.0, stats_scope="batch")
    b_old = _batch()
    old_default.prepare(b_old, ctx())
    assert not torch.equal(b_old.method[DETACH_KEY], expected)  # {(0,0), (0,1), (1,1)} from the rollout pass
