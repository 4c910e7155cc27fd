"""Where a response ends: EOS ids, extra stop tokens and stop strings, one rule for every engine.

A base model under a chat template ends a turn with ``<|im_end|>`` but its generation config names
only ``<|endoftext|>`` as EOS: without the extra stop token it writes past the end of its answer.
``StopCriteria`` collects every id that ends a response (the model's EOS, the tokenizer's, the model
config's ``stop_tokens`` and ``rollout.stop_token_ids``) and the stop strings (``rollout.stop``);
``response_mask`` turns sampled ids into the valid-token mask the loss uses. The engine only has to
stop early (HF ``generate``: ``eos_token_id`` + ``stop_strings``); the mask is the source of truth.

A response keeps the token that ends it (the stop token, or the token that completes a stop
string): it is the action that ended the episode and gets its log-prob in the loss, as EOS does.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from rlvr_cli.errors import UserError


@dataclass(frozen=True)
class StopCriteria:
    token_ids: tuple[int, ...]  # any of these ends a response (kept in it)
    strings: tuple[str, ...] = ()  # a response ends at the token that completes one of these (kept)


def _token_id(tokenizer, token: int | str) -> int:
    """An id as given, or the id of a token written as its string (``<|im_end|>``): one token only."""
    if isinstance(token, int):
        return token
    ids = tokenizer.convert_tokens_to_ids([str(token)])
    unk = getattr(tokenizer, "unk_token_id", None)
    if not ids or ids[0] is None or (ids[0] == unk and token != getattr(tokenizer, "unk_token", None)):
        raise UserError(f"stop token {token!r} is not a single token of this tokenizer; give its id, or use rollout.stop "
                        "for a string")
    return int(ids[0])


def resolve_stop(model, tokenizer, stop_tokens: Iterable[int | str] = (), stop_strings: Iterable[str] = ()) -> StopCriteria:
    """The generation config's EOS (int or list), the tokenizer's EOS, then ``stop_tokens`` (ids or
    token strings), de-duplicated in that order; ``stop_strings`` as given (empty ones dropped)."""
    ids: list[int] = []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (gen_eos, tokenizer.eos_token_id):
        if value is not None:
            ids.extend(value if isinstance(value, (list, tuple)) else [value])
    ids.extend(_token_id(tokenizer, t) for t in stop_tokens or ())
    strings = tuple(dict.fromkeys(s for s in (stop_strings or ()) if s))
    return StopCriteria(tuple(dict.fromkeys(int(i) for i in ids)), strings)


def _end_of_first_stop_string(ids: list[int], tokenizer, strings: tuple[str, ...]) -> int | None:
    """Tokens up to and including the one that completes the first stop string, or None. Binary
    search over prefix lengths: O(log T) decodes per response, not T."""
    def hit(k: int) -> bool:
        text = tokenizer.decode(ids[:k], skip_special_tokens=False)
        return any(s in text for s in strings)

    if not ids or not hit(len(ids)):
        return None
    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if hit(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def response_mask(responses: torch.Tensor, stop: StopCriteria, tokenizer=None) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, T] sampled ids -> (mask [n, T] long, truncated [n] bool): valid up to and including the
    first stop token or the token that completes the first stop string, whichever comes first;
    ``truncated`` when neither occurs (the response hit the token budget)."""
    is_stop = torch.isin(responses, torch.tensor(stop.token_ids, dtype=responses.dtype, device=responses.device))
    after = (is_stop.cumsum(-1) - is_stop.long()) > 0  # strictly after the first stop token
    mask = (~after).long()
    ended = is_stop.any(-1)
    if stop.strings:
        if tokenizer is None:
            raise ValueError("stop strings need the tokenizer")
        for i in range(responses.shape[0]):
            valid = responses[i, : int(mask[i].sum())].tolist()
            end = _end_of_first_stop_string(valid, tokenizer, stop.strings)
            if end is not None:
                mask[i, end:] = 0
                ended[i] = True
    return mask, ~ended
