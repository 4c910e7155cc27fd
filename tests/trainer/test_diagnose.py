"""trainer.diagnose_every through the real trainer on the embedded tiny default (CPU, seconds): the
gradient diagnostic is logged and leaves the update bit-for-bit unchanged."""
from __future__ import annotations

import math

import torch

from rlvr_cli.trainer.loop import GRPOTrainer
from tests.trainer.conftest import compose_train


def _one_step(tmp_path, name, overrides):
    cfg = compose_train(["trainer.resume=never", "trainer.max_steps=1", *overrides])
    trainer = GRPOTrainer.from_config(cfg, tmp_path / name)
    metrics = trainer.train_step()
    weights = [p.detach().clone() for p in trainer.model.parameters()]
    seconds = dict(trainer.timer.seconds)
    trainer.close()
    return metrics, weights, seconds


def test_diagnostic_is_logged_and_the_update_is_bit_identical(tmp_path):
    off, w_off, _ = _one_step(tmp_path, "off", ["method=dlogp"])
    on, w_on, seconds = _one_step(tmp_path, "on", ["method=dlogp", "trainer.diagnose_every=1"])
    assert all(torch.equal(a, b) for a, b in zip(w_off, w_on))  # same seed: same rollouts, same update
    assert "method/grad_ratio" not in off and "method/grad_cos" not in off
    assert 0.0 < on["method/grad_ratio"] < math.inf and -1.0 <= on["method/grad_cos"] <= 1.0
    assert seconds["diagnose"] > 0  # timing_s/diagnose: the diagnostic's own cost
    # Δlog p weights every token with p_old < 1 (all but exact certainties), and amplifies the gradient
    assert on["method/active_frac"] == off["method/active_frac"] > 0.5 and on["method/grad_cos"] > 0
    assert {k: v for k, v in on.items() if not k.startswith(("method/grad_", "perf/"))} == \
        {k: v for k, v in off.items() if not k.startswith("perf/")}


def test_baseline_is_exactly_inert_every_n_steps(tmp_path):
    cfg = compose_train(["trainer.resume=never", "trainer.diagnose_every=2"])
    trainer = GRPOTrainer.from_config(cfg, tmp_path)
    first, second = trainer.train_step(), trainer.train_step()
    trainer.close()
    assert "method/grad_ratio" not in first and first["method/active_frac"] == 0.0  # step 1: not a multiple of 2
    assert second["method/grad_ratio"] == 0.0 and second["method/grad_cos"] == 0.0 and second["method/active_frac"] == 0.0


def test_lora_with_gradient_checkpointing_diagnoses_over_the_adapters(tmp_path, monkeypatch):
    from rlvr_cli import diagnostics, lora

    seen = []
    real = diagnostics.gradient_diagnostic
    monkeypatch.setattr(diagnostics, "gradient_diagnostic", lambda lw, lwo, params: seen.append(params) or real(lw, lwo, params))
    cfg = compose_train(["trainer.resume=never", "method=entropy_bonus", "trainer.diagnose_every=1", "model.lora.rank=8",
                         "model.lora.alpha=16", "model.gradient_checkpointing=true"])
    trainer = GRPOTrainer.from_config(cfg, tmp_path)
    m = trainer.train_step()
    adapters = {id(p) for n, p in trainer.model.named_parameters() if lora.is_adapter_param(n)}
    trainer.close()
    assert 0.0 < m["method/grad_ratio"] < math.inf and m["method/active_frac"] == 1.0
    assert len(seen) == 1 and {id(p) for p in seen[0]} == adapters  # the trainable parameters only


def test_kl_cov_is_diagnosed_where_it_binds_on_the_last_mini_batch(tmp_path):
    # two mini-batches a step (16 responses, mini-batch 8): on the first lp == old, so KL-Cov's penalty is 0
    # there; the diagnostic takes the last optimizer step's micro-batch, where it binds
    m, _, _ = _one_step(tmp_path, "klcov", ["method=kl_cov", "method.ratio=0.1", "trainer.diagnose_every=1"])
    assert 0.0 < m["method/grad_ratio"] < math.inf and m["method/active_frac"] > 0.0
