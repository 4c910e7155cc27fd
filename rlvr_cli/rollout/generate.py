"""Sampling G responses per prompt with HF ``generate`` (KV cache, temperature, top-p, stop at EOS)."""
from __future__ import annotations

import contextlib

import torch
from transformers import GenerationConfig

from rlvr_cli.rollout.stopping import StopCriteria, resolve_stop, response_mask
from rlvr_cli.types import Prompt, Rollouts


def eos_token_ids(model, tokenizer) -> list[int]:
    """All ids that end a response by default: the generation config's EOS (int or list) and the tokenizer's."""
    return list(resolve_stop(model, tokenizer).token_ids)


# Every field of GenerationConfig that changes the sampling distribution, at its neutral value. Fields
# left None are filled from the model's own generation_config (Qwen ships repetition_penalty=1.05,
# top_k=20, top_p=0.8; others min_p, no_repeat_ngram_size, ...), so each is set explicitly, and
# ``plain_generation_config`` also hides the model's config while sampling.
_NEUTRAL = dict(
    top_k=0, min_p=None, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0, repetition_penalty=1.0,
    encoder_repetition_penalty=1.0, length_penalty=1.0, no_repeat_ngram_size=0, encoder_no_repeat_ngram_size=0,
    bad_words_ids=None, suppress_tokens=None, begin_suppress_tokens=None, forced_bos_token_id=None,
    forced_eos_token_id=None, sequence_bias=None, min_length=0, min_new_tokens=None, renormalize_logits=False,
    exponential_decay_length_penalty=None, guidance_scale=None, watermarking_config=None, num_beams=1,
    num_return_sequences=1, remove_invalid_values=False, use_cache=True,
)


def sampling_kwargs(temperature: float, top_p: float, max_new_tokens: int, eos_ids: list[int], pad_id: int,
                    stop_strings: tuple[str, ...] = ()):
    """A complete ``GenerationConfig``: plain temperature/top-p sampling of the distribution the loss
    scores, nothing else (no top-k: ``top_k=0`` is off, as verl's ``top_k=-1``; transformers reads
    ``None`` as its default of 50)."""
    greedy = temperature <= 0
    return GenerationConfig(
        **_NEUTRAL,
        do_sample=not greedy,
        temperature=None if greedy else float(temperature),
        top_p=None if greedy else float(top_p),
        max_new_tokens=int(max_new_tokens),
        eos_token_id=list(eos_ids),
        pad_token_id=pad_id,
        stop_strings=list(stop_strings) or None,
    )


@contextlib.contextmanager
def plain_generation_config(model):
    """Sample with a blank ``model.generation_config``, so nothing the checkpoint ships (min_p,
    repetition_penalty, ...) can fill a field of ours; restored afterwards (it is saved with the model)."""
    saved = getattr(model, "generation_config", None)
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = saved


@torch.no_grad()
def generate_rollouts(
    model,
    tokenizer,
    prompts: list[Prompt],
    group_size: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 64,
    max_prompt_len: int | None = None,
    *,
    stop: StopCriteria | None = None,
) -> Rollouts:
    """B prompts -> B*G responses in prompt-major order.

    Prompts are tokenised once with left padding to a common length P; sampling runs in chunks of
    ``batch_size`` sequences; responses are right-padded to the longest one (T) and end where ``stop``
    says (default: the model's and tokenizer's EOS). Randomness comes from torch's global generator,
    which the trainer seeds and checkpoints. ``max_prompt_len`` cuts longer prompts from the left
    (the end, with the question and the assistant header, is kept); training drops such prompts at
    load time instead (``rollout.overlong_prompts``).
    """
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stop = stop or resolve_stop(model, tokenizer)
    gen_cfg = sampling_kwargs(temperature, top_p, max_new_tokens, stop.token_ids, pad_id, stop.strings)
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    enc = tokenizer(
        [p.text for p in prompts],
        return_tensors="pt",
        padding=True,
        add_special_tokens=False,
        truncation=max_prompt_len is not None,
        max_length=max_prompt_len,
    )
    device = next(model.parameters()).device
    prompt_ids = enc["input_ids"].repeat_interleave(group_size, 0)  # [N, P]
    prompt_mask = enc["attention_mask"].repeat_interleave(group_size, 0)  # [N, P]
    n, p = prompt_ids.shape

    was_training = model.training
    model.eval()
    chunks = []
    # inference mode (no version counters, no autograd bookkeeping: ~15% faster sampling of the tiny
    # model on CPU); only the token ids leave it, copied into ordinary tensors below
    with plain_generation_config(model), torch.inference_mode():
        for start in range(0, n, batch_size):
            out = model.generate(
                input_ids=prompt_ids[start : start + batch_size].to(device),
                attention_mask=prompt_mask[start : start + batch_size].to(device),
                generation_config=gen_cfg,
                tokenizer=tokenizer if stop.strings else None,
            )
            chunks.append(out[:, p:].cpu())  # [b, t_chunk]
    model.train(was_training)

    t = max(c.shape[1] for c in chunks)
    responses = torch.full((n, t), pad_id, dtype=torch.long)
    row = 0
    for c in chunks:
        responses[row : row + c.shape[0], : c.shape[1]] = c
        row += c.shape[0]
    mask, truncated = response_mask(responses, stop, tokenizer)
    responses = torch.where(mask.bool(), responses, torch.full_like(responses, pad_id))
    texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
    return Rollouts(
        input_ids=torch.cat([prompt_ids, responses], 1),
        attention_mask=torch.cat([prompt_mask, mask], 1),
        response_mask=mask,
        prompt_len=p,
        group_ids=torch.arange(len(prompts)).repeat_interleave(group_size),
        texts=texts,
        truncated=truncated,
        prompts=prompts,
    )
