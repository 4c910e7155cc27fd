"""The synthetic arithmetic task and the shipped tiny model built for it (rlvr_cli/assets/tiny_arith)."""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from rlvr_cli.data.splits import split_of
from rlvr_cli.data.synthetic import MAX_VALUE, arith_split, make_arith_problem

ASSET = Path(__file__).resolve().parents[2] / "rlvr_cli" / "assets" / "tiny_arith"
_STEP = re.compile(r"^(\d+) ([+\-*]) (\d+) = (\d+)\.$")
_PHRASE = {"add": "+", "subtract": "-", "multiply by": "*"}
_PROBLEM = re.compile(r"^Start with (\d+)\. (.+)\. What is the result\?$")


def _check_row(problem: str, answer: str, solution: str, min_ops: int = 1, max_ops: int = 99) -> None:
    """Recompute the solution step by step from the problem text."""
    m = _PROBLEM.match(problem)
    assert m, problem
    value = int(m.group(1))
    ops = []
    for phrase in m.group(2).split(", "):
        verb, _, num = phrase.lower().rpartition(" ")
        ops.append((_PHRASE[verb], int(num)))
    assert min_ops <= len(ops) <= max_ops
    assert solution.endswith(f"\\boxed{{{answer}}}"), solution
    steps_text = solution[: -len(f" \\boxed{{{answer}}}")]
    steps = re.findall(r"\d+ [+\-*] \d+ = \d+\.", steps_text)
    assert " ".join(steps) == steps_text, solution
    assert len(steps) == len(ops)
    for step, (op, operand) in zip(steps, ops):
        a, sop, b, c = _STEP.match(step).groups()
        assert (int(a), sop, int(b)) == (value, op, operand)
        value = {"+": value + operand, "-": value - operand, "*": value * operand}[op]
        assert int(c) == value
        assert 0 <= value <= MAX_VALUE
    assert answer == str(value)


def test_rows_shape_and_ids():
    rows = arith_split("train", 12, seed=0)
    assert [r["id"] for r in rows] == [f"arith-train-{i:05d}" for i in range(12)]
    assert all(set(r) == {"id", "problem", "answer", "solution"} for r in rows)
    assert arith_split("test", 3)[2]["id"] == "arith-test-00002"
    assert arith_split("test", 0) == []


def test_deterministic_by_seed_and_params():
    a = arith_split("train", 200, seed=7)
    assert a == arith_split("train", 200, seed=7)
    assert a[:50] == arith_split("train", 50, seed=7)  # a smaller n is a prefix
    assert a != arith_split("train", 200, seed=8)
    assert a != arith_split("train", 200, seed=7, max_operand=30)
    r1, r2 = random.Random(3), random.Random(3)
    assert make_arith_problem(r1, 2, 3, 20) == make_arith_problem(r2, 2, 3, 20)


def test_train_and_test_disjoint():
    train = arith_split("train", 5000, seed=0)
    test = arith_split("test", 500, seed=0)
    test_other_seed = arith_split("test", 500, seed=1)
    train_p = {r["problem"] for r in train}
    assert len(train_p) == 5000 and len({r["problem"] for r in test}) == 500  # distinct within a split
    assert not train_p & {r["problem"] for r in test}
    assert not train_p & {r["problem"] for r in test_other_seed}  # disjoint across seeds too
    assert all(split_of(r["problem"]) == "test" for r in test)
    assert all(split_of(r["problem"]) == "train" for r in train)


@pytest.mark.parametrize("split", ["train", "test"])
def test_solutions_recompute_to_answer(split):
    for r in arith_split(split, 1000, seed=0):
        _check_row(r["problem"], r["answer"], r["solution"], 2, 3)


def test_make_problem_respects_params():
    rng = random.Random(0)
    for _ in range(2000):
        problem, answer, solution = make_arith_problem(rng, 1, 5, 50)
        _check_row(problem, answer, solution, 1, 5)
        assert int(_PROBLEM.match(problem).group(1)) <= 50


@pytest.mark.parametrize("kwargs", [dict(split="val", n=1), dict(split="train", n=-1),
                                    dict(split="train", n=1, min_ops=3, max_ops=2),
                                    dict(split="train", n=1, max_operand=1),
                                    dict(split="train", n=50, min_ops=1, max_ops=1, max_operand=2)])
def test_bad_params_raise(kwargs):
    with pytest.raises(ValueError):
        arith_split(**kwargs)


# ------------------------------------------------------------------------------ shipped model
@pytest.fixture(scope="module")
def shipped():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert (ASSET / "model.safetensors").is_file(), "run scripts/build_tiny_model.py"
    tok = AutoTokenizer.from_pretrained(ASSET, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(ASSET, local_files_only=True).float().eval()
    return tok, model


def test_shipped_tokenizer(shipped):
    tok, model = shipped
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.padding_side == "left"
    assert model.config.eos_token_id == tok.eos_token_id == model.generation_config.eos_token_id
    assert model.config.pad_token_id == tok.pad_token_id
    assert len(tok) <= model.config.vocab_size
    info = json.loads((ASSET / "build_info.json").read_text())
    assert info["tokenizer_vocab_size"] == len(tok)
    assert info["n_params"] == sum(p.numel() for p in model.parameters())

    text = tok.apply_chat_template([{"role": "user", "content": "Start with 3. Add 4. What is the result?"}],
                                   tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nStart with 3. Add 4. What is the result?<|im_end|>\n<|im_start|>assistant\n"
    ids = tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=True, add_generation_prompt=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids  # transformers 5: a BatchEncoding
    assert tok.decode(ids) == "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n"

    for r in arith_split("test", 50) + arith_split("train", 50):
        for s in (r["problem"], r["solution"], text + r["solution"] + "<|im_end|>"):
            assert tok.decode(tok(s, add_special_tokens=False)["input_ids"]) == s
    # digits are single tokens, so a number tokenises the same everywhere
    assert tok.tokenize("123") == ["1", "2", "3"]


def test_shipped_model_generation_stops_at_eos(shipped):
    import torch

    tok, model = shipped
    rows = arith_split("test", 4)
    prompts = [tok.apply_chat_template([{"role": "user", "content": r["problem"]}], tokenize=False,
                                       add_generation_prompt=True) for r in rows]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    assert (enc["attention_mask"][:, -1] == 1).all()  # left padded
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=64, do_sample=False)
    for row in out[:, enc["input_ids"].shape[1]:].tolist():
        assert tok.eos_token_id in row
        end = row.index(tok.eos_token_id)
        assert all(t == tok.pad_token_id for t in row[end + 1:])  # nothing but padding after eos
        assert tok.decode(row[:end]).strip()
