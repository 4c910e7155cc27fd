"""The rollout's config nodes (``rollout.*``, ``rollout.vllm.*``, ``algo.rollout_correction.*``,
``extrapolate.*``), the names they choose from, and ``SamplingSpec``: what a response is sampled from,
taken by both engines (``engines.py``, ``vllm_engine.py``) without importing each other. Import-light:
the CLI validates and prints help from here before anything heavy loads."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from rlvr_cli.errors import UserError
from rlvr_cli.typed import setting

if TYPE_CHECKING:
    from rlvr_cli.rollout.stopping import StopCriteria

ENGINES = ("hf", "vllm", "auto")  # who samples (engines.resolve_engine)
SAMPLERS = ("auto", "lean", "hf")  # the HF engine's decode loop (generate.generate_rollouts)
CORRECTION_MODES = ("off", "token_truncate", "token_mask", "sequence_truncate", "sequence_mask")  # correction.py
EXTRAPOLATE_DRIVERS = ("rl", "base")  # extrapolate.py: which model proposes tokens
EXTRAPOLATE_RESAMPLE = ("coupled", "independent")

GREEDY = ("0 or less samples greedily: a prompt's G responses are identical, so every advantage is 0 "
          "and GRPO learns nothing")
STOP_TOKENS_WHY = "token ids or single-token strings"


@dataclass(frozen=True)
class SamplingSpec:
    """What a response is sampled from, the same for every engine."""

    temperature: float
    top_p: float
    max_new_tokens: int
    stop: StopCriteria
    max_prompt_len: int | None = None  # cut longer prompts from the left (eval); training drops them at load


@dataclass(frozen=True, kw_only=True)
class VllmConfig:
    """``rollout.vllm`` (conf/vllm/default.yaml): the colocated vLLM engine (``rollout.engine=vllm``)."""

    gpu_memory_utilization: float = setting(0.5, gt=0, le=1, help="share of the GPU's memory vLLM may take "
                                            "(weights + KV cache)")
    kv_cache_memory_bytes: int | None = setting(None, ge=1, why="null = from gpu_memory_utilization (GPU), "
                                                "256 MiB (CPU)", help="KV-cache bytes; null = from "
                                                "gpu_memory_utilization (GPU), 256 MiB (CPU)")
    tensor_parallel_size: int = setting(1, ge=1, help="GPUs per engine (only 1: each rank samples its own prompts)")
    enforce_eager: bool | None = setting(None, help="no CUDA graphs; null = vLLM's choice")
    max_num_seqs: int | None = setting(None, ge=1, help="sequences vLLM schedules at once; null = vLLM's default")
    sleep: bool = setting(True, help="free the KV cache (and offload weights) while the update runs (GPU)")
    sleep_level: int = setting(2, ge=1, le=2, help="1 = offload weights, 2 = drop them (pushed again anyway)")
    prefix_caching: bool = setting(True, help="share the prompt's KV cache between its G responses")
    sync_bucket_mb: float = setting(512, gt=0, help="MiB per weight-push bucket (trainer -> vLLM)")


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    """Who samples, shared by ``rlvr train`` and ``rlvr eval`` (``rollout.engine``, ``.sampler``, ``.vllm``)."""

    engine: Literal[ENGINES] = setting("hf", help="hf (transformers on the trainer's module) | vllm (colocated "
                                       "vLLM engine, weights pushed after every optimizer step) | auto (vllm "
                                       "where installed and on a GPU)")
    sampler: Literal[SAMPLERS] = setting("auto", why="the HF engine's decode loop", help="the HF engine's "
                                         "decode loop: lean (each prompt prefilled once for its G rows) | hf "
                                         "(transformers generate) | auto (lean unless stop strings or a cache "
                                         "lean cannot share)")
    vllm: VllmConfig = setting(VllmConfig(), help="the vLLM engine's settings")


@dataclass(frozen=True, kw_only=True)
class RolloutConfig(EngineConfig):
    """``rollout.*`` of ``rlvr train``: what the training step samples."""

    prompts_per_step: int = setting(ge=1, help="prompts sampled per step; each gets algo.group_size responses")
    temperature: float = setting(gt=0, why=GREEDY, help="sampling temperature; log-probs and entropies use "
                                 "the same one (verl)")
    top_p: float = setting(gt=0, le=1, help="nucleus sampling threshold (1 = off)")
    max_new_tokens: int = setting(ge=1, help="response budget in tokens")
    batch_size: int = setting(ge=1, why="sequences per generate() call", help="sequences per HF generate() "
                              "call (vLLM schedules its own batches)")
    max_prompt_len: int | None = setting(None, ge=1, help="prompts longer than this many tokens are dropped at "
                                         "load and counted (verl's filter_overlong_prompts); null = no limit")
    stop_token_ids: list[int | str] | None = setting(None, ge=0, why=STOP_TOKENS_WHY, help="extra token ids "
                                                     "(or single-token strings) that end a response, kept in it")
    stop: list[str] | None = setting(None, help="strings that end a response (at the token that completes one, "
                                     "kept)")
    overlong_prompts: Literal["drop", "error"] = setting("drop", help="drop (and count) prompts over "
                                                         "max_prompt_len, or stop at the first, naming it")


@dataclass(frozen=True, kw_only=True)
class RolloutCorrectionConfig:
    """``algo.rollout_correction``: importance weights for the sampler-trainer mismatch (correction.py)."""

    mode: Literal[CORRECTION_MODES] = setting("off", help="off | token_truncate | token_mask | "
                                              "sequence_truncate | sequence_mask (verl's TIS / MIS)")
    cap: float = setting(2.0, gt=0, help="the weight cap C: truncate at C, or mask above C")
    bypass: bool = setting(False, help="take the rollout engine's log-probs as the old ones (no scoring pass; "
                           "vllm only)")


@dataclass(frozen=True, kw_only=True)
class ExtrapolateConfig:
    """``extrapolate.*`` of ``rlvr eval``: Δlog p test-time selective extrapolation (extrapolate.py)."""

    base: str | None = setting(None, why="null = off", help="the base model of `model` (folder, hub id or "
                               "builtin:<name>), sharing its tokenizer; null = off")
    gamma: float = setting(0.1, help="extrapolation strength (paper: 0.1); 0 = plain π_RL")
    tau: float = setting(-0.3, help="Δlog p threshold at or below which a token is redrawn")
    driver: Literal[EXTRAPOLATE_DRIVERS] = setting("rl", help="which model proposes tokens: rl | base")
    cand_topk: int = setting(50, ge=0, help="π_ext's candidates: the driver's top-k tokens (0 = all)")
    resample: Literal[EXTRAPOLATE_RESAMPLE] = setting("coupled", help="coupled (the redraw shares the "
                                                      "proposal's noise) | independent (fresh noise)")

    def __post_init__(self):  # also when built in code, not loaded from a config
        for key, valid in (("driver", EXTRAPOLATE_DRIVERS), ("resample", EXTRAPOLATE_RESAMPLE)):
            if getattr(self, key) not in valid:
                raise UserError(f"unknown extrapolate.{key} {getattr(self, key)!r}; valid: {', '.join(valid)}")
        if self.cand_topk < 0:
            raise UserError(f"extrapolate.cand_topk must be >= 0 (0 = whole vocabulary), got {self.cand_topk}")

