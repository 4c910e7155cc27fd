import warnings

import pytest
import torch

from rlvr_cli.methods.kl_cov import SELECT_KEY, kl_cov_token_loss, kl_cov_topk_mask, stable_topk
from tests.methods.test_registry import build_from_yaml, ctx, policy_batch, synthetic_batch

# Same hand batch as the Clip-Cov tests: C = [[3, 2, −4], [−3, 3, 1]] (A = ±2, l̄ = −2), N = 6.
LP = torch.tensor([[-0.5, -1.0, -4.0], [-0.5, -3.5, -2.5]])
ADV = [2.0, -2.0]


def _batch():
    return synthetic_batch((3, 3), adv=ADV, old_logprobs=LP)


def test_stable_topk_breaks_ties_by_smaller_index():
    assert stable_topk(torch.tensor([3.0, 1.0, 3.0, 2.0]), 2).tolist() == [True, False, True, False]
    # three-way tie for the last two places: the two smaller indices win
    assert stable_topk(torch.tensor([1.0, 2.0, 2.0, 2.0]), 2).tolist() == [False, True, True, False]
    assert stable_topk(torch.tensor([1.0]), 0).tolist() == [False]


def test_topk_mask_ties_and_ranks():
    cov = torch.tensor([[3.0, 2.0, -4.0], [-3.0, 3.0, 1.0]])
    mask = torch.ones(2, 3)
    # k=1: C = 3 at flat 0 and flat 4 tie -> flat 0
    assert kl_cov_topk_mask(cov, mask, 1).tolist() == [[True, False, False], [False, False, False]]
    # k=2 covers both 3s; k=4 takes negatives only after 3, 3, 2, 1
    assert kl_cov_topk_mask(cov, mask, 2).tolist() == [[True, False, False], [False, True, False]]
    # as rank 1 of 2, where rank 0 holds [5, 3] (global order: 5, 3(r0), 3, 2, ...): k=2 leaves rank 1 nothing
    def gather(x):  # all-gather from rank 0 (2 valid tokens, C = 5, 3) and this rank, in rank order
        return torch.cat([torch.tensor([2]), x]) if x.dtype == torch.long else torch.cat([torch.tensor([5.0, 3.0]), x])

    assert kl_cov_topk_mask(cov, mask, 2, gather, rank=1).sum() == 0
    assert kl_cov_topk_mask(cov, mask, 3, gather, rank=1).tolist() == [[True, False, False], [False, False, False]]


def test_penalty_by_hand_gradient_and_nan_padding():
    lp = torch.tensor([[-1.0, -2.0, 0.0]], requires_grad=True)
    old = torch.tensor([[-1.5, -1.0, float("nan")]])  # NaN in an unselected (padding) slot
    sel = torch.tensor([[True, True, False]])
    pen = kl_cov_token_loss(lp, old, sel, beta=2.0)
    # 2·|−1 + 1.5| = 1, 2·|−2 + 1| = 2, unselected 0
    assert pen.tolist() == [[1.0, 2.0, 0.0]]
    pen.sum().backward()
    assert lp.grad.tolist() == [[2.0, -2.0, 0.0]]  # β·sign(lp − old); no NaN leaks


def test_yaml_method_prepare_and_loss():
    method = build_from_yaml("kl_cov", ratio=0.34, stats_scope="batch")  # k = floor(2.04) = 2
    assert method.clip_overrides == {"clip": False}
    b = _batch()
    m = method.prepare(b, ctx())
    assert b.method[SELECT_KEY].tolist() == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    assert m["n_selected"] == 2 and m["topk_min"] == 3.0 and m["topk_mean"] == 3.0 and m["beta"] == 1.0
    lp = LP.clone()
    lp[0, 0] -= 0.25
    out = method.loss(policy_batch(b, logprobs=lp))
    assert torch.allclose(out.token_loss, torch.tensor([[0.25, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    assert out.metrics["penalty_mean"] == pytest.approx(0.125)  # (0.25 + 0) / 2 selected
    assert out.token_weights is None and out.extra_loss is None


def test_ratio_below_one_token_annealed_zero_and_all_masked():
    b = _batch()
    assert build_from_yaml("kl_cov", stats_scope="batch").prepare(b, ctx())["n_selected"] == 1  # 2e-3·6 < 1 -> k = 1
    b = _batch()
    annealed = build_from_yaml("kl_cov", ratio_schedule={"kind": "cosine"}, beta_schedule={"kind": "linear"}, stats_scope="batch")
    m = annealed.prepare(b, ctx(step=10, total=10))
    assert m["ratio"] == 0.0 and m["beta"] == 0.0 and b.method[SELECT_KEY].sum() == 0
    b = synthetic_batch((0, 0))
    method = build_from_yaml("kl_cov", stats_scope="batch")
    assert method.prepare(b, ctx())["n_selected"] == 0
    assert method.loss(policy_batch(b)).token_loss.abs().sum() == 0


def test_fully_on_policy_warns_once():
    method = build_from_yaml("kl_cov", ratio=0.5, stats_scope="batch")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in (1, 2, 3, 4):
            b = _batch()
            method.prepare(b, ctx(step=step))
            method.loss(policy_batch(b, step=step))  # lp == old: penalty 0 everywhere
    msgs = [w for w in caught if "fully on-policy" in str(w.message)]
    assert len(msgs) == 1


def test_off_policy_step_does_not_warn():
    method = build_from_yaml("kl_cov", ratio=0.5, stats_scope="batch")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for step in (1, 2, 3):
            b = _batch()
            method.prepare(b, ctx(step=step))
            method.loss(policy_batch(b, step=step, where=(0, 0, 0)))  # first mini-batch: on-policy
            method.loss(policy_batch(b, logprobs=LP - 0.1, step=step, where=(0, 1, 0)))  # second: moved


def test_micro_batch_scope_ranks_current_logprobs():
    method = build_from_yaml("kl_cov", ratio=0.2, stats_scope="micro_batch")  # k = floor(1.2) = 1
    b = _batch()
    method.prepare(b, ctx())
    lp = LP.clone()
    lp[1, 2] = 1.5  # current lp changes C: Ā=0, l̄ = (−12 + 4)/6 = −4/3, C(1,2) = −2·(1.5 + 4/3) < 0
    out = method.loss(policy_batch(b, logprobs=lp))
    # top-1 of the current C: row 0 token 0: 2·(−0.5 + 4/3) = 1.67 vs row 1 token 1: −2·(−3.5 + 4/3) = 4.33
    assert out.token_loss.nonzero().tolist() == [] and out.metrics["n_selected"] == 1
    lp[1, 1] = -3.0  # now move the selected token: penalty |−3 + 3.5| = 0.5
    out = method.loss(policy_batch(b, logprobs=lp))
    assert torch.allclose(out.token_loss[1, 1], torch.tensor(0.5))


def test_default_scope_is_the_mini_batch_with_current_logprobs_and_verl_ppo_kl():
    method = build_from_yaml("kl_cov", ratio=0.2)  # k = floor(1.2) = 1
    assert method.cfg.stats_scope == "mini_batch" and method.needs.minibatch == ("logprobs",)
    b = _batch()
    method.prepare(b, ctx())
    assert SELECT_KEY not in b.method
    lp = LP.clone()
    lp[1, 2] = 1.5  # current C: row 1 token 1 = −2·(−3.5 + 4/3) = 4.33 is the top-1 (rollout pass: flat 0)
    m = method.prepare_minibatch(b, {"logprobs": lp}, ctx(), (0, 1))
    assert b.method[SELECT_KEY].nonzero().tolist() == [[1, 1]] and m["n_selected"] == 1
    lp[1, 1] = -3.0  # the update moved the selected token by 0.5
    out = method.loss(policy_batch(b, logprobs=lp))
    assert torch.allclose(out.token_loss[1, 1], torch.tensor(0.5)) and out.token_loss.count_nonzero() == 1
    # verl's kl_cov logs mean |lp − old| as actor/ppo_kl: here (4.0 + 0.5) / 6, not the signed mean
    assert out.reference_metrics["actor/ppo_kl"] == pytest.approx(4.5 / 6)
    assert out.reference_metrics["actor/pg_clipfrac"] == 0.0
