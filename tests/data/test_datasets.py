"""Loading real data files (../shared/data) and bad rows, with the shipped tokenizer."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlvr_cli.data.datasets import PromptSampler, load_prompts, normalise_answer, read_rows
from rlvr_cli.errors import UserError
from rlvr_cli.models import load_tokenizer

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")


@pytest.fixture(scope="module")
def tokenizer():
    from tests.trainer.conftest import MODEL

    return load_tokenizer({"path": MODEL})


def _cfg(**kw):
    base = {"name": "t", "source": "file", "template": "qwen_math", "problem_key": "problem", "answer_key": "answer",
            "answer_format": "plain", "split": "train", "test_split": "test"}
    return {**base, **kw}


@needs_shared
def test_math_train_jsonl_loads_with_template(tokenizer):
    prompts, report = load_prompts(_cfg(path=str(SHARED / "train" / "math_train.jsonl"), train_size=50), tokenizer, "train")
    assert len(prompts) == 50 and report.kept == 50
    assert prompts[0].id == "math-train-00000" and "\\boxed{}" in prompts[0].text
    assert prompts[0].text.rstrip().endswith("assistant")  # chat template with generation prompt


@needs_shared
def test_benchmark_answers_are_strings(tokenizer):
    prompts, _ = load_prompts(_cfg(path="x", test_path=str(SHARED / "aime24.jsonl")), tokenizer, "test")
    assert len(prompts) == 30 and prompts[0].answer == "204"


def test_malformed_rows_are_skipped_and_counted(tmp_path, tokenizer, caplog):
    f = tmp_path / "d.jsonl"
    rows = [{"problem": "1+1?", "answer": "2"}, {"problem": "", "answer": "3"}, {"question": "q", "answer": "4"},
            {"problem": "2+2?", "answer": None}, {"problem": "3+3?", "answer": 6}]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    prompts, report = load_prompts(_cfg(path=str(f)), tokenizer, "train")
    assert [p.answer for p in prompts] == ["2", "6"]  # numbers become strings
    assert sum(report.skipped.values()) == 4
    assert report.skipped["no problem"] == 2 and report.skipped["no answer"] == 1 and report.skipped["invalid json"] == 1
    assert "skipped 4 malformed" in caplog.text


def test_parquet_and_field_names(tmp_path, tokenizer):
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "d.parquet"
    pq.write_table(pa.table({"question": ["What is 3*4?"], "answer": ["#### 12"]}), f)
    prompts, _ = load_prompts(_cfg(path=str(f), problem_key="question", answer_format="gsm8k"), tokenizer, "train")
    assert prompts[0].answer == "12"


def test_answer_formats():
    assert normalise_answer("so \\boxed{\\frac{1}{2}}.", "boxed_solution") == "\\frac{1}{2}"
    assert normalise_answer("blah #### 1,234", "gsm8k") == "1234"
    with pytest.raises(UserError, match="valid: plain"):
        normalise_answer("1", "weird")


def test_missing_file_is_a_clear_error(tokenizer):
    with pytest.raises(UserError, match="data file not found: ./nope.jsonl"):
        read_rows("./nope.jsonl")


def test_missing_file_from_the_cli_exits_2_with_one_line():
    r = subprocess.run([sys.executable, "-m", "rlvr_cli.cli", "train", "data=jsonl", "data.path=./nope.jsonl",
                        "trainer.max_steps=1", "out_dir=/tmp/rlvr_missing_file_test"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "data file not found: ./nope.jsonl" in r.stderr and "Traceback" not in r.stderr


def test_sampler_is_deterministic_and_resumable():
    items = list(range(10))
    a = PromptSampler(items, seed=3)
    first = a.next_batch(7)
    state = a.state_dict()
    rest = a.next_batch(8)  # crosses an epoch boundary
    b = PromptSampler(items, seed=3)
    b.load_state_dict(state)
    assert b.next_batch(8) == rest
    assert sorted(first + rest[:3]) == items  # an epoch is a permutation
