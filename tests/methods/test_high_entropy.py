import pytest
import torch

from rlvr_cli.methods.high_entropy import KEEP_KEY, high_entropy_mask
from rlvr_cli.stats import quantile_1d
from tests.methods.test_registry import build_from_yaml, ctx, policy_batch, synthetic_batch


def test_quantile_matches_torch():
    torch.manual_seed(0)
    x = torch.randn(101)
    for q in (0.0, 0.1, 0.5, 0.8, 0.95, 1.0):
        assert quantile_1d(x, q).item() == pytest.approx(torch.quantile(x, q).item(), abs=1e-6)


def test_top_fraction_by_hand_ties_and_padding():
    h = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5], [0.6, 0.7, 0.8, 0.9, 1.0], [9.0, float("nan"), 0, 0, 0]])
    mask = torch.tensor([[1] * 5, [1] * 5, [0] * 5])
    # q80 over the 10 valid values at position 7.2: 0.8 + 0.2·0.1 = 0.82 -> keep 0.9, 1.0 (padding's 9.0 ignored)
    keep, tau = high_entropy_mask(h, mask, 0.2)
    assert tau.item() == pytest.approx(0.82)
    assert keep.nonzero().tolist() == [[1, 3], [1, 4]]
    # all equal: every token ties at τ and is kept (TRL's ≥)
    assert high_entropy_mask(torch.ones(2, 3), torch.ones(2, 3), 0.2)[0].all()
    # zero entropy everywhere: τ = 0, all kept (nothing to rank); ρ = 1 keeps everything too
    assert high_entropy_mask(torch.zeros(1, 4), torch.ones(1, 4), 0.2)[0].all()
    assert high_entropy_mask(h, mask, 1.0)[0].sum() == 10


def test_threshold_is_over_all_ranks():
    h, mask = torch.tensor([[0.1, 0.2]]), torch.ones(1, 2)
    gather = lambda x: torch.cat([x, torch.tensor([5.0, 6.0, 7.0])])  # noqa: E731  (other rank's tokens)
    keep, _ = high_entropy_mask(h, mask, 0.4, gather)  # q60 of [0.1, 0.2, 5, 6, 7] = 5.0
    assert not keep.any()


def test_yaml_method_batch_scope():
    method = build_from_yaml("high_entropy")
    b = synthetic_batch()
    m = method.prepare(b, ctx())
    keep = b.method[KEEP_KEY]
    valid = b.response_mask.bool()
    assert keep[~valid].sum() == 0 and m["kept_frac"] == pytest.approx(float(keep.sum()) / valid.sum().item())
    assert keep.sum() == 3  # 14 valid tokens, top 20% -> q80 at position 10.4: the 3 largest
    out = method.loss(policy_batch(b, rows=[2, 3]))
    assert torch.equal(out.token_weights, keep[2:])


def test_micro_batch_scope_ranks_current_entropy_and_all_masked():
    method = build_from_yaml("high_entropy", stats_scope="micro_batch", rho=0.5)
    assert method.needs.update == ("entropy",) and not method.needs.update_grad
    b = synthetic_batch((4,))
    method.prepare(b, ctx())
    out = method.loss(policy_batch(b, token={"entropy": torch.tensor([[0.0, 3.0, 1.0, 2.0]])}))
    assert out.token_weights.tolist() == [[0.0, 1.0, 0.0, 1.0]]
    empty = synthetic_batch((0,))
    m = build_from_yaml("high_entropy").prepare(empty, ctx())
    assert empty.method[KEEP_KEY].sum() == 0 and m == {"kept_frac": 0.0, "threshold": 0.0}
