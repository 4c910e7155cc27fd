"""Sampling G responses per prompt with HF ``generate`` (KV cache, temperature, top-p, stop at EOS)."""
from __future__ import annotations

import torch
from transformers import GenerationConfig

from rlvr_cli.types import Prompt, Rollouts


def eos_token_ids(model, tokenizer) -> list[int]:
    """All ids that end a response: the generation config's EOS (int or list) and the tokenizer's."""
    ids: list[int] = []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (gen_eos, tokenizer.eos_token_id):
        if value is None:
            continue
        ids.extend(value if isinstance(value, (list, tuple)) else [value])
    return list(dict.fromkeys(int(i) for i in ids))


def sampling_kwargs(temperature: float, top_p: float, max_new_tokens: int, eos_ids: list[int], pad_id: int):
    """A complete ``GenerationConfig`` so a model's own defaults (e.g. Qwen's top_k=20) never leak in.

    ``top_k=0`` switches top-k off, as verl's ``top_k=-1``: transformers 5 reads ``None`` as its default
    of 50, which would sample from a truncated distribution while the loss scores the full one."""
    greedy = temperature <= 0
    return GenerationConfig(
        do_sample=not greedy,
        temperature=None if greedy else float(temperature),
        top_p=None if greedy else float(top_p),
        top_k=None if greedy else 0,
        max_new_tokens=int(max_new_tokens),
        eos_token_id=eos_ids,
        pad_token_id=pad_id,
    )


def response_mask_from_ids(responses: torch.Tensor, eos_ids: list[int], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, T] ids -> (mask [n, T], truncated [n]): valid up to and including the first EOS."""
    is_eos = torch.isin(responses, torch.tensor(eos_ids, device=responses.device))
    after_eos = (is_eos.cumsum(-1) - is_eos.long()) > 0  # strictly after the first EOS
    mask = (~after_eos).long()
    truncated = ~is_eos.any(-1)
    return mask, truncated


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
) -> Rollouts:
    """B prompts -> B*G responses in prompt-major order.

    Prompts are tokenised once with left padding to a common length P; sampling runs in chunks of
    ``batch_size`` sequences; responses are right-padded to the longest one (T). Randomness comes from
    torch's global generator, which the trainer seeds and checkpoints.
    """
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos_ids = eos_token_ids(model, tokenizer)
    gen_cfg = sampling_kwargs(temperature, top_p, max_new_tokens, eos_ids, pad_id)
    tokenizer.padding_side = "left"
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
    for start in range(0, n, batch_size):
        out = model.generate(
            input_ids=prompt_ids[start : start + batch_size].to(device),
            attention_mask=prompt_mask[start : start + batch_size].to(device),
            generation_config=gen_cfg,
        )
        chunks.append(out[:, p:].cpu())  # [b, t_chunk]
    model.train(was_training)

    t = max(c.shape[1] for c in chunks)
    responses = torch.full((n, t), pad_id, dtype=torch.long)
    row = 0
    for c in chunks:
        responses[row : row + c.shape[0], : c.shape[1]] = c
        row += c.shape[0]
    response_mask, truncated = response_mask_from_ids(responses, eos_ids, pad_id)
    responses = torch.where(response_mask.bool(), responses, torch.full_like(responses, pad_id))
    texts = tokenizer.batch_decode(responses.masked_fill(~response_mask.bool(), pad_id), skip_special_tokens=True)
    return Rollouts(
        input_ids=torch.cat([prompt_ids, responses], 1),
        attention_mask=torch.cat([prompt_mask, response_mask], 1),
        response_mask=response_mask,
        prompt_len=p,
        group_ids=torch.arange(len(prompts)).repeat_interleave(group_size),
        texts=texts,
        truncated=truncated,
        prompts=prompts,
    )
