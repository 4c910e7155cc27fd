"""Δlog p selective extrapolation: the pure helpers, and the lockstep loop on two tiny random Qwen2 models
("RL" = seed 0, "base" = seed 1) checked against teacher forcing."""
from __future__ import annotations

import pytest
import torch

from rlvr_cli.errors import UserError
from rlvr_cli.rollout.extrapolate import (
    ExtrapolateConfig, candidate_mask, extrapolated_logprobs, lockstep_sample,
)
from rlvr_cli.rollout.sampling import sampling_scores
from rlvr_cli.rollout.logprobs import position_ids_from_mask
from tests.conftest import tiny_qwen2

V = 64
PAD = 0


@pytest.fixture(scope="module")
def models():
    return tiny_qwen2(vocab=V, seed=0).eval(), tiny_qwen2(vocab=V, seed=1).eval()


def prompts(b: int = 4, p: int = 7, seed: int = 0):
    """Left-padded prompts of lengths p, p-1, ..., so position ids matter."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, V, (b, p), generator=g)  # [B, P]
    mask = torch.ones(b, p, dtype=torch.long)
    for i in range(b):
        mask[i, : i % p] = 0
    return ids.masked_fill(mask == 0, PAD), mask


def run(rl, base, cfg=None, seed=0, eos=(1,), steps=12, **kw):
    ids, mask = prompts()
    return lockstep_sample(rl, base, ids, mask, max_new_tokens=steps, eos_ids=list(eos), pad_id=PAD,
                           cfg=cfg, generator=torch.Generator().manual_seed(seed), **kw)


@torch.no_grad()
def teacher_forced_logprobs(model, out):
    """log-softmax of a fresh full forward on prompt + sampled tokens, at each response position. [B, T, V]"""
    ids, mask = prompts()
    full_ids = torch.cat([ids, out.responses], 1)
    full_mask = torch.cat([mask, torch.ones_like(out.responses)], 1)
    logits = model(input_ids=full_ids, attention_mask=full_mask, position_ids=position_ids_from_mask(full_mask)).logits
    return logits[:, ids.shape[1] - 1 : -1].float()  # position j predicts token j+1


# ------------------------------------------------------------------------------------ pure helpers
def test_gamma_zero_is_exactly_pi_rl():
    logp_rl, logp_base = torch.randn(4, V).log_softmax(-1), torch.randn(4, V).log_softmax(-1)
    cand = candidate_mask(logp_rl, 5)
    ext = extrapolated_logprobs(logp_rl, logp_base, 0.0, cand)
    assert torch.equal(ext, logp_rl)  # no candidate restriction at γ = 0
    assert torch.equal(sampling_scores(ext, 0.7, 0.9), sampling_scores(logp_rl, 0.7, 0.9))


def test_extrapolated_logprobs_formula():
    """log π_ext = (1+γ) log π_RL − γ log π_base over the candidates, renormalised: π_ext ∝ π_RL·exp(γ Δlog p)."""
    logp_rl, logp_base = torch.randn(3, V).log_softmax(-1), torch.randn(3, V).log_softmax(-1)
    gamma, k = 0.4, 10
    cand = candidate_mask(logp_rl, k)
    assert cand.sum(-1).tolist() == [k] * 3
    assert torch.equal(cand, torch.zeros_like(cand).scatter(-1, logp_rl.topk(k).indices, True))
    ext = extrapolated_logprobs(logp_rl, logp_base, gamma, cand)
    assert torch.isneginf(ext[~cand]).all()
    torch.testing.assert_close(ext.logsumexp(-1), torch.zeros(3))
    tilted = logp_rl.exp() * (gamma * (logp_rl - logp_base)).exp() * cand  # unnormalised π_RL·exp(γΔ)
    torch.testing.assert_close(ext.exp(), tilted / tilted.sum(-1, keepdim=True))


def test_candidate_topk_zero_means_whole_vocabulary():
    assert candidate_mask(torch.randn(2, V), 0).all()


def test_bad_settings_fail_with_the_valid_values():
    with pytest.raises(UserError, match="valid: rl, base"):
        ExtrapolateConfig(driver="policy")
    with pytest.raises(UserError, match="valid: coupled, independent"):
        ExtrapolateConfig(resample="fresh")


# ------------------------------------------------------------------------------------- lockstep loop
@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.8)])
def test_gamma_zero_reproduces_rl_sampling_token_for_token(models, temperature, top_p):
    """(a) driver=rl, γ=0: the same tokens as sampling from π_RL alone in the same loop (same seed), although
    positions are flagged and redrawn (coupled noise, π_ext ≡ π_RL)."""
    rl, base = models
    cfg = ExtrapolateConfig(gamma=0.0, tau=0.0, driver="rl", cand_topk=5)
    with_base = run(rl, base, cfg, temperature=temperature, top_p=top_p)
    alone = run(rl, None, temperature=temperature, top_p=top_p)
    assert with_base.extrapolated.any()  # not vacuous: some positions went through π_ext
    assert torch.equal(with_base.responses, alone.responses)
    assert torch.equal(with_base.response_mask, alone.response_mask)


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.8)])
def test_gamma_zero_equals_hf_generate_with_the_same_seed(models, temperature, top_p):
    """(a) torch's multinomial draws one sample as argmax(p / E), E ~ Exp(1): the same noise as this loop's
    Gumbel-max, so with γ = 0 the tokens equal HF ``generate`` sampling from π_RL alone, seed for seed."""
    from rlvr_cli.rollout.generate import sampling_kwargs
    from rlvr_cli.rollout.stopping import StopCriteria, response_mask

    rl, base = models
    ids, mask = prompts()
    eos = list(range(3, 9))
    gen_cfg = sampling_kwargs(temperature, top_p, 12, eos, PAD)
    torch.manual_seed(5)
    hf = rl.generate(input_ids=ids, attention_mask=mask, generation_config=gen_cfg)
    hf = hf[:, ids.shape[1]:]
    hf_mask, _ = response_mask(hf, StopCriteria(tuple(eos)))
    torch.manual_seed(5)
    ours = lockstep_sample(rl, base, ids, mask, max_new_tokens=12, eos_ids=eos, pad_id=PAD, temperature=temperature,
                           top_p=top_p, cfg=ExtrapolateConfig(gamma=0.0, tau=0.0))
    assert ours.extrapolated.any()
    assert torch.equal(ours.responses, hf.masked_fill(hf_mask == 0, PAD)) and torch.equal(ours.response_mask, hf_mask)


def test_positive_gamma_changes_some_flagged_tokens(models):
    rl, base = models
    out = run(rl, base, ExtrapolateConfig(gamma=2.0, tau=0.0, cand_topk=50))
    changed = out.extrapolated & (out.responses != out.proposed)
    assert changed.any()
    assert not ((~out.extrapolated) & (out.responses != out.proposed) & out.response_mask.bool()).any()


@pytest.mark.parametrize("driver", ["rl", "base"])
def test_flags_follow_the_rule_under_teacher_forcing(models, driver):
    """(b) flags == (Δlog p of the drawn token ≤ τ), recomputed by teacher-forcing both models on the output."""
    rl, base = models
    tau = -0.2
    out = run(rl, base, ExtrapolateConfig(gamma=0.5, tau=tau, driver=driver), seed=1)
    lp_rl, lp_base = teacher_forced_logprobs(rl, out).log_softmax(-1), teacher_forced_logprobs(base, out).log_softmax(-1)
    dlogp = (lp_rl - lp_base).gather(-1, out.proposed[..., None]).squeeze(-1)  # [B, T]
    valid = out.response_mask.bool()
    torch.testing.assert_close(out.dlogp[valid], dlogp[valid], atol=1e-4, rtol=0)
    clear = (dlogp - tau).abs() > 1e-4  # away from the threshold, where float noise could flip a flag
    assert torch.equal(out.extrapolated[valid & clear], (dlogp <= tau)[valid & clear])
    assert out.extrapolated.any() and (valid & ~out.extrapolated).any()


def test_both_caches_match_a_fresh_full_forward(models):
    """(c) the logits each model used at every step equal a teacher-forced forward on prompt + tokens so far."""
    rl, base = models
    out = run(rl, base, ExtrapolateConfig(gamma=0.5, tau=-0.1), record_logits=True, temperature=0.9, top_p=0.9)
    valid = out.response_mask.bool()
    for name, model in (("rl", rl), ("base", base)):
        torch.testing.assert_close(out.step_logits[name][valid], teacher_forced_logprobs(model, out)[valid],
                                   atol=1e-4, rtol=1e-4)


def test_eos_stops_a_row_and_the_mask_is_right(models):
    """(d) 1 up to and including the first EOS, padding after it, truncated = no EOS, no flags after it."""
    rl, base = models
    eos = list(range(3, 13))  # ten of 64 ids: most rows stop within 12 steps, some do not
    out = run(rl, base, ExtrapolateConfig(gamma=0.5, tau=0.0), eos=eos, steps=12, seed=2)
    stopped = 0
    for row, mask, flags, trunc in zip(out.responses, out.response_mask, out.extrapolated, out.truncated):
        hits = [t for t, tok in enumerate(row.tolist()) if tok in eos]
        end = hits[0] + 1 if hits else len(row)
        assert mask.tolist() == [1] * end + [0] * (len(row) - end)
        assert (row[end:] == PAD).all() and not flags[end:].any()
        assert bool(trunc) == (not hits)
        stopped += bool(hits) and end < len(row)
    assert stopped >= 1


def test_all_rows_done_ends_the_loop_early(models):
    rl, _ = models
    out = run(rl, None, eos=list(range(V)), steps=12)  # every token is an EOS
    assert out.responses.shape[1] == 1 and out.response_mask.all() and not out.truncated.any()


def test_greedy_is_deterministic(models):
    rl, base = models
    a = run(rl, base, ExtrapolateConfig(gamma=0.3, tau=-0.1), temperature=0.0, seed=0)
    b = run(rl, base, ExtrapolateConfig(gamma=0.3, tau=-0.1), temperature=0.0, seed=1)
    assert torch.equal(a.responses, b.responses)


def test_different_vocabularies_fail_clearly(models):
    rl, _ = models
    with pytest.raises(UserError, match="64 output tokens, the base model 72"):
        run(rl, tiny_qwen2(vocab=72, seed=1).eval(), ExtrapolateConfig())
