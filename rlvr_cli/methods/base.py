"""Stage 5: the method interface. A method states only its change from GRPO.

The loop asks a method three things, in this order, every training step:

1. ``needs``: which per-token statistics it wants, on the rollout policy (no grad, whole batch) and on
   the current policy inside the loss (optionally with grad), including custom ones computed chunk-wise
   from the logits (SIREN's top-p entropy).
2. ``prepare(batch, ctx)``: once per step, over the whole train batch (gathered across data-parallel
   ranks through ``ctx.gather``): batch-scope statistics (quantiles, top-k, anchors). It may store
   per-token tensors [N, T] in ``batch.method``; the loop slices them into micro-batches. Returns metrics.
2b. ``prepare_minibatch(mini, current, ctx, where)``: before each optimizer step, over the whole
   mini-batch that step sees (gathered across ranks), with the *current* policy's statistics named in
   ``needs.minibatch`` (no grad): Clip-Cov / KL-Cov select their tokens here by default (spec
   methods-grpo-cov.md §1, §8). Per-token tensors go in ``mini.method``. Returns metrics.
3. ``loss(mb)``: per micro-batch, a ``MethodOutput`` (token weights / loss mask / per-token terms /
   extra scalar loss / the tokens an extra loss acts on / metrics). The clipped objective and aggregation live once in ``rlvr_cli.losses``;
   a method can only change their settings through ``clip_overrides`` (e.g. KL-Cov turns clipping off).

State that must survive a resume (SIREN's anchor, a seeded generator) goes in ``state_dict``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from rlvr_cli.rollout.logprobs import TokenFn
from rlvr_cli.typed import setting
from rlvr_cli.types import MethodOutput, PolicyBatch, TrainBatch


@dataclass(frozen=True)
class TokenNeeds:
    """Per-token statistics a method asks the loop for (names: ``logprobs``, ``entropy`` or keys of ``fns``)."""

    rollout: tuple[str, ...] = ()  # on the rollout policy, whole batch, no grad -> TrainBatch.token
    update: tuple[str, ...] = ()  # on the current policy in the loss -> PolicyBatch.token
    update_grad: tuple[str, ...] = ()  # the subset of ``update`` that must carry gradients
    # on the current policy over each whole mini-batch before its optimizer step, no grad
    # -> ``current`` of ``prepare_minibatch`` (the rollout pass's values on a step's first mini-batch,
    # where the weights have not moved yet)
    minibatch: tuple[str, ...] = ()
    fns: dict[str, TokenFn] = field(default_factory=dict)


@dataclass
class StepContext:
    """What ``prepare`` may use besides the batch."""

    step: int  # training step, 1-based
    total_steps: int
    seed: int
    # all-gather a 1-D tensor of per-token values from every data-parallel rank (identity on one rank)
    gather: Callable[[torch.Tensor], torch.Tensor] = lambda x: x
    world_size: int = 1
    rank: int = 0
    clip: Any = None  # the effective losses.ClipSpec (algo settings after the method's overrides)


class Method:
    """Base class: plain GRPO (no change). Subclasses override what they change."""

    name: ClassVar[str] = "baseline"

    def __init__(self, cfg: Any):
        self.cfg = cfg

    @property
    def needs(self) -> TokenNeeds:
        return TokenNeeds()

    @property
    def clip_overrides(self) -> dict[str, Any]:
        """Changes to ``losses.ClipSpec`` fields this method makes (e.g. ``{"clip": False}``); by default
        the ``loss:`` node of the method's config."""
        return dict(self.cfg.loss)

    @property
    def reads_rollout_stats(self) -> bool:
        """True when ``prepare`` or ``loss`` reads the rollout pass's statistics (``batch.token`` /
        ``mb.old_token``: old log-probs, entropy) beyond what ``needs`` names. The loop then always runs
        the no-grad scoring pass; otherwise, when the update is strictly on-policy, it may take the old
        log-probs from the update's own forward instead (``algo.old_logprob_pass=auto``)."""
        return False

    def prepare(self, batch: TrainBatch, ctx: StepContext) -> dict[str, float]:
        return {}

    def prepare_minibatch(self, mini: TrainBatch, current: dict[str, torch.Tensor], ctx: StepContext,
                          where: tuple[int, int]) -> dict[str, float]:
        """Once per optimizer step: ``mini`` is this rank's share of the mini-batch, ``current`` the
        statistics of ``needs.minibatch`` at the current weights ([n, T] each), ``where`` (epoch, mini-batch)."""
        return {}

    def loss(self, mb: PolicyBatch) -> MethodOutput:
        return MethodOutput()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


# --------------------------------------------------------------------------------------------------
# Registry: one name everywhere (registry key, methods/<name>.py, conf/method/<name>.yaml).

def method_name(name: str) -> Any:
    """A method config's ``name`` field (each method's config class sets its own default)."""
    return setting(name, help="the method: conf/method/<name>.yaml, registered by that name")


@dataclass
class MethodConfig:
    """Fields every method config has. ``name`` selects the class; ``loss`` overrides ClipSpec fields."""

    name: str = method_name("baseline")
    loss: dict[str, Any] = setting({}, help="this method's changes to the clipped objective: clip_ratio_low, "
                                   "clip_ratio_high, clip_ratio_c, clip, log_ratio_clamp (algo's otherwise)")


_REGISTRY: dict[str, tuple[type[Method], type[MethodConfig]]] = {}


def register_method(name: str, config: type[MethodConfig] = MethodConfig):
    """Class decorator: ``@register_method("siren", config=SirenConfig)``. A clashing name raises."""

    def wrap(cls: type[Method]) -> type[Method]:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is already registered by {_REGISTRY[name][0].__qualname__}")
        cls.name = name
        _REGISTRY[name] = (cls, config)
        return cls

    return wrap


def method_names() -> list[str]:
    return sorted(_REGISTRY)


def method_class(name: str) -> type[Method]:
    return _REGISTRY[name][0]


def method_config_class(name: str) -> type[MethodConfig]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; valid: {', '.join(method_names())}")
    return _REGISTRY[name][1]


def build_method(cfg: MethodConfig | dict[str, Any]) -> Method:
    """Build a method from its config: its config dataclass (``configs.load_train_config`` loads the
    ``method`` node into it) or a plain dict of its fields.

    Unknown names and unknown keys fail with the valid choices listed.
    """
    if not isinstance(cfg, MethodConfig):
        cfg = dict(cfg)
        name = cfg.get("name", "baseline")
        cfg_cls = method_config_class(name)
        valid = {f.name for f in dataclasses.fields(cfg_cls)}
        extra = sorted(set(cfg) - valid)
        if extra:
            raise ValueError(f"method {name!r} has no option(s) {extra}; valid: {', '.join(sorted(valid))}")
        cfg = cfg_cls(**cfg)
    return _REGISTRY[cfg.name][0](cfg)
