"""Where the configs live and what each config group offers, below both the CLI and the tools that
compose configs themselves (``rlvr analyze dlogp``, the help, the tests)."""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"
# conf/recipes is a link to the top-level recipes/ folder, so ``+recipes=<method>/<name>`` composes
# from conf/ alone (no extra search path: that would make every top-level folder a config group)
RECIPES_DIR = REPO_ROOT / "recipes"


def group_options(group: str) -> list[str]:
    """Options of a config group: the yaml files in conf/<group>/ (recipes: recipes/**.yaml)."""
    root = RECIPES_DIR if group == "recipes" else CONF_DIR / group
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml")) if root.is_dir() else []


def config_groups() -> list[str]:
    return sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "recipes")


def compose(config_name: str, overrides: list[str] | None = None, hydra_config: bool = False):
    """The config ``rlvr <command>`` composes from conf/ with these overrides (Hydra's compose API);
    ``hydra_config``: with its ``hydra`` node (``hydra.runtime.choices``: each group's option)."""
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []),
                             return_hydra_config=hydra_config)
