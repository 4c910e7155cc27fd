"""pass@k, maj@n and the per-benchmark summary, against hand values and brute force."""
from __future__ import annotations

import itertools
from math import comb
from types import SimpleNamespace

import pytest

from rlvr_cli.eval.metrics import majority_vote, pass_at_k, pass_ks, summarize_samples, vote_key


# ------------------------------------------------------------------------------------------- pass@k
@pytest.mark.parametrize("n,c,k,expected", [
    (4, 1, 2, 0.5),            # 1 − C(3,2)/C(4,2) = 1 − 3/6
    (4, 1, 1, 0.25),           # pass@1 = c/n
    (10, 3, 1, 0.3),
    (5, 2, 3, 1 - 1 / 10),     # 1 − C(3,3)/C(5,3)
    (8, 0, 4, 0.0),            # nothing correct
    (8, 8, 1, 1.0),
    (6, 3, 4, 1.0),            # n − c < k: every 4-subset holds a correct sample
])
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def brute_force_pass_at_k(correct: list[bool], k: int) -> float:
    """Fraction of all k-subsets of the samples that contain at least one correct sample."""
    subsets = list(itertools.combinations(correct, k))
    return sum(any(s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 8))
def test_pass_at_k_equals_enumeration_of_all_subsets(n):
    for c in range(n + 1):
        correct = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(correct, k), abs=1e-12)
            assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k), abs=1e-12)


@pytest.mark.parametrize("n", [1, 3, 16])
def test_pass_at_n_is_any_correct(n):
    assert pass_at_k(n, 0, n) == 0.0
    for c in range(1, n + 1):
        assert pass_at_k(n, c, n) == 1.0


def test_pass_at_k_is_stable_for_large_n():
    assert pass_at_k(1024, 1, 1) == pytest.approx(1 / 1024)
    assert 0.0 <= pass_at_k(1000, 1, 500) <= 1.0 and pass_at_k(1000, 1, 500) == pytest.approx(0.5)


@pytest.mark.parametrize("n,c,k,match", [(4, 1, 5, "pass@5 needs at least 5"), (4, 1, 0, "k >= 1"),
                                         (4, 5, 2, "0 <= c <= n"), (4, -1, 2, "0 <= c <= n")])
def test_pass_at_k_bad_arguments(n, c, k, match):
    with pytest.raises(ValueError, match=match):
        pass_at_k(n, c, k)


def test_pass_ks():
    assert pass_ks(1) == [1]
    assert pass_ks(4) == [1, 2, 4]
    assert pass_ks(6) == [1, 2, 4, 6]
    assert pass_ks(32) == [1, 2, 4, 8, 16, 32]


# -------------------------------------------------------------------------------------------- maj@n
def test_majority_vote_picks_the_most_frequent_answer():
    assert majority_vote(["3", "5", "5", "7"], [True, False, False, False]) is False
    assert majority_vote(["3", "5", "5", "7"], [False, True, True, False]) is True


def test_majority_vote_tie_goes_to_the_answer_seen_first():
    assert majority_vote(["3", "5", "5", "3"], [True, False, False, True]) is True
    assert majority_vote(["5", "3", "5", "3"], [False, True, False, True]) is False


def test_no_answer_samples_do_not_vote():
    # two samples without an answer cannot outvote the single "4"
    assert majority_vote([None, None, "4"], [False, False, True]) is True
    assert majority_vote([None, None], [False, False]) is False
    assert majority_vote([], []) is False


def test_equal_numbers_vote_together():
    # "025", "25.0" and "25" are one answer; "\frac{1}{2}" and "0.5" another
    assert majority_vote(["025", "25.0", r"\frac{1}{2}", "0.5", "25"], [True, True, False, False, True]) is True
    assert vote_key(r"\frac{1}{2}") == vote_key("0.5") == vote_key("1/2")
    assert vote_key("x + 1") == vote_key("x+1") and vote_key("x+1") != vote_key("x+2")


# ---------------------------------------------------------------------------------------- summarize
def s(pid, correct, extracted="1", length=10, truncated=False, status=None):
    status = status or ("correct" if correct else "wrong")
    return SimpleNamespace(problem_id=pid, correct=correct, extracted=extracted, length=length,
                           truncated=truncated, status=status)


def test_summarize_samples():
    samples = [
        s("a", True, "2"), s("a", False, "3"), s("a", False, "3", truncated=True), s("a", True, "2"),
        s("b", False, None, status="no_answer", length=30), s("b", False, "9"), s("b", False, "9", status="timeout"),
        s("b", False, "8"),
    ]
    m = summarize_samples(samples, 4)
    assert m["avg@4"] == pytest.approx(2 / 8)
    assert m["pass@1"] == pytest.approx((0.5 + 0.0) / 2)
    assert m["pass@2"] == pytest.approx((1 - comb(2, 2) / comb(4, 2) + 0.0) / 2)
    assert m["pass@4"] == pytest.approx(0.5)
    assert m["maj@4"] == pytest.approx(0.5)  # a: "2" ties "3" and came first -> correct; b: "9" wrong
    assert m["response_len_mean"] == pytest.approx((7 * 10 + 30) / 8)
    assert m["truncated_frac"] == pytest.approx(1 / 8)
    assert m["grader_timeouts"] == 1.0 and m["no_answer_frac"] == pytest.approx(1 / 8)
    assert m["problems"] == 2.0
    assert summarize_samples([], 4) == {}
