"""What padding-free forwards save on the scoring + update stages, on rows of widely spread lengths (CPU).

    .venv/bin/python benchmarks/packing.py [--rounds 3] [--json runs/benchmarks/packing.json]
    .venv/bin/python benchmarks/packing.py --spread narrow      # the embedded default's shape: little padding

A reasoning model's responses range from tens of tokens to the length cap, so a padded batch is mostly
padding. The tiny shipped models answer in 20-45 tokens whatever the cap, so this benchmark builds the
rollout batch itself: prompts of 20-60 tokens (left-padded), responses with log-normal lengths (median
``--median-len``, clipped to 1..``--max-len``; ``--spread narrow`` draws them from 70-100% of a short
cap instead), random tokens, groups of 8 rows sharing a prompt, 0/1 rewards. Every variant runs the same batches through the
trainer's own no-grad scoring pass (``timing_s/old_log_prob``) and update (``timing_s/update_actor``):

- ``padded``: ``algo.use_remove_padding=false``, ``micro_batch_size`` rows per micro-batch;
- ``padded+sorted``: the same under ``algo.max_tokens_per_micro_batch`` (rows of similar length
  together, verl's dynamic batch size);
- ``packed``: ``algo.use_remove_padding=true`` (sdpa: ``auto``'s layout, rows in bins under a block
  mask, each group's prompt once where that costs less);
- ``packed+sorted``: both.

Rounds are interleaved (each round runs every variant once, in rotating order); the figure is the median
over rounds of the scoring + update seconds, with the ratio to ``padded``.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from rlvr_cli.advantages import grpo_advantages
from rlvr_cli.paths import CONF_DIR
from rlvr_cli.trainer.loop import GRPOTrainer
from rlvr_cli.types import Prompt, Rollouts, TrainBatch

VARIANTS = {
    "padded": ["algo.use_remove_padding=false"],
    "padded+sorted": ["algo.use_remove_padding=false", "algo.max_tokens_per_micro_batch={budget}"],
    "packed": ["algo.use_remove_padding=true"],
    "packed+sorted": ["algo.use_remove_padding=true", "algo.max_tokens_per_micro_batch={budget}"],
}


def lengths(n: int, spread: str, median: int, cap: int, gen: torch.Generator) -> list[int]:
    """Response lengths: log-normal around ``median`` clipped to [1, cap] (wide), or 70-100% of cap (narrow)."""
    if spread == "narrow":
        return [int(x) for x in torch.randint(int(0.7 * cap), cap + 1, (n,), generator=gen)]
    z = torch.randn(n, generator=gen)
    return [max(1, min(cap, int(math.exp(math.log(median) + 1.0 * float(v))))) for v in z]


def make_batch(n: int, vocab: int, spread: str, median: int, cap: int, seed: int) -> TrainBatch:
    """A train batch of ``n`` responses (groups of 8) with the layout the rollout engines produce."""
    gen = torch.Generator().manual_seed(seed)
    resp_lens = lengths(n, spread, median, cap, gen)
    prompt_lens = [int(x) for x in torch.randint(20, 61, (n // 8,), generator=gen).repeat_interleave(8)]
    p, t = max(prompt_lens), max(resp_lens)
    ids = torch.randint(3, vocab, (n, p + t), generator=gen)
    ids[:, :p] = ids[::8, :p].repeat_interleave(8, 0)  # GRPO: the 8 rows of a group answer one prompt
    attn = torch.zeros(n, p + t, dtype=torch.long)
    resp = torch.zeros(n, t, dtype=torch.long)
    for i, (pl, rl) in enumerate(zip(prompt_lens, resp_lens)):
        attn[i, p - pl: p + rl] = 1
        resp[i, :rl] = 1
    groups = torch.arange(n // 8).repeat_interleave(8)
    ro = Rollouts(input_ids=ids, attention_mask=attn, response_mask=resp, prompt_len=p, group_ids=groups,
                  texts=[""] * n, truncated=torch.zeros(n, dtype=torch.bool),
                  prompts=[Prompt(str(g), "", "", "") for g in range(n // 8)])
    scores = torch.randint(0, 2, (n,), generator=gen).float()
    adv = grpo_advantages(scores, groups)
    return TrainBatch(ro, scores, adv[:, None] * resp)


def trainer_for(overrides: list[str], model: str, rows: int, micro: int, out: str) -> GRPOTrainer:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            f"model.path={model}", f"algo.mini_batch_size={rows}", f"algo.micro_batch_size={micro}",
            "algo.old_logprob_pass=always", "trainer.resume=never", "val.every=0", "trainer.progress=false",
            "optim.lr=1e-6", *overrides])
    return GRPOTrainer.from_config(cfg, out)


def time_stages(trainer: GRPOTrainer, batch: TrainBatch) -> dict[str, float]:
    trainer.timer.reset()
    batch.token, batch.method = {}, {}
    batch.token.update(trainer.score(batch))
    trainer.update(batch, 1)
    s = trainer.timer.seconds
    return {"old_log_prob": s.get("old_log_prob", 0.0), "update_actor": s.get("update_actor", 0.0),
            **trainer.actor.take_forward_stats()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="builtin:tiny_countdown")
    ap.add_argument("--rows", type=int, default=64, help="responses per step (one mini-batch)")
    ap.add_argument("--micro", type=int, default=16, help="algo.micro_batch_size")
    ap.add_argument("--spread", choices=("wide", "narrow"), default="wide")
    ap.add_argument("--median-len", type=int, default=80)
    ap.add_argument("--max-len", type=int, default=400)
    ap.add_argument("--batches", type=int, default=2, help="distinct batches per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args()
    torch.set_num_threads(2)
    cap = a.max_len if a.spread == "wide" else min(a.max_len, 64)
    budget = a.micro * (60 + a.median_len if a.spread == "wide" else 60 + cap)  # the padded micro-batch's mean size
    trainers = {name: trainer_for([o.format(budget=budget) for o in ov], a.model, a.rows, a.micro, f"/tmp/rlvr_bench/packing/{i}")
                for i, (name, ov) in enumerate(VARIANTS.items())}
    vocab = next(iter(trainers.values())).model.config.vocab_size
    batches = [make_batch(a.rows, vocab, a.spread, a.median_len, cap, seed) for seed in range(a.batches)]
    valid = [float(b.response_mask.sum(-1).float().median()) for b in batches]
    print(f"{a.rows} rows, responses {a.spread}: median length {statistics.median(valid):.0f}, "
          f"max {max(b.response_mask.shape[1] for b in batches)}; micro-batch {a.micro} rows or {budget} tokens")
    for name, tr in trainers.items():  # warm-up
        time_stages(tr, batches[0])
    per: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    names = list(VARIANTS)
    for r in range(a.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            runs = [time_stages(trainers[name], b) for b in batches]
            per[name].append({k: sum(x[k] for x in runs) / len(runs) for k in runs[0]})
    table = {}
    for name, rounds in per.items():
        med = {k: statistics.median(x[k] for x in rounds) for k in rounds[0]}
        med["score_update_s"] = statistics.median(x["old_log_prob"] + x["update_actor"] for x in rounds)
        table[name] = med
    base = table["padded"]["score_update_s"]
    print(f"\n{'variant':15} {'scoring s':>10} {'update s':>9} {'both s':>8} {'vs padded':>10} {'padding':>8} {'packed':>7}")
    for name, m in table.items():
        print(f"{name:15} {m['old_log_prob']:10.3f} {m['update_actor']:9.3f} {m['score_update_s']:8.3f} "
              f"{base / m['score_update_s']:9.2f}x {m.get('perf/padding_frac', 0):8.1%} {m.get('perf/packed_forward_frac', 0):7.0%}")
    for tr in trainers.values():
        tr.close()
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({
            "date": date.today().isoformat(), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
            "torch": torch.__version__, "args": vars(a), "budget_tokens": budget,
            "median_response_len": statistics.median(valid), "variants": table,
            "speedup_vs_padded": {k: base / v["score_update_s"] for k, v in table.items()}}, indent=2))
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
