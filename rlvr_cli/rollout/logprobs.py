"""Per-token statistics of a policy on given sequences, computed in chunks of tokens.

The model body runs once per micro-batch; the LM head, the softmax over the vocabulary and every
per-token statistic run over ``chunk_size`` valid response tokens at a time, so no [tokens, V] fp32
tensor for the whole micro-batch ever exists. With gradients, each chunk can be wrapped in activation
checkpointing so its logits are recomputed in backward instead of being kept (``checkpoint=True``).
Statistics that are only logged are computed under no_grad.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

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


PACKING = ("off", "block_mask", "varlen", "prefix", "prefix_block", "auto")
# ``auto`` leaves the padded forward only where another layout cuts its estimated cost
# (``forward_cost``) by at least this share: building a mask and gathering cost something too, so a
# batch with little padding runs faster padded
AUTO_MIN_SAVING = 0.2
# ``prefix_block`` tries units of up to these multiples of the longest row's tokens
UNIT_CAPS = (1, 2, 4, 8)


def shareable_cache(model):
    """An empty KV cache (``DynamicCache``) whose rows can be indexed out and dropped, or None when some
    layer keeps another kind of state (linear attention, hybrid models): only attention caches let
    rows share a prompt's keys and values."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    cache = DynamicCache(config=model.config)
    if all(type(layer) in (DynamicLayer, DynamicSlidingWindowLayer) for layer in cache.layers):
        return cache
    return None


def shared_prompts(input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The distinct prompts of a batch and the prompt of each row: (ids [u, P], mask [u, P]), row_of [n].
    Two rows share a prompt when their ids and mask agree over the P prompt columns (GRPO's G rows
    of one problem do)."""
    p = prompt_len
    keyed = torch.cat([input_ids[:, :p], attention_mask[:, :p].to(input_ids.dtype)], 1)  # [n, 2P]
    distinct, row_of = torch.unique(keyed, dim=0, return_inverse=True)  # [u, 2P], [n]
    return distinct[:, :p], distinct[:, p:].to(attention_mask.dtype), row_of


@dataclass
class Packed:
    """The rows of a micro-batch without padding, in ``bins`` of ``C`` tokens. A row's valid tokens
    (prompt, then response up to its end, less the last token, whose hidden state predicts nothing)
    form one unit; with shared prompts, a unit is one prompt followed by the responses of several of
    its rows, each response attending to the prompt and to itself. Positions restart at 0 for every
    unit, and each response continues its prompt's positions.

    ``segments`` [bins, C] is the unit of each place (the row itself without sharing; -1 on the
    padding left at a bin's end); ``rows`` [bins, C] the row of a response place (-1 on prompt and
    padding places); ``gather`` [M] the flat places (b·C + j) of the hidden states that predict the
    valid response tokens, in the row-major order of ``response_mask`` (the order the padded path uses)."""

    input_ids: torch.Tensor  # [bins, C]
    position_ids: torch.Tensor  # [bins, C]
    segments: torch.Tensor  # [bins, C] long
    rows: torch.Tensor  # [bins, C] long
    gather: torch.Tensor  # [M] long

    def block_mask(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """[bins, 1, C, C] causal attention within a unit, a response seeing its prompt and itself only
        (padding attends to padding, so no query is fully masked). bool (True = attend) for ``sdpa``;
        an additive float mask of ``dtype`` (0 / finfo.min) for ``eager``, which reads a bool mask wrongly."""
        seg, rows = self.segments, self.rows
        c = seg.shape[1]
        causal = torch.ones(c, c, dtype=torch.bool, device=seg.device).tril()
        own = (rows[:, None, :] == -1) | (rows[:, :, None] == rows[:, None, :])  # key is a prompt, or the query's row
        allowed = ((seg[:, :, None] == seg[:, None, :]) & own & causal)[:, None]  # [bins, 1, C, C]
        if dtype is None or dtype == torch.bool:
            return allowed
        zero = torch.zeros((), dtype=dtype, device=seg.device)
        return torch.where(allowed, zero, torch.tensor(torch.finfo(dtype).min, dtype=dtype, device=seg.device))

    def attention_pairs(self) -> int:
        """Query-key pairs a dense-mask attention computes over the bins: bins · C²."""
        bins, c = self.input_ids.shape
        return bins * c * c


def _units(p_len: list[int], feed: list[int], share: torch.Tensor | None, cap: int | None) -> list[list[int]]:
    """The rows of each packing unit: one row each, or (``share``: the prompt of each row) the rows of one
    prompt together, split where a unit would pass ``cap`` tokens (default: the longest single row)."""
    if share is None:
        return [[r] for r in range(len(p_len))]
    limit = cap or max(p + f for p, f in zip(p_len, feed))
    groups: dict[int, list[int]] = {}
    for r, u in enumerate(share.tolist()):
        groups.setdefault(u, []).append(r)
    units = []
    for rows in groups.values():
        cur: list[int] = []
        used = 0
        for r in rows:
            if cur and used + feed[r] > limit:
                units.append(cur)
                cur = []
            if not cur:
                used = p_len[r]
            cur.append(r)
            used += feed[r]
        units.append(cur)
    return units


def pack_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor,
              prompt_len: int, one_bin: bool = False, share: torch.Tensor | None = None,
              cap: int | None = None) -> Packed:
    """Pack a left-padded prompt + right-padded response batch ([n, P+T], response_mask [n, T]).

    Units (a row; or with ``share`` [n], the prompt of each row as ``shared_prompts`` gives it, one
    prompt and the responses of its rows, at most ``cap`` tokens each) go to bins first-fit in
    decreasing length (the bin size C is the longest unit, so without sharing attention within a bin
    costs no more than one padded row), or all into one bin (``one_bin``: varlen attention, whose cost
    is Σ len² whatever the bin; rows only). All on the inputs' device; one host sync for the lengths."""
    if one_bin and share is not None:
        raise ValueError("one_bin packs rows delimited by their positions alone: prompts cannot be shared there")
    n, t = response_mask.shape
    dev = input_ids.device
    prompt_valid = attention_mask[:, :prompt_len].bool()  # [n, P]
    resp_len = response_mask.sum(-1).long()  # [n]
    p_len = prompt_valid.sum(-1).long()  # [n]
    feed = (resp_len - 1).clamp(min=0)  # [n] response tokens a row feeds in (not its last)
    p_host, feed_host = p_len.tolist(), feed.tolist()
    units = _units(p_host, feed_host, share, cap)
    lengths = [p_host[u[0]] + sum(feed_host[r] for r in u) for u in units]
    cap = sum(lengths) if one_bin else max(lengths)
    bins: list[int] = []  # tokens used per bin
    base = [0] * len(units)  # flat place of each unit's first token
    for i in sorted(range(len(units)), key=lambda u: -lengths[u]):
        for b, used in enumerate(bins):
            if used + lengths[i] <= cap:
                base[i], bins[b] = b * cap + used, used + lengths[i]
                break
        else:
            base[i] = len(bins) * cap
            bins.append(lengths[i])
    unit_of, skip = [0] * n, [0] * n  # each row's unit, and the unit's response tokens before the row's
    for i, rows in enumerate(units):
        acc = 0
        for r in rows:
            unit_of[r], skip[r], acc = i, acc, acc + feed_host[r]
    places = len(bins) * cap
    lead = torch.tensor([u[0] for u in units], device=dev)  # the row whose prompt a unit carries
    unit_t, skip_t = torch.tensor(unit_of, device=dev), torch.tensor(skip, device=dev)
    base_t = torch.tensor(base, device=dev)
    start = base_t[unit_t] + p_len + skip_t  # [n] the place of each row's response token 0
    # prompt tokens, once per unit
    pu, pc = prompt_valid[lead].nonzero(as_tuple=True)
    p_pos = (prompt_valid[lead].long().cumsum(-1) - 1)[pu, pc]
    p_flat = base_t[pu] + p_pos
    # response tokens fed in: all but each row's last
    ks = torch.arange(t, device=dev)
    rr, kk = (response_mask.bool() & (ks[None] < feed[:, None])).nonzero(as_tuple=True)
    r_flat = start[rr] + kk
    ids = torch.zeros(places, dtype=input_ids.dtype, device=dev)
    positions = torch.zeros(places, dtype=torch.long, device=dev)
    segments = torch.full((places,), -1, dtype=torch.long, device=dev)
    rows_of = torch.full((places,), -1, dtype=torch.long, device=dev)
    ids[p_flat], ids[r_flat] = input_ids[lead[pu], pc], input_ids[rr, prompt_len + kk]
    positions[p_flat], positions[r_flat] = p_pos, p_len[rr] + kk
    segments[p_flat], segments[r_flat] = pu, unit_t[rr]
    rows_of[r_flat] = rr
    # response token k is predicted at the place of token k-1, token 0 at the prompt's last token
    gr, gk = response_mask.bool().nonzero(as_tuple=True)  # row-major, as the padded path's order
    gather = start[gr] - 1 + gk - (gk == 0).long() * skip_t[gr]
    view = (len(bins), cap)
    return Packed(ids.view(view), positions.view(view), segments.view(view), rows_of.view(view), gather)


def _prefix_hidden(model, body, input_ids, attention_mask, prompt_len, shared) -> torch.Tensor:
    """[n, T, H] hidden states that predict the response tokens, with each distinct prompt run once:
    its keys and values are indexed out to its rows (a differentiable gather: the rows' gradients
    add up on the one prompt forward) and the responses run on top of them, positions continuing
    after the prompt. The same causal attention as the padded forward, over u·P + n·(T-1) slots."""
    p = prompt_len
    u_ids, u_mask, row_of = shared
    cache = shareable_cache(model)
    if cache is None:
        raise ValueError(f"packing='prefix': {type(model).__name__} keeps a cache whose rows cannot share a prompt")
    prompt_h = body(input_ids=u_ids, attention_mask=u_mask, position_ids=position_ids_from_mask(u_mask),
                    past_key_values=cache, use_cache=True).last_hidden_state  # [u, P, H]
    first = prompt_h[row_of, -1:]  # [n, 1, H]: the last prompt token predicts response token 0
    if input_ids.shape[1] - p <= 1:
        return first
    cache.batch_select_indices(row_of)  # [u, ...] -> [n, ...]
    resp_h = body(input_ids=input_ids[:, p:-1], attention_mask=attention_mask[:, :-1],
                  position_ids=position_ids_from_mask(attention_mask[:, :-1])[:, p:], past_key_values=cache,
                  use_cache=True).last_hidden_state  # [n, T-1, H]
    return torch.cat([first, resp_h], 1)


def forward_cost(config, slots: int, pairs: int) -> float:
    """Rough multiply-adds of a body forward over ``slots`` token places whose attention computes
    ``pairs`` query-key pairs: per token the projections and the MLP (≈ 4H² + 3HI per layer), per pair
    a score and a weighted value (2H per layer). Only the ratio between layouts of one batch matters."""
    cfg = getattr(config, "text_config", None) or config
    h = getattr(cfg, "hidden_size", None) or 1024
    inter = getattr(cfg, "intermediate_size", None) or 4 * h
    return slots * (4 * h * h + 3 * h * inter) + pairs * 2 * h


def _shared_pack(config, input_ids, attention_mask, response_mask, prompt_len, row_of) -> Packed:
    """``prefix_block``: the packing with shared prompts whose units hold up to 1, 2, 4 or 8 times the
    longest row's tokens, whichever ``forward_cost`` finds cheapest (longer units share a prompt among
    more rows but cost C² attention per bin)."""
    longest = int((attention_mask[:, :prompt_len].sum(-1) + (response_mask.sum(-1) - 1).clamp(min=0)).max())
    best, best_cost = None, float("inf")
    for k in UNIT_CAPS:
        packed = pack_rows(input_ids, attention_mask, response_mask, prompt_len, share=row_of, cap=k * longest)
        cost = forward_cost(config, packed.input_ids.numel(), packed.attention_pairs())
        if cost < best_cost:
            best, best_cost = packed, cost
    return best


def _body_hidden(model, body, input_ids, attention_mask, response_mask, prompt_len, packing,
                 info: dict | None = None, share_prompts: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states [M, H] that predict the valid response tokens (row-major), and a spare [1, H]
    row for dummy chunks: the padded forward, a packed one or a prompt-sharing one (``packing``).
    ``info`` gets the mode used and the token slots the forward ran over."""
    n, total = input_ids.shape
    t = total - prompt_len
    layouts: dict[str, tuple[int, int, Packed | tuple | None]] = {"off": (n * (total - 1), n * (total - 1) ** 2, None)}
    if packing in ("block_mask", "varlen", "auto"):
        packed = pack_rows(input_ids, attention_mask, response_mask, prompt_len, one_bin=packing == "varlen")
        layouts[packing if packing == "varlen" else "block_mask"] = (packed.input_ids.numel(), packed.attention_pairs(), packed)
    if packing in ("prefix", "prefix_block", "auto"):
        shared = shared_prompts(input_ids, attention_mask, prompt_len)
        if packing in ("prefix_block", "auto"):
            packed = _shared_pack(model.config, input_ids, attention_mask, response_mask, prompt_len, shared[2])
            layouts["prefix_block"] = (packed.input_ids.numel(), packed.attention_pairs(), packed)
        if packing == "prefix" or (packing == "auto" and share_prompts):
            u, p = shared[0].shape
            layouts["prefix"] = (u * p + n * (t - 1), u * p * p + n * (t - 1) * (total - 1), shared)
    if packing == "auto":  # the cheapest layout, if it saves enough over the padded one
        cost = {m: forward_cost(model.config, slots, pairs) for m, (slots, pairs, _) in layouts.items()}
        best = min(cost, key=cost.__getitem__)
        packing = best if cost[best] <= (1 - AUTO_MIN_SAVING) * cost["off"] else "off"
    slots, _, layout = layouts[packing]
    if info is not None:
        info.update(mode=packing, slots=slots)
    if packing in ("off", "prefix"):
        if packing == "prefix":
            hidden = _prefix_hidden(model, body, input_ids, attention_mask, prompt_len, layout)  # [n, T, H]
        else:  # the body sees all but the last token: hidden state at position j predicts token j+1
            hidden = body(
                input_ids=input_ids[:, :-1],
                attention_mask=attention_mask[:, :-1],
                position_ids=position_ids_from_mask(attention_mask[:, :-1]),
                use_cache=False,
            ).last_hidden_state[:, prompt_len - 1 :]  # [n, T, H]
        idx = response_mask.reshape(-1).bool().nonzero(as_tuple=True)[0]  # [M] valid tokens only
        flat = hidden.reshape(n * t, -1)
        return flat[idx], flat[:1]
    if packing == "varlen":  # flash-attention: restarting position_ids alone delimit the rows
        mask = None
    else:  # sdpa / eager (CPU and the rest): an explicit block causal mask
        eager = getattr(model.config, "_attn_implementation", "sdpa") == "eager"
        mask = layout.block_mask(next(model.parameters()).dtype if eager else torch.bool)
    hidden = body(input_ids=layout.input_ids, attention_mask=mask, position_ids=layout.position_ids,
                  use_cache=False).last_hidden_state  # [bins, C, H]
    flat = hidden.reshape(-1, hidden.shape[-1])
    return flat[layout.gather], flat[:1]


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


def top1_prob(logits: torch.Tensor) -> torch.Tensor:
    """The top token's probability, max softmax(z) = exp(max z − logsumexp z). [..., V] -> [...]"""
    return torch.exp(logits.max(-1).values - torch.logsumexp(logits, -1))


BUILTIN_FNS: dict[str, TokenFn] = {
    "logprobs": token_logprob,
    "entropy": lambda logits, _targets: entropy_from_logits(logits),
    "top1_prob": lambda logits, _targets: top1_prob(logits),
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
    packing: str = "off",
    info: dict | None = None,
    share_prompts: bool = False,
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
        packing: ``off`` — the padded [n, P+T] forward; ``block_mask`` — rows packed without padding
            into bins with a block-diagonal causal mask (exact with ``sdpa`` and ``eager``);
            ``varlen`` — all rows in one sequence delimited by restarting ``position_ids`` alone
            (``flash_attention_2``'s varlen path; elsewhere the rows would attend to each other);
            ``prefix`` — each distinct prompt runs once and its rows' responses run on its keys and
            values (GRPO's G responses to one problem share it): u·P + n·(T-1) slots, the padded
            forward's attention with any implementation; two body calls, so not under ZeRO-3 (ranks must gather alike) nor with
            activation checkpointing (its recompute would append to the cache twice);
            ``prefix_block`` — the block mask with prompts shared: a unit is one prompt followed by
            the responses of several of its rows, each attending to the prompt and to itself (one
            body call, so also under ZeRO-3 and activation checkpointing); units of up to 1, 2, 4 or 8
            times the longest row, the cheapest by ``forward_cost``;
            ``auto`` — the cheapest layout by ``forward_cost`` (token slots and attention pairs):
            ``block_mask``, ``prefix_block``, or ``prefix`` where ``share_prompts``, where it saves
            ≥ 20% of the padded forward's cost, else ``off``.
        info: if given, filled with the ``mode`` used and the token ``slots`` of the body's forward.
        share_prompts: whether ``auto`` may choose ``prefix``.
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

    if packing not in PACKING:
        raise ValueError(f"unknown packing {packing!r}; valid: {', '.join(PACKING)}")
    n, total = input_ids.shape
    t = total - prompt_len
    body = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    lm_head = model.get_output_embeddings()
    idx = response_mask.reshape(-1).bool().nonzero(as_tuple=True)[0]  # [M] valid tokens only
    h_valid, dummy_h = _body_hidden(model, body, input_ids, attention_mask, response_mask, prompt_len, packing, info,
                                    share_prompts)
    y_valid = input_ids[:, prompt_len:].reshape(-1)[idx]  # [M]

    pieces: list[list[torch.Tensor]] = [[] for _ in names]
    starts = list(range(0, idx.numel(), chunk_size))
    n_dummy = max(min_chunks, 1 if grad_names else 0) - len(starts)
    dummy_y = input_ids[:1, prompt_len]  # [1]
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
