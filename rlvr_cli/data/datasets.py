"""Stage 1: dataset rows -> ``Prompt``s.

Sources: a built-in generated task (arithmetic or Countdown, ``synthetic.py``), a local jsonl/json/parquet file or folder, or a hub id
(``datasets.load_dataset``). Rows without a problem or an answer are skipped and counted, never fatal;
so are prompts longer than ``rollout.max_prompt_len`` tokens (verl's ``filter_overlong_prompts``: a cut
problem is another problem), unless ``rollout.overlong_prompts=error``.

Field names (``problem_key``, ``answer_key``, ``id_key``) are a name, a dotted path into nested
fields (``reward_model.ground_truth``, the verl parquet layout), or a list of those (the first present).
A problem that is a chat (a list of ``{role, content}`` messages, verl's ``prompt`` column) is rendered
with the tokenizer's chat template as given, system turns and instructions included, as verl does;
``data.template`` applies to plain-text problems.

The held-out split of a data config is named by a benchmark (``data.test_benchmark``, a file of
``conf/benchmark/``): its field names and answer format are the ones ``rlvr eval`` uses, so validation
and evaluation read the same gold answer (``canonical_rows`` is shared by both).
"""
from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlvr_cli.data.config import ANSWER_FORMATS, DataConfig, RowFields, benchmark_config
from rlvr_cli.data.prompts import render_messages, render_prompt
from rlvr_cli.errors import UserError
from rlvr_cli.rewards.extract import extract_answer
from rlvr_cli.typed import load
from rlvr_cli.types import Prompt

log = logging.getLogger(__name__)
OVERLONG = ("drop", "error")


@dataclass
class LoadReport:
    """What loading kept and skipped, for the run's log and metrics."""

    source: str
    kept: int
    skipped: Counter

    def summary(self) -> str:
        if not self.skipped:
            return f"{self.source}: {self.kept} rows"
        why = ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items()))
        return f"{self.source}: {self.kept} rows, skipped {sum(self.skipped.values())} malformed ({why})"


def read_rows(path: str, split: str = "train", subset: str | None = None) -> tuple[list[Any], Counter]:
    """Raw rows from a local file/folder or a hub id. Unparseable jsonl lines are counted, not fatal."""
    bad: Counter = Counter()
    p = Path(path).expanduser()
    if p.is_file() and p.suffix in (".jsonl", ".json"):
        text = p.read_text(encoding="utf-8")
        if p.suffix == ".json" and text.lstrip().startswith("["):
            return json.loads(text), bad
        rows = []
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                bad["invalid json"] += 1
        return rows, bad
    if p.is_file() and p.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(p).to_pylist(), bad
    looks_local = path.startswith((".", "/", "~")) or p.suffix in (".jsonl", ".json", ".parquet")
    if looks_local and not p.exists():
        raise UserError(f"data file not found: {path}")
    import datasets  # hub id or a local dataset folder

    try:
        return list(datasets.load_dataset(str(p) if p.exists() else path, subset, split=split)), bad
    except Exception as e:  # unknown id, unknown split/subset, offline: a one-line error, not a traceback
        first = str(e).splitlines()[0] if str(e) else ""
        raise UserError(f"dataset not found: {path} (split {split}, subset {subset}): {type(e).__name__}: {first} "
                        f"(a local jsonl/json/parquet copy works offline: data.path / data.test_path=<file>)") from None


def get_field(row: dict, keys: Any) -> Any:
    """The first non-null value among ``keys`` (a name or a list of names); a dotted name walks into
    nested fields (``reward_model.ground_truth``)."""
    for key in [keys] if isinstance(keys, str) else list(keys or []):
        value: Any = row
        for part in str(key).split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            return value
    return None


def canonical_rows(rows: list[Any], fields: RowFields | Mapping[str, Any]) -> list[Any]:
    """Rows as ``{id, problem, answer}`` with the source's field names resolved (``fields``: a data
    config or a benchmark, or a mapping of their problem_key, answer_key, id_key, answer_format). gsm8k
    answers without "####" (already clean copies) are taken as they are. Malformed rows pass through
    unchanged so ``rows_to_prompts`` counts them. Shared by training, in-training validation and
    ``rlvr eval``: one definition of a gold answer per source."""
    fields = load(RowFields, fields)
    out: list[Any] = []
    for row in rows:
        if not isinstance(row, dict):
            out.append(row)
            continue
        raw = get_field(row, fields.answer_key)
        fmt = fields.answer_format
        if fmt == "gsm8k" and raw is not None and "####" not in str(raw):
            fmt = "plain"
        pid = get_field(row, fields.id_key)
        out.append({"problem": get_field(row, fields.problem_key),
                    "answer": normalise_answer(raw, fmt), **({"id": str(pid)} if pid is not None else {})})
    return out


def _as_chat(problem: Any) -> list[dict[str, str]] | None:
    """A chat-format problem (list of {role, content}, as parquet/JSON give it), else None."""
    if isinstance(problem, (list, tuple)) and problem and all(
            isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") for m in problem):
        return [{"role": str(m["role"]), "content": m["content"]} for m in problem]
    return None


_GSM8K = re.compile(r"####\s*(.+?)\s*$", re.S)


def normalise_answer(raw: Any, fmt: str) -> str | None:
    """The reference answer as a string, or None when the row has none."""
    if raw is None:
        return None
    text = str(raw).strip()
    if fmt == "plain":
        return text or None
    if fmt == "boxed_solution":
        return extract_answer(text, mode="boxed")
    if fmt == "gsm8k":
        m = _GSM8K.search(text)
        return m.group(1).replace(",", "").strip() if m else None
    raise UserError(f"unknown data.answer_format {fmt!r}; valid: {', '.join(ANSWER_FORMATS)}")


def rows_to_prompts(
    rows: list[Any], tokenizer, template: str, source: str = "data", skipped: Counter | None = None,
    max_prompt_len: int | None = None, overlong: str = "drop", names: tuple[str, str] = ("problem", "answer"),
) -> tuple[list[Prompt], LoadReport]:
    """Canonical rows (``{id?, problem, answer}``, from ``canonical_rows`` or a generator) -> prompts.
    Malformed rows, and prompts over ``max_prompt_len`` tokens (``overlong="drop"``), are skipped and
    counted in the report; ``overlong="error"`` raises instead. ``names``: the source's problem and
    answer fields, for the report's words."""
    if overlong not in OVERLONG:
        raise UserError(f"rollout.overlong_prompts={overlong!r}; valid: {', '.join(OVERLONG)}")
    problem_name, answer_name = names
    skipped = Counter(skipped or {})
    prompts = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            skipped["not an object"] += 1
            continue
        chat = _as_chat(row.get("problem"))
        if chat is not None:
            users = [m["content"] for m in chat if m["role"] == "user"]
            problem = users[-1] if users else chat[-1]["content"]
        else:
            problem = row.get("problem")
        if not isinstance(problem, str) or not problem.strip():
            skipped[f"no {problem_name}"] += 1
            continue
        answer = normalise_answer(row.get("answer"), "plain")
        if not answer:
            skipped[f"no {answer_name}"] += 1
            continue
        pid = str(row["id"]) if row.get("id") is not None else f"{source}-{i}"
        text = render_messages(chat, tokenizer) if chat is not None else render_prompt(problem, tokenizer, template)
        if max_prompt_len is not None:
            n_tokens = len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])  # we check the length
            if n_tokens > max_prompt_len:
                if overlong == "error":
                    raise UserError(f"{source}: prompt {pid} has {n_tokens} tokens > rollout.max_prompt_len="
                                    f"{max_prompt_len} (rollout.overlong_prompts=drop skips such prompts)")
                skipped[f"too long (> {max_prompt_len} tokens)"] += 1
                continue
        prompts.append(Prompt(id=pid, problem=problem, answer=answer, text=text))
    report = LoadReport(source=source, kept=len(prompts), skipped=skipped)
    if skipped:
        log.warning(report.summary())
    if not prompts:
        too_long = f"too long (> {max_prompt_len} tokens)"
        if skipped and set(skipped) == {too_long}:
            raise UserError(f"{source}: every prompt is longer than rollout.max_prompt_len={max_prompt_len} tokens "
                            f"({skipped[too_long]} dropped); raise rollout.max_prompt_len or use a shorter data.template")
        raise UserError(f"{source}: no usable rows (need '{problem_name}' and '{answer_name}'); {report.summary()}")
    return prompts, report


def _name(keys: Any) -> str:
    return keys if isinstance(keys, str) else "/".join(map(str, keys))


def load_prompts(data_cfg: DataConfig | Mapping[str, Any], tokenizer, split: str, max_prompt_len: int | None = None,
                 overlong: str = "drop") -> tuple[list[Prompt], LoadReport]:
    """``split`` is ``train`` or ``test``; the data config says where each comes from.

    Train: ``data.path`` (+ ``split``, ``subset``) with the config's field names. Test: with
    ``data.test_benchmark`` set, that benchmark's source and field names (``data.test_path``, if set,
    replaces its source by a local file or another hub id); without it, ``data.test_path`` with the
    train split's field names. Prompts over ``max_prompt_len`` tokens: see ``rows_to_prompts``.
    """
    data_cfg = load(DataConfig, data_cfg, "data.")
    limits = dict(max_prompt_len=max_prompt_len, overlong=overlong)
    if data_cfg.source == "synthetic":
        from rlvr_cli.data.synthetic import synthetic_split

        n = data_cfg.train_size if split == "train" else data_cfg.test_size
        params = dict(data_cfg.synthetic or {})
        rows = synthetic_split(split, n, **params)
        return rows_to_prompts(rows, tokenizer, data_cfg.template, source=f"{params.get('task', 'arith')}/{split}", **limits)
    fields: RowFields = data_cfg
    path, hub_split, subset = data_cfg.path, data_cfg.split, data_cfg.subset
    if split == "test":
        path, hub_split = data_cfg.test_path, data_cfg.test_split
        if data_cfg.test_benchmark:
            bench = benchmark_config(data_cfg.test_benchmark)
            fields = bench
            path, hub_split, subset = path or bench.path or bench.hub_id, bench.split or "test", bench.subset
    if not path:
        raise UserError(f"data.{'path' if split == 'train' else 'test_path'} is not set for data={data_cfg.name}")
    rows, bad = read_rows(str(path), hub_split, subset)
    limit = data_cfg.train_size if split == "train" else data_cfg.test_size
    if limit:
        rows = rows[:limit]
    names = (_name(fields.problem_key), _name(fields.answer_key))
    return rows_to_prompts(canonical_rows(rows, fields), tokenizer, data_cfg.template,
                           source=f"{path}:{hub_split}", skipped=bad, names=names, **limits)


class PromptSampler:
    """Epoch-shuffled prompt order, deterministic by seed; its position is checkpointed."""

    def __init__(self, prompts: list[Prompt], seed: int, shuffle: bool = True):
        self.prompts, self.seed, self.shuffle = prompts, seed, shuffle
        self.epoch, self.pos = 0, 0
        self._order = self._make_order()

    def _make_order(self) -> list[int]:
        if not self.shuffle:
            return list(range(len(self.prompts)))
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(len(self.prompts), generator=g).tolist()

    def next_batch(self, size: int) -> list[Prompt]:
        out = []
        while len(out) < size:
            if self.pos >= len(self._order):
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._make_order()
            out.append(self.prompts[self._order[self.pos]])
            self.pos += 1
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._order = self._make_order()
