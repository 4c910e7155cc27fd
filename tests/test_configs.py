"""Every config group option composes, so no YAML rots (cf. lightning-hydra-template tests/test_configs.py)."""
from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rlvr_cli.paths import CONF_DIR, config_groups, group_options
from rlvr_cli.methods import build_method, method_names


def _compose(overrides, name="train"):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


TRAIN_GROUPS = ["model", "data", "algo", "method", "trainer", "logger"]


@pytest.mark.parametrize("group,option", [(g, o) for g in TRAIN_GROUPS for o in group_options(g)])
def test_every_train_option_composes_and_resolves(group, option):
    cfg = _compose([f"{group}={option}", "data.path=x.jsonl"] if option == "jsonl" else [f"{group}={option}"])
    OmegaConf.to_container(cfg, resolve=True)  # no interpolation left dangling (except hydra's)
    assert cfg[group] is not None


def test_every_method_config_builds_its_method():
    for option in group_options("method"):
        cfg = _compose([f"method={option}"])
        method = build_method(OmegaConf.to_container(cfg.method, resolve=True))
        assert method.name == option


def test_method_configs_and_registry_agree():
    assert sorted(group_options("method")) == method_names()


def test_train_groups_are_all_in_conf():
    assert set(TRAIN_GROUPS) <= set(config_groups())


def test_vllm_settings_compose_into_train_and_eval_and_are_all_checked():
    from rlvr_cli.rollout.config import VllmConfig
    from rlvr_cli.typed import field_names

    keys = set(OmegaConf.load(CONF_DIR / "vllm" / "default.yaml"))
    assert keys <= set(field_names(VllmConfig))
    for name in ("train", "eval"):
        cfg = _compose(["rollout.engine=vllm", "rollout.vllm.gpu_memory_utilization=0.3"], name)
        assert cfg.rollout.engine == "vllm" and set(cfg.rollout.vllm) == keys
        assert cfg.rollout.vllm.gpu_memory_utilization == 0.3
