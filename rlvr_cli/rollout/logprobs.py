"""Per-token statistics of a policy on given sequences, computed in chunks of tokens.

The model body runs once per micro-batch; the LM head, the softmax over the vocabulary and every
per-token statistic run over ``chunk_size`` valid response tokens at a time, so no [tokens, V] fp32
tensor for the whole micro-batch ever exists. With gradients, each chunk can be wrapped in activation
checkpointing so its logits are recomputed in backward instead of being kept (``checkpoint=True``).
Statistics that are only logged are computed under no_grad.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch.utils.checkpoint import checkpoint as activation_checkpoint

# A per-token statistic of the (temperature-scaled, fp32) logits: (logits [C, V], targets [C]) -> [C]
TokenFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """H = logsumexp(z) − Σ softmax(z)·z over the last dim (verl ``entropy_from_logits``). [..., V] -> [...]"""
    lse = torch.logsumexp(logits, dim=-1)
    return lse - (torch.softmax(logits, dim=-1) * logits).sum(-1)


def token_logprob(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(z)[y] without materialising log_softmax. logits [C, V], targets [C] -> [C]."""
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as HF ``generate`` builds them, so scoring matches sampling."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _chunk_stats(
    hidden: torch.Tensor,
    targets: torch.Tensor,
    lm_head: torch.nn.Module,
    temperature: float,
    fns: dict[str, TokenFn],
    grad_names: frozenset[str],
) -> list[torch.Tensor]:
    """Statistics of one chunk: hidden [C, H], targets [C] -> one [C] tensor per name in ``fns``."""
    logits = lm_head(hidden).float() / temperature  # [C, V]: the only vocabulary-sized tensor
    out = []
    for name, fn in fns.items():
        if name in grad_names:
            out.append(fn(logits, targets))
        else:
            with torch.no_grad():
                out.append(fn(logits.detach(), targets))
    return out


BUILTIN_FNS: dict[str, TokenFn] = {
    "logprobs": token_logprob,
    "entropy": lambda logits, _targets: entropy_from_logits(logits),
}


def policy_token_stats(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    prompt_len: int,
    temperature: float = 1.0,
    stats: Iterable[str] = ("logprobs",),
    grad_stats: Iterable[str] = (),
    extra_fns: dict[str, TokenFn] | None = None,
    chunk_size: int = 1024,
    checkpoint: bool = False,
    min_chunks: int = 0,
) -> dict[str, torch.Tensor]:
    """Token statistics of the responses under ``model``.

    Args:
        input_ids, attention_mask: [n, P+T] left-padded prompt + right-padded response.
        response_mask: [n, T]; statistics are computed at valid response tokens only (0 elsewhere).
        temperature: logits are divided by it first, so statistics refer to the sampling distribution.
        stats: names from ``logprobs``, ``entropy`` and the keys of ``extra_fns``.
        grad_stats: the subset that must carry gradients (everything else is computed under no_grad).
        min_chunks: run the LM head at least this many times (on a dummy row when there are fewer
            chunks), so every data-parallel rank makes the same number of calls: under ZeRO-3 each
            call gathers the head's weights collectively. The dummy results enter with weight 0, which
            also keeps the output graph-connected when there is no valid token.
    Returns:
        {name: [n, T] float32}.
    """
    fns = {**BUILTIN_FNS, **(extra_fns or {})}
    names = list(dict.fromkeys(stats))
    unknown = [s for s in names if s not in fns]
    if unknown:
        raise ValueError(f"unknown token statistic(s) {unknown}; known: {sorted(fns)}")
    fns = {n: fns[n] for n in names}
    grad_names = frozenset(grad_stats) & set(names) if torch.is_grad_enabled() else frozenset()

    n, total = input_ids.shape
    t = total - prompt_len
    body = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    lm_head = model.get_output_embeddings()
    # The body sees all but the last token; hidden state at position j predicts token j+1.
    hidden = body(
        input_ids=input_ids[:, :-1],
        attention_mask=attention_mask[:, :-1],
        position_ids=position_ids_from_mask(attention_mask[:, :-1]),
        use_cache=False,
    ).last_hidden_state[:, prompt_len - 1 :]  # [n, T, H]
    flat_mask = response_mask.reshape(-1).bool()  # [n*T]
    idx = flat_mask.nonzero(as_tuple=True)[0]  # [M] valid tokens only: padding costs no LM-head work
    h_valid = hidden.reshape(n * t, -1)[idx]  # [M, H]
    y_valid = input_ids[:, prompt_len:].reshape(-1)[idx]  # [M]

    pieces: list[list[torch.Tensor]] = [[] for _ in names]
    starts = list(range(0, idx.numel(), chunk_size))
    n_dummy = max(min_chunks, 1 if grad_names else 0) - len(starts)
    dummy_h, dummy_y = hidden[:1, 0], input_ids[:1, prompt_len]  # [1, H], [1]
    dummies: list[torch.Tensor] = []
    for start in starts + [-1] * max(0, n_dummy):
        if start < 0:
            h_c, y_c = dummy_h, dummy_y
        else:
            h_c, y_c = h_valid[start : start + chunk_size], y_valid[start : start + chunk_size]
        if checkpoint and grad_names:
            outs = activation_checkpoint(
                _chunk_stats, h_c, y_c, lm_head, temperature, fns, grad_names, use_reentrant=False
            )
        else:
            outs = _chunk_stats(h_c, y_c, lm_head, temperature, fns, grad_names)
        if start < 0:
            dummies.extend(o.sum() for o, name in zip(outs, names) if name in grad_names)
            continue
        for acc, o in zip(pieces, outs):
            acc.append(o)

    result = {}
    for name, acc in zip(names, pieces):
        values = torch.cat(acc) if acc else h_valid.new_zeros(0, dtype=torch.float32)
        full = values.new_zeros(n * t).index_put((idx,), values)  # differentiable scatter
        result[name] = full.view(n, t)
    if dummies:  # weight 0: same values, but every parameter is in the graph
        first = next(n for n in names if n in grad_names)
        result[first] = result[first] + 0.0 * torch.stack(dummies).sum()
    return result
