"""The entropy–performance law fit R = −a·e^H + b (arXiv 2505.22617 §3), ordinary least squares."""
import math

import pytest
import torch

from rlvr_cli.analysis.law import MIN_POINTS, fit_entropy_law, pearson, refusal
from rlvr_cli.errors import UserError


def test_exact_law_is_recovered():
    h = [1.2, 0.9, 0.6, 0.4, 0.25, 0.1]
    r = [-0.5 * math.exp(x) + 1.9 for x in h]
    fit = fit_entropy_law(h, r)
    assert fit.a == pytest.approx(0.5) and fit.b == pytest.approx(1.9)
    assert fit.r2 == pytest.approx(1.0) and fit.rmse == pytest.approx(0.0, abs=1e-9)
    assert fit.n == 6 and fit.ceiling == pytest.approx(1.4)


def test_three_points_by_hand():
    # x = −e^H: H = 0, ln 2, ln 3 -> x = −1, −2, −3; R = 0.5, 0.3, 0.2
    # OLS of R on [x, 1]: x̄ = −2, R̄ = 1/3, Sxy = (1)(1/6) + 0 + (−1)(−2/15)... slope = Σ(x−x̄)(R−R̄)/Σ(x−x̄)²
    h = [0.0, math.log(2), math.log(3)]
    r = [0.5, 0.3, 0.2]
    slope = ((1) * (0.5 - 1 / 3) + (-1) * (0.2 - 1 / 3)) / 2  # = 0.15 = a (design column is −e^H)
    intercept = 1 / 3 - slope * (-2)  # b = R̄ − a·x̄
    fit = fit_entropy_law(h, r)
    assert fit.a == pytest.approx(slope) and fit.b == pytest.approx(intercept)
    pred = [-slope * math.exp(x) + intercept for x in h]
    ss_res = sum((a - b) ** 2 for a, b in zip(r, pred))
    ss_tot = sum((a - 1 / 3) ** 2 for a in r)
    assert fit.r2 == pytest.approx(1 - ss_res / ss_tot) and fit.ceiling == pytest.approx(intercept - slope)


def test_fit_first_k_forecasts_the_rest():
    g = torch.Generator().manual_seed(0)
    h = torch.linspace(1.0, 0.05, 20)
    r = -0.3 * torch.exp(h) + 0.95 + 0.005 * torch.randn(20, generator=g)
    fit = fit_entropy_law(h.tolist(), r.tolist(), fit_first=8)
    assert fit.n == 8 and fit.fit_first == 8 and fit.n_predicted == 12
    assert fit.a == pytest.approx(0.3, rel=0.2) and fit.predict_rmse < 0.03
    assert fit.predict(h[8:]).shape == (12,)


def test_too_few_points_or_constant_entropy_are_refused():
    with pytest.raises(UserError, match="at least 3"):
        fit_entropy_law([0.5, 0.4], [0.1, 0.2])
    with pytest.raises(UserError, match="at least 3"):
        fit_entropy_law([0.5, 0.4, 0.3, 0.2], [0.1, 0.2, 0.3, 0.4], fit_first=2)
    with pytest.raises(UserError, match="vary"):
        fit_entropy_law([0.5, 0.5, 0.5], [0.1, 0.2, 0.3])


def test_pearson_hand_values_and_refusals():
    # xs 1,2,3 (mean 2), ys 1,3,2 (mean 2): sxy = (−1)(−1) + 0 + (1)(0) = 1, sxx = 2, syy = 2 → r = 1/2
    assert pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert pearson([1, 2, 3], [6, 4, 2]) == pytest.approx(-1.0)
    assert pearson([1, 2], [1, 2]) is None  # under three points
    assert pearson([1, 2, 3], [5, 5, 5]) is None  # a constant series has no correlation


def test_refusal_names_why_a_fit_was_refused():
    with pytest.raises(UserError) as flat:
        fit_entropy_law([0.2, 0.2, 0.2], [0.1, 0.2, 0.3])
    with pytest.raises(UserError) as few:
        fit_entropy_law([0.1, 0.2], [0.1, 0.2])
    assert refusal(str(flat.value)) == "constant entropy"
    assert refusal(str(few.value)) == f"fewer than {MIN_POINTS} points"
