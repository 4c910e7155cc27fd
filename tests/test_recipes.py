"""Every recipe composes (its launch command's config), so recipes cannot rot."""
from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rlvr_cli.cli import CONF_DIR, REPO_ROOT, group_options


@pytest.mark.parametrize("recipe", group_options("recipes"))
def test_recipe_composes(recipe):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"+recipes={recipe}"])
    OmegaConf.to_container(cfg, resolve=True)
    method = recipe.split("/")[0]
    assert cfg.method.name == method
    header = (REPO_ROOT / "recipes" / f"{recipe}.yaml").read_text()
    assert f"+recipes={recipe}" in header  # the launch command in the header names this file
