"""SIREN: selective entropy regularisation — Jiang et al., arXiv 2509.25133; reference ``Linn3a/siren``
@ ``fa59a8d`` (spec methods-siren-rsi-dlogp.md §1).

Change from GRPO: one extra scalar loss, λ·(H̄ − H_anchor)², on a *selective* entropy H̄:
1. top-p entropy H^p_t: the entropy of π_t renormalised inside its nucleus {r ≤ K : c_r < p} of the K
   most probable tokens (``efficient_top_p_sampling``; §1.1). Strict ``c_r < p`` as in the code (top-1
   ≥ p → empty nucleus → H^p = 0); ``nucleus: inclusive`` also keeps the token that crosses p (HF/vLLM).
2. peak mask: per response, tokens with H^p strictly above the ρ-quantile of that response's valid
   tokens (linear interpolation; ``mask_by_quantile``; §1.2).
3. H̄ = mean over responses of the token mean of H^p over the peak mask (``seq-mean-token-mean``); a
   response with an empty mask adds 0 but still counts (§1.3).
4. H_anchor = H̄ of the whole first rollout batch from the rollout-policy pass (no grad), kept for the
   rest of training and saved in the checkpoint (the reference loses it on resume; §1.6).
The policy-gradient term is untouched: the masks act only on the regulariser.

Cost (§1.7): H^p is a ``TokenFn`` run on [C, V] logit chunks; it takes logsumexp over the full
vocabulary (for π), then works in [C, K] after ``topk`` — no full-vocabulary sort, no [N, V] tensor.
H^p = −Σ q log q with q = softmax of the nucleus logits, which equals the reference's
log Z − Σ π log π / Z (the full-vocabulary normaliser cancels) and is exactly 0 for a 1-token nucleus.

Ours: ``anchor_scope: microbatch`` (default) is the reference's — H̄ and the square per micro-batch,
the loop averaging micro-batches by their share. ``minibatch`` forms one squared error per mini-batch:
the loss cannot see the other micro-batches, so the deviation d = H̄ − H_anchor is taken from the
rollout-policy pass over the whole train batch (exact on the first mini-batch of a step when the step
has one mini-batch) and each micro-batch contributes λ·d² + 2λ·d·(H̄_mb − sg(H̄_mb)), whose accumulated
gradient is 2λ·d·∇H̄_mini, the gradient of λ(H̄_mini − H_anchor)². B counts responses with ≥ 1 valid
token (the loop's dummy all-padding rows are not responses).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal

import torch

from rlvr_cli.methods.base import Method, MethodConfig, StepContext, TokenNeeds, method_name, register_method
from rlvr_cli.stats import quantile_1d
from rlvr_cli.typed import setting
from rlvr_cli.types import MethodOutput, PolicyBatch, TrainBatch

NUCLEI = ("strict", "inclusive")
ANCHOR_SCOPES = ("microbatch", "minibatch")

ENTROPY = "siren_topp_entropy"
NUCLEUS_SIZE = "siren_nucleus_size"
MASKED_LOGIT_GAP = 1e4  # logits outside the nucleus are set 1e4 below the row max: exp underflows to 0


def nucleus_mask(probs_sorted: torch.Tensor, p: float, inclusive: bool = False) -> torch.Tensor:
    """Nucleus membership of probabilities sorted in descending order (§1.1 step 2). [C, K] -> bool [C, K].

    strict (reference): c_r < p, so the token that pushes the sum past p is excluded and top-1 ≥ p gives
    an empty nucleus; inclusive (HF/vLLM sampling): c_{r−1} < p.
    """
    cum = probs_sorted.cumsum(-1)  # [C, K]
    return (cum - probs_sorted) < p if inclusive else cum < p


def _nucleus_topk(logits: torch.Tensor, p: float, k: int, inclusive: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-K logits (descending) and their nucleus membership. logits [C, V] -> [C, K], bool [C, K]."""
    z = logits.float()
    lse = torch.logsumexp(z, dim=-1, keepdim=True)  # [C, 1] over the full vocabulary
    z_k = torch.topk(z, min(int(k), z.shape[-1]), dim=-1).values  # [C, K], sorted
    with torch.no_grad():
        keep = nucleus_mask(torch.exp(z_k - lse), p, inclusive)  # [C, K]; membership carries no gradient
    return z_k, keep


def topp_entropy(logits: torch.Tensor, p: float = 0.8, k: int = 10000, inclusive: bool = False) -> torch.Tensor:
    """Top-p entropy H^p (arXiv 2509.25133; reference ``efficient_top_p_sampling``), differentiable.

    logits: [C, V] temperature-scaled. H^p = −Σ_{r∈N} q_r log q_r, q = π/Z renormalised in the nucleus N
    (a subset of the top K); 0 when N is empty (top-1 ≥ p, strict). If the top K never reach p, N is all
    K tokens (truncated). Returns [C].
    """
    z_k, keep = _nucleus_topk(logits, p, k, inclusive)  # [C, K]
    nonempty = keep.any(-1)  # [C]
    calc = keep.clone()
    calc[:, 0] = True  # top-1 stands in for an empty nucleus so every row stays finite; zeroed below
    z_in = torch.where(calc, z_k, z_k.detach()[:, :1] - MASKED_LOGIT_GAP)  # [C, K]
    log_q = torch.log_softmax(z_in, dim=-1)  # [C, K]
    h = -torch.where(calc, log_q.exp() * log_q, torch.zeros_like(log_q)).sum(-1)  # [C]
    return torch.where(nonempty, h, torch.zeros_like(h))


@torch.no_grad()
def nucleus_size(logits: torch.Tensor, p: float = 0.8, k: int = 10000, inclusive: bool = False) -> torch.Tensor:
    """|N_t| as a float (for metrics: nucleus size, empty nucleus, top-K truncation). [C, V] -> [C]."""
    return _nucleus_topk(logits, p, k, inclusive)[1].sum(-1).float()


def peak_mask(entropy: torch.Tensor, mask: torch.Tensor, rho: float) -> torch.Tensor:
    """Per-response peak-entropy mask (reference ``mask_by_quantile``; §1.2, the paper's Eq. 9).

    τ_i = quantile_ρ of H^p over response i's valid tokens (linear interpolation, NaN padding);
    M = valid & H^p > τ_i (strict, so zero-entropy tokens are never picked). [n, T] -> bool [n, T].
    """
    m = mask.bool()
    x = torch.where(m, entropy.detach().float(), torch.full_like(entropy, float("nan"), dtype=torch.float32))
    rows = max(1, (1 << 24) // max(1, x.shape[-1]))  # torch.quantile refuses inputs above 2^24 elements
    tau = torch.cat([torch.nanquantile(c, rho, dim=-1, keepdim=True) for c in x.split(rows)]) if x.numel() else x[:, :1]
    return m & (x > tau)  # NaN (padding, empty rows) compares False


def selective_entropy(
    entropy: torch.Tensor, peak: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """H̄ = (1/B) Σ_i Σ_t M H^p / Σ_t M (``seq-mean-token-mean``; §1.3).

    entropy, peak, mask: [n, T]. B = responses with a valid token; an empty peak mask contributes 0.
    Returns H̄ (scalar, graph-connected even when B = 0), per-response values [n] and the response rows [n].
    """
    h = torch.where(peak, entropy, torch.zeros_like(entropy))  # [n, T], padding/NaN never enters
    per_seq = h.sum(-1) / peak.sum(-1).clamp(min=1)  # [n]
    rows = mask.bool().any(-1)  # [n]
    h_bar = torch.where(rows, per_seq, torch.zeros_like(per_seq)).sum() / max(int(rows.sum()), 1)
    return h_bar, per_seq, rows


def anchor_loss(h_bar: torch.Tensor, anchor: float, coef: float) -> torch.Tensor:
    """λ·(H̄ − H_anchor)² (§1.3, positive sign: pulls H̄ back to the anchor from either side). Scalar."""
    return coef * (h_bar - anchor) ** 2


@dataclass
class SirenConfig(MethodConfig):
    name: str = method_name("siren")
    coef: float = setting(0.005, help="λ of λ·(H̄ − H_anchor)² (the reference's entropy_coeff)")
    top_p: float = setting(0.8, gt=0, le=1, help="nucleus mass p of the top-p entropy (entropy_topp)")
    top_k: int = setting(10000, ge=1, help="top-K cap before the nucleus (entropy_topk); topk_truncated_frac "
                         "logs how often K never reaches p")
    nucleus: Literal[NUCLEI] = setting("strict", help="strict (c_r < p, the crossing token out; the reference) | "
                                       "inclusive (keep it, as HF/vLLM top-p)")
    rho: float = setting(0.8, ge=0, le=1, help="peak quantile ρ: keep tokens with H^p above the per-response "
                         "ρ-quantile")
    anchor_scope: Literal[ANCHOR_SCOPES] = setting("microbatch", help="microbatch (H̄ and the square per "
                                                   "micro-batch; the reference) | minibatch (one per mini-batch; ours)")
    anchor: float | None = setting(None, help="fixed H_anchor; null: H̄ of the first rollout batch (kept in "
                                   "the checkpoint)")

    def __post_init__(self) -> None:
        for key, value, valid in (("nucleus", self.nucleus, NUCLEI),
                                  ("anchor_scope", self.anchor_scope, ANCHOR_SCOPES)):
            if value not in valid:
                raise ValueError(f"siren.{key} {value!r}; valid: {', '.join(valid)}")
        if not (0.0 < self.top_p <= 1.0 and self.top_k >= 1 and 0.0 <= self.rho <= 1.0):
            raise ValueError("siren needs 0 < top_p ≤ 1, top_k ≥ 1 and 0 ≤ rho ≤ 1")


@register_method("siren", config=SirenConfig)
class Siren(Method):
    """extra_loss = λ·(H̄ − H_anchor)² on the top-p, peak-masked entropy."""

    def __init__(self, cfg: SirenConfig):
        super().__init__(cfg)
        p, k, inclusive = cfg.top_p, cfg.top_k, cfg.nucleus == "inclusive"
        self._needs = TokenNeeds(
            rollout=(ENTROPY, NUCLEUS_SIZE), update=(ENTROPY,), update_grad=(ENTROPY,),
            fns={ENTROPY: lambda logits, _y: topp_entropy(logits, p, k, inclusive),
                 NUCLEUS_SIZE: lambda logits, _y: nucleus_size(logits, p, k, inclusive)},
        )
        self.anchor: float | None = cfg.anchor
        self.anchor_step: int | None = 0 if cfg.anchor is not None else None
        self.h_sel_rollout = 0.0

    @property
    def needs(self) -> TokenNeeds:
        return self._needs

    @property
    def clip_overrides(self) -> dict[str, Any]:
        return dict(self.cfg.loss)

    @torch.no_grad()
    @property
    def reads_rollout_stats(self) -> bool:  # the anchor and selective entropy of the rollout batch
        return True

    def prepare(self, batch: TrainBatch, ctx: StepContext) -> dict[str, float]:
        mask = batch.response_mask
        h = batch.token[ENTROPY]  # [N, T] rollout policy, no grad
        _, per_seq, rows = selective_entropy(h, peak_mask(h, mask, self.cfg.rho), mask)
        seq_values = ctx.gather(per_seq[rows].float())  # [B_global]
        if seq_values.numel():
            self.h_sel_rollout = float(seq_values.mean())
            if self.anchor is None:
                if ctx.step > 1:
                    warnings.warn(f"siren: no anchor in the checkpoint/config; measuring it at step {ctx.step}, not 1",
                                  RuntimeWarning, stacklevel=2)
                self.anchor, self.anchor_step = self.h_sel_rollout, ctx.step
        metrics = {"H_sel_rollout": self.h_sel_rollout, **self._rollout_metrics(batch)}
        return metrics if self.anchor is None else {"H_anchor": self.anchor, **metrics}

    def _rollout_metrics(self, batch: TrainBatch) -> dict[str, float]:
        m = batch.response_mask.bool()
        if not m.any():
            return {}
        size = batch.token[NUCLEUS_SIZE][m].float()  # [M]
        empty_size = 1.0 if self.cfg.nucleus == "inclusive" else 0.0  # top-1 ≥ p
        return {
            "H_topp_mean": float(batch.token[ENTROPY][m].mean()),
            "H_full_mean": float(batch.token["entropy"][m].mean()),
            "nucleus_size_mean": float(size.mean()),
            "nucleus_size_p95": float(quantile_1d(size, 0.95)),
            "empty_nucleus_frac": float((size <= empty_size).float().mean()),
            # the top K never reach p (inclusive: also a nucleus that closes exactly at the K-th token)
            "topk_truncated_frac": float((size >= self.cfg.top_k).float().mean()),
        }

    def loss(self, mb: PolicyBatch) -> MethodOutput:
        if self.anchor is None:
            raise RuntimeError("siren: no anchor yet — prepare() must run on a batch with a response first")
        h = mb.token[ENTROPY]  # [n, T] current policy, with grad
        peak = peak_mask(h, mb.response_mask, self.cfg.rho)  # [n, T]
        h_bar, _, rows = selective_entropy(h, peak, mb.response_mask)
        if self.cfg.anchor_scope == "microbatch":
            extra = anchor_loss(h_bar, self.anchor, self.cfg.coef)
        else:
            d = self.h_sel_rollout - self.anchor
            extra = self.cfg.coef * d * d + 2.0 * self.cfg.coef * d * (h_bar - h_bar.detach())
        with torch.no_grad():
            n_valid, n_rows = float(mb.response_mask.sum()), int(rows.sum())
            h_val = float(h_bar.detach())
            gap = h_val - self.anchor
            metrics = {
                "H_sel": h_val, "anchor_gap": gap, "anchor_mse": gap * gap, "reg_loss": float(extra.detach()),
                "peak_frac": float(peak.sum()) / n_valid if n_valid else 0.0,
                "empty_mask_seq_frac": float((~peak.any(-1))[rows].float().mean()) if n_rows else 0.0,
            }
        # the regulariser reaches the peak tokens only (method/active_frac; nothing with λ = 0)
        active = peak & mb.response_mask.bool() if self.cfg.coef else None
        return MethodOutput(extra_loss=extra, active=active, metrics=metrics)

    def state_dict(self) -> dict[str, Any]:
        return {"anchor": self.anchor, "anchor_step": self.anchor_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("anchor") is not None:
            self.anchor, self.anchor_step = float(state["anchor"]), state.get("anchor_step")
