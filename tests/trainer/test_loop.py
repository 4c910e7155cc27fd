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
    # per-stage timings (verl's names): the stages and `other` add up to the step, val and checkpoint included
    for row in rows[1:]:
        stages = {k: v for k, v in row.items() if k.startswith("timing_s/") and k != "timing_s/step"}
        assert {"timing_s/gen", "timing_s/reward", "timing_s/update_actor", "timing_s/other"} <= set(stages)
        assert all(v >= 0 for v in stages.values())
        assert sum(stages.values()) == pytest.approx(row["timing_s/step"], rel=1e-9)
        assert row["perf/tokens_per_s/gen"] > 0 and row["perf/tokens_per_s/update_actor"] > 0
    assert "timing_s/val" not in rows[1] and "timing_s/checkpoint" not in rows[1]
    assert rows[2]["timing_s/val"] > 0 and rows[2]["timing_s/checkpoint"] > 0
    assert (tmp_path / "resolved_config.yaml").read_text().count("group_size: 4") == 1
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "checkpoints" / "step_000002" / "hf")
    assert sum(p.numel() for p in model.parameters()) > 100_000


def test_training_changes_the_weights_and_rerun_resumes_as_done(tmp_path, capsys):
    cfg = compose_train([])
    trainer = GRPOTrainer.from_config(cfg, tmp_path)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.fit()
    trainer.close()
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    again = GRPOTrainer.from_config(cfg, tmp_path)  # trainer.resume=auto finds the final checkpoint
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
        trainer = GRPOTrainer.from_config(cfg, tmp_path / f"m{micro}")
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
        trainer = GRPOTrainer.from_config(cfg, tmp_path / str(len(results)))
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


def test_nonfinite_loss_skips_the_step_and_stops_cleanly_with_a_checkpoint(tmp_path, monkeypatch, caplog):
    cfg = compose_train(["trainer.max_steps=5", "trainer.max_nonfinite_steps=2", "trainer.save_every=0"])
    trainer = GRPOTrainer.from_config(cfg, tmp_path)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    calls = []

    def nan_in_one_micro_batch(mb):  # the second micro-batch of each mini-batch: NaN
        calls.append(1)
        return MethodOutput(extra_loss=torch.tensor(float("nan") if len(calls) % 2 == 0 else 0.0))

    monkeypatch.setattr(trainer.method, "loss", nan_in_one_micro_batch)
    trainer.fit()
    trainer.close()
    rows = _metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]  # stopped after 2 bad steps in a row
    assert all(r["train/nonfinite_steps"] >= 1 for r in rows)
    assert "step 1: non-finite loss (epoch 0, mini-batch 0): optimizer step not applied" in caplog.text
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))  # never stepped on NaN
    assert (tmp_path / "checkpoints" / "step_000002" / "trainer_state.pt").is_file()
    assert all(math.isfinite(r["reward/mean"]) for r in rows)


def test_sum_norm_loss_is_the_token_sum_over_c_not_a_mean_over_responses(tmp_path):
    """Dr.GRPO's seq-mean-token-sum-norm (spec §4): pg loss = Σ_i Σ_t ℓ / C over the mini-batch, as verl;
    on-policy r = 1, so ℓ = −A per token. Dividing by the 16 responses as well would rescale every
    coefficient added to it (SIREN's λ, the KL coefficient) by 16."""
    cfg = compose_train(["algo=dr_grpo", "algo.mini_batch_size=16", "algo.micro_batch_size=4",
                         "algo.loss_scale_factor=40", "trainer.resume=never"])
    trainer = GRPOTrainer.from_config(cfg, tmp_path)
    batch = _fixed_batch(trainer)
    batch.advantages = batch.response_mask.float().clone()  # A = 1 everywhere (group-centred A sums to ~0)
    m = trainer.update(batch, 1)
    trainer.close()
    expected = -float(batch.response_mask.sum()) / 40
    assert m["loss/pg"] == pytest.approx(expected, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("algo,drops,refills", [("grpo", False, False), ("dr_grpo", False, False), ("dapo", True, True)])
def test_zero_variance_groups_follow_verl_per_algo(algo, drops, refills):
    """verl's GRPO and Dr.GRPO keep zero-variance groups (their tokens count in token-mean's denominator);
    DAPO filters them and refills the batch."""
    from hydra import compose, initialize_config_dir

    from rlvr_cli.paths import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"algo={algo}"])
    assert cfg.algo.filter_zero_std_groups is False
    assert cfg.algo.filter_groups.enabled is refills


def test_kl_cov_selects_per_mini_batch_from_the_current_policy_and_logs_verl_ppo_kl(tmp_path):
    """Default KL-Cov scope (spec §1, §9): one selection per optimizer step, over its mini-batch, from the
    current log-probs — the rollout pass on the first mini-batch, a fresh pass after the weights moved."""
    cfg = compose_train(["method=kl_cov", "method.ratio=0.05", "algo.mini_batch_size=8", "algo.micro_batch_size=4",
                         "algo.ppo_epochs=2", "trainer.resume=never"])
    trainer = GRPOTrainer.from_config(cfg, tmp_path)
    seen = []
    real = trainer.method.prepare_minibatch

    def spy(mini, current, ctx, where):
        seen.append((where, (current["logprobs"] - mini.old_logprobs).abs()[mini.response_mask.bool()].max().item()))
        return real(mini, current, ctx, where)

    trainer.method.prepare_minibatch = spy
    m = trainer.train_step()
    trainer.close()
    assert [w for w, _ in seen] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert seen[0][1] == 0.0 and seen[-1][1] > 0  # later mini-batches see the moved policy
    assert m["method/kl_cov/n_selected"] >= 1
    # verl's name holds verl's value (mean |lp − old| ≥ |signed mean|); ours keeps the signed k1
    assert m["actor/ppo_kl"] > 0 and m["actor/ppo_kl"] >= abs(m["ppo/kl"]) and m["actor/ppo_kl"] != m["ppo/kl"]


def test_reward_terms_and_a_user_function_train_and_are_logged(tmp_path):
    """reward.funcs + reward.fn (TRL's contract): each term's mean is logged, the score is their weighted sum."""
    fn = tmp_path / "shaping.py"
    fn.write_text("def short(completions, answers, completion_lengths, **kw):\n"
                  "    return [1.0 if n < 20 else 0.0 for n in completion_lengths]\n")
    cfg = compose_train(["reward.funcs=[accuracy,format]", f"reward.fn={fn}:short", "reward.weights=[1.0,0.5,0.25]",
                         "trainer.max_steps=1"])
    train_main(cfg, tmp_path / "run")
    row = _metrics(tmp_path / "run" / "metrics.jsonl")[-1]
    expected = row["reward/accuracy"] + 0.5 * row["reward/format"] + 0.25 * row["reward/short"]
    assert row["reward/mean"] == pytest.approx(expected, abs=1e-6)
    assert 0.0 <= row["reward/format"] <= 1.0 and "reward/short" in row
