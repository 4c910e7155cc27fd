"""Per-step cost of each method against ``baseline`` on the embedded default (CPU).

    .venv/bin/python benchmarks/method_overhead.py [--repeats 5] [--methods baseline,siren,...]

Every method updates on the same rollout batch (sampled once, 16 prompts x 8), so the timing covers
what a method can change: the old-log-prob pass with the statistics it asks for, ``prepare`` and the
update (forward + backward + step). Generation, the same for every method, is timed once and reported
so the overhead can be read against a whole training step. Medians over ``--repeats``.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from hydra import compose, initialize_config_dir

from rlvr_cli.advantages import grpo_advantages
from rlvr_cli.paths import CONF_DIR, group_options
from rlvr_cli.methods import StepContext
from rlvr_cli.rollout import generate_rollouts
from rlvr_cli.trainer.loop import GRPOTrainer


def trainer_for(method: str, out: str) -> GRPOTrainer:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"method={method}", "trainer.resume=never", "val.every=0",
                                                      "trainer.progress=false"])
    return GRPOTrainer.from_config(cfg, out)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--methods", default=",".join(group_options("method")))
    a = p.parse_args()
    torch.set_num_threads(2)
    base = trainer_for("baseline", "/tmp/rlvr_bench/baseline")
    torch.manual_seed(0)
    prompts = base.sampler.next_batch(base.cfg.rollout.prompts_per_step)
    t0 = time.perf_counter()
    ro = generate_rollouts(base.model, base.tokenizer, prompts, base.algo["group_size"], base.cfg.rollout.max_new_tokens)
    gen_s = time.perf_counter() - t0
    grades = base.grader.grade(ro.texts, [prompts[g].answer for g in ro.group_ids.tolist()])
    scores = torch.tensor([g.score for g in grades])
    adv = grpo_advantages(scores, ro.group_ids)
    base.close()
    print(f"batch: {len(ro.texts)} responses, {int(ro.response_mask.sum())} tokens, accuracy {float(scores.mean()):.2f}; "
          f"generation {gen_s:.2f} s")
    rows = []
    for method in a.methods.split(","):
        tr = trainer_for(method, f"/tmp/rlvr_bench/{method}")
        state = copy.deepcopy(tr.model.state_dict())
        times = []
        for rep in range(a.repeats + 1):
            tr.model.load_state_dict(state)
            batch = tr._train_batch(ro, scores, adv, torch.ones_like(scores, dtype=torch.bool))
            t0 = time.perf_counter()
            batch.token = tr.score(batch)
            tr.method.prepare(batch, StepContext(step=1, total_steps=50, seed=0))
            tr.update(batch, 1)
            if rep:  # the first run warms up
                times.append(time.perf_counter() - t0)
        tr.close()
        rows.append((method, statistics.median(times)))
    ref = dict(rows)["baseline"] if "baseline" in dict(rows) else rows[0][1]
    print(f"{'method':14s} {'score+update s':>15s} {'vs baseline':>12s} {'vs whole step':>14s}")
    for method, t in rows:
        print(f"{method:14s} {t:15.3f} {100 * (t / ref - 1):+11.1f}% {100 * (t - ref) / (ref + gen_s):+13.1f}%")


if __name__ == "__main__":
    main()
