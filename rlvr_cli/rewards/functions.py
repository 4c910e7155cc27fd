"""Reward terms: what the verifier's verdict and other signals add up to, with weights.

As TRL's ``reward_funcs`` / ``reward_weights`` and verl's ``custom_reward_function``: ``reward.funcs``
lists the terms, ``reward.weights`` their weights (default 1.0 each), ``reward.fn`` adds one more user
function.  A term is one of

* ``accuracy``: the verifier, 1.0 if the extracted answer equals the gold answer, else 0.0;
* ``format``: 1.0 if an answer was found in the expected form (``reward.extract``), else 0.0; an
  answer read from prose by a free-text fallback (``final_statement``, ``last_math``, ``last_number``)
  is accurate but not formatted, unless the fallbacks are all ``reward.extract`` names;
* ``overlong``: DAPO's soft overlong punishment (Yu et al. 2025, eq. 13, as verl's
  ``overlong_buffer``): 0 up to ``L_max - L_cache`` tokens, then falling linearly to
  ``-overlong_penalty_factor`` at ``L_max`` (``L_max = rollout.max_new_tokens``,
  ``L_cache = reward.overlong_buffer_len``);
* ``path/to/file.py:function``: a user function with TRL's contract
  ``fn(completions: list[str], answers: list[str], **row_fields) -> list[float]``; row fields are
  ``prompts`` (the rendered prompts), ``problem``, ``id`` and ``completion_lengths`` (tokens), one per
  completion.  Accept ``**kwargs`` to ignore the ones you do not need.

The score of a response is ``sum_k weight_k * term_k``; each term's mean is logged as ``reward/<name>``.
"""
from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlvr_cli.errors import UserError
from rlvr_cli.rewards import RewardConfig
from rlvr_cli.rewards.extract import extract_answer, format_modes
from rlvr_cli.typed import load, setting

BUILTINS = ("accuracy", "format", "overlong")


@dataclass
class RewardInputs:
    """One batch of completions and what the terms may read (all lists have one item per completion)."""

    completions: list[str]
    answers: list[str]
    grades: list[Any]  # rewards.Grade
    lengths: list[int]  # response tokens
    row_fields: dict[str, list[Any]]


@dataclass
class RewardTerm:
    name: str  # the metric name: reward/<name>
    weight: float
    fn: Callable[[RewardInputs], list[float]]


def overlong_penalty(lengths: Sequence[int], max_len: int, buffer_len: int, factor: float) -> list[float]:
    """DAPO eq. 13 scaled by ``factor``: ``min(0, -(len - (max_len - buffer_len)) / buffer_len) * factor``,
    i.e. 0 for ``len <= max_len - buffer_len``, ``-factor`` at ``len = max_len``."""
    expected = max_len - buffer_len
    return [min(0.0, -(n - expected) / buffer_len) * factor for n in lengths]


def load_user_function(spec: str) -> Callable[..., Any]:
    """``path/to/file.py:function`` -> the function; a ``UserError`` naming what is wrong otherwise."""
    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name:
        raise UserError(f"reward function {spec!r}: expected path/to/file.py:function, or one of {', '.join(BUILTINS)}")
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"reward function {spec!r}: no such file {str(file)!r}")
    module_spec = importlib.util.spec_from_file_location(f"rlvr_user_reward_{file.stem}", file)
    if module_spec is None or module_spec.loader is None:
        raise UserError(f"reward function {spec!r}: cannot load {str(file)!r} as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:  # noqa: BLE001 - the user's module failing to import is their error to see
        raise UserError(f"reward function {spec!r}: importing {file.name} raised {type(error).__name__}: {error}") from error
    fn = getattr(module, name, None)
    if not callable(fn):
        found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise UserError(f"reward function {spec!r}: {file.name} has no function {name!r}; it has: {', '.join(found) or 'none'}")
    return fn


def _user_term(spec: str) -> Callable[[RewardInputs], list[float]]:
    fn = load_user_function(spec)

    def call(inputs: RewardInputs) -> list[float]:
        n = len(inputs.completions)
        try:
            out = fn(completions=list(inputs.completions), answers=list(inputs.answers),
                     completion_lengths=list(inputs.lengths), **inputs.row_fields)
        except Exception as error:  # noqa: BLE001 - name the user's function in the error
            raise UserError(f"reward function {spec!r} raised {type(error).__name__}: {error}") from error
        try:
            values = [float(v) for v in out]
        except (TypeError, ValueError) as error:
            raise UserError(f"reward function {spec!r} must return a list of {n} floats, got {type(out).__name__}") from error
        if len(values) != n:
            raise UserError(f"reward function {spec!r} returned {len(values)} values for {n} completions")
        if not all(math.isfinite(v) for v in values):
            raise UserError(f"reward function {spec!r} returned a non-finite value")
        return values

    return call


@dataclass(frozen=True, kw_only=True)
class RewardTermsConfig(RewardConfig):
    """``reward.*`` of ``rlvr train``: the grader's settings and the reward terms summed with weights."""

    funcs: list[str] = setting(["accuracy"], why="accuracy | format | overlong | path/to/file.py:function",
                               help="reward terms: accuracy (the verifier, 1/0) | format (an answer in the "
                               "expected form) | overlong (DAPO's soft penalty) | path/to/file.py:function")
    weights: list[float] | None = setting(None, why="one per reward term; null = all 1.0",
                                          help="one weight per entry of funcs (then fn); null = all 1.0")
    fn: str | None = setting(None, why="path/to/file.py:function", help="one more user function "
                             "(path/to/file.py:function, verl's custom_reward_function); null = none")
    overlong_buffer_len: int = setting(0, ge=0, why="0 = no overlong penalty", help="DAPO overlong shaping: "
                                       "the last N tokens before rollout.max_new_tokens cost up to the factor")
    overlong_penalty_factor: float = setting(1.0, ge=0, help="the overlong penalty at rollout.max_new_tokens")


def build_rewards(cfg: RewardTermsConfig | Mapping[str, Any], max_new_tokens: int) -> list[RewardTerm]:
    """The reward terms of a ``reward`` config node (see the module docstring)."""
    cfg = load(RewardTermsConfig, cfg, "reward.")
    specs = list(cfg.funcs or ["accuracy"])
    if cfg.fn:
        specs.append(cfg.fn)
    weights = [1.0] * len(specs) if cfg.weights is None else list(cfg.weights)
    if len(weights) != len(specs):
        raise UserError(f"reward.weights has {len(weights)} values for {len(specs)} reward terms ({', '.join(specs)})")
    terms: list[RewardTerm] = []
    for spec, weight in zip(specs, weights):
        if spec == "accuracy":
            fn = lambda x: [g.score for g in x.grades]  # noqa: E731
        elif spec == "format":
            fn = lambda x, m=format_modes(cfg.extract): [  # noqa: E731
                0.0 if extract_answer(c, m) is None else 1.0 for c in x.completions]
        elif spec == "overlong":
            buffer_len, factor = cfg.overlong_buffer_len, cfg.overlong_penalty_factor
            if not 0 < buffer_len <= max_new_tokens:
                raise UserError(f"reward.funcs has overlong: reward.overlong_buffer_len={buffer_len} must be in "
                                f"[1, rollout.max_new_tokens={max_new_tokens}]")
            fn = lambda x, b=buffer_len, f=factor: overlong_penalty(x.lengths, max_new_tokens, b, f)  # noqa: E731
        elif ":" in spec:
            fn = _user_term(spec)
        else:
            raise UserError(f"unknown reward {spec!r}; valid: {', '.join(BUILTINS)} or path/to/file.py:function")
        name = spec if spec in BUILTINS else spec.rpartition(":")[2]
        if any(t.name == name for t in terms):
            raise UserError(f"reward {name!r} is listed twice in reward.funcs / reward.fn")
        terms.append(RewardTerm(name, weight, fn))
    return terms


def score(terms: Sequence[RewardTerm], inputs: RewardInputs) -> tuple[list[float], dict[str, list[float]]]:
    """(weighted total per completion, each term's raw values)."""
    values = {t.name: t.fn(inputs) for t in terms}
    total = [sum(t.weight * values[t.name][i] for t in terms) for i in range(len(inputs.completions))]
    return total, values
