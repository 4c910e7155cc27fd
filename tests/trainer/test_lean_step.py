"""The lean step: no redundant scoring pass, padding-free forwards, per-stage timings (issue 22)."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from omegaconf import OmegaConf

from rlvr_cli.methods import build_method
from rlvr_cli.trainer.actor import Actor
from rlvr_cli.trainer.loop import GRPOTrainer
from tests.trainer.conftest import compose_train
from tests.trainer.test_loop import _fixed_batch

ON_POLICY = ["algo.mini_batch_size=16", "algo.micro_batch_size=8", "trainer.resume=never"]


def _count_scoring_passes(monkeypatch) -> list[int]:
    """Count the no-grad scoring passes (``Actor.score``) the step makes."""
    calls = [0]
    real = Actor.score

    def spy(self, *a, **k):
        calls[0] += 1
        return real(self, *a, **k)

    monkeypatch.setattr(Actor, "score", spy)
    return calls


def test_on_policy_step_skips_the_scoring_pass_with_the_same_update(tmp_path, monkeypatch):
    """One mini-batch, one epoch, baseline: the old log-probs are the update's own, detached. The
    loss and the weights after the step are bit-identical to a step that runs the pass; the entropy
    and covariance metrics come from the update's forwards (same weights, no dropout)."""
    calls = _count_scoring_passes(monkeypatch)
    results = {}
    for mode in ("always", "auto"):
        calls[0] = 0
        trainer = GRPOTrainer.from_config(compose_train([*ON_POLICY, f"algo.old_logprob_pass={mode}"]), tmp_path / mode)
        m = trainer.train_step()
        results[mode] = (m, [p.detach().clone() for p in trainer.model.parameters()], calls[0])
        trainer.close()
    (m_pass, w_pass, n_pass), (m_skip, w_skip, n_skip) = results["always"], results["auto"]
    assert (n_pass, n_skip) == (1, 0)
    assert m_pass["perf/old_log_prob_pass"] == 1.0 and m_skip["perf/old_log_prob_pass"] == 0.0
    assert m_skip["loss/pg"] == m_pass["loss/pg"] and m_skip["loss/total"] == m_pass["loss/total"]
    assert m_skip["optim/grad_norm"] == m_pass["optim/grad_norm"]
    assert all(torch.equal(a, b) for a, b in zip(w_pass, w_skip))
    for key in ("actor/entropy", "cov/mean"):
        assert m_skip[key] == pytest.approx(m_pass[key], rel=1e-5, abs=1e-7), key
    assert "timing_s/old_log_prob" not in m_skip or m_skip["timing_s/old_log_prob"] < m_pass.get("timing_s/old_log_prob", 1e9)


@pytest.fixture(scope="module")
def on_policy_trainer(tmp_path_factory):
    trainer = GRPOTrainer.from_config(compose_train(ON_POLICY), tmp_path_factory.mktemp("reuse"))
    batch = _fixed_batch(trainer)
    yield trainer, batch
    trainer.close()


def _with_method(trainer, overrides: list[str]):
    cfg = compose_train([*ON_POLICY, *overrides])
    trainer.method = build_method(OmegaConf.to_container(cfg.method, resolve=True))
    trainer.clip = dataclasses.replace(trainer.algo.clip_spec(), **trainer.method.clip_overrides)


@pytest.mark.parametrize("change,reuse", [
    ({}, True),
    ({"method": ["method=entropy_bonus"]}, True),
    ({"method": ["method=clip_cov", "method.stats_scope=micro_batch"]}, True),
    ({"method": ["method=kl_cov", "method.stats_scope=micro_batch"]}, True),
    ({"algo": {"mini_batch_size": 8}}, False),  # two mini-batches: the second is off-policy
    ({"algo": {"ppo_epochs": 2}}, False),
    ({"algo": {"old_logprob_pass": "always"}}, False),
    ({"method": ["method=clip_cov"]}, False),  # mini-batch statistics before the first step
    ({"method": ["method=kl_cov"]}, False),
    ({"method": ["method=siren"]}, False),  # whole-batch anchor from the rollout pass
    ({"method": ["method=dlogp"]}, False),
    ({"method": ["method=rsi_s"]}, False),
    ({"method": ["method=high_entropy", "method.stats_scope=batch"]}, False),
    ({"reference": True}, False),
    ({"engine_logprobs": True}, False),  # vLLM's log-probs: mismatch + IS weights need the trainer's
    ({"dropout": True}, False),
])
def test_scoring_pass_runs_whenever_pi_old_is_not_the_update_policy(on_policy_trainer, change, reuse):
    trainer, batch = on_policy_trainer
    algo, method, ref = trainer.algo, trainer.method, trainer.actor.ref_model
    layer = trainer.model.model.layers[0].self_attn
    token = dict(batch.token)
    try:
        trainer.algo = dataclasses.replace(algo, **change.get("algo", {}))
        if "method" in change:
            _with_method(trainer, change["method"])
        if change.get("reference"):
            trainer.actor.ref_model = trainer.model
        if change.get("engine_logprobs"):
            batch.token["rollout_logprobs"] = torch.zeros_like(batch.response_mask, dtype=torch.float32)
        if change.get("dropout"):
            layer.attention_dropout = 0.1
        assert trainer.reuse_update_logprobs(batch) is reuse
    finally:
        trainer.algo = algo
        trainer.method, trainer.actor.ref_model, batch.token = method, ref, token
        layer.attention_dropout = 0.0


def test_every_method_that_allows_the_skip_trains_without_rollout_statistics(on_policy_trainer):
    """A method whose ``needs`` and ``reads_rollout_stats`` allow the skip must not read the rollout
    pass's statistics anyway: a step without them trains (a guard for methods added later)."""
    from rlvr_cli.methods import method_names

    import dataclasses

    trainer, base = on_policy_trainer
    method, seen = trainer.method, []
    variants = [[f"method={n}"] for n in method_names()] + [
        ["method=clip_cov", "method.stats_scope=micro_batch"], ["method=kl_cov", "method.stats_scope=micro_batch"],
        ["method=high_entropy", "method.stats_scope=micro_batch"], ["method=rsi_s", "method.source=current", "method.normalize_by=all"]]
    try:
        for v in variants:
            _with_method(trainer, v)
            batch = dataclasses.replace(base, token={}, method={})
            if not trainer.reuse_update_logprobs(batch):
                continue
            seen.append(v[0])
            trainer.method.prepare(batch, trainer._ctx(1))
            m = trainer.update(batch, 1, record=("logprobs", "entropy"))
            assert math.isfinite(m["loss/total"]) and batch.token["logprobs"].shape == batch.response_mask.shape
    finally:
        trainer.method = method
    assert {"method=baseline", "method=entropy_bonus", "method=clip_cov", "method=kl_cov"} <= set(seen)


@pytest.mark.parametrize("layout", ["block_mask", "prefix", "prefix_block"])
@pytest.mark.parametrize("method", [["method=clip_cov"], ["method=kl_cov", "method.ratio=0.05"], ["method=siren"]])
def test_packed_and_padded_forwards_give_the_same_update(tmp_path, monkeypatch, method, layout):
    """algo.use_remove_padding runs every forward of scoring and update without padding (forced here
    to one layout: rows packed under a block mask, each group's prompt run once for its 4 rows, or
    both: the prompt once, its rows' responses packed after it);
    two mini-batches so the mini-batch statistics (Clip-Cov, KL-Cov) and SIREN's regulariser all run
    on those log-probs and entropies."""
    real = Actor.packing
    monkeypatch.setattr(Actor, "packing", lambda self, model: real(self, model) and layout if self.remove_padding
                        else "off")
    results = []
    for packed in (False, True):
        cfg = compose_train([*method, f"algo.use_remove_padding={str(packed).lower()}", "algo.mini_batch_size=8",
                             "algo.micro_batch_size=4", "trainer.resume=never", "optim.eps=1.0", "optim.lr=0.05"])
        trainer = GRPOTrainer.from_config(cfg, tmp_path / str(packed))
        batch = _fixed_batch(trainer)
        batch.token.update(trainer.score(batch))
        trainer.method.prepare(batch, trainer._ctx(1))
        m = trainer.update(batch, 1)
        stats = trainer.actor.take_forward_stats()
        results.append((m, [p.detach().clone() for p in trainer.model.parameters()], stats, batch))
        trainer.close()
    (m_a, w_a, s_a, b_a), (m_b, w_b, s_b, b_b) = results
    assert s_a["perf/packed_forward_frac"] == 0.0 and s_b["perf/packed_forward_frac"] == 1.0
    assert s_b["perf/padding_frac"] < s_a["perf/padding_frac"]
    valid = b_a.response_mask.bool()
    assert torch.allclose(b_a.old_logprobs[valid], b_b.old_logprobs[valid], atol=1e-5)
    assert m_a["loss/total"] == pytest.approx(m_b["loss/total"], rel=1e-4, abs=1e-6)
    for a, b in zip(w_a, w_b):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max().item()


def test_prompts_are_shared_only_where_the_forward_allows_it():
    """``auto`` may share a prompt's forward across its rows with one process's own forward and plain
    activations; not under ZeRO-3 (ranks must call the body alike), nor with activation
    checkpointing (its recompute would append to the cache again), nor with use_remove_padding off."""
    from types import SimpleNamespace

    from tests.conftest import tiny_qwen2

    model = tiny_qwen2()
    plain = SimpleNamespace(remove_padding=True, zero3=False)
    assert Actor.share_prompts(plain, model)
    assert not Actor.share_prompts(SimpleNamespace(remove_padding=True, zero3=True), model)
    assert not Actor.share_prompts(SimpleNamespace(remove_padding=False, zero3=False), model)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert not Actor.share_prompts(plain, model)


def test_top1_prob_is_computed_only_where_the_update_keeps_it(on_policy_trainer, monkeypatch):
    """The entropy profile's top-1 probability (one more logsumexp over the vocabulary per token) is asked
    of the update's forwards only when the step keeps it (the skipped scoring pass), never to be dropped."""
    import dataclasses

    trainer, base = on_policy_trainer
    asked: list[list[str]] = []
    real = trainer.actor.forward
    monkeypatch.setattr(trainer.actor, "forward", lambda ro, names, *a, **k: asked.append(list(names)) or real(ro, names, *a, **k))
    trainer.update(dataclasses.replace(base, token={}, method={}), 1, record=())
    assert asked and not any("top1_prob" in names for names in asked)
    asked.clear()
    kept = dataclasses.replace(base, token={}, method={})
    trainer.update(kept, 1, record=("logprobs", "entropy", "top1_prob"))
    assert any("top1_prob" in names for names in asked)
    assert kept.token["top1_prob"].shape == kept.response_mask.shape and bool((kept.token["top1_prob"] <= 1).all())
