"""Run one update on a fixed global batch and dump the loss and the updated weights.

Started by tests/distributed/test_deepspeed.py either as one plain process (trainer=single) or under
torchrun with 2 ranks (trainer=zero2|zero3). Every rank builds the same global batch (same seed, same
initial model) and keeps its own prompts, exactly as the loop splits a step's prompts across ranks.
"""
from __future__ import annotations

import sys

import torch
from hydra import compose, initialize_config_dir

from rlvr_cli import dist as ddp
from rlvr_cli.advantages import grpo_advantages
from rlvr_cli.paths import CONF_DIR
from rlvr_cli.rollout import generate_rollouts
from rlvr_cli.trainer.loop import GRPOTrainer


def main(out_file: str, *overrides: str) -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides))
    trainer = GRPOTrainer.from_config(cfg, out_file + ".run")
    with trainer.actor.sampling():
        init = {k: v.detach().clone().float() for k, v in trainer.model.state_dict().items()}
    rank, world = ddp.rank(), ddp.world_size()
    torch.manual_seed(1234)  # identical global batch on every rank
    prompts = trainer.sampler.next_batch(cfg.rollout.prompts_per_step)
    group = cfg.algo.group_size
    with trainer.actor.sampling():  # ZeRO-3: full weights for generation, as the loop does
        ro = generate_rollouts(trainer.model, trainer.tokenizer, prompts, group, cfg.rollout.max_new_tokens)
    scores = torch.tensor([float((i * 7) % 3 == 0) for i in range(len(ro.texts))])  # fixed, mixed rewards
    adv = grpo_advantages(scores, ro.group_ids)
    mine = torch.isin(ro.group_ids, torch.arange(rank, len(prompts), world))  # this rank's prompts (whole groups)
    local = ro.select(mine)
    batch = trainer._train_batch(local, scores[mine], adv[mine], torch.ones(int(mine.sum()), dtype=torch.bool))
    batch.token = trainer.score(batch)
    metrics = ddp.mean_metrics(trainer.update(batch, 1))
    if trainer.engine.__class__.__name__ == "DeepSpeedEngine" and trainer.engine.zero_stage == 3:
        weights = trainer.engine.full_state_dict()
    else:
        weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    if rank == 0:
        torch.save({"loss": metrics["loss/pg"], "selected": metrics.get("method/kl_cov/n_selected", 0.0), "init": init,
                    "weights": {k: v.float() for k, v in weights.items()}, "metrics": metrics}, out_file)
    trainer.close()


if __name__ == "__main__":
    main(sys.argv[1], *sys.argv[2:])
