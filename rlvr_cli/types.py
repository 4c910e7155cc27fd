"""The nouns that flow through one GRPO step (see README, "Stages").

Shapes: N = responses in the train batch (prompts x G), P = padded prompt length, T = padded response
length, V = vocabulary. Token tensors over responses are right-padded to T and come with a 0/1
``response_mask``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class Prompt:
    """One problem, ready for the policy: ``text`` is the rendered prompt (chat template applied)."""

    id: str
    problem: str
    answer: str
    text: str


@dataclass
class Rollouts:
    """G sampled responses per prompt, in prompt-major order (the G samples of a prompt are adjacent)."""

    input_ids: torch.Tensor  # [N, P+T] left-padded prompt followed by the right-padded response
    attention_mask: torch.Tensor  # [N, P+T]
    response_mask: torch.Tensor  # [N, T] 1 up to and including EOS
    prompt_len: int  # P
    group_ids: torch.Tensor  # [N] long, index of the prompt in the batch
    texts: list[str]  # decoded responses (special tokens stripped)
    truncated: torch.Tensor  # [N] bool, no EOS within max_new_tokens
    prompts: list[Prompt]  # the B prompts, group_ids index into this

    @property
    def responses(self) -> torch.Tensor:  # [N, T]
        return self.input_ids[:, self.prompt_len :]

    def select(self, keep: torch.Tensor) -> Rollouts:
        """Keep the responses where ``keep`` [N] is True (used to drop zero-variance groups)."""
        idx = keep.nonzero(as_tuple=True)[0]
        return Rollouts(
            input_ids=self.input_ids[idx],
            attention_mask=self.attention_mask[idx],
            response_mask=self.response_mask[idx],
            prompt_len=self.prompt_len,
            group_ids=self.group_ids[idx],
            texts=[self.texts[i] for i in idx.tolist()],
            truncated=self.truncated[idx],
            prompts=self.prompts,
        )


@dataclass
class TrainBatch:
    """Everything the update needs, for the whole train batch. Per-token tensors are [N, T].

    ``token`` holds the statistics of the rollout policy (computed once, no grad): ``old_logprobs``,
    ``entropy`` and whatever a method asked for. ``method`` holds per-token tensors a method computed
    over the whole batch in ``Method.prepare`` (e.g. a keep-mask); both are sliced into micro-batches.
    """

    rollouts: Rollouts
    scores: torch.Tensor  # [N] float outcome rewards
    advantages: torch.Tensor  # [N, T] group advantage broadcast over response tokens (0 on padding)
    token: dict[str, torch.Tensor] = field(default_factory=dict)
    method: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def response_mask(self) -> torch.Tensor:
        return self.rollouts.response_mask

    @property
    def old_logprobs(self) -> torch.Tensor:
        return self.token["old_logprobs"]

    def __len__(self) -> int:
        return self.rollouts.input_ids.shape[0]


@dataclass
class PolicyBatch:
    """One micro-batch as a method sees it inside the loss (n responses)."""

    logprobs: torch.Tensor  # [n, T] current policy, with grad
    old_logprobs: torch.Tensor  # [n, T]
    advantages: torch.Tensor  # [n, T]
    response_mask: torch.Tensor  # [n, T] float
    token: dict[str, torch.Tensor]  # current-policy token stats asked for by the method (grad as declared)
    old_token: dict[str, torch.Tensor]  # rollout-policy token stats, sliced from TrainBatch.token
    method: dict[str, torch.Tensor]  # slice of TrainBatch.method
    step: int  # training step (1-based)
    minibatch_tokens: float  # valid tokens in the whole mini-batch (global normaliser)
    minibatch_seqs: float  # non-empty responses in the whole mini-batch
    microbatch_index: tuple[int, int, int] = (0, 0, 0)  # (epoch, minibatch, microbatch)
    clip: Any = None  # the effective losses.ClipSpec (after the method's overrides)


@dataclass
class MethodOutput:
    """What a method changes in the GRPO loss for one micro-batch. Every field is optional.

    token_weights: [n, T] multiplies the per-token policy loss; denominators keep the response mask
        (0 = drop the token's gradient but keep it in the normaliser, as Clip-Cov does).
        To replace the response mask itself, denominators included (RSI-S with ``normalize_by: kept``),
        a method stores ``batch.method["loss_mask"]`` [N, T] in ``prepare``: the loop then takes the
        mini-batch normalisers from it.
    token_loss: [n, T] per-token terms added to the policy loss before aggregation (KL-Cov's penalty).
    extra_loss: scalar added after aggregation; the loop scales it by the micro-batch's share of the
        mini-batch so a mean over micro-batches results (entropy bonus, SIREN's regulariser).
    metrics: scalars to log under ``method/<name>/``.
    """

    token_weights: torch.Tensor | None = None
    token_loss: torch.Tensor | None = None
    extra_loss: torch.Tensor | None = None
    metrics: dict[str, float] = field(default_factory=dict)
