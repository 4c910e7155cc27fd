"""The entropy lab's Countdown task (rlvr_cli/data/countdown.py): every problem solvable, many answers."""
from __future__ import annotations

import re

import pytest

from rlvr_cli.data.countdown import countdown_split, solution_forms, solutions
from rlvr_cli.data.splits import split_of
from rlvr_cli.data.synthetic import synthetic_split
from rlvr_cli.rewards.countdown import check, parse_gold

_STEP = re.compile(r"^(\d+)([+\-*/])(\d+)=(\d+)\.$")


def _check_solution(solution: str, numbers: list[int], target: int) -> None:
    """Replay the steps: each combines two available values into a non-negative integer; the box is valid."""
    steps, _, boxed = solution.partition(" \\boxed{")
    pool = list(numbers)
    for step in re.findall(r"\d+[+\-*/]\d+=\d+\.", steps):
        a, op, b, c = _STEP.match(step).groups()
        a, b, c = int(a), int(b), int(c)
        pool.remove(a)
        pool.remove(b)
        if op == "/":
            assert b and a % b == 0 and c == a // b
        else:
            assert c == {"+": a + b, "-": a - b, "*": a * b}[op] and c >= 0
        pool.append(c)
    assert pool == [target], solution
    assert check(boxed[:-1], numbers, target).reason == "correct", solution


def test_rows_are_solvable_and_their_solutions_replay():
    rows = countdown_split("train", 300)
    assert len({r["problem"] for r in rows}) == 300
    for row in rows:
        numbers, target = parse_gold(row["answer"])
        assert len(numbers) == 3 and all(1 <= n <= 9 for n in numbers) and 1 <= target <= 40
        assert row["problem"] == f"Using the numbers {', '.join(map(str, numbers))}, each exactly once, with + - * /, make {target}."
        _check_solution(row["solution"], numbers, target)
        assert row["solution"] in solutions(tuple(numbers), target)
        assert row["n_solutions"] == len(solutions(tuple(numbers), target))


def test_problems_have_many_answers():
    """What makes the lab's entropy mean exploration: most problems have several distinct solutions."""
    rows = countdown_split("train", 500)
    several = sum(r["n_solutions"] >= 4 for r in rows) / len(rows)
    assert several > 0.5
    boxes = {s.partition("\\boxed{")[2] for s in solutions((3, 4, 6), 18)}
    assert {"(4*3)+6}", "6+(3*4)}", "(6-3)*6}"} & boxes == {"(4*3)+6}", "6+(3*4)}"}


def test_every_solution_is_found():
    """Exhaustive against a brute force over every ordered pair and operation."""
    got = solutions((2, 3, 5), 1)
    for s in got:
        _check_solution(s, [2, 3, 5], 1)
    assert "5-3=2. 2/2=1. \\boxed{(5-3)/2}" in got
    assert "3-2=1. 5-1=4." not in " ".join(got)
    assert solutions((1, 1, 1), 60) == ()


def test_solution_forms_reorder_the_operands_of_plus_and_times_only():
    """3, 4, 9 -> 16: each path's box in every operand order of its + and * (2 per commutative node)."""
    paths, forms = solutions((3, 4, 9), 16), solution_forms((3, 4, 9), 16)
    assert "3+4=7. 9+7=16. \\boxed{9+(3+4)}" in paths
    same_steps = [f for f in forms if f.startswith("3+4=7. 9+7=16. ")]
    assert sorted(same_steps) == ["3+4=7. 9+7=16. \\boxed{" + e + "}" for e in ("(3+4)+9", "(4+3)+9", "9+(3+4)", "9+(4+3)")]
    assert set(paths) <= set(forms) and len(set(forms)) == len(forms)
    for f in forms:
        _check_solution(f, [3, 4, 9], 16)
    # a path with only - and / has one written form
    assert [f for f in solution_forms((8, 2, 2), 2) if f.startswith("8/2=4. 4/2=2.")] == ["8/2=4. 4/2=2. \\boxed{(8/2)/2}"]


def test_deterministic_prefix_and_disjoint_splits():
    a = countdown_split("train", 200, seed=3)
    assert a == countdown_split("train", 200, seed=3)
    assert a[:50] == countdown_split("train", 50, seed=3)
    assert a != countdown_split("train", 200, seed=4)
    test = countdown_split("test", 100, seed=3)
    assert all(split_of(r["problem"]) == "test" for r in test)
    assert not {r["problem"] for r in test} & {r["problem"] for r in countdown_split("train", 2000, seed=3)}
    assert synthetic_split("test", 5, task="countdown", seed=3) == test[:5]


def test_bad_parameters_say_what_is_valid():
    with pytest.raises(ValueError, match="split must be one of"):
        countdown_split("val", 3)
    with pytest.raises(ValueError, match="min_numbers"):
        countdown_split("train", 3, min_numbers=5, max_numbers=5)
    with pytest.raises(ValueError, match="could only find"):
        countdown_split("train", 100, max_number=2, max_target=3)
    with pytest.raises(ValueError, match="unknown synthetic task 'sudoku'; valid: arith, countdown"):
        synthetic_split("train", 3, task="sudoku")


# ------------------------------------------------------------------------------ the lab's shipped model
def test_lab_model_matches_the_lab_configs_and_tokenizes_the_task():
    """rlvr_cli/assets/tiny_countdown was warm-started on the train problems conf/data/countdown.yaml
    generates, with the same generator parameters (else RL would start on problems it never saw)."""
    import json

    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    from rlvr_cli.paths import CONF_DIR
    from rlvr_cli.models import ASSETS

    asset = ASSETS / "tiny_countdown"
    info = json.loads((asset / "build_info.json").read_text())
    data = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "data" / "countdown.yaml"))
    bench = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "benchmark" / "countdown.yaml"))
    params = {k: v for k, v in info["task"].items() if k != "generator"}
    assert {k: v for k, v in data["synthetic"].items() if k != "task"} == params
    assert bench["synthetic"] == data["synthetic"]
    assert data["train_size"] <= info["args"]["n_train"]  # RL prompts are among the warm start's problems
    # uncertainty left on purpose: several times the embedded default's (0.053 nats/token)
    assert info["eval"]["sampled_token_entropy"] > 0.1
    tok = AutoTokenizer.from_pretrained(asset, local_files_only=True)
    for r in countdown_split("train", 20, **params):
        for s in (r["problem"], r["solution"]):
            assert tok.decode(tok(s, add_special_tokens=False)["input_ids"]) == s


def test_lab_model_step0_entropy_profile_has_a_heavy_tail_of_forks():
    """The shipped lab policy, sampled at T=1 on 32 train problems x 8 (as the lab's first rollout):
    most tokens near-deterministic, and a heavy tail of forks as in a real reasoning model (~20% of
    Qwen3-8B's tokens above 0.672 nats, Wang et al. arXiv 2506.01939): entropy p80 >= 0.45 and a
    non-empty SIREN nucleus (top-1 < 0.8) at >= 15% of positions (issue 26)."""
    import json

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlvr_cli.models import ASSETS
    from rlvr_cli.rollout.logprobs import entropy_from_logits, top1_prob
    from rlvr_cli.stats import entropy_profile

    asset = ASSETS / "tiny_countdown"
    params = {k: v for k, v in json.loads((asset / "build_info.json").read_text())["task"].items() if k != "generator"}
    tok = AutoTokenizer.from_pretrained(asset, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(asset, local_files_only=True).eval()
    rows = countdown_split("train", 32, **params)
    prompts = [tok.apply_chat_template([{"role": "user", "content": r["problem"]}], tokenize=False,
                                       add_generation_prompt=True) for r in rows]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    enc = {k: v.repeat_interleave(8, 0) for k, v in enc.items()}
    torch.manual_seed(0)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=48, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                             output_logits=True, return_dict_in_generate=True)
    logits = torch.stack(out.logits, 1).float()  # [256, T, V]
    resp = out.sequences[:, enc["input_ids"].shape[1]:]
    ended = (resp == tok.eos_token_id).long().cumsum(-1)
    mask = (ended == 0) | ((ended == 1) & (resp == tok.eos_token_id))  # up to and including <|im_end|>
    p = entropy_profile(entropy_from_logits(logits), mask, top1_prob(logits))
    assert p["actor/entropy_p50"] < 0.05  # most tokens near-deterministic
    assert p["actor/entropy_p80"] >= 0.45 and p["actor/entropy_p95"] > p["actor/entropy_p80"]
    assert 1 - p["actor/top1_ge_0.8_frac"] >= 0.15


def test_data_config_countdown_loads_both_splits_with_the_countdown_verifier():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    from rlvr_cli.paths import CONF_DIR
    from rlvr_cli.data.datasets import load_prompts
    from rlvr_cli.models import ASSETS

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["+recipes=lab/baseline"])
    assert cfg.reward.verifier == "countdown" and cfg.reward.extract == "boxed"
    tok = AutoTokenizer.from_pretrained(ASSETS / "tiny_countdown", local_files_only=True)
    data = OmegaConf.to_container(cfg.data, resolve=True)
    (train, report), (test, _) = load_prompts(data, tok, "train"), load_prompts(data, tok, "test")
    assert (len(train), len(test), report.source) == (2000, 500, "countdown/train")
    assert not {p.problem for p in train} & {p.problem for p in test}
    numbers, target = parse_gold(test[0].answer)
    assert test[0].problem.endswith(f"make {target}.") and test[0].text.endswith("<|im_start|>assistant\n")
