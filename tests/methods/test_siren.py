import math

import pytest
import torch

from rlvr_cli.methods.siren import (
    ENTROPY, NUCLEUS_SIZE, anchor_loss, nucleus_size, peak_mask, selective_entropy, topp_entropy,
)
from rlvr_cli.rollout.logprobs import policy_token_stats
from tests.conftest import tiny_qwen2
from tests.methods.test_registry import build_from_yaml, ctx, policy_batch, synthetic_batch


def naive_topp_entropy(logits, p, k, inclusive):
    """Reference semantics the plain way: full softmax, full sort, cumsum, top-K cap, renormalise."""
    probs = torch.softmax(logits.double(), -1).sort(-1, descending=True).values[:, :k]  # [C, K]
    cum = probs.cumsum(-1)
    keep = (cum - probs) < p if inclusive else cum < p
    q = probs * keep / (probs * keep).sum(-1, keepdim=True).clamp(min=1e-300)
    h = -(torch.where(keep, q * q.clamp(min=1e-300).log(), torch.zeros_like(q))).sum(-1)
    return torch.where(keep.any(-1), h, torch.zeros_like(h)).float()


@pytest.mark.parametrize("inclusive", [False, True])
@pytest.mark.parametrize("p,k", [(0.8, 64), (0.5, 64), (0.95, 64), (0.3, 64), (0.8, 5)])
def test_topp_entropy_matches_full_sort(p, k, inclusive):
    torch.manual_seed(0)
    logits = torch.randn(16, 64) * torch.tensor([0.5, 2.0, 4.0, 8.0]).repeat(4)[:, None]  # flat to peaked rows
    assert torch.allclose(topp_entropy(logits, p, k, inclusive), naive_topp_entropy(logits, p, k, inclusive), atol=1e-5)


def test_topp_gradient_matches_naive_autograd():
    torch.manual_seed(1)
    logits = torch.randn(6, 40, requires_grad=True)
    logits2 = logits.detach().clone().requires_grad_()
    topp_entropy(logits, 0.8, 40).sum().backward()
    naive_topp_entropy(logits2, 0.8, 40, False).sum().backward()
    assert torch.allclose(logits.grad, logits2.grad.float(), atol=1e-5)


def test_strict_vs_inclusive_by_hand_and_top1_above_p():
    logits = torch.log(torch.tensor([[0.5, 0.4, 0.1], [0.9, 0.05, 0.05]]))
    # row 0: strict c = [0.5, 0.9, 1.0] < 0.8 keeps {0.5} -> H = 0; inclusive keeps {0.5, 0.4}:
    #   H = −(5/9 ln 5/9 + 4/9 ln 4/9) = 0.6870
    # row 1: top-1 = 0.9 ≥ p: strict nucleus empty (H = 0, size 0); inclusive {0.9} (H = 0, size 1)
    h_in = -(5 / 9 * math.log(5 / 9) + 4 / 9 * math.log(4 / 9))
    assert topp_entropy(logits, 0.8, 10, inclusive=False).tolist() == [0.0, 0.0]
    assert topp_entropy(logits, 0.8, 10, inclusive=True).tolist() == pytest.approx([h_in, 0.0], abs=1e-6)
    assert nucleus_size(logits, 0.8, 10, False).tolist() == [1.0, 0.0]
    assert nucleus_size(logits, 0.8, 10, True).tolist() == [2.0, 1.0]


def test_empty_nucleus_has_zero_value_and_gradient():
    logits = torch.log(torch.tensor([[0.9, 0.05, 0.05]])).requires_grad_()
    h = topp_entropy(logits, 0.8, 3)
    h.sum().backward()
    assert h.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_flat_distribution_truncated_at_k():
    logits = torch.zeros(2, 100)  # uniform: the top 10 hold 0.1 < p, so the nucleus is all 10
    assert topp_entropy(logits, 0.8, 10).tolist() == pytest.approx([math.log(10)] * 2)
    assert nucleus_size(logits, 0.8, 10).tolist() == [10.0, 10.0]


def test_tokenfn_runs_chunkwise_with_grad_in_the_update_pass():
    method = build_from_yaml("siren", top_k=16)
    model = tiny_qwen2()
    torch.manual_seed(2)
    ids = torch.randint(3, 64, (2, 8))
    attn = torch.ones_like(ids)
    resp = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    needs = method.needs
    out = policy_token_stats(model, ids, attn, resp, 4, 0.7, ("logprobs", *needs.update), needs.update_grad,
                             needs.fns, chunk_size=2)
    logits = model(input_ids=ids, attention_mask=attn).logits[:, 3:-1].float() / 0.7  # [2, 4, V]
    ref = topp_entropy(logits.reshape(-1, 64), 0.8, 16).view(2, 4) * resp
    assert out[ENTROPY].requires_grad and torch.allclose(out[ENTROPY], ref, atol=1e-5)


def test_peak_mask_per_response_quantile_by_hand():
    nan = float("nan")
    h = torch.tensor([[0.0, 0.0, 0.0, 1.0, 2.0], [0.0, 0.0, 0.0, 0.0, 0.0], [1.0, 3.0, nan, nan, nan]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    # row 0: q80 of [0,0,0,1,2] at position 3.2 = 1 + 0.2·(2 − 1) = 1.2 -> only 2.0
    # row 1: all zero, τ = 0, strict > picks nothing; row 2: q80 of [1, 3] = 1 + 0.8·2 = 2.6 -> only 3.0
    assert peak_mask(h, mask, 0.8).tolist() == [
        [False, False, False, False, True], [False] * 5, [False, True, False, False, False]]
    assert not peak_mask(h, torch.zeros_like(mask), 0.8).any()


def test_selective_entropy_counts_empty_responses():
    h = torch.tensor([[2.0, 4.0], [0.0, 0.0], [3.0, float("nan")], [float("nan")] * 2])
    mask = torch.tensor([[1, 1], [1, 1], [1, 0], [0, 0]])
    peak = torch.tensor([[True, True], [False, False], [True, False], [False, False]])
    h_bar, per_seq, rows = selective_entropy(h, peak, mask)
    # per response: 3, 0 (empty mask, still counts), 3; the all-padding row is not a response: (3+0+3)/3
    assert per_seq[:3].tolist() == [3.0, 0.0, 3.0] and rows.tolist() == [True, True, True, False]
    assert h_bar.item() == pytest.approx(2.0)
    assert anchor_loss(h_bar, 1.5, 0.005).item() == pytest.approx(0.005 * 0.25)


def _siren_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = (6, 5, 4, 2)
    h = 2.0 * torch.rand(4, 6, generator=g)
    h[1] = 0.0  # a response with zero top-p entropy everywhere -> empty peak mask
    return synthetic_batch(lengths, **{ENTROPY: h, NUCLEUS_SIZE: torch.randint(0, 10, (4, 6), generator=g).float()})


def test_anchor_from_first_batch_kept_and_restored():
    method = build_from_yaml("siren")
    b1 = _siren_batch()
    m1 = method.prepare(b1, ctx(step=1))
    h = b1.token[ENTROPY]
    expected, _, _ = selective_entropy(h, peak_mask(h, b1.response_mask, 0.8), b1.response_mask)
    assert method.anchor == pytest.approx(float(expected)) and m1["H_anchor"] == method.anchor
    m2 = method.prepare(_siren_batch(seed=1), ctx(step=2))
    assert m2["H_anchor"] == m1["H_anchor"] and m2["H_sel_rollout"] != m1["H_anchor"]  # fixed after step 1
    resumed = build_from_yaml("siren")
    resumed.load_state_dict(method.state_dict())
    assert resumed.anchor == method.anchor and resumed.anchor_step == 1
    with pytest.warns(RuntimeWarning):  # no anchor in the state: measured late, loudly
        build_from_yaml("siren").prepare(_siren_batch(seed=1), ctx(step=5))


def test_yaml_method_loss_is_anchored_squared_error():
    method = build_from_yaml("siren")
    assert method.needs.update_grad == (ENTROPY,) and ENTROPY in method.needs.rollout
    b = _siren_batch()
    method.prepare(b, ctx())
    method.anchor = 0.5
    h = torch.where(b.response_mask.bool(), b.token[ENTROPY], 0.0).requires_grad_()
    out = method.loss(policy_batch(b, token={ENTROPY: h}))
    h_bar, _, _ = selective_entropy(h, peak_mask(h, b.response_mask, 0.8), b.response_mask)
    assert out.extra_loss.detach().item() == pytest.approx(0.005 * (h_bar.item() - 0.5) ** 2)
    assert out.token_weights is None and out.token_loss is None
    assert out.metrics["empty_mask_seq_frac"] == 0.25 and out.metrics["H_sel"] == pytest.approx(h_bar.item())
    out.extra_loss.backward()
    assert torch.isfinite(h.grad).all() and h.grad[1].abs().sum() == 0  # zero-entropy response: no gradient


def test_minibatch_scope_gradient_uses_rollout_deviation():
    method = build_from_yaml("siren", anchor_scope="minibatch", anchor=0.25)
    b = _siren_batch()
    method.prepare(b, ctx())
    d = method.h_sel_rollout - 0.25
    h = torch.where(b.response_mask.bool(), b.token[ENTROPY], 0.0).requires_grad_()
    out = method.loss(policy_batch(b, token={ENTROPY: h}))
    assert out.extra_loss.detach().item() == pytest.approx(0.005 * d * d)  # value λ·d², one square per mini-batch
    out.extra_loss.backward()
    h2 = h.detach().clone().requires_grad_()
    h_bar, _, _ = selective_entropy(h2, peak_mask(h2, b.response_mask, 0.8), b.response_mask)
    (2 * 0.005 * d * h_bar).backward()  # gradient 2λ·d·∇H̄
    assert torch.allclose(h.grad, h2.grad)


def test_all_masked_batch_and_rollout_metrics():
    method = build_from_yaml("siren", anchor=1.0)
    b = synthetic_batch((0, 0), **{ENTROPY: torch.zeros(2, 1), NUCLEUS_SIZE: torch.zeros(2, 1)})
    assert method.prepare(b, ctx()) == {"H_anchor": 1.0, "H_sel_rollout": 0.0}
    out = method.loss(policy_batch(b, token={ENTROPY: torch.zeros(2, 1, requires_grad=True)}))
    assert torch.isfinite(out.extra_loss) and out.metrics["peak_frac"] == 0.0
    m = build_from_yaml("siren", top_k=8).prepare(_siren_batch(), ctx())
    assert {"H_topp_mean", "H_full_mean", "nucleus_size_mean", "nucleus_size_p95", "empty_nucleus_frac",
            "topk_truncated_frac"} <= set(m)
    assert all(math.isfinite(v) for v in m.values())
