import torch

from rlvr_cli.advantages import grpo_advantages, zero_std_groups


def test_group_normalised_with_unbiased_std():
    scores = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    adv = grpo_advantages(scores, groups)
    # group 0: mean 1/3, unbiased std sqrt(((2/3)^2 + 2(1/3)^2)/2) = sqrt(1/3)
    std = (1 / 3) ** 0.5
    expected = torch.tensor([(2 / 3) / std, -(1 / 3) / std, -(1 / 3) / std, -(2 / 3) / std, (1 / 3) / std, (1 / 3) / std])
    assert torch.allclose(adv, expected, atol=1e-5)


def test_dr_grpo_centres_without_std_and_groups_by_id_not_position():
    scores = torch.tensor([1.0, 3.0, 0.0, 5.0])
    groups = torch.tensor([7, 2, 7, 2])  # interleaved, arbitrary ids
    adv = grpo_advantages(scores, groups, norm_by_std=False)
    assert torch.allclose(adv, torch.tensor([0.5, -1.0, -0.5, 1.0]))


def test_equal_scores_give_zero_and_singleton_uses_mean0_std1():
    adv = grpo_advantages(torch.tensor([1.0, 1.0, 2.0]), torch.tensor([0, 0, 1]))
    assert adv[0] == 0 and adv[1] == 0
    assert torch.isclose(adv[2], torch.tensor(2.0 / (1 + 1e-6)))


def test_zero_std_groups_flags_whole_groups():
    scores = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    assert zero_std_groups(scores, groups).tolist() == [True, True, False, False, True, True]
