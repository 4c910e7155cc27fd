"""Every recipe composes (its launch command's config) and says how to run it, on what, at what cost and
from which source, so recipes cannot rot; every method has one."""
from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rlvr_cli.paths import CONF_DIR, REPO_ROOT, group_options
from rlvr_cli.configs import load_train_config
from rlvr_cli.methods import method_names


@pytest.mark.parametrize("recipe", group_options("recipes"))
def test_recipe_composes_validates_and_documents_itself(recipe):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"+recipes={recipe}"])
    OmegaConf.to_container(cfg, resolve=True)
    load_train_config(cfg)
    group, name = recipe.split("/", 1)
    if group == "lab":  # lab/<method>[_variant]: the entropy lab's setting with one method switched on
        assert name.startswith(cfg.method.name), (recipe, cfg.method.name)
        assert cfg.data.name == "countdown" and cfg.model.name == "tiny_countdown"
    else:
        assert cfg.method.name == group
    header = (REPO_ROOT / "recipes" / f"{recipe}.yaml").read_text()
    assert f"rlvr train +recipes={recipe}" in header  # the launch command in the header names this file
    for field in ("# Run:", "# GPUs:", "# Cost:", "# Sources:"):
        assert field in header, f"{recipe}: header has no {field!r} line"


def test_every_method_has_a_recipe():
    have = {r.split("/")[0] for r in group_options("recipes")}
    assert set(method_names()) <= have, sorted(set(method_names()) - have)
