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
    # [N, T] log-prob of each sampled token under the engine that sampled it (vLLM), 0 on padding;
    # None when the engine is the trainer's own module (HF)
    rollout_logprobs: torch.Tensor | None = None

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
            rollout_logprobs=None if self.rollout_logprobs is None else self.rollout_logprobs[idx],
        )

    @staticmethod
    def concat(parts: list[Rollouts], pad_id: int) -> Rollouts:
        """Several batches as one (DAPO refill rounds): prompts left-padded to the longest P,
        responses right-padded to the longest T, group ids offset so each prompt keeps its own."""
        if len(parts) == 1:
            return parts[0]
        p = max(r.prompt_len for r in parts)
        t = max(r.response_mask.shape[1] for r in parts)

        def pad(x: torch.Tensor, left: int, right: int, value) -> torch.Tensor:
            return torch.nn.functional.pad(x, (left, right), value=value)

        ids, att, resp, groups, lps, offset = [], [], [], [], [], 0
        for r in parts:
            left, right = p - r.prompt_len, t - r.response_mask.shape[1]
            ids.append(torch.cat([pad(r.input_ids[:, : r.prompt_len], left, 0, pad_id),
                                  pad(r.responses, 0, right, pad_id)], 1))
            att.append(torch.cat([pad(r.attention_mask[:, : r.prompt_len], left, 0, 0),
                                  pad(r.attention_mask[:, r.prompt_len :], 0, right, 0)], 1))
            resp.append(pad(r.response_mask, 0, right, 0))
            groups.append(r.group_ids + offset)
            offset += len(r.prompts)
            if r.rollout_logprobs is not None:
                lps.append(pad(r.rollout_logprobs, 0, right, 0.0))
        return Rollouts(
            input_ids=torch.cat(ids), attention_mask=torch.cat(att), response_mask=torch.cat(resp), prompt_len=p,
            group_ids=torch.cat(groups), texts=[x for r in parts for x in r.texts],
            truncated=torch.cat([r.truncated for r in parts]), prompts=[x for r in parts for x in r.prompts],
            rollout_logprobs=torch.cat(lps) if len(lps) == len(parts) else None,
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
    active: [n, T] bool, the tokens a term that shows in no per-token field acts on (SIREN's regulariser
        covers its peak tokens; the entropy bonus every response token). ``method/active_frac`` is the
        share of response tokens where the method changes anything: these, plus those where
        token_weights ≠ 1, token_loss ≠ 0, ``batch.method["loss_mask"]`` differs from the response mask
        or ``clip_overrides`` change the clipped token loss (``rlvr_cli.diagnostics.active_tokens``).
    metrics: scalars to log under ``method/<name>/``.
    reference_metrics: what the reference implementation logs under its own name where its meaning
        differs from the loop's vanilla value (verl's Clip-Cov logs its selected fraction as
        ``actor/pg_clipfrac``, KL-Cov the mean |lp − old| as ``actor/ppo_kl``): these replace the
        loop's values under those names; the loop's own always stay under ``ppo/*``.
    """

    token_weights: torch.Tensor | None = None
    token_loss: torch.Tensor | None = None
    extra_loss: torch.Tensor | None = None
    active: torch.Tensor | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    reference_metrics: dict[str, float] = field(default_factory=dict)
