"""The composition root (rlvr_cli/trainer/setup.py): the run's parts from its typed config, handed to the trainer."""
from __future__ import annotations

import dataclasses

from rlvr_cli.methods import build_method
from rlvr_cli.trainer.loop import GRPOTrainer
from rlvr_cli.trainer.setup import build_run

from tests.trainer.conftest import compose_train


def test_the_trainer_trains_with_the_parts_it_is_given(tmp_path):
    parts = build_run(compose_train(["trainer.resume=never"]), tmp_path)
    assert parts.method.name == "baseline" and parts.resumed is None
    assert parts.actor.engine is parts.policy.engine  # the actor steps the engine that holds the policy
    # a part swapped after building: the trainer runs that one (here another method, same clip settings)
    swapped = dataclasses.replace(parts, method=build_method({"name": "entropy_bonus", "coef": 0.01}))
    trainer = GRPOTrainer(swapped)
    try:
        metrics = trainer.train_step()
    finally:
        trainer.close()
    assert trainer.model is parts.policy.engine.module and trainer.rollout is parts.rollout
    assert any(k.startswith("method/entropy_bonus/") for k in metrics), sorted(metrics)
