"""The bodies of the Hydra apps (``rlvr train``, ``rlvr eval``): compose -> run -> report."""
from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from rlvr_cli.errors import UserError


def run_dir(cfg: DictConfig) -> Path:
    """``out_dir`` if set, else Hydra's run folder (``runs/<exp_name>``, per job under a sweep)."""
    if cfg.get("out_dir"):
        return Path(cfg.out_dir)
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def train_main(cfg: DictConfig, out_dir: Path) -> dict[str, float]:
    """Train with a composed config (usable without Hydra's app, e.g. from tests or notebooks)."""
    from rlvr_cli.progress import console, print_config
    from rlvr_cli.trainer.loop import GRPOTrainer

    out_dir.mkdir(parents=True, exist_ok=True)
    print_config(cfg)
    (out_dir / "resolved_config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    trainer = GRPOTrainer(cfg, out_dir)
    console.print(f"data: {trainer.train_report.summary()}; test: {trainer.test_report.summary()}")
    console.print(f"run folder: {out_dir}")
    try:
        return trainer.fit()
    finally:
        trainer.close()


def _guard(fn, *args):
    try:
        return fn(*args)
    except UserError as e:
        print(f"rlvr: error: {e}", file=sys.stderr)
        sys.exit(2)


def train(cfg: DictConfig) -> None:
    _guard(lambda: train_main(cfg, run_dir(cfg)))


def eval(cfg: DictConfig) -> None:  # noqa: A001 (the subcommand's name)
    from rlvr_cli.eval.run import eval_main

    _guard(lambda: eval_main(cfg, run_dir(cfg)))
