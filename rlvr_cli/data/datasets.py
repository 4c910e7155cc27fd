"""Stage 1: dataset rows -> ``Prompt``s.

Sources: the built-in synthetic arithmetic task, a local jsonl/json/parquet file or folder, or a hub id
(``datasets.load_dataset``). Rows without a problem or an answer are skipped and counted, never fatal.
"""
from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlvr_cli.data.prompts import render_prompt
from rlvr_cli.errors import UserError
from rlvr_cli.rewards.extract import extract_answer
from rlvr_cli.types import Prompt

log = logging.getLogger(__name__)
ANSWER_FORMATS = ("plain", "boxed_solution", "gsm8k")


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
    except FileNotFoundError as e:
        raise UserError(f"dataset not found: {path} ({e})") from None


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
    rows: list[Any], tokenizer, template: str, problem_key: str, answer_key: str, answer_format: str,
    id_key: str = "id", source: str = "data", skipped: Counter | None = None,
) -> tuple[list[Prompt], LoadReport]:
    """Validate rows and render prompts. Malformed rows are skipped and counted in the report."""
    skipped = Counter(skipped or {})
    prompts = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            skipped["not an object"] += 1
            continue
        problem = row.get(problem_key)
        if not isinstance(problem, str) or not problem.strip():
            skipped[f"no {problem_key}"] += 1
            continue
        answer = normalise_answer(row.get(answer_key), answer_format)
        if not answer:
            skipped[f"no {answer_key}"] += 1
            continue
        pid = str(row.get(id_key, f"{source}-{i}"))
        prompts.append(Prompt(id=pid, problem=problem, answer=answer, text=render_prompt(problem, tokenizer, template)))
    report = LoadReport(source=source, kept=len(prompts), skipped=skipped)
    if skipped:
        log.warning(report.summary())
    if not prompts:
        raise UserError(f"{source}: no usable rows (need '{problem_key}' and '{answer_key}'); {report.summary()}")
    return prompts, report


def load_prompts(data_cfg: dict[str, Any], tokenizer, split: str) -> tuple[list[Prompt], LoadReport]:
    """``split`` is ``train`` or ``test``; the data config says where each comes from."""
    if data_cfg.get("source", "file") == "synthetic":
        from rlvr_cli.data.synthetic import arith_split

        n = data_cfg["train_size"] if split == "train" else data_cfg["test_size"]
        rows = arith_split(split, n, **dict(data_cfg.get("synthetic") or {}))
        return rows_to_prompts(rows, tokenizer, data_cfg["template"], "problem", "answer", "plain", source=f"arith/{split}")
    path = data_cfg.get("path") if split == "train" else data_cfg.get("test_path")
    if not path:
        raise UserError(f"data.{'path' if split == 'train' else 'test_path'} is not set for data={data_cfg.get('name')}")
    hub_split = data_cfg.get("split", "train") if split == "train" else data_cfg.get("test_split", "test")
    rows, bad = read_rows(path, hub_split, data_cfg.get("subset"))
    limit = data_cfg.get("train_size" if split == "train" else "test_size")
    if limit:
        rows = rows[: int(limit)]
    return rows_to_prompts(
        rows, tokenizer, data_cfg["template"], data_cfg.get("problem_key", "problem"),
        data_cfg.get("answer_key", "answer"), data_cfg.get("answer_format", "plain"),
        id_key=data_cfg.get("id_key", "id"), source=f"{path}:{hub_split}", skipped=bad,
    )


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
