"""The GRPO loop end to end on the shipped tiny model (CPU, seconds)."""
from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlvr_cli.commands import train_main
from rlvr_cli.trainer.loop import GRPOTrainer
from rlvr_cli.types import MethodOutput
from tests.trainer.conftest import compose_train


def _metrics(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_steps_write_metrics_config_and_loadable_checkpoint(tmp_path):
    cfg = compose_train(["val.every=2", "val.at_start=true", "val.size=8"])
    train_main(cfg, tmp_path)
    rows = _metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2]
    for key in ("reward/mean", "actor/entropy", "cov/mean", "loss/pg", "optim/grad_norm", "perf/gen_tokens_per_s"):
        assert key in rows[1], key
    assert "val/arith/avg@2" in rows[0] and "val/arith/avg@2" in rows[2]
    assert (tmp_path / "resolved_config.yaml").read_text().count("group_size: 4") == 1
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "checkpoints" / "step_000002" / "hf")
    assert sum(p.numel() for p in model.parameters()) > 100_000


def test_training_changes_the_weights_and_rerun_resumes_as_done(tmp_path, capsys):
    cfg = compose_train([])
    trainer = GRPOTrainer(cfg, tmp_path)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.fit()
    trainer.close()
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    again = GRPOTrainer(cfg, tmp_path)  # trainer.resume=auto finds the final checkpoint
    assert again.step == 2 and again.fit() == {}
    again.close()


def _fixed_batch(trainer):
    """One rollout batch, made once, so two trainers can update on identical data."""
    torch.manual_seed(0)
    prompts = trainer.sampler.next_batch(4)
    from rlvr_cli.rollout import generate_rollouts

    with trainer.actor.sampling() as policy:  # eval mode, compute precision, as the loop samples
        ro = generate_rollouts(policy, trainer.tokenizer, prompts, 4, 40)
    scores = torch.tensor([float(i % 3 == 0) for i in range(len(ro.texts))])
    from rlvr_cli.advantages import grpo_advantages

    adv = grpo_advantages(scores, ro.group_ids)
    batch = trainer._train_batch(ro, scores, adv, torch.ones_like(scores, dtype=torch.bool))
    batch.token = trainer.score(batch)
    return batch


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_gradient_accumulation_invariance(tmp_path, mode):
    """micro-batch 16 (one pass) and micro-batch 2 (8 accumulated passes) give the same update.

    Adam with a large eps is ~SGD (update ∝ gradient): with the default eps a near-zero gradient entry
    turns float summation-order noise into a ±lr step, while a wrongly scaled micro-batch still shows
    at full size."""
    results = []
    for micro in (16, 2):
        cfg = compose_train([f"algo.micro_batch_size={micro}", "algo.mini_batch_size=16", f"algo.loss_agg_mode={mode}",
                             "trainer.resume=never", "optim.eps=1.0", "optim.lr=0.05", "optim.warmup_steps=0"])
        trainer = GRPOTrainer(cfg, tmp_path / f"m{micro}")
        init = [p.detach().clone() for p in trainer.model.parameters()]
        batch = _fixed_batch(trainer)
        m = trainer.update(batch, 1)
        results.append((m["loss/pg"], [p.detach().clone() for p in trainer.model.parameters()]))
        trainer.close()
    (loss_a, w_a), (loss_b, w_b) = results
    assert loss_a == pytest.approx(loss_b, rel=1e-4, abs=1e-6)
    assert max((a - i).abs().max().item() for a, i in zip(w_a, init)) > 1e-4  # the update really moved
    for a, b in zip(w_a, w_b):
        assert torch.allclose(a, b, atol=1e-6), (a - b).abs().max().item()


@pytest.mark.parametrize("budget", [120, 300])
def test_token_budget_micro_batches_give_the_same_update(tmp_path, budget):
    """algo.max_tokens_per_micro_batch packs responses by length under a token budget: the update
    equals one pass over the whole mini-batch (global normalisers), and no micro-batch exceeds it."""
    from rlvr_cli.trainer.actor import Actor

    seen = []
    real = Actor._token_stats

    def spy(self, model, ro, *a, **k):
        if model.training:
            seen.append(ro.input_ids.numel())
        return real(self, model, ro, *a, **k)

    results = []
    for extra in (["algo.micro_batch_size=16"], [f"algo.max_tokens_per_micro_batch={budget}"]):
        cfg = compose_train([*extra, "algo.mini_batch_size=16", "trainer.resume=never", "optim.eps=1.0", "optim.lr=0.05"])
        trainer = GRPOTrainer(cfg, tmp_path / str(len(results)))
        batch = _fixed_batch(trainer)
        seen.clear()
        Actor._token_stats = spy
        try:
            m = trainer.update(batch, 1)
        finally:
            Actor._token_stats = real
        results.append((m["loss/pg"], [p.detach().clone() for p in trainer.model.parameters()], list(seen)))
        trainer.close()
    (loss_a, w_a, one), (loss_b, w_b, packed) = results
    assert len(one) == 1 and len(packed) > 1
    prompt_len = batch.rollouts.prompt_len
    assert all(n <= max(budget, prompt_len + 40) for n in packed)  # a row over the budget goes alone
    assert sum(packed) < one[0]  # less padding than one batch padded to the longest response
    assert loss_a == pytest.approx(loss_b, rel=1e-4, abs=1e-6)
    for a, b in zip(w_a, w_b):
        assert torch.allclose(a, b, atol=1e-6), (a - b).abs().max().item()


def test_nonfinite_loss_skips_the_step_and_stops_cleanly_with_a_checkpoint(tmp_path, monkeypatch):
    cfg = compose_train(["trainer.max_steps=5", "trainer.max_bad_steps=2", "trainer.save_every=0"])
    trainer = GRPOTrainer(cfg, tmp_path)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    monkeypatch.setattr(trainer.method, "loss", lambda mb: MethodOutput(extra_loss=torch.tensor(float("nan"))))
    trainer.fit()
    trainer.close()
    rows = _metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]  # stopped after 2 bad steps in a row
    assert all(r["train/nonfinite_skipped"] >= 1 for r in rows)
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))  # never stepped on NaN
    assert (tmp_path / "checkpoints" / "step_000002" / "trainer_state.pt").is_file()
    assert all(math.isfinite(r["reward/mean"]) for r in rows)
