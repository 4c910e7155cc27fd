"""The method registry: one name everywhere, helpful failures. Also the synthetic batches the method
tests share (``synthetic_batch``, ``policy_batch``, ``build_from_yaml``)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from rlvr_cli.methods import Method, StepContext, build_method, method_names, register_method
from rlvr_cli.types import PolicyBatch, Rollouts, TrainBatch

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------ shared helpers
def build_from_yaml(name: str, **overrides) -> Method:
    """The method exactly as ``conf/method/<name>.yaml`` configures it (plus ``overrides``)."""
    node = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "method" / f"{name}.yaml"), resolve=True)
    return build_method({**node, **overrides})


def synthetic_batch(
    lengths=(6, 4, 3, 1), seed: int = 0, nan_padding: bool = True, adv=None, **token: torch.Tensor
) -> TrainBatch:
    """A TrainBatch of len(lengths) responses padded to max(lengths): random old log-probs / entropies
    unless given in ``token``, per-response advantages ``adv`` (default 1, −1, 0.5, −0.5, ...), NaN in
    every padded position of the token statistics."""
    g = torch.Generator().manual_seed(seed)
    n, t = len(lengths), max(max(lengths), 1)
    mask = (torch.arange(t)[None] < torch.tensor(lengths)[:, None]).float()  # [n, T]
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5] * n)[:n] if adv is None else torch.as_tensor(adv, dtype=torch.float32)
    adv = adv[:, None] * mask  # [n, T], 0 on padding as the loop makes it
    pad = float("nan") if nan_padding else 0.0
    stats = {"old_logprobs": -3.0 * torch.rand(n, t, generator=g), "entropy": 2.0 * torch.rand(n, t, generator=g),
             **token}
    stats = {k: torch.where(mask.bool(), v, torch.full_like(v, pad)) for k, v in stats.items()}
    rollouts = Rollouts(
        input_ids=torch.zeros(n, 2 + t, dtype=torch.long), attention_mask=torch.ones(n, 2 + t, dtype=torch.long),
        response_mask=mask, prompt_len=2, group_ids=torch.arange(n) // 2, texts=[""] * n,
        truncated=torch.zeros(n, dtype=torch.bool), prompts=[],
    )
    return TrainBatch(rollouts=rollouts, scores=adv[:, 0].clone(), advantages=adv, token=stats)


def policy_batch(batch: TrainBatch, rows=None, logprobs=None, token=None, step: int = 1, clip=None,
                 where=(0, 0, 0)) -> PolicyBatch:
    """The micro-batch ``rows`` as the loop hands it to ``Method.loss`` (current log-probs = old ones
    unless given; always with grad)."""
    rows = torch.arange(len(batch)) if rows is None else torch.as_tensor(rows)
    old = batch.old_logprobs[rows]
    mask = batch.response_mask[rows].float()
    lp = torch.where(mask.bool(), old, torch.zeros_like(old)) if logprobs is None else logprobs
    lp = lp.detach().clone().requires_grad_()
    return PolicyBatch(
        logprobs=lp, old_logprobs=old, advantages=batch.advantages[rows], response_mask=mask,
        token=token or {}, old_token={k: v[rows] for k, v in batch.token.items()},
        method={k: v[rows] for k, v in batch.method.items()}, step=step,
        minibatch_tokens=float(mask.sum()), minibatch_seqs=float((mask.sum(-1) > 0).sum()), microbatch_index=where,
        clip=clip,
    )


def ctx(step: int = 1, total: int = 10, seed: int = 0, **kw) -> StepContext:
    return StepContext(step=step, total_steps=total, seed=seed, **kw)


# ------------------------------------------------------------------------------------ registry tests
@pytest.mark.parametrize("name", method_names())
def test_every_method_has_its_module_config_and_tests(name):
    assert (ROOT / "rlvr_cli" / "methods" / f"{name}.py").is_file()
    assert (ROOT / "conf" / "method" / f"{name}.yaml").is_file()
    assert (ROOT / "tests" / "methods" / f"test_{name}.py").is_file()


def test_every_method_yaml_builds_and_names_its_method():
    for name in method_names():
        assert build_from_yaml(name).name == name


def test_clashing_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        @register_method("siren")
        class Other(Method):
            pass
    assert build_from_yaml("siren").__class__.__name__ == "Siren"  # the original is untouched


def test_unknown_method_lists_valid_names():
    with pytest.raises(ValueError) as err:
        build_method({"name": "sirne"})
    for name in method_names():
        assert name in str(err.value)


def test_unknown_option_lists_valid_keys():
    with pytest.raises(ValueError, match="coef_typo") as err:
        build_method({"name": "siren", "coef_typo": 1.0})
    assert "top_p" in str(err.value) and "anchor_scope" in str(err.value)


def test_bad_choice_values_fail_with_the_valid_ones():
    with pytest.raises(ValueError, match="strict, inclusive"):
        build_method({"name": "siren", "nucleus": "loose"})
    with pytest.raises(ValueError, match="constant, linear"):
        build_method({"name": "clip_cov", "ratio_schedule": {"kind": "step"}})
