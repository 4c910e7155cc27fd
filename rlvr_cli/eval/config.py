"""``eval.*`` of ``rlvr eval`` (conf/eval.yaml): how each benchmark is sampled."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rlvr_cli.data.prompts import TEMPLATES
from rlvr_cli.rollout.config import STOP_TOKENS_WHY
from rlvr_cli.trainer.config import DEVICE
from rlvr_cli.typed import setting


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """``eval.*``: responses per problem, sampling, budgets (avg@n, pass@k, maj@n come from them)."""

    n: int = setting(ge=1, why="responses per problem", help="responses per problem (pass@k for k = 1, 2, 4, "
                     "... <= n)")
    temperature: float = setting(ge=0, why="0 = greedy", help="sampling temperature (0 = greedy)")
    top_p: float = setting(gt=0, le=1, help="nucleus sampling threshold")
    max_new_tokens: int | None = setting(ge=1, why="null = each benchmark's own", help="response budget; "
                                         "null = each benchmark's own (arith 64, gsm8k 1024, competition 3072)")
    batch_size: int = setting(ge=1, help="sequences (problems x n) per generation call")
    limit: int | None = setting(None, ge=1, why="null = all", help="first N problems of every benchmark "
                                "(a benchmark's own limit wins); null = all")
    template: Literal[TEMPLATES] | None = setting(None, help="prompt template for every benchmark; null = "
                                                  "each benchmark's own")
    max_prompt_len: int | None = setting(None, ge=1, help="prompts longer than this many tokens are cut from "
                                         "the left; null = never cut")
    device: str = setting("auto", **DEVICE, help="auto (cuda if available, else cpu) or a torch device")
    save_samples: bool = setting(True, help="write every generation to samples.jsonl")
    progress: bool = setting(True, help="a live progress bar with ETA (off: one line per benchmark)")
    stop_token_ids: list[int | str] | None = setting(None, ge=0, why=STOP_TOKENS_WHY, help="extra stop token "
                                                     "ids / single-token strings, on top of the model's EOS")
    stop: list[str] | None = setting(None, help="stop strings (the same rule as training's rollout.stop)")
