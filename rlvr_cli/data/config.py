"""The data config nodes: ``data.*`` of ``rlvr train`` (conf/data/*.yaml) and a benchmark file of
``rlvr eval`` (conf/benchmark/*.yaml), with the names they choose from."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from rlvr_cli.data.benchmarks import benchmark_file, benchmark_names
from rlvr_cli.data.prompts import TEMPLATES
from rlvr_cli.data.synthetic import SYNTHETIC_TASKS
from rlvr_cli.rewards import EXTRACT_EXPECT, EXTRACT_HELP, VERIFIER_NAMES, extract_ok
from rlvr_cli.typed import field_names, load, setting, show

ANSWER_FORMATS = ("plain", "boxed_solution", "gsm8k")  # how a row's answer field reads (datasets.normalise_answer)
SOURCES = ("file", "synthetic")
BENCHMARKS = tuple(benchmark_names())  # the files of conf/benchmark/
FIELD_HELP = "a row's field name, a dotted path, or a list of them (the first one a row has is used)"

FieldKey = str | list[str]


@dataclass(frozen=True, kw_only=True)
class RowFields:
    """How a source's rows read, shared by a data config and a benchmark file (``datasets.canonical_rows``)."""

    problem_key: FieldKey = setting("problem", help=f"the problem: {FIELD_HELP}")
    answer_key: FieldKey = setting("answer", help=f"the gold answer: {FIELD_HELP}")
    id_key: FieldKey = setting("id", help=f"the problem's id: {FIELD_HELP}")
    answer_format: Literal[ANSWER_FORMATS] = setting("plain", help="the answer field: plain | boxed_solution "
                                                     "(a solution whose last \\boxed{} is the answer) | gsm8k")

    def fields(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in field_names(RowFields)}


@dataclass(frozen=True, kw_only=True)
class DataConfig(RowFields):
    """``data.*``: the train prompts and the held-out ones (``datasets.load_prompts``)."""

    name: str = setting(help="the data config's name (conf/data/<name>.yaml; in the run's name)")
    template: Literal[TEMPLATES] = setting(help="prompt template: chat | qwen_math | dapo | plain (data/prompts.py)")
    source: Literal[SOURCES] = setting("file", help="file (a local file or folder, or a hub id) | synthetic "
                                       "(generated: data.synthetic)")
    path: str | None = setting(None, help="the train split: a .jsonl/.json/.parquet file, a folder, or a hub id")
    split: str | None = setting("train", help="the hub dataset's train split")
    subset: str | None = setting(None, help="the hub dataset's subset (config name)")
    test_path: str | None = setting(None, help="the held-out split's file or hub id (replaces "
                                    "test_benchmark's source when both are set)")
    test_split: str | None = setting("test", help="the held-out hub dataset's split")
    test_benchmark: Literal[BENCHMARKS] | None = setting(None, why="a file of conf/benchmark/", help="the "
                                                          "held-out split is this benchmark (its source and fields)")
    extract: str | list[str] = setting("auto", check=extract_ok, expect=EXTRACT_EXPECT,
                                       help=f"{EXTRACT_HELP}; reward.extract follows it")
    verifier: Literal[VERIFIER_NAMES] = setting("math", help="who grades this data (reward.verifier follows it)")
    train_size: int | None = setting(None, ge=1, why="null = the whole split", help="train prompts used "
                                     "(synthetic: generated); null = the whole split")
    test_size: int | None = setting(None, ge=1, why="null = the whole split", help="held-out prompts "
                                    "(synthetic: generated); null = the whole split")
    synthetic: dict[str, Any] | None = setting(None, help="a generated task's settings: task (arith | "
                                               "countdown), seed, and the task's own (data/synthetic.py)")

    def source_problems(self, at: str) -> Iterator[str]:
        """What a training run needs of its source (``configs.load_train_config``; loading one split
        needs only that split's)."""
        if self.source == "file":
            if not self.path:
                yield f"{at}path={show(self.path)}: expected a file, folder or hub id ({at}source=file)"
            if not self.test_path and not self.test_benchmark:  # a benchmark names the held-out source
                yield f"{at}test_path={show(self.test_path)}: expected a file, folder or hub id ({at}source=file)"
        else:
            for key in ("train_size", "test_size"):
                if getattr(self, key) is None:
                    yield f"{at}{key}=null: expected an int >= 1 ({at}source=synthetic generates that many)"
        params = self.synthetic or {}
        if "task" in params and params["task"] not in SYNTHETIC_TASKS:
            yield f"{at}synthetic.task={show(params['task'])}: expected one of {' | '.join(SYNTHETIC_TASKS)}"
        if "seed" in params and (not isinstance(params["seed"], int) or isinstance(params["seed"], bool)):
            yield f"{at}synthetic.seed={show(params['seed'])}: expected an int"


@dataclass(frozen=True, kw_only=True)
class BenchmarkConfig(RowFields):
    """A ``conf/benchmark/*.yaml`` file (``benchmark_overrides.<name>`` changes it): where a benchmark's
    problems come from, how its rows read, how ``rlvr eval`` prompts and grades them."""

    name: str = setting(help="the benchmark's name (its file's)")
    source: Literal[SOURCES] = setting("file", help="file (hub_id or path) | synthetic")
    hub_id: str | None = setting(None, help="the hub dataset")
    path: str | None = setting(None, help="a local .jsonl/.json/.parquet file or folder instead of the hub")
    split: str | None = setting("test", help="the split (hub, folder or generated); null = test")
    subset: str | None = setting(None, help="the hub dataset's subset")
    revision: str | None = setting(None, help="the hub dataset's revision")
    template: Literal[TEMPLATES] = setting("qwen_math", help="the prompt template (eval.template overrides it)")
    extract: str | list[str] | None = setting(None, check=lambda v: v is None or extract_ok(v),
                                              expect=f"null or {EXTRACT_EXPECT}", help=f"{EXTRACT_HELP}; "
                                              "null = reward.extract")
    verifier: Literal[VERIFIER_NAMES] | None = setting(None, help="who grades it; null = reward.verifier")
    max_new_tokens: int | None = setting(None, ge=1, help="the response budget (eval.max_new_tokens overrides it)")
    limit: int | None = setting(None, ge=1, why="null = all", help="its first N problems; null = all")
    size: int | None = setting(None, ge=1, help="problems generated (source=synthetic)")
    synthetic: dict[str, Any] | None = setting(None, help="a generated benchmark's settings (data/synthetic.py)")

    def problems(self, at: str) -> Iterator[str]:
        if self.source == "synthetic" and self.size is None:
            yield f"{at}size=null: expected an int >= 1 ({at}source=synthetic generates that many)"


def benchmark_config(name: str, overrides: dict[str, Any] | None = None) -> BenchmarkConfig:
    """A benchmark's file with ``benchmark_overrides.<name>`` over it, as a ``BenchmarkConfig``."""
    return load(BenchmarkConfig, {**benchmark_file(name), **(overrides or {}), "name": name},
                f"benchmark_overrides.{name}." if overrides else f"conf/benchmark/{name}.yaml: ")
