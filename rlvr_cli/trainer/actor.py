"""The actor: the policy under training and how it is run, beneath ``train_step``.

One owner for what sampling, scoring and the update share:
- **modes**: eval mode (no dropout, no gradient checkpointing) for sampling and no-grad scoring,
  train mode for every gradient forward, so ``model.gradient_checkpointing`` really recomputes
  activations in backward (HF checkpoints only in train mode);
- **precision**: the forwards run under the engine's ``Precision`` (bf16 autocast over fp32 master
  weights on one GPU; DeepSpeed's own bf16 mode otherwise);
- **micro-batching** with the same number of micro-batches on every rank, and **dummy rows** (one
  row, mask zeroed) where a rank has none, so ZeRO-3's collectives stay in step;
- **global normalisers**: each mini-batch's token / sequence totals summed over ranks, so the
  accumulated gradient is that of the whole mini-batch whatever the micro-batch size or rank count;
- **ZeRO-3 sampling**: the full weights gathered while generating.

The loop gives ``update`` a loss function for one micro-batch (the clipped objective with the
method's terms); everything else about running the model lives here.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from rlvr_cli import dist as ddp
from rlvr_cli.rollout import policy_token_stats
from rlvr_cli.rollout.logprobs import shareable_cache
from rlvr_cli.trainer.precision import Precision
from rlvr_cli.types import Rollouts, TrainBatch


def rows(batch: TrainBatch, idx: torch.Tensor) -> TrainBatch:
    """Rows ``idx`` of the batch, response length trimmed to their longest response. An empty ``idx``
    gives a dummy: row 0 with its response mask zeroed (it contributes nothing to any loss or
    normaliser, but its forward keeps every rank's collectives in step)."""
    dummy = idx.numel() == 0
    idx = torch.tensor([0]) if dummy else idx
    ro = batch.rollouts.select(torch.zeros(len(batch), dtype=torch.bool).index_fill_(0, idx, True))
    if dummy:
        ro.response_mask = torch.zeros_like(ro.response_mask)
    t = max(1, int(ro.response_mask.sum(-1).max()))
    p = ro.prompt_len
    ro.input_ids, ro.attention_mask, ro.response_mask = ro.input_ids[:, : p + t], ro.attention_mask[:, : p + t], ro.response_mask[:, :t]
    if ro.rollout_logprobs is not None:
        ro.rollout_logprobs = ro.rollout_logprobs[:, :t]
    return TrainBatch(
        rollouts=ro, scores=batch.scores[idx], advantages=batch.advantages[idx, :t] * ro.response_mask,
        token={k: v[idx, :t] for k, v in batch.token.items()},
        method={k: v[idx, :t] for k, v in batch.method.items()},
    )


def _scatter(out: dict[str, torch.Tensor], idx: torch.Tensor, stats: dict[str, torch.Tensor], shape) -> None:
    """Write a micro-batch's [len(idx), t] statistics into rows ``idx`` of the [N, T] CPU tensors of ``out``."""
    for k, v in stats.items():
        dest = out.setdefault(k, torch.zeros(shape, dtype=torch.float32))
        dest[idx, : v.shape[1]] = v.detach().float().cpu()


def split_rows(n: int, size: int) -> list[torch.Tensor]:
    return [torch.arange(i, min(i + size, n)) for i in range(0, n, size)]


def token_budget_splits(lengths: torch.Tensor, prompt_len: int, budget: int) -> list[torch.Tensor]:
    """Rows packed under a token budget (verl's ``use_dynamic_bsz``): [n] response lengths -> row
    indices per micro-batch, longest responses first, each micro-batch's padded size
    ``rows x (prompt_len + its longest response)`` at most ``budget`` (a row over it alone)."""
    order = torch.argsort(lengths, descending=True, stable=True).tolist()
    parts: list[list[int]] = []
    for i in order:
        if parts and (len(parts[-1]) + 1) * (prompt_len + int(lengths[parts[-1][0]])) <= budget:
            parts[-1].append(i)
        else:
            parts.append([i])
    return [torch.tensor(sorted(p), dtype=torch.long) for p in parts]


@dataclass(frozen=True)
class Totals:
    """A mini-batch's global normalisers (summed over ranks)."""

    pg_tokens: float  # tokens in the policy-gradient mask (a method may narrow it: ``loss_mask``)
    pg_seqs: float  # responses with at least one such token
    tokens: float  # valid response tokens
    seqs: float  # non-empty responses


# (micro-batch, (epoch, mini-batch, micro-batch), its mini-batch's totals) -> (loss, scalar metrics)
MicroLoss = Callable[[TrainBatch, tuple[int, int, int], Totals], tuple[torch.Tensor, dict[str, float]]]
# (whole mini-batch on this rank, (epoch, mini-batch)) -> scalar metrics; may fill ``mini.method``
BeforeStep = Callable[[TrainBatch, tuple[int, int]], dict[str, float]]


class Actor:
    """The policy (``engine.module``), its optimizer engine, the optional frozen reference model."""

    def __init__(self, engine, precision: Precision, device: torch.device, micro_batch_size: int,
                 temperature: float, chunk_size: int = 1024, checkpoint_logits: Any = "auto", ref_model=None,
                 ref_adapters_off: bool = False, zero3: bool = False, max_tokens_per_micro_batch: int | None = None, remove_padding: bool = True):
        self.engine, self.precision, self.device = engine, precision, device
        self.micro_batch_size, self.temperature = int(micro_batch_size), float(temperature or 1.0)
        self.max_tokens = int(max_tokens_per_micro_batch) if max_tokens_per_micro_batch else None
        self.chunk_size, self.checkpoint_logits = int(chunk_size), checkpoint_logits
        self.ref_model, self.zero3 = ref_model, zero3
        self.ref_adapters_off = bool(ref_adapters_off)  # LoRA: the reference is the policy with its adapters off
        self.remove_padding = bool(remove_padding)
        self.forward_stats = {"forwards": 0, "packed": 0, "shared": 0, "slots": 0, "tokens": 0}  # since the last take
        self.world = ddp.world_size()
        self._record: tuple[str, ...] = ()  # statistics of the update's forwards kept for the caller
        self._recorded: list[dict[str, torch.Tensor]] | None = None
        self.updates = 0  # optimizer steps taken: a rollout engine with weights of its own re-syncs on a change
        self.nonfinite: list[str] = []  # the non-finite stages of skipped optimizer steps (the loop logs and clears them)

    @property
    def model(self) -> torch.nn.Module:
        return self.engine.module

    # ---------------------------------------------------------------------------- sampling / scoring
    @contextlib.contextmanager
    def sampling(self):
        """Eval mode, no grad, the compute precision, and under ZeRO-3 the full weights gathered on
        every rank (memory: one full copy of the policy per GPU while sampling)."""
        self.model.eval()
        gather = contextlib.nullcontext()
        if self.zero3:
            import deepspeed

            gather = deepspeed.zero.GatheredParameters(list(self.model.parameters()), modifier_rank=None)
        with gather, torch.no_grad(), self.precision.autocast():
            yield self.model

    @staticmethod
    def n_minibatches(batch: TrainBatch, mini_batch_size: int) -> int:
        """Optimizer steps per PPO epoch: the global batch over ``mini_batch_size`` (every rank the same)."""
        return max(1, math.ceil(ddp.all_sum(len(batch)) / mini_batch_size))

    def micro_splits(self, batch: TrainBatch) -> list[torch.Tensor]:
        """Row indices per micro-batch: ``micro_batch_size`` rows each, or packed under
        ``max_tokens_per_micro_batch``; every rank gets the same number of micro-batches (some empty)."""
        if self.max_tokens:
            parts = token_budget_splits(batch.response_mask.sum(-1), batch.rollouts.prompt_len, self.max_tokens)
        else:
            parts = split_rows(len(batch), self.micro_batch_size)
        n_micro = ddp.all_max(len(parts))
        return parts + [torch.arange(0)] * (n_micro - len(parts))

    def _token_stats(self, model, ro: Rollouts, names, grad_names=(), fns=None) -> dict[str, torch.Tensor]:
        ckpt_logits = self.checkpoint_logits
        if ckpt_logits == "auto":
            ckpt_logits = model.config.vocab_size >= 32_000
        # same number of LM-head calls on every rank (ZeRO-3 gathers the head's weights per call)
        min_chunks = ddp.all_max(math.ceil(int(ro.response_mask.sum()) / self.chunk_size)) if self.world > 1 else 0
        info: dict = {}
        with self.precision.autocast():
            out = policy_token_stats(
                model, ro.input_ids.to(self.device), ro.attention_mask.to(self.device), ro.response_mask.to(self.device),
                ro.prompt_len, self.temperature, names, grad_names, fns or {}, self.chunk_size, bool(ckpt_logits), min_chunks,
                packing=self.packing(model), info=info, share_prompts=self.share_prompts(model),
            )
        fs = self.forward_stats
        fs["forwards"] += 1
        fs["packed"] += info["mode"] != "off"
        fs["shared"] += info["mode"] in ("prefix", "prefix_block")
        fs["slots"] += info["slots"]
        fs["tokens"] += int(ro.attention_mask.sum()) - len(ro.attention_mask)  # the body's valid inputs
        return out

    def packing(self, model: torch.nn.Module) -> str:
        """How a forward drops padding (``algo.use_remove_padding``): flash-attention's varlen path
        where the model runs it, else ``auto``: rows packed under a block mask, with or without each
        distinct prompt once for its rows, or the prompts' keys and values shared (where
        ``share_prompts``), whichever costs least; the padded batch when it is off."""
        if not self.remove_padding:
            return "off"
        attn = str(getattr(model.config, "_attn_implementation", None) or "sdpa")
        return "varlen" if attn.startswith("flash_attention") else "auto"

    def share_prompts(self, model: torch.nn.Module) -> bool:
        """Whether ``auto`` may run each distinct prompt once for all its rows (``packing='prefix'``):
        with an attention-only KV cache, one process's own forward (under ZeRO-3 every rank must call
        the body as often as the others) and no activation checkpointing (its recompute would append
        to the shared cache twice)."""
        if not self.remove_padding or self.zero3 or getattr(model, "is_gradient_checkpointing", False):
            return False
        return shareable_cache(model) is not None

    def take_forward_stats(self) -> dict[str, float]:
        """``perf/`` metrics of the forwards since the last call: the share of them that ran without
        padding (packed, or prompts shared), the share that shared prompts, and the share of their
        token slots that were padding."""
        fs, self.forward_stats = self.forward_stats, {"forwards": 0, "packed": 0, "shared": 0, "slots": 0, "tokens": 0}
        if not fs["forwards"]:
            return {}
        return {"perf/packed_forward_frac": fs["packed"] / fs["forwards"],
                "perf/shared_prompt_forward_frac": fs["shared"] / fs["forwards"],
                "perf/padding_frac": max(0.0, 1 - fs["tokens"] / max(fs["slots"], 1))}

    @torch.no_grad()
    def score(self, batch: TrainBatch, names: list[str], fns: dict | None = None,
              model: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
        """Token statistics of the current weights (or of ``model``: the reference) on the batch, eval
        mode, no grad, chunked. {name: [N, T] float32, on the CPU}."""
        model = self.model if model is None else model
        model.eval()
        out: dict[str, torch.Tensor] = {}
        n, t = batch.response_mask.shape
        for idx in self.micro_splits(batch):
            ro = rows(batch, idx).rollouts  # a dummy where this rank has fewer micro-batches
            stats = self._token_stats(model, ro, names if idx.numel() else ["logprobs"], (), fns)
            if idx.numel():
                _scatter(out, idx, stats, (n, t))
        return out

    @property
    def has_reference(self) -> bool:
        """Whether a KL reference exists: a frozen model, or (LoRA) the base under the adapters."""
        return self.ref_model is not None or self.ref_adapters_off

    def reference(self, batch: TrainBatch) -> torch.Tensor:
        """Log-probs of the frozen reference on the batch ([N, T], no grad): the reference model, or
        with LoRA the policy with its adapters off (the base weights, which never train: no copy)."""
        if self.ref_adapters_off:
            from rlvr_cli.lora import adapters_off

            with adapters_off(self.model):
                return self.score(batch, ["logprobs"])["logprobs"]
        return self.score(batch, ["logprobs"], model=self.ref_model)["logprobs"]

    def forward(self, ro: Rollouts, names: list[str], grad_names: list[str], fns: dict | None = None) -> dict[str, torch.Tensor]:
        """A gradient forward: train mode (gradient checkpointing active if enabled), compute precision."""
        self.engine.before_forward()
        self.model.train()
        stats = self._token_stats(self.model, ro, names, grad_names, fns)
        if self._recorded is not None:
            self._recorded.append({k: stats[k].detach() for k in self._record if k in stats})
        return stats

    # ---------------------------------------------------------------------------------------- update
    def totals(self, mini: TrainBatch) -> Totals:
        pg_mask = mini.method.get("loss_mask", mini.response_mask)
        return Totals(*(ddp.all_sum(x) for x in (
            pg_mask.sum(), (pg_mask.sum(-1) > 0).sum(), mini.response_mask.sum(), (mini.response_mask.sum(-1) > 0).sum())))

    def update(self, batch: TrainBatch, mini_batch_size: int, ppo_epochs: int, loss_fn: MicroLoss,
               before_step: BeforeStep | None = None, record: tuple[str, ...] = ()) -> tuple[dict[str, float], int]:
        """PPO epochs over mini-batches (one optimizer step each) of micro-batches (grad accumulation).

        A mini-batch is ``mini_batch_size`` responses of the global batch: each rank takes the same
        share of its local rows. ``before_step`` runs on each whole mini-batch before its micro-batches
        (mini-batch-scope method statistics). Returns (metrics, optimizer steps skipped for a non-finite
        loss or gradient). Loss metrics are per mini-batch sums, ``before_step``'s means over
        mini-batches, the rest means over micro-batches.

        ``record``: statistics of the first mini-batch's gradient forwards (e.g. ``logprobs``,
        ``entropy``) written, detached, into ``batch.token`` ([N, T]) — the weights are still those the
        batch was sampled with, so with one mini-batch and one epoch they are the old log-probs.
        """
        sums: dict[str, float] = {}
        pre: dict[str, float] = {}
        n_local = len(batch)
        n_mini = self.n_minibatches(batch, mini_batch_size)
        skipped = 0
        for epoch in range(ppo_epochs):
            for mb_i, mb_idx in enumerate(torch.tensor_split(torch.arange(n_local), n_mini)):
                mini = rows(batch, mb_idx)
                for k, v in (before_step(mini, (epoch, mb_i)) if before_step else {}).items():
                    pre[k] = pre.get(k, 0.0) + v
                keep = record if (epoch, mb_i) == (0, 0) else ()
                finite = self._accumulate(mini, (epoch, mb_i), loss_fn, sums, keep, batch, mb_idx)
                grad_norm = self.engine.step() if finite else self.engine.skip_step()
                self.updates += 1
                if not math.isfinite(grad_norm):
                    skipped += 1
                    where = f"epoch {epoch}, mini-batch {mb_i}"
                    self.nonfinite.append(f"loss ({where})" if not finite else f"gradient norm {grad_norm} ({where})")
                else:
                    sums["optim/grad_norm"] = sums.get("optim/grad_norm", 0.0) + grad_norm
        n_steps = ppo_epochs * n_mini
        # loss terms are this rank's shares of each mini-batch loss: summed per mini-batch, scaled by the
        # world size so the mean over ranks (the metric reduction) is their sum; the rest are means
        out = {k: v / n_steps * self.world for k, v in sums.items() if k.startswith("loss/")}
        out.update({k: v / max(1, sums.get("#micro", 0)) for k, v in sums.items() if not k.startswith(("loss/", "#", "optim/"))})
        if skipped < n_steps and "optim/grad_norm" in sums:
            out["optim/grad_norm"] = sums["optim/grad_norm"] / (n_steps - skipped)
        out.update({k: v / n_steps for k, v in pre.items()})
        out["train/nonfinite_steps"] = float(skipped)  # optimizer steps not applied
        return out, skipped

    def _accumulate(self, mini: TrainBatch, where: tuple[int, int], loss_fn: MicroLoss, sums: dict[str, float],
                    record: tuple[str, ...] = (), batch: TrainBatch | None = None, mini_idx: torch.Tensor | None = None) -> bool:
        """Accumulate the gradients of one mini-batch. Returns False if a loss was non-finite (on any
        rank): that micro-batch contributes a zero gradient and the optimizer step is then skipped.
        ``record``: statistics of the forwards to write into ``batch.token`` at rows ``mini_idx``."""
        totals = self.totals(mini)
        finite = True
        splits = self.micro_splits(mini)
        kept: dict[str, torch.Tensor] = {}
        self._record = record
        for mi, idx in enumerate(splits):
            self._recorded = [] if record else None
            loss, m = loss_fn(rows(mini, idx), (*where, mi), totals)
            if record and idx.numel() and self._recorded:
                _scatter(kept, mini_idx[idx], self._recorded[-1], tuple(batch.response_mask.shape))
            self._recorded = None
            if not torch.isfinite(loss):
                finite = False
                loss = loss.nan_to_num(0.0, 0.0, 0.0) * 0.0
            # DeepSpeed averages gradients over ranks; the loss is already a global share: undo the mean
            self.engine.backward(loss * self.world, last=mi == len(splits) - 1)
            if idx.numel():
                for k, v in m.items():
                    sums[k] = sums.get(k, 0.0) + v
                sums["#micro"] = sums.get("#micro", 0.0) + 1
        if record:
            batch.token.update(kept)
        return ddp.all_sum(0.0 if finite else 1.0) == 0
