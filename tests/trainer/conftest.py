"""A tiny, fast training config: the shipped model, 4 prompts x 4 samples, short responses."""
from __future__ import annotations

import os

import pytest
from hydra import compose, initialize_config_dir

from rlvr_cli.paths import CONF_DIR

MODEL = os.environ.get("RLVR_TEST_MODEL", "builtin:tiny_arith")
TINY = [
    f"model.path={MODEL}", "rollout.prompts_per_step=4", "algo.group_size=4", "rollout.max_new_tokens=40",
    "algo.mini_batch_size=8", "algo.micro_batch_size=4", "algo.filter_zero_std_groups=false",
    "val.every=0", "trainer.progress=false", "trainer.save_every=2", "trainer.max_steps=2",
    "data.train_size=64", "data.test_size=16", "reward.num_workers=1",
]


def compose_train(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=[*TINY, *overrides])


@pytest.fixture
def tiny_cfg():
    return compose_train
