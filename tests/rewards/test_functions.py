"""Reward terms: built-ins, weights, DAPO's overlong penalty and user functions (TRL's contract)."""
from __future__ import annotations

import pytest

from rlvr_cli.errors import UserError
from rlvr_cli.rewards import Grade
from rlvr_cli.rewards.functions import RewardInputs, build_rewards, overlong_penalty, score


def _inputs(n: int = 3) -> RewardInputs:
    grades = [Grade.from_status("correct", "4"), Grade.from_status("wrong", "5"), Grade.from_status("no_answer", None)][:n]
    return RewardInputs([r"\boxed{4}", r"\boxed{5}", "no idea"][:n], ["4"] * n, grades, [10, 90, 100][:n],
                        {"prompts": ["p"] * n, "problem": ["q"] * n, "id": ["a", "b", "c"][:n]})


def test_overlong_penalty_is_dapo_eq_13() -> None:
    # L_max = 100, L_cache = 20: free up to 80 tokens, then linear to -1 at 100 (times the factor)
    assert overlong_penalty([50, 80, 90, 100], 100, 20, 1.0) == [0.0, 0.0, -0.5, -1.0]
    assert overlong_penalty([90], 100, 20, 0.5) == [-0.25]


def test_default_is_accuracy_alone() -> None:
    terms = build_rewards({}, 100)
    assert [t.name for t in terms] == ["accuracy"]
    assert score(terms, _inputs())[0] == [1.0, 0.0, 0.0]


def test_weighted_sum_of_accuracy_format_and_overlong() -> None:
    cfg = {"funcs": ["accuracy", "format", "overlong"], "weights": [1.0, 0.1, 1.0], "overlong_buffer_len": 20}
    total, values = score(build_rewards(cfg, 100), _inputs())
    assert values == {"accuracy": [1.0, 0.0, 0.0], "format": [1.0, 1.0, 0.0], "overlong": [0.0, -0.5, -1.0]}
    assert total == pytest.approx([1.1, -0.4, -1.0])


def test_overlong_without_a_buffer_is_a_clear_error() -> None:
    with pytest.raises(UserError, match="overlong_buffer_len=0 must be in"):
        build_rewards({"funcs": ["overlong"]}, 100)


@pytest.mark.parametrize("cfg, message", [
    ({"funcs": ["acuracy"]}, "unknown reward 'acuracy'; valid: accuracy, format, overlong"),
    ({"funcs": ["accuracy", "format"], "weights": [1.0]}, "reward.weights has 1 values for 2 reward terms"),
    ({"funcs": ["accuracy", "accuracy"]}, "listed twice"),
    ({"fn": "missing_file.py:f"}, "no such file"),
])
def test_bad_reward_config_names_what_is_valid(cfg, message) -> None:
    with pytest.raises(UserError, match=message):
        build_rewards(cfg, 100)


def _write(tmp_path, body: str) -> str:
    path = tmp_path / "my_reward.py"
    path.write_text(body)
    return str(path)


def test_user_function_gets_trl_contract(tmp_path) -> None:
    path = _write(tmp_path, (
        "def brevity(completions, answers, **kw):\n"
        "    assert set(kw) >= {'prompts', 'problem', 'id', 'completion_lengths'}\n"
        "    return [1.0 if n < 50 else 0.0 for n in kw['completion_lengths']]\n"
    ))
    terms = build_rewards({"funcs": ["accuracy"], "fn": f"{path}:brevity", "weights": [1.0, 0.5]}, 100)
    assert [t.name for t in terms] == ["accuracy", "brevity"]
    total, values = score(terms, _inputs())
    assert values["brevity"] == [1.0, 0.0, 0.0] and total == [1.5, 0.0, 0.0]


@pytest.mark.parametrize("body, message", [
    ("def f(completions, answers, **kw):\n    raise KeyError('boom')\n", r"my_reward.py:f' raised KeyError: 'boom'"),
    ("def f(completions, answers, **kw):\n    return [1.0]\n", "returned 1 values for 3 completions"),
    ("def f(completions, answers, **kw):\n    return None\n", "must return a list of 3 floats"),
    ("def f(completions, answers, **kw):\n    return [float('nan')] * 3\n", "non-finite"),
])
def test_user_function_errors_name_the_function(tmp_path, body: str, message: str) -> None:
    terms = build_rewards({"fn": f"{_write(tmp_path, body)}:f"}, 100)
    with pytest.raises(UserError, match=message):
        score(terms, _inputs())


def test_missing_function_lists_what_the_file_has(tmp_path) -> None:
    path = _write(tmp_path, "def reward_a(completions, answers, **kw):\n    return []\n")
    with pytest.raises(UserError, match="has no function 'reward_b'; it has: reward_a"):
        build_rewards({"fn": f"{path}:reward_b"}, 100)
    with pytest.raises(UserError, match="expected path/to/file.py:function"):
        build_rewards({"fn": f"{path}:"}, 100)
