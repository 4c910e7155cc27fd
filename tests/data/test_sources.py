"""Every data config and every recipe loads BOTH splits, from local files written here in each
source's real layout (no hub): DAPO-Math-17k-Processed, the verl parquet layout (chat-list `prompt`,
`reward_model.ground_truth`), MATH-lighteval, GSM8K, and the benchmarks their held-out splits name
(AIME 2024, MATH-500, GSM8K test)."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rlvr_cli.paths import CONF_DIR, group_options
from rlvr_cli.data.datasets import load_prompts
from rlvr_cli.errors import UserError
from rlvr_cli.eval.run import load_benchmark, resolve_benchmarks
from rlvr_cli.models import load_tokenizer

SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer({"path": "builtin:tiny_arith"})


def _jsonl(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _parquet(path: Path, rows) -> str:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


# ------------------------------------------------------------------------------ real layouts
def dapo_processed(n=6):  # open-r1/DAPO-Math-17k-Processed (subset en)
    return [{"prompt": f"Find {i} + {i}.", "solution": str(2 * i), "data_source": "math_dapo",
             "source_prompt": [{"content": f"Solve ... Find {i} + {i}. Remember ...", "role": "user"}],
             "ability": "MATH", "reward_model": {"ground_truth": str(2 * i), "style": "rule-lighteval/MATH_v2"},
             "extra_info": {"index": f"idx-{i}"}} for i in range(1, n + 1)]


def verl_chat(n=6):  # verl parquet layout (OpenR1-Math-46k-8192)
    return [{"data_source": "openr1", "prompt": [{"role": "system", "content": SYSTEM},
                                                 {"role": "user", "content": f"What is {i} times 3?"}],
             "ability": "math", "reward_model": {"ground_truth": str(3 * i), "style": "rule"},
             "extra_info": {"index": i, "split": "train"}} for i in range(1, n + 1)]


def math_lighteval(n=6):
    return [{"problem": f"Compute ${i}^2$.", "level": "Level 1", "type": "Algebra",
             "solution": f"We have ${i}^2 = \\boxed{{{i * i}}}$."} for i in range(1, n + 1)]


def gsm8k(n=6):
    return [{"question": f"Tom has {i} apples and buys 1000 more. How many?",
             "answer": f"{i} + 1000 = <<{i}+1000={i + 1000}>>{i + 1000}\n#### {i + 1000:,}"} for i in range(1, n + 1)]


def aime_2024():  # HuggingFaceH4/aime_2024
    return [{"id": 60 + i, "problem": f"AIME problem {i}?", "solution": "... so the answer is $\\boxed{025}$.",
             "answer": "25", "url": "https://artofproblemsolving.com/wiki", "year": 2024} for i in range(3)]


def math_500():  # HuggingFaceH4/MATH-500; the first row's answer differs from the last box of its solution
    return [{"problem": "Simplify $\\frac{2}{4}$.", "solution": "First $\\boxed{\\frac{2}{4}}$, i.e. one half.",
             "answer": "\\frac{1}{2}", "subject": "Prealgebra", "level": 1, "unique_id": "test/prealgebra/1.json"},
            {"problem": "What is $2+3$?", "solution": "$\\boxed{5}$", "answer": "5", "subject": "Algebra", "level": 1,
             "unique_id": "test/algebra/2.json"}]


def files_for(data: str, tmp: Path) -> tuple[str, str, int]:
    """(train file, test file, test rows) in the real layout of data config ``data``."""
    return {
        "dapo17k": (_parquet(tmp / "dapo.parquet", dapo_processed()), _jsonl(tmp / "aime24.jsonl", aime_2024()), 3),
        "openr1_46k": (_parquet(tmp / "openr1.parquet", verl_chat()), _jsonl(tmp / "math500.jsonl", math_500()), 2),
        "math": (_jsonl(tmp / "math.jsonl", math_lighteval()), _jsonl(tmp / "math500.jsonl", math_500()), 2),
        "gsm8k": (_jsonl(tmp / "train.jsonl", gsm8k()), _jsonl(tmp / "test.jsonl", gsm8k(4)), 4),
        "jsonl": (_jsonl(tmp / "t.jsonl", [{"problem": "1+1?", "answer": "2"}] * 6),
                  _jsonl(tmp / "v.jsonl", [{"problem": "2+2?", "answer": "4"}] * 2), 2),
    }[data]


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def _load_both(cfg, tokenizer):
    data = OmegaConf.to_container(cfg.data, resolve=True)
    kw = dict(max_prompt_len=cfg.rollout.max_prompt_len, overlong=cfg.rollout.overlong_prompts)
    return load_prompts(data, tokenizer, "train", **kw), load_prompts(data, tokenizer, "test", **kw)


@pytest.mark.parametrize("data", [d for d in group_options("data") if d not in ("arith", "countdown")])  # generated
def test_every_data_config_loads_both_splits_from_its_real_layout(data, tmp_path, tokenizer):
    train, test, n_test = files_for(data, tmp_path)
    cfg = _compose([f"data={data}", f"data.path={train}", f"data.test_path={test}"])
    (tr, tr_report), (te, te_report) = _load_both(cfg, tokenizer)
    assert len(tr) == 6 and not tr_report.skipped
    assert len(te) == n_test and not te_report.skipped
    assert all(p.answer and p.text.strip() for p in tr + te)


def test_each_layout_reads_the_right_problem_answer_and_id(tmp_path, tokenizer):
    cfg = _compose(["data=dapo17k", *(f"data.{k}={v}" for k, v in zip(("path", "test_path"), files_for("dapo17k", tmp_path)))])
    (tr, _), (te, _) = _load_both(cfg, tokenizer)
    assert (tr[0].problem, tr[0].answer, tr[0].id) == ("Find 1 + 1.", "2", "idx-1")
    assert "Answer:" in tr[0].text  # the dapo template around the plain problem
    assert (te[0].problem, te[0].answer, te[0].id) == ("AIME problem 0?", "25", "60")  # AIME's own fields
    cfg = _compose(["data=openr1_46k", *(f"data.{k}={v}" for k, v in zip(("path", "test_path"), files_for("openr1_46k", tmp_path)))])
    (tr, _), _ = _load_both(cfg, tokenizer)
    assert (tr[1].problem, tr[1].answer, tr[1].id) == ("What is 2 times 3?", "6", "2")  # nested ground truth
    assert SYSTEM in tr[1].text and tr[1].text.rstrip().endswith("assistant")  # the chat as given, its system turn kept
    cfg = _compose(["data=gsm8k", *(f"data.{k}={v}" for k, v in zip(("path", "test_path"), files_for("gsm8k", tmp_path)))])
    (tr, _), (te, _) = _load_both(cfg, tokenizer)
    assert tr[0].answer == "1001" and te[-1].answer == "1004"  # "#### 1,001" -> 1001


def test_validation_and_eval_read_the_same_math500_gold_answer(tmp_path, tokenizer):
    """One source of truth: MATH-500's `answer`, not the last \\boxed{} of `solution`, in training
    validation (data=math's test split) and in `rlvr eval` (benchmark math500)."""
    train, test, _ = files_for("math", tmp_path)
    (_, _), (val, _) = _load_both(_compose(["data=math", f"data.path={train}", f"data.test_path={test}"]), tokenizer)
    (bench,) = resolve_benchmarks(["math500"], {"math500": {"path": test}})
    evald, _ = load_benchmark(bench, tokenizer, OmegaConf.create({"template": None, "limit": None}))
    assert [p.answer for p in val] == [p.answer for p in evald] == ["\\frac{1}{2}", "5"]
    assert [p.id for p in val] == [p.id for p in evald] == ["test/prealgebra/1.json", "test/algebra/2.json"]


@pytest.mark.parametrize("recipe", group_options("recipes"))
def test_every_recipe_loads_both_splits(recipe, tmp_path, tokenizer):
    data = _compose([f"+recipes={recipe}"]).data.name
    extra = [] if data in ("arith", "countdown") else [f"data.{k}={v}" for k, v in zip(("path", "test_path"), files_for(data, tmp_path))]
    (tr, _), (te, _) = _load_both(_compose([f"+recipes={recipe}", *extra, "data.train_size=64", "data.test_size=16"]), tokenizer)
    assert tr and te


def test_overlong_prompts_are_dropped_and_counted_or_refused(tmp_path, tokenizer):
    """A cut prompt is another problem (and today's cut lost its end: the question and the assistant
    header). Over-long prompts are dropped at load time and counted, as verl does, or refused."""
    rows = [{"problem": "1+1?", "answer": "2", "id": "short"}, {"problem": "3 + " * 400 + "1?", "answer": "1201", "id": "long"}]
    cfg = {"name": "t", "source": "file", "template": "chat", "path": _jsonl(tmp_path / "d.jsonl", rows)}
    prompts, report = load_prompts(cfg, tokenizer, "train", max_prompt_len=128)
    assert [p.id for p in prompts] == ["short"] and report.skipped == {"too long (> 128 tokens)": 1}
    assert "skipped 1 malformed (too long (> 128 tokens): 1)" in report.summary()
    with pytest.raises(UserError, match="prompt long has .* tokens > rollout.max_prompt_len=128"):
        load_prompts(cfg, tokenizer, "train", max_prompt_len=128, overlong="error")
    with pytest.raises(UserError, match="valid: drop, error"):
        load_prompts(cfg, tokenizer, "train", max_prompt_len=128, overlong="cut")
    with pytest.raises(UserError, match="every prompt is longer than rollout.max_prompt_len=2 tokens"):
        load_prompts(cfg, tokenizer, "train", max_prompt_len=2)


def test_bad_rows_of_a_nested_layout_are_skipped_and_counted(tmp_path, tokenizer):
    rows = verl_chat(3)
    rows[0]["reward_model"] = {"style": "rule"}  # no ground truth
    rows[1]["prompt"] = []  # no problem
    cfg = _compose(["data=openr1_46k", f"data.path={_parquet(tmp_path / 'x.parquet', rows)}"])
    prompts, report = load_prompts(OmegaConf.to_container(cfg.data, resolve=True), tokenizer, "train")
    assert len(prompts) == 1 and sum(report.skipped.values()) == 2


def test_an_unreachable_hub_dataset_is_a_one_line_user_error(monkeypatch, tokenizer):
    """Offline (or a wrong id/split), `data=dapo17k` stops with one line naming the local-copy override,
    not a ConnectionError traceback."""
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'open-r1/DAPO-Math-17k-Processed' on the Hub (LocalEntryNotFoundError)\nmore")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    data = OmegaConf.to_container(_compose(["data=dapo17k"]).data, resolve=True)
    with pytest.raises(UserError, match=r"dataset not found: open-r1/DAPO-Math-17k-Processed .*ConnectionError.*data.path") as e:
        load_prompts(data, tokenizer, "train")
    assert "\n" not in str(e.value)
