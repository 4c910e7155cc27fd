"""Δlog p test-time selective extrapolation (Huang et al., "Beyond Magnitude", arXiv 2603.22117;
docs/methods-siren-rsi-dlogp.md §3.3; reference code Hesse73/RLVR-Directions ``weighted_sampling``).

An RL model and its base run in lockstep, each with its own persistent KV cache, one token per step
for the whole left-padded batch. At each position the driving model (``driver``: ``rl`` or ``base``)
draws a token y from its own sampling distribution (temperature T, top-p). Where

    Δlog p(y) = log π_RL(y | x, y_<t) − log π_base(y | x, y_<t)  ≤  τ

(RLVR pushed the token down), the position is resampled from the extrapolated policy

    log π_ext = (1+γ)·log π_RL − γ·log π_base − log Z        (π_ext ∝ π_RL · exp(γ·Δlog p))

over a candidate set (the driver's top-``cand_topk`` tokens), with the same T and top-p. Elsewhere the
drawn token is kept. Both caches are then extended with the chosen token.

Departures from the reference (two vLLM engines re-entered once per token with ``logprobs=50``):

- Full-vocabulary log-probs of both models are used, so a candidate missing from the other model's
  top-50 needs no "fill with its smallest returned value" approximation.
- Δlog p and the extrapolated scores use raw (T=1) log-probs; T and top-p are applied to the scores
  afterwards, as the reference does (``scores / T``, top-p over the candidates keeping the argmax).
- The candidate restriction applies only when γ ≠ 0: it exists so that −γ·log π_base cannot amplify
  tokens the driver gives near-zero mass; at γ = 0, π_ext ≡ π_RL exactly (unrestricted).
- ``resample="coupled"`` (default) draws the replacement with the same Gumbel noise as the proposal
  (common random numbers): when π_ext equals the driver's distribution (driver=rl, γ=0) the token is
  unchanged, so γ=0 reproduces plain π_RL sampling token for token, and the output moves continuously
  with γ. ``resample="independent"`` draws fresh noise, as the reference does; note that this alone
  (even at γ=0) moves mass off flagged tokens, because only flagged draws get a second chance.

Sampling uses the Gumbel-max trick (argmax of scores + Gumbel noise) so that both draws can share noise;
``lockstep_sample`` with no base model is plain temperature/top-p sampling from one model in the same loop.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache

from rlvr_cli.errors import UserError
from rlvr_cli.rollout.config import ExtrapolateConfig
from rlvr_cli.rollout.generate import eos_token_ids
from rlvr_cli.rollout.stopping import StopCriteria, response_mask as stop_response_mask
from rlvr_cli.rollout.logprobs import position_ids_from_mask
from rlvr_cli.rollout.sampling import sampling_scores
from rlvr_cli.types import Prompt, Rollouts



# ------------------------------------------------------------------------------------ pure helpers
def candidate_mask(driver_logprobs: torch.Tensor, k: int) -> torch.Tensor:
    """The driver's top-k tokens (all tokens when k = 0 or k ≥ V). [B, V] -> bool [B, V]."""
    if k <= 0 or k >= driver_logprobs.shape[-1]:
        return torch.ones_like(driver_logprobs, dtype=torch.bool)
    idx = driver_logprobs.topk(k, dim=-1).indices  # [B, k]
    return torch.zeros_like(driver_logprobs, dtype=torch.bool).scatter(-1, idx, True)


def extrapolated_logprobs(
    logp_rl: torch.Tensor, logp_base: torch.Tensor, gamma: float, candidates: torch.Tensor | None = None
) -> torch.Tensor:
    """log π_ext = (1+γ)·log π_RL − γ·log π_base, renormalised over ``candidates`` (−inf elsewhere).
    γ = 0 returns log π_RL unrestricted. logp_* [B, V] normalised log-probs -> [B, V]."""
    if gamma == 0:
        return logp_rl
    scores = (1 + gamma) * logp_rl - gamma * logp_base  # [B, V]
    if candidates is not None:
        scores = scores.masked_fill(~candidates, float("-inf"))
    return scores.log_softmax(-1)


def select_positions(dlogp: torch.Tensor, tau: float, active: torch.Tensor) -> torch.Tensor:
    """Positions to extrapolate: Δlog p of the drawn token ≤ τ, in rows still generating. [B] -> bool [B]."""
    return (dlogp <= tau) & active


def gumbel_noise(shape: tuple[int, ...], generator: torch.Generator | None, device) -> torch.Tensor:
    """−log E with E ~ Exp(1): standard Gumbel; argmax(scores + noise) samples softmax(scores)."""
    return -torch.empty(shape, device=device).exponential_(generator=generator).log()


def draw(scores: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
    """Gumbel-max sample of softmax(scores), or argmax when ``noise`` is None. [B, V] -> [B] long."""
    return (scores if noise is None else scores + noise).argmax(-1)


# --------------------------------------------------------------------------------- lockstep loop
class _CachedLM:
    """One causal LM with its own KV cache, extended one token per step."""

    def __init__(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        self.model = model
        self.cache = DynamicCache(config=model.config)
        out = model(input_ids=input_ids, attention_mask=attention_mask,
                    position_ids=position_ids_from_mask(attention_mask), past_key_values=self.cache,
                    use_cache=True, logits_to_keep=1)
        self.logits = out.logits[:, -1].float()  # [B, V] next-token logits

    def step(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> None:
        """Append ``tokens`` [B]; ``attention_mask`` [B, L] already includes them."""
        position = attention_mask.sum(-1, keepdim=True) - 1  # [B, 1] skips the left padding
        out = self.model(input_ids=tokens[:, None], attention_mask=attention_mask, position_ids=position,
                         past_key_values=self.cache, use_cache=True)
        self.logits = out.logits[:, -1].float()


def vocab_size(model) -> int:
    return int(model.get_output_embeddings().weight.shape[0])


def check_same_vocab(rl_model, base_model) -> None:
    v_rl, v_base = vocab_size(rl_model), vocab_size(base_model)
    if v_rl != v_base:
        raise UserError(f"extrapolation needs one vocabulary: the RL model has {v_rl} output tokens, the base "
                        f"model {v_base} (extrapolate.base must be the RL model's base, same tokenizer)")


@dataclass
class LockstepOutput:
    """B sampled responses. Per-token tensors are [B, T], T ≤ max_new_tokens."""

    responses: torch.Tensor  # [B, T] chosen tokens, pad after EOS
    response_mask: torch.Tensor  # [B, T] 1 up to and including the first EOS
    truncated: torch.Tensor  # [B] bool: no EOS within max_new_tokens
    proposed: torch.Tensor  # [B, T] the driver's draw (= responses where not extrapolated)
    extrapolated: torch.Tensor  # [B, T] bool: Δlog p(proposed) ≤ τ, token drawn from π_ext
    dlogp: torch.Tensor  # [B, T] Δlog p of the proposed token (T=1 log-probs; 0 without a base model)
    step_logits: dict[str, torch.Tensor] | None = None  # {"rl"|"base": [B, T, V]} when recorded (tests)


@torch.no_grad()
def lockstep_sample(
    rl_model, base_model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int,
    eos_ids: list[int], pad_id: int, temperature: float = 1.0, top_p: float = 1.0,
    cfg: ExtrapolateConfig | None = None, generator: torch.Generator | None = None, record_logits: bool = False,
) -> LockstepOutput:
    """Sample continuations of left-padded prompts [B, P]; with ``base_model=None``, plain sampling from
    ``rl_model`` (the same noise stream, so it is the γ=0 reference). See the module docstring."""
    cfg = cfg or ExtrapolateConfig()
    if base_model is not None:
        check_same_vocab(rl_model, base_model)
    device = next(rl_model.parameters()).device
    ids, mask = input_ids.to(device), attention_mask.to(device)
    b = ids.shape[0]
    lms = {"rl": _CachedLM(rl_model, ids, mask)}
    if base_model is not None:
        lms["base"] = _CachedLM(base_model, ids, mask)
    drive = cfg.driver if base_model is not None else "rl"
    eos = torch.tensor(eos_ids, device=device)
    active = torch.ones(b, dtype=torch.bool, device=device)  # rows that have not emitted EOS
    cols: dict[str, list[torch.Tensor]] = {k: [] for k in ("token", "proposed", "flag", "dlogp")}
    logits_log: dict[str, list[torch.Tensor]] = {k: [] for k in lms}
    for step in range(max_new_tokens):
        logp = {k: lm.logits.log_softmax(-1) for k, lm in lms.items()}  # [B, V] raw (T=1) log-probs
        if record_logits:
            for k, lm in lms.items():
                logits_log[k].append(lm.logits)
        # 1. the driver proposes a token from its own sampling distribution
        noise = gumbel_noise(tuple(logp["rl"].shape), generator, device) if temperature > 0 else None
        proposed = draw(sampling_scores(logp[drive], temperature, top_p), noise)  # [B]
        token, flag = proposed, torch.zeros_like(active)
        dlogp = torch.zeros(b, device=device)
        if base_model is not None:
            # 2. Δlog p of the proposal; 3. resample flagged positions from π_ext over the driver's top-k
            dlogp = (logp["rl"] - logp["base"]).gather(-1, proposed[:, None]).squeeze(-1)  # [B]
            flag = select_positions(dlogp, cfg.tau, active)
            if flag.any():
                cand = candidate_mask(logp[drive], cfg.cand_topk)
                ext = extrapolated_logprobs(logp["rl"], logp["base"], cfg.gamma, cand)
                if noise is not None and cfg.resample == "independent":
                    noise = gumbel_noise(tuple(ext.shape), generator, device)
                token = torch.where(flag, draw(sampling_scores(ext, temperature, top_p), noise), proposed)
        token = torch.where(active, token, torch.full_like(token, pad_id))  # finished rows get padding
        for key, value in (("token", token), ("proposed", proposed), ("flag", flag), ("dlogp", dlogp * active)):
            cols[key].append(value)
        active = active & ~torch.isin(token, eos)
        if not active.any() or step == max_new_tokens - 1:
            break
        # 4. both caches take the same token
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
        for lm in lms.values():
            lm.step(token, mask)

    responses = torch.stack(cols["token"], 1).cpu()  # [B, T]
    response_mask, truncated = stop_response_mask(responses, StopCriteria(tuple(eos_ids)))
    valid = response_mask.bool()
    return LockstepOutput(
        responses=responses.masked_fill(~valid, pad_id),
        response_mask=response_mask,
        truncated=truncated,
        proposed=torch.stack(cols["proposed"], 1).cpu().masked_fill(~valid, pad_id),
        extrapolated=torch.stack(cols["flag"], 1).cpu() & valid,
        dlogp=torch.stack(cols["dlogp"], 1).cpu() * valid,
        step_logits={k: torch.stack(v, 1).cpu() for k, v in logits_log.items()} if record_logits else None,
    )


# ------------------------------------------------------------------------------ prompts -> Rollouts
def generate_extrapolated(
    rl_model, base_model, tokenizer, prompts: list[Prompt], group_size: int, max_new_tokens: int,
    temperature: float, top_p: float, batch_size: int, cfg: ExtrapolateConfig,
    max_prompt_len: int | None = None, generator: torch.Generator | None = None,
) -> tuple[Rollouts, dict[str, list[float]]]:
    """Like ``generate_rollouts`` (B prompts -> B*G responses, prompt-major), sampling with
    :func:`lockstep_sample`. Also returns per-response counts: ``extrap_tokens`` (positions extrapolated),
    ``extrap_changed`` (of those, where the token differs from the driver's draw) and ``extrap_dlogp_sum``
    (Δlog p summed over extrapolated positions)."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos_ids = eos_token_ids(rl_model, tokenizer)
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"  # an over-long prompt loses its beginning, never the question's end
    enc = tokenizer([p.text for p in prompts], return_tensors="pt", padding=True, add_special_tokens=False,
                    truncation=max_prompt_len is not None, max_length=max_prompt_len)
    prompt_ids = enc["input_ids"].repeat_interleave(group_size, 0)  # [N, P]
    prompt_mask = enc["attention_mask"].repeat_interleave(group_size, 0)  # [N, P]
    n, p = prompt_ids.shape
    models = [m for m in (rl_model, base_model) if m is not None]
    was_training = [m.training for m in models]
    for m in models:
        m.eval()
    outs = [
        lockstep_sample(rl_model, base_model, prompt_ids[s : s + batch_size], prompt_mask[s : s + batch_size],
                        max_new_tokens=max_new_tokens, eos_ids=eos_ids, pad_id=pad_id, temperature=temperature,
                        top_p=top_p, cfg=cfg, generator=generator)
        for s in range(0, n, batch_size)
    ]
    for m, training in zip(models, was_training):
        m.train(training)

    t = max(o.responses.shape[1] for o in outs)

    def cat(name: str, fill) -> torch.Tensor:  # [N, t], chunks right-padded to the longest
        parts = [getattr(o, name) for o in outs]
        return torch.cat([torch.nn.functional.pad(x, (0, t - x.shape[1]), value=fill) for x in parts])

    responses, response_mask = cat("responses", pad_id), cat("response_mask", 0)
    flags, dlogp = cat("extrapolated", False), cat("dlogp", 0.0)
    changed = flags & (responses != cat("proposed", pad_id))
    texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
    rollouts = Rollouts(
        input_ids=torch.cat([prompt_ids, responses], 1), attention_mask=torch.cat([prompt_mask, response_mask], 1),
        response_mask=response_mask, prompt_len=p, group_ids=torch.arange(len(prompts)).repeat_interleave(group_size),
        texts=texts, truncated=torch.cat([o.truncated for o in outs]), prompts=prompts,
    )
    stats = {
        "extrap_tokens": flags.sum(-1).tolist(),
        "extrap_changed": changed.sum(-1).tolist(),
        "extrap_dlogp_sum": (dlogp * flags).sum(-1).tolist(),
    }
    return rollouts, stats
